"""Perturbed optimizers: the paper's last-bit perturbation of the update (§4, App. B).

The perturbation of the official code rescales only the final step: the update ``lr * d_p`` is
computed as ``(k * lr) * (d_p / k)``. Mathematically nothing changes; in floating point the two
roundings (``d_p / k`` and the product) differ from the single one of ordinary SGD in the last bit
of some entries whenever ``k`` is not a power of two. Weight decay and (Nesterov) momentum act
first, on the unscaled gradient, exactly as in :class:`torch.optim.SGD`, so ``k = 1`` is
bit-identical to it and ``k = 2**j`` is bit-identical to ``k = 1`` (scaling by a power of two is
exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch


def check_k(k: object) -> int:
    """``k`` if it is an integer >= 1, else ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return k


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


class PerturbedSGD(torch.optim.Optimizer):
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
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, k, momentum = group["lr"], group["k"], group["momentum"]
            for p, d_p in _decayed_gradients(group):
                if momentum != 0:
                    d_p = self._momentum(p, d_p, momentum, group["dampening"], group["nesterov"])
                p.add_(d_p / k, alpha=-(k * lr))
        return loss

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


class PerturbedAdam(torch.optim.Optimizer):
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
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, grad in _decayed_gradients(group):
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** state["step"]) ** 0.5)
                denom.add_(group["eps"])
                k = group["k"]
                p.addcdiv_(state["exp_avg"] / k, denom, value=-(k * step_size))
        return loss
