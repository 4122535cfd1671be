"""EigenCFL: the step shortened along the top Ritz vectors of the full Hessian only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdeeos import Twins
from pdeeos.optim import EigenCFL


class Quadratic(nn.Module):
    r""":math:`\tfrac12 \theta^\top H \theta` with :math:`H = Q\,\mathrm{diag}(\lambda)\,Q^\top`."""

    def __init__(self, eigenvalues: list[float], seed: int = 0) -> None:
        super().__init__()
        n = len(eigenvalues)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        self.h = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
        self.theta = nn.Parameter(torch.ones(n, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.theta @ self.h @ self.theta


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, loss=None) -> list[float]:
    loss = loss or (lambda: model())
    out = []
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss()
        value.backward(retain_graph=True)
        optimizer.step(lambda: value)
        out.append(float(value))
    return out


def test_the_stiff_direction_is_capped_and_gradient_descent_would_diverge() -> None:
    """One eigenvalue of 100 at η = 0.05 (2/η = 40): plain gradient descent diverges; EigenCFL steps
    0.9 · 2/100 along that direction, η along the others, and converges."""
    eigenvalues = [100.0] + [1.0] * 19
    plain, capped = Quadratic(eigenvalues), Quadratic(eigenvalues)
    assert _train(plain, torch.optim.SGD(plain.parameters(), lr=0.05), 60)[-1] > 1e10
    opt = EigenCFL(capped.parameters(), 0.05, rank=2, lanczos_steps=8, every=10)
    losses = _train(capped, opt, 300)
    assert losses[-1] < 1e-6 * losses[0]
    assert opt.sharpness()[0] == pytest.approx(100.0, rel=1e-9)
    assert opt.step_sizes() == pytest.approx([0.018, 0.05])
    assert opt.hvps <= 30 * 8


def test_with_no_direction_capped_it_is_gradient_descent_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    _train(a, torch.optim.SGD(a.parameters(), lr=1e-3), 25, lambda: F.cross_entropy(a(x), y))
    _train(b, EigenCFL(b.parameters(), 1e-3, every=5), 25, lambda: F.cross_entropy(b(x), y))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_rotating_top_eigenvector_is_followed() -> None:
    """The stiff direction moves to a new random direction at every refresh: the warm start still finds it."""
    model = Quadratic([1.0] * 40)
    opt = EigenCFL(model.parameters(), 0.05, rank=1, lanczos_steps=16, every=5)
    found = []
    for refresh in range(6):
        stiff = Quadratic([100.0] + [1.0] * 39, seed=refresh + 1).h
        loss = lambda stiff=stiff: 0.5 * model.theta @ stiff @ model.theta    # noqa: E731
        _train(model, opt, 5, loss)
        found.append(opt.sharpness()[0])
    assert found == pytest.approx([100.0] * 6, rel=1e-6)


def test_a_zero_hessian_then_a_stiff_one_does_not_collapse_the_estimate() -> None:
    """A block with no curvature (and no weight decay) sets no cap; when curvature appears, the next
    refresh finds it (the Ritz vector of a zero operator is still a unit vector to warm-start from)."""
    model = Quadratic([1.0] * 10)
    opt = EigenCFL(model.parameters(), 0.05, rank=1, lanczos_steps=10, every=2)
    _train(model, opt, 2, lambda: 0.0 * model.theta.sum() + 0.0 * (model.theta ** 2).sum())
    assert opt.sharpness() == [0.0] and opt.step_sizes() == [0.05]
    _train(model, opt, 2, lambda: 0.5 * model.theta @ Quadratic([100.0] + [1.0] * 9).h @ model.theta)
    assert opt.sharpness()[0] == pytest.approx(100.0, rel=1e-9)


def test_k_resume_twins_and_bad_settings() -> None:
    eigenvalues = [100.0] + [1.0] * 9
    final = {}
    for k in (1, 2, 3):
        model = Quadratic(eigenvalues)
        _train(model, EigenCFL(model.parameters(), 0.05, k=k, rank=1, lanczos_steps=6, every=3), 20)
        final[k] = model.theta.detach().clone()
    assert torch.equal(final[1], final[2]) and not torch.equal(final[1], final[3])
    model = Quadratic(eigenvalues)
    opt = EigenCFL(model.parameters(), 0.05, k=3, rank=1, lanczos_steps=6, every=3)
    _train(model, opt, 7)
    resumed = Quadratic(eigenvalues)
    resumed.load_state_dict(copy.deepcopy(model.state_dict()))
    again = EigenCFL(resumed.parameters(), 0.05, k=3, rank=1, lanczos_steps=6, every=3)
    again.load_state_dict(copy.deepcopy(opt.state_dict()))
    _train(resumed, again, 13)
    assert torch.equal(resumed.theta, final[3])
    twins = Twins(Quadratic(eigenvalues), lambda p: EigenCFL(p, 0.05, rank=1, lanczos_steps=6, every=3), ks=(1, 3))
    for _ in range(12):
        twins.step(lambda m: m())
    assert twins.history["rel_l1"][-1, 1] > 0
    with pytest.raises(ValueError, match="other settings"):
        EigenCFL(Quadratic(eigenvalues).parameters(), 0.05, rank=2, lanczos_steps=6, every=3).load_state_dict(
            opt.state_dict())
    for kwargs, message in ((dict(rank=0), "rank must be"), (dict(rank=5, lanczos_steps=4), "at least rank"),
                            (dict(safety=1.5), "safety must be")):
        with pytest.raises(ValueError, match=message):
            EigenCFL(Quadratic(eigenvalues).parameters(), 0.05, **kwargs)
    with pytest.raises(ValueError, match="call step\\(closure\\)"):
        EigenCFL(Quadratic(eigenvalues).parameters(), 0.05).step()
