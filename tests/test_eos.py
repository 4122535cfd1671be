"""Tests of pdeeos.pde.eos, the minimalist Edge-of-Stability example."""

import numpy as np
import pytest
import torch

from pdeeos import sharpness
from pdeeos.pde import eos


def test_tied_network_gradient_is_gradient_of_minimalist_loss():
    """∂/∂x and ∂/∂y of ½(1 − xyzw)² at z = x, w = y equal ∇L, and ∂/∂z = ∂/∂x: the tie persists."""
    x, y, z, w = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.3, 0.4, 1.3, 0.4))
    gx, gy, gz, gw = torch.autograd.grad(eos.network_loss(x, y, z, w), (x, y, z, w))
    np.testing.assert_allclose([gx.item(), gy.item()], eos.gradient(1.3, 0.4), rtol=1e-14)
    np.testing.assert_allclose([gz.item(), gw.item()], [gx.item(), gy.item()], rtol=1e-14)


def test_hessian_and_sharpness_match_autograd_and_lanczos():
    p = torch.tensor([2.1, -0.7], dtype=torch.float64, requires_grad=True)
    loss = lambda: eos.minimalist_loss(p[0], p[1])   # noqa: E731
    h = torch.autograd.functional.hessian(lambda q: eos.minimalist_loss(q[0], q[1]), p.detach())
    np.testing.assert_allclose(eos.hessian(2.1, -0.7), h.numpy(), rtol=1e-12)
    assert eos.sharpness(2.1, -0.7) == pytest.approx(sharpness.top_eigenvalue(loss, [p]), rel=1e-10)


def test_sharpness_on_minimum_manifold_is_2_x2_plus_y2():
    x = np.linspace(0.5, 4.0, 9)
    np.testing.assert_allclose(eos.sharpness(x, -1 / x), 2 * (x**2 + x**-2), rtol=1e-12)


@pytest.mark.parametrize("eta", [0.05, 0.1, 0.2, 0.4])
def test_eos_minimum_has_sharpness_2_over_eta(eta):
    x, y = eos.eos_minimum(eta)
    c, d = eos.cd_coordinates(np.array([x, y]))
    assert d == pytest.approx(1.0, rel=1e-14)
    assert c == pytest.approx((eta**-2 - 4) ** 0.25, rel=1e-12)
    assert eos.sharpness(x, y) == pytest.approx(2 / eta, rel=1e-12)


@pytest.mark.parametrize("eta", [0.0, -0.1, 0.5, 0.7])
def test_eos_minimum_rejects_eta_outside_open_interval(eta):
    with pytest.raises(ValueError, match="eta"):
        eos.eos_minimum(eta)


def test_gd_known_endpoints():
    end = eos.gd(3.0, 0.3, 0.2, 5000)[-1]
    assert end[0] * end[1] == pytest.approx(-1.0, abs=1e-10)
    assert eos.sharpness(*end) == pytest.approx(9.927, abs=1e-3)
    assert eos.sharpness(*eos.gd(3.0, 0.3, 0.1, 5000)[-1]) == pytest.approx(18.25, abs=1e-2)


def test_gd_vectorised_equals_one_by_one_and_keep():
    x0, y0 = np.array([3.0, 3.2, 2.0]), np.array([0.3, 0.2, 0.6])
    together = eos.gd(x0, y0, 0.1, 50)
    assert together.shape == (51, 3, 2)
    for i in range(3):
        np.testing.assert_array_equal(together[:, i], eos.gd(x0[i], y0[i], 0.1, 50))
    np.testing.assert_array_equal(eos.gd(x0, y0, 0.1, 50, keep=4), together[-4:])


def test_outcome_classifies_converged_diverged_and_pending():
    runs = eos.gd(np.array([3.0, 3.0, 3.0]), np.array([0.3, 0.3, 5.0]), 0.2, 3000)
    runs[-1, 1] = [1.5, 0.5]   # a point off the manifold: neither
    np.testing.assert_array_equal(eos.outcome(runs), [1, 0, -1])


@pytest.mark.parametrize("kwargs, match", [({"steps": -1}, "steps"), ({"eta": 0.0}, "eta"),
                                           ({"keep": 0}, "keep")])
def test_gd_bad_arguments(kwargs, match):
    args = {"x0": 1.0, "y0": 1.0, "eta": 0.1, "steps": 5} | kwargs
    with pytest.raises(ValueError, match=match):
        eos.gd(**args)


def test_sharpness_concentration_ends_just_below_two_over_eta():
    out = eos.sharpness_concentration(0.2, n=8, steps=4000)
    assert out["converged"] > 0 and out["converged"] + out["diverged"] <= out["starts"] == 64
    assert out["sharpness of nearest minimum (max)"] > out["2/eta"]
    assert out["2/eta"] - 0.2 < out["final sharpness min"] <= out["final sharpness max"] < out["2/eta"]
