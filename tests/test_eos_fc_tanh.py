"""Tests of the Fig. 8 experiment ``eos-fc-tanh`` and the pieces of pdeeos.pde.eos_networks it adds."""

import numpy as np
import pytest
import torch

from pdeeos.pde import eos_networks as en
from pdeeos import sharpness
from pdeeos.book.experiments import eos_fc_tanh, get, run_experiment


def _tiny(n=12, d=5, classes=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % classes


class Stop(Exception):
    """Raised by :func:`_interrupted_at` to cut a run short."""


def _interrupted_at(step):
    def interrupted(steps):
        for t in steps:
            if t == step:
                raise Stop
            yield t
    return interrupted


def test_registered_with_its_scales():
    exp = get("eos-fc-tanh")
    assert set(exp.configs) == {"ci", "book", "paper"}
    for scale in exp.configs:
        cfg = exp.config(scale)
        assert cfg["depths"] == [2, 4] and cfg["width"] == 200 and cfg["eta"] == pytest.approx(2 / 30)


def test_sharpness_of_tanh_mlp_matches_exact_hessian():
    x, y = _tiny()
    model = en.TanhMLP(2, 5, 3, width=4, seed=3)
    params = list(model.parameters())
    exact = torch.linalg.eigvalsh(sharpness.exact_hessian(lambda: en.task_loss(model, x, y), params)).max().item()
    measured = sharpness.top_eigenvalue(en.regularised_loss_fns(model, x, y, 0.0, chunk=5), params,
                                        tol=1e-10, max_iter=200)
    assert measured == pytest.approx(exact, rel=1e-6)


def test_train_gd_checkpoint_resumes_bit_identically(tmp_path):
    x, y = _tiny()
    kwargs = dict(eta=0.5, steps=9, sharpness_every=4)
    full = en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, **kwargs)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Stop):
        en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, checkpoint=ckpt, checkpoint_every=2,
                    progress=_interrupted_at(6), **kwargs)
    assert ckpt.exists()
    resumed = en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.sharpness_steps, [0, 4, 8])
    np.testing.assert_array_equal(resumed.sharpness, full.sharpness)
    with pytest.raises(ValueError, match="checkpoint"):
        en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, checkpoint=ckpt, eta=0.25, steps=9)


def test_loss_spikes():
    loss = np.array([3.0, 2.0, 1.0, 1.05, 1.5, 0.9, 0.8, 1.2, 0.7, 0.5])
    np.testing.assert_array_equal(en.loss_spikes(loss, rel=0.1), [4, 7])
    assert len(en.loss_spikes(np.linspace(2, 1, 10))) == 0
    with pytest.raises(ValueError, match="finite"):
        en.loss_spikes(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="rel"):
        en.loss_spikes(loss, rel=0.0)


def test_summarise_relative_to_2_over_eta():
    h = en.History(np.array([2.0, 1.0, 1.5, 0.5]), np.array([0, 2, 3]), np.array([5.0, 25.0, 15.0]))
    s = eos_fc_tanh.summarise(h, eta=0.1, spike_rel=0.1)   # 2/eta = 20
    assert s["initial_sharpness_over_2_over_eta"] == pytest.approx(0.25)
    assert s["max_sharpness_over_2_over_eta"] == pytest.approx(1.25)
    assert s["first_step_sharpness_at_2_over_eta"] == 2
    assert s["after_crossing_min_over_2_over_eta"] == pytest.approx(0.75)
    assert (s["spikes"], s["spike_steps"], s["loss_rises"], s["final_loss"]) == (1, [2], 1, 0.5)


def test_bad_input_raises():
    x, y = _tiny()
    with pytest.raises(ValueError, match="eta"):
        en.train_gd(en.TanhMLP(1, 5, 3, width=4), x, y, eta=0.0, steps=3)
    with pytest.raises(ValueError, match="non-negative"):
        en.train_gd(en.TanhMLP(1, 5, 3, width=4), x, y, eta=0.1, steps=3, checkpoint_every=-1)
    with pytest.raises(ValueError, match="depth"):
        en.TanhMLP(0, 5, 3)
    with pytest.raises(ValueError, match="scale"):
        get("eos-fc-tanh").config("huge")


def _cifar_or_skip():
    try:
        return en.cifar_subset()
    except FileNotFoundError as err:   # pragma: no cover - depends on the machine
        pytest.skip(f"CIFAR-10 not available: {err}")


def test_load_data_rejects_bad_image_counts():
    _cifar_or_skip()
    with pytest.raises(ValueError, match="images"):
        eos_fc_tanh.load_data(0)
    with pytest.raises(ValueError, match="images"):
        eos_fc_tanh.load_data(10**6)


def test_ci_run_histories(tmp_path):
    _cifar_or_skip()
    torch_threads = torch.get_num_threads()
    try:
        run = run_experiment("eos-fc-tanh", "ci", device="cpu", root=tmp_path, show_progress=False)
    finally:
        torch.set_num_threads(torch_threads)
    cfg, a = run.config, run.arrays
    every = cfg["sharpness_every"]
    for depth in cfg["depths"]:
        loss, steps, sharp = (a[f"d{depth}_loss"], a[f"d{depth}_sharpness_steps"], a[f"d{depth}_sharpness"])
        assert loss.shape == (cfg["steps"] + 1,)
        np.testing.assert_array_equal(steps, np.arange(0, cfg["steps"] + 1, every))
        assert sharp.shape == steps.shape
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(sharp)) and np.all(sharp > 0)
        assert loss[0] == pytest.approx(np.log(10), rel=0.05)   # ten classes, nearly uniform at start
        assert loss[-1] < loss[0]
        s = run.summary[f"d{depth}"]
        assert s["steps_run"] == cfg["steps"]
        assert s["max_sharpness_over_2_over_eta"] == pytest.approx(sharp.max() * cfg["eta"] / 2)
    assert run.summary["2/eta"] == pytest.approx(30.0)


def test_twin_copy_follows_the_k_trick(tmp_path):
    """A twin with k = 2 (exact in binary) stays bit-identical, k = 3 drifts at a large step, and a
    twin run resumes bit-identically from its checkpoint."""
    x, y = _tiny()
    kwargs = dict(eta=2.0, steps=12)
    exact = en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, twin_k=2, **kwargs)
    assert exact.twin_rel_l1.shape == (13,) and not exact.twin_rel_l1.any()
    drift = en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, twin_k=3, **kwargs)
    assert drift.twin_rel_l1[0] == 0 and drift.twin_rel_l1[-1] > 0
    np.testing.assert_array_equal(drift.loss, exact.loss)            # the k = 1 copy is the plain run

    ckpt = tmp_path / "twins.pt"
    with pytest.raises(Stop):
        en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, checkpoint=ckpt, checkpoint_every=4, twin_k=3,
                    progress=_interrupted_at(9), **kwargs)
    resumed = en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, checkpoint=ckpt, checkpoint_every=4, twin_k=3, **kwargs)
    np.testing.assert_array_equal(resumed.twin_rel_l1, drift.twin_rel_l1)
    with pytest.raises(ValueError, match="twin_k"):
        en.train_gd(en.TanhMLP(2, 5, 3, width=6), x, y, twin_k=0, **kwargs)


def test_eos_twins_ci_run_records_twins_and_sharpness(tmp_path):
    """The ``ci`` run of ``eos-twins``: one RelL1 per step and one sharpness per measurement for every
    task; the summary's onsets are read from those arrays."""
    from pdeeos.book.experiments import eos_twins

    run = run_experiment("eos-twins", "ci", device="cpu", root=tmp_path, show_progress=False)
    for key in run.summary["runs"]:
        s, rel = run.summary[key], run.arrays[f"{key}_rel_l1"]
        assert rel.shape == (s["steps"] + 1,) and rel[0] == 0
        assert run.arrays[f"{key}_sharpness"].shape == run.arrays[f"{key}_sharpness_steps"].shape
        assert s["onset_step"] == eos_twins.onset_step(rel)


def test_onset_needs_the_distance_to_stay_up():
    from pdeeos.book.experiments import eos_twins

    rel = np.full(40, 1e-15)
    rel[10] = 1e-8                                   # a one-step spike: not an onset
    assert eos_twins.onset_step(rel) is None
    rel[25:] = 1e-6
    assert eos_twins.onset_step(rel) == 25
