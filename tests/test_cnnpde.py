"""The one-layer CNN gradient-descent PDE: gradient, Hessian, scheme and input checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdeeos import cnnpde

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
