"""The one-layer CNN gradient-descent PDE: gradient, Hessian, scheme and input checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdeeos import metrics
from pdeeos.pde import cnnpde

torch.set_num_threads(1)


def _random(shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _autograd_loss(kernel, image, y, alpha, beta):
    pre = F.conv2d(image[None, None], kernel[None, None])[0, 0]
    z = (pre * torch.sigmoid(beta * pre)).mean()
    target = torch.tensor(y, dtype=kernel.dtype)
    return F.binary_cross_entropy(torch.sigmoid(z), target) + 0.5 * alpha * kernel.square().sum()


def test_checkerboard_and_official_kernel():
    board = cnnpde.checkerboard(4)
    assert board[0, 0] == -1 and board[0, 1] == 1 and board[1, 1] == -1
    assert board.sum() == 0
    kernel = cnnpde.official_kernel(32)
    np.testing.assert_array_equal(kernel.numpy(), np.random.RandomState(7).randn(32, 32))


@pytest.mark.parametrize("derivative, order", [(cnnpde.swish_derivative, 1), (cnnpde.swish_second_derivative, 2)])
def test_swish_derivatives_match_autograd(derivative, order):
    x = torch.linspace(-8, 8, 101, dtype=torch.float64, requires_grad=True)
    value = cnnpde.swish(x, 1.7)
    for _ in range(order):
        (value,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    torch.testing.assert_close(derivative(x.detach(), 1.7), value.detach(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", cnnpde.METHODS)
@pytest.mark.parametrize("image_kind", ["checkerboard", "random"])
def test_gradient_is_theorem_5_1_and_matches_autograd(method, image_kind):
    if method == "periodic" and image_kind == "random":
        pytest.skip("the periodic method takes only 2-periodic images (tested to refuse others)")
    image = cnnpde.checkerboard(20) if image_kind == "checkerboard" else _random((20, 17), 1)
    kernel = _random((6, 6), 2)
    y, alpha, beta = 0.8, 3.0, 1.3
    loss, grad = cnnpde.loss_and_grad(kernel, image, y=y, alpha=alpha, beta=beta, method=method)
    leaf = kernel.clone().requires_grad_()
    expected = _autograd_loss(leaf, image, y, alpha, beta)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-13)


def test_hessian_matches_autograd_and_sharpness_along_matches_eigvalsh():
    image, kernels = _random((11, 12), 3), 0.5 * _random((3, 4, 4), 4)
    kwargs = {"y": 0.3, "alpha": 0.7, "beta": 1.5}
    exact = torch.func.hessian(lambda k: cnnpde.loss_and_grad(k.reshape(4, 4), image, **kwargs)[0])(
        kernels[0].reshape(-1))
    torch.testing.assert_close(cnnpde.hessian(kernels[0], image, **kwargs), exact, rtol=1e-12, atol=1e-14)
    direct = [cnnpde.sharpness(k, image, **kwargs) for k in kernels]
    np.testing.assert_allclose(cnnpde.sharpness_along(kernels, image, **kwargs), direct, rtol=1e-12)


def test_sharpness_along_uses_the_rank_one_checkerboard_basis_exactly():
    image, kernels = cnnpde.checkerboard(24), 0.3 * _random((2, 8, 8), 5)
    kernels[1] = float("nan")
    along = cnnpde.sharpness_along(kernels, image)
    assert along[0] == pytest.approx(cnnpde.sharpness(kernels[0], image), rel=1e-12)
    assert np.isnan(along[1])


def test_simulate_is_the_forward_euler_loop():
    image, kernel0 = _random((16, 16), 6), _random((5, 5), 7)
    dts, steps = [0.02, 0.2], 7
    run = cnnpde.simulate(image, kernel0, dts, alpha=2.0, steps=steps, record_every=3)
    for j, dt in enumerate(dts):
        kernel, losses = kernel0.clone(), []
        for _ in range(steps):
            loss, grad = cnnpde.loss_and_grad(kernel, image, alpha=2.0)
            losses.append(float(loss))
            kernel = kernel - dt * grad
        np.testing.assert_allclose(run.loss[j], losses, rtol=1e-13)
        np.testing.assert_allclose(run.kernels[j], kernel.numpy(), rtol=1e-12, atol=1e-14)
    assert run.loss.shape == (2, steps) and run.kernels.shape == (2, 5, 5)
    np.testing.assert_array_equal(run.history_steps, [0, 3, 6])
    np.testing.assert_array_equal(run.history[:, 0], np.broadcast_to(kernel0.numpy(), (2, 5, 5)))
    np.testing.assert_allclose(run.regimes.sum(axis=-1), 1.0)


def test_perturbation_factor_k_is_exact_for_powers_of_two_and_batched():
    image, kernel0 = _random((24, 24), 8), _random((8, 8), 12)
    run = cnnpde.simulate(image, kernel0, [0.03, 0.07], k=[1, 2, 4, 3], steps=10)
    assert run.loss.shape == (4, 2, 10) and run.kernels.shape == (4, 2, 8, 8)
    np.testing.assert_array_equal(run.kernels[1], run.kernels[0])
    np.testing.assert_array_equal(run.kernels[2], run.kernels[0])
    assert not np.array_equal(run.kernels[3], run.kernels[0])
    single = cnnpde.simulate(image, kernel0, [0.03, 0.07], k=3, steps=10)
    np.testing.assert_array_equal(single.kernels, run.kernels[3])


def test_fft_and_direct_agree_and_float32_runs():
    image, kernel0 = _random((20, 20), 9), _random((6, 6), 10)
    fft = cnnpde.simulate(image, kernel0, [0.01, 0.05], steps=20)
    direct = cnnpde.simulate(image, kernel0, [0.01, 0.05], steps=20, method="direct")
    single = cnnpde.simulate(image, kernel0, [0.01, 0.05], steps=20, dtype=torch.float32)
    np.testing.assert_allclose(direct.kernels, fft.kernels, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(single.kernels, fft.kernels, rtol=1e-3, atol=1e-4)
    assert not np.array_equal(single.kernels, fft.kernels)


def test_blow_up_carries_non_finite_values_without_raising():
    image, kernel0 = cnnpde.checkerboard(24), _random((8, 8), 11)
    run = cnnpde.simulate(image, kernel0, [0.01, 0.5], alpha=20.0, steps=1200)
    assert np.isfinite(run.kernels[0]).all()
    assert not np.isfinite(run.kernels[1]).all()
    assert not np.isfinite(run.loss[1, -1])


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0.5}, "k must"),
    ({"dts": [0.1, 0.0]}, "dts must"),
    ({"dts": [[0.1]]}, "dts must"),
    ({"kernel0": torch.zeros(9, 9)}, "larger than image"),
    ({"kernel0": torch.zeros(1, 3, 3)}, "kernel must be a 2-D"),
    ({"image": torch.zeros(8)}, "image must be a 2-D"),
    ({"steps": 0}, "steps must"),
    ({"method": "fourier"}, "method must"),
    ({"alpha": -1.0}, "alpha must"),
    ({"y": 2.0}, "y must"),
    ({"dtype": torch.float16}, "dtype must"),
])
def test_bad_input_raises_value_error(kwargs, message):
    args = {"image": torch.zeros(8, 8), "kernel0": torch.zeros(3, 3), "dts": [0.1]} | kwargs
    with pytest.raises(ValueError, match=message):
        cnnpde.simulate(args.pop("image"), args.pop("kernel0"), args.pop("dts"), **args)


# ----------------------------------------------------------------------------- Lyapunov exponents and classes


def test_hessian_vector_product_is_the_exact_hessian_times_v():
    image, kernel, v = _random((13, 11), 20), 0.4 * _random((4, 4), 21), _random((4, 4), 22)
    kwargs = {"y": 0.2, "alpha": 1.5, "beta": 1.2}
    corr = cnnpde._Correlator(image, 4, "fft")
    pre = corr.forward(kernel[None])
    hv = cnnpde._hessian_vector(kernel[None], pre, v[None], corr, **kwargs)[0]
    exact = cnnpde.hessian(kernel, image, **kwargs) @ v.reshape(-1)
    torch.testing.assert_close(hv.reshape(-1), exact, rtol=1e-11, atol=1e-13)


def test_tangent_leaves_the_kernels_bit_identical_and_stretches_like_the_linear_map():
    image, kernel0 = _random((16, 16), 23), _random((5, 5), 24)
    plain = cnnpde.simulate(image, kernel0, [0.01, 0.05], alpha=2.0, steps=30)
    tracked = cnnpde.simulate(image, kernel0, [0.01, 0.05], alpha=2.0, steps=30, tangent_seed=3)
    np.testing.assert_array_equal(tracked.kernels, plain.kernels)
    assert plain.log_stretch.shape == (2, 0) and tracked.log_stretch.shape == (2, 30)
    # first stretch: |(I - dt H(K0)) v0| for the seeded unit vector v0
    v0 = cnnpde._unit_gaussian(kernel0.shape, 3, torch.float64).reshape(-1)
    hess = cnnpde.hessian(kernel0, image, alpha=2.0)
    for j, dt in enumerate([0.01, 0.05]):
        expected = torch.log(torch.linalg.vector_norm(v0 - dt * hess @ v0))
        assert tracked.log_stretch[j, 0] == pytest.approx(float(expected), rel=1e-12)


def test_scalar_orbit_is_the_full_kernel_projected_on_p0():
    """The checkerboard reduction: u = <K, P0> of the full scheme follows the scalar map F to rounding
    over the first iterations, at a stable and at a restrained step size."""
    n, w, steps = 40, 8, 12
    image, kernel0 = cnnpde.checkerboard(n), _random((w, w), 25)
    dts = [0.02, 0.07]
    run = cnnpde.simulate(image, kernel0, dts, steps=steps, record_every=1)
    projected = np.einsum("dnij,ij->dn", run.history, image[:w, :w].numpy())
    orbit, _ = cnnpde.scalar_orbit(float(projected[0, 0]), dts, image_size=n, w=w, steps=steps)
    np.testing.assert_allclose(orbit, projected, rtol=1e-9, atol=1e-9)


def test_tangent_exponent_is_the_larger_of_the_scalar_and_weight_decay_exponents():
    """On the checkerboard the tangent map is F'(u_n) along P0 and 1 - alpha dt elsewhere."""
    n, w, steps = 40, 8, 400
    image, kernel0 = cnnpde.checkerboard(n), _random((w, w), 26)
    dts = [0.02, 0.05, 0.07, 0.09]
    tangent = cnnpde.lyapunov(image, kernel0, dts, steps=steps, discard=steps // 2)
    u0 = float((kernel0 * image[:w, :w]).sum())
    _, slopes = cnnpde.scalar_orbit(u0, dts, image_size=n, w=w, steps=steps)
    from pdeeos import lyapunov
    with np.errstate(divide="ignore"):
        expected = np.maximum(lyapunov.exponent(slopes, discard=steps // 2), np.log(np.abs(1 - 20 * np.array(dts))))
    np.testing.assert_allclose(tangent, expected, atol=0.03)


def test_classify_and_loss_period():
    n = np.arange(400)
    settled = 1.0 + np.exp(-0.01 * n)                                     # still sliding down
    period2 = 1.0 + 0.1 * (-1.0) ** n
    period4 = 1.0 + 0.1 * np.tile([0.0, 1.0, 0.5, 2.0], 100)
    chaotic = 1.0 + 0.1 * np.random.default_rng(0).random(400)
    exploded = np.where(n < 200, 1.0, np.inf)
    grown = np.geomspace(1.0, 1e3, 400)
    marginal = 5.0 + 0.1 * np.random.default_rng(2).random(400)          # bounded, never below its start
    loss = np.stack([settled, period2, period4, chaotic, exploded, grown, marginal])
    loss[:5, 0] = 5.0                                                      # these start higher
    exponent = np.array([-1.0, -0.2, -0.1, 0.4, np.nan, np.nan, 0.03])
    assert [cnnpde.RUN_CLASSES[c] for c in cnnpde.classify(loss, exponent)] == [
        "stable", "periodic", "periodic", "chaotic", "blow-up", "blow-up", "chaotic"]
    np.testing.assert_array_equal(cnnpde.loss_period(loss[:5]), [0, 2, 4, 0, 0])   # sliding: no period yet
    assert cnnpde.loss_period(np.ones((1, 400)))[0] == 1
    with pytest.raises(ValueError, match="exponent must have the shape"):
        cnnpde.classify(loss, exponent[:3])
    with pytest.raises(ValueError, match="needs a finite exponent"):
        cnnpde.classify(loss, np.full(7, np.nan))
    with pytest.raises(ValueError, match="more than window"):
        cnnpde.classify(loss[:, :100], exponent)


def test_twins_and_tangent_agree_in_sign_at_the_official_settings():
    """Two step sizes of the paper's restrained range: 0.045 (period 2: the k = 1 and k = 3 twins merge,
    the exponent is negative) and 0.07 (chaotic: the twins separate, the exponent is positive)."""
    from pdeeos import lyapunov
    image, kernel0 = cnnpde.checkerboard(256), cnnpde.official_kernel(32)
    dts = [0.045, 0.07]
    one = cnnpde.simulate(image, kernel0, dts, steps=400, record_every=1, tangent_seed=0)
    three = cnnpde.simulate(image, kernel0, dts, steps=400, record_every=1, k=3)
    twins = cnnpde.rel_l1_over_iterations(one.history, three.history)
    exponents = lyapunov.exponent(one.log_stretch, discard=200)
    signs = [lyapunov.twin_rate(d).sign for d in twins]
    assert signs == [-1, 1] and exponents[0] < 0 < exponents[1]


def test_stored_fine_grid_twins_agree_in_sign_with_the_tangent_map():
    """The stored ``cnnpde-regimes`` run: at every bounded step size of the fine grid the k = 1 / k = 3
    twins separate exactly where the tangent-map exponent is positive, and the classes follow the exponent."""
    from pdeeos import lyapunov
    from pdeeos.book import experiments, results

    a = experiments.load_run("cnnpde-regimes").arrays
    names = np.array([cnnpde.RUN_CLASSES[c] for c in a["fine_class"]])
    bounded = names != "blow-up"
    signs = np.array([lyapunov.twin_rate(d).sign for d in a["fine_rel_l1_k3"][bounded]])
    decided = signs != 0
    np.testing.assert_array_equal(signs[decided], np.sign(a["fine_exponent"][bounded][decided]))
    assert (a["fine_exponent"][bounded][~decided] < 0).all()      # twins held at rounding: a contracting map
    assert (a["fine_exponent"][names == "chaotic"] > 0).all() and (a["fine_exponent"][names == "periodic"] <= 0).all()
    np.testing.assert_array_equal(cnnpde.classify(a["fine_loss"], a["fine_exponent"]), a["fine_class"])


def test_nudged_twins_contract_where_the_exponent_is_negative():
    """A period-2 step size whose k = 3 twins stay at rounding: a 1e-8 nudge decays, at about the
    tangent-map rate; at a chaotic step size it grows."""
    from pdeeos import lyapunov
    image, kernel0 = cnnpde.checkerboard(256), cnnpde.official_kernel(32)
    dts = [0.0365, 0.07]
    distance = cnnpde.nudge_distance(image, kernel0, dts, steps=200)
    exponents = cnnpde.lyapunov(image, kernel0, dts, steps=200, discard=100)
    shrink, grow = (lyapunov.twin_rate(d) for d in distance)
    assert shrink.sign == -1 and shrink.high < 0 and grow.sign == 1
    assert exponents[0] < 0 < exponents[1]
    with pytest.raises(ValueError, match="delta"):
        cnnpde.nudge_distance(image, kernel0, dts, delta=0.0)


def test_autograd_loss_gives_thm_5_1_gradient_and_the_exact_hessian():
    image, kernel = cnnpde.checkerboard(24), cnnpde.official_kernel(6).clone().requires_grad_()
    loss = cnnpde.loss(kernel, image)
    grad, = torch.autograd.grad(loss, kernel, create_graph=True)
    ref_loss, ref_grad = cnnpde.loss_and_grad(kernel.detach(), image)
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-14, atol=0)
    torch.testing.assert_close(grad.detach(), ref_grad, rtol=1e-12, atol=1e-15)
    v = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hv, = torch.autograd.grad((grad * v).sum(), kernel)
    exact = cnnpde.hessian(kernel.detach(), image) @ v.reshape(-1)
    torch.testing.assert_close(hv.reshape(-1), exact, rtol=1e-10, atol=1e-12)


def test_the_periodic_method_is_the_fft_method_to_rounding_on_the_checkerboard() -> None:
    """On a 2-periodic image the four-value correlations equal the FFT ones to rounding: the same loss, the
    same regimes, the same trajectory while the map does not amplify rounding; any other image is refused."""
    from pdeeos.pde.cnnpde import _Correlator

    image, kernel = cnnpde.checkerboard(64), cnnpde.official_kernel(8, seed=7)
    fft, periodic = _Correlator(image, 8, "fft"), _Correlator(image, 8, "periodic")
    kernels = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = fft.forward(kernels)
    compact = periodic.forward(kernels)
    assert torch.allclose(full[:, :2, :2], compact, rtol=1e-13, atol=1e-13)
    maps = compact ** 2          # a map that is 2-periodic too, given by its four values
    assert torch.allclose(periodic.adjoint(maps), fft.adjoint(full ** 2), rtol=1e-12, atol=1e-12)
    assert cnnpde.loss(kernel, image, method="periodic").item() == pytest.approx(cnnpde.loss(kernel, image).item(),
                                                                                 rel=1e-13)
    runs = {m: cnnpde.simulate(image, kernel, [0.01, 0.03, 0.12], steps=300, method=m, tangent_seed=0)
            for m in ("fft", "periodic")}
    np.testing.assert_allclose(runs["periodic"].loss[:2], runs["fft"].loss[:2], rtol=1e-11)
    np.testing.assert_allclose(runs["periodic"].log_stretch[:2], runs["fft"].log_stretch[:2], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(runs["periodic"].regimes[:2], runs["fft"].regimes[:2])
    assert metrics.blows_up(runs["periodic"].loss)[2] == metrics.blows_up(runs["fft"].loss)[2]
    with pytest.raises(ValueError, match="period 2"):
        cnnpde.simulate(torch.randn(16, 16, dtype=torch.float64), kernel, 0.01, steps=2, method="periodic")


def test_the_dense_grid_runs_at_ci_scale_stores_its_shapes_and_resumes(tmp_path) -> None:
    """``cnnpde-dense`` at ci scale: every array has the shape its config gives, the classes and fates are
    codes, the twins' rate and the tangent exponent over the same window are stored side by side, and a
    second run reads every chunk back from its checkpoint (the same arrays)."""
    from pdeeos.book.experiments import cnnpde_dense, load_run, run_experiment
    from pdeeos import lyapunov

    run = run_experiment("cnnpde-dense", "ci", device="cpu", root=tmp_path, show_progress=False)
    cfg = cnnpde_dense.EXPERIMENT.configs["ci"]
    for name, shape in cnnpde_dense.shapes(cfg).items():
        assert run.arrays[name].shape == shape, name
    a = run.arrays
    assert set(np.unique(a["class"])) <= set(range(len(cnnpde.RUN_CLASSES)))
    assert set(np.unique(a["twin_fate"])) <= set(range(-1, len(lyapunov.FATES)))
    assert a["twin_rate"].shape == a["exponent_twin_window"].shape == a["exponent_late"].shape
    assert sum(run.summary[f"{c}_runs"] for c in cnnpde.RUN_CLASSES) == a["class"].size
    again = run_experiment("cnnpde-dense", "ci", device="cpu", root=tmp_path, show_progress=False)
    assert all(np.array_equal(a[k], again.arrays[k], equal_nan=True) for k in a)
    assert load_run("cnnpde-dense", "ci", root=tmp_path).summary == run.summary
    from pdeeos.book import ledger

    ours, verdict = ledger._dense_grid({"cnnpde-dense": run})
    assert verdict in ledger.VERDICTS and "initial kernels" in ours


def test_the_stretching_of_the_scalar_map_splits_into_negative_curvature_and_beyond_the_edge():
    dts = np.array([0.03, 0.05, 0.09])
    u0 = float((cnnpde.official_kernel(32) * cnnpde.checkerboard(256)[:32, :32]).sum())
    orbit, log_slope = cnnpde.scalar_orbit(u0, dts, steps=1500)
    share = cnnpde.negative_curvature_share(orbit, dts, discard=750)
    lam = cnnpde.scalar_curvature(orbit[:, 750:], dts)
    assert np.isnan(share[0]) and (dts[0] * lam[0] < 2).all() and (lam[0] > 0).all()   # stable: nothing stretches
    assert 0 < share[2] < share[1] < 1                       # both sources; more from negative curvature at 0.05
    stretching = np.log(np.abs(1 - dts[1] * lam[1]))
    assert share[1] == pytest.approx(stretching[lam[1] < 0].sum() / stretching[stretching > 0].sum())
