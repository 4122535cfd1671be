"""Tests of pdeeos.pde.symbolic: the derived formulas against SymPy, torch autograd and direct numerics."""

import numpy as np
import pytest
import sympy as sp
import torch

from pdeeos.pde import symbolic as S


def test_swish_derivatives_at_zero():
    r1, r2 = S.swish_derivative_expr(1), S.swish_derivative_expr(2)
    assert sp.simplify(r1.subs(S.x, 0)) == sp.Rational(1, 2)
    assert sp.simplify(r2.subs(S.x, 0) - S.beta / 2) == 0
    assert sp.simplify(S.linearised_swish_derivative() - (sp.Rational(1, 2) + S.beta * S.x / 2)) == 0


def test_swish_numeric_matches_torch():
    v = np.linspace(-50, 50, 201)
    t = torch.tensor(v, requires_grad=True)
    out = t * torch.sigmoid(2.0 * t)
    (g,) = torch.autograd.grad(out.sum(), t)
    np.testing.assert_allclose(S.swish(v, 2.0), out.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(S.swish_derivative(v, 2.0), g.numpy(), rtol=1e-10, atol=1e-30)


def test_cross_entropy_identity():
    assert sp.simplify(S.cross_entropy_identity() - (S.yhat - S.y)) == 0


@pytest.mark.parametrize("pooling", S.POOLINGS)
def test_gradient_formula_matches_sympy_on_small_grid(pooling):
    loss, K, I = S.discrete_loss((3, 3), 2, pooling)
    rng = np.random.default_rng(1)
    kv, iv = rng.normal(size=(2, 2)), rng.normal(size=(3, 3))
    args = [S.y, S.alpha, S.beta, *K, *I]
    grad = sp.lambdify(args, [sp.diff(loss, k) for k in K], modules="numpy")
    sym = np.array(grad(1.0, 0.3, 1.5, *kv.ravel(), *iv.ravel())).reshape(2, 2)
    num = S.gradient(kv, iv, y_value=1, alpha_value=0.3, beta_value=1.5, pooling=pooling)
    np.testing.assert_allclose(num, sym, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pooling", S.POOLINGS)
def test_gradient_matches_autograd(seed, pooling):
    rng = np.random.default_rng(seed)
    n, w = rng.integers(8, 20), rng.integers(2, 7)
    image, kernel = rng.normal(size=(n, n + 3)), rng.normal(size=(w, w)) * 0.3
    y, alpha, beta = float(rng.integers(0, 2)), float(rng.uniform(0, 5)), float(rng.uniform(0.2, 5))
    k = torch.tensor(kernel, requires_grad=True)
    pre = torch.nn.functional.conv2d(torch.tensor(image)[None, None], k[None, None])[0, 0]
    act = pre * torch.sigmoid(beta * pre)
    z = act.sum() if pooling == "sum" else act.mean()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y, dtype=torch.float64))
    (g,) = torch.autograd.grad(loss + 0.5 * alpha * (k**2).sum(), k)
    ours = S.gradient(kernel, image, y_value=y, alpha_value=alpha, beta_value=beta, pooling=pooling)
    assert np.linalg.norm(ours - g.numpy()) <= 1e-10 * np.linalg.norm(g.numpy())
    assert S.loss(kernel, image, y_value=y, alpha_value=alpha, beta_value=beta, pooling=pooling) == pytest.approx(
        float((loss + 0.5 * alpha * (k**2).sum()).detach()), rel=1e-12)


def test_amplifier_and_bounds_match_direct_formula():
    lam = np.array([0.0, 3.0, 1e4])
    np.testing.assert_allclose(S.amplifier(lam, 1e-3, 7.0, -0.5, 2.0), 1 - 1e-3 * (7.0 - 0.5 * lam), rtol=1e-14)
    assert S.alpha_min(lam, -0.5, 2.0) == pytest.approx(0.5 * 1e4)
    assert S.alpha_max(lam, 1e-3, -0.5, 2.0) == pytest.approx(2e3)
    assert S.alpha_min(lam, 0.5, 2.0) == pytest.approx(0.0)  # a > 0: the smallest eigenvalue binds
    assert S.alpha_max(lam, 1e-3, 0.5, 2.0) == pytest.approx(2e3 - 0.5 * 1e4)


def test_nesterov_coefficients_and_exact_bound():
    mu_expr, h_expr = S.nesterov_step()
    assert sp.simplify(mu_expr - (2 - S.d * S.dt) / (2 + S.d * S.dt)) == 0
    assert sp.simplify(h_expr - 2 * S.dt**2 / (2 + S.d * S.dt)) == 0
    assert S.nesterov_z_max(1e-4, 0.9) == pytest.approx(4 / (2.8 * 1e-8), rel=1e-14)
    assert sp.limit(S.nesterov_z_max_expr(), S.mu, 1) == sp.Rational(4, 3) / S.dt**2


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_nesterov_bound_matches_companion_matrix_roots(mu):
    h = 1e-8 * (1 + mu) / 2
    zmax = S.nesterov_z_max(1e-4, mu)

    def radius(zv):
        qv = 1 - h * zv
        return np.max(np.abs(np.roots([1, -qv * (1 + mu), qv * mu])))

    assert radius(zmax * 0.999) < 1 < radius(zmax * 1.001)
    assert radius(-1e3) > 1 > radius(1e3)


def test_bad_input():
    with pytest.raises(ValueError, match="pooling"):
        S.gradient(np.ones((2, 2)), np.ones((4, 4)), y_value=1, alpha_value=0, pooling="max")
    with pytest.raises(ValueError, match="larger"):
        S.correlate(np.ones((5, 5)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="2-D"):
        S.correlate(np.ones(5), np.ones((4, 4)))


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("pooling", S.POOLINGS)
def test_multilayer_gradient_matches_autograd(layers, pooling):
    rng = np.random.default_rng(10 + layers)
    image = rng.normal(size=(16, 14))
    kernels = [rng.normal(size=(w, w)) * 0.4 for w in (3, 4, 2)[:layers]]
    y, alpha, beta = 0.0, 0.7, 1.3
    ks = [torch.tensor(k, requires_grad=True) for k in kernels]
    x = torch.tensor(image)[None, None]
    for k in ks:
        pre = torch.nn.functional.conv2d(x, k[None, None])
        x = pre * torch.sigmoid(beta * pre)
    z = x.sum() if pooling == "sum" else x.mean()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y, dtype=torch.float64))
    loss = loss + 0.5 * alpha * sum((k**2).sum() for k in ks)
    auto = torch.autograd.grad(loss, ks)
    ours = S.multilayer_gradients(kernels, image, y_value=y, alpha_value=alpha, beta_value=beta, pooling=pooling)
    for g_ours, g_auto in zip(ours, auto):
        assert np.linalg.norm(g_ours - g_auto.numpy()) <= 1e-10 * np.linalg.norm(g_auto.numpy())
    if layers == 1:
        np.testing.assert_allclose(ours[0], S.gradient(kernels[0], image, y_value=y, alpha_value=alpha,
                                                       beta_value=beta, pooling=pooling), rtol=1e-14)


def test_swish_second_derivative_matches_torch_and_not_paper_eq30():
    v = np.linspace(-8, 8, 33)
    t = torch.tensor(v, requires_grad=True)
    (g,) = torch.autograd.grad((t * torch.sigmoid(1.5 * t)).sum(), t, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), t)
    np.testing.assert_allclose(S.swish_second_derivative(v, 1.5), g2.numpy(), rtol=1e-10, atol=1e-14)
    e = sp.exp(-S.beta * S.x)
    paper = S.beta * e * (S.beta * S.x * (1 - e) + 2 * (1 + e)) / (1 + e) ** 3
    assert float(paper.subs({S.beta: 1, S.x: 1})) == pytest.approx(0.484, abs=1e-3)  # the printed formula
    assert S.swish_second_derivative(1.0, 1.0) == pytest.approx(0.30237, abs=1e-5)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_sigmoid_form_is_the_derived_swish(order):
    """The overflow-free form the CNN chapters evaluate equals the derivation, symbolically and in
    float64 far into both tails."""
    form = S.swish_sigmoid_form(order)
    expr = S.swish_expr() if order == 0 else S.swish_derivative_expr(order)
    back = form.subs(S.sigma, 1 / (1 + sp.exp(-S.beta * S.x)))
    assert sp.simplify((back - expr).rewrite(sp.exp)) == 0
    assert not form.has(sp.exp)
    v = np.linspace(-30.0, 30.0, 601)
    f = S.swish_sigmoid_funcs(order)
    values = f(torch.from_numpy(v), torch.sigmoid(torch.from_numpy(1.3 * v)), 1.3).numpy()
    reference = {0: S.swish, 1: S.swish_derivative, 2: S.swish_second_derivative}[order](v, 1.3)
    np.testing.assert_allclose(values, reference, rtol=1e-9, atol=1e-13)


def test_checkerboard_map_curvature_and_flip_at_two_over_lambda():
    """F'(u) = 1 - dt lambda(u) with lambda = p[s(1-s) z'^2 + (s-y) z''] + alpha, and the fixed point's
    multiplier 1 - dt lambda* passes -1 exactly at dt = 2 / lambda*."""
    sym = S.symbols()
    _, slope, curvature = S.checkerboard_map_exprs()
    s, z1, z2, p, y, alpha, dt = (sym[k] for k in ("sigma", "z1", "z2", "p", "y", "alpha", "dt"))
    assert sp.simplify(curvature - (p * (s * (1 - s) * z1**2 + (s - y) * z2) + alpha)) == 0
    assert sp.simplify(slope - (1 - dt * curvature)) == 0
    lam_star = sp.Symbol("lambda_star", positive=True)
    assert sp.solve(sp.Eq(1 - dt * lam_star, -1), dt) == [2 / lam_star]


def test_checkerboard_map_is_the_projected_gradient_step_of_the_discrete_loss():
    """On a 6x6 checkerboard with a 3x3 kernel (mean pooling), one gradient step of Thm 5.1 moves
    u = <K, P0> by F and the part of K orthogonal to P0 by the factor 1 - alpha dt."""
    board = np.where(np.add.outer(np.arange(6), np.arange(6)) % 2 == 0, -1.0, 1.0)
    p0 = board[:3, :3]
    kernel = np.random.default_rng(3).normal(size=(3, 3))
    dt_value, alpha_value, beta_value, y_value = 0.07, 2.0, 1.3, 0.9
    step = kernel - dt_value * S.gradient(kernel, board, y_value=y_value, alpha_value=alpha_value,
                                          beta_value=beta_value, pooling="mean")
    u0 = float((kernel * p0).sum())
    mapped, _ = S.checkerboard_map(u0, dt_value, alpha_value=alpha_value, beta_value=beta_value,
                                   y_value=y_value, counts=(8, 8), p_value=9.0)
    assert (step * p0).sum() == pytest.approx(float(mapped), rel=1e-12)
    perp = lambda k: k - (k * p0).sum() / 9.0 * p0
    np.testing.assert_allclose(perp(step), (1 - alpha_value * dt_value) * perp(kernel), rtol=1e-12, atol=1e-14)
