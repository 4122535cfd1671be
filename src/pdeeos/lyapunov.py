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

The rounding floor follows the precision (:func:`rounding_floor`). Measured against it, a twin record has an
*onset* (:func:`onset`: the step where the distance leaves the floor for good), a *rate* from the onset to
saturation and a *drift* (exponential or polynomial, :func:`growth`), and a *fate* (:data:`FATES`,
:func:`fate`). In float32 a twin often sits at the floor for hundreds of steps before it bursts, and when it
bursts is random: :func:`onset_statistics` summarises the onsets of many seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["DRIFTS", "FATES", "KEPT_CAP", "KEPT_RISE", "ROUNDING_FLOORS", "TREND_BLOCKS", "TREND_FACTOR",
           "TWIN_OUTCOMES", "Growth", "OnsetStatistics", "TwinRate", "exponent", "exponent_interval", "fate",
           "first_at_least", "growth", "kept_level", "onset", "onset_statistics", "rounding_floor", "twin_rate",
           "windowed_rates"]

ROUNDING_FLOORS: dict[str, float] = {"float64": 1e-12, "float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2}
"""The RelL1 below which twins of each precision are at the rounding level. float64: about 4,500 ulps
(chapter 5's one-layer CNN holds rounding-level twins up to 2.5e-13); float32: about 840 ulps (twin MLPs on
Fashion-MNIST drift to 2e-5 within 400 steps at the floor: one of the N weights changing sign alone adds 2/N).
float16 and bfloat16: 0.01 (10 and 1.3 ulps); there "kept" asks for :data:`KEPT_CAP`, 10 times the floor
(:func:`kept_level`)."""

KEPT_RISE = 100.0
"""How far above the floor a record must rise for its twins to count as kept apart (and to have an onset), up
to :data:`KEPT_CAP` (:func:`kept_level`)."""

TREND_BLOCKS = 8
"""The blocks the last quarter of a record is cut into to find a trend (:func:`fate`)."""

TREND_FACTOR = 1.1
"""A trend over the last quarter of a record: its block medians rise (fall) steadily, by at least this factor
from the first block to the last."""

KEPT_CAP = 0.1
"""The most :func:`kept_level` asks of a record, whatever the floor: a RelL1 of 0.1 is far apart in any
precision (RelL1 is at most 2)."""

FATES: tuple[str, ...] = ("rounding", "damped", "kept", "growing")
"""How a twin record ends (:func:`fate`): never left the rounding floor; rose and came back to it; rose far
above it and stays apart; still rising at the end."""

DRIFTS: tuple[str, ...] = ("exponential", "polynomial")
r"""How a distance grows after its onset (:func:`growth`): :math:`d \propto e^{\lambda n}` or
:math:`d \propto (n - n_0)^p`."""

TWIN_OUTCOMES: tuple[str, ...] = ("merged", "rounding", "saturated", "neither")
"""How a pair of twins ended: bit-identical; never beyond the rounding floor; grown to the saturation
level; or none of these (the fitted slope decides)."""


def rounding_floor(dtype: object) -> float:
    """The rounding floor of RelL1 for a precision (:data:`ROUNDING_FLOORS`): ``dtype`` a torch or NumPy dtype
    or its name."""
    name = str(dtype).removeprefix("torch.")
    if name not in ROUNDING_FLOORS:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in ROUNDING_FLOORS:
        raise ValueError(f"dtype must be one of {', '.join(ROUNDING_FLOORS)}; got {dtype!r}")
    return ROUNDING_FLOORS[name]


def _record(distance: np.ndarray, steps: np.ndarray | None = None, *,
            least: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``distance`` and the steps it was recorded at (default ``1, 2, ...``) as float arrays, checked."""
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 1 or d.size < least or not np.isfinite(d).all() or (d < 0).any():
        raise ValueError(f"distance must be a 1-D array of at least {least} finite values >= 0 (a copy that blew "
                         f"up has no fate); got shape {d.shape}")
    n = np.arange(1, d.size + 1, dtype=np.float64) if steps is None else np.asarray(steps, dtype=np.float64)
    if n.shape != d.shape or (np.diff(n) <= 0).any() or n[0] < 1:
        raise ValueError(f"steps must be {d.size} increasing step numbers >= 1; got {steps!r}")
    return d, n


def _block_medians(d: np.ndarray, floor: float) -> np.ndarray:
    r"""The medians of :data:`TREND_BLOCKS` consecutive blocks of :math:`\max(d_n, \text{floor}/K)`
    (:math:`K` = :data:`KEPT_RISE`), fewer for a shorter record."""
    return np.array([np.median(part) for part in
                     np.array_split(np.maximum(d, floor / KEPT_RISE), min(TREND_BLOCKS, d.size))])


def _trend(medians: np.ndarray) -> int:
    """+1 (-1) when block medians (:func:`_block_medians`) rise (fall) steadily: strictly from block to block,
    by a factor of at least :data:`TREND_FACTOR` from the first to the last; 0 otherwise (and for fewer than
    three blocks). Blocks of a noisy plateau, chaotic or not, are not ordered (for independent blocks the chance
    is 1 in 8! = 40,320 either way); a growth or a decay, polynomial or exponential, is."""
    if medians.size < 3:
        return 0
    steps = np.diff(medians)
    if (steps > 0).all() and medians[-1] >= TREND_FACTOR * medians[0]:
        return 1
    if (steps < 0).all() and medians[0] >= TREND_FACTOR * medians[-1]:
        return -1
    return 0


def kept_level(floor: float) -> float:
    """The RelL1 a record must reach to count as risen, and stay at to count as kept: :data:`KEPT_RISE` times
    the floor, at most :data:`KEPT_CAP` (for float16 and bfloat16, whose floors are 0.01)."""
    return min(KEPT_RISE * floor, KEPT_CAP)


def fate(distance: np.ndarray, *, dtype: object, floor: float | None = None,
         steps: np.ndarray | None = None) -> str:
    r"""How a twin record :math:`d_n` (RelL1 per record) ends, one of :data:`FATES`, against the rounding
    floor :math:`f` of ``dtype`` (:func:`rounding_floor`; ``floor`` overrides it). With :math:`Q` the last
    quarter of the record, :math:`\ell` = :func:`kept_level` (:data:`KEPT_RISE` :math:`\cdot f`, at most
    :data:`KEPT_CAP`) and a *trend* the steady rise or fall of the medians of :data:`TREND_BLOCKS` blocks of
    :math:`Q`:

    * ``"rounding"``: :math:`\max_n d_n \le f`; also a record that never reaches :math:`\ell` and has no trend
      (indistinguishable from a drifting floor);
    * ``"growing"``: otherwise, if it rises over :math:`Q` and its last block is above the floor (also when it
      has only begun to leave the floor);
    * ``"damped"``: :math:`\operatorname{median}_Q d_n \le f` (back at the floor, or exactly 0); or it falls
      steadily over :math:`Q`; or it reached :math:`\ell` and the median of its last tenth is back below it;
    * ``"kept"``: it reached :math:`\ell`, its last tenth is still at or above :math:`\ell`, and it has no
      trend: the twins stay apart, bounded (a noisy plateau that drifts down or up is still kept).

    ``steps`` are the steps the distances were recorded at (default 1, 2, ...).
    """
    d, _ = _record(distance, steps)
    f = rounding_floor(dtype) if floor is None else _check_floor(floor)
    if d.max() <= f:
        return "rounding"
    tail = d[d.size - max(2, d.size // 4):]
    medians = _block_medians(tail, f)
    trend = _trend(medians)
    if trend > 0 and medians[-1] > f:
        return "growing"
    level = kept_level(f)
    risen = d.max() >= level
    back = np.median(d[d.size - max(1, d.size // 10):]) < level
    if np.median(tail) <= f or trend < 0 or (risen and back):
        return "damped"
    return "kept" if risen else "rounding"


def _check_floor(floor: float) -> float:
    if not (isinstance(floor, (int, float)) and 0 < floor < 2 / KEPT_RISE):
        raise ValueError(f"floor must be a number in (0, {2 / KEPT_RISE:g}); got {floor!r}")
    return float(floor)


def _onset_index(d: np.ndarray, f: float) -> int | None:
    """Index of the first record after the last one at or below ``f`` that precedes the first one at or above
    :func:`kept_level` of ``f``; ``None`` when no record rises that far."""
    risen = np.flatnonzero(d >= kept_level(f))
    if risen.size == 0:
        return None
    below = np.flatnonzero(d[:risen[0]] <= f)
    return int(below[-1]) + 1 if below.size else 0


def onset(distance: np.ndarray, *, dtype: object, floor: float | None = None,
          steps: np.ndarray | None = None) -> float | None:
    r"""The step where a twin distance leaves the rounding floor :math:`f` for good: the first record after the
    last one at or below :math:`f` that comes before the distance first reaches :func:`kept_level`
    (:data:`KEPT_RISE` :math:`\cdot f`, at most :data:`KEPT_CAP`; so a record that pokes above the floor and
    falls back has not yet begun); ``None`` if it
    never rises that far. A record that starts above the floor (a nudge) has its onset at its first step."""
    d, n = _record(distance, steps)
    index = _onset_index(d, rounding_floor(dtype) if floor is None else _check_floor(floor))
    return None if index is None else float(n[index])


@dataclass(frozen=True)
class Growth:
    r"""How a twin distance grew (:func:`growth`): its :data:`FATES` entry; the onset and the step where the
    fit stopped (saturation); the exponential rate :math:`\lambda` per step of :math:`\log d_n` over the onset
    to saturation, with its 95 % interval (least squares, residuals taken as independent, so a lower bound on
    the uncertainty; ``nan`` without an onset or with fewer than three records to fit); the power :math:`p` of
    the polynomial fit :math:`\log d_n = p\log(n - n_0) + c`; and which of the two fits better (:data:`DRIFTS`, the
    smaller residual sum of squares; ``None`` without a fit)."""

    fate: str
    onset: float | None
    stop: float | None
    rate: float
    low: float
    high: float
    power: float
    drift: str | None


def growth(distance: np.ndarray, *, dtype: object, floor: float | None = None, steps: np.ndarray | None = None,
           saturation: float | None = None) -> Growth:
    r"""Onset, growth rate with interval, and drift of a twin distance :math:`d_n` (RelL1 per record).

    The fit runs from the :func:`onset` to the first record at or above ``saturation`` (default a tenth of
    the largest distance after the onset: the growth slows as the twins approach their plateau). Two models
    are fitted by least squares: exponential, :math:`\log d_n = \lambda n + c` (a positive exponent), and
    polynomial, :math:`\log d_n = p\log(n - n_0) + c` (a drift such as a random walk's :math:`p = 1/2`), with
    :math:`n` the step (``steps``, default 1, 2, ...) and :math:`n_0` the last step at the floor before the
    onset (0 when the record starts above it).
    """
    d, n = _record(distance, steps)
    f = rounding_floor(dtype) if floor is None else _check_floor(floor)
    end = fate(d, dtype=dtype, floor=f, steps=n)
    start = _onset_index(d, f)
    if start is None:
        return Growth(end, None, None, np.nan, np.nan, np.nan, np.nan, None)
    level = 0.1 * d[start:].max() if saturation is None else saturation
    reached = np.flatnonzero(d[start:] >= level)
    stop = start + (int(reached[0]) + 1 if reached.size else d.size - start)
    window = np.arange(start, stop)[d[start:stop] > 0]
    if window.size < 3:
        return Growth(end, float(n[start]), float(n[stop - 1]), np.nan, np.nan, np.nan, np.nan, None)
    low, rate, high = _log_slope(n[window], d[window])
    origin = n[start - 1] if start > 0 else n[0] - 1
    return Growth(end, float(n[start]), float(n[stop - 1]), rate, low, high, *_drift(n[window], d[window], origin))


def _drift(n: np.ndarray, d: np.ndarray, origin: float) -> tuple[float, str]:
    r"""The power of the polynomial fit against ``n - origin``, and which of the exponential and polynomial
    fits has the smaller residual sum of squares of :math:`\log d`."""
    y, since = np.log(d), np.log(n - origin)
    exponential, polynomial = stats.linregress(n, y), stats.linregress(since, y)

    def residual(fit: object, x: np.ndarray) -> float:
        return float(((y - fit.intercept - fit.slope * x) ** 2).sum())

    better = residual(exponential, n) <= residual(polynomial, since)
    return float(polynomial.slope), DRIFTS[0] if better else DRIFTS[1]


@dataclass(frozen=True)
class OnsetStatistics:
    """Onsets of several twin records (one per seed, :func:`onset_statistics`): each record's onset (``nan``
    where it never left the floor), how many burst, their median (records that never burst count as later than
    any step, so it is ``inf`` when half or more never burst), and the earliest and latest onset seen."""

    onsets: np.ndarray
    bursts: int
    records: int
    median: float
    earliest: float
    latest: float


def onset_statistics(distances: np.ndarray, *, dtype: object, floor: float | None = None,
                     steps: np.ndarray | None = None) -> OnsetStatistics:
    """:func:`onset` of every row of ``distances`` (records × recorded steps, e.g. one row per seed) and their
    summary: the onset is random, and some records do not burst at all within the run."""
    rows = np.asarray(distances, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 1:
        raise ValueError(f"distances must be records × steps (2-D, at least one record); got shape {rows.shape}")
    found = [onset(row, dtype=dtype, floor=floor, steps=steps) for row in rows]
    onsets = np.array([np.nan if o is None else o for o in found])
    burst = onsets[np.isfinite(onsets)]
    median = float(np.median(np.where(np.isnan(onsets), np.inf, onsets)))
    first, last = (float(burst.min()), float(burst.max())) if burst.size else (np.nan, np.nan)
    return OnsetStatistics(onsets, int(burst.size), int(rows.shape[0]), median, first, last)


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


def twin_rate(distance: np.ndarray, *, saturation: float = 1e-2, floor: float | None = None,
              dtype: object = "float64", merged_tail: float = 0.25) -> TwinRate:
    r"""Rate of separation of two twin runs from their distance :math:`d_n` (RelL1 per iteration).

    * merged: :math:`d_n = 0` exactly over the last ``merged_tail`` of the run (the rate is :math:`-\infty`,
      or, for twins that started above ``floor``, the slope of their decay);
    * saturated: :math:`d_n` reaches ``saturation``; the fit stops there;
    * rounding: otherwise, if :math:`d_n` never exceeds ``floor``;
    * neither: the fit runs to the end.

    ``floor`` defaults to the rounding floor of ``dtype`` (:func:`rounding_floor`: 1e-12, about 4,500 ulps, in
    float64; 1e-4 in float32). The fit starts at the :func:`onset`, where the distance leaves the floor for
    good (before it, the record is rounding noise, and a fit from the first non-zero distance would average
    the flat floor with the burst), or at the first non-zero distance when there is no onset; it uses only
    non-zero distances.
    """
    floor = rounding_floor(dtype) if floor is None else floor
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
    burst = _onset_index(d, floor)
    start = int(positive[0]) if burst is None else max(burst, int(positive[0]))
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
    r"""Least-squares slope of :math:`\log d_n` over the steps ``n`` (indices into ``d``), with its 95 % interval."""
    return _log_slope(n, d[n])


def _log_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    r"""Least-squares slope of :math:`\log y` against ``x`` (``y > 0``), with its 95 % interval."""
    fit = stats.linregress(x, np.log(y))
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
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
