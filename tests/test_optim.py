"""PerturbedSGD / PerturbedAdam: torch semantics at k = 1, exact at k = 2^j, different at odd k."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pdeeos.optim import PerturbedAdam, PerturbedSGD

SGD_SETTINGS = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=True),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=False, dampening=0.1),
]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def _train(opt_fn, steps: int = 20) -> list[torch.Tensor]:
    net = _net()
    opt = opt_fn(net.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("settings", SGD_SETTINGS)
def test_k1_is_bit_identical_to_torch_sgd(settings: dict) -> None:
    ref = _train(lambda p: torch.optim.SGD(p, lr=0.1, **settings))
    assert _equal(_train(lambda p: PerturbedSGD(p, 0.1, k=1, **settings)), ref)


@pytest.mark.parametrize("k", [2, 4, 8, 1024])
def test_power_of_two_k_is_bit_identical_to_k1(k: int) -> None:
    settings = SGD_SETTINGS[1]
    ref = _train(lambda p: PerturbedSGD(p, 0.1, k=1, **settings))
    assert _equal(_train(lambda p: PerturbedSGD(p, 0.1, k=k, **settings)), ref)


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11])
def test_odd_k_differs_in_the_last_bits(k: int) -> None:
    settings = SGD_SETTINGS[1]
    ref = _train(lambda p: PerturbedSGD(p, 0.1, k=1, **settings))
    out = _train(lambda p: PerturbedSGD(p, 0.1, k=k, **settings))
    assert not _equal(out, ref)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(out, ref))


def test_adam_k1_and_powers_of_two_match_torch_and_k3_differs() -> None:
    ref = _train(lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4, foreach=False))
    assert _equal(_train(lambda p: PerturbedAdam(p, 1e-2, k=1, weight_decay=1e-4)), ref)
    for k in (2, 4, 8, 1024):   # powers of two change nothing, as for SGD
        assert _equal(_train(lambda p: PerturbedAdam(p, 1e-2, k=k, weight_decay=1e-4)), ref)
    assert not _equal(_train(lambda p: PerturbedAdam(p, 1e-2, k=3, weight_decay=1e-4)), ref)


@pytest.mark.parametrize("k", [0, -1, 2.0, 1.5, True, "3"])
def test_bad_k_raises(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer"):
        PerturbedSGD(_net().parameters(), 0.1, k=k)
    with pytest.raises(ValueError, match="k must be an integer"):
        PerturbedAdam(_net().parameters(), 0.1, k=k)


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="lr must be"):
        PerturbedSGD(_net().parameters(), -0.1)
    with pytest.raises(ValueError, match="weight_decay must be"):
        PerturbedSGD(_net().parameters(), 0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        PerturbedSGD(_net().parameters(), 0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        PerturbedAdam(_net().parameters(), 0.1, betas=(0.9, 1.0))
