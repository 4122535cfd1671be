"""Table 1 and Fig. 3 (left) of the paper: lockstep copies per k, several batch-selection seeds.

For every seed (the batch order and augmentation; the initial weights stay fixed, as in the paper)
one copy of the network per k in {1, 3, 5, 7, 9, 11} trains on identical batches. The run stores
every copy's test accuracy and RelL1 distance to the k = 1 copy after every epoch, and for the first
seed the per-layer distances and the relative gradient fluctuation from batch selection
(footnote 5). Accuracy of a copy = mean test accuracy over the last 10 epochs; standard deviations
use ddof = 0, as in the official code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pdeeos import data, models
from pdeeos.experiments import Experiment, RunContext, RunOutput
from pdeeos.training import DTYPES, Split, TrainConfig, set_deterministic, train_lockstep

KS = (1, 3, 5, 7, 9, 11)
PROTOCOL = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                batch_size=128, gamma=0.1, augment=True, dtype="float32")
"""The paper's training protocol (milestones and epochs are per scale)."""

CONFIGS: dict[str, dict[str, Any]] = {
    "ci": dict(PROTOCOL, dataset="cifar10", train_limit=256, test_limit=256, model="resnet8",
               width=4, activation="relu", ks=[1, 3, 5], seeds=[0, 1], epochs=2, milestones=[1],
               fluctuation_batches=2, last=2),
    "book": dict(PROTOCOL, dataset="cifar10", train_limit=1280, test_limit=None, model="resnet8",
                 width=8, activation="relu", ks=list(KS), seeds=[0, 1, 2], epochs=15,
                 milestones=[3, 6, 9, 12], fluctuation_batches=8, last=3),
    "paper": dict(PROTOCOL, dataset="cifar10", train_limit=None, test_limit=None, model="resnet56",
                  width=16, activation="relu", ks=list(KS), seeds=[0, 1, 2, 3, 4, 5], epochs=200,
                  milestones=[40, 80, 120, 160], fluctuation_batches=8, last=10),
}


def train_config(cfg: dict[str, Any], seed: int) -> TrainConfig:
    """The trainer's config for one batch-selection ``seed``."""
    keys = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "epochs",
            "gamma", "augment", "dtype", "fluctuation_batches")
    return TrainConfig(ks=tuple(cfg["ks"]), milestones=tuple(cfg["milestones"]), batch_seed=seed,
                       **{k: cfg[k] for k in keys})


def prepare(ctx: RunContext) -> tuple[Split, Split, str]:
    """Make training deterministic (one thread on CPU) and return the config's train and test
    splits on the run's device with a line describing them."""
    cfg, device = ctx.config, ctx.device
    set_deterministic()
    if device.type == "cpu":
        torch.set_num_threads(1)
    dtype = DTYPES[cfg["dtype"]]
    train_ds, test_ds = data.load(cfg["dataset"], "train"), data.load(cfg["dataset"], "test")
    train = Split.from_dataset(train_ds, limit=cfg["train_limit"], dtype=dtype, device=device)
    test = Split.from_dataset(test_ds, limit=cfg["test_limit"], dtype=dtype, device=device)
    line = (f"{train_ds.name} ({train_ds.variant}): {len(train.y):,} training and "
            f"{len(test.y):,} test images")
    return train, test, line


def build_model(cfg: dict[str, Any], train: Split) -> torch.nn.Module:
    """The config's network for the images of ``train`` (ResNets take ``width``, VGG the size)."""
    shape = {"width": cfg["width"]} if cfg["model"].startswith("resnet") else {
        "input_size": train.x.shape[-1]}
    return models.build(cfg["model"], activation=cfg["activation"], in_channels=train.x.shape[1],
                        **shape)


def table1(acc: np.ndarray, last: int) -> dict[str, Any]:
    """Table 1 from test accuracies ``acc`` (seeds × epochs × ks): final accuracy per (k, seed) and
    the standard deviations over k (per seed) and over seeds (per k), ddof = 0."""
    final = acc[:, -last:, :].mean(axis=1).T  # ks × seeds
    std_over_k, std_over_seeds = final.std(axis=0), final.std(axis=1)
    return {"final_acc": final, "std_over_k": std_over_k, "std_over_seeds": std_over_seeds,
            "mean_std_over_k": float(std_over_k.mean()),
            "mean_std_over_seeds": float(std_over_seeds.mean()), "mean_acc": float(final.mean())}


def run(ctx: RunContext) -> RunOutput:
    """Train every seed's lockstep copies (resuming from checkpoints) and tabulate."""
    cfg = ctx.config
    train, test, described = prepare(ctx)

    def model_fn() -> torch.nn.Module:
        return build_model(cfg, train)

    histories = []
    for seed in cfg["seeds"]:
        trainer = train_lockstep(model_fn, train, test, train_config(cfg, seed), init_seed=0,
                                 device=ctx.device, checkpoint=ctx.checkpoint_dir / f"seed{seed}.pt",
                                 progress=lambda it, s=seed: ctx.progress(it, desc=f"seed {s}"))
        histories.append(trainer.history.arrays())
    acc = np.stack([h["test_acc"] for h in histories])
    table = table1(acc, cfg["last"])
    fluct = histories[0]["grad_fluctuation"]
    arrays = {
        "ks": np.asarray(cfg["ks"]), "seeds": np.asarray(cfg["seeds"]), "test_acc": acc,
        "train_loss": np.stack([h["train_loss"] for h in histories]),
        "rel_l1": np.stack([h["rel_l1"] for h in histories]),
        "rel_l1_layers": histories[0]["rel_l1_layers"], "grad_fluctuation": fluct,
        "final_acc": table["final_acc"], "std_over_k": table["std_over_k"],
        "std_over_seeds": table["std_over_seeds"],
    }
    summary = {
        "data": described, "model": f"{cfg['model']} ({cfg['activation']}, "
        f"{models.count_parameters(model_fn()):,} parameters)",
        "mean_acc": table["mean_acc"], "mean_std_over_k": table["mean_std_over_k"],
        "mean_std_over_seeds": table["mean_std_over_seeds"],
        "grad_fluctuation_median": float(np.median(fluct)),
        "layers": [n for n, p in model_fn().named_parameters() if p.ndim > 1],
    }
    return RunOutput(arrays=arrays, summary=summary)


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "swish": ("App. C Table 4: Swish activation", dict(activation="swish")),
    "adam": ("App. C: perturbed Adam (lr 1e-3)", dict(optimizer="adam", lr=1e-3)),
    "float64": ("App. C: float64 weights and data", dict(dtype="float64")),
    "vgg16": ("App. C Table 5: VGG16-BN, Swish", dict(model="vgg16_bn", activation="swish")),
    "fashion-mnist": ("App. C Table 5: Fashion-MNIST, Swish",
                      dict(dataset="fashion_mnist", activation="swish")),
}
"""The appendix variants: the same protocol with these config changes."""

REDUCED: dict[str, dict[str, dict[str, Any]]] = {
    "vgg16": {"book": dict(train_limit=512, test_limit=256, epochs=5, milestones=[3, 4], last=2,
                           fluctuation_batches=2)},
}
"""Per-scale reductions of a variant's config where the shared ``book`` config would take far
longer than a quarter of an hour on one CPU thread: VGG16-BN (15M parameters) trains some 25 times
slower per image than the width-8 ResNet-8."""


def _experiment(name: str, summary: str, overrides: dict[str, Any],
                reduced: dict[str, dict[str, Any]] | None = None) -> Experiment:
    reduced = reduced or {}
    configs = {scale: dict(cfg, **overrides, **reduced.get(scale, {}))
               for scale, cfg in CONFIGS.items()}
    return Experiment(name=name, summary=summary, chapter="06-perturbed-sgd", configs=configs,
                      func=run, dtype="float32")


EXPERIMENT = (
    _experiment("perturbed-sgd",
                "Table 1 / Fig. 3 left: lockstep perturbed-SGD copies (k = 1..11) over batch seeds", {}),
    *(_experiment(f"perturbed-sgd-{key}", summary, overrides, REDUCED.get(key))
      for key, (summary, overrides) in VARIANTS.items()),
)
