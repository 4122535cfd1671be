"""The explicit heat scheme, its amplifier and its CFL limit."""

import numpy as np
import pytest

from pdeeos.pde import heat


def test_cfl_limit_is_dx_squared_over_two_kappa():
    assert heat.cfl_limit(0.1, kappa=2.0) == pytest.approx(0.01 / 4)
    assert heat.cfl_limit(1.0) == 0.5


def test_amplifier_matches_one_step_of_the_scheme_on_every_eigenmode():
    n_points, r = 33, 0.37
    for k in (1, 7, 31):
        u0 = heat.sine_mode(n_points, k)
        u1 = heat.solve(u0, dt=r, dx=1.0, steps=1)
        expected = heat.amplifier(k * np.pi / (n_points - 1), r) * u0
        np.testing.assert_allclose(u1, expected, atol=1e-14)


def test_amplifier_bound_is_the_cfl_condition():
    theta = np.linspace(0, np.pi, 1001)
    assert np.abs(heat.amplifier(theta, 0.5)).max() <= 1 + 1e-12
    assert np.abs(heat.amplifier(theta, 0.51)).max() > 1


def test_solve_matches_a_naive_loop_and_keeps_dtype():
    rng = np.random.default_rng(1)
    u0 = rng.standard_normal(20).astype(np.float32)
    u0[0] = u0[-1] = 0
    r = np.float32(0.3)
    naive = u0.copy()
    for _ in range(50):
        new = naive.copy()
        for j in range(1, 19):
            new[j] = naive[j] + r * (naive[j + 1] - 2 * naive[j] + naive[j - 1])
        naive = new
    out = heat.solve(u0, dt=0.3, dx=1.0, steps=50)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, naive)


def test_batched_step_sizes_equal_separate_runs():
    u0 = heat.triangle(31)
    dts = np.array([0.1, 0.4, 0.8])
    batched = heat.solve(u0, dt=dts, dx=1.0, steps=40)
    for row, dt in zip(batched, dts):
        np.testing.assert_array_equal(row, heat.solve(u0, dt=dt, dx=1.0, steps=40))


def test_stable_decays_and_unstable_blows_up():
    u0 = heat.triangle(31, dtype=np.float32)
    assert np.abs(heat.solve(u0, dt=0.4, dx=1.0, steps=2000)).max() < 1e-3
    assert np.abs(heat.solve(u0, dt=0.8, dx=1.0, steps=60)).max() > 1e6


def test_snapshots_are_consistent_with_solve():
    u0 = heat.triangle(15)
    snaps = heat.snapshots(u0, dt=0.3, dx=1.0, at=[0, 3, 10])
    np.testing.assert_array_equal(snaps[0], u0)
    np.testing.assert_array_equal(snaps[2], heat.solve(u0, dt=0.3, dx=1.0, steps=10))


def test_mode_amplitudes_invert_a_sum_of_modes():
    u = 2.0 * heat.sine_mode(17, 3) - 0.5 * heat.sine_mode(17, 15)
    c = heat.mode_amplitudes(u)
    expected = np.zeros(15)
    expected[2], expected[14] = 2.0, -0.5
    np.testing.assert_allclose(c, expected, atol=1e-13)


@pytest.mark.parametrize("n_points", [11, 31])
def test_measured_critical_r_is_the_exact_discrete_limit(n_points):
    grid = np.linspace(0.49, 0.53, 201)
    exact = heat.discrete_critical_r(n_points)
    measured = heat.critical_r(n_points, kappa=2.0, r_grid=grid, steps=20000)
    assert exact <= measured <= exact + (grid[1] - grid[0])


def test_blowup_time_grows_with_precision():
    steps = [heat.blowup_step(heat.sine_mode(31, 1, d), r=0.8, steps=1000)
             for d in (np.float16, np.float32, np.float64)]
    assert 0 < steps[0] < steps[1] < steps[2]
    assert heat.blowup_step(heat.sine_mode(31, 1, np.float32), r=0.4, steps=500) == -1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dt": 0.0}, "dt"),
        ({"dt": -0.1}, "dt"),
        ({"dt": np.array([0.1, -1.0])}, "dt"),
        ({"dx": 0.0}, "dx"),
        ({"kappa": -1.0}, "kappa"),
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    args = {"dt": 0.1, "dx": 1.0, "kappa": 1.0, "steps": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        heat.solve(heat.triangle(9), **args)


@pytest.mark.parametrize(
    "u0, message",
    [
        (np.array([0.0, np.nan, 0.0]), "finite"),
        (np.array([0.0, 1.0]), "at least 3"),
        (np.zeros((3, 3)), "1-D"),
        (np.array([1.0, 0.5, 0.0]), "vanish"),
        (np.array([0, 1, 0]), "floating"),
    ],
)
def test_bad_initial_data_raises(u0, message):
    with pytest.raises(ValueError, match=message):
        heat.solve(u0, dt=0.1, dx=1.0, steps=1)


def test_bad_cfl_arguments_raise():
    with pytest.raises(ValueError, match="dx"):
        heat.cfl_limit(0.0)
    with pytest.raises(ValueError, match="kappa"):
        heat.cfl_limit(1.0, kappa=0.0)
