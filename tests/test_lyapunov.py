"""Finite-time Lyapunov exponents and twin divergence rates."""

from functools import partial

import numpy as np
import pytest

from pdeeos import lyapunov
from pdeeos.pde import cnnpde


def test_exponent_is_the_mean_log_stretch_after_discard():
    stretch = np.array([[np.log(3.0)] * 4 + [np.log(0.5)] * 4, [0.1] * 7 + [np.nan]])
    exps = lyapunov.exponent(stretch, discard=4)
    assert exps[0] == pytest.approx(np.log(0.5)) and np.isnan(exps[1])
    assert lyapunov.exponent(stretch[:1])[0] == pytest.approx(0.5 * np.log(1.5))
    assert lyapunov.exponent(np.array([[0.1, -np.inf, 0.2]]))[0] == -np.inf          # a direction mapped to zero
    with pytest.raises(ValueError, match="discard must"):
        lyapunov.exponent(stretch, discard=8)


def test_twin_rate_recovers_an_exponential_separation_and_its_saturation():
    n = np.arange(300)
    distance = np.minimum(1e-16 * np.exp(0.3 * n), 2.0) * (1 + 0.05 * np.sin(n))
    rate = lyapunov.twin_rate(distance)
    assert rate.outcome == "saturated" and rate.sign == 1
    assert rate.low < 0.3 < rate.high and rate.high - rate.low < 0.02
    assert rate.stop == int(np.flatnonzero(distance >= 1e-2)[0]) + 1


def test_twin_rate_merged_shrinking_and_undecided():
    merged = np.r_[np.full(50, 1e-16), np.zeros(150)]
    assert lyapunov.twin_rate(merged).outcome == "merged" and lyapunov.twin_rate(merged).sign == -1
    shrinking = 1e-10 * np.exp(-0.05 * np.arange(200))
    assert lyapunov.twin_rate(shrinking).sign == -1
    noise = 1 + 0.5 * np.random.default_rng(1).random(200)
    at_rounding = lyapunov.twin_rate(1e-15 * noise * np.linspace(1, 3, 200))     # a drifting noise floor
    assert at_rounding.outcome == "rounding" and at_rounding.sign == 0 and at_rounding.rate > 0
    assert lyapunov.twin_rate(1e-8 * noise).sign == 0                            # above the floor: the fit decides
    late = np.r_[np.zeros(20), 1e-16 * np.exp(0.5 * np.arange(180))]
    onset = 20 + int(np.ceil(np.log(1e-12 / 1e-16) / 0.5))      # the first distance above the float64 floor
    assert lyapunov.twin_rate(np.minimum(late, 2)).start == onset


@pytest.mark.parametrize("analysis, least", [(lyapunov.twin_rate, 8), (partial(lyapunov.fate, dtype="float32"), 4),
                                             (partial(lyapunov.growth, dtype="float32"), 4)])
@pytest.mark.parametrize("distance, message", [
    (np.ones(3), "at least"),
    (np.r_[np.ones(9), np.nan], "finite"),
    (-np.ones(10), ">= 0"),
])
def test_bad_records_are_refused(analysis, least, distance, message):
    with pytest.raises(ValueError, match=f"at least {least}" if message == "at least" else message):
        analysis(distance)


def test_windowed_rates_and_first_at_least():
    n = np.arange(101)
    d = np.minimum(1e-16 * np.exp(0.4 * n), 1.0)
    d[:5] = 0.0
    rates = lyapunov.windowed_rates(d, np.array([0, 10, 20, 40, 100]))
    assert np.isnan(rates[:2]).all() and rates[2] == pytest.approx(0.4) and np.isnan(rates[3])
    assert lyapunov.first_at_least(d, 1e-10) == int(np.ceil(np.log(1e6) / 0.4))
    assert lyapunov.first_at_least(d, 5.0) is None
    with pytest.raises(ValueError, match="marks must"):
        lyapunov.windowed_rates(d, np.array([10, 5]))
    noise = 1e-15 * (1 + np.random.default_rng(3).random(50))                      # rounding level: no rate
    assert np.isnan(lyapunov.windowed_rates(noise, np.arange(0, 50, 5))).all()


def test_a_decaying_nudge_has_a_measured_rate():
    d = np.r_[1e-8 * np.exp(-0.3 * np.arange(40)), np.zeros(160)]
    rate = lyapunov.twin_rate(d)
    assert rate.outcome == "merged" and rate.sign == -1 and rate.rate == pytest.approx(-0.3)


def test_exponent_interval_from_block_means():
    rng = np.random.default_rng(4)
    chaotic = 0.3 + rng.normal(0, 1, (1, 1000))
    low, high = lyapunov.exponent_interval(chaotic, discard=500, blocks=5)
    assert low[0] < 0.3 < high[0] and high[0] - low[0] < 0.5
    periodic = np.tile([-0.5, 0.1], (1, 500))                        # a 2-cycle: every block alike
    low, high = lyapunov.exponent_interval(periodic, discard=500)
    assert low[0] == pytest.approx(-0.2) and high[0] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="blocks"):
        lyapunov.exponent_interval(periodic, blocks=1)


# ---------------------------------------------------------------------- floors, onsets, fates, growth

DTYPES = ["float16", "bfloat16", "float32", "float64"]


def test_rounding_floor_follows_the_dtype():
    import torch
    assert lyapunov.rounding_floor(torch.float32) == lyapunov.rounding_floor(np.float32) == 1e-4
    assert lyapunov.rounding_floor("float64") == lyapunov.rounding_floor(np.dtype("float64")) == 1e-12
    assert lyapunov.rounding_floor(torch.bfloat16) == lyapunov.rounding_floor("float16") == 1e-2
    for bad in ("int64", torch.int32, "double-ish"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            lyapunov.rounding_floor(bad)


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return 1 + 0.3 * np.random.default_rng(seed).random(n)


def _record(kind: str, floor: float, n: int = 400) -> np.ndarray:
    """A synthetic twin record of each fate, 1.3 times between the floor's tenth and its level."""
    steps = np.arange(n)
    top = min(1000 * floor, 1.5)
    burst = np.minimum(0.1 * floor * np.exp(0.1 * np.maximum(steps - 100, 0)), top)
    return {
        "rounding": 0.5 * floor * _noise(n) / 1.3,
        "damped": np.where(steps < 250, burst, 0.0),
        "damped to the floor": np.where(steps < 250, burst, 0.3 * floor * _noise(n)),
        "kept": burst * np.where(steps > 200, _noise(n), 1.0) / 1.3,
        "growing": 0.1 * floor * np.exp(np.log(0.9 * top / (0.1 * floor)) * steps / n),
    }[kind]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rounding", "damped", "damped to the floor", "kept", "growing"])
def test_fate_of_each_kind_of_record_in_every_dtype(kind: str, dtype: str):
    floor = lyapunov.rounding_floor(dtype)
    fate = lyapunov.fate(_record(kind, floor), dtype=dtype)
    assert fate in lyapunov.FATES and fate == kind.split()[0]


def test_fate_depends_on_the_floor_of_the_dtype():
    record = _record("kept", lyapunov.rounding_floor("float64"))      # kept apart in float64 terms ...
    assert lyapunov.fate(record, dtype="float64") == "kept"
    assert lyapunov.fate(record, dtype="float32") == "rounding"        # ... all below float32's floor


def test_fate_of_a_record_that_falls_at_the_end_and_of_a_small_rise():
    floor = lyapunov.rounding_floor("float32")
    n = np.arange(400)
    falling = np.where(n < 300, 1e3 * floor, 1e3 * floor * np.exp(-0.05 * (n - 300)))
    assert lyapunov.fate(falling, dtype="float32") == "damped"
    small = 10 * floor * _noise(400)                                    # within 100x of the floor, no trend
    assert lyapunov.fate(small, dtype="float32") == "rounding"


def test_fate_bad_floor_and_steps():
    with pytest.raises(ValueError, match="floor must"):
        lyapunov.fate(np.ones(10), dtype="float32", floor=0.5)
    with pytest.raises(ValueError, match="steps must"):
        lyapunov.fate(np.ones(10), dtype="float32", steps=np.arange(10))


def _burst(onset: int, rate: float, n: int = 400, floor: float = 1e-4) -> np.ndarray:
    """At the floor (a few tenths of it, with one poke above it at step 30) before ``onset``, then
    above it, growing by ``rate`` a step up to 0.5."""
    steps = np.arange(1, n + 1)
    d = 0.3 * floor * _noise(n)
    d[29] = 3 * floor
    grown = floor * np.exp(rate * (steps - onset)) * (1 + 0.1 * np.random.default_rng(1).random(n))
    return np.where(steps >= onset, np.minimum(grown, 0.5), d)


def test_onset_is_where_the_distance_leaves_the_floor_for_good():
    assert lyapunov.onset(_burst(226, 0.32), dtype="float32") == 226       # not the poke at 30
    assert lyapunov.onset(_burst(226, 0.32), dtype="float32", steps=10 * np.arange(1, 401)) == 2260
    assert lyapunov.onset(0.3e-4 * _noise(400), dtype="float32") is None
    assert lyapunov.onset(np.full(10, 1e-6), dtype="float64") == 1          # a nudge starts above the floor


def test_growth_rate_from_onset_to_saturation_and_the_drift():
    grown = lyapunov.growth(_burst(226, 0.32), dtype="float32")
    assert grown.fate == "kept" and grown.onset == 226 and grown.drift == "exponential"
    assert grown.low < 0.32 < grown.high and grown.high - grown.low < 0.05
    assert abs(grown.stop - 226 - np.log(0.05 / 1e-4) / 0.32) < 2          # a tenth of the plateau
    steps = np.arange(1, 401)
    drift = np.where(steps > 50, 2e-12 * (steps - 50.0) ** 2, 0.5e-12)   # d ∝ (n - n0)^2 from n0 = 50
    polynomial = lyapunov.growth(drift, dtype="float64")
    assert polynomial.onset == 51 and polynomial.drift == "polynomial"
    assert polynomial.power == pytest.approx(2.0) and polynomial.fate == "growing"
    quiet = lyapunov.growth(0.3e-4 * _noise(400), dtype="float32")
    assert quiet.onset is None and np.isnan(quiet.rate) and quiet.fate == "rounding"


def test_twin_rate_fits_a_float32_burst_from_its_onset():
    rate = lyapunov.twin_rate(_burst(226, 0.32), dtype="float32", saturation=0.1)
    assert rate.outcome == "saturated" and rate.start == 225          # the index of step 226
    assert rate.low < 0.32 < rate.high


def test_onset_statistics_over_seeds():
    rows = np.stack([_burst(onset, 0.3) for onset in (100, 150, 300)] + [0.3e-4 * _noise(400)])
    summary = lyapunov.onset_statistics(rows, dtype="float32")
    assert summary.bursts == 3 and summary.records == 4
    assert summary.earliest == 100 and summary.latest == 300
    assert summary.median == 225                                       # (150 + 300) / 2: the silent seed counts as latest
    assert np.isnan(summary.onsets[3])
    mostly_silent = lyapunov.onset_statistics(np.stack([rows[0], rows[3], rows[3]]), dtype="float32")
    assert mostly_silent.median == np.inf and mostly_silent.bursts == 1
    with pytest.raises(ValueError, match="records × steps"):
        lyapunov.onset_statistics(rows[0], dtype="float32")


def test_a_record_leaving_the_floor_at_the_end_is_growing():
    n = np.arange(400)
    leaving = 1e-9 * np.exp(0.03 * n)                                   # above float32's floor at the very end
    assert np.median(leaving[-100:]) < 1e-4 < leaving[-1]
    assert lyapunov.fate(leaving, dtype="float32") == "growing"


@pytest.mark.parametrize("dt", [0.07, 0.049987387387387394])
def test_a_chaotic_record_at_order_one_is_kept_despite_its_dips(dt: float):
    """The one-layer CNN at two chaotic step sizes (official kernel; the second a point of chapter 5's dense grid):
    the twins sit at RelL1 of order one with deep, short dips. A least-squares trend through the dips once called
    the first "damped", and a falling trend far above the floor the second."""
    image, kernel = cnnpde.checkerboard(256), cnnpde.official_kernel(32, seed=7)
    model = {"alpha": 20.0, "beta": 1.0, "steps": 1500, "record_every": 1, "method": "periodic"}
    one, three = (cnnpde.simulate(image, kernel, [dt], k=k, **model) for k in (1, 3))
    distance = cnnpde.rel_l1_over_iterations(one.history, three.history)[0]
    assert np.median(distance[-375:]) > 0.5 and distance[-375:].min() < 0.1
    assert lyapunov.fate(distance, dtype="float64") == "kept"


@pytest.mark.parametrize("dtype", DTYPES)
def test_fate_of_slow_growth_noisy_plateaus_returns_and_contractions(dtype: str):
    """Records an independent check once misread: a power-law drift (still rising), a plateau with correlated
    noise (not a trend), a burst back to a few times the floor and a steady contraction far above it (damped)."""
    f, n = lyapunov.rounding_floor(dtype), np.arange(1, 1501)
    level = lyapunov.kept_level(f)
    assert lyapunov.fate(0.1 * level * np.sqrt(n), dtype=dtype) == "growing"
    for seed in range(20):
        z, e = np.random.default_rng(seed).standard_normal(n.size), np.zeros(n.size)
        for i in range(1, n.size):
            e[i] = e[i - 1] * (1 - 1 / 30) + z[i] * np.sqrt(2 / 30)
        plateau = np.where(n < 300, f * (1.5 * level / f) ** (n / 300), 1.5 * level * np.exp(0.3 * e))
        assert lyapunov.fate(np.minimum(plateau, 1.9), dtype=dtype) == "kept", seed
    assert lyapunov.fate(np.where(n < 300, 1.5 * level, 3 * f), dtype=dtype) == "damped"
    assert lyapunov.fate(np.minimum(1.9, 1e3 * level) * np.exp(-np.log(1e3) * n / n.size), dtype=dtype) == "damped"
    assert lyapunov.fate(np.full(n.size, 0.7), dtype=dtype) == "kept"                    # far apart in any precision
