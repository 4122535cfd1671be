r"""The tangent map of SGD on one's own ``nn.Module``: log stretches for a Lyapunov exponent.

:class:`pdeeos.twins.Twins` measures how fast a last-bit difference grows by running twins; this module measures
the same growth without twins, from the Jacobian of the training map. SGD with momentum :math:`\mu` and
weight decay :math:`w` (:class:`torch.optim.SGD`'s conventions, no dampening) is a map on the state
:math:`(\theta, b)` of weights and momentum buffer,

.. math:: b' = \mu b + g(\theta), \qquad
          \theta' = \theta - \eta\,b' \ \text{(heavy ball)}, \qquad
          \theta' = \theta - \eta\,(g(\theta) + \mu b') \ \text{(Nesterov)},

with :math:`g = \nabla L + w\theta` the batch's gradient, so a tangent vector :math:`(\delta\theta, \delta b)`
moves by

.. math:: \delta b' = \mu\,\delta b + (H + wI)\,\delta\theta, \qquad
          \delta\theta' = \delta\theta - \eta\,\delta b' \quad\text{or}\quad
          \delta\theta' = \delta\theta - \eta\,\bigl((H + wI)\,\delta\theta + \mu\,\delta b'\bigr),

:math:`H` the Hessian of the batch's loss at :math:`\theta` (one Hessian-vector product per step;
:math:`\mu = 0` is plain gradient descent, where :math:`\delta b` plays no part). :func:`log_stretches`
records :math:`\log(\|(\delta\theta', \delta b')\| / \|(\delta\theta, \delta b)\|)` at every step and renormalises;
:func:`pdeeos.lyapunov.exponent` averages them into the finite-time exponent :math:`\Lambda`.

The caveat for ReLU (and other kinked activations): the Hessian of a ReLU network is the Hessian of its
current linear pieces, so the tangent map does not see a difference that moves a pre-activation across 0,
and it can understate how fast a ReLU network's twins separate. ``scripts/tangent_vs_twins.py`` measures
both on chapter 9's MLPs (Fashion-MNIST, SGD at lr 0.2 with momentum 0.9, 300 steps, seeds 0 and 1). On one
CPU the ReLU twins grow at 0.38 and 0.23 a step, against tangent exponents of 0.25 and 0.05 over steps
0-100. For tanh the figures are 0.11 and 0.10 against 0.11 and 0.11, and for GELU 0.38 and 0.10 against 0.51
and 0.13. The two are not the same measurement: the twins' rate is fitted from their onset to saturation,
while the exponent averages the reference run's stretches over a fixed window. So the twin-based rate of
:meth:`pdeeos.twins.Twins.growth` is the default, and the tangent exponent is a cross-check.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

__all__ = ["log_stretches"]

LossOf = Callable[[nn.Module], torch.Tensor]
"""``loss_fn(model)``: the scalar loss of one batch for the model."""


def _check(lr: float, momentum: float, weight_decay: float, nesterov: bool) -> None:
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    if lr == 0:
        raise ValueError("lr must be > 0")
    if nesterov and momentum == 0:
        raise ValueError("nesterov needs momentum > 0 (as torch.optim.SGD)")


def _log_unit(vectors: list[torch.Tensor]) -> float:
    """Divide ``vectors`` by their joint norm, in place; return the norm's log (``-inf`` for a zero vector,
    left as it is; ``nan`` for a vector that is not finite)."""
    norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in vectors))
    if not math.isfinite(norm):
        return math.nan
    if norm == 0:
        return -math.inf
    for v in vectors:
        v.div_(norm)
    return math.log(norm)


def _orthonormalise(states: list[list[torch.Tensor]]) -> list[float]:
    """Replace the tangent vectors ``states`` (each a list of tensors) by an orthonormal basis of their span,
    in place (Gram-Schmidt order: a QR factorisation of the flattened vectors in float64); return
    :math:`\\log|R_{ii}|`, the log stretch of each direction."""
    flat = torch.stack([torch.cat([v.double().reshape(-1) for v in state]) for state in states], dim=1)
    if not torch.isfinite(flat).all():
        return [math.nan] * len(states)
    q, r = torch.linalg.qr(flat)
    for j, state in enumerate(states):
        offset = 0
        for v in state:
            v.copy_(q[offset:offset + v.numel(), j].reshape(v.shape))
            offset += v.numel()
    with np.errstate(divide="ignore"):
        return np.log(np.abs(torch.diagonal(r).numpy())).tolist()


def log_stretches(model: nn.Module, loss_fns: Iterable[LossOf], *, lr: float, momentum: float = 0.0,
                  nesterov: bool = False, weight_decay: float = 0.0, seed: int = 0, vectors: int = 1,
                  losses: list[float] | None = None) -> np.ndarray:
    r"""Train a copy of ``model`` by :class:`torch.optim.SGD` (``lr``, ``momentum``, ``nesterov``,
    ``weight_decay``) on the batches' losses ``loss_fns`` (one ``loss_fn(model)`` per step), carrying
    ``vectors`` tangent vectors :math:`(\delta\theta, \delta b)` (random, from ``seed``) through the tangent map
    of each step; returns the log stretch of every step (float64, one per loss; shape ``(steps,)`` for one
    vector). ``model`` is not trained. The exponent is :func:`pdeeos.lyapunov.exponent` of the result (with
    ``discard`` for the transient).

    With ``vectors = r > 1`` the vectors are re-orthonormalised after every step (QR, Benettin's method), and
    the result ``(steps, r)`` holds :math:`\log|R_{ii}|`: the means of its columns are the top :math:`r`
    finite-time Lyapunov exponents :math:`\Lambda_1 \ge \dots \ge \Lambda_r` (``exponent(result.T)``). Each
    step costs ``r`` Hessian-vector products. With a list ``losses``, each step's loss is appended to it (the
    trajectory the stretches were measured along)."""
    _check(lr, momentum, weight_decay, nesterov)
    if isinstance(vectors, bool) or not isinstance(vectors, int) or vectors < 1:
        raise ValueError(f"vectors must be a whole number >= 1; got {vectors!r}")
    twin = copy.deepcopy(model)
    params = [p for p in twin.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have at least one parameter that requires grad")
    if vectors > sum(p.numel() for p in params) * (2 if momentum > 0 else 1):
        raise ValueError(f"vectors must not exceed the tangent space's dimension; got {vectors!r}")
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    thetas = [[torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in params] for _ in range(vectors)]
    bufs = [[torch.zeros_like(p) for p in params] for _ in range(vectors)]
    if vectors == 1:
        _log_unit(thetas[0])
    else:
        _orthonormalise(thetas)
    out = []
    for loss_fn in loss_fns:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(twin)
        if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
            raise ValueError(f"loss_fn(model) must return a scalar tensor computed from the model; got {loss!r}")
        if losses is not None:
            losses.append(float(loss))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for j in range(vectors):
            hv = torch.autograd.grad(grads, params, grad_outputs=thetas[j], retain_graph=j < vectors - 1)
            thetas[j], bufs[j] = _tangent_step(hv, thetas[j], bufs[j], lr=lr, momentum=momentum,
                                               nesterov=nesterov, weight_decay=weight_decay)
        with torch.no_grad():
            states = [t + b for t, b in zip(thetas, bufs)] if momentum > 0 else thetas
            out.append(_log_unit(states[0]) if vectors == 1 else _orthonormalise(states))
        for p, g in zip(params, grads):
            p.grad = g.detach()
        optimizer.step()
    return np.array(out, dtype=np.float64)


@torch.no_grad()
def _tangent_step(hv: tuple[torch.Tensor, ...], d_theta: list[torch.Tensor], d_buf: list[torch.Tensor], *,
                  lr: float, momentum: float, nesterov: bool,
                  weight_decay: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One step of the tangent map (the module's equations) from :math:`(\\delta\\theta, \\delta b)`, given
    :math:`H\\delta\\theta`."""
    curvature = [h + weight_decay * v for h, v in zip(hv, d_theta)]
    d_buf = [momentum * b + c for b, c in zip(d_buf, curvature)]
    direction = [c + momentum * b for c, b in zip(curvature, d_buf)] if nesterov else d_buf
    return [v - lr * s for v, s in zip(d_theta, direction)], d_buf
