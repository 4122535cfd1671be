r"""The heat equation :math:`u_t = \kappa u_{xx}` and its explicit (FTCS) scheme.

With zero Dirichlet ends and grid spacing :math:`\Delta x`, forward Euler in time and central
differences in space give (paper eq. 2)

.. math:: u^{n+1}_j = u^n_j + r\,(u^n_{j+1} - 2u^n_j + u^n_{j-1}),
          \qquad r = \kappa\,\Delta t / \Delta x^2 .

A Fourier mode :math:`e^{\mathrm{i} j\theta}` (:math:`\theta = \omega\Delta x`) is multiplied each
step by the amplifier :math:`A(\theta) = 1 - 4r\sin^2(\theta/2)`, so the scheme is stable for every
mode iff :math:`r \le 1/2`, the CFL condition :math:`\Delta t \le \Delta x^2/(2\kappa)`. On a grid of
``N + 1`` points with zero ends the modes are :math:`\sin(k\pi j/N)`, ``k = 1 .. N-1``, and the
exact limit is slightly above 1/2 (:func:`discrete_critical_r`).

All solvers are vectorised over a batch of step sizes: pass ``dt`` as a 1-D array and get one row
per step size. They run in the dtype of ``u0`` (float16, float32 or float64), so the round-off that
seeds the instability is that dtype's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

__all__ = [
    "amplifier",
    "blowup_step",
    "cfl_limit",
    "critical_r",
    "discrete_critical_r",
    "mode_amplitudes",
    "sine_mode",
    "snapshots",
    "solve",
    "triangle",
]


def cfl_limit(dx: float, kappa: float = 1.0) -> float:
    r"""Largest stable time step of the explicit scheme: :math:`\Delta t_{\max} = \Delta x^2/(2\kappa)`."""
    _check_positive(dx=dx, kappa=kappa)
    return dx * dx / (2.0 * kappa)


def amplifier(theta: np.ndarray | float, r: np.ndarray | float) -> np.ndarray:
    r"""Von Neumann amplifier :math:`A(\theta) = 1 - 4r\sin^2(\theta/2)` (broadcasts ``theta`` and ``r``).

    The paper prints :math:`1 - r[1-\cos\theta] = 1 - 2r\sin^2(\theta/2)`, which lacks a factor 2:
    with it, :math:`|A|\le 1` would give :math:`r \le 1`, not the CFL bound 1/2 the paper states.
    """
    return 1.0 - 4.0 * np.asarray(r) * np.sin(np.asarray(theta) / 2.0) ** 2


def discrete_critical_r(n_points: int) -> float:
    r"""Exact stability limit on a grid of ``n_points`` with zero ends.

    The highest mode ``k = N-1`` (``N = n_points - 1`` intervals) has angle
    :math:`\theta = (N-1)\pi/N`; :math:`|A(\theta)| \le 1` iff :math:`r \le 1/(2\sin^2(\theta/2))`,
    which tends to 1/2 as the grid is refined.
    """
    if n_points < 3:
        raise ValueError(f"n_points must be at least 3; got {n_points}")
    n = n_points - 1
    return 0.5 / np.sin((n - 1) * np.pi / (2 * n)) ** 2


# ----------------------------------------------------------------------------- initial data


def triangle(n_points: int = 31, height: float = 1.0, dtype: type = np.float64) -> np.ndarray:
    """The paper's Fig. 1 initial condition: a triangle vanishing at both ends, peak at the middle."""
    x = np.linspace(0.0, 1.0, n_points)
    return (height * (1.0 - np.abs(2.0 * x - 1.0))).astype(dtype)


def sine_mode(n_points: int, k: int = 1, dtype: type = np.float64) -> np.ndarray:
    r"""The ``k``-th discrete eigenmode :math:`\sin(k\pi j/N)`, ``j = 0 .. N``, rounded to ``dtype``."""
    n = n_points - 1
    u = np.sin(k * np.pi * np.arange(n_points) / n)
    u[0] = u[-1] = 0.0  # sin(k pi) is 0 exactly, not its rounded value
    return u.astype(dtype)


def mode_amplitudes(u: np.ndarray) -> np.ndarray:
    r"""Amplitudes :math:`c_k` with :math:`u_j = \sum_{k=1}^{N-1} c_k \sin(k\pi j/N)` (a DST-I), in float64.

    Works on the last axis, so a batch or a history of states is transformed at once.
    """
    u = np.asarray(u, dtype=np.float64)
    n = u.shape[-1] - 1
    return scipy.fft.dst(u[..., 1:-1], type=1, axis=-1) / n


# ----------------------------------------------------------------------------- solvers


def _check_positive(**values: float | np.ndarray) -> None:
    for name, value in values.items():
        arr = np.asarray(value, dtype=float)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be finite and > 0; got {value!r}")


def _prepare(u0: np.ndarray, dt: float | np.ndarray, dx: float, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """Validate the arguments; return the (batched) state and the mesh ratio r in u0's dtype."""
    u0 = np.asarray(u0)
    if u0.ndim != 1:
        raise ValueError(f"u0 must be 1-D (one value per grid point); got shape {u0.shape}")
    if u0.size < 3:
        raise ValueError(f"u0 needs at least 3 grid points (two ends and one interior); got {u0.size}")
    if not np.issubdtype(u0.dtype, np.floating):
        raise ValueError(f"u0 must have a floating dtype (float16/32/64); got {u0.dtype}")
    if not np.all(np.isfinite(u0)):
        raise ValueError("u0 must be finite everywhere")
    if u0[0] != 0 or u0[-1] != 0:
        raise ValueError(f"u0 must vanish at both ends (zero Dirichlet boundary); got {u0[0]!r} and {u0[-1]!r}")
    dt_arr = np.asarray(dt, dtype=np.float64)
    if dt_arr.ndim > 1:
        raise ValueError(f"dt must be a number or a 1-D array of step sizes; got shape {dt_arr.shape}")
    _check_positive(dt=dt_arr, dx=dx, kappa=kappa)
    r = (kappa * dt_arr / (dx * dx)).astype(u0.dtype)
    if dt_arr.ndim == 0:
        return u0.copy(), r
    return np.repeat(u0[None, :], dt_arr.size, axis=0), r[:, None]


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    return int(steps)


def _march(u: np.ndarray, r: np.ndarray, steps: int) -> np.ndarray:
    """Advance ``u`` in place by ``steps`` FTCS steps (ends stay 0). Overflow is the point, not an error."""
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            u[..., 1:-1] += r * (u[..., 2:] - 2 * u[..., 1:-1] + u[..., :-2])
    return u


def solve(u0: np.ndarray, *, dt: float | np.ndarray, dx: float, kappa: float = 1.0, steps: int) -> np.ndarray:
    r"""State after ``steps`` explicit steps of :math:`u_t = \kappa u_{xx}` with zero Dirichlet ends.

    ``dt`` may be a 1-D array: the result then has one row per step size. The result has the dtype
    of ``u0``; a run that blows up returns ``inf``/``nan`` rather than raising.
    """
    u, r = _prepare(u0, dt, dx, kappa)
    return _march(u, r, _check_steps(steps))


def snapshots(u0: np.ndarray, *, dt: float | np.ndarray, dx: float, kappa: float = 1.0,
              at: Sequence[int]) -> np.ndarray:
    """States at the step numbers ``at`` (sorted, non-negative), stacked along a new first axis."""
    times = [_check_steps(t) for t in at]
    if times != sorted(times):
        raise ValueError(f"at must be sorted; got {list(at)}")
    u, r = _prepare(u0, dt, dx, kappa)
    out, done = [], 0
    for t in times:
        _march(u, r, t - done)
        done = t
        out.append(u.copy())
    return np.stack(out)


def blowup_step(u0: np.ndarray, *, r: float, steps: int, threshold: float = 1.0) -> int:
    r"""First step at which round-off error exceeds ``threshold`` for an eigenmode initial state.

    ``u0`` must be one eigenmode :math:`\sin(k\pi j/N)` rounded to its dtype (:func:`sine_mode`),
    whose exact solution is :math:`A(\theta_k)^n u_0`; the error
    :math:`\max_j |u^n_j - A(\theta_k)^n u_{0,j}|` is then pure amplified round-off. Returns -1 if it
    stays below ``threshold`` for ``steps`` steps.
    """
    u, r_cast = _prepare(u0, r, 1.0, 1.0)
    exact = np.asarray(u0, dtype=np.float64)
    k = int(np.argmax(np.abs(mode_amplitudes(exact)))) + 1
    gain = float(amplifier(k * np.pi / (exact.size - 1), r))
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(1, _check_steps(steps) + 1):
            _march(u, r_cast, 1)
            err = np.max(np.abs(u.astype(np.float64) - exact * gain**n))
            if not err <= threshold:  # also catches nan
                return n
    return -1


def critical_r(n_points: int, *, kappa: float = 1.0, r_grid: np.ndarray, steps: int = 20000,
               seed: int = 0) -> float:
    r"""Measured stability limit: the smallest ``r`` of ``r_grid`` whose run grows.

    Runs the whole grid at once (``dt = r\,\Delta x^2/\kappa`` on :math:`[0, 1]`) from a seeded random
    initial state holding every mode, in float64, and calls a run unstable when its 2-norm after
    ``steps`` steps exceeds the initial one. The FTCS matrix is symmetric, so a stable run can only
    lose norm; an unstable mode with :math:`|A| = 1 + \delta` is detected once
    :math:`\delta \cdot \mathrm{steps}` is a few units. Returns ``nan`` if every ``r`` is stable.
    """
    r_grid = np.asarray(r_grid, dtype=np.float64)
    if r_grid.ndim != 1 or r_grid.size == 0 or np.any(np.diff(r_grid) <= 0):
        raise ValueError("r_grid must be a non-empty increasing 1-D array")
    dx = 1.0 / (n_points - 1)
    u0 = np.random.default_rng(seed).standard_normal(n_points)
    u0[0] = u0[-1] = 0.0
    final = solve(u0, dt=r_grid * dx * dx / kappa, dx=dx, kappa=kappa, steps=steps)
    with np.errstate(over="ignore", invalid="ignore"):
        grew = ~(np.linalg.norm(final, axis=-1) <= np.linalg.norm(u0))
    return float(r_grid[np.argmax(grew)]) if grew.any() else float("nan")
