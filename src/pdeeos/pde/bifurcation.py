r"""Period doubling of a smooth map along a parameter, located by continuation, and Feigenbaum's ratios.

A :math:`p`-cycle of :math:`x_{n+1} = F_a(x_n)` is a fixed point of :math:`F_a^p`. Its *multiplier* matrix is
:math:`M = DF_a(x_{p-1})\cdots DF_a(x_0)`; the cycle is stable while every eigenvalue of :math:`M` lies
inside the unit circle and loses stability by *period doubling* where a real eigenvalue crosses
:math:`-1`, giving birth to a :math:`2p`-cycle. Gradient descent :math:`F_\eta(\theta) = \theta - \eta\nabla L`
has :math:`DF = I - \eta\nabla^2 L`, so its fixed point doubles exactly where :math:`\eta\lambda_{\max} = 2`.

:func:`cascade` follows the attracting cycle of a map as the parameter grows, Newton-refines it at every
parameter (so the slow convergence of iterates near a bifurcation does not blur where it is), bisects each
crossing of :math:`-1` to the last digits, and moves on to the :math:`2p`-cycle. For maps with a quadratic
extremum the doubling parameters :math:`a_1 < a_2 < \dots` accumulate geometrically, with

.. math:: \delta_m = \frac{a_m - a_{m-1}}{a_{m+1} - a_m} \to \delta = 4.6692016\ldots

(Feigenbaum's constant, :data:`FEIGENBAUM_DELTA`; :func:`feigenbaum_ratios`).

The map is given as ``step(x, a) -> (F_a(x), DF_a(x))`` with ``x`` of shape ``(d,)`` and the Jacobian
``(d, d)`` (a :data:`StepMap`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CYCLE_RELATIONS", "FEIGENBAUM_DELTA", "Cascade", "StepMap", "attractor_period", "cascade", "cycle",
           "cycle_relation", "feigenbaum_ratios", "refine_cycle"]

FEIGENBAUM_DELTA = 4.669201609102990
"""Feigenbaum's first constant: the limit of the ratios of successive period-doubling intervals."""

CYCLE_RELATIONS: tuple[str, ...] = ("same", "shifted", "mirror", "other")
"""How two orbits that end on cycles relate (:func:`cycle_relation`): the same state at every step; the same
cycle at another phase; the mirror image :math:`u \\mapsto -u` of the cycle (at any phase); none of these."""

StepMap = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]
"""``step(x, a) -> (F_a(x), DF_a(x))``: one iteration of the map at parameter ``a`` and its Jacobian."""


def cycle(step: StepMap, x: np.ndarray, a: float, period: int) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`F_a^p(x)` and the multiplier matrix :math:`M = \prod DF_a(x_i)` along the ``period`` steps."""
    m = np.eye(x.size)
    for _ in range(period):
        x, jacobian = step(x, a)
        m = np.asarray(jacobian, dtype=np.float64).reshape(x.size, x.size) @ m
    return np.asarray(x, dtype=np.float64), m


def refine_cycle(step: StepMap, x: np.ndarray, a: float, period: int, *, tol: float = 1e-13,
                 iterations: int = 60) -> np.ndarray | None:
    r"""A point of a ``period``-cycle near ``x`` by Newton's method on :math:`F_a^p(x) - x = 0` (least squares,
    so a cycle on a manifold of cycles is found too); ``None`` when it does not converge to ``tol``
    (relative to :math:`1 + \|x\|`)."""
    found = _refined(step, x, a, period, tol=tol, iterations=iterations)
    return None if found is None else found[0]


def _refined(step: StepMap, x: np.ndarray, a: float, period: int, *, tol: float = 1e-13,
             iterations: int = 60) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`refine_cycle`'s point with the multiplier matrix at it (the last Newton step computed it)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    for _ in range(iterations):
        image, m = cycle(step, x, a, period)
        residual = image - x
        if not np.isfinite(residual).all():
            return None
        if np.linalg.norm(residual) <= tol * (1 + np.linalg.norm(x)):
            return x, m
        x = x - np.linalg.lstsq(m - np.eye(x.size), residual, rcond=None)[0]
    return None


def _lowest_real(m: np.ndarray) -> float:
    """The most negative real eigenvalue of ``m`` (``inf`` when it has none)."""
    eig = np.linalg.eigvals(m)
    real = eig.real[np.abs(eig.imag) <= 1e-12 * (1 + np.abs(eig.real))]
    return float(real.min()) if real.size else np.inf


def attractor_period(orbit: np.ndarray, *, max_period: int = 64, rtol: float = 1e-9) -> int:
    """The least period of the last ``2 * max_period`` points of an orbit ``(T,)`` or ``(T, d)`` (every point
    equal, to ``rtol``, to the one a period later); 0 when none up to ``max_period`` fits."""
    tail = np.asarray(orbit, dtype=np.float64).reshape(len(orbit), -1)[-2 * max_period:]
    scale = 1 + np.abs(tail).max()
    for p in range(1, max_period + 1):
        if np.abs(tail[p:] - tail[:-p]).max() <= rtol * scale:
            return p
    return 0


def cycle_relation(a: np.ndarray, b: np.ndarray, period: int, *, rtol: float = 1e-9,
                   mirror_rtol: float = 1e-3) -> str:
    r"""How the ends ``a`` and ``b`` (equal lengths, at least ``2 * period`` values of a scalar observable such as
    :math:`u`) of two orbits on ``period``-cycles relate, one of :data:`CYCLE_RELATIONS`: ``b`` equals ``a``
    (to ``rtol`` of the largest value), or ``a`` shifted by :math:`0 < s < p` steps, or :math:`-a` shifted by
    any :math:`s` (to ``mirror_rtol``: a map that is only nearly odd has a nearly mirrored cycle), or none."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not 1 <= period <= a.size // 2:
        raise ValueError(f"need two 1-D ends of equal length at least 2 * period; got {a.shape}, {b.shape}, "
                         f"period {period!r}")
    scale = max(np.abs(a).max(), np.abs(b).max(), np.finfo(float).tiny)
    window = a.size - period

    def matches(x: np.ndarray, shift: int, tol: float) -> bool:
        return bool(np.abs(x[shift:shift + window] - b[:window]).max() <= tol * scale)

    if matches(a, 0, rtol):
        return "same"
    if any(matches(a, s, rtol) for s in range(1, period)):
        return "shifted"
    if any(matches(-a, s, mirror_rtol) for s in range(period)):
        return "mirror"
    return "other"


@dataclass(frozen=True)
class Cascade:
    """The period doublings :func:`cascade` found: the period of the cycle that doubles at each point, the
    parameters of the doublings (each to about ``tol``), Feigenbaum's ratios of successive intervals, and why
    the search stopped."""

    periods: tuple[int, ...]
    points: np.ndarray
    ratios: np.ndarray
    stopped: str


def feigenbaum_ratios(points: np.ndarray) -> np.ndarray:
    r""":math:`\delta_m = (a_m - a_{m-1})/(a_{m+1} - a_m)` of successive doubling parameters."""
    gaps = np.diff(np.asarray(points, dtype=np.float64))
    return gaps[:-1] / gaps[1:]


def _bisect(step: StepMap, x: np.ndarray, low: float, high: float, period: int,
            tol: float) -> tuple[float, np.ndarray]:
    """The parameter in ``[low, high]`` where the ``period``-cycle's lowest real multiplier crosses -1 (it is
    above -1 at ``low`` and below at ``high``), continuing the cycle from ``x`` at ``low``."""
    while high - low > tol * max(1.0, abs(low)):
        mid = 0.5 * (low + high)
        found = _refined(step, x, mid, period)
        if found is None:
            break
        if _lowest_real(found[1]) > -1:
            low, x = mid, found[0]
        else:
            high = mid
    return 0.5 * (low + high), x


def _genuine(step: StepMap, x: np.ndarray, a: float, period: int) -> bool:
    """Whether a point of a ``period``-cycle is not also a point of the half-period cycle it was born from."""
    if period % 2:
        return True
    return bool(np.linalg.norm(cycle(step, x, a, period // 2)[0] - x) > 1e-9 * (1 + np.linalg.norm(x)))


def _doubled(step: StepMap, x: np.ndarray, a: float, period: int) -> np.ndarray | None:
    """A point of the stable ``2 * period``-cycle born at a doubling just below ``a``, from the
    ``period``-cycle point ``x``: Newton on :math:`F_a^{2p}` from ``x`` moved by ever larger distances along the
    multiplier's eigenvector of -1 (the new cycle's points lie at a distance growing like the square root of
    the parameter's distance from the doubling); ``None`` if every start returns to the old cycle or to an
    unstable one."""
    eig, vec = np.linalg.eig(cycle(step, x, a, period)[1])
    v = np.real(vec[:, int(np.argmin(eig.real))])
    v = v / np.linalg.norm(v) * (1 + np.linalg.norm(x))
    for r in 10.0 ** -np.arange(8, 0, -0.5):
        found = _refined(step, x + r * v, a, 2 * period)
        if found is None:
            continue
        point, multiplier = found
        if _genuine(step, point, a, 2 * period) and np.abs(np.linalg.eigvals(multiplier)).max() < 1:
            return point
    return None


def cascade(step: StepMap, x0: np.ndarray, a0: float, a_max: float, *, max_period: int = 64,
            transient: int = 5000, grid: int = 400, tol: float = 1e-13) -> Cascade:
    r"""The period doublings of the attracting cycle reached from ``x0`` at ``a0``, followed up to ``a_max``.

    At ``a0`` the orbit from ``x0`` runs ``transient`` steps and its cycle (period at most ``max_period``) is
    refined. The cycle is then continued in parameter steps (``grid`` steps over ``[a0, a_max]`` at first,
    each next doubling searched with steps a ``grid``-th of the last interval); where its lowest real
    multiplier crosses -1 the crossing is bisected to ``tol`` (relative) and the search moves to the
    :math:`2p`-cycle, found by Newton's method from points moved off the old cycle along the eigenvector of -1.
    Stops at ``a_max``, at period ``max_period``, or where a cycle is lost (a fold, or the cycle leaves the
    basin), saying which.
    """
    if not a0 < a_max:
        raise ValueError(f"need a0 < a_max; got {a0!r}, {a_max!r}")
    x = np.asarray(x0, dtype=np.float64).ravel()
    orbit = [x]
    for _ in range(transient):
        orbit.append(np.asarray(step(orbit[-1], a0)[0], dtype=np.float64))
    period = attractor_period(np.stack(orbit), max_period=max_period)
    if period == 0:
        raise ValueError(f"the orbit from x0 at a = {a0:g} has no period up to {max_period} after {transient} "
                         "steps: start the cascade below the chaos")
    x = refine_cycle(step, orbit[-1], a0, period)
    if x is None:
        raise ValueError(f"the {period}-cycle at a = {a0:g} did not refine")
    a, h = a0, (a_max - a0) / grid
    h_max = h
    periods: list[int] = []
    points: list[float] = []
    while True:
        if period > max_period:
            stopped = f"period {period} exceeds max_period"
            break
        nxt = min(a + h, a_max)
        found = _refined(step, x, nxt, period)
        if found is None or not _genuine(step, found[0], nxt, period):
            if h < tol * max(1.0, abs(a)):
                stopped = f"the {period}-cycle was lost at a = {a:.15g}"
                break
            h /= 2
            continue
        refined, multiplier = found
        if _lowest_real(multiplier) < -1:
            point, x = _bisect(step, x, a, nxt, period, tol)
            periods.append(period)
            points.append(point)
            gap = point - (points[-2] if len(points) > 1 else a0)
            born, offset = None, nxt - point
            while born is None and offset > tol * max(1.0, abs(point)):
                a, offset = point + offset, offset / 4
                old = refine_cycle(step, x, a, period)
                born = None if old is None else _doubled(step, old, a, period)
            if born is None:
                stopped = f"no stable {2 * period}-cycle just after a = {point:.15g}"
                break
            x, period, h, h_max = born, 2 * period, 4 * offset, gap / grid
            continue
        a, x, h = nxt, refined, min(2 * h, h_max)
        if a >= a_max:
            stopped = "reached a_max"
            break
    pts = np.array(points)
    return Cascade(tuple(periods), pts, feigenbaum_ratios(pts) if pts.size > 2 else np.array([]), stopped)
