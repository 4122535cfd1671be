"""The ``gpu`` scale of every perturbed-SGD experiment, run end to end on the CPU at a tiny size.

``python -m pdeeos run 'perturbed-sgd*' --scale gpu`` is the one command that makes all of them on a
GPU; this test shrinks each ``gpu`` config (images, epochs, copies, seeds) but keeps its network, data
set, optimizer and dtype, so that a GPU session finds every code path already exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdeeos.book import experiments

GPU_EXPERIMENTS = sorted(name for name, exp in experiments.registry().items()
                         if name.startswith("perturbed-sgd") and "gpu" in exp.configs)


def test_every_perturbed_sgd_experiment_has_a_gpu_scale() -> None:
    assert len(GPU_EXPERIMENTS) == 7


@pytest.mark.parametrize("name", GPU_EXPERIMENTS)
def test_gpu_config_runs_at_a_tiny_size(name: str, tmp_path: Path) -> None:
    exp = experiments.get(name)
    cfg = {k: v for k, v in exp.config("gpu").items() if k not in ("steps_at_large_lr", "steps_after")}
    cfg |= {"train_limit": 32, "test_limit": 16, "epochs": 1, "milestones": [],
                                "ks": [1, 3], "seeds": [0, 1], "fluctuation_batches": 1, "last": 1}
    ctx = experiments.RunContext(experiment=name, scale="gpu", config=cfg, device=torch.device("cpu"),
                                 run_dir=tmp_path, show_progress=False)
    out = exp.func(ctx)
    assert out.arrays and out.summary
