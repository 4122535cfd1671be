r"""The gradient-descent PDE of the one-layer CNN (paper §5.1, §5.4) and its forward-Euler scheme.

The network is :math:`f(I) = s\bigl(\tfrac{1}{M^2}\sum_x r(K \star I)(x)\bigr)` with :math:`\star` the
valid cross-correlation (``M = N - w + 1`` output positions per side), :math:`r(x) = x\,s(\beta x)` the
Swish activation, :math:`s` the sigmoid and mean pooling, as in the official code. With one image of
label :math:`y` the loss is :math:`L(K) = \ell(y, \hat y) + \tfrac{\alpha}{2}\|K\|^2` (binary
cross-entropy), and its gradient (Thm 5.1, windowed as in eq. 8) is

.. math:: \nabla_K L = (\hat y - y)\,\tfrac{1}{M^2}\, r'(K \star I) \star I + \alpha K .

Forward Euler with step :math:`\Delta t` and the floating-point perturbation factor :math:`k` of the
official code gives :math:`K^{n+1} = K^n - (k\Delta t)\,(\nabla_K L(K^n)/k)`; :math:`k = 1` is plain
gradient descent and every :math:`k` is the same scheme in exact arithmetic.

Both correlations are done with batched FFTs (``method="fft"``) or with ``torch.nn.functional.conv2d``
(``method="direct"``), a second, mathematically equal implementation. :func:`simulate` advances a batch
of step sizes (and perturbation factors) at once and never raises mid-sweep: a run that blows up just
carries non-finite numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pdeeos import lyapunov as _lyapunov
from pdeeos import metrics
from pdeeos.pde import symbolic
from pdeeos.metrics import rel_l1

__all__ = [
    "REGIMES",
    "RUN_CLASSES",
    "Trajectory",
    "checkerboard",
    "checkerboard_counts",
    "classify",
    "hessian",
    "loss",
    "loss_and_grad",
    "lyapunov",
    "official_kernel",
    "loss_period",
    "never_rises",
    "nudge_distance",
    "rel_l1_over_iterations",
    "scalar_orbit",
    "negative_curvature_share",
    "scalar_curvature",
    "scalar_sharpness",
    "scalar_step_map",
    "sharpness",
    "sharpness_along",
    "simulate",
    "swish",
    "swish_derivative",
    "swish_second_derivative",
]

REGIMES: tuple[str, ...] = ("activated", "transitioning", "not activated")
"""Table 3's regimes, in the order of ``Trajectory.regimes``' last axis."""

METHODS: tuple[str, ...] = ("fft", "direct", "periodic")
"""How the correlations with the image are computed: batched FFTs, ``conv2d``, or, for an image that repeats
with period 2 along both axes (the :func:`checkerboard`), from its 2 x 2 pattern: every output position then
takes one of four values, each a sum of :math:`w^2` products, and a map over the output is kept as those four
values with their counts of positions, so a step costs :math:`O(w^2)` operations instead of FFTs of the whole
image. The three round differently, so their runs agree to rounding only (and part ways where the map
amplifies rounding)."""


# ----------------------------------------------------------------------------- data of the paper


def checkerboard(n: int = 256, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The paper's ``n x n`` input: -1 where ``m + n`` is even, +1 otherwise."""
    if n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    idx = torch.arange(n)
    return torch.where((idx[:, None] + idx[None, :]) % 2 == 0, -1.0, 1.0).to(dtype)


def official_kernel(w: int = 32, seed: int = 7) -> torch.Tensor:
    """The official scripts' initial kernel: ``np.random.seed(seed)`` then ``randn(1, 1, w, w)``, float64."""
    if w < 1:
        raise ValueError(f"w must be a positive integer; got {w!r}")
    return torch.from_numpy(np.random.RandomState(seed).randn(1, 1, w, w)[0, 0])


# ----------------------------------------------------------------------------- the activation


def swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Swish :math:`r(x) = x\, s(\beta x)`, from :func:`pdeeos.pde.symbolic.swish_sigmoid_form`."""
    return symbolic.swish_sigmoid_funcs(0)(x, torch.sigmoid(beta * x), beta)


def swish_derivative(x: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`r'(x) = s\,[1 + \beta x (1 - s)]` with :math:`s = s(\beta x)`, from the SymPy derivation."""
    return symbolic.swish_sigmoid_funcs(1)(x, torch.sigmoid(beta * x), beta)


def swish_second_derivative(x: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`r''(x) = \beta\, s(1 - s)\,[2 + \beta x (1 - 2s)]` with :math:`s = s(\beta x)`, from the
    SymPy derivation."""
    return symbolic.swish_sigmoid_funcs(2)(x, torch.sigmoid(beta * x), beta)


# ----------------------------------------------------------------------------- correlations


class _Correlator:
    r"""Valid cross-correlations with one fixed image, batched over kernels.

    ``forward``: :math:`C[m] = \sum_i K[i]\, I[m + i]` (``(B, w, w) -> (B, M, M)``);
    ``adjoint``: :math:`G[i] = \sum_m E[m]\, I[m + i]` (``(B, M, M) -> (B, w, w)``), the transpose of
    ``forward``. The FFT method writes a correlation with an ``n x n`` array ``x`` as the circular
    convolution of the flipped ``x`` with the image, read from offset ``n - 1``; valid indices never wrap.
    """

    def __init__(self, image: torch.Tensor, w: int, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        self.image, self.w, self.method = image, w, method
        self.size = tuple(image.shape)
        self.out = (self.size[0] - w + 1, self.size[1] - w + 1)
        if method == "fft":
            self.image_hat = torch.fft.rfft2(image)
        self.positions = self.out[0] * self.out[1]
        if method == "periodic":
            self.tiles = self._pattern_tiles(image, w)
            self.counts = torch.tensor([[len(range(p, self.out[0], 2)) * len(range(q, self.out[1], 2))
                                         for q in (0, 1)] for p in (0, 1)], dtype=image.dtype)

    def _circular(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Pruned FFTs: transform only the rows of ``x`` that are non-zero, invert only the rows kept."""
        (n0, n1), r0, c0 = self.size, x.shape[-2] - 1, x.shape[-1] - 1
        x_hat = torch.fft.fft(torch.fft.rfft(x.flip(-2, -1), n=n1, dim=-1), n=n0, dim=-2)
        partial = torch.fft.ifft(x_hat * self.image_hat, dim=-2)[..., r0:r0 + rows, :]
        return torch.fft.irfft(partial, n=n1, dim=-1)[..., c0:c0 + cols]

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.image[None, None], x[:, None])[0]

    @staticmethod
    def _pattern_tiles(image: torch.Tensor, w: int) -> torch.Tensor:
        r""":math:`T_{pq}[a, b] = I[(p + a) \bmod 2, (q + b) \bmod 2]` (``(2, 2, w, w)``) for an image with period 2
        along both axes; ``ValueError`` for any other image."""
        pattern = image[:2, :2]
        rows, cols = image.shape
        if rows < 2 or cols < 2 or not torch.equal(image, pattern.repeat((rows + 1) // 2, (cols + 1) // 2)[:rows, :cols]):
            raise ValueError("method 'periodic' needs an image that repeats with period 2 along both axes "
                             "(such as the checkerboard)")
        a = torch.arange(w)
        return torch.stack([torch.stack([pattern[(p + a)[:, None] % 2, (q + a)[None, :] % 2] for q in (0, 1)])
                            for p in (0, 1)])

    def _periodic_forward(self, kernels: torch.Tensor) -> torch.Tensor:
        r"""The output as its four values (``(B, 2, 2)``): :math:`C[m] = V[m_1 \bmod 2, m_2 \bmod 2]` with
        :math:`V[p, q] = \sum_{a,b} K[a, b]\,T_{pq}[a, b]`."""
        return (kernels[:, None, None] * self.tiles).sum(dim=(-2, -1))

    def _periodic_adjoint(self, maps: torch.Tensor) -> torch.Tensor:
        r""":math:`G[a, b] = \sum_{p,q} n_{pq} E_{pq}\,T_{pq}[a, b]` for a map given by its four values
        :math:`E_{pq}` (``(B, 2, 2)``), :math:`n_{pq}` the output positions of each."""
        return ((maps * self.counts)[:, :, :, None, None] * self.tiles).sum(dim=(1, 2))

    def total(self, maps: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """The sum of output maps over the output positions (of their four values weighted by their counts,
        for the periodic method)."""
        if self.method == "periodic":
            return (maps * self.counts).sum(dim=(-2, -1), keepdim=keepdim)
        return maps.sum(dim=(-2, -1), keepdim=keepdim)

    def mean(self, maps: torch.Tensor) -> torch.Tensor:
        """The mean of output maps over the output positions."""
        if self.method == "periodic":
            return self.total(maps) / self.positions
        return maps.mean(dim=(-2, -1))

    def forward(self, kernels: torch.Tensor) -> torch.Tensor:
        if self.method == "fft":
            return self._circular(kernels, *self.out)
        if self.method == "periodic":
            return self._periodic_forward(kernels)
        return self._direct(kernels)

    def adjoint(self, maps: torch.Tensor) -> torch.Tensor:
        if self.method == "fft":
            return self._circular(maps, self.w, self.w)
        if self.method == "periodic":
            return self._periodic_adjoint(maps)
        return self._direct(maps)


def _check_image_kernel(image: torch.Tensor, kernel: torch.Tensor) -> None:
    for name, t in (("image", image), ("kernel", kernel)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            raise ValueError(f"{name} must be a 2-D torch tensor; got {getattr(t, 'shape', type(t))}")
    if kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be square; got shape {tuple(kernel.shape)}")
    if kernel.shape[0] > min(image.shape):
        raise ValueError(f"kernel ({kernel.shape[0]}x{kernel.shape[0]}) is larger than image {tuple(image.shape)}")


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")


def _check_model(y: float, alpha: float, beta: float) -> None:
    if not 0.0 <= y <= 1.0:
        raise ValueError(f"y must be a label in [0, 1]; got {y!r}")
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0; got {alpha!r}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0; got {beta!r}")


def _loss_grad(kernels: torch.Tensor, corr: _Correlator, y: float, alpha: float,
               beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Batched loss, gradient (Thm 5.1) and pre-activation :math:`K \star I` of every kernel.

    The cross-entropy is written :math:`\mathrm{softplus}(z) - yz` with :math:`z` the pooled activation.
    """
    pre = corr.forward(kernels)
    loss, z = _pooled_loss(kernels, pre, corr, y, alpha, beta)
    error = (torch.sigmoid(z) - y) / corr.positions
    grad = corr.adjoint(error[:, None, None] * swish_derivative(pre, beta)) + alpha * kernels
    return loss, grad, pre


def _pooled_loss(kernels: torch.Tensor, pre: torch.Tensor, corr: _Correlator, y: float, alpha: float,
                 beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Loss :math:`\mathrm{softplus}(z) - yz + \tfrac{\alpha}{2}\|K\|^2` and pooled activation
    :math:`z = \tfrac{1}{M^2}\sum_x r(K\star I)(x)` from the pre-activations ``pre`` of ``kernels``."""
    z = corr.mean(swish(pre, beta))
    return F.softplus(z) - y * z + 0.5 * alpha * kernels.square().sum(dim=(-2, -1)), z


def loss(kernel: torch.Tensor, image: torch.Tensor, *, y: float = 1.0, alpha: float = 20.0,
         beta: float = 1.0, method: str = "fft") -> torch.Tensor:
    r"""The loss :math:`\ell(y, \hat y) + \tfrac{\alpha}{2}\|K\|^2` of one ``w x w`` kernel as a tensor
    autograd can differentiate (to any order: Hessian-vector products for :class:`pdeeos.optim.LocalCFL`)."""
    _check_image_kernel(image, kernel)
    _check_model(y, alpha, beta)
    corr = _Correlator(image.to(kernel.dtype), kernel.shape[0], method)
    return _pooled_loss(kernel[None], corr.forward(kernel[None]), corr, y, alpha, beta)[0][0]


def loss_and_grad(kernel: torch.Tensor, image: torch.Tensor, *, y: float = 1.0, alpha: float = 20.0,
                  beta: float = 1.0, method: str = "fft") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Loss :math:`\ell(y, \hat y) + \tfrac{\alpha}{2}\|K\|^2` and its gradient
    :math:`(\hat y - y)\tfrac{1}{M^2} r'(K\star I)\star I + \alpha K` for one ``w x w`` kernel.

    Computed in the common dtype of ``kernel`` and ``image``.
    """
    _check_image_kernel(image, kernel)
    _check_model(y, alpha, beta)
    dtype = torch.promote_types(kernel.dtype, image.dtype)
    corr = _Correlator(image.to(dtype), kernel.shape[0], method)
    loss, grad, _ = _loss_grad(kernel.to(dtype)[None], corr, y, alpha, beta)
    return loss[0], grad[0]


# ----------------------------------------------------------------------------- Hessian and sharpness


def _patch_gram(corr: _Correlator, weights: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    r"""Weighted patch Gram matrix :math:`\sum_x d(x)\, P_x P_x^\top` (``w² x w²``), ``chunk`` rows at a time.

    Row ``a`` is the correlation :math:`(d\, I[\cdot + a]) \star I`, done with FFTs.
    """
    w, image = corr.w, corr.image
    patches = image.unfold(0, corr.out[0], 1).unfold(1, corr.out[1], 1).reshape(w * w, *corr.out)
    rows = [corr.adjoint(weights * patches[i:i + chunk]).reshape(-1, w * w) for i in range(0, w * w, chunk)]
    return torch.cat(rows)


def hessian(kernel: torch.Tensor, image: torch.Tensor, *, y: float = 1.0, alpha: float = 20.0,
            beta: float = 1.0) -> torch.Tensor:
    r"""The exact ``w² x w²`` Hessian of the loss (row-major flattening of the kernel).

    With :math:`z = \tfrac{1}{M^2}\sum_x r(C(x))`, :math:`C = K \star I`, :math:`P_x` the patch of
    :math:`I` at :math:`x` and :math:`g = \nabla_K z = \tfrac{1}{M^2}\sum_x r'(C(x)) P_x`,

    .. math:: \nabla^2 L = s'(z)\, g g^\top + \frac{s(z) - y}{M^2} \sum_x r''(C(x))\, P_x P_x^\top
              + \alpha \mathrm{Id}.
    """
    _check_image_kernel(image, kernel)
    _check_model(y, alpha, beta)
    dtype = torch.promote_types(kernel.dtype, image.dtype)
    kernel, w = kernel.to(dtype), kernel.shape[0]
    corr = _Correlator(image.to(dtype), w, "fft")
    pre = corr.forward(kernel[None])[0]
    positions = pre.numel()
    z = swish(pre, beta).mean()
    g = corr.adjoint(swish_derivative(pre, beta)[None])[0].reshape(-1) / positions
    s = torch.sigmoid(z)
    return (s * (1 - s) * torch.outer(g, g)
            + (s - y) / positions * _patch_gram(corr, swish_second_derivative(pre, beta))
            + alpha * torch.eye(w * w, dtype=dtype))


def sharpness(kernel: torch.Tensor, image: torch.Tensor, *, y: float = 1.0, alpha: float = 20.0,
              beta: float = 1.0) -> float:
    r"""Largest eigenvalue :math:`\lambda_{\max}(\nabla^2 L)` of the exact Hessian (``eigvalsh``)."""
    return float(torch.linalg.eigvalsh(hessian(kernel, image, y=y, alpha=alpha, beta=beta))[-1])


def sharpness_along(kernels: np.ndarray | torch.Tensor, image: torch.Tensor, *, y: float = 1.0,
                    alpha: float = 20.0, beta: float = 1.0, rtol: float = 1e-10, chunk: int = 64) -> np.ndarray:
    r"""Exact :math:`\lambda_{\max}(\nabla^2 L)` for every kernel of a stack ``(..., w, w)``, via the patch basis.

    Write the patch matrix as :math:`P = U \Sigma V^\top` with rank ``r`` (singular values below
    ``rtol`` times the largest dropped). The Hessian is :math:`\alpha\,\mathrm{Id}` on the complement of
    :math:`V` and :math:`\alpha + S` on it, with the ``r x r`` matrix

    .. math:: S = s'(z)\, (V^\top g)(V^\top g)^\top
              + \frac{s(z) - y}{M^2}\, \Sigma\, U^\top \mathrm{diag}(r''(C))\, U\, \Sigma,

    so the sharpness is :math:`\alpha + \lambda_{\max}(S)` (at least :math:`\alpha` when ``r < w²``).
    For the checkerboard ``r = 1`` and a trajectory costs two FFTs per kernel. Non-finite kernels get ``nan``.
    """
    stack = torch.as_tensor(kernels, dtype=torch.float64)
    _check_image_kernel(image, stack.reshape(-1, *stack.shape[-2:])[0])
    _check_model(y, alpha, beta)
    w = stack.shape[-1]
    corr = _Correlator(image.to(torch.float64), w, "fft")
    gram_values, gram_vectors = torch.linalg.eigh(_patch_gram(corr, torch.ones(corr.out, dtype=torch.float64)))
    keep = gram_values > rtol * gram_values[-1]
    basis, sigma = gram_vectors[:, keep], gram_values[keep].sqrt()
    left = corr.forward(basis.T.reshape(-1, w, w)) / sigma[:, None, None]          # U, (r, M, M)
    flat = stack.reshape(-1, w, w)
    top = torch.full((flat.shape[0],), float("nan"), dtype=torch.float64)
    finite = torch.isfinite(flat).all(dim=(-2, -1)).nonzero().flatten()
    for idx in finite.split(chunk):
        pre = corr.forward(flat[idx])
        positions = pre.shape[-2] * pre.shape[-1]
        s = torch.sigmoid(swish(pre, beta).mean(dim=(-2, -1)))[:, None, None]
        g = corr.adjoint(swish_derivative(pre, beta)).reshape(-1, w * w) / positions @ basis    # V^T g
        inner = torch.einsum("tmn,imn,jmn->tij", swish_second_derivative(pre, beta), left, left)
        small = (s * (1 - s) * g[:, :, None] * g[:, None, :]
                 + (s - y) / positions * sigma[:, None] * inner * sigma[None, :])
        top[idx] = alpha + torch.linalg.eigvalsh(small)[:, -1]
    if basis.shape[1] < w * w:
        top = torch.maximum(top, torch.tensor(float(alpha), dtype=torch.float64))
    return top.numpy().reshape(stack.shape[:-2])


# ----------------------------------------------------------------------------- the scheme


@dataclass
class Trajectory:
    r"""Result of :func:`simulate`; ``...`` is ``(len(dts),)`` for one ``k`` and ``(len(k), len(dts))`` for several.

    ``loss[..., n]`` is :math:`L(K^n)` (before step ``n + 1``, as the official script records it);
    ``kernels`` the final kernels :math:`K^{steps}`; ``regimes[..., n, j]`` the fraction of output
    positions of :math:`K^n \star I` in regime :data:`REGIMES` ``[j]``; ``history[..., j, :, :]`` the
    kernel at iteration ``history_steps[j]`` (empty unless ``record_every`` was given); ``log_stretch[..., n]``
    the tangent map's :math:`\log\|(\mathrm{Id} - \Delta t\nabla^2 L(K^n))v_n\|` for unit :math:`v_n`
    (empty unless ``tangent_seed`` was given; :func:`pdeeos.lyapunov.exponent` averages it).
    """

    dts: np.ndarray
    k: np.ndarray
    loss: np.ndarray
    kernels: np.ndarray
    regimes: np.ndarray
    history: np.ndarray
    history_steps: np.ndarray
    log_stretch: np.ndarray


def _as_batch(values: float | Sequence[float], name: str, *, minimum: float, strict: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{name} must be a number or a non-empty 1-D sequence; got shape {arr.shape}")
    bad = ~np.isfinite(arr) | ((arr <= minimum) if strict else (arr < minimum))
    if bad.any():
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {minimum}; got {values!r}")
    return arr


def _regime_fractions(pre: torch.Tensor, corr: _Correlator, beta: float, threshold: float) -> torch.Tensor:
    """Fractions of positions with :math:`\\beta C > t`, :math:`|\\beta C| \\le t`, :math:`\\beta C < -t`."""
    x = beta * pre
    on = corr.mean((x > threshold).double())
    off = corr.mean((x < -threshold).double())
    return torch.stack([on, 1 - on - off, off], dim=-1)


def simulate(image: torch.Tensor, kernel0: torch.Tensor, dts: float | Sequence[float], *,
             alpha: float = 20.0, beta: float = 1.0, steps: int = 1000, k: float | Sequence[float] = 1,
             y: float = 1.0, dtype: torch.dtype = torch.float64, method: str = "fft",
             record_every: int | None = None, regime_threshold: float = 3.0,
             tangent_seed: int | None = None) -> Trajectory:
    r"""Run :math:`K^{n+1} = K^n - (k\Delta t)(\nabla_K L(K^n)/k)` from ``kernel0`` for every ``Δt`` in ``dts``
    (and every ``k``, when ``k`` is a sequence) in one batch, ``steps`` iterations, in ``dtype``.

    ``regime_threshold`` ``t`` sorts output positions into Table 3's regimes by :math:`\beta(K\star I)`:
    activated above ``t``, not activated below ``-t``, transitioning in between (for ``t = 3``,
    :math:`|r' - \mathbb{1}_{x>0}| < 0.09` outside the band).

    With ``tangent_seed``, every run also carries a tangent vector (the same unit Gaussian vector at the
    start, drawn with that seed) through the linearised step :math:`v \mapsto v - \Delta t\,\nabla^2 L(K^n)v`
    and records its log stretch (``_hessian_vector``); the kernels are bit-identical with and without.
    """
    _check_image_kernel(image, kernel0)
    _check_model(y, alpha, beta)
    dt_arr = _as_batch(dts, "dts", minimum=0.0, strict=True)
    k_arr = _as_batch(k, "k", minimum=1.0, strict=False)
    _check_steps(steps)
    if record_every is not None and (isinstance(record_every, bool) or record_every < 1):
        raise ValueError(f"record_every must be a positive integer or None; got {record_every!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    ks, steps_dt = np.meshgrid(np.atleast_1d(k_arr), np.atleast_1d(dt_arr), indexing="ij")
    scale = torch.tensor((ks * steps_dt).ravel(), dtype=dtype)[:, None, None]
    divisor = torch.tensor(ks.ravel(), dtype=dtype)[:, None, None]
    if tangent_seed is not None and (isinstance(tangent_seed, bool) or not isinstance(tangent_seed, (int, np.integer))):
        raise ValueError(f"tangent_seed must be an integer or None; got {tangent_seed!r}")
    corr = _Correlator(image.to(dtype), kernel0.shape[0], method)
    tangent0 = None if tangent_seed is None else _unit_gaussian(kernel0.shape, tangent_seed, dtype)
    chunk = scale.shape[0] if method == "direct" else _CHUNK
    runs = [_evolve(corr, kernel0.to(dtype), scale[i:i + chunk], divisor[i:i + chunk], steps=steps,
                    y=y, alpha=alpha, beta=beta, record_every=record_every, threshold=regime_threshold,
                    tangent0=tangent0)
            for i in range(0, scale.shape[0], chunk)]
    losses, kernels, regimes, history, stretch = (torch.cat(parts) for parts in zip(*runs))
    shape = ks.shape if np.ndim(k_arr) else (dt_arr.size,)
    w = kernel0.shape[0]
    return Trajectory(
        dts=np.atleast_1d(dt_arr), k=k_arr,
        loss=losses.double().numpy().reshape(*shape, steps),
        kernels=kernels.double().numpy().reshape(*shape, w, w),
        regimes=regimes.numpy().reshape(*shape, steps, len(REGIMES)),
        history=history.double().numpy().reshape(*shape, -1, w, w),
        history_steps=np.arange(0, steps + 1, record_every or steps + 1)[:history.shape[1]],
        log_stretch=stretch.double().numpy().reshape(*shape, -1),
    )


_CHUNK = 1
"""Runs the FFT and periodic methods advance together. One at a time keeps the FFT work in cache (about 3x faster than
one batch of 16 here) and makes each run's bits independent of its batch: batched element-wise kernels
round the elements at vector and thread boundaries differently, so a run's last bit would depend on its
neighbours. The direct method advances the whole batch at once: ``conv2d`` with one output channel is
several times slower per run than with many."""


def _unit_gaussian(shape: torch.Size, seed: int, dtype: torch.dtype) -> torch.Tensor:
    v = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (v / v.norm()).to(dtype)


def _hessian_vector(kernels: torch.Tensor, pre: torch.Tensor, v: torch.Tensor, corr: _Correlator, y: float,
                    alpha: float, beta: float) -> torch.Tensor:
    r"""Hessian-vector products :math:`\nabla^2 L(K)\,v` of a batch (the terms of :func:`hessian`), with
    :math:`g\cdot v = \tfrac{1}{M^2}\sum_x r'(C)(v\star I)` so that one forward and one adjoint
    correlation do:

    .. math:: \nabla^2 L\,v = \Bigl[\tfrac{s'(z)\,(g\cdot v)}{M^2}\,r'(C)
              + \tfrac{s(z) - y}{M^2}\,r''(C)\,(v\star I)\Bigr]\star I + \alpha v .
    """
    positions = corr.positions
    s = torch.sigmoid(corr.mean(swish(pre, beta)))[:, None, None]
    first, moved = swish_derivative(pre, beta), corr.forward(v)
    g_dot_v = corr.total(first * moved, keepdim=True) / positions
    weights = (s * (1 - s) * g_dot_v * first + (s - y) * swish_second_derivative(pre, beta) * moved) / positions
    return corr.adjoint(weights) + alpha * v


def _evolve(corr: _Correlator, kernel0: torch.Tensor, scale: torch.Tensor, divisor: torch.Tensor, *,
            steps: int, y: float, alpha: float, beta: float, record_every: int | None,
            threshold: float, tangent0: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Advance one chunk of runs; return losses ``(B, steps)``, final kernels, regimes, history
    ``(B, S, w, w)`` and log stretches ``(B, steps)`` (``(B, 0)`` without a tangent)."""
    kernels = kernel0.expand(scale.shape[0], -1, -1).clone()
    dts = scale / divisor
    tangent = None if tangent0 is None else tangent0.expand_as(kernels).clone()
    losses, regimes, history, stretch = [], [], [], []
    for n in range(steps):
        if record_every is not None and n % record_every == 0:
            history.append(kernels)
        loss, grad, pre = _loss_grad(kernels, corr, y, alpha, beta)
        losses.append(loss)
        regimes.append(_regime_fractions(pre, corr, beta, threshold))
        if tangent is not None:
            tangent = tangent - dts * _hessian_vector(kernels, pre, tangent, corr, y, alpha, beta)
            norm = tangent.norm(dim=(-2, -1), keepdim=True)
            stretch.append(norm.log()[:, 0, 0])
            tangent = tangent / norm
        kernels = kernels - scale * (grad / divisor)
    if record_every is not None and steps % record_every == 0:
        history.append(kernels)
    recorded = torch.stack(history, dim=1) if history else kernels.new_empty(kernels.shape[0], 0, *kernels.shape[1:])
    stretches = torch.stack(stretch, dim=-1) if stretch else kernels.new_empty(kernels.shape[0], 0)
    return torch.stack(losses, dim=-1), kernels, torch.stack(regimes, dim=1), recorded, stretches


# ----------------------------------------------------------------------------- Lyapunov exponents


def lyapunov(image: torch.Tensor, kernel0: torch.Tensor, dts: float | Sequence[float], *, alpha: float = 20.0,
             beta: float = 1.0, steps: int = 1000, y: float = 1.0, discard: int = 0, seed: int = 0) -> np.ndarray:
    r"""Finite-time largest Lyapunov exponent (per iteration, natural log) of each step size's run, from the
    tangent map :math:`v \mapsto (\mathrm{Id} - \Delta t\,\nabla^2 L(K^n))\,v` along the run
    (:func:`simulate` with ``tangent_seed=seed``, :func:`pdeeos.lyapunov.exponent` over ``n >= discard``).
    ``nan`` for a run that blows up to non-finite numbers."""
    run = simulate(image, kernel0, dts, alpha=alpha, beta=beta, steps=steps, y=y, tangent_seed=seed)
    return _lyapunov.exponent(run.log_stretch, discard=discard)


def checkerboard_counts(image_size: int = 256, w: int = 32) -> tuple[int, int]:
    r""":math:`(n_+, n_-)`: the output positions of the ``image_size`` squared :func:`checkerboard` where
    :math:`K\star I = +u` (the top-left patch :math:`P_0`, :math:`m_1 + m_2` even) and :math:`-u`."""
    if not 1 <= w <= image_size:
        raise ValueError(f"need 1 <= w <= image_size; got image_size={image_size!r}, w={w!r}")
    m = image_size - w + 1
    return (m * m + 1) // 2, m * m // 2


def scalar_orbit(u0: float, dts: float | Sequence[float], *, alpha: float = 20.0, beta: float = 1.0,
                 y: float = 1.0, image_size: int = 256, w: int = 32, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    r"""Iterate the checkerboard's scalar map :math:`u^{n+1} = F(u^n)` (:func:`pdeeos.pde.symbolic.checkerboard_map`,
    :math:`p = w^2`) from ``u0`` for every step size at once.

    Returns the orbit ``(len(dts), steps + 1)`` and :math:`\log|F'(u^n)|` ``(len(dts), steps)``, whose mean
    is the scalar map's Lyapunov exponent. The full kernel's tangent map is :math:`F'(u^n)` along
    :math:`P_0` and :math:`1 - \alpha\Delta t` on the other :math:`w^2 - 1` directions.
    """
    _check_model(y, alpha, beta)
    dt_arr = _as_batch(dts, "dts", minimum=0.0, strict=True)
    _check_steps(steps)
    if not np.isfinite(u0):
        raise ValueError(f"u0 must be finite; got {u0!r}")
    counts = checkerboard_counts(image_size, w)
    u = np.full(np.atleast_1d(dt_arr).shape, float(u0))
    orbit, slopes = [u], []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(steps):
            u, slope = symbolic.checkerboard_map(u, np.atleast_1d(dt_arr), alpha_value=alpha, beta_value=beta,
                                                 y_value=y, counts=counts, p_value=float(w * w))
            orbit.append(u)
            slopes.append(np.log(np.abs(slope)))
    return np.stack(orbit, axis=-1), np.stack(slopes, axis=-1)


def scalar_step_map(*, alpha: float = 20.0, beta: float = 1.0, y: float = 1.0, image_size: int = 256,
                    w: int = 32) -> Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]:
    r"""The checkerboard's scalar map as a :data:`pdeeos.pde.bifurcation.StepMap` along the step size:
    ``step(u, dt) -> (F(u), F'(u))`` with ``u`` of shape ``(1,)`` and the derivative ``(1, 1)``
    (:func:`pdeeos.pde.symbolic.checkerboard_map`). Its fixed point doubles where :math:`\Delta t = 2/\lambda^\ast`."""
    _check_model(y, alpha, beta)
    counts = checkerboard_counts(image_size, w)

    def step(u: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        value, slope = symbolic.checkerboard_map(u, np.asarray(dt, dtype=np.float64), alpha_value=alpha,
                                                 beta_value=beta, y_value=y, counts=counts, p_value=float(w * w))
        return np.atleast_1d(value), np.reshape(slope, (1, 1))

    return step


def scalar_curvature(orbit: np.ndarray, dts: float | Sequence[float], *, alpha: float = 20.0, beta: float = 1.0,
                     y: float = 1.0, image_size: int = 256, w: int = 32) -> np.ndarray:
    r"""The Hessian's signed eigenvalue :math:`\lambda(u^n) = (1 - F'(u^n))/\Delta t` along :math:`P_0`
    (:func:`pdeeos.pde.symbolic.checkerboard_map_exprs`) at every point of scalar orbits ``(len(dts), T)`` of
    :func:`scalar_orbit`: negative where the loss curves down along :math:`P_0`. An iteration stretches the
    tangent vector (:math:`|F'| > 1`) where :math:`\lambda < 0` or where :math:`\Delta t\,\lambda > 2`."""
    dt_arr = _as_batch(dts, "dts", minimum=0.0, strict=True).reshape(-1, 1)
    orbit = np.asarray(orbit, dtype=np.float64)
    if orbit.ndim != 2 or orbit.shape[0] != dt_arr.shape[0]:
        raise ValueError(f"orbit must be (len(dts), T) = ({dt_arr.shape[0]}, T); got {orbit.shape}")
    _, slope = symbolic.checkerboard_map(orbit, dt_arr, alpha_value=alpha, beta_value=beta, y_value=y,
                                         counts=checkerboard_counts(image_size, w), p_value=float(w * w))
    return (1 - slope) / dt_arr


def negative_curvature_share(orbit: np.ndarray, dts: float | Sequence[float], *, discard: int = 0,
                             alpha: float = 20.0, beta: float = 1.0, y: float = 1.0, image_size: int = 256,
                             w: int = 32) -> np.ndarray:
    r"""Where the stretching along scalar orbits ``(len(dts), T)`` of :func:`scalar_orbit` comes from: of the
    summed :math:`\log|F'(u^n)| = \log|1 - \Delta t\,\lambda(u^n)|` over the iterations :math:`n \ge`
    ``discard`` that stretch (:math:`|F'| > 1`), the share from those with negative curvature
    (:math:`\lambda < 0`, :func:`scalar_curvature`); the rest comes from those beyond the edge
    (:math:`\Delta t\,\lambda > 2`). ``nan`` where nothing stretches."""
    orbit = np.asarray(orbit, dtype=np.float64)[:, discard:]
    lam = scalar_curvature(orbit, dts, alpha=alpha, beta=beta, y=y, image_size=image_size, w=w)
    dt_arr = _as_batch(dts, "dts", minimum=0.0, strict=True).reshape(-1, 1)
    with np.errstate(divide="ignore"):
        stretch = np.log(np.abs(1 - dt_arr * lam))
    negative = np.where(lam < 0, stretch, 0.0).sum(axis=-1)
    beyond = np.where(dt_arr * lam > 2, stretch, 0.0).sum(axis=-1)
    total = negative + beyond
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, negative / total, np.nan)


def scalar_sharpness(orbit: np.ndarray, dts: float | Sequence[float], *, alpha: float = 20.0, beta: float = 1.0,
                     y: float = 1.0, image_size: int = 256, w: int = 32) -> np.ndarray:
    r"""Exact :math:`\lambda_{\max}(\nabla^2 L)` along scalar orbits ``(len(dts), T)`` of :func:`scalar_orbit`:
    :math:`\max(\lambda(u), \alpha)` with :math:`\lambda(u)` the curvature along :math:`P_0`
    (:func:`scalar_curvature`), at every kernel with :math:`\langle K, P_0\rangle = u`."""
    return np.maximum(scalar_curvature(orbit, dts, alpha=alpha, beta=beta, y=y, image_size=image_size, w=w), alpha)


# ----------------------------------------------------------------------------- reading runs

RUN_CLASSES: tuple[str, ...] = ("stable", "periodic", "chaotic", "blow-up")
"""The behaviours of a run, in the order of :func:`classify`'s codes. Periodic and chaotic are the two
kinds of the paper's *restrained* runs (bounded, never settling): only chaotic ones amplify rounding errors."""

RESTRAINED: tuple[str, ...] = ("periodic", "chaotic")
"""The classes the paper (§5.4) calls restrained."""


def never_rises(loss: np.ndarray, window: int, rtol: float) -> np.ndarray:
    """Over the last ``window`` iterations the loss never rises by more than ``rtol`` relative."""
    tail = loss[..., -window:]
    with np.errstate(invalid="ignore"):
        return ~np.any(np.diff(tail, axis=-1) > rtol * np.abs(tail[..., :-1]), axis=-1)


def _check_window(loss: np.ndarray, window: int) -> np.ndarray:
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim < 1 or loss.shape[-1] <= window:
        raise ValueError(f"loss must have more than window={window} iterations on its last axis; got {loss.shape}")
    return loss


def classify(loss: np.ndarray, exponent: np.ndarray, *, window: int = 200, rtol: float = 1e-9) -> np.ndarray:
    r"""Code (index into :data:`RUN_CLASSES`) of each run, from its loss history ``(..., steps)`` and its
    finite-time Lyapunov exponent ``(...)`` (:func:`lyapunov`; the book averages over the run's second
    half, once the transient is over):

    * blow-up: :func:`pdeeos.metrics.blows_up` (the last loss not finite or above 10 times the first);
    * stable: over the last ``window`` iterations the loss never rises by more than ``rtol`` relative
      (settled, or still sliding into a minimum: gradient descent below :math:`2/\lambda_{\max}` decreases
      the loss near a minimum at every step);
    * chaotic: otherwise, if the exponent is positive (nearby runs separate);
    * periodic: otherwise (the orbit attracts its neighbours: a cycle, see :func:`loss_period`, or a slow
      approach to one).
    """
    loss = _check_window(loss, window)
    exponent = np.asarray(exponent, dtype=np.float64)
    if exponent.shape != loss.shape[:-1]:
        raise ValueError(f"exponent must have the shape {loss.shape[:-1]} of the runs; got {exponent.shape}")
    blow_up, stable = metrics.blows_up(loss), never_rises(loss, window, rtol)
    if (~blow_up & ~stable & ~np.isfinite(exponent)).any():
        raise ValueError("a bounded run whose loss still rises needs a finite exponent")
    return np.where(blow_up, 3, np.where(stable, 0, np.where(exponent > 0, 2, 1)))


def loss_period(loss: np.ndarray, *, window: int = 200, max_period: int = 64, rtol: float = 1e-9) -> np.ndarray:
    r"""Smallest period :math:`q \le` ``max_period`` of the *loss*, :math:`|L_{n+q} - L_n| \le rtol\,|L_n|` over
    the last ``window`` iterations, per run ``(..., steps)``; 0 where there is none (a chaotic orbit, a slow
    transient, a blow-up: :func:`classify` tells them apart). A settled run has period 1."""
    loss = _check_window(loss, window + max_period)
    tail = loss[..., -(window + max_period):]
    period = np.zeros(loss.shape[:-1], dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for q in range(max_period, 0, -1):
            gap = np.abs(tail[..., q:q + window] - tail[..., :window])
            period = np.where((gap <= rtol * np.abs(tail[..., :window])).all(axis=-1), q, period)
    return period


def rel_l1_over_iterations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`pdeeos.metrics.rel_l1` between two kernel histories ``(..., T, w, w)``, per leading index."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"a and b must be kernel stacks (..., w, w) of one shape; got {a.shape} and {b.shape}")
    flat = [rel_l1(x, y) for x, y in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))]
    return np.array(flat).reshape(a.shape[:-2])


def nudge_distance(image: torch.Tensor, kernel0: torch.Tensor, dts: float | Sequence[float], *, delta: float = 1e-8,
                   seed: int = 1, alpha: float = 20.0, beta: float = 1.0, steps: int = 300, y: float = 1.0) -> np.ndarray:
    r"""RelL1 per iteration ``(len(dts), steps + 1)`` between the runs from :math:`K^0` and from the nudged
    :math:`K^0 + \delta\,\|K^0\|\,v` (``v`` a seeded unit Gaussian direction): twins a controlled distance
    apart, far above rounding, so that a contracting map shows as a measurable decay
    (:func:`pdeeos.lyapunov.twin_rate`), where the :math:`k = 3` twins only show a rounding floor."""
    if not (np.isfinite(delta) and 0 < delta < 1):
        raise ValueError(f"delta must lie in (0, 1); got {delta!r}")
    nudged = kernel0 + delta * kernel0.norm() * _unit_gaussian(kernel0.shape, seed, kernel0.dtype)
    model = {"alpha": alpha, "beta": beta, "steps": steps, "y": y, "record_every": 1}
    base, moved = (simulate(image, k, dts, **model) for k in (kernel0, nudged))
    return rel_l1_over_iterations(base.history, moved.history)
