"""Tests of pdeeos.pde.eos_networks on tiny synthetic data (no dataset needed)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pdeeos.pde import eos_networks as en


def _tiny_data(n=8, size=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)
    return x, (torch.arange(n) % 2).double()


def test_conv3x3_equals_conv2d_same_padding():
    x, _ = _tiny_data()
    k = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(en.conv3x3(x, k), F.conv2d(x, k.view(1, 1, 3, 3), padding=1))


def test_convchain_depth_and_output_shape():
    x, _ = _tiny_data()
    model = en.ConvChain(3)
    assert len(list(model.parameters())) == 3
    assert model(x).shape == (8,)
    with pytest.raises(ValueError, match="depth"):
        en.ConvChain(0)


def test_train_gd_records_objective_with_weight_decay():
    x, y = _tiny_data()
    model = en.ConvChain(1)
    norm2 = sum((p.detach() ** 2).sum() for p in model.parameters()).item()
    h = en.train_gd(model, x, y, eta=0.1, steps=3, alpha=2.0, sharpness_every=3)
    fresh = en.task_loss(en.ConvChain(1), x, y).item() + norm2
    assert h.loss[0] == pytest.approx(fresh, rel=1e-12)
    np.testing.assert_array_equal(h.sharpness_steps, [0, 3])
    assert np.all(h.sharpness > 2.0)   # weight decay adds alpha to every Hessian eigenvalue


def test_is_stable():
    def hist(loss):
        return en.History(np.array(loss), np.array([]), np.array([]))
    assert en.is_stable(hist([3.0, 2.0, 1.5, 1.2, 1.1, 1.05]))
    assert not en.is_stable(hist([3.0, 2.0, 1.5, 1.6, 1.1, 1.2]))
    assert not en.is_stable(hist([3.0, 2.0, np.inf]))


def test_bisection_with_strong_weight_decay_brackets_2_over_alpha():
    """With alpha far above the data curvature the threshold is just below 2/alpha."""
    x, y = _tiny_data()
    alpha = 50.0
    lo, hi = en.largest_stable_eta(lambda: en.ConvChain(1), x, y, alpha=alpha, lo=0.01, hi=0.05,
                                   steps=60, rtol_eta=0.01)
    assert hi - lo <= 0.01 * hi
    assert 0.9 * 2 / alpha < lo < 2 / alpha <= hi * 1.01


def test_bisection_bad_bracket():
    x, y = _tiny_data()
    with pytest.raises(ValueError, match="hi"):
        en.largest_stable_eta(lambda: en.ConvChain(1), x, y, alpha=50.0, lo=0.01, hi=0.02, steps=40)


def test_ci_run_scans_fig9_step_sizes_and_classes_each_run(tmp_path):
    """The ``ci`` run of ``eos-networks`` (real MNIST 0/1): the Fig. 9 scan holds one objective
    history per depth and step size, classed by ``classify``; far beyond 2/alpha the
    weight-decay modes grow and the run is a blow-up, well below it the run is not."""
    from pdeeos.book.experiments import run_experiment

    run = run_experiment("eos-networks", "ci", device="cpu", root=tmp_path, show_progress=False)
    etas, loss, cls = (run.arrays[k] for k in ("fig9_scan_etas", "fig9_scan_loss", "fig9_scan_class"))
    cfg = run.config
    assert loss.shape == (len(cfg["fig9_depths"]), len(etas), cfg["bisection_steps"] + 1)
    np.testing.assert_array_equal(cls, en.classify(loss))
    blow_up = en.RUN_CLASSES.index("blow-up")
    assert np.all(cls[:, 0] != blow_up) and np.all(cls[:, -1] == blow_up)
    safe = run.summary["fig9_scan_largest_not_blown_up"]
    assert len(safe) == len(cfg["fig9_depths"]) and all(etas[0] <= s < etas[-1] for s in safe)


def test_classify_tells_stable_restrained_and_blow_up_apart():
    stable = [3.0, 2.0, 1.5, 1.2, 1.1, 1.05]
    restrained = [3.0, 2.0, 1.5, 1.6, 1.1, 1.2]
    worse = [3.0, 2.0, 3.5, 3.4, 3.3, 3.2]      # settles, a little above its start: not a blow-up
    grown = [3.0, 9.0, 20.0, 25.0, 30.0, 31.0]  # more than ten times its start
    exploded = [3.0, 9.0, 1e6, np.inf, np.nan, np.nan]
    np.testing.assert_array_equal(en.classify(np.array([stable, restrained, worse, grown, exploded])),
                                  [0, 1, 0, 2, 2])
    with pytest.raises(ValueError, match="at least 3 steps"):
        en.classify(np.ones((2, 2)))
