"""Fig. 3 (right) and Fig. 10: the learning rate below which last-bit errors are attenuated.

Plain perturbed SGD (no momentum, weight decay 5e-4, Swish network) with a fixed learning rate
``lr = 0.1 / n`` for ``n`` epochs, so ``lr × epochs`` is the same for every run; the k = 1 and k = 3
copies train in lockstep and their RelL1 distance is recorded every epoch, with the k = 1 copy's
test accuracy (Fig. 10: is it still learning?). Rounding errors enter at every step, so even a
stable run accumulates a RelL1 of the order of a fraction of a float32 ulp (~1e-8) and its
first-epoch value shrinks with the learning rate; growth relative to that first value therefore
says little. A run *amplifies* the perturbation when its largest RelL1 exceeds ``AMPLIFIED``, an
average difference of 100 float32 ulps (100 × 2^-23) per weight. The threshold is the largest
learning rate below which no tested run amplifies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pdeeos import models
from pdeeos.metrics import largest_safe
from pdeeos.experiments import Experiment, RunContext, RunOutput
from pdeeos.experiments.perturbed_sgd import load_splits, prepare_device
from pdeeos.training import TrainConfig, train_lockstep

AMPLIFIED = 100 * 2.0 ** -23
"""RelL1 above which a run counts as amplifying the perturbation (100 float32 ulps)."""

BASE = dict(dataset="cifar10", dtype="float32", batch_size=128,
            weight_decay=5e-4, lr_times_epochs=0.1, ks=[1, 3])

CONFIGS: dict[str, dict[str, Any]] = {
    "ci": dict(BASE, train_limit=256, test_limit=128, model="resnet8", width=2, ns=[2, 4]),
    "book": dict(BASE, train_limit=2560, test_limit=None, model="resnet8", width=8,
                 ns=[2, 4, 8, 16, 32, 64, 128, 256]),
    "paper": dict(BASE, train_limit=None, test_limit=None, model="resnet56", width=16,
                  ns=[2, 4, 8, 16, 32, 320, 3200, 32000]),
}


def run(ctx: RunContext) -> RunOutput:
    """One lockstep k = 1 / k = 3 pair per n, lr = lr_times_epochs / n for n epochs."""
    cfg = ctx.config
    prepare_device(ctx.device)
    train, test, described = load_splits(cfg, ctx.device)
    ns = cfg["ns"]
    rel = np.full((len(ns), max(ns)), np.nan)
    acc = np.full((len(ns), max(ns)), np.nan)
    for i, n in enumerate(ctx.progress(ns, desc="n")):
        tc = TrainConfig(ks=tuple(cfg["ks"]), optimizer="sgd", lr=cfg["lr_times_epochs"] / n,
                         momentum=0.0, nesterov=False, weight_decay=cfg["weight_decay"],
                         batch_size=cfg["batch_size"], epochs=n, milestones=(), dtype=cfg["dtype"])
        trainer = train_lockstep(
            lambda: models.build(cfg["model"], activation=cfg["activation"], width=cfg["width"],
                                 in_channels=train.x.shape[1]),
            train, test, tc, init_seed=0, device=ctx.device,
            checkpoint=ctx.checkpoint_dir / f"n{n}.pt")
        history = trainer.history.arrays()
        rel[i, :n] = history["rel_l1"][:, 1]
        acc[i, :n] = history["test_acc"][:, 0]
    lrs = cfg["lr_times_epochs"] / np.asarray(ns, dtype=float)
    largest = np.nanmax(rel, axis=1)
    amplified = largest > AMPLIFIED
    summary = {"data": described, "threshold_lr": largest_safe(lrs, amplified),
               "amplified_rel_l1": AMPLIFIED, "lrs": lrs.tolist(), "amplified": amplified.tolist(),
               "first_rel_l1": rel[:, 0].tolist(), "largest_rel_l1": largest.tolist(),
               "final_rel_l1": [float(rel[i, n - 1]) for i, n in enumerate(ns)]}
    return RunOutput(arrays={"ns": np.asarray(ns), "lrs": lrs, "rel_l1": rel, "test_acc": acc},
                     summary=summary)


def measured(summary: dict[str, Any]) -> bool:
    """Whether a stored run brackets the threshold: some tested rates amplify and some do not."""
    return 0 < sum(summary["amplified"]) < len(summary["amplified"])


def outcome(summary: dict[str, Any]) -> str:
    """What a stored run's ``summary`` says of the threshold, in one sentence."""
    lrs = summary["lrs"]
    if measured(summary):
        return f"largest learning rate below every amplifying one: {summary['threshold_lr']:.3g}"
    if any(summary["amplified"]):
        return f"every tested learning rate amplifies, down to {min(lrs):.3g}: the threshold lies below"
    return (f"no tested learning rate ({min(lrs):.3g}–{max(lrs):.3g}) amplifies: the threshold is not "
            f"reached (it is at least {summary['threshold_lr']:.3g})")


def _experiment(name: str, summary: str, activation: str) -> Experiment:
    configs = {scale: dict(cfg, activation=activation) for scale, cfg in CONFIGS.items()}
    return Experiment(name=name, summary=summary, chapter="06-perturbed-sgd", configs=configs,
                      func=run, dtype="float32")


EXPERIMENT = (
    _experiment("lr-threshold", "Fig. 3 right / Fig. 10: RelL1 of k = 1 vs 3 at lr = 0.1/n for n epochs",
                "swish"),
    _experiment("lr-threshold-relu", "the Fig. 3 right protocol with ReLU instead of Swish", "relu"),
)
"""The paper's protocol (Swish) and the same with ReLU, whose kink amplifies in small networks too."""
