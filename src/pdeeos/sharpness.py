r"""Sharpness: the top eigenvalues of the loss Hessian, measured with Hessian-vector products.

The sharpness of a loss :math:`L(\theta)` at :math:`\theta` is the largest *algebraic* eigenvalue
:math:`\lambda_{\max}(\nabla^2 L(\theta))`. Gradient descent :math:`\theta_{t+1} = \theta_t - \eta
\nabla L(\theta_t)` on the quadratic model of :math:`L` is stable along the top eigenvector iff
:math:`\lambda_{\max} \le 2/\eta`.

A Hessian-vector product (HVP) :math:`Hv = \nabla_\theta \langle \nabla_\theta L, v \rangle` costs
about two gradients (double backward). A full-batch loss that does not fit in memory is given as a
sequence of callables whose losses *sum* to the full loss (chunks); their HVPs are summed.

Two eigen-solvers on top of the HVP:

* :func:`lanczos` -- the Lanczos iteration with full reorthogonalisation; returns the largest
  algebraic Ritz values, converged when the residual bound :math:`|\beta_m s_{m,i}|` is below
  ``tol`` relative.
* :func:`power_iteration` -- :math:`v \leftarrow Hv/\|Hv\|` with the Rayleigh quotient as estimate
  (what PyHessian does). It finds the eigenvalue of largest *magnitude*, which is the sharpness only
  when no negative eigenvalue is larger in magnitude.

:func:`of_model` measures a model's sharpness in the middle of training without changing it: buffers
(BatchNorm running statistics, ``num_batches_tracked``), the random-number streams and the modules'
train/eval modes are as they were afterwards, so a measured twin stays bit-identical to an unmeasured one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["LANCZOS_ORDERS", "EigenResult", "LossFn", "MatVec", "bottom_eigenvalue", "exact_hessian", "hvp",
           "hvp_operator", "lanczos", "of_model", "power_iteration", "preconditioned_top_eigenvalue", "rayleigh_quotient", "top_eigenvalue", "top_eigenvalues",
           "untouched"]

LossFn = Callable[[], torch.Tensor]
MatVec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalues (largest first), the number of matrix-vector products used, convergence, and
    the estimate of the top eigenvalue after each product (``history[m - 1]`` after ``m``)."""

    values: np.ndarray
    matvecs: int
    converged: bool
    history: np.ndarray
    vectors: torch.Tensor | None = None
    """The Ritz vectors of ``values`` (one unit row each), where the solver was asked for them."""
    residuals: np.ndarray | None = None
    r"""The residual norms :math:`\|Hy_i - \theta_i y_i\|` of ``values`` (Lanczos only): a symmetric operator has an
    eigenvalue within it of each Ritz value."""
    exhausted: bool = False
    """Whether the Krylov space of the start vector was exhausted (Lanczos only): the start then lies in an
    invariant subspace of the operator, and no eigenvalue outside it can be found from that start."""

    def products_to_reach(self, reference: float, rtol: float) -> int:
        """Products after which the estimate stays within ``rtol`` of ``reference`` (``ValueError`` if never)."""
        off = np.flatnonzero(np.abs(self.history - reference) > rtol * abs(reference))
        if len(off) == len(self.history):
            raise ValueError(f"rtol: the estimate never came within {rtol:g} of {reference:g}")
        return int(off[-1] + 2) if len(off) else 1


def _as_loss_fns(loss_fn: LossFn | Sequence[LossFn]) -> list[LossFn]:
    fns = [loss_fn] if callable(loss_fn) else list(loss_fn)
    if not fns:
        raise ValueError("loss_fn must be a callable or a non-empty sequence of callables")
    return fns


def _check_params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    params = list(params)
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("params must be a non-empty list of tensors that require grad")
    return params


def hvp(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor],
        vector: torch.Tensor) -> torch.Tensor:
    r"""Flat Hessian-vector product :math:`Hv = \sum_c \nabla(\nabla L_c \cdot v)` over the chunks."""
    params = _check_params(params)
    total = torch.zeros_like(vector)
    for fn in _as_loss_fns(loss_fn):
        grads = torch.autograd.grad(fn(), params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat @ vector.to(flat.dtype), params)
        total += torch.cat([h.reshape(-1) for h in hv]).to(total.dtype)
    return total


def hvp_operator(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor]) -> tuple[MatVec, int]:
    r"""The map :math:`v \mapsto Hv` and the dimension :math:`n` of the parameter space."""
    params = _check_params(params)
    n = sum(p.numel() for p in params)
    return (lambda v: hvp(loss_fn, params, v)), n


def rayleigh_quotient(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor],
                      vector: torch.Tensor) -> float:
    r"""The curvature along a direction, :math:`v^\top H v / v^\top v` (NaN for :math:`v = 0`); for a
    standard Gaussian :math:`v` its mean is :math:`\operatorname{tr}(H)/n`, the Hessian's mean eigenvalue."""
    vector = vector.to(torch.float64)
    norm2 = float(vector @ vector)
    if norm2 == 0.0:
        return math.nan
    return float(hvp(loss_fn, params, vector).to(torch.float64) @ vector) / norm2


def exact_hessian(loss_fn: LossFn, params: Iterable[torch.Tensor]) -> torch.Tensor:
    r"""The full :math:`n \times n` Hessian, one HVP per basis vector (small models only)."""
    params = _check_params(params)
    matvec, n = hvp_operator(loss_fn, params)
    dtype = params[0].dtype
    hessian = torch.stack([matvec(e) for e in torch.eye(n, dtype=dtype)])
    return 0.5 * (hessian + hessian.T)


def _start_vector(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    return v / torch.linalg.vector_norm(v)


def _check_solver_args(n: int, k: int, tol: float, max_iter: int) -> None:
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n = {n}; got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be positive; got {max_iter}")


def _product(matvec: MatVec, v: torch.Tensor, dtype: torch.dtype, m: int) -> torch.Tensor:
    """``matvec(v)`` in ``dtype``; ``ValueError`` when it is not finite (a loss or gradient that is ``nan`` or
    infinite at these parameters, such as a run that blew up, has no sharpness)."""
    w = matvec(v).to(dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"the Hessian-vector product is not finite (product {m}): the loss or its gradient is "
                         "nan or infinite at these parameters, so there is no sharpness to measure (did the run "
                         "blow up?)")
    return w


LANCZOS_ORDERS = ("algebraic", "magnitude")
"""Which Ritz values :func:`lanczos` returns: the largest algebraic ones, or the largest in magnitude."""


def _chosen(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the ``k`` Ritz values (ascending ``theta``) that :func:`lanczos` reports, first first."""
    if which == "algebraic":
        return np.arange(len(theta) - 1, len(theta) - 1 - k, -1)
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def lanczos(matvec: MatVec, n: int, *, k: int = 1, tol: float = 1e-6, max_iter: int = 200,
            dtype: torch.dtype = torch.float64, seed: int = 0, start: torch.Tensor | None = None,
            which: str = "algebraic", vectors: bool = False, min_iter: int = 1) -> EigenResult:
    r"""Largest ``k`` algebraic eigenvalues (``which="magnitude"``: largest in magnitude) of a symmetric
    operator by Lanczos.

    Builds the Krylov basis :math:`Q_m` and tridiagonal :math:`T_m = Q_m^\top H Q_m` (full
    reorthogonalisation); the Ritz values are the eigenvalues :math:`\theta_i` of :math:`T_m`, with
    residual :math:`\|H y_i - \theta_i y_i\| = |\beta_m s_{m,i}|`. Stops when that residual is
    below ``tol * |theta_i|`` for the chosen ``k`` after at least ``min_iter`` products, or the Krylov space is
    exhausted (:math:`\beta_m \le \sqrt{\varepsilon}\,\|Hq_m\|`; then fewer than ``k`` values may come back).
    ``start``: the first
    Krylov vector (a warm start, normalised here; default a random one from ``seed``); ``vectors``: also
    return the Ritz vectors :math:`y_i = Q_m^\top s_i`.
    """
    _check_solver_args(n, k, tol, max_iter)
    if which not in LANCZOS_ORDERS:
        raise ValueError(f"which must be one of {LANCZOS_ORDERS}; got {which!r}")
    if start is not None:
        start = start.detach().reshape(-1).to(dtype)
        norm = torch.linalg.vector_norm(start)
        if start.numel() != n or not bool(torch.isfinite(norm)) or norm == 0:
            raise ValueError(f"start must be a finite, non-zero vector of {n} entries")
    basis = [_start_vector(n, dtype, seed) if start is None else start / norm]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    for m in range(1, min(max_iter, n) + 1):
        w = _product(matvec, basis[-1], dtype, m)
        scale = float(torch.linalg.vector_norm(w))
        alphas.append(float(w @ basis[-1]))
        q = torch.stack(basis)
        w = w - q.T @ (q @ w)
        w = w - q.T @ (q @ w)   # twice is enough (Kahan)
        beta = float(torch.linalg.vector_norm(w))
        theta, s = _ritz(alphas, betas)
        top = _chosen(theta, min(k, m), which)
        history.append(theta[top[0]])
        residual = np.abs(beta * s[-1, top])
        done = m >= max(k, min_iter) and np.all(residual <= tol * np.maximum(np.abs(theta[top]), 1e-30))
        exhausted = beta <= _breakdown_rtol(dtype) * scale or m == n
        if done or exhausted:
            return _result(theta, s, top, basis[:m], m, True, history, vectors, residual, exhausted)
        betas.append(beta)
        basis.append(w / beta)
    return _result(theta, s, top, basis[:m], m, False, history, vectors, residual, False)


def _breakdown_rtol(dtype: torch.dtype) -> float:
    r"""The Krylov space counts as exhausted when :math:`\beta_m \le \sqrt{\varepsilon}\,\|Hq_m\|` in the
    working precision: the Ritz values are then exact to that residual, and the next "Lanczos vector" would be
    the rounding noise of the products, normalised, on which the recurrence no longer represents :math:`H`
    (its Ritz values grow without bound: :math:`3 \times 10^5` for a Hessian :math:`20I + \gamma uu^\top`
    whose radius is 20.01)."""
    return math.sqrt(torch.finfo(dtype).eps)


def _result(theta: np.ndarray, s: np.ndarray, top: np.ndarray, basis: list[torch.Tensor], m: int,
            converged: bool, history: list[float], vectors: bool, residuals: np.ndarray,
            exhausted: bool) -> EigenResult:
    ritz = None
    if vectors:
        q = torch.stack(basis)
        ritz = torch.from_numpy(np.ascontiguousarray(s[:, top].T)).to(q) @ q
    return EigenResult(theta[top], m, converged, np.array(history), ritz, np.asarray(residuals, dtype=float),
                       exhausted)


def _ritz(alphas: list[float], betas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the Lanczos tridiagonal (ascending values, eigenvectors in columns)."""
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    return np.linalg.eigh(t)


def power_iteration(matvec: MatVec, n: int, *, tol: float = 1e-6, max_iter: int = 200,
                    dtype: torch.dtype = torch.float64, seed: int = 0) -> EigenResult:
    r"""Eigenvalue of largest magnitude by power iteration, the Rayleigh quotient :math:`v^\top Hv`.

    Stops, as PyHessian does, when the estimate changes by less than ``tol`` relative.
    """
    _check_solver_args(n, 1, tol, max_iter)
    v = _start_vector(n, dtype, seed)
    history: list[float] = []
    for m in range(1, max_iter + 1):
        w = _product(matvec, v, dtype, m)
        history.append(float(w @ v))
        norm = torch.linalg.vector_norm(w)
        if norm == 0:
            return EigenResult(np.array([0.0]), m, True, np.array(history))
        v = w / norm
        if m > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            return EigenResult(np.array(history[-1:]), m, True, np.array(history))
    return EigenResult(np.array(history[-1:]), max_iter, False, np.array(history))


def top_eigenvalues(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor], k: int = 1, *,
                    tol: float = 1e-6, max_iter: int = 200, seed: int = 0) -> EigenResult:
    """The ``k`` largest algebraic Hessian eigenvalues of ``loss_fn`` at ``params`` (Lanczos)."""
    params = _check_params(params)
    matvec, n = hvp_operator(loss_fn, params)
    return lanczos(matvec, n, k=k, tol=tol, max_iter=max_iter, dtype=params[0].dtype, seed=seed)


def bottom_eigenvalue(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor], *,
                      tol: float = 1e-6, max_iter: int = 200, seed: int = 0) -> EigenResult:
    r"""The smallest algebraic Hessian eigenvalue :math:`\lambda_{\min}(\nabla^2 L)`: Lanczos on
    :math:`-\nabla^2 L`, its value and history negated back (the most negative curvature, where there is any)."""
    params = _check_params(params)
    matvec, n = hvp_operator(loss_fn, params)
    result = lanczos(lambda v: -matvec(v), n, k=1, tol=tol, max_iter=max_iter, dtype=params[0].dtype, seed=seed)
    return EigenResult(-result.values, result.matvecs, result.converged, -result.history)


def top_eigenvalue(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor], *,
                   tol: float = 1e-6, max_iter: int = 200) -> float:
    r"""The sharpness :math:`\lambda_{\max}(\nabla^2 L)`: largest algebraic Hessian eigenvalue.

    ``loss_fn()`` returns the scalar loss of ``params`` (any iterable of tensors requiring grad, such as
    ``model.parameters()``), or is a sequence of such callables whose losses sum to the full loss (full batch
    in chunks).
    """
    return float(top_eigenvalues(loss_fn, params, tol=tol, max_iter=max_iter).values[0])


def preconditioned_top_eigenvalue(loss_fn: LossFn | Sequence[LossFn], params: Iterable[torch.Tensor],
                                  inverse_preconditioner: Sequence[torch.Tensor], *, tol: float = 1e-6,
                                  max_iter: int = 200, seed: int = 0) -> float:
    r"""The preconditioned sharpness :math:`\lambda_{\max}(P^{-1}\nabla^2 L) = \lambda_{\max}(P^{-1/2}\nabla^2 L\,
    P^{-1/2})` for a diagonal preconditioner given by the diagonal of :math:`P^{-1}`
    (``inverse_preconditioner``, one positive tensor per parameter; for Adam
    :func:`pdeeos.optim.adam_preconditioner`), by Lanczos on :math:`v \mapsto P^{-1/2} H P^{-1/2} v`.
    An adaptive method is at its own edge of stability when this reaches its threshold
    (:func:`pdeeos.optim.adam_edge`), not when :math:`\lambda_{\max}(\nabla^2 L)` reaches :math:`2/\eta`."""
    params = _check_params(params)
    scale = [torch.as_tensor(d) for d in inverse_preconditioner]
    if len(scale) != len(params) or any(d.shape != p.shape for d, p in zip(scale, params)):
        raise ValueError("inverse_preconditioner must give one tensor shaped like each parameter")
    if not all(bool((d > 0).all()) and bool(torch.isfinite(d).all()) for d in scale):
        raise ValueError("inverse_preconditioner must be finite and positive")
    root = torch.cat([d.detach().reshape(-1).sqrt() for d in scale]).to(params[0].dtype)
    matvec, n = hvp_operator(loss_fn, params)
    result = lanczos(lambda v: root * matvec(root * v), n, tol=tol, max_iter=max_iter, dtype=params[0].dtype,
                     seed=seed)
    return float(result.values[0])


@contextmanager
def untouched(model: nn.Module, *, eval_mode: bool = False) -> Iterator[nn.Module]:
    """Inside, ``model`` may be evaluated freely (in eval mode if ``eval_mode``); on leaving, its buffers
    (BatchNorm running statistics and ``num_batches_tracked``), every module's train/eval mode and the
    random-number state of the CPU and of the model's CUDA devices are restored."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        if eval_mode:
            model.eval()
        try:
            yield model
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for module, training in modes:
                module.training = training


def of_model(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], *, eval_mode: bool = False,
             tol: float = 1e-6, max_iter: int = 200) -> float:
    r"""The sharpness :math:`\lambda_{\max}(\nabla^2_\theta L)` of ``loss_fn(model)`` over the model's
    trainable parameters :math:`\theta` (:func:`top_eigenvalue`), leaving the model as it was
    (:func:`untouched`): measuring one of two twins keeps them bit-identical. With ``eval_mode`` the loss is
    evaluated in eval mode (BatchNorm with its running statistics, no dropout); otherwise in the model's own
    mode, where BatchNorm uses the batch statistics the training step sees (and dropout would draw new masks
    at every Hessian-vector product, which makes the loss random: measure a model with dropout in eval
    mode)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with untouched(model, eval_mode=eval_mode):
        return top_eigenvalue(lambda: loss_fn(model), params, tol=tol, max_iter=max_iter)
