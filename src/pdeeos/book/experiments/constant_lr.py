"""Control for Fig. 3 (left): is the drift restrained, or frozen by the decaying learning rate?

In the Table 1 runs the RelL1 between the k = 1 and k = 3 copies stops growing when the learning
rate is divided by ten; weights that barely move any more would give the same picture. Here the
same networks (ReLU and Swish) train the k = 1 and k = 3 copies at the constant learning rate 0.1
for as many steps as the Table 1 protocol takes in all (large-lr phase plus decays), recording after
every epoch (40 steps on the CIFAR-10 subset) the RelL1 between the copies and how far each copy
moved during the epoch (RelL1 to its own weights one epoch earlier), and at the end the RelL1 between
the k = 1 copies of two seeds: how far apart independent batch orders take the weights. A drift that
levels off below that reference while the weights keep moving is restrained; one that levels off at it
has simply decorrelated the copies (saturated); one that is still growing is neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.perturbed_sgd import (CONFIGS, SeedTask, check_ready, rel_l1_between_seeds, resolve,
                                              steps_per_epoch, train_seed)

ACTIVATIONS = ("relu", "swish")


def _config(scale: str) -> dict[str, Any]:
    base = CONFIGS[scale]
    constant = dict(steps_after=[]) if "steps_at_large_lr" in base else dict(milestones=[])
    return dict(base, **constant, activations=list(ACTIVATIONS), ks=[1, 3], seeds=[0, 1],
                fluctuation_batches=0, last=1)


def run(ctx: RunContext) -> RunOutput:
    """k = 1 and k = 3 copies at a constant learning rate, per activation and seed."""
    train, _, described = check_ready(ctx)
    cfg = resolve(ctx.config, len(train.y))
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = [SeedTask(dict(cfg, activation=act), seed, False, str(ctx.device),
                      ctx.checkpoint_dir / f"{act}-seed{seed}.pt")
             for act in cfg["activations"] for seed in cfg["seeds"]]
    out = ctx.map(train_seed, tasks, units=cfg["epochs"], desc=ctx.experiment)
    shape = (len(cfg["activations"]), len(cfg["seeds"]))

    def grid(key: str) -> np.ndarray:
        stacked = np.stack([h[key] for h in out])
        return stacked.reshape(*shape, *stacked.shape[1:])

    rel = grid("rel_l1")[..., 1]            # activations × seeds × epochs: k = 3 vs k = 1
    movement = grid("movement")[..., 0]     # how far the k = 1 copy moved in each epoch
    acc = grid("test_acc")
    per_epoch = steps_per_epoch(cfg, len(train.y))
    summary: dict[str, Any] = {"data": described, "lr": cfg["lr"], "steps_per_epoch": per_epoch,
                               "total_steps": per_epoch * cfg["epochs"]}
    for i, act in enumerate(cfg["activations"]):
        half = cfg["epochs"] // 2
        summary[act] = {
            "final_rel_l1": rel[i, :, -1].tolist(),
            "rel_l1_at_half": rel[i, :, half - 1].tolist(),
            "final_movement_per_epoch": movement[i, :, -1].tolist(),
            "final_test_acc": acc[i, :, -1, 0].tolist(),
            "rel_l1_between_seeds": rel_l1_between_seeds(
                [h["final_weights"] for h in out[i * shape[1]:(i + 1) * shape[1]]]),
        }
    arrays = {"activations": np.asarray(cfg["activations"]), "seeds": np.asarray(cfg["seeds"]),
              "rel_l1": rel, "movement": movement, "test_acc": acc}
    return RunOutput(arrays=arrays, summary=summary)


EXPERIMENT = Experiment(
    name="perturbed-sgd-constant-lr",
    summary="Fig. 3 left control: k = 1 vs 3 at a constant lr 0.1 (ReLU and Swish), drift and movement",
    chapter="06-perturbed-sgd",
    configs={scale: _config(scale) for scale in ("ci", "book", "gpu")},
    func=run, dtype="float32")
