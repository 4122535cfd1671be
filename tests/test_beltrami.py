"""Gradient descent on the Beltrami energy: the discrete operator, its local CFL bound, the batched scheme."""

import numpy as np
import pytest
import torch

from pdeeos.pde import beltrami

EPS, LAM = 1e-2, 5.0


def _field(shape, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("shape", [(40,), (12, 9)])
def test_rhs_is_minus_the_autograd_gradient_of_the_energy(shape):
    u, f = _field(shape, 1).requires_grad_(), _field(shape, 2)
    ndim = len(shape)
    (grad,) = torch.autograd.grad(beltrami.energy(u, f, EPS, LAM, ndim), u)
    torch.testing.assert_close(beltrami.rhs(u.detach(), f, EPS, LAM, ndim), -grad, rtol=1e-12, atol=1e-12)


def test_divergence_is_minus_the_adjoint_of_the_forward_gradient():
    u = _field((7, 11), 3)
    p = [q * (g != 0) for q, g in zip([_field((7, 11), 4), _field((7, 11), 5)],
                                        beltrami.forward_gradient(torch.ones(7, 11).cumsum(0).cumsum(1), 2))]
    lhs = sum((g * q).sum() for g, q in zip(beltrami.forward_gradient(u, 2), p))
    assert float(lhs) == pytest.approx(-float((u * beltrami.divergence(p)).sum()), rel=1e-12)


def test_neumann_boundary_conserves_mass_and_leaves_constants_alone():
    u = _field((10, 13), 6)
    assert float(beltrami.rhs(u, u, EPS, 0.0, 2).sum()) == pytest.approx(0.0, abs=1e-10)
    const = torch.full((10, 13), 0.3, dtype=torch.float64)
    torch.testing.assert_close(beltrami.rhs(const, const - 0.1, EPS, LAM, 2), torch.full_like(const, -LAM * 0.1))


@pytest.mark.parametrize("ndim", [1, 2])
def test_one_step_multiplies_a_small_zigzag_on_flat_ground_by_the_frozen_coefficient_amplifier(ndim):
    n, delta, dt = 16, 1e-9, 3e-3
    zigzag = torch.ones((n,) * ndim, dtype=torch.float64)
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = n
        zigzag = zigzag * (-1.0) ** torch.arange(n).reshape(shape)
    f = torch.full_like(zigzag, 0.5)
    u1 = (f + delta * zigzag) + dt * beltrami.rhs(f + delta * zigzag, f, EPS, LAM, ndim)
    interior = (slice(1, -1),) * ndim
    gain = ((u1 - f) / (delta * zigzag))[interior]
    expected = 1 - dt * (4 * ndim / EPS + LAM)
    torch.testing.assert_close(gain, torch.full_like(gain, expected), rtol=1e-6, atol=0)
    # the strict bound is exactly where that amplifier reaches -1
    assert 1 - beltrami.strict_bound(EPS, LAM, ndim) * (4 * ndim / EPS + LAM) == pytest.approx(-1.0)


def test_local_bound_grows_from_the_strict_bound_to_two_over_lambda():
    ramp = torch.arange(50, dtype=torch.float64)
    flat = beltrami.local_bound(torch.zeros(5, 5), EPS, LAM, 2)
    torch.testing.assert_close(flat, torch.full((5, 5), beltrami.strict_bound(EPS, LAM, 2), dtype=flat.dtype))
    steep = beltrami.local_bound(1e6 * ramp, EPS, LAM, 1)[:-1]
    assert torch.allclose(steep, torch.full_like(steep, beltrami.unstable_bound(LAM)), rtol=1e-6)
    assert torch.all(torch.diff(beltrami.local_bound(ramp * ramp / 1000, EPS, LAM, 1)[:-1]) > 0)
    assert beltrami.unstable_bound(0.0) == float("inf")


def test_batched_sweep_equals_one_run_per_step_size_bit_for_bit():
    _, f = beltrami.piecewise_constant(64)
    dts = [1e-3, 2e-2, 0.3]
    batch = beltrami.simulate(f, dt=dts, eps=EPS, lam=LAM, steps=60, dtype=torch.float64)
    for i, dt in enumerate(dts):
        single = beltrami.simulate(f, dt=dt, eps=EPS, lam=LAM, steps=60, dtype=torch.float64)
        np.testing.assert_array_equal(batch.final[i], single.final[0])
        np.testing.assert_array_equal(batch.energy[i], single.energy[0])


def test_twin_with_k_a_power_of_two_is_bit_identical_and_k3_is_amplified_only_when_restrained():
    _, f = beltrami.piecewise_constant(64)
    dt = 10 * beltrami.strict_bound(EPS, LAM, 1)
    two = beltrami.simulate(f, dt=dt, eps=EPS, lam=LAM, steps=200, twin_k=2, record_every=50)
    assert np.all(two.twin_rel_l1 == 0)
    three = beltrami.simulate(f, dt=[0.5 * dt / 10, dt], eps=EPS, lam=LAM, steps=200, twin_k=3, record_every=50)
    assert three.twin_rel_l1[:, 0].tolist() == [0.0, 0.0]
    stable, restrained = three.twin_rel_l1
    assert 0 < stable.max() < 1e-7
    assert restrained[-1] > 1e3 * restrained[1] > 0


def test_energy_descends_at_the_strict_step_and_regimes_are_told_apart():
    _, f = beltrami.piecewise_constant(96)
    strict = beltrami.strict_bound(EPS, LAM, 1)
    multiples = np.array([0.9, 10.0, 1.5 * beltrami.unstable_bound(LAM) / strict])
    sweep = beltrami.simulate(f, dt=strict * multiples, eps=EPS, lam=LAM, steps=1500, record_every=10)
    assert np.all(np.diff(sweep.energy[0]) <= 1e-4)
    assert np.isfinite(sweep.energy[1]).all() and sweep.oscillation[1, -1] > 1e3 * sweep.oscillation[0, -1]
    regimes = beltrami.classify(sweep.final, sweep.violated)
    assert regimes.tolist() == ["stable", "restrained", "unstable"]
    assert beltrami.regime_boundaries(multiples, regimes) == {
        "last_stable": 0.9, "first_restrained": 10.0, "last_restrained": 10.0, "first_unstable": multiples[2]}


def test_snapshots_and_violation_maps_are_kept_where_asked():
    _, f = beltrami.piecewise_constant(32)
    dt = 20 * beltrami.strict_bound(EPS, LAM, 1)
    sweep = beltrami.simulate(f, dt=dt, eps=EPS, lam=LAM, steps=30, snapshot_at=[30, 0, 7], record_every=3)
    assert sweep.snapshots.shape == sweep.violation_maps.shape == (1, 3, 32)
    assert sweep.snapshot_at.tolist() == [0, 7, 30]
    np.testing.assert_array_equal(sweep.snapshots[0, -1], sweep.final[0])
    bound = beltrami.local_bound(torch.as_tensor(sweep.snapshots[0, 1]), EPS, LAM, 1).numpy()
    np.testing.assert_array_equal(sweep.violation_maps[0, 1], np.float32(dt) > bound)
    assert sweep.iterations.tolist() == list(range(0, 31, 3))


def test_data_are_the_bundled_photograph_and_a_step_signal():
    clean, noisy = beltrami.noisy_camera(32, sigma=0.05, seed=1)
    assert clean.shape == noisy.shape == (32, 32) and 0 <= clean.min() and clean.max() <= 1
    assert np.std(noisy - clean) == pytest.approx(0.05, rel=0.1)
    clean1, noisy1 = beltrami.piecewise_constant(100, sigma=0.0)
    assert sorted(set(clean1.tolist())) == [0.1, 0.2, 0.5, 0.8, 0.9] and np.array_equal(clean1, noisy1)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"lam": -0.1}, "lam"), ({"dt": 0.0}, "dt"),
    ({"dt": [1e-3, -1e-3]}, "dt"), ({"u0": np.zeros(5)}, "shape"), ({"f": np.array([0.0, np.nan, 1.0])}, "f"),
    ({"u0": np.array([0.0, np.inf, 1.0])}, "u0"), ({"f": np.zeros((2, 2, 2))}, "f"), ({"steps": -1}, "steps"),
    ({"twin_k": 0}, "twin_k"), ({"record_every": 0}, "record_every"), ({"snapshot_at": [4]}, "snapshot_at"),
    ({"dtype": torch.float16}, "dtype"),
])
def test_bad_input_raises_value_error_naming_it(kwargs, match):
    args = {"f": np.zeros(3), "dt": 1e-3, "eps": EPS, "lam": LAM, "steps": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        beltrami.simulate(**args)
