"""PerturbedSGD / PerturbedAdam: torch semantics at k = 1, exact at k = 2^j, different at odd k."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pdeeos.optim import BlockAdam, PerturbedAdam, PerturbedSGD, perturb, reapply_update, warmup_lr

pytestmark = pytest.mark.usefixtures("one_thread")

SGD_SETTINGS = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=True),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=False, dampening=0.1),
]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def _train(opt_fn, steps: int = 20, schedule=None) -> list[torch.Tensor]:
    net = _net()
    opt = opt_fn(net.parameters())
    scheduler = None if schedule is None else schedule(opt)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
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


# ---------------------------------------------------------------------- perturb: any optimizer

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
    "adam-foreach-maximize": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True, maximize=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
}


def _bits(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The bit patterns of float32 tensors (``torch.equal`` would call -0 and +0 equal)."""
    return [p.view(torch.int32) for p in params]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_perturb_with_a_power_of_two_is_the_optimizer_bit_for_bit(name: str) -> None:
    ref = _bits(_train(OPTIMIZERS[name]))
    for k in (1, 2, 4, 1024):
        assert _equal(_bits(_train(lambda p: perturb(OPTIMIZERS[name](p), k))), ref)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_perturb_with_odd_k_changes_last_bits_only(name: str) -> None:
    ref = _train(OPTIMIZERS[name])
    out = _train(lambda p: perturb(OPTIMIZERS[name](p), 3))
    assert not _equal(out, ref)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(out, ref))


def _scheduled(opt_fn, *, perturb_first: bool, k: int | None) -> list[torch.Tensor]:
    """Trained with a StepLR schedule, perturbed by ``k`` (if any) before or after the scheduler is made."""
    def build(params):
        opt = opt_fn(params)
        return perturb(opt, k) if k is not None and perturb_first else opt

    def schedule(opt):
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
        if k is not None and not perturb_first:
            perturb(opt, k)
        return scheduler
    return _train(build, schedule=schedule)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("perturb_first", [True, False])
def test_perturb_with_a_scheduler(name: str, perturb_first: bool) -> None:
    ref = _scheduled(OPTIMIZERS[name], perturb_first=perturb_first, k=None)
    assert _equal(_bits(_scheduled(OPTIMIZERS[name], perturb_first=perturb_first, k=2)), _bits(ref))
    assert not _equal(_scheduled(OPTIMIZERS[name], perturb_first=perturb_first, k=3), ref)
    assert not _equal(ref, _train(OPTIMIZERS[name]))              # the schedule did change the run


def test_reapply_update_recovers_the_update_where_subtracting_rounds() -> None:
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(100_000, generator=gen) * 10.0 ** torch.randint(-6, 3, (100_000,), generator=gen)
    new = old * (1 + 10.0 ** torch.randint(-9, 2, (100_000,), generator=gen) * torch.randn(100_000, generator=gen))
    new[:1000] = -1e-9 * new[:1000]                                  # weights that cross zero
    assert ((old + (new - old)) != new).any()                        # the naive θ_old + Δ is not θ_new
    for k in (1, 2, 8):
        assert torch.equal(reapply_update(old, new, k).view(torch.int32), new.view(torch.int32))
    assert (reapply_update(old, new, 3) != new).any()


def test_perturb_sets_k_in_every_group_and_in_later_groups() -> None:
    net = _net()
    opt = perturb(torch.optim.SGD([{"params": net[0].parameters()}], lr=0.1), 3)
    opt.add_param_group({"params": net[2].parameters()})
    assert [g["k"] for g in opt.param_groups] == [3, 3]
    assert opt.state_dict()["param_groups"][1]["k"] == 3
    assert perturb(opt, 5) is opt and [g["k"] for g in opt.param_groups] == [5, 5]


def test_perturb_of_a_perturbed_sgd_sets_its_own_k() -> None:
    paper = _train(lambda p: PerturbedSGD(p, 0.1, k=3, momentum=0.9))
    assert _equal(_train(lambda p: perturb(PerturbedSGD(p, 0.1, k=1, momentum=0.9), 3)), paper)


@pytest.mark.parametrize("k", [0, -1, 2.0, 1.5, True, "3"])
def test_perturb_refuses_a_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer"):
        perturb(torch.optim.SGD(_net().parameters(), lr=0.1), k)


def test_perturb_refuses_what_is_not_an_optimizer() -> None:
    with pytest.raises(ValueError, match="torch.optim.Optimizer"):
        perturb(_net().parameters(), 3)


def _one_step(opt: torch.optim.Optimizer, net: nn.Module) -> None:
    opt.zero_grad()
    net(torch.ones(4, 8)).sum().backward()
    opt.step()


@pytest.mark.parametrize("make", [
    lambda p: perturb(torch.optim.AdamW(p, lr=1e-2), 3),
    lambda p: PerturbedSGD(p, 0.1, k=3),
    lambda p: PerturbedAdam(p, 1e-2, k=3),
], ids=["perturbed-adamw", "perturbed-sgd", "perturbed-adam"])
@pytest.mark.parametrize("bad", [0, -3, 1.5, False])
def test_a_group_with_a_bad_k_is_refused_before_the_step_changes_anything(make, bad: object) -> None:
    net = _net()
    opt = make(net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    opt.param_groups[0]["k"] = bad
    with pytest.raises(ValueError, match="param group 0: k must be an integer"):
        _one_step(opt, net)
    assert _equal([p.detach() for p in net.parameters()], before)
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("cls, lr", [(PerturbedSGD, 0.1), (PerturbedAdam, 1e-2)])
def test_a_param_group_with_k_zero_is_refused_when_added(cls, lr: float) -> None:
    net = _net()
    with pytest.raises(ValueError, match="k must be an integer"):
        cls([{"params": net[0].parameters(), "k": 0}], lr)
    opt = cls(net[0].parameters(), lr)
    with pytest.raises(ValueError, match="k must be an integer"):
        opt.add_param_group({"params": net[2].parameters(), "k": 0})


def test_block_adam_keeps_one_second_moment_per_tensor_and_steps_by_it():
    """Adam-mini's rule by hand: m per weight, v the running mean of the tensor's mean squared gradient."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    opt = BlockAdam(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    start = [p.detach().clone() for p in model.parameters()]
    m = [torch.zeros_like(p) for p in start]
    v = [0.0 for _ in start]
    theta = [p.clone() for p in start]
    for n in range(1, 6):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.99 * v[i] + 0.01 * float(g.square().mean())
            theta[i] = theta[i] - 1e-2 / (1 - 0.9 ** n) * m[i] / ((v[i] / (1 - 0.99 ** n)) ** 0.5 + 1e-8)
        assert all(opt.state[p]["exp_avg_sq"].shape == () for p in model.parameters())
    for p, expected in zip(model.parameters(), theta):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)


def test_block_adam_k_is_a_last_bit_perturbation_and_resumes_bit_for_bit():
    def run(k: int, steps: int, model=None, state=None):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        x, y = torch.randn(32, 6, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
        if model is not None:
            net.load_state_dict(model)
        opt = BlockAdam(net.parameters(), lr=3e-2, k=k)
        if state is not None:
            opt.load_state_dict(state)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        return net, opt

    whole = {k: torch.cat([p.detach().reshape(-1) for p in run(k, 30)[0].parameters()]) for k in (1, 2, 3)}
    assert torch.equal(whole[1], whole[2]) and not torch.equal(whole[1], whole[3])
    net, opt = run(3, 12)
    resumed, _ = run(3, 18, model=copy.deepcopy(net.state_dict()), state=copy.deepcopy(opt.state_dict()))
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in resumed.parameters()]), whole[3])


def test_warmup_lr_rises_linearly_to_the_base_rate_and_refuses_a_bad_length():
    assert [warmup_lr(0.1, n, 4) for n in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            warmup_lr(0.1, 0, bad)
