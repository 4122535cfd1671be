"""The tangent map of SGD on an nn.Module: exact on quadratics, and the linearisation of a nudged twin."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdeeos import lyapunov, tangent


class Quadratic(nn.Module):
    r""":math:`L(\theta) = \tfrac12\sum_i \lambda_i\theta_i^2`, Hessian :math:`\mathrm{diag}(\lambda)`."""

    def __init__(self, lambdas: list[float]) -> None:
        super().__init__()
        self.lambdas = torch.tensor(lambdas, dtype=torch.float64)
        self.theta = nn.Parameter(torch.ones(len(lambdas), dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * (self.lambdas * self.theta ** 2).sum()


def _radius(lam: float, lr: float, momentum: float, nesterov: bool) -> float:
    """Spectral radius of SGD's linear map along one eigenvalue ``lam`` (state: θ, buffer)."""
    if momentum == 0:
        return abs(1 - lr * lam)
    top = [1 - lr * lam * (1 + momentum), -lr * momentum ** 2] if nesterov else [1 - lr * lam, -lr * momentum]
    return float(max(abs(np.linalg.eigvals(np.array([top, [lam, momentum]])))))


@pytest.mark.parametrize(("momentum", "nesterov", "weight_decay"),
                         [(0.0, False, 0.0), (0.5, False, 0.0), (0.9, True, 0.0), (0.5, False, 0.3)])
def test_on_a_quadratic_the_exponent_is_the_log_spectral_radius(momentum: float, nesterov: bool,
                                                                weight_decay: float) -> None:
    lambdas, lr = [3.0, 0.5, 0.1], 0.8
    model = Quadratic(lambdas)
    stretches = tangent.log_stretches(model, [lambda m: m()] * 400, lr=lr, momentum=momentum,
                                      nesterov=nesterov, weight_decay=weight_decay)
    expected = max(math.log(_radius(lam + weight_decay, lr, momentum, nesterov)) for lam in lambdas)
    assert lyapunov.exponent(stretches, discard=200) == pytest.approx(expected, abs=2e-3)
    assert torch.equal(model.theta, torch.ones(3, dtype=torch.float64))      # the model is not trained


def test_the_stretches_are_the_linearised_growth_of_a_nudged_twin() -> None:
    """Gradient descent on a tanh MLP in float64: a twin nudged by ε along the tangent's start separates by
    the product of the stretches, to first order in ε."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (64,), generator=g)
    loss = lambda m: F.cross_entropy(m(x), y)    # noqa: E731
    lr, steps, eps = 2.0, 12, 1e-7
    stretches = tangent.log_stretches(model, [loss] * steps, lr=lr, seed=3)
    gen = torch.Generator().manual_seed(3)       # the tangent's start, as log_stretches draws it
    start = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in model.parameters()]
    norm = math.sqrt(sum(float((v ** 2).sum()) for v in start))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for p, v in zip(b.parameters(), start):
            p.add_(eps * v / norm)
    for m in (a, b):
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss(m).backward()
            opt.step()
    apart = math.sqrt(sum(float(((p.detach() - q.detach()) ** 2).sum())
                          for p, q in zip(a.parameters(), b.parameters())))
    assert math.log(apart / eps) == pytest.approx(stretches.sum(), abs=1e-4)


def test_a_blown_up_run_has_no_exponent_and_bad_settings_are_refused() -> None:
    model = Quadratic([1.0])
    assert np.isnan(lyapunov.exponent(tangent.log_stretches(model, [lambda m: m() * math.inf] * 3, lr=0.1)))
    for kwargs, message in ((dict(lr=0.0), "lr must be > 0"), (dict(lr=-1.0), "lr must be"),
                            (dict(lr=0.1, nesterov=True), "nesterov needs momentum"),
                            (dict(lr=0.1, momentum=float("nan")), "momentum must be")):
        with pytest.raises(ValueError, match=message):
            tangent.log_stretches(model, [lambda m: m()], **kwargs)
    with pytest.raises(ValueError, match="scalar tensor"):
        tangent.log_stretches(model, [lambda m: 1.0], lr=0.1)


def test_several_vectors_give_the_top_exponents_of_a_quadratic():
    """On L = ½ θᵀAθ the tangent map of gradient descent is I - ηA at every step, so the top three exponents
    are the three largest log|1 - η a_i|, in order."""
    a = torch.tensor([30.0, 5.0, 18.0, 0.5, 1.0], dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()

    def loss(m: nn.Module) -> torch.Tensor:
        return 0.5 * (a * m.weight[0] ** 2).sum()

    lr = 0.1
    stretches = tangent.log_stretches(model, [loss] * 600, lr=lr, vectors=3)
    expected = np.sort(np.log(np.abs(1 - lr * a.numpy())))[::-1][:3]
    assert stretches.shape == (600, 3)
    assert lyapunov.exponent(stretches.T, discard=300) == pytest.approx(expected, abs=1e-9)   # (0.8/0.9)^300: converged
    assert tangent.log_stretches(model, [loss] * 5, lr=lr, vectors=1).shape == (5,)
    with pytest.raises(ValueError, match="vectors must"):
        tangent.log_stretches(model, [loss], lr=lr, vectors=6)
    with pytest.raises(ValueError, match="vectors must"):
        tangent.log_stretches(model, [loss], lr=lr, vectors=0)
