"""App. B (Tables 4–5): the controls that show the perturbation is the last-bit rewrite and nothing else.

One lockstep run trains a copy of the network per k of ``ks`` on identical batches: k = 1 twice (Table
4: repeated trials coincide), and k, 2k, 4k, ... for several odd k (Table 5: multiplying and dividing
by a power of two is exact, so k and 2^m k must give the same trajectory). After the run every pair of
copies is compared bit for bit. The prediction is exact: two copies are bit-identical if and only if
their k have the same odd part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.perturbed_sgd import (PROTOCOL, build_model, load_splits, prepare_device,
                                              train_config)
from pdeeos.training import LockstepTrainer, identical

KS = [1, 1, 2, 4, 8, 3, 6, 12, 5, 10, 7]
"""The paper's Table 5 columns (k = 1 ... 12) that pair up, with k = 1 repeated (Table 4)."""


def odd_part(k: int) -> int:
    """``k`` with every factor 2 removed: the rewrite (kη)(d/k) rounds as (oη)(d/o) for this o."""
    while k % 2 == 0:
        k //= 2
    return k


def run(ctx: RunContext) -> RunOutput:
    """Train the copies and compare every pair bit for bit."""
    cfg = ctx.config
    prepare_device(ctx.device)
    train, test, described = load_splits(cfg, ctx.device)
    torch.manual_seed(0)
    trainer = LockstepTrainer(build_model(cfg, train), train, test, train_config(cfg, 0), ctx.device)
    trainer.train(progress=lambda epochs: ctx.progress(epochs, desc="epochs"))
    ks = cfg["ks"]
    same = np.array([[identical(a, b) for b in trainer.models] for a in trainer.models])
    expected = np.array([[odd_part(a) == odd_part(b) for b in ks] for a in ks])
    history = trainer.history.arrays()
    return RunOutput(
        arrays={"ks": np.asarray(ks), "identical": same, "expected": expected,
                "test_acc": history["test_acc"], "rel_l1": history["rel_l1"]},
        summary={"data": described, "as_predicted": bool((same == expected).all()),
                 "pairs": int(same.size), "identical_pairs": int(same.sum()),
                 "largest_rel_l1_odd_k": float(history["rel_l1"][-1][
                     [odd_part(k) != 1 for k in ks]].max())})


def _config(**size: Any) -> dict[str, Any]:
    return dict(PROTOCOL, dataset="cifar10", model="resnet8", activation="relu",
                ks=KS, seeds=[0], fluctuation_batches=0, milestones=[1], **size)


EXPERIMENT = Experiment(
    name="app-b-controls",
    summary="App. B Tables 4-5: k = 1 twice and k, 2k, 4k, ... bit-identical; different odd parts differ",
    chapter="06-perturbed-sgd",
    configs={"ci": _config(train_limit=256, test_limit=256, width=4, epochs=2),
             "book": _config(train_limit=None, test_limit=None, width=8, epochs=2)},
    func=run, dtype="float32")
