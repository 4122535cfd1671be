"""Tests of pdeeos.pde.vonneumann: exact bounds against direct linear algebra and against running the schemes."""

import numpy as np
import pytest

from pdeeos.pde import symbolic, vonneumann as V


def checkerboard(n):
    idx = np.arange(n)
    return np.where((idx[:, None] + idx[None, :]) % 2 == 0, -1.0, 1.0)


def explicit_gram(image, w, periodic=False):
    tiled = np.pad(image, ((0, w - 1), (0, w - 1)), mode="wrap") if periodic else image
    m0, m1 = image.shape if periodic else (image.shape[0] - w + 1, image.shape[1] - w + 1)
    patches = np.array([tiled[i:i + w, j:j + w].ravel() for i in range(m0) for j in range(m1)])
    return patches.T @ patches


@pytest.mark.parametrize("periodic", [False, True])
def test_patch_gram_is_patch_matrix_gram(periodic):
    image = np.random.default_rng(0).normal(size=(11, 9))
    np.testing.assert_allclose(V.patch_gram(image, 4, periodic=periodic, chunk=5),
                               explicit_gram(image, 4, periodic), rtol=1e-12, atol=1e-10)


def test_gram_is_linear_part_of_symbolic_gradient():
    """G K = sum_x <K, p_x> p_x is the derivative in K of (K * I) * I, the beta term of Thm 5.2."""
    rng = np.random.default_rng(1)
    image, kernel = rng.normal(size=(10, 12)), rng.normal(size=(3, 3))
    direct = symbolic.correlate(symbolic.correlate(kernel, image), image)
    np.testing.assert_allclose((V.patch_gram(image, 3) @ kernel.ravel()).reshape(3, 3), direct, rtol=1e-12)


def test_unwindowed_bounds_checkerboard():
    amin, amax = V.gd_alpha_bounds(checkerboard(256), 1e-8)
    assert amin == pytest.approx(256**4 / 4) and amin == pytest.approx(1.07e9, rel=0.01)
    assert amax == pytest.approx(2e8)


@pytest.mark.parametrize("w", [2, 5, 8])
def test_checkerboard_closed_form(w):
    n, m = 24, 24 - w + 1
    eig = V.windowed_eigenvalues(checkerboard(n), w)
    assert eig[-1] == pytest.approx(m * m * w * w, rel=1e-12)
    assert np.all(np.abs(eig[:-1]) < 1e-8 * eig[-1])  # rank one
    assert V.windowed_alpha_bounds(checkerboard(n), w, 1e-3)[0] == pytest.approx(m * m * w * w / 4)
    assert V.windowed_eigenvalues(checkerboard(n), w, pooling="mean")[-1] == pytest.approx(w * w)


def test_periodic_full_window_equals_unwindowed():
    image = np.random.default_rng(2).normal(size=(8, 8))
    np.testing.assert_allclose(V.windowed_eigenvalues(image, 8, periodic=True), np.sort(V.power_spectrum(image).ravel()),
                               rtol=1e-10, atol=1e-9)
    assert V.windowed_alpha_bounds(image, 8, 0.01, periodic=True) == pytest.approx(V.gd_alpha_bounds(image, 0.01))


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_measured_bounds_match_exact(momentum):
    image, w = np.random.default_rng(3).normal(size=(12, 12)), 3
    dt = 0.01 if momentum is None else 0.05  # transients die within the run for these steps
    gram = V.patch_gram(image, w)
    eig = np.linalg.eigvalsh(gram)
    exact = (V.windowed_alpha_bounds(image, w, dt) if momentum is None
             else V.nesterov_alpha_bounds(eig, dt, momentum))

    def unstable(alphas):
        return V.growth_factor(gram, alphas, dt=dt, momentum=momentum, steps=1500) > 1

    lower = V.measure_bound(unstable, exact[0] / 3, exact[0] * 3, rounds=3)
    upper = V.measure_bound(unstable, exact[1] / 3, exact[1] * 3, rounds=3)
    assert lower == pytest.approx(exact[0], rel=2e-3)
    assert upper == pytest.approx(exact[1], rel=2e-3)


def test_nesterov_step_size():
    assert V.nesterov_step_size(1e-4, 0.9) == pytest.approx(1e-8 * 1.9 / 2)
    assert V.nesterov_z_max(1e-4, 0.9) == pytest.approx(1.4286e8, rel=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size"):
        V.windowed_alpha_bounds(np.ones((8, 8)), 9, 1e-3)
    with pytest.raises(ValueError, match="dt"):
        V.gd_alpha_bounds(np.ones((8, 8)), 0.0)
    with pytest.raises(ValueError, match="momentum"):
        V.nesterov_z_max(1e-3, 1.0)
    with pytest.raises(ValueError, match="momentum"):
        V.nesterov_z_max(1e-3, -0.1)
    with pytest.raises(ValueError, match="image"):
        V.gd_alpha_bounds(np.ones(8), 1e-3)
