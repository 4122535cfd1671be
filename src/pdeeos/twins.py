r"""Twins: copies of your own network, one per last-bit perturbation ``k``, stepped in your own loop.

The question the paper asks of its CNNs can be asked of any training: does it amplify a last-bit
difference, how fast, and how does the difference end? :class:`Twins` keeps one copy of a model per ``k``,
all with the same initial weights, each with its own optimizer perturbed in its last bit by ``k``
(:func:`pdeeos.optim.perturb`). Each call of :meth:`Twins.step` steps every copy on the same loss (the
caller's batch, any loss, any data source), and every ``record_every`` steps (``None``: never, for a caller
that keeps its own records, as :class:`pdeeos.training.LockstepTrainer` does) it records each copy's loss
and its distance to the ``k = 1`` copy,

.. math:: \mathrm{RelL1}(\theta^{(k)}, \theta^{(1)}) = \frac{2}{N}\sum_{i=1}^N
          \frac{|\theta^{(k)}_i - \theta^{(1)}_i|}{|\theta^{(k)}_i| + |\theta^{(1)}_i|}

(:func:`pdeeos.metrics.rel_l1`) over the whole network and per parameter tensor; every
``sharpness_every`` steps it measures each copy's sharpness :math:`\lambda_{\max}` without disturbing it
(:func:`pdeeos.sharpness.of_model`) and :math:`\eta\lambda_{\max}` against the value it takes at the stable
step of SGD. :meth:`Twins.fate` and :meth:`Twins.growth` read the records with :mod:`pdeeos.lyapunov`.

Everything a run needs is in :meth:`Twins.state_dict`, so a resumed run is bit-identical to an
uninterrupted one; the code is device-agnostic (the copies live where the model does).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pdeeos import lyapunov, sharpness
from pdeeos.optim import PerturbedSGD, check_k, perturb, stable_step

__all__ = ["SHARPNESS_MAX_ITER", "SHARPNESS_TOL", "Twins", "check_ks", "edge"]

SHARPNESS_TOL = 1e-3
"""The relative Lanczos residual at which the sharpness :class:`Twins` records has converged."""
SHARPNESS_MAX_ITER = 100
"""The most Hessian-vector products one sharpness measurement of :class:`Twins` may spend."""

LossOf = Callable[[nn.Module], torch.Tensor]
"""``loss_fn(model)``: the scalar loss of the current batch for one copy."""


def edge(optimizer: torch.optim.Optimizer) -> float:
    r"""The value of :math:`\eta\lambda_{\max}` (``lr`` of the first group times the loss's sharpness) at the
    stable step of an SGD optimizer: :math:`F - \eta\,\mathrm{wd}` with :math:`F` = 2 for gradient descent,
    :math:`2(1+\mu)/(1-\text{dampening})` for heavy ball and :math:`2(1+\mu)/(1+2\mu)` for Nesterov
    (:func:`pdeeos.optim.stable_step`; L2 weight decay adds :math:`\mathrm{wd}` to every eigenvalue of the
    step's Hessian); ``nan`` for other optimizers (Adam's threshold concerns its preconditioned Hessian)."""
    if not isinstance(optimizer, (torch.optim.SGD, PerturbedSGD)):
        return float("nan")
    group = optimizer.param_groups[0]
    factor = stable_step(1.0, momentum=group["momentum"], nesterov=group["nesterov"])
    if group["momentum"] > 0 and not group["nesterov"]:
        factor /= 1 - group["dampening"]
    return factor - group["lr"] * group["weight_decay"]


def _check_every(name: str, value: object, *, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or None' if optional else ''}; got {value!r}")
    return value


def check_ks(ks: object) -> tuple[int, ...]:
    """``ks`` as a tuple: at least two perturbations (integers >= 1), one of them ``k = 1``; ``ValueError``
    otherwise."""
    if not isinstance(ks, Sequence) or isinstance(ks, str) or len(ks) < 2:
        raise ValueError(f"ks must be a sequence of at least two perturbations k; got {ks!r}")
    for k in ks:
        check_k(k)
    if 1 not in ks:
        raise ValueError(f"ks must contain k = 1, the unperturbed copy the others are measured against; got {ks!r}")
    return tuple(ks)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must have at least one parameter that requires grad")
    return model


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, in at least float32 (exact for every floating dtype)."""
    t = t.detach()
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _rel_l1_sums(params: list[torch.Tensor], reference: list[torch.Tensor],
                 scratch: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    r"""Per tensor, :math:`\sum_i |a_i - b_i| / (|a_i| + |b_i| + \text{tiny})` (float64, on the tensors'
    device), with tiny the smallest normal float32 (a no-op on any weight above about 1e-31, and 0, not 0/0,
    where both entries are 0; ``nan`` where one is not finite). It runs at every record, so it writes into
    two buffers the size of the weights (``scratch``, kept between records: a fresh allocation of that size
    costs more than the arithmetic) and makes seven passes over them."""
    tiny = torch.finfo(torch.float32).tiny
    sums = []
    for p, b, (diff, den) in zip(params, reference, scratch):
        a = _wide(p)
        torch.abs(b, out=den).add_(tiny).add_(torch.abs(a, out=diff))
        sums.append(torch.sub(a, b, out=diff).abs_().div_(den).sum())
    return torch.stack(sums).double()


class Twins:
    r"""Copies of ``model``, one per ``k`` of ``ks``, stepped in lockstep inside the caller's loop.

    ``make_optimizer(params)`` builds any :class:`torch.optim.Optimizer` for one copy's trainable
    parameters (a list, in ``model.parameters()`` order); :class:`Twins` perturbs it by that copy's ``k``
    (:func:`pdeeos.optim.perturb`: :math:`\theta \leftarrow \theta_{\text{old}} + (k\Delta)/k`; the paper's
    own form for :class:`~pdeeos.optim.PerturbedSGD` and :class:`~pdeeos.optim.PerturbedAdam`). ``ks`` must
    contain 1: distances are measured to the first copy with ``k = 1`` (its index is ``reference``). ``model`` itself is
    not trained: every copy is a deep copy of it, so all start from its weights and buffers.

    Every ``record_every`` steps (``None``: never) the loss of each copy and its RelL1 distance to the reference (whole network
    and per parameter tensor, named in ``names``) are recorded; every ``sharpness_every`` steps (``None``:
    never) each copy's sharpness too. :attr:`history` gives the records as arrays. ``models`` and
    ``optimizers`` are the copies and their optimizers (for schedulers: one per optimizer, stepped by the
    caller; their learning rates live in the optimizers' state).
    """

    def __init__(self, model: nn.Module, make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                 ks: Sequence[int] = (1, 3), *, record_every: int | None = 1, sharpness_every: int | None = None) -> None:
        self.ks = check_ks(ks)
        self.record_every = _check_every("record_every", record_every, optional=True)
        self.sharpness_every = _check_every("sharpness_every", sharpness_every, optional=True)
        _check_model(model)
        if not callable(make_optimizer):
            raise ValueError(f"make_optimizer must be a callable params -> torch.optim.Optimizer; got {make_optimizer!r}")
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.reference = self.ks.index(1)
        self.models = [copy.deepcopy(model) for _ in self.ks]
        self.optimizers = [self._optimizer(make_optimizer, m, k) for m, k in zip(self.models, self.ks)]
        self.dtype = max((p.dtype for p in _trainable(model)), key=lambda t: torch.finfo(t).eps)
        self._params = [_trainable(m) for m in self.models]
        self._order = [self.reference] + [i for i in range(len(self.ks)) if i != self.reference]
        self._sizes = torch.tensor([p.numel() for p in self._params[0]], dtype=torch.float64,
                                   device=self._params[0][0].device)     # no host-to-device copy per record
        self._size = int(self._sizes.sum())
        self.steps = 0
        self._records: list[torch.Tensor] = []
        self._record_steps: list[int] = []
        self._sharpness: list[torch.Tensor] = []
        self._sharpness_steps: list[int] = []
        self._scratch: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _optimizer(make_optimizer: Callable, model: nn.Module, k: int) -> torch.optim.Optimizer:
        params = _trainable(model)
        optimizer = make_optimizer(list(params))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"make_optimizer must return a torch.optim.Optimizer; got {type(optimizer).__name__}")
        own = {id(p) for p in params}
        if not all(id(p) in own for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("make_optimizer must build the optimizer over the parameters it is given (one copy's), "
                             "not over another model's")
        return perturb(optimizer, k)

    # ------------------------------------------------------------------ stepping

    def step(self, loss_fn: LossOf) -> torch.Tensor:
        """One optimizer step of every copy on ``loss_fn(copy)`` (the same batch for every copy: draw random
        augmentation once, outside ``loss_fn``); returns the copies' losses before the step (a tensor, one
        per copy) and records when a record is due."""
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be a callable model -> scalar loss tensor; got {loss_fn!r}")
        due = self.record_every is not None and (self.steps + 1) % self.record_every == 0
        losses, sums = self._step_all(loss_fn, measure=due)
        self.steps += 1
        if due:
            self._record(losses, sums)
        if self.sharpness_every is not None and self.steps % self.sharpness_every == 0:
            self._measure(loss_fn)
        return losses

    def _step_all(self, loss_fn: LossOf, *, measure: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Step the reference, then every other copy, each (if ``measure``) compared with the reference right
        after its step, while its weights are in cache; the losses and the per-tensor RelL1 sums."""
        losses: list[torch.Tensor] = [torch.empty(0)] * len(self.ks)
        sums: list[torch.Tensor | None] = [None] * len(self.ks)
        reference: list[torch.Tensor] = []
        for i in self._order:
            losses[i] = self._step_copy(self.models[i], self.optimizers[i], loss_fn)
            if measure and i == self.reference:
                reference = [_wide(p) for p in self._params[i]]
                if not self._scratch:
                    self._scratch = [(torch.empty_like(b), torch.empty_like(b)) for b in reference]
            elif measure:
                sums[i] = _rel_l1_sums(self._params[i], reference, self._scratch)
        return torch.stack(losses), sums

    @staticmethod
    def _step_copy(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossOf) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model)
        if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
            raise ValueError("loss_fn(model) must return a scalar tensor computed from the model (with its graph); "
                             f"got {loss!r}")
        if getattr(optimizer, "refresh_due", False):    # LocalCFL differentiates this batch's loss again
            loss.backward(retain_graph=True)
            optimizer.step(lambda: loss)
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    def _record(self, losses: torch.Tensor, sums: list[torch.Tensor | None]) -> None:
        """One row per copy: loss, whole-network RelL1, RelL1 of every parameter tensor (float64, on device)."""
        rows = torch.stack([torch.zeros_like(self._sizes) if s is None else s for s in sums])
        whole = rows.sum(1, keepdim=True).mul_(2 / self._size)
        self._records.append(torch.cat([losses.double()[:, None], whole, rows.mul_(2).div_(self._sizes)], 1))
        self._record_steps.append(self.steps)

    def _measure(self, loss_fn: LossOf) -> None:
        rows = []
        for model, optimizer in zip(self.models, self.optimizers):
            lam = sharpness.of_model(model, loss_fn, tol=SHARPNESS_TOL, max_iter=SHARPNESS_MAX_ITER)
            rows.append([lam, optimizer.param_groups[0]["lr"] * lam, edge(optimizer)])
        self._sharpness.append(torch.tensor(rows, dtype=torch.float64))
        self._sharpness_steps.append(self.steps)

    # ------------------------------------------------------------------ reading the records

    @property
    def history(self) -> dict[str, np.ndarray]:
        r"""The records as arrays (R records, C copies in ``ks`` order, P parameter tensors, S measurements):
        ``steps`` (R), ``loss`` (R×C), ``rel_l1`` (R×C, 0 in the reference's column), ``rel_l1_params`` (R×C×P),
        ``sharpness_steps`` (S), ``sharpness`` (S×C, :math:`\lambda_{\max}`), ``eta_sharpness``
        (S×C, :math:`\eta\lambda_{\max}`) and ``edge`` (S×C, its value at the stable step, :func:`edge`)."""
        copies, tensors = len(self.ks), len(self.names)
        rec = (torch.stack(self._records).cpu().numpy() if self._records
               else np.zeros((0, copies, 2 + tensors)))
        sharp = torch.stack(self._sharpness).numpy() if self._sharpness else np.zeros((0, copies, 3))
        return {"steps": np.array(self._record_steps, dtype=np.int64), "loss": rec[:, :, 0],
                "rel_l1": rec[:, :, 1], "rel_l1_params": rec[:, :, 2:],
                "sharpness_steps": np.array(self._sharpness_steps, dtype=np.int64), "sharpness": sharp[:, :, 0],
                "eta_sharpness": sharp[:, :, 1], "edge": sharp[:, :, 2]}

    def _distances(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.history
        if h["steps"].size < 4 or not np.isfinite(h["rel_l1"]).all():
            raise ValueError(f"fate and growth need at least 4 finite records of the distance; there are "
                             f"{h['steps'].size} (record_every={self.record_every}), finite: "
                             f"{bool(np.isfinite(h['rel_l1']).all())} (a copy that blew up has no fate)")
        return h["rel_l1"].T, h["steps"]

    def fate(self) -> list[str]:
        """:func:`pdeeos.lyapunov.fate` of every copy's distance to the reference, in ``ks`` order, against the
        rounding floor of the model's precision (the reference's own entry is ``"rounding"``: distance 0)."""
        distances, steps = self._distances()
        return [lyapunov.fate(d, dtype=self.dtype, steps=steps) for d in distances]

    def growth(self) -> list[lyapunov.Growth]:
        """:func:`pdeeos.lyapunov.growth` (onset, rate per step with its interval, drift) of every copy's
        distance to the reference, in ``ks`` order."""
        distances, steps = self._distances()
        return [lyapunov.growth(d, dtype=self.dtype, steps=steps) for d in distances]

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every copy's output for the inputs ``x`` in eval mode (copies × inputs × ...), the copies left as
        they were (:func:`pdeeos.sharpness.untouched`)."""
        out = []
        for model in self.models:
            with sharpness.untouched(model, eval_mode=True):
                out.append(model(x))
        return torch.stack(out)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Every copy's predicted class (argmax of its output) for the inputs ``x`` (copies × inputs)."""
        return self.outputs(x).argmax(-1)

    # ------------------------------------------------------------------ checkpoints

    def _settings(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "record_every": self.record_every, "sharpness_every": self.sharpness_every,
                "names": list(self.names)}

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs: settings, step count, every copy's weights and buffers and its
        optimizer's state, and the records."""
        return {**self._settings(), "steps": self.steps,
                "models": [m.state_dict() for m in self.models], "optimizers": [o.state_dict() for o in self.optimizers],
                "records": torch.stack(self._records).cpu() if self._records else None,
                "record_steps": list(self._record_steps),
                "sharpness": torch.stack(self._sharpness) if self._sharpness else None,
                "sharpness_steps": list(self._sharpness_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ``ValueError`` if it was made with other ``ks``, ``record_every``,
        ``sharpness_every`` or parameters."""
        saved = {key: state.get(key) for key in self._settings()}
        if saved != self._settings():
            raise ValueError(f"state dict made with other settings: {saved}, not {self._settings()}")
        for model, sd in zip(self.models, state["models"]):
            model.load_state_dict(sd)
        for optimizer, sd in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(sd)
        device = self._params[0][0].device
        self.steps = state["steps"]
        self._records = [] if state["records"] is None else list(state["records"].to(device))
        self._record_steps = list(state["record_steps"])
        self._sharpness = [] if state["sharpness"] is None else list(state["sharpness"])
        self._sharpness_steps = list(state["sharpness_steps"])
