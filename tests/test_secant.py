"""SecantSGD: the secant step size, Malitsky & Mishchenko's adaptive gradient descent, last-bit k, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pdeeos.optim import SecantSGD


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lambdas = torch.tensor([3.0, 0.5, 0.1], dtype=torch.float64)
        self.theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * (self.lambdas * self.theta ** 2).sum()


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def test_the_secant_step_is_the_inverse_of_the_last_steps_curvature() -> None:
    model = Quadratic()
    opt = SecantSGD(model.parameters(), lr=0.5)
    _train(model, opt, 1)
    assert opt.step_size() == 0.5                    # no last step yet: the cap
    before, grad_before = model.theta.detach().clone(), (model.lambdas * model.theta).detach()
    _train(model, opt, 1)
    moved = model.theta.detach() - before
    # the second step's L uses the first step's move: recompute it from the weights before and after it
    first = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    step = before - first
    curvature = float((model.lambdas * step).norm() / step.norm())
    assert opt.step_size() == pytest.approx(min(0.5, 1 / curvature), rel=1e-12)
    assert torch.allclose(moved, -opt.step_size() * grad_before, rtol=1e-12)


def test_adgd_converges_where_the_constant_step_blows_up() -> None:
    """η = 10 is five times the stable step 2/3 of the top eigenvalue: gradient descent at η blows up, the
    adaptive rule (capped at η) converges."""
    constant, adaptive = Quadratic(), Quadratic()
    assert _train(constant, torch.optim.SGD(constant.parameters(), lr=10.0), 50)[-1] > 1e50
    losses = _train(adaptive, SecantSGD(adaptive.parameters(), lr=10.0, rule="adgd"), 400)
    assert losses[-1] < 1e-12 * losses[0]


def test_k_is_a_last_bit_perturbation_and_resume_is_bit_exact() -> None:
    runs = {}
    for k in (1, 2, 3):
        model = Quadratic()
        _train(model, SecantSGD(model.parameters(), lr=0.5, k=k, rule="adgd"), 30)
        runs[k] = model.theta.detach()
    assert torch.equal(runs[1], runs[2]) and not torch.equal(runs[1], runs[3])
    model = Quadratic()
    opt = SecantSGD(model.parameters(), lr=0.5, k=3, rule="adgd")
    _train(model, opt, 10)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = Quadratic()
    resumed.load_state_dict(saved_model)
    again = SecantSGD(resumed.parameters(), lr=0.5, k=3, rule="adgd")
    again.load_state_dict(saved_opt)
    _train(model, opt, 20)
    _train(resumed, again, 20)
    assert torch.equal(model.theta, resumed.theta) and torch.equal(runs[3], model.theta.detach())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        SecantSGD(Quadratic().parameters(), lr=0.1, rule="bb")
    with pytest.raises(ValueError, match="no step size before"):
        SecantSGD(Quadratic().parameters(), lr=0.1).step_size()
