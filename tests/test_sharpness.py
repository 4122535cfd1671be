"""Tests of pdeeos.sharpness against exact eigenvalues in float64."""

import numpy as np
import pytest
import torch

from pdeeos import sharpness
from pdeeos.optim import PerturbedAdam, adam_edge, adam_preconditioner

pytestmark = pytest.mark.usefixtures("one_thread")


def _quadratic(n: int, seed: int, indefinite: bool):
    """Loss ½ θᵀAθ with a random symmetric A (known spectrum), and its parameter."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = rng.uniform(-3.0 if indefinite else 0.1, 2.0, n)
    a = torch.tensor(q @ np.diag(eig) @ q.T)
    theta = torch.randn(n, dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * theta @ a @ theta), [theta], np.sort(eig)[::-1]


@pytest.mark.parametrize("indefinite", [False, True])
def test_top_eigenvalue_of_quadratic(indefinite):
    loss, params, eig = _quadratic(60, seed=1, indefinite=indefinite)
    assert sharpness.top_eigenvalue(loss, params) == pytest.approx(eig[0], rel=1e-6)


def test_lanczos_top_k_of_indefinite_quadratic():
    loss, params, eig = _quadratic(40, seed=2, indefinite=True)
    result = sharpness.top_eigenvalues(loss, params, k=3, tol=1e-9)
    assert result.converged
    np.testing.assert_allclose(result.values, eig[:3], rtol=1e-6)


@pytest.mark.parametrize("indefinite", [False, True])
def test_bottom_eigenvalue_of_quadratic(indefinite):
    loss, params, eig = _quadratic(60, seed=5, indefinite=indefinite)
    result = sharpness.bottom_eigenvalue(loss, params, tol=1e-9)
    assert result.converged and result.values[0] == pytest.approx(eig[-1], rel=1e-6)
    assert result.history[-1] == result.values[0]


def test_rayleigh_quotient_of_eigenvectors_and_of_zero():
    loss, params, eig = _quadratic(30, seed=6, indefinite=True)
    hessian = sharpness.exact_hessian(loss, params)
    values, vectors = torch.linalg.eigh(hessian)
    for i in (0, 29):
        assert sharpness.rayleigh_quotient(loss, params, 3.0 * vectors[:, i]) == pytest.approx(values[i].item(), rel=1e-9)
    mix = vectors[:, 0] + vectors[:, 29]
    assert sharpness.rayleigh_quotient(loss, params, mix) == pytest.approx((values[0] + values[29]).item() / 2, rel=1e-9)
    assert np.isnan(sharpness.rayleigh_quotient(loss, params, torch.zeros(30, dtype=torch.float64)))


def test_power_iteration_finds_largest_magnitude_not_largest_value():
    loss, params, eig = _quadratic(30, seed=3, indefinite=True)
    assert abs(eig[-1]) > eig[0]   # a negative eigenvalue dominates
    matvec, n = sharpness.hvp_operator(loss, params)
    power = sharpness.power_iteration(matvec, n, tol=1e-10, max_iter=5000)
    assert power.values[0] == pytest.approx(eig[-1], rel=1e-4)
    assert sharpness.top_eigenvalue(loss, params) == pytest.approx(eig[0], rel=1e-6)


def _network_loss(w1, w2, idx=slice(None)):
    """Mean squared error of a 3-5-1 tanh network on fixed random data."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, dtype=torch.float64, generator=g)
    y = torch.randn(20, 1, dtype=torch.float64, generator=g)
    return 0.5 * ((torch.tanh(x[idx] @ w1) @ w2 - y[idx]) ** 2).sum() / len(x)


def _small_network():
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_(),
              torch.randn(5, 1, dtype=torch.float64, generator=g).requires_grad_()]
    return (lambda idx=slice(None): _network_loss(*params, idx)), params


def test_network_sharpness_matches_explicit_hessian():
    loss, params = _small_network()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    full = torch.autograd.functional.hessian(
        lambda t: _network_loss(t[:15].reshape(3, 5), t[15:].reshape(5, 1)), flat)
    top = torch.linalg.eigvalsh(full)[-1].item()
    assert sharpness.top_eigenvalue(loss, params) == pytest.approx(top, rel=1e-6)
    torch.testing.assert_close(sharpness.exact_hessian(loss, params), full)


def test_chunked_hvp_equals_full_batch_hvp():
    loss, params = _small_network()
    chunks = [lambda i=i: loss(slice(i, i + 7)) for i in range(0, 20, 7)]
    v = torch.randn(20, dtype=torch.float64)
    torch.testing.assert_close(sharpness.hvp(chunks, params, v), sharpness.hvp(loss, params, v))


def test_lanczos_needs_fewer_products_than_power_iteration():
    loss, params, eig = _quadratic(200, seed=4, indefinite=False)
    matvec, n = sharpness.hvp_operator(loss, params)
    lz = sharpness.lanczos(matvec, n, tol=1e-8)
    pw = sharpness.power_iteration(matvec, n, tol=1e-8, max_iter=5000)
    assert lz.values[0] == pytest.approx(eig[0], rel=1e-6)
    assert len(lz.history) == lz.matvecs and len(pw.history) == pw.matvecs
    assert lz.products_to_reach(eig[0], 1e-4) < pw.products_to_reach(eig[0], 1e-4)


def test_products_to_reach_counts_until_estimate_stays_close():
    result = sharpness.EigenResult(np.array([1.0]), 4, True, np.array([0.5, 1.0, 0.9, 1.0]))
    assert result.products_to_reach(1.0, 1e-3) == 4
    assert result.products_to_reach(1.0, 0.2) == 2
    with pytest.raises(ValueError, match="rtol"):
        result.products_to_reach(2.0, 1e-3)


@pytest.mark.parametrize("kwargs, match", [({"k": 0}, "k must"), ({"tol": 0.0}, "tol must"),
                                           ({"max_iter": 0}, "max_iter must")])
def test_bad_solver_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sharpness.lanczos(lambda v: v, 5, **kwargs)


def test_params_without_grad_raise():
    with pytest.raises(ValueError, match="params"):
        sharpness.top_eigenvalue(lambda: torch.zeros(()), [torch.zeros(3)])


# ---------------------------------------------------------------------- sharpness of a model, left untouched

def test_top_eigenvalue_takes_any_iterable_of_parameters():
    loss, params = _small_network()
    listed = sharpness.top_eigenvalue(loss, params)
    assert sharpness.top_eigenvalue(loss, iter(params)) == listed
    assert sharpness.top_eigenvalues(loss, (p for p in params)).values[0] == listed
    assert sharpness.exact_hessian(loss, iter(params)).shape == (20, 20)
    model = torch.nn.Linear(3, 2).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    assert np.isfinite(sharpness.top_eigenvalue(lambda: model(x).pow(2).sum(), model.parameters()))


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(8, 3)).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)


def _ce(x: torch.Tensor, y: torch.Tensor):
    return lambda m: torch.nn.functional.cross_entropy(m(x), y)


@pytest.mark.parametrize("eval_mode", [False, True])
def test_of_model_leaves_buffers_modes_and_random_state_as_they_were(eval_mode: bool):
    model = _bn_net().train()
    model[3].eval()                                   # a mixed mode, restored as it was
    before = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    value = sharpness.of_model(model, _ce(*_batch(0)), eval_mode=eval_mode, tol=1e-4)
    assert np.isfinite(value)
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())
    assert int(model[1].num_batches_tracked) == 0
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True]
    assert torch.equal(torch.get_rng_state(), rng)


def test_of_model_in_eval_mode_measures_the_eval_loss():
    model, (x, y) = _bn_net(), _batch(0)
    measured = sharpness.of_model(model, _ce(x, y), eval_mode=True, tol=1e-8)
    params = [p for p in model.parameters()]
    model.eval()
    assert measured == pytest.approx(sharpness.top_eigenvalue(lambda: _ce(x, y)(model), params, tol=1e-8), rel=1e-6)


def test_measuring_one_twin_keeps_the_twins_bit_identical():
    twins = [_bn_net().train(), _bn_net().train()]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in twins]
    for step in range(4):
        x, y = _batch(step)
        for model, opt in zip(twins, optimizers):
            torch.manual_seed(100 + step)             # the same dropout masks for both twins
            opt.zero_grad()
            _ce(x, y)(model).backward()
            opt.step()
        sharpness.of_model(twins[0], _ce(x, y), tol=1e-3, max_iter=20)   # dropout draws and BN updates inside
    a, b = twins[0].state_dict(), twins[1].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert int(a["1.num_batches_tracked"]) == 4


@pytest.mark.parametrize("solver", [sharpness.lanczos, sharpness.power_iteration])
def test_a_non_finite_hessian_product_is_a_clear_error_not_a_linalg_one(solver):
    with pytest.raises(ValueError, match="Hessian-vector product is not finite"):
        solver(lambda v: v * float("nan"), 5)


def test_the_sharpness_of_a_model_that_blew_up_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")        # what a diverged SGD step leaves
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="did the run blow up"):
        sharpness.of_model(model, lambda m: m(x).pow(2).mean())


def test_lanczos_warm_start_magnitude_order_and_ritz_vectors() -> None:
    """From the top eigenvector itself Lanczos stops after one product; ``which="magnitude"`` reports a
    dominant negative eigenvalue first; the Ritz vectors are unit eigenvectors."""
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    eigenvalues = torch.linspace(-1.0, 5.0, 30, dtype=torch.float64)
    eigenvalues[0] = -9.0
    h = q @ torch.diag(eigenvalues) @ q.T
    warm = sharpness.lanczos(lambda v: h @ v, 30, start=q[:, -1] * 3.0, tol=1e-10)
    assert warm.matvecs == 1 and warm.values[0] == pytest.approx(5.0)
    both = sharpness.lanczos(lambda v: h @ v, 30, k=2, which="magnitude", vectors=True, tol=1e-10, max_iter=30)
    assert both.values == pytest.approx([-9.0, 5.0])
    for value, vector in zip(both.values, both.vectors):
        assert float(vector.norm()) == pytest.approx(1.0)
        assert torch.allclose(h @ vector, float(value) * vector, atol=1e-8)
    with pytest.raises(ValueError, match="which must be"):
        sharpness.lanczos(lambda v: h @ v, 30, which="smallest")
    with pytest.raises(ValueError, match="start must be"):
        sharpness.lanczos(lambda v: h @ v, 30, start=torch.zeros(30))


@pytest.mark.parametrize("make", [lambda p: torch.optim.Adam(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2),
                                  lambda p: PerturbedAdam(p, 1e-2, k=3)], ids=["adam", "adamw", "perturbed"])
def test_preconditioned_sharpness_of_adam_is_that_of_its_scaled_hessian(make) -> None:
    """Adam's own edge: λ_max(P^{-1/2} H P^{-1/2}) with P^{-1} from the optimizer's second moments, against
    the matrix computed by hand; the threshold 38/η at β1 = 0.9 (Cohen et al. 2022)."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    h = q @ torch.diag(torch.tensor([50.0, 9.0, 4.0, 1.0, 0.5, 0.1], dtype=torch.float64)) @ q.T
    theta = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
    opt = make([theta])
    with pytest.raises(ValueError, match="has stepped"):
        adam_preconditioner(opt)
    for _ in range(5):
        opt.zero_grad()
        (0.5 * theta @ h @ theta).backward()
        opt.step()
    (inverse,) = adam_preconditioner(opt)
    state = opt.state[theta]
    expected = 1 / ((state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))).sqrt() + 1e-8)
    assert torch.allclose(inverse, expected, rtol=1e-12)
    scaled = torch.diag(inverse.sqrt()) @ h @ torch.diag(inverse.sqrt())
    value = sharpness.preconditioned_top_eigenvalue(lambda: 0.5 * theta @ h @ theta, [theta], [inverse], tol=1e-10)
    assert value == pytest.approx(float(torch.linalg.eigvalsh(scaled)[-1]), rel=1e-8)
    assert adam_edge(1e-2) == pytest.approx(3800.0)
    with pytest.raises(ValueError, match="finite and positive"):
        sharpness.preconditioned_top_eigenvalue(lambda: 0.5 * theta @ h @ theta, [theta], [-inverse])
