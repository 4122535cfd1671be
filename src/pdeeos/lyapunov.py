r"""Finite-time Lyapunov exponents of a training map, measured two ways.

A training loop is a map :math:`\theta_{n+1} = \Phi(\theta_n)`; for gradient descent
:math:`\Phi(\theta) = \theta - \eta\nabla L(\theta)` and its Jacobian is :math:`D\Phi = \mathrm{Id} - \eta\nabla^2 L`.
The largest finite-time Lyapunov exponent over iterations :math:`n_0 \le n < T` is

.. math:: \Lambda = \frac{1}{T - n_0}\sum_{n=n_0}^{T-1} \log\frac{\|D\Phi(\theta_n)\,v_n\|}{\|v_n\|},
          \qquad v_{n+1} = \frac{D\Phi(\theta_n)\,v_n}{\|D\Phi(\theta_n)\,v_n\|},

per iteration, natural log (:func:`exponent`, from the log stretches the tangent map records). A positive
:math:`\Lambda` means nearby runs separate like :math:`e^{\Lambda n}`: rounding errors are amplified. A
negative one means they are absorbed.

The second way needs no Jacobian. Two runs whose only difference is rounding (the paper's
:math:`k = 1` and :math:`k = 3`, or a one-ulp nudge) are *twins*; while their distance :math:`d_n` is small
it grows like :math:`e^{\Lambda n}`, so :func:`twin_rate` fits the slope of :math:`\log d_n` from the first
non-zero distance up to saturation. Twins that become bit-identical have *merged*: the map contracted their
difference below the last bit, the sign of a negative exponent. Twins that stay within a few thousand ulps of
each other without merging are at the *rounding* level: rounding re-creates a difference of about one ulp at
every step and a contracting map holds it there, so their fitted slope (a drift of the noise floor) says
nothing about the exponent. Twins started a finite distance apart (a *nudge* well above rounding) show a
negative exponent as a measurable contraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["TWIN_OUTCOMES", "TwinRate", "exponent", "exponent_interval", "first_at_least", "twin_rate",
           "windowed_rates"]

TWIN_OUTCOMES: tuple[str, ...] = ("merged", "rounding", "saturated", "neither")
"""How a pair of twins ended: bit-identical; never beyond the rounding floor; grown to the saturation
level; or none of these (the fitted slope decides)."""


def exponent(log_stretch: np.ndarray, *, discard: int = 0) -> np.ndarray:
    r"""Finite-time exponent :math:`\Lambda`: the mean of the log stretches ``(..., T)`` over iterations
    ``n >= discard``; ``nan`` where a stretch is ``nan`` or :math:`+\infty` (a blown-up run), :math:`-\infty`
    where the map sends the tangent vector to zero."""
    log_stretch = np.asarray(log_stretch, dtype=np.float64)
    if log_stretch.ndim < 1 or not 0 <= discard < log_stretch.shape[-1]:
        raise ValueError(f"discard must lie in [0, {log_stretch.shape[-1] if log_stretch.ndim else 0}); got {discard!r}")
    tail = log_stretch[..., discard:]
    broken = (np.isnan(tail) | (tail == np.inf)).any(axis=-1)     # -inf: a direction mapped to zero, fine
    with np.errstate(invalid="ignore"):
        return np.where(broken, np.nan, tail.mean(axis=-1))


def exponent_interval(log_stretch: np.ndarray, *, discard: int = 0, blocks: int = 5,
                      level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    r"""A ``level`` interval for :func:`exponent` from the spread of its ``blocks`` block means
    (iterations ``n >= discard`` cut into equal blocks; Student's t with ``blocks - 1`` degrees of freedom).
    Returns ``(low, high)``, each of shape ``(...)``; ``nan`` where the exponent is. Blocks of a chaotic
    orbit are nearly independent; on a periodic orbit every block has the same mean and the interval
    closes to the exponent."""
    log_stretch = np.asarray(log_stretch, dtype=np.float64)
    if not 2 <= blocks <= log_stretch.shape[-1] - discard:
        raise ValueError(f"blocks must lie in [2, {log_stretch.shape[-1] - discard}]; got {blocks!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    usable = (log_stretch.shape[-1] - discard) // blocks * blocks
    tail = log_stretch[..., log_stretch.shape[-1] - usable:]
    means = exponent(tail.reshape(*tail.shape[:-1], blocks, -1))
    with np.errstate(invalid="ignore"):
        centre, spread = means.mean(axis=-1), means.std(axis=-1, ddof=1) / np.sqrt(blocks)
    half = stats.t.ppf(0.5 + level / 2, blocks - 1) * spread
    return centre - half, centre + half


@dataclass(frozen=True)
class TwinRate:
    r"""Growth rate of :math:`\log d_n` per iteration with a 95 % interval (least squares over
    ``start <= n < stop``; the interval treats the residuals as independent, so it is a lower bound on the
    uncertainty), and how the twins ended (:data:`TWIN_OUTCOMES`). ``rate`` is :math:`-\infty` for merged twins."""

    rate: float
    low: float
    high: float
    start: int
    stop: int
    outcome: str

    @property
    def sign(self) -> int:
        """+1 when the twins separate, -1 when they merge or shrink, 0 when they stay at the rounding level
        (bounded, but a drift of the noise floor cannot tell the sign of the exponent) or the fit cannot tell."""
        if self.outcome == "rounding":
            return 0
        if self.outcome == "merged" or self.high < 0:
            return -1
        return 1 if self.low > 0 else 0


def twin_rate(distance: np.ndarray, *, saturation: float = 1e-2, floor: float = 1e-12,
              merged_tail: float = 0.25) -> TwinRate:
    r"""Rate of separation of two twin runs from their distance :math:`d_n` (RelL1 per iteration).

    * merged: :math:`d_n = 0` exactly over the last ``merged_tail`` of the run (the rate is :math:`-\infty`,
      or, for twins that started above ``floor``, the slope of their decay);
    * saturated: :math:`d_n` reaches ``saturation``; the fit stops there;
    * rounding: otherwise, if :math:`d_n` never exceeds ``floor`` (about 1e4 float64 ulps);
    * neither: the fit runs to the end.

    The fit starts at the first non-zero distance and uses only non-zero distances.
    """
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 1 or d.size < 8 or not np.isfinite(d).all() or (d < 0).any():
        raise ValueError(f"distance must be a 1-D array of at least 8 finite values >= 0; got shape {d.shape}")
    if not (0 < floor < saturation and 0 < merged_tail < 1):
        raise ValueError(f"need 0 < floor < saturation and merged_tail in (0, 1); got {floor!r}, {saturation!r}, "
                         f"{merged_tail!r}")
    tail = max(1, int(merged_tail * d.size))
    positive = np.flatnonzero(d)
    if not d[-tail:].any():
        if positive.size >= 3 and d[positive[0]] > floor:      # a nudge that decayed: its rate is measurable
            low, rate, high = _slope(positive, d)
            return TwinRate(rate, low, high, int(positive[0]), int(positive[-1]) + 1, "merged")
        return TwinRate(-np.inf, -np.inf, -np.inf, 0, d.size - tail, "merged")
    start = int(positive[0])
    above = np.flatnonzero(d >= saturation)
    saturated = above.size > 0 and above[0] >= start
    stop = int(above[0]) + 1 if saturated else d.size
    outcome = "saturated" if saturated else "rounding" if d.max() <= floor else "neither"
    n = np.flatnonzero(d[start:stop]) + start
    if n.size < 3:
        rate = (np.log(d[stop - 1]) - np.log(d[start])) / max(stop - 1 - start, 1)
        return TwinRate(rate, -np.inf, np.inf, start, stop, outcome)
    low, rate, high = _slope(n, d)
    return TwinRate(rate, low, high, start, stop, outcome)


def _slope(n: np.ndarray, d: np.ndarray) -> tuple[float, float, float]:
    r"""Least-squares slope of :math:`\log d_n` over the steps ``n``, with its 95 % interval."""
    fit = stats.linregress(n, np.log(d[n]))
    half = stats.t.ppf(0.975, n.size - 2) * fit.stderr
    return float(fit.slope - half), float(fit.slope), float(fit.slope + half)


def windowed_rates(distance: np.ndarray, marks: np.ndarray, *, saturation: float = 1e-3,
                   floor: float = 1e-12) -> np.ndarray:
    r"""Local separation rates of twins between consecutive marks :math:`t_j` (e.g. the steps where the
    sharpness was measured): :math:`(\log d_{t_{j+1}} - \log d_{t_j})/(t_{j+1} - t_j)`, one per window;
    ``nan`` where either distance is 0 or not finite, where both lie at or below ``floor`` (the rounding
    level, whose fluctuations are not a rate: see :func:`twin_rate`), or where the window ends at or above
    ``saturation`` (there the distance no longer grows like :math:`e^{\Lambda n}`)."""
    d = np.asarray(distance, dtype=np.float64)
    t = np.asarray(marks, dtype=np.int64)
    if d.ndim != 1 or t.ndim != 1 or t.size < 2 or (np.diff(t) <= 0).any() or t[0] < 0 or t[-1] >= d.size:
        raise ValueError(f"marks must be increasing steps inside the {d.size} distances; got {marks!r}")
    a, b = d[t[:-1]], d[t[1:]]
    ok = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b) & (b < saturation) & (np.maximum(a, b) > floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, (np.log(b) - np.log(a)) / np.diff(t), np.nan)


def first_at_least(values: np.ndarray, level: float) -> int | None:
    """Index of the first value at or above ``level`` (``None`` if none): an onset in a recorded series."""
    hits = np.flatnonzero(np.asarray(values, dtype=np.float64) >= level)
    return int(hits[0]) if hits.size else None
