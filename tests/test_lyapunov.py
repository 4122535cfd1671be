"""Finite-time Lyapunov exponents and twin divergence rates."""

import numpy as np
import pytest

from pdeeos import lyapunov


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
    assert lyapunov.twin_rate(np.minimum(late, 2)).start == 20


@pytest.mark.parametrize("distance, message", [
    (np.ones(4), "at least 8"),
    (np.r_[np.ones(9), np.nan], "finite"),
    (-np.ones(10), ">= 0"),
])
def test_twin_rate_bad_input(distance, message):
    with pytest.raises(ValueError, match=message):
        lyapunov.twin_rate(distance)


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
