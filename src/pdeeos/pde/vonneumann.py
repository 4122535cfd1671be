r"""Von Neumann analysis of the linearised one-layer CNN gradient descent (paper §5.2–5.3, Thm 5.3–5.4, D.3).

Linearised around :math:`K = 0` (Thm 5.2), gradient descent on the one-layer CNN is

.. math:: K^{n+1} = K^n - \Delta t\,\bigl[\tfrac a2(\bar I_w + \beta\,c\,G K^n) + \alpha K^n\bigr],

with :math:`G K = \sum_x \langle K, p_x\rangle p_x` summed over the image patches :math:`p_x` the kernel
sees, :math:`c = 1` for the paper's sum pooling and :math:`1/M^2` for average pooling. ``G`` is the Gram
matrix :math:`P^\top P` of the patch matrix; each eigenvalue :math:`\lambda` of :math:`cG` is a mode with
amplifier :math:`A = 1 - \Delta t(\alpha + \tfrac12 a\beta\lambda)` (:func:`pdeeos.pde.symbolic.amplifier`).
Without a window (periodic, kernel as large as the image) the modes are Fourier modes and
:math:`\lambda = |\hat I(\omega)|^2`. Nesterov's scheme (Thm D.1) is stable on a mode iff
:math:`0 < z < z_{\max}` with :math:`z = \alpha + \tfrac12 a\beta\lambda`
(:func:`pdeeos.pde.symbolic.nesterov_z_max`). All bounds come from the formulas of :mod:`pdeeos.pde.symbolic`;
:func:`growth_factor` and :func:`measure_bound` measure them instead by running the schemes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pdeeos.pde import symbolic

__all__ = [
    "gd_alpha_bounds",
    "measure_bound",
    "nesterov_alpha_bounds",
    "nesterov_step_size",
    "nesterov_z_max",
    "patch_gram",
    "power_spectrum",
    "growth_factor",
    "windowed_alpha_bounds",
    "windowed_eigenvalues",
]


# ----------------------------------------------------------------------------- input checks


def _check_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"image must be a 2-D array; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("image must be finite everywhere")
    return arr


def _check_dt(dt: float) -> float:
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and > 0; got {dt!r}")
    return float(dt)


def _check_kernel_size(kernel_size: int, shape: tuple[int, ...]) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer; got {kernel_size!r}")
    if kernel_size > min(shape):
        raise ValueError(f"kernel_size {kernel_size} is larger than the image {shape}")
    return int(kernel_size)


def _check_momentum(momentum: float) -> float:
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
    return float(momentum)


# ----------------------------------------------------------------------------- spectra


def power_spectrum(image: np.ndarray) -> np.ndarray:
    r""":math:`|\hat I(\omega)|^2` with the unnormalised DFT :math:`\hat I(\omega) = \sum_m I(m)e^{-\mathrm i\omega\cdot m}`."""
    return np.abs(np.fft.fft2(_check_image(image))) ** 2


def patch_gram(image: np.ndarray, kernel_size: int, *, periodic: bool = False, chunk: int = 256) -> np.ndarray:
    r"""The windowed operator :math:`G_{uv} = \sum_x I(x+u)\,I(x+v)` as a ``w² x w²`` matrix (row-major).

    ``x`` runs over the valid positions (``M x M``, ``M = N - w + 1``), or over all ``N x N`` positions with
    the image wrapped around when ``periodic``. Row ``u`` is the correlation of the shifted image
    :math:`I(\cdot + u)` restricted to those positions with ``I``, done with FFTs ``chunk`` rows at a time.
    """
    img = _check_image(image)
    w = _check_kernel_size(kernel_size, img.shape)
    n0, n1 = img.shape
    tiled = np.pad(img, ((0, w - 1), (0, w - 1)), mode="wrap") if periodic else img
    m0, m1 = (n0, n1) if periodic else (n0 - w + 1, n1 - w + 1)
    s0, s1 = m0 + w - 1, m1 + w - 1  # FFT size: no wrap-around for offsets < w
    t = torch.from_numpy(tiled)
    t_hat = torch.fft.rfft2(t, s=(s0, s1))
    offsets = [(i, j) for i in range(w) for j in range(w)]
    rows = []
    for start in range(0, w * w, chunk):
        windows = torch.stack([t[i:i + m0, j:j + m1] for i, j in offsets[start:start + chunk]])
        corr = torch.fft.irfft2(torch.conj(torch.fft.rfft2(windows, s=(s0, s1))) * t_hat, s=(s0, s1))
        rows.append(corr[:, :w, :w].reshape(-1, w * w))
    return torch.cat(rows).numpy()


def _pooling_scale(image: np.ndarray, kernel_size: int, periodic: bool, pooling: str) -> float:
    symbolic.check_pooling(pooling)
    if pooling == "sum":
        return 1.0
    return 1.0 / image.size if periodic else 1.0 / ((image.shape[0] - kernel_size + 1) * (image.shape[1] - kernel_size + 1))


def windowed_eigenvalues(image: np.ndarray, kernel_size: int, *, periodic: bool = False,
                         pooling: str = "sum") -> np.ndarray:
    r"""Eigenvalues (ascending) of :math:`cG`, the linear part of the windowed gradient (:func:`patch_gram`)."""
    img = _check_image(image)
    scale = _pooling_scale(img, kernel_size, periodic, pooling)
    return scale * np.linalg.eigvalsh(patch_gram(img, kernel_size, periodic=periodic))


# ----------------------------------------------------------------------------- gradient descent bounds


def _bounds(eigenvalues: np.ndarray, dt: float, a: float, beta: float) -> tuple[float, float]:
    extremes = np.array([np.min(eigenvalues), np.max(eigenvalues)])
    return symbolic.alpha_min(extremes, a, beta), symbolic.alpha_max(extremes, _check_dt(dt), a, beta)


def gd_alpha_bounds(image: np.ndarray, dt: float, a: float = -0.5, beta: float = 1.0) -> tuple[float, float]:
    r"""Thm 5.4, unwindowed: :math:`(\alpha_{\min}, \alpha_{\max})` over :math:`\lambda = |\hat I(\omega)|^2`.

    For :math:`a\beta < 0`: :math:`\alpha_{\min} = -\tfrac12 a\beta\max|\hat I|^2`,
    :math:`\alpha_{\max} = 2/\Delta t - \tfrac12 a\beta\min|\hat I|^2`.
    """
    return _bounds(power_spectrum(image), dt, a, beta)


def windowed_alpha_bounds(image: np.ndarray, kernel_size: int, dt: float, a: float = -0.5, beta: float = 1.0,
                          *, periodic: bool = False, pooling: str = "sum") -> tuple[float, float]:
    r"""Exact bounds of the windowed linear scheme (10): Thm 5.4 applied to the eigenvalues of :math:`cG`."""
    _check_dt(dt)
    return _bounds(windowed_eigenvalues(image, kernel_size, periodic=periodic, pooling=pooling), dt, a, beta)


# ----------------------------------------------------------------------------- Nesterov bounds


def nesterov_z_max(dt: float, momentum: float) -> float:
    r"""Exact bound on :math:`z = \alpha + \tfrac12 a\beta\lambda`: :math:`z < 4/((1+2\mu)\Delta t^2)` (Jury)."""
    return symbolic.nesterov_z_max(_check_dt(dt), _check_momentum(momentum))


def nesterov_step_size(dt: float, momentum: float) -> float:
    r"""Gradient step :math:`h = 2\Delta t^2/(2 + d\Delta t) = \Delta t^2(1+\mu)/2` with the damping ``d`` giving momentum :math:`\mu`."""
    return symbolic.nesterov_step_size(_check_dt(dt), _check_momentum(momentum))


def nesterov_alpha_bounds(eigenvalues: np.ndarray, dt: float, momentum: float, a: float = -0.5,
                          beta: float = 1.0) -> tuple[float, float]:
    r"""Bounds on :math:`\alpha` for Nesterov: :math:`0 < \alpha + \tfrac12 a\beta\lambda < z_{\max}` for every eigenvalue."""
    shift = -0.5 * a * beta * np.array([np.min(eigenvalues), np.max(eigenvalues)])
    return float(np.max(shift)), float(nesterov_z_max(dt, momentum) + np.min(shift))


# ----------------------------------------------------------------------------- measured bounds


def growth_factor(gram: np.ndarray, alphas: np.ndarray, *, dt: float, a: float = -0.5, beta: float = 1.0,
                  momentum: float | None = None, steps: int, seed: int = 0) -> np.ndarray:
    r"""Measured growth per step of the windowed linear scheme, one value per ``alpha``.

    Runs the homogeneous part of the scheme (what the difference of two runs, or of two iterates,
    obeys: the constant :math:`\tfrac a2\bar I_w` cancels) from one N(0, 1) kernel, with gradient
    :math:`\tfrac a2\beta\,\mathrm{gram}\,K + \alpha K`: gradient descent with step ``dt`` when
    ``momentum`` is None, else Nesterov (51)–(52) with step :func:`nesterov_step_size`. The state is
    rescaled every step (so nothing overflows) and the factor is the geometric mean of the norm growth
    over the second half of the run: above 1 means unstable, once the transients have died out.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2; got {steps!r}")
    g = torch.from_numpy(np.asarray(gram, dtype=np.float64))
    alphas_t = torch.as_tensor(np.asarray(alphas, dtype=np.float64))[None, :]
    k = torch.randn(g.shape[0], 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = k.expand(-1, alphas_t.shape[1]).clone()
    step = dt if momentum is None else nesterov_step_size(dt, momentum)
    prev, log_growth = k.clone(), torch.zeros(alphas_t.shape[1], dtype=torch.float64)
    for n in range(steps):
        v = k if momentum is None else k + momentum * (k - prev)
        new = v - step * ((a * beta / 2) * (g @ v) + alphas_t * v)
        norm = torch.linalg.vector_norm(torch.cat([new, k]), dim=0) / torch.linalg.vector_norm(torch.cat([k, prev]), dim=0)
        if n >= steps // 2:
            log_growth += torch.log(norm)
        prev, k = k / norm, new / norm
    return torch.exp(log_growth / (steps - steps // 2)).numpy()


def distance_to_fixed_point(gram: np.ndarray, window_sum: np.ndarray, alphas: np.ndarray, *, dt: float,
                            a: float = -0.5, beta: float = 1.0, momentum: float | None = None,
                            steps: int, seed: int = 0) -> np.ndarray:
    r"""Distance :math:`\|K^n - K^\ast\|` of the windowed linear scheme from its fixed point, per step and
    ``alpha`` (steps × alphas), from one N(0, 1) kernel (paper Fig. 4, and Fig. 11 for Nesterov).

    The scheme is gradient descent (``momentum`` None, step ``dt``) or Nesterov (51)–(52) (step
    :func:`nesterov_step_size`) on :math:`F(K) = \tfrac a2(\bar I_w + \beta\,\mathrm{gram}\,K) + \alpha K`,
    whose fixed point :math:`K^\ast` solves :math:`F(K^\ast) = 0`. Overflow gives ``inf``/``nan``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps!r}")
    alphas = np.asarray(alphas, dtype=np.float64)
    gram = np.asarray(gram, dtype=np.float64)
    constant = (a / 2) * np.asarray(window_sum, dtype=np.float64).ravel()[:, None]
    fixed = np.stack([np.linalg.solve((a * beta / 2) * gram + al * np.eye(len(gram)), -constant[:, 0])
                      for al in alphas], axis=1)
    k = np.random.default_rng(seed).standard_normal((len(gram), 1)).repeat(alphas.size, axis=1)
    step = dt if momentum is None else nesterov_step_size(dt, momentum)
    prev, out = k.copy(), np.empty((steps, alphas.size))
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(steps):
            out[n] = np.linalg.norm(k - fixed, axis=0)
            v = k if momentum is None else k + momentum * (k - prev)
            prev, k = k, v - step * (constant + (a * beta / 2) * (gram @ v) + alphas * v)
    return out


def measure_bound(unstable: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, *, points: int = 16,
                  rounds: int = 4) -> float:
    r"""Locate the stability threshold between ``lo`` and ``hi`` (one stable, one unstable end).

    Each round evaluates ``unstable`` on ``points`` geometrically spaced values of the bracket and keeps
    the sub-bracket where the verdict flips; returns its geometric middle.
    """
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi; got lo={lo!r}, hi={hi!r}")
    for _ in range(rounds):
        grid = np.geomspace(lo, hi, points)
        verdict = np.asarray(unstable(grid), dtype=bool)
        flips = np.flatnonzero(verdict[1:] != verdict[:-1])
        if flips.size == 0:
            raise ValueError(f"no change of stability in [{lo:.4g}, {hi:.4g}]")
        lo, hi = grid[flips[0]], grid[flips[0] + 1]
    return float(np.sqrt(lo * hi))
