"""The minimalist Edge-of-Stability example of Zhu et al. (ICLR 2023).

A 4-layer scalar network with loss :math:`\\tfrac12(1 - xyzw)^2` and tied weights :math:`z = x`,
:math:`w = y`. Its gradient descent is exactly gradient descent on

.. math::  L(x, y) = \\tfrac14 (1 - x^2 y^2)^2,

with :math:`\\nabla L = -(1 - x^2y^2)\\,(x y^2,\\; x^2 y)`. On the minimum manifold :math:`xy = \\pm 1`
the Hessian is :math:`2\\begin{pmatrix} y^2 & xy \\\\ xy & x^2 \\end{pmatrix}`, with sharpness
:math:`2(x^2 + y^2)`. In the coordinates :math:`d = xy`, :math:`c = \\sqrt{x^2 - y^2}` the minimum
with sharpness exactly :math:`2/\\eta` (the *η-EoS minimum*) is :math:`(c, d) = ((\\eta^{-2} - 4)^{1/4}, 1)`.

Every function broadcasts over its arguments, so a grid of initialisations (or of step sizes) runs
as one array.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["cd_coordinates", "eos_minimum", "gd", "gd_map", "gd_step", "gradient", "hessian", "minimalist_loss",
           "network_loss", "outcome", "sharpness", "sharpness_concentration"]


def network_loss(x: ArrayLike, y: ArrayLike, z: ArrayLike, w: ArrayLike) -> ArrayLike:
    """The untied network loss :math:`\\tfrac12(1 - xyzw)^2` (NumPy or torch)."""
    return 0.5 * (1.0 - x * y * z * w) ** 2


def minimalist_loss(x: ArrayLike, y: ArrayLike) -> ArrayLike:
    """The tied loss :math:`L(x, y) = \\tfrac14(1 - x^2y^2)^2` (NumPy or torch)."""
    return 0.25 * (1.0 - (x * y) ** 2) ** 2


def gradient(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """:math:`\\nabla L = -(1 - x^2y^2)(xy^2, x^2y)`, stacked on a last axis of length 2."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    residual = 1.0 - (x * y) ** 2
    return np.stack(np.broadcast_arrays(-residual * x * y**2, -residual * x**2 * y), axis=-1)


def hessian(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """:math:`\\nabla^2 L` with :math:`u = 1 - x^2y^2`:
    :math:`L_{xx} = 2x^2y^4 - y^2u`, :math:`L_{yy} = 2x^4y^2 - x^2u`, :math:`L_{xy} = 2x^3y^3 - 2xyu`;
    shape ``(..., 2, 2)``."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    u = 1.0 - (x * y) ** 2
    lxx = 2 * x**2 * y**4 - y**2 * u
    lyy = 2 * x**4 * y**2 - x**2 * u
    lxy = 2 * x**3 * y**3 - 2 * x * y * u
    return np.stack([np.stack([lxx, lxy], -1), np.stack([lxy, lyy], -1)], -2)


def sharpness(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Largest eigenvalue of :math:`\\nabla^2 L`: :math:`\\tfrac{a+c}2 + \\sqrt{(\\tfrac{a-c}2)^2 + b^2}`."""
    h = hessian(x, y)
    a, b, c = h[..., 0, 0], h[..., 0, 1], h[..., 1, 1]
    return 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b**2)


def _check_eta(eta: ArrayLike) -> np.ndarray:
    eta = np.asarray(eta, dtype=float)
    if not np.all(eta > 0):
        raise ValueError(f"eta must be positive; got {eta}")
    return eta


def gd_step(p: np.ndarray, eta: ArrayLike) -> np.ndarray:
    """One step :math:`p - \\eta\\nabla L(p)` for points ``p`` of shape ``(..., 2)``."""
    return p - np.asarray(eta)[..., None] * gradient(p[..., 0], p[..., 1])


def gd_map(p: np.ndarray, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """One gradient-descent step from the point ``p`` (shape ``(2,)``) and its Jacobian :math:`I - \\eta\\nabla^2 L`:
    the map as a :data:`pdeeos.pde.bifurcation.StepMap` along the step size."""
    p = np.asarray(p, dtype=float)
    return gd_step(p, eta), np.eye(2) - float(eta) * hessian(p[0], p[1])


def gd(x0: ArrayLike, y0: ArrayLike, eta: ArrayLike, steps: int, *, keep: int | None = None) -> np.ndarray:
    """Gradient descent :math:`p_{t+1} = p_t - \\eta\\nabla L(p_t)` from :math:`(x_0, y_0)`.

    Returns the trajectory, shape ``(steps + 1, *shape, 2)`` where ``shape`` is the broadcast
    shape of ``x0``, ``y0`` and ``eta`` (``(steps + 1, 2)`` for scalars), or only its last ``keep``
    iterates. Divergent runs overflow to ``inf``/``nan`` silently.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative; got {steps}")
    keep = steps + 1 if keep is None else keep
    if not 1 <= keep <= steps + 1:
        raise ValueError(f"keep must lie in [1, steps + 1]; got {keep}")
    x0, y0, eta = np.broadcast_arrays(np.asarray(x0, dtype=float), np.asarray(y0, dtype=float),
                                      _check_eta(eta))
    p = np.stack([x0, y0], -1)
    trajectory = np.empty((keep, *p.shape))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            if t > steps - keep:
                trajectory[t - (steps + 1 - keep)] = p
            if t < steps:
                p = gd_step(p, eta)
    return trajectory


def cd_coordinates(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zhu et al.'s coordinates :math:`c = \\sqrt{x^2 - y^2}` (needs :math:`|x| \\ge |y|`), :math:`d = xy`."""
    x, y = points[..., 0], points[..., 1]
    return np.sqrt(x**2 - y**2), x * y


def eos_minimum(eta: float) -> tuple[float, float]:
    """The point :math:`(x, y)`, :math:`x > y > 0`, on :math:`xy = 1` whose sharpness is :math:`2/\\eta`.

    With :math:`c^2 = x^2 - y^2 = \\sqrt{\\eta^{-2} - 4}` and :math:`xy = 1`:
    :math:`x^2 = (c^2 + \\sqrt{c^4 + 4})/2 = (c^2 + 1/\\eta)/2`, :math:`y = 1/x`. Defined for
    :math:`0 < \\eta < 1/2` (the least sharpness on the manifold is 4, at :math:`x = y = 1`).
    """
    if not 0 < eta < 0.5:
        raise ValueError(f"eta must lie in (0, 1/2) for an EoS minimum to exist; got {eta}")
    c2 = np.sqrt(eta**-2 - 4.0)
    x = float(np.sqrt(0.5 * (c2 + 1.0 / eta)))
    return x, 1.0 / x


def outcome(trajectory: np.ndarray, *, tol: float = 1e-8, blowup: float = 1e6) -> np.ndarray:
    """Classify each run by its last point: 1 converged (:math:`|1 - x^2y^2| <` ``tol``),
    -1 diverged (non-finite or :math:`\\max(|x|,|y|) >` ``blowup``), 0 neither yet."""
    last = trajectory[-1]
    size = np.abs(last).max(axis=-1)
    diverged = ~np.isfinite(size) | (size > blowup)
    with np.errstate(invalid="ignore", over="ignore"):
        converged = np.abs(1.0 - (last[..., 0] * last[..., 1]) ** 2) < tol
    return np.where(diverged, -1, np.where(converged, 1, 0))


def sharpness_concentration(eta: float, *, n: int = 60, steps: int = 20_000) -> dict[str, float]:
    """Gradient descent at step ``eta`` from an ``n``×``n`` grid of starts whose nearby minima are too
    sharp (:math:`x_0` from 1.05 to 1.6 times the :math:`x` of the η-EoS minimum, :math:`d_0 = x_0y_0`
    from 0.1 to 0.9): how many converge or diverge, the largest sharpness :math:`2(x_0^2 + 1/x_0^2)` of
    the minima next to the starts, and the least and largest final sharpness of the converged runs."""
    x_eos, _ = eos_minimum(eta)
    f, d = np.meshgrid(np.linspace(1.05, 1.6, n), np.linspace(0.1, 0.9, n))
    x0 = f * x_eos
    last = gd(x0, d / x0, eta, steps, keep=1)
    result = outcome(last)
    final = sharpness(last[0, ..., 0], last[0, ..., 1])[result == 1]
    return {"eta": eta, "2/eta": 2 / eta, "starts": n * n, "converged": int((result == 1).sum()),
            "diverged": int((result == -1).sum()), "sharpness of nearest minimum (max)": float(sharpness(x0, 1 / x0).max()),
            "final sharpness min": float(final.min()) if final.size else float("nan"),
            "final sharpness max": float(final.max()) if final.size else float("nan")}
