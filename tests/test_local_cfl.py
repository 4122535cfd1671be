"""LocalCFL: each region of the weights steps inside its own stability bound."""

from __future__ import annotations

import copy
import json

import numpy as np

import pytest
import torch
from torch import nn

from pdeeos import sharpness
from pdeeos.pde import cnnpde
from pdeeos.book import experiments
from pdeeos.book.experiments import local_cfl
from pdeeos.optim import RESIDUAL_RTOL, EigenCFL, LocalCFL, stable_step


def _symmetric(eigenvalues: list[float], seed: int) -> torch.Tensor:
    """A symmetric matrix with these eigenvalues, in a random orthonormal basis drawn from ``seed``."""
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def _spd(n: int, top: float, seed: int) -> torch.Tensor:
    """A symmetric positive definite n × n matrix with eigenvalues from top/10 to top."""
    return _symmetric(torch.linspace(top / 10, top, n, dtype=torch.float64).tolist(), seed)


STIFF, SOFT = _spd(4, 100.0, 0), _spd(3, 10.0, 1)


def _two_blocks(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½xᵀAx + ½yᵀBy + ⟨x, y[0]·1⟩/10: a stiff block, a soft block and a weak coupling."""
    return 0.5 * x @ STIFF @ x + 0.5 * y @ SOFT @ y + 0.1 * x.sum() * y[0]


def _run_two_blocks(make, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.optim.Optimizer]:
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    y = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = make([x, y])
    for _ in range(steps):
        opt.zero_grad()
        _two_blocks(x, y).backward()
        opt.step(lambda: _two_blocks(x, y))
    return x.detach(), y.detach(), opt


def test_stiff_block_is_capped_soft_block_keeps_the_base_rate_and_the_run_converges():
    lr = 0.05   # 0.05 × 100 = 5 > 2: plain gradient descent diverges along the stiff block
    x, _, _ = _run_two_blocks(lambda p: torch.optim.SGD(p, lr=lr), steps=50)
    assert x.norm() > 1e6
    x, y, opt = _run_two_blocks(lambda p: LocalCFL(p, lr, safety=0.9, every=5, power_iterations=3))
    assert float(_two_blocks(x, y)) < 1e-8
    (lam_x,), (lam_y,) = opt.sharpness()
    assert lam_x == pytest.approx(float(torch.linalg.eigvalsh(STIFF)[-1]), rel=1e-6)
    assert lam_y == pytest.approx(float(torch.linalg.eigvalsh(SOFT)[-1]), rel=1e-6)
    assert opt.step_sizes() == [[pytest.approx(0.9 * 2 / lam_x)], [lr]]
    refreshes = 2 * 60   # a pair of refreshes every 5 steps
    # the first refresh starts fresh; a warm start at an exact eigenvector exhausts its Krylov space and is
    # checked from a fresh start, which a block of 4 (3) weights exhausts after at most 4 (3) products
    assert 2 * refreshes <= opt.hvps <= (3 + 4 + 3 + 3) * (refreshes - 1) + 2 * 100


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_stable_step_is_the_edge_of_stability_of_torch_sgd_on_a_quadratic(momentum, nesterov):
    lam = 10.0

    def grows(factor: float) -> bool:
        x = torch.ones(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([x], lr=factor * stable_step(lam, momentum=momentum, nesterov=nesterov),
                              momentum=momentum, nesterov=nesterov)
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * lam * x ** 2).sum().backward()
            opt.step()
        return abs(float(x.detach())) > 1.0

    assert not grows(0.99) and grows(1.01)
    assert stable_step(-1.0) == float("inf")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def _batches(steps: int):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 6, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen))
            for _ in range(steps)]


def _train(net: nn.Module, opt: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step(lambda: nn.functional.cross_entropy(net(x), y))


@pytest.mark.parametrize("regions", ["tensor", "channel", "tiles", "global"])
def test_uncapped_local_cfl_is_torch_sgd_bit_for_bit(regions):
    settings = dict(momentum=0.9, nesterov=True, weight_decay=5e-4)
    batches = _batches(12)
    ref, net = _net(), _net()
    _train(ref, torch.optim.SGD(ref.parameters(), lr=1e-3, **settings), batches)
    opt = LocalCFL(net.parameters(), 1e-3, every=3, regions=regions, **settings)
    _train(net, opt, batches)
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), net.parameters()))
    assert all(rate == 1e-3 for rates in opt.step_sizes() for rate in rates)
    assert [len(r) for r in opt.sharpness()] == {"tensor": [1] * 4, "channel": [3, 1, 3, 1], "tiles": [1, 1, 6, 1],
                                                  "global": [1] * 4}[regions]


def test_global_region_finds_the_sharpness_and_k_perturbs_the_last_bit():
    net, (x, y) = _net(), _batches(1)[0]
    opt = LocalCFL(net.parameters(), 10.0, every=1, regions="global", power_iterations=200)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    reference = copy.deepcopy(net)
    lam = sharpness.top_eigenvalue(lambda: nn.functional.cross_entropy(reference(x), y),
                                   list(reference.parameters()))
    opt.step(lambda: nn.functional.cross_entropy(net(x), y))
    assert lam <= opt.sharpness()[0][0] <= lam * (1 + 2 * RESIDUAL_RTOL)   # the residual errs on the safe side
    batches = _batches(10)
    runs = {}
    for k in (1, 2, 3):
        net = _net()
        _train(net, LocalCFL(net.parameters(), 0.5, every=2, k=k), batches)
        runs[k] = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert torch.equal(runs[1], runs[2]) and not torch.equal(runs[1], runs[3])


def test_resumes_bit_exactly_from_its_state_dict():
    batches = _batches(14)
    settings = dict(every=4, momentum=0.9, nesterov=True, weight_decay=5e-4, regions="channel")
    whole = _net()
    uninterrupted = LocalCFL(whole.parameters(), 0.5, **settings)
    _train(whole, uninterrupted, batches)
    first = _net()
    opt = LocalCFL(first.parameters(), 0.5, **settings)
    _train(first, opt, batches[:7])
    saved = copy.deepcopy((first.state_dict(), opt.state_dict()))
    second = _net()
    second.load_state_dict(saved[0])
    resumed = LocalCFL(second.parameters(), 0.5, **settings)
    resumed.load_state_dict(saved[1])
    _train(second, resumed, batches[7:])
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), second.parameters()))
    assert resumed.steps == 14 and resumed.hvps == uninterrupted.hvps
    assert resumed.step_sizes() == uninterrupted.step_sizes()


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(lr=0.1, safety=1.5), "safety must be in"),
    (dict(lr=0.1, every=0), "every must be an integer >= 1"),
    (dict(lr=0.1, power_iterations=2.0), "power_iterations must be an integer >= 1"),
    (dict(lr=0.1, regions="layer"), "regions must be one of"),
    (dict(lr=0.1, k=0), "k must be an integer >= 1"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalCFL(_net().parameters(), **kwargs)


def test_a_refresh_without_a_closure_is_a_clear_error():
    net, (x, y) = _net(), _batches(1)[0]
    opt = LocalCFL(net.parameters(), 0.1, every=3)
    nn.functional.cross_entropy(net(x), y).backward()
    with pytest.raises(ValueError, match="step 0 is one: call step\\(closure\\)"):
        opt.step()
    opt.step(lambda: nn.functional.cross_entropy(net(x), y))
    with pytest.raises(ValueError, match="step 1 is one"):   # refreshes come in pairs
        opt.step()
    opt.step(lambda: nn.functional.cross_entropy(net(x), y))
    opt.step()   # step 2: no refresh due, no closure needed
    with pytest.raises(ValueError, match="step 3 is one"):
        opt.step()


def test_pde_comparison_is_identical_on_one_and_two_workers_with_tiles_as_regions(tmp_path):
    runs = [experiments.run_experiment("local-cfl-pde", "ci", device="cpu", root=tmp_path / str(n),
                                       show_progress=False, workers=n) for n in (1, 2)]
    one, two = (r.arrays for r in runs)
    assert one.keys() == two.keys()
    for key in one:
        if not key.endswith("process_time_s"):
            assert np.array_equal(one[key], two[key], equal_nan=True), key
    summary = runs[0].summary
    assert summary["regions"] == [f"kernel[{i}:{i + 3}, {j}:{j + 3}]" for i in (0, 3) for j in (0, 3)]
    assert one["local-cfl_lr0.07_step_sizes"].shape == (40, 4) and one["global-cfl_lr0.07_step_sizes"].shape == (40, 1)
    sgd = summary["runs"]["sgd_lr0.07"]
    assert sgd["steps_to_target"] is not None and sgd["hvps_per_step"] == 0
    assert summary["target_loss"] == one["sgd_lr0.03_loss"][-1]
    # 4 tiles, refreshed at steps 0, 1, 10, 11, ...: at least one product each (a tile's block is so near 20 I
    # that one or two products exhaust its Krylov space, which ends even a fresh estimate)
    assert 4 * 8 / 40 <= summary["runs"]["local-cfl_lr0.07"]["hvps_per_step"] < 4 * 8 * 3 / 40
    assert summary["runs"]["eigen-cfl_lr0.07"]["hvps_per_step"] <= 24 * 4 / 40
    assert summary["runs"]["secant_lr0.07"]["hvps_per_step"] == 0
    assert set(summary["runs"]) == {f"{m}_lr0.07" for m in local_cfl.RATE_METHODS} | {"adam_lr0.01", "block-adam_lr0.01",
                                                                                     "sgd_lr0.03"}


def test_effective_sharpness_is_the_top_eigenvalue_of_the_step_scaled_hessian():
    net, (x, y) = _net(), _batches(1)[0]
    params = list(net.parameters())
    loss = lambda: nn.functional.cross_entropy(net(x), y)  # noqa: E731
    hessian = sharpness.exact_hessian(loss, params).double()
    steps = torch.rand(hessian.shape[0], generator=torch.Generator().manual_seed(2)) + 0.1
    lam, lam_eff = local_cfl.sharpness_pair(loss, params, steps.double().sqrt().mul, tol=1e-8, max_iter=200)
    scale = steps.double().sqrt()
    exact = torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1]
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-4)
    assert lam_eff == pytest.approx(float(exact), rel=1e-4)


def test_steps_to_target_counts_only_a_loss_that_stays():
    target = 1.0
    assert local_cfl.steps_to_reach(np.array([3.0, 2.0, 1.0, 1.0]), target, 1e-9) == 2
    assert local_cfl.steps_to_reach(np.array([3.0, 0.9, 2.0, 1.5]), target, 1e-9) is None   # passed through
    assert local_cfl.steps_to_reach(np.array([0.5, 1.0]), target, 1e-9) == 0
    assert local_cfl.steps_to_reach(np.array([2.0, np.nan]), target, 1e-9) is None


def _quadratic_opt(matrix: torch.Tensor, make, steps: int = 400) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    x = torch.ones(matrix.shape[0], dtype=torch.float64, requires_grad=True)
    opt = make([x])
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * x @ matrix @ x).backward()
        opt.step(lambda: 0.5 * x @ matrix @ x)
    return x.detach(), opt


def test_nesterov_needs_the_momentum_bound_and_local_cfl_applies_it():
    lam = 10.0
    matrix = torch.diag(torch.tensor([lam, 1.0], dtype=torch.float64))
    naive = 0.9 * 2 / lam   # a 2/lambda cap: 1.8 > 2(1 + mu)/(1 + 2 mu) = 1.357 for mu = 0.9
    x, _ = _quadratic_opt(matrix, lambda p: torch.optim.SGD(p, lr=naive, momentum=0.9, nesterov=True))
    assert x.norm() > 1e3
    x, opt = _quadratic_opt(matrix, lambda p: LocalCFL(p, 1.0, momentum=0.9, nesterov=True, every=5))
    assert x.norm() < 1e-6
    assert opt.step_sizes()[0][0] == pytest.approx(0.9 * stable_step(lam, momentum=0.9, nesterov=True))


def test_weight_decay_counts_in_the_block_curvature():
    matrix = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    _, opt = _quadratic_opt(matrix, lambda p: LocalCFL(p, 1.0, weight_decay=0.5, every=5, power_iterations=50), steps=5)
    assert opt.sharpness()[0][0] == pytest.approx(4.5, rel=1e-6)


def test_an_indefinite_block_is_capped_by_its_spectral_radius():
    """Eigenvalues +5 and -5: the Rayleigh quotient of an equal mixture is 0, the norm estimate is 5."""
    matrix = torch.diag(torch.tensor([5.0, -5.0], dtype=torch.float64))
    _, opt = _quadratic_opt(matrix, lambda p: LocalCFL(p, 1.0, every=1, power_iterations=1), steps=1)
    assert opt.sharpness()[0][0] == pytest.approx(5.0)
    assert opt.step_sizes()[0][0] == pytest.approx(0.9 * 2 / 5.0)


def test_a_learning_rate_schedule_acts_at_once_and_uncapped_runs_stay_torch_sgd():
    batches = _batches(12)
    ref, net = _net(), _net()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)
    opt = LocalCFL(net.parameters(), 1e-3, momentum=0.9, every=5)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in (ref_opt, opt)]
    for model, optimizer, schedule in ((ref, ref_opt, schedules[0]), (net, opt, schedules[1])):
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step(lambda model=model, x=x, y=y: nn.functional.cross_entropy(model(x), y))
            schedule.step()
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), net.parameters()))
    assert opt.step_sizes()[0][0] == 1e-3 * 0.5 ** 4


@pytest.mark.parametrize("regions,tile", [("channel", 8), ("tiles", 2)])
def test_channel_and_tile_regions_find_their_exact_block_eigenvalues(regions, tile):
    net, (x, y) = _net(), _batches(1)[0]
    for p in list(net.parameters())[1:]:
        p.requires_grad_(False)   # the regions of the kernel only
    kernel = next(net.parameters())   # (3, 1, 3, 3)
    opt = LocalCFL([kernel], 1.0, every=1, regions=regions, tile=tile, power_iterations=1000)
    loss = lambda: nn.functional.cross_entropy(net(x), y)  # noqa: E731
    hessian = sharpness.exact_hessian(loss, [kernel]).double()
    loss().backward()
    opt.step(loss)
    numbers = torch.arange(kernel.numel()).reshape(kernel.shape)
    regions_found = opt._regions_of(kernel)
    assert len(regions_found) == {"channel": 3, "tiles": 4}[regions]
    for (_, index), rho in zip(regions_found, opt.sharpness()[0]):
        idx = numbers[index].reshape(-1)
        exact = float(torch.linalg.eigvalsh(hessian[idx][:, idx]).abs().max())
        assert exact * (1 - 1e-6) <= rho <= exact * (1 + 2 * RESIDUAL_RTOL)


def test_a_state_dict_of_other_settings_is_refused():
    net = _net()
    opt = LocalCFL(net.parameters(), 0.1, every=2)
    _train(net, opt, _batches(2))
    with pytest.raises(ValueError, match="other settings: {'every': 2}"):
        LocalCFL(_net().parameters(), 0.1, every=3).load_state_dict(opt.state_dict())


def test_full_batch_twins_resume_bit_exactly_from_a_checkpoint(tmp_path):
    cfg = experiments.get("local-cfl-pde").config("ci")
    task = local_cfl.CFLTask("pde", "local-cfl", 0.07, cfg, tmp_path / "task.npz")
    make_model, loss_of = local_cfl.problem(task)
    common = dict(steps=12, sharpness_every=5, tick=lambda: None)
    whole = local_cfl.train_twins(make_model, loss_of, "local-cfl", 0.07, cfg, **common)
    ckpt = tmp_path / "twins.pt"
    local_cfl.train_twins(make_model, loss_of, "local-cfl", 0.07, cfg, steps=7, sharpness_every=5,
                          tick=lambda: None, checkpoint=ckpt, checkpoint_every=3)   # stopped after step 6
    resumed = local_cfl.train_twins(make_model, loss_of, "local-cfl", 0.07, cfg, **common, checkpoint=ckpt,
                                    checkpoint_every=3)
    for key in whole:
        if key != "process_time_s":
            assert np.array_equal(whole[key], resumed[key], equal_nan=True), key


@pytest.mark.parametrize("name", ["local-cfl-pde", "local-cfl-tanh"])
def test_stored_full_batch_summaries_follow_from_their_arrays(name):
    """Every number the chapter and the ledger read is recomputed from the stored curves."""
    from pdeeos.book import results

    if not results.stored_scales(name):
        pytest.skip(f"{name} is not stored")
    run = experiments.load_run(name)
    keys = list(run.summary["runs"])
    outs = {key: {field[len(key) + 1:]: run.arrays[field] for field in run.arrays if field.startswith(key + "_")}
            for key in keys}
    target, recomputed = local_cfl.summarise_tasks(outs, run.config)
    assert target == run.summary["target_loss"]
    # a time ratio's last bits depend on the order the workers finished in (the order of its mean's sum)
    times = {key: r.pop("time_vs_sgd") for key, r in recomputed.items()}
    stored = {key: dict(r) for key, r in run.summary["runs"].items()}
    assert times == pytest.approx({key: r.pop("time_vs_sgd") for key, r in stored.items()}, rel=1e-12)
    assert recomputed == stored


def test_tanh_and_resnet_comparisons_run_at_ci_scale_and_the_ledger_reads_them(tmp_path):
    from pdeeos.book import ledger

    tanh = experiments.run_experiment("local-cfl-tanh", "ci", device="cpu", root=tmp_path, show_progress=False)
    resnet = experiments.run_experiment("local-cfl-resnet", "ci", device="cpu", root=tmp_path, show_progress=False)
    lr = tanh.summary["lrs"][0]
    assert (tanh.arrays[f"sgd_lr{lr:.6g}_step_sizes"] == lr).all()
    assert (tanh.arrays[f"local-cfl_lr{lr:.6g}_step_sizes"] <= lr).all()
    assert tanh.arrays[f"local-cfl_lr{lr:.6g}_step_sizes"].shape[1] == len(tanh.summary["regions"]) == 6
    runs = resnet.summary["runs"]
    assert set(runs) == {f"swish_{m}" for m in local_cfl.RESNET_METHODS}
    assert runs["swish_sgd"]["hvps_per_step"] == runs["swish_adam"]["hvps_per_step"] == 0
    assert runs["swish_local-cfl"]["hvps_per_step"] > 0 and runs["swish_global-cfl"]["hvps_per_step"] > 0
    assert runs["swish_sgd"]["time_vs_sgd"] == 1 and runs["swish_sgd"]["time_vs_sgd_range"] == [1, 1]
    low, high = runs["swish_local-cfl"]["time_vs_sgd_range"]
    assert low <= runs["swish_local-cfl"]["time_vs_sgd"] <= high
    ratio = resnet.arrays["swish_local-cfl_step_ratio"]
    assert ratio.shape == (len(resnet.config["seeds"]), len(resnet.summary["regions"]))
    assert (ratio <= 1).all() and runs["swish_local-cfl"]["min_step_ratio"] == ratio.min()
    assert set(runs["swish_local-cfl"]["capped_at_end"]) <= set(resnet.summary["regions"])
    verdicts = {row.claim.item: row.verdict for row in ledger.rows(tmp_path, chapter="08-local-cfl")}
    assert verdicts["Local CFL: PDE"] == "not yet run"
    assert {verdicts["Local CFL: tanh"], verdicts["Local CFL: ResNets"]} <= set(ledger.VERDICTS)


def test_first_refresh_bounds_each_block_by_the_whole_and_sets_the_capped_step():
    cfg = experiments.get("local-cfl-resnet").configs["ci"]
    whole, blocks = (local_cfl.first_refresh(cfg, m, "swish", 0) for m in ("global-cfl", "local-cfl"))
    assert 0 < blocks["sharpness"] <= 1.01 * whole["sharpness"]   # a diagonal block's norm is at most the whole's
    cap = cfg["safety"] * stable_step(whole["sharpness"], momentum=cfg["momentum"], nesterov=True) / cfg["lr"]
    assert whole["step_ratio"] == pytest.approx(min(1.0, cap))
    for found in (whole, blocks):   # the settled vector is an eigenvector: its curvature is ±rho
        assert abs(found["curvature"]) == pytest.approx(found["sharpness"], rel=0.02)
    with pytest.raises(ValueError, match="'local-cfl' or 'global-cfl'"):
        local_cfl.first_refresh(cfg, "sgd", "swish", 0)


def test_sharpness_probe_follows_the_resnet_runs_sgd_trajectory_and_resumes(tmp_path):
    resnet = experiments.run_experiment("local-cfl-resnet", "ci", device="cpu", root=tmp_path, show_progress=False)
    probe = experiments.run_experiment("local-cfl-resnet-sharpness", "ci", device="cpu", root=tmp_path,
                                       show_progress=False)
    # the probed copy is the k = 1 copy of the comparison's SGD run of seed 0, epoch for epoch
    np.testing.assert_array_equal(probe.arrays["swish_test_acc"], resnet.arrays["swish_sgd_test_acc"][0, :, 0])
    np.testing.assert_array_equal(probe.arrays["swish_rel_l1"], resnet.arrays["swish_sgd_rel_l1"][0])
    a, cfg = probe.arrays, probe.config
    lam, per_batch, lowest = a["swish_sharpness"], a["swish_batch_sharpness"], a["swish_min_eigenvalue"]
    n_probes, n_batches = len(local_cfl.probe_epochs(cfg)), -(-cfg["sharpness_images"] // cfg["batch_size"])
    assert lam.shape == lowest.shape == (n_probes,) and per_batch.shape == (n_probes, n_batches)
    assert a["swish_converged"].shape == (n_probes, n_batches + 2)
    assert (lam > 0).all() and (lowest < lam).all()
    twin, random = a["swish_twin_curvature"], a["swish_random_curvature"]
    assert np.isnan(twin[0]) and np.isfinite(twin[1:]).all() and (lowest <= random).all() and (random <= lam).all()
    assert probe.summary["runs"]["swish"]["twin_to_random_curvature"] == pytest.approx(np.median(twin[1:] / random[1:]))
    run = probe.summary["runs"]["swish"]
    edge = probe.summary["edge_lr_times_sharpness"]
    assert edge == pytest.approx(2 * 1.9 / 2.8)   # Nesterov at 0.9
    assert run["max_fraction_of_edge"] == pytest.approx(0.1 * lam.max() / edge)
    largest = max(per_batch.max(), -lowest.min())
    assert run["capped"] == (0.1 * largest / edge > probe.summary["safety"])
    from pdeeos.book import ledger
    row, = (r for r in ledger.rows(tmp_path, chapter="08-local-cfl") if r.claim.item == "Local CFL: ResNets")
    assert row.verdict in set(ledger.VERDICTS) - {"not yet run"} and "Nesterov's edge" in row.ours


class _Stop(Exception):
    pass


def test_sharpness_probe_resumes_bit_for_bit_after_a_stop(tmp_path):
    cfg = experiments.get("local-cfl-resnet-sharpness").configs["ci"]
    whole = local_cfl.sharpness_along(local_cfl.SharpnessTask("swish", cfg, "cpu", tmp_path / "whole.pt"),
                                      lambda: None)
    task = local_cfl.SharpnessTask("swish", cfg, "cpu", tmp_path / "stopped.pt")
    ticks = []

    def stop_after_two() -> None:
        ticks.append(1)
        if len(ticks) == 2:
            raise _Stop   # after the probe of epoch 1

    with pytest.raises(_Stop):
        local_cfl.sharpness_along(task, stop_after_two)
    assert sorted(json.loads(task.checkpoint.with_suffix(".probes.json").read_text())) == ["0", "1"]
    resumed = local_cfl.sharpness_along(task, lambda: None)
    assert resumed.keys() == whole.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_probe_every_must_divide_the_epochs():
    cfg = experiments.get("local-cfl-resnet-sharpness").configs["ci"] | {"probe_every": 3}
    with pytest.raises(ValueError, match="probe_every"):
        local_cfl.probe_epochs(cfg)


def test_pde_comparison_from_other_kernels_starts_from_each_seeds_draw(tmp_path):
    run = experiments.run_experiment("local-cfl-pde-kernels", "ci", device="cpu", root=tmp_path, show_progress=False)
    seeds = run.config["kernel_seeds"]
    assert list(run.summary["by_kernel"]) == [str(s) for s in seeds]
    first_losses = {run.arrays[f"kernel{s}_sgd_lr0.07_loss"][0] for s in seeds}
    assert len(first_losses) == len(seeds)   # a different initial kernel each
    for s in seeds:
        runs = run.summary["by_kernel"][str(s)]["runs"]
        assert set(runs) == {f"{m}_lr0.07" for m in local_cfl.RATE_METHODS} | {"sgd_lr0.03"}
        assert runs["sgd_lr0.07"]["time_vs_sgd"] > 0
    official = local_cfl.Kernel(6).kernel
    assert torch.equal(local_cfl.Kernel(6, 7).kernel, official)
    assert not torch.equal(local_cfl.Kernel(6, 0).kernel, official)


def test_a_block_without_curvature_is_capped_once_it_has_some():
    """A block whose Hessian is exactly 0 (no weight decay) sets no cap, and its estimate keeps a unit vector
    (a power iteration mapped it to 0 and left the block uncapped for good): when the block turns stiff it is
    capped."""
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = LocalCFL([x], 0.05, every=2, power_iterations=3)
    for step in range(8):
        loss = (lambda: 0.0 * x.sum()) if step < 2 else (lambda: 0.5 * x @ STIFF @ x)
        opt.zero_grad()
        loss().backward()
        opt.step(loss)
    ((rho,),) = opt.sharpness()
    assert rho == pytest.approx(float(torch.linalg.eigvalsh(STIFF)[-1]), rel=1e-2)
    assert opt.step_sizes()[0][0] < 0.05


def _quadratic_steps(x: torch.Tensor, opt: LocalCFL, hessian_of, steps: int) -> list[float]:
    """``steps`` updates of :math:`\\tfrac12 x^\\top H_n x`, :math:`H_n` = ``hessian_of(n)``; the estimate after each."""
    found = []
    for n in range(steps):
        loss = lambda h=hessian_of(n): 0.5 * x @ h @ x   # noqa: E731
        opt.zero_grad()
        value = loss()
        value.backward(retain_graph=True)
        opt.step(lambda value=value: value)
        found.append(opt.sharpness()[0][0])
    return found


def test_a_shift_plus_a_small_rank_one_term_is_not_mistaken_for_the_shift():
    """A block :math:`20 I + 4.5\\,uu^\\top` of 4,096 weights (spectral radius 24.5): from a random start the
    power iteration's estimate moves from 20 by less than its stopping rule noticed; Lanczos finds 24.5."""
    n = 4096
    u = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u /= u.norm()
    h = 20.0 * torch.eye(n, dtype=torch.float64) + 4.5 * torch.outer(u, u)
    x = torch.ones(n, dtype=torch.float64, requires_grad=True)
    (rho,) = _quadratic_steps(x, LocalCFL([x], 0.01, every=10), lambda n: h, 1)
    assert 24.5 * (1 - 1e-9) <= rho <= 24.5 * (1 + RESIDUAL_RTOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_an_exhausted_krylov_space_ends_the_estimate(seed):
    """The one-layer PDE's Hessian from a drawn kernel is :math:`20I` plus a small low-rank term, so its Krylov
    space is exhausted after a few products; a fresh estimate must still spend ten, and iterating on past the
    exhaustion normalised the products' rounding noise into Ritz values of about :math:`3 \\times 10^4`
    (against a radius of 20.05). The estimate is the exact Hessian's spectral radius."""
    image = cnnpde.checkerboard(32)
    kernel = local_cfl.Kernel(6, seed).kernel
    loss = lambda: cnnpde.loss(kernel, image, alpha=20.0, beta=1.0)   # noqa: E731
    h = torch.autograd.functional.hessian(lambda k: cnnpde.loss(k, image, alpha=20.0, beta=1.0), kernel.detach())
    radius = float(torch.linalg.eigvalsh(h.reshape(36, 36)).abs().max())
    opt = LocalCFL([kernel], 0.07, regions="global")
    opt.zero_grad()
    loss().backward()
    opt.step(loss)
    assert radius * (1 - 1e-9) <= opt.sharpness()[0][0] <= radius * (1 + RESIDUAL_RTOL)


def test_a_rotating_top_eigenvector_is_found_at_every_refresh():
    """The stiff direction (eigenvalue 100, the rest 1) turns to a new random direction every 10 steps, between
    refreshes: every refresh's estimate is its spectral radius, not the stale warm start's."""
    x = torch.ones(40, dtype=torch.float64, requires_grad=True)
    opt = LocalCFL([x], 0.01, every=10, power_iterations=2)
    found = _quadratic_steps(x, opt, lambda n: _symmetric([100.0] + [1.0] * 39, seed=n // 10), 60)
    assert min(found) >= 100.0 * (1 - 1e-9)


def test_an_estimate_is_never_below_the_top_of_a_close_pair():
    """The top two eigenvalues 5 % apart (100 and 95 of 200): a few products from a random start leave the
    power iteration's estimate below 100; the bound adds the residual and stays above it."""
    x = torch.ones(200, dtype=torch.float64, requires_grad=True)
    h = _symmetric([100.0, 95.0] + list(np.linspace(1.0, 90.0, 198)), seed=5)
    found = _quadratic_steps(x, LocalCFL([x], 0.01, every=5, power_iterations=2), lambda n: h, 20)
    assert min(found) >= 100.0 * (1 - 1e-9)


def test_a_two_cycle_of_batches_cannot_hide_its_stiff_phase_from_the_refreshes():
    """Batches alternate between curvature 1 (even steps) and 100 (odd steps); at η = 0.05 the stiff batch
    multiplies the error by −4. A refresh every 10 steps always lands on an even step; the pair of refreshes
    sees both batches and keeps the larger curvature, and the run converges."""
    soft, stiff = _symmetric([1.0] * 10, seed=0), _symmetric([100.0] * 10, seed=1)
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    found = _quadratic_steps(x, LocalCFL([x], 0.05, every=10), lambda n: stiff if n % 2 else soft, 200)
    assert found[-1] >= 100.0 * (1 - 1e-9)
    assert float(x.norm()) < 1e-6


def test_eigen_cfl_step_operator_squares_to_its_update():
    """:math:`P^{1/2}P^{1/2}g` is EigenCFL's step :math:`\\theta_n - \\theta_{n+1}` (capped along the stiff
    direction), so the effective sharpness is measured for the update it takes."""
    h = _symmetric([100.0] + [1.0] * 9, seed=2)
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    opt = EigenCFL([x], 0.05, rank=1, lanczos_steps=10, every=10)
    loss = lambda: 0.5 * x @ h @ x   # noqa: E731
    opt.zero_grad()
    loss().backward()
    opt.step(loss)
    before = x.detach().clone()
    opt.zero_grad()
    loss().backward()
    g = x.grad.detach().clone()
    opt.step()
    root = local_cfl.step_operator(opt)
    torch.testing.assert_close(root(root(g)), before - x.detach(), rtol=1e-12, atol=1e-14)
    assert opt.step_sizes()[0] == pytest.approx(0.9 * 2 / 100, rel=1e-9)


def test_a_warm_start_on_a_repeated_eigenvalue_still_sees_a_new_top():
    """The PDE's tiles: a block :math:`20 I + c\\,uu^\\top` whose rank-one term is first negative (:math:`c = -16`,
    spectral radius 20, its Ritz vector an exact eigenvector orthogonal to :math:`u`) and later positive
    (:math:`c = 8`, radius 28). Lanczos from that eigenvector alone spans one dimension and converges at once to
    20, at every refresh; the warm start's seeded random component lets it see the 28."""
    x = torch.ones(64, dtype=torch.float64, requires_grad=True)
    u = torch.randn(64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u /= u.norm()
    h = lambda c: 20.0 * torch.eye(64, dtype=torch.float64) + c * torch.outer(u, u)   # noqa: E731
    found = _quadratic_steps(x, LocalCFL([x], 0.01, every=10), lambda n: h(-16.0 if n < 10 else 8.0), 12)
    assert found[0] == pytest.approx(20.0, rel=RESIDUAL_RTOL)
    assert found[10] >= 28.0 * (1 - 1e-9)
