r"""Perturbed optimizers: the paper's last-bit perturbation of the update (§4, App. B).

The perturbation of the official code rescales only the final step: the update ``lr * d_p`` is
computed as ``(k * lr) * (d_p / k)``. Mathematically nothing changes; in floating point the two
roundings (``d_p / k`` and the product) differ from the single one of ordinary SGD in the last bit
of some entries whenever ``k`` is not a power of two. Weight decay and (Nesterov) momentum act
first, on the unscaled gradient, exactly as in :class:`torch.optim.SGD`, so ``k = 1`` is
bit-identical to it and ``k = 2**j`` is bit-identical to ``k = 1`` (scaling by a power of two is
exact).

:class:`PerturbedSGD` and :class:`PerturbedAdam` are the paper's exact form. :func:`perturb` carries
the same idea to any :class:`torch.optim.Optimizer`: it lets the optimizer compute its update
:math:`\Delta` and re-applies it as :math:`(k\Delta)/k`.

Step sizes inside the stability bound: :class:`LocalCFL` caps the step of each region of the weights (a
tensor, a channel, a tile) by its block's curvature; :class:`EigenCFL` caps it only along the top
eigenvectors of the full Hessian; :class:`SecantSGD` takes it, at no cost, from the secant of the gradient.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from pdeeos import sharpness

__all__ = ["EIGEN_SETTINGS", "FIRST_REFRESH_ITERATIONS", "FRESH_ITERATIONS", "REGIONS", "RESIDUAL_RTOL",
           "SECANT_RULES", "SETTINGS", "SHARP_FALL", "BlockAdam", "EigenCFL", "LocalCFL", "PerturbedAdam",
           "PerturbedSGD", "SecantSGD", "adam_edge", "adam_preconditioner", "check_group_ks", "check_k", "perturb",
           "reapply_update", "stable_step", "warmup_lr"]


def check_k(k: object) -> int:
    """``k`` if it is an integer >= 1, else ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return k


def check_group_ks(param_groups: Iterable[dict]) -> None:
    """``ValueError`` naming the first parameter group whose ``k`` is not an integer >= 1 (or is missing)."""
    for i, group in enumerate(param_groups):
        try:
            check_k(group.get("k"))
        except ValueError as error:
            raise ValueError(f"param group {i}: {error}") from None


def _check_nonnegative(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")


def _evaluate(closure: Callable[[], float] | None) -> float | None:
    """The loss a ``step(closure)`` returns: ``closure()`` with gradients enabled, or ``None``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _decayed_gradients(group: dict) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(p, g + weight_decay·p)`` for every parameter of ``group`` that has a gradient ``g``."""
    for p in group["params"]:
        if p.grad is not None:
            wd = group["weight_decay"]
            yield p, (p.grad.add(p, alpha=wd) if wd != 0 else p.grad)


class _OwnK(torch.optim.Optimizer):
    """An optimizer that perturbs its own final step by the ``k`` of each parameter group: a group with a
    bad ``k`` is refused when it is added and, should ``k`` be changed later, before any step."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """:meth:`torch.optim.Optimizer.add_param_group`, refusing a ``k`` that is not an integer >= 1."""
        check_group_ks([{"k": self.defaults.get("k"), **param_group}])
        super().add_param_group(param_group)


class PerturbedSGD(_OwnK):
    """SGD with :class:`torch.optim.SGD`'s semantics and the final step ``p -= (k·lr)·(d_p/k)``."""

    def __init__(self, params: Iterable, lr: float, *, k: int = 1, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _check_nonnegative(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        defaults = dict(lr=lr, k=check_k(k), momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        check_group_ks(self.param_groups)
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, k, momentum = group["lr"], group["k"], group["momentum"]
            for p, d_p in _decayed_gradients(group):
                if momentum != 0:
                    d_p = self._momentum(p, d_p, momentum, group["dampening"], group["nesterov"])
                self._apply(p, d_p, lr, k)
        return loss

    def _apply(self, p: torch.Tensor, d_p: torch.Tensor, lr: float, k: int) -> None:
        """The perturbed final step ``p -= (k·lr)·(d_p/k)``."""
        p.add_(d_p / k, alpha=-(k * lr))

    def _momentum(self, p: torch.Tensor, d_p: torch.Tensor, momentum: float, dampening: float,
                  nesterov: bool) -> torch.Tensor:
        """Update ``p``'s momentum buffer with ``d_p`` and return the direction to step along."""
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = d_p.detach().clone()
        else:
            buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
        return d_p.add(buf, alpha=momentum) if nesterov else buf


class PerturbedAdam(_OwnK):
    """Adam with :class:`torch.optim.Adam`'s semantics (L2 weight decay, no AMSGrad) and the
    final step perturbed: ``p -= (k·step_size)·((m/k)/denom)``."""

    def __init__(self, params: Iterable, lr: float = 1e-3, *, k: int = 1,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        _check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0 <= b < 1 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        defaults = dict(lr=lr, k=check_k(k), betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        check_group_ks(self.param_groups)
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, grad in _decayed_gradients(group):
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=self._second_moment_zeros(p))
                state["step"] += 1
                state["exp_avg"].lerp_(grad, 1 - beta1)
                self._update_second_moment(state["exp_avg_sq"], grad, beta2)
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** state["step"]) ** 0.5)
                denom.add_(group["eps"])
                k = group["k"]
                p.addcdiv_(state["exp_avg"] / k, denom, value=-(k * step_size))
        return loss

    @staticmethod
    def _second_moment_zeros(p: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p)

    @staticmethod
    def _update_second_moment(avg: torch.Tensor, grad: torch.Tensor, beta2: float) -> None:
        avg.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


class BlockAdam(PerturbedAdam):
    r"""Adam with one second moment per parameter tensor: Adam-mini's one learning rate per Hessian block
    (Zhang et al. 2024), the tensors of a network taken as its blocks.

    For a tensor :math:`B` with gradient :math:`g_B`, the first moment is Adam's and the second a scalar,

    .. math:: m \leftarrow \beta_1 m + (1 - \beta_1) g_B, \qquad
              v \leftarrow \beta_2 v + (1 - \beta_2)\,\tfrac{1}{|B|}\|g_B\|^2, \qquad
              \theta_B \leftarrow \theta_B - \frac{\eta}{1 - \beta_1^n}\,
              \frac{m}{\sqrt{v/(1 - \beta_2^n)} + \epsilon},

    with :class:`PerturbedAdam`'s conventions otherwise (L2 weight decay, the last-bit perturbation ``k``
    of the final step, the state dict)."""

    @staticmethod
    def _second_moment_zeros(p: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=p.dtype, device=p.device)

    @staticmethod
    def _update_second_moment(avg: torch.Tensor, grad: torch.Tensor, beta2: float) -> None:
        avg.mul_(beta2).add_(grad.square().mean(), alpha=1 - beta2)


class _Reapplied:
    """The step hooks :func:`perturb` registers: the weights before the step, then the update re-applied.
    Groups with ``k = 1`` are left alone (there the re-applied update is the optimizer's own, bit for bit).
    Each perturbed weight keeps three buffers of its size (its old value and two for the arithmetic), made
    once: allocating them at every step would cost more than the arithmetic."""

    def __init__(self) -> None:
        self.groups: list[dict] = []
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _buffers(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.buffers.get(id(p))
        if found is None or found[0].shape != p.shape or found[0].dtype != p.dtype:
            found = self.buffers[id(p)] = tuple(torch.empty_like(p, memory_format=torch.preserve_format)
                                                for _ in range(3))
        return found

    @torch.no_grad()
    def save(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        r"""Step pre-hook: check every group's ``k``, then keep the weights :math:`\theta_{\text{old}}`."""
        check_group_ks(optimizer.param_groups)
        self.groups = [group for group in optimizer.param_groups if group["k"] != 1]
        for group in self.groups:
            for p in group["params"]:
                self._buffers(p)[0].copy_(p)

    @torch.no_grad()
    def reapply(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """Step post-hook: every weight set to :func:`reapply_update` of its old and new value."""
        for group in self.groups:
            for p in group["params"]:
                old, delta, error = self._buffers(p)
                reapply_update(old, p, group["k"], out=p, scratch=(delta, error))
        self.groups = []


def reapply_update(old: torch.Tensor, new: torch.Tensor, k: int, *, out: torch.Tensor | None = None,
                   scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    r"""The update from ``old`` to ``new`` re-applied in its last-bit-perturbed form (into ``out``, which may
    be ``new`` itself, or a new tensor; ``scratch``: two tensors shaped like ``new`` to compute in).

    .. math:: \Delta = \operatorname{fl}(\theta_{\text{new}} - \theta_{\text{old}}), \quad
              \varepsilon = \operatorname{fl}\bigl(\operatorname{fl}(\theta_{\text{old}} + \Delta)
              - \theta_{\text{new}}\bigr), \quad
              \theta' = \operatorname{fl}\Bigl(\operatorname{fl}\bigl(\theta_{\text{old}} +
              \operatorname{fl}(\operatorname{fl}(k\Delta)/k)\bigr) - \varepsilon\Bigr)

    :math:`\varepsilon` is 0 wherever :math:`\operatorname{fl}(\theta_{\text{old}} + \Delta)` reproduces
    :math:`\theta_{\text{new}}` (wherever the subtraction was exact, by Sterbenz's lemma wherever the weight
    moved by less than a factor of two) and otherwise the difference of two neighbouring floating-point
    numbers, itself exact, so it removes what recovering :math:`\Delta` from the weights lost. For
    :math:`k = 2^j` the products :math:`k\Delta` and :math:`(k\Delta)/k` are exact, and
    :math:`\theta' = \operatorname{fl}(\theta_{\text{old}} + \Delta) - \varepsilon = \theta_{\text{new}}`
    bit for bit (a weight that is :math:`-0` before and after may come out :math:`+0`). For odd :math:`k`
    the two roundings of :math:`(k\Delta)/k` change the last bit of some :math:`\Delta`, and so, in a share
    of the entries, the last bit of :math:`\theta'`: the paper's :math:`(k\eta)(d/k)`, applied to whatever
    update the optimizer made."""
    delta, error = (torch.empty_like(new), torch.empty_like(new)) if scratch is None else scratch
    torch.sub(new, old, out=delta)
    torch.add(old, delta, out=error).sub_(new)
    return torch.sub(delta.mul_(k).div_(k).add_(old), error, out=out)


def perturb(optimizer: torch.optim.Optimizer, k: int) -> torch.optim.Optimizer:
    r"""``optimizer`` with its update perturbed in its last bit by ``k``; returned for chaining.

    Any :class:`torch.optim.Optimizer` (SGD, Adam, AdamW, RMSprop, ..., with ``foreach``, ``maximize``,
    schedulers, closures): its step is left as it is, and step hooks re-apply the update :math:`\Delta` it
    made, :math:`\theta \leftarrow \theta_{\text{old}} + (k\Delta)/k` (:func:`reapply_update`, the analogue
    of the paper's :math:`\theta - (k\eta)(d/k)`): ``k = 1`` and every power of two leave the optimizer
    bit for bit as it was. A perturbed group keeps three buffers the size of its weights, and its step
    makes seven passes over them.
    ``k`` is kept in every parameter group (and in ``optimizer.defaults``, so groups added later get it,
    and in the state dict); a group whose ``k`` is not an integer >= 1 is refused before the step changes
    anything. :class:`PerturbedSGD`, :class:`PerturbedAdam` and :class:`LocalCFL` perturb their own final
    step: for them ``perturb`` sets ``k`` in every group, keeping the paper's exact form. Perturbing an
    optimizer again sets its ``k`` anew.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    check_k(k)
    optimizer.defaults["k"] = k
    for group in optimizer.param_groups:
        group["k"] = k
    if not isinstance(optimizer, _OwnK) and not hasattr(optimizer, _PERTURBED):
        hooks = _Reapplied()
        setattr(optimizer, _PERTURBED, (optimizer.register_step_pre_hook(hooks.save),
                                        optimizer.register_step_post_hook(hooks.reapply)))
    return optimizer


_PERTURBED = "_pdeeos_perturbed"
"""The attribute where :func:`perturb` keeps the handles of its step hooks."""


REGIONS = ("tensor", "channel", "tiles", "global")
"""How :class:`LocalCFL` cuts the weights into regions: each parameter tensor; each output channel of a
tensor with two or more dimensions; ``tile`` × ``tile`` tiles of the last two dimensions of such a tensor
(spatial regions of a convolution kernel); or all weights as one region. Tensors of fewer dimensions are
one region each in the channel and tile modes."""


def warmup_lr(lr: float, step: int, steps: int) -> float:
    r"""The learning rate of a linear warm-up at ``step`` (from 0): :math:`\eta\,\min(1, (n + 1)/W)`, ``steps``
    :math:`W` the warm-up's length (Goyal et al. 2017; Gilmer et al. 2022, Kalra & Barkeshli 2024 on warm-up
    and sharpness). A pure function of the step, so a run resumed at any step takes the same rates."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    return lr * min(1.0, (step + 1) / steps)


def stable_step(sharpness: float, *, momentum: float = 0.0, nesterov: bool = False) -> float:
    r"""The largest step size that keeps the quadratic :math:`\tfrac\lambda2 x^2` stable, for
    :math:`\lambda` = ``sharpness``: :math:`2/\lambda` for gradient descent,
    :math:`2(1+\mu)/\lambda` for heavy-ball momentum :math:`\mu`, and
    :math:`2(1+\mu)/((1+2\mu)\lambda)` for Nesterov momentum (the Jury bound of chapter 4), all with
    :class:`torch.optim.SGD`'s conventions and no dampening; no bound (``inf``) when :math:`\lambda \le 0`."""
    _check_nonnegative(momentum=momentum)
    if sharpness <= 0:
        return math.inf
    factor = 2 * (1 + momentum) / (1 + 2 * momentum) if nesterov else 2 * (1 + momentum)
    return factor / sharpness


def adam_edge(lr: float, beta1: float = 0.9) -> float:
    r"""The preconditioned sharpness at which Adam with a frozen preconditioner loses stability (Cohen et al.
    2022, "Adaptive gradient methods at the edge of stability"): :math:`(2 + 2\beta_1)/((1 - \beta_1)\,\eta)`,
    38/η at :math:`\beta_1 = 0.9`; compare it with :func:`pdeeos.sharpness.preconditioned_top_eigenvalue`."""
    _check_nonnegative(lr=lr)
    if not 0 <= beta1 < 1 or lr == 0:
        raise ValueError(f"lr must be > 0 and beta1 in [0, 1); got lr={lr!r}, beta1={beta1!r}")
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def adam_preconditioner(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    r"""The diagonal of :math:`P^{-1}` of an Adam-type optimizer (:class:`torch.optim.Adam`, ``AdamW``,
    :class:`PerturbedAdam`) at its last step, one tensor per parameter in group order:
    :math:`1/(\sqrt{v_t/(1 - \beta_2^t)} + \epsilon)`, where the update is :math:`\eta\,P^{-1}\hat m_t`.
    ``ValueError`` for a parameter that has no second-moment state yet (before the first step)."""
    out = []
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                raise ValueError("adam_preconditioner needs an Adam-type optimizer that has stepped: a parameter "
                                 "has no exp_avg_sq")
            step = float(state["step"])
            out.append(1 / ((state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt() + eps))
    return out


Index = int | tuple[slice, ...] | None
"""Where a region lies in a parameter tensor: the whole tensor (``None``), an output channel, or a tile."""
Region = list[tuple[torch.Tensor, Index]]
"""Pieces of weights, each a parameter tensor and where in it."""

FIRST_REFRESH_ITERATIONS = 100
"""The most Hessian-vector products a fresh estimate of :class:`LocalCFL` (its first refresh, or a restart from
random vectors) spends: from a random vector a few products leave the estimate far below the top
eigenvalue (a fifth of it on the first layer of the tanh network of chapter 7, after two)."""
FRESH_ITERATIONS = 10
r"""The fewest products a fresh estimate of :class:`LocalCFL` spends before its residual rule may stop it: after
one, the residual of a block :math:`\alpha I + \gamma uu^\top` is :math:`\gamma|u^\top v|`, tiny against
:math:`\alpha` for a random :math:`v`, and looks converged at :math:`\alpha`; a few more span :math:`u`."""
RESIDUAL_RTOL = 1e-2
r""":class:`LocalCFL` stops an estimate when the Ritz residual :math:`\|Hy - \theta y\|` is below this fraction of
:math:`|\theta|` (Lanczos), and adds the residual to :math:`|\theta|`: the block has an eigenvalue within the
residual of :math:`\theta`, so the bound errs on the safe side by that much."""
SHARP_FALL = 0.5
"""A warm-started estimate of :class:`LocalCFL` below this fraction of the last one is checked by a fresh estimate
from random vectors (the warm vector may have lost the top direction); the larger of the two is kept."""

SETTINGS = ("safety", "every", "regions", "tile", "power_iterations", "seed")
"""LocalCFL's own settings, kept in every parameter group (so in the state dict, and checked on loading)."""


def _piece(t: torch.Tensor, index: Index) -> torch.Tensor:
    return t if index is None else t[index]


class _Refreshed(PerturbedSGD, abc.ABC):
    """What :class:`LocalCFL` and :class:`EigenCFL` share: their own settings, kept in every parameter group
    (so in the state dict) and checked when a state dict is loaded; a refresh of their curvature from the
    closure's loss every ``every`` steps; the step count; the checks of their arguments."""

    OWN_SETTINGS: tuple[str, ...] = ()
    """The names of the optimizer's own settings."""
    REFRESHED = "its curvature"
    """What a refresh renews, for the error of a refresh due without a closure."""

    @staticmethod
    def _check_arguments(lr: float, safety: float, **counts: int) -> None:
        """``ValueError`` for a ``lr`` that is not a finite number > 0, a ``safety`` outside (0, 1], or a count
        that is not an integer >= 1."""
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
        if not (isinstance(safety, (int, float)) and 0 < safety <= 1):
            raise ValueError(f"safety must be in (0, 1] (a fraction of the stable step); got {safety!r}")
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")

    def _keep_settings(self, settings: dict[str, Any]) -> None:
        self.defaults.update(settings)
        for group in self.param_groups:
            group.update(settings)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """:meth:`torch.optim.Optimizer.load_state_dict`, refusing a state made with other settings."""
        for saved in state_dict["param_groups"]:
            other = {key: saved.get(key) for key in self.OWN_SETTINGS if saved.get(key) != self.defaults[key]}
            if other:
                raise ValueError(f"{type(self).__name__} state dict made with other settings: {other}, "
                                 f"not {({key: self.defaults[key] for key in other})}")
        super().load_state_dict(state_dict)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _group_of(self) -> dict[torch.Tensor, dict]:
        return {p: group for group in self.param_groups for p in group["params"]}

    @property
    def steps(self) -> int:
        """Steps taken so far."""
        return self.state[self._params()[0]].get("step", 0)

    @property
    def refresh_due(self) -> bool:
        """Whether the next step refreshes the curvature (and so needs a closure)."""
        return self.steps % self.defaults["every"] == 0

    def _refresh_if_due(self, closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
        """The closure's loss, after refreshing the curvature from it, when a refresh is due; else ``None``."""
        if not self.refresh_due:
            return None
        if closure is None:
            raise ValueError(f"{type(self).__name__} refreshes {self.REFRESHED} every {self.defaults['every']} "
                             f"steps and step {self.steps} is one: call step(closure) with closure() returning "
                             "the current batch's loss (with its graph, backward not called)")
        with torch.enable_grad():
            loss = closure()
            self._refresh(loss)
        return loss

    @abc.abstractmethod
    def _refresh(self, loss: torch.Tensor) -> None:
        """Update the curvature estimates the step sizes come from, with ``loss`` the closure's loss."""


class LocalCFL(_Refreshed):
    r"""SGD with a step size of its own in every region of the weights, each inside its stability bound.

    Region :math:`r` (see :data:`REGIONS`) steps with

    .. math:: \eta_r = \min\bigl(\eta,\ b_r\bigr), \qquad b_r = s\,\eta^\ast(\rho_r),

    :math:`\eta` the group's current ``lr`` (so learning-rate schedules act at once), :math:`s` =
    ``safety``, :math:`\eta^\ast` the stable step of :func:`stable_step` (:math:`2/\rho_r` without momentum;
    the momentum-aware bound otherwise, since :math:`2/\rho_r` would let Nesterov with :math:`\mu = 0.9` run
    at 1.47 times its bound), and :math:`\rho_r` an estimate of the spectral radius of the region's diagonal
    Hessian block :math:`H_{rr} + \text{wd}\,I`, the largest :math:`|\theta|` of a Lanczos run restricted to
    the region plus its residual:

    .. math:: \rho_r = |\theta| + \|H_{rr} y - \theta y\|,

    an upper bound of the eigenvalue nearest :math:`\theta` (:data:`RESIDUAL_RTOL`). The spectral radius bounds
    the largest positive eigenvalue, so when a negative eigenvalue dominates a block, the block steps more
    cautiously than it needs to. Lanczos is used rather than the power iteration because its Krylov spaces do
    not change under a shift :math:`\alpha I`: on a block :math:`\alpha I` plus a small rank-one term the power
    iteration's estimate barely moves from :math:`\alpha` and a stopping rule on its change stops there.

    Refreshes come in pairs, at the steps :math:`0, 1 \pmod{\texttt{every}}`, and the second keeps the larger of
    the two estimates, so a 2-cycle (of the iterate, or of alternating batches) cannot hide its stiffer phase
    from every refresh. A refresh warm-starts each region from its last Ritz vector and stops at the residual
    rule or after ``power_iterations`` Hessian-vector products. The first refresh starts from seeded random
    vectors; a warm start whose estimate falls below :data:`SHARP_FALL` times the last one, or whose Krylov
    space is exhausted (the warm vector then lies in an invariant subspace, such as the eigenspace of
    :math:`\alpha` in :math:`\alpha I + \gamma uu^\top`, and cannot see an eigenvalue grown outside it), is
    checked by such a fresh start, and the larger estimate is kept. A fresh start spends from
    :data:`FRESH_ITERATIONS` to :data:`FIRST_REFRESH_ITERATIONS` products. ``hvps`` counts the products. Between
    refreshes the update is :class:`PerturbedSGD`'s, with its last-bit perturbation ``k``; with no region
    capped it is :class:`torch.optim.SGD` bit for bit.

    Closure protocol: call ``loss.backward()`` as for SGD, then ``step(closure)``, where ``closure()``
    returns the *same batch's* loss as a tensor with its graph, ``backward`` not called (a trainer may
    return the loss it has just differentiated with ``backward(retain_graph=True)``). The closure is used
    only when a refresh is due (``refresh_due``), and ``step`` returns its loss then, ``None``
    otherwise; a refresh due without a closure is a ``ValueError``. ``sharpness()`` and ``step_sizes()``
    give :math:`\rho_r` and :math:`\eta_r` after each step; everything lives in the state dict, so a run
    resumes bit-exactly, and loading a state dict made with other settings is a ``ValueError``.
    """

    OWN_SETTINGS = SETTINGS

    def __init__(self, params: Iterable, lr: float, *, safety: float = 0.9, every: int = 10,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, k: int = 1,
                 regions: str = "tensor", tile: int = 8, power_iterations: int = 2, seed: int = 0) -> None:
        self._check_arguments(lr, safety, every=every, power_iterations=power_iterations, tile=tile)
        if regions not in REGIONS:
            raise ValueError(f"regions must be one of {REGIONS}; got {regions!r}")
        super().__init__(params, lr, k=k, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        self._keep_settings(dict(safety=safety, every=every, regions=regions, tile=tile,
                                 power_iterations=power_iterations, seed=seed))

    @property
    def hvps(self) -> int:
        """Hessian-vector products spent on the curvature so far."""
        return sum(self.state[p].get("hvps", 0) for p in self._params())

    def sharpness(self) -> list[list[float]]:
        r""":math:`\rho_r` of every region, per parameter tensor (in parameter order)."""
        self._check_started()
        return [list(self.state[p]["sharpness"]) for p in self._params()]

    def step_sizes(self) -> list[list[float]]:
        r""":math:`\eta_r` of every region at the group's current ``lr``, per parameter tensor (in parameter order)."""
        self._check_started()
        group_of = self._group_of()
        return [[self._rate(group_of[p]["lr"], bound) for bound in self.state[p]["bound"]] for p in self._params()]

    def step_size_tensors(self) -> list[torch.Tensor]:
        r"""The step size of every weight, a tensor shaped like each parameter (the diagonal of :math:`D`)."""
        out = []
        for p, rates in zip(self._params(), self.step_sizes()):
            t = torch.empty_like(p)
            for (_, index), rate in zip(self._regions_of(p), rates):
                _piece(t, index).fill_(rate)
            out.append(t)
        return out

    def _check_started(self) -> None:
        if self.steps == 0:
            raise ValueError("LocalCFL has no regions' sharpness or step sizes before its first step")

    @staticmethod
    def _rate(lr: float, bound: float) -> float:
        return lr if lr <= bound else bound

    def _regions_of(self, p: torch.Tensor) -> Region:
        mode, t = self.defaults["regions"], self.defaults["tile"]
        if mode == "channel" and p.ndim > 1:
            return [(p, c) for c in range(p.shape[0])]
        if mode == "tiles" and p.ndim > 1:
            rows, cols = p.shape[-2:]
            return [(p, (..., slice(i, i + t), slice(j, j + t))) for i in range(0, rows, t) for j in range(0, cols, t)]
        return [(p, None)]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient, after refreshing the curvature when due."""
        check_group_ks(self.param_groups)
        loss = self._refresh_if_due(closure)
        super().step()
        for p in self._params():
            self.state[p]["step"] = self.state[p].get("step", 0) + 1
        return loss

    @property
    def refresh_due(self) -> bool:
        """Whether the next step refreshes the curvature (and so needs a closure): steps 0 and 1 of every
        ``every``."""
        every = self.defaults["every"]
        return self.steps % every == 0 or (every > 1 and self.steps % every == 1)

    def _refresh(self, loss: torch.Tensor) -> None:
        r"""New :math:`\rho_r` and bounds :math:`b_r` for every region from ``loss``'s Hessian."""
        params = self._params()
        grads = dict(zip(params, torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)))
        first = "eigvec" not in self.state[params[0]]
        if first:
            for p in params:
                self.state[p]["eigvec"] = torch.zeros_like(p)
        group_of = self._group_of()
        second = self.defaults["every"] > 1 and self.steps % self.defaults["every"] == 1
        regions, slots_of = self._slots(params)
        last = [math.nan] * len(regions)
        if not first:
            for p in params:
                for slot, rho in zip(slots_of[p], self.state[p]["sharpness"]):
                    last[slot] = rho
        finite = {p: g is None or bool(torch.isfinite(g).all()) for p, g in grads.items()}
        estimates = []
        for region, previous in zip(regions, last):
            rho, trapped = self._estimate(region, grads, finite, group_of, fresh=first)
            if rho < SHARP_FALL * previous or trapped:
                rho = max(rho, self._estimate(region, grads, finite, group_of, fresh=True)[0])
            estimates.append(max(rho, previous) if second else rho)
        for p in params:
            group = group_of[p]
            self.state[p]["sharpness"] = [estimates[slot] for slot in slots_of[p]]
            self.state[p]["bound"] = [group["safety"] * stable_step(rho, momentum=group["momentum"],
                                                                    nesterov=group["nesterov"])
                                      for rho in self.state[p]["sharpness"]]

    def _slots(self, params: list[torch.Tensor]) -> tuple[list[Region], dict[torch.Tensor, list[int]]]:
        """The regions to estimate, and for every parameter the indices of the regions its estimates come from
        (all parameters share the one region of the ``global`` mode)."""
        if self.defaults["regions"] == "global":
            return [[(p, None) for p in params]], {p: [0] for p in params}
        regions, slots_of = [], {}
        for p in params:
            pieces = self._regions_of(p)
            slots_of[p] = list(range(len(regions), len(regions) + len(pieces)))
            regions += [[piece] for piece in pieces]
        return regions, slots_of

    def _estimate(self, region: Region, grads: dict, finite: dict, group_of: dict, *,
                  fresh: bool) -> tuple[float, bool]:
        r""":math:`|\theta| + \|H_{rr}y - \theta y\|` of the Ritz pair of largest :math:`|\theta|` of
        :math:`H_{rr} + \text{wd}\,I` by Lanczos, from the region's last Ritz vector (or, ``fresh``, from
        seeded random draws), which it replaces; ``nan`` where the gradient is not finite (``finite``). And
        whether a warm start was trapped: its Krylov space exhausted, so that it lies in an invariant subspace
        (an eigenvector of :math:`\alpha I + \gamma uu^\top` orthogonal to :math:`u`, for one) and cannot see an
        eigenvalue that has grown outside it."""
        pieces = [(p, index, _piece(self.state[p]["eigvec"], index)) for p, index in region]
        if not any(grads[p] is not None for p, _, _ in pieces):
            return max(group_of[p]["weight_decay"] for p, _, _ in pieces), False
        if not all(finite[p] for p, _, _ in pieces):
            return math.nan, False
        start = torch.cat([v.reshape(-1) for _, _, v in pieces])
        if fresh or not bool(torch.isfinite(start).all()) or float(start.norm()) == 0:
            self._restart(pieces)
            start = torch.cat([v.reshape(-1) for _, _, v in pieces])
        sizes = [v.numel() for _, _, v in pieces]

        def matvec(x: torch.Tensor) -> torch.Tensor:
            vs = [chunk.view_as(v) for chunk, (_, _, v) in zip(x.split(sizes), pieces)]
            dot = sum(_piece(grads[p], index).mul(v).sum() for (p, index, _), v in zip(pieces, vs)
                      if grads[p] is not None)
            hv = (torch.autograd.grad(dot, [p for p, _, _ in pieces], retain_graph=True, allow_unused=True)
                  if isinstance(dot, torch.Tensor) and dot.requires_grad else [None] * len(pieces))   # a linear loss
            return torch.cat([(_piece(torch.zeros_like(p) if h is None else h, index)
                               + group_of[p]["weight_decay"] * v).reshape(-1)
                              for (p, index, _), v, h in zip(pieces, vs, hv)])

        with torch.enable_grad():
            result = sharpness.lanczos(matvec, start.numel(), k=1, tol=RESIDUAL_RTOL, start=start,
                                       max_iter=FIRST_REFRESH_ITERATIONS if fresh else self.defaults["power_iterations"],
                                       dtype=start.dtype, which="magnitude", vectors=True,
                                       min_iter=FRESH_ITERATIONS if fresh else 1)
        for (_, _, v), chunk in zip(pieces, result.vectors[0].split(sizes)):
            v.copy_(chunk.view_as(v))
        self.state[region[0][0]]["hvps"] = self.state[region[0][0]].get("hvps", 0) + result.matvecs
        trapped = not fresh and result.exhausted and result.matvecs < start.numel()   # not the whole space
        return abs(float(result.values[0])) + float(result.residuals[0]), trapped

    def _restart(self, pieces: list[tuple[torch.Tensor, Index, torch.Tensor]]) -> None:
        """Fill a region's vector afresh with normal draws (seeded by ``seed`` and the step, so a resumed run draws
        the same)."""
        gen = torch.Generator().manual_seed(self.defaults["seed"] + 1_000_003 * (self.steps + 1))
        for _, _, v in pieces:
            v.copy_(torch.randn(v.shape, generator=gen, dtype=v.dtype))

    def _apply(self, p: torch.Tensor, d_p: torch.Tensor, lr: float, k: int) -> None:
        r"""The perturbed step of :class:`PerturbedSGD` with each region's :math:`\eta_r = \min(\eta, b_r)`."""
        bounds = self.state[p]["bound"]
        if len(bounds) == 1:
            super()._apply(p, d_p, self._rate(lr, bounds[0]), k)
            return
        for (_, index), bound in zip(self._regions_of(p), bounds):
            super()._apply(_piece(p, index), _piece(d_p, index), self._rate(lr, bound), k)


SECANT_RULES = ("secant", "adgd")
"""The step-size rules of :class:`SecantSGD`."""


class SecantSGD(PerturbedSGD):
    r"""Gradient descent whose step size comes at no cost from the secant of the gradient.

    With :math:`L_n = \|g_n - g_{n-1}\| / \|\theta_n - \theta_{n-1}\|` (all parameters together; :math:`g` the
    gradient with weight decay), a local estimate of the curvature along the last step, the step size is

    .. math:: \eta_n = \min\bigl(\eta,\ 1/L_n\bigr) \quad (\texttt{rule="secant"}), \qquad
              \eta_n = \min\bigl(\eta,\ \sqrt{1 + \eta_{n-1}/\eta_{n-2}}\;\eta_{n-1},\ 1/(2L_n)\bigr)
              \quad (\texttt{rule="adgd"}),

    the second Malitsky & Mishchenko's adaptive gradient descent (ICML 2020), which converges on convex,
    locally smooth losses, capped at the group's ``lr`` :math:`\eta`. The first step, and any step with
    :math:`L_n = 0`, uses :math:`\eta` (``adgd``: the growth bound still applies). The update is
    :class:`PerturbedSGD`'s without momentum, perturbed in its last bit by ``k``; the state (the last weights
    and gradients, two copies of the weights, and the last two step sizes) is in the state dict, so a run
    resumes bit for bit. :meth:`step_size` gives :math:`\eta_n` of the last step.
    """

    def __init__(self, params: Iterable, lr: float, *, k: int = 1, weight_decay: float = 0.0,
                 rule: str = "secant") -> None:
        if rule not in SECANT_RULES:
            raise ValueError(f"rule must be one of {SECANT_RULES}; got {rule!r}")
        super().__init__(params, lr, k=k, weight_decay=weight_decay)
        self.defaults["rule"] = rule

    def _pairs(self) -> list[tuple[dict, torch.Tensor, torch.Tensor]]:
        return [(group, p, d_p) for group in self.param_groups for p, d_p in _decayed_gradients(group)]

    def _curvature(self, pairs: list[tuple[dict, torch.Tensor, torch.Tensor]]) -> float:
        r""":math:`L_n` from the last step's weights and gradients (0 before there is a last step)."""
        moved = changed = 0.0
        for _, p, d_p in pairs:
            state = self.state[p]
            if "last_weights" not in state:
                return 0.0
            moved += float((p - state["last_weights"]).double().pow(2).sum())
            changed += float((d_p - state["last_gradient"]).double().pow(2).sum())
        return math.sqrt(changed / moved) if moved > 0 else 0.0

    def _rate(self, lr: float, curvature: float, history: list[float]) -> float:
        if self.defaults["rule"] == "secant":
            return min(lr, 1 / curvature) if curvature > 0 else lr
        rate = min(lr, 1 / (2 * curvature)) if curvature > 0 else lr
        if len(history) >= 2:
            rate = min(rate, math.sqrt(1 + history[-1] / history[-2]) * history[-1])
        return rate

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One gradient-descent update of every parameter that has a gradient, at the secant step size."""
        check_group_ks(self.param_groups)
        loss = _evaluate(closure)
        pairs = self._pairs()
        if not pairs:
            return loss
        first = self.state[pairs[0][1]]
        history = first.setdefault("step_sizes", [])
        curvature = self._curvature(pairs)
        rates = {id(group): self._rate(group["lr"], curvature, history) for group, _, _ in pairs}
        for group, p, d_p in pairs:
            self.state[p]["last_weights"] = p.detach().clone()
            self.state[p]["last_gradient"] = d_p.detach().clone()
            self._apply(p, d_p, rates[id(group)], group["k"])
        history[:] = (history + [rates[id(pairs[0][0])]])[-2:]
        return loss

    def step_size(self) -> float:
        r""":math:`\eta_n` of the last step (of the first parameter group); ``ValueError`` before the first."""
        history = self.state[self.param_groups[0]["params"][0]].get("step_sizes") if self.param_groups else None
        if not history:
            raise ValueError("SecantSGD has no step size before its first step")
        return history[-1]


EIGEN_SETTINGS = ("rank", "lanczos_steps", "every", "safety", "signed", "seed")
"""EigenCFL's own settings, kept in every parameter group (so in the state dict, and checked on loading)."""


class EigenCFL(_Refreshed):
    r"""Gradient descent whose step is shortened only along the top eigenvectors of the full Hessian.

    Every ``every`` steps a warm-started Lanczos run (``lanczos_steps`` Hessian-vector products at most, on
    the loss of the closure; :func:`pdeeos.sharpness.lanczos`) gives the top ``rank`` Ritz pairs
    :math:`(\lambda_i, u_i)` of :math:`H + \text{wd}\,I`, the largest algebraic ones (``signed``) or the
    largest in magnitude. Along each :math:`u_i` whose stable step :math:`c_i = s \cdot 2/|\lambda_i|`
    (``safety`` :math:`s`; for ``signed``, only :math:`\lambda_i > 0`) is below :math:`\eta`, the step is
    :math:`c_i`; everywhere else it is :math:`\eta`:

    .. math:: d = g - \sum_{i:\ c_i < \eta} \bigl(1 - c_i/\eta\bigr)(u_i^\top g)\,u_i, \qquad
              \theta \leftarrow \theta - (k\eta)(d/k),

    the paper's last-bit perturbation ``k`` on the final step (:class:`PerturbedSGD`, no momentum). The
    next refresh starts Lanczos from the sum of the current Ritz vectors. With no direction capped the
    update is gradient descent bit for bit. ``hvps`` counts the products; ``sharpness()`` gives the Ritz
    values and ``step_sizes()`` the step along each; the closure protocol and a bit-exact ``state_dict`` are
    :class:`LocalCFL`'s.
    """

    OWN_SETTINGS = EIGEN_SETTINGS
    REFRESHED = "its Ritz pairs"

    def __init__(self, params: Iterable, lr: float, *, rank: int = 4, lanczos_steps: int = 24, every: int = 10,
                 safety: float = 0.9, signed: bool = True, weight_decay: float = 0.0, k: int = 1,
                 seed: int = 0) -> None:
        self._check_arguments(lr, safety, rank=rank, lanczos_steps=lanczos_steps, every=every)
        if lanczos_steps < rank:
            raise ValueError(f"lanczos_steps ({lanczos_steps}) must be at least rank ({rank})")
        super().__init__(params, lr, k=k, weight_decay=weight_decay)
        self._keep_settings(dict(rank=rank, lanczos_steps=lanczos_steps, every=every, safety=safety,
                                 signed=bool(signed), seed=seed))

    @property
    def _global(self) -> dict[str, Any]:
        """The optimizer's own state (Ritz pairs, step and HVP counts), kept with the first parameter."""
        return self.state[self._params()[0]]

    @property
    def hvps(self) -> int:
        """Hessian-vector products spent so far."""
        return self._global.get("hvps", 0)

    def sharpness(self) -> list[float]:
        r"""The Ritz values :math:`\lambda_i` of the last refresh."""
        self._check_started()
        return list(self._global["ritz_values"])

    def ritz_vectors(self) -> torch.Tensor:
        r"""The Ritz vectors :math:`u_i` of the last refresh, one unit row each over all parameters in order."""
        self._check_started()
        return self._global["ritz_vectors"]

    def step_sizes(self) -> list[float]:
        r"""The step along each Ritz vector at the first group's current ``lr``: :math:`\min(\eta, c_i)`."""
        self._check_started()
        lr = self.param_groups[0]["lr"]
        return [min(lr, c) for c in self._caps()]

    def _check_started(self) -> None:
        if self.steps == 0:
            raise ValueError("EigenCFL has no Ritz pairs or step sizes before its first step")

    def _caps(self) -> list[float]:
        """:math:`c_i` of every Ritz pair (``inf`` where the pair sets no bound)."""
        safety, signed = self.defaults["safety"], self.defaults["signed"]
        return [math.inf if (value <= 0 if signed else value == 0) else safety * 2 / abs(value)
                for value in self._global["ritz_values"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient, after refreshing the Ritz pairs when due."""
        check_group_ks(self.param_groups)
        loss = self._refresh_if_due(closure)
        params = self._params()
        decayed = {p: d_p for group in self.param_groups for p, d_p in _decayed_gradients(group)}
        flat = torch.cat([decayed[p].reshape(-1) if p in decayed else torch.zeros_like(p).reshape(-1)
                          for p in params])
        for group in self.param_groups:
            lr = group["lr"]
            direction = flat.clone()
            for cap, u in zip(self._caps(), self._global["ritz_vectors"]):
                if cap < lr:
                    direction -= (1 - cap / lr) * (u.to(flat) @ flat) * u.to(flat)
            offset = 0
            for p in params:
                size = p.numel()
                if p in decayed and any(p is q for q in group["params"]):
                    self._apply(p, direction[offset: offset + size].view_as(p), lr, group["k"])
                offset += size
        self._global["step"] = self.steps + 1
        return loss

    def _refresh(self, loss: torch.Tensor) -> None:
        r"""New Ritz pairs of :math:`H + \text{wd}\,I` from ``loss``, by Lanczos warm-started from the old ones."""
        params = self._params()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        group_of = self._group_of()
        decay = torch.cat([torch.full((p.numel(),), float(group_of[p]["weight_decay"]), dtype=p.dtype,
                                      device=p.device) for p in params])

        def matvec(v: torch.Tensor) -> torch.Tensor:
            pieces = list(v.split([p.numel() for p in params]))
            dot = sum((g * piece.view_as(g)).sum() for g, piece in zip(grads, pieces) if g is not None)
            hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1) for p, h in zip(params, hv)]) \
                + decay * v

        state, n = self._global, sum(p.numel() for p in params)
        old = state.get("ritz_vectors")
        start = None if old is None or not bool(torch.isfinite(old).all()) else old.sum(0)
        if start is not None and float(start.norm()) == 0:
            start = None
        with torch.enable_grad():
            result = sharpness.lanczos(matvec, n, k=self.defaults["rank"], tol=1e-12,
                                       max_iter=self.defaults["lanczos_steps"], dtype=params[0].dtype,
                                       seed=self.defaults["seed"] + self.steps, start=start,
                                       which="algebraic" if self.defaults["signed"] else "magnitude",
                                       vectors=True)
        state["ritz_values"] = [float(v) for v in result.values]
        state["ritz_vectors"] = result.vectors.detach()
        state["hvps"] = self.hvps + result.matvecs
