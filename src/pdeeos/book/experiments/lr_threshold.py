"""Fig. 3 (right) and Fig. 10: the learning rate below which last-bit errors are attenuated.

Plain perturbed SGD (no momentum, weight decay 5e-4) with a fixed learning rate ``lr`` for as many
steps as keep ``lr × steps`` at the paper's value, 39.1 (the official code: ``n`` epochs of 391 steps
at ``0.1/n``); the k = 1 and k = 3 copies train in lockstep and their RelL1 distance is recorded every
epoch, for the whole network and for the official code's layer (``layer2.5.conv1`` of ResNet-56; the
first convolution of the middle stage's first block in ResNet-8), with the k = 1 copy's test accuracy
(Fig. 10: is it still learning?). Each rate is one task of :meth:`pdeeos.book.experiments.RunContext.map`.

A run *amplifies* the perturbation when its *persistent* RelL1, the median over the last tenth of its
epochs (:func:`persistent`), exceeds ``AMPLIFIED``, an average difference of 100 float32 ulps (100 × 2^-23)
per weight: the paper's amplified errors are the ones that stay. The largest RelL1 of a run is stored but
not used: one weight passing near zero adds up to :math:`2/N` to the RelL1 of :math:`N` weights for an epoch
(a relative difference of 1 in that weight), 1.0e-4 for the 19,954 weights of the width-8 ResNet-8, which is
above the 100-ulp line by itself. The measured threshold is the largest learning rate below which no
tested run amplifies. The *predicted* threshold comes from the sharpness: the largest
eigenvalue of the minibatch training loss's Hessian (``sharpness_images`` images in batches, weight
decay included) at the end of the smallest rate's run, where training was least constrained by the
Edge of Stability, gives ``2 / lambda_max``; ``lr × lambda_max`` at the end of every run is stored too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pdeeos import models, sharpness
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.perturbed_sgd import load_splits, prepare_device
from pdeeos.metrics import largest_safe
from pdeeos.training import Split, TrainConfig, train_lockstep

AMPLIFIED = 100 * 2.0 ** -23
"""RelL1 above which a run counts as amplifying the perturbation (100 float32 ulps)."""

BASE = dict(dataset="cifar10", dtype="float32", batch_size=128, weight_decay=5e-4, lr_times_steps=39.1,
            ks=[1, 3], sharpness_images=512)

CONFIGS: dict[str, dict[str, Any]] = {
    "ci": dict(BASE, train_limit=256, test_limit=128, model="resnet8", width=2, lrs=[0.05, 0.025],
               lr_times_steps=2.0, sharpness_images=128, official_layer="blocks.1.conv1.weight"),
    "book": dict(BASE, train_limit=2560, test_limit=None, model="resnet8", width=8,
                 lrs=[0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125], official_layer="blocks.1.conv1.weight"),
    "paper": dict(BASE, train_limit=None, test_limit=None, model="resnet56", width=16,
                  lrs=[0.05, 0.025, 0.0125, 0.00625, 0.003125, 3.125e-4, 3.125e-5, 3.125e-6],
                  official_layer="blocks.14.conv1.weight"),
}


def epochs_for(lr: float, cfg: dict[str, Any], n_train: int) -> int:
    """Epochs that keep ``lr × steps`` at least ``lr_times_steps`` (``ceil(n_train / batch_size)`` steps each)."""
    per_epoch = math.ceil(n_train / cfg["batch_size"])
    return math.ceil(cfg["lr_times_steps"] / (lr * per_epoch) - 1e-9)


TAIL = 0.1
"""The fraction of a run's epochs, at its end, over which :func:`persistent` takes the median."""


def persistent(rel_l1: np.ndarray) -> float:
    """The median RelL1 over the last :data:`TAIL` of the epochs (at least one) of one run."""
    rel_l1 = np.asarray(rel_l1, dtype=float)
    rel_l1 = rel_l1[np.isfinite(rel_l1)]
    if not rel_l1.size:
        raise ValueError("persistent: the run has no finite RelL1")
    return float(np.median(rel_l1[-max(1, round(TAIL * len(rel_l1))):]))


def minibatch_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                   weight_decay: float) -> list[Callable[[], torch.Tensor]]:
    r"""The minibatch loss :math:`\frac1n\sum_b |b|\,\ell_b + \frac{wd}{2}\|\theta\|^2` of ``model`` on
    the images ``x`` (labels ``y``) in batches of ``batch_size``, batch-norm in training mode as SGD sees
    it, as a list of terms for :mod:`pdeeos.sharpness`."""
    params = list(model.parameters())
    fns: list[Callable[[], torch.Tensor]] = [
        (lambda i=i: F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size]) * (len(y[i:i + batch_size]) / len(y)))
        for i in range(0, len(y), batch_size)]
    fns.append(lambda: 0.5 * weight_decay * sum((p ** 2).sum() for p in params))
    return fns


def network_sharpness(model: torch.nn.Module, split: Split, *, images: int, batch_size: int,
                      weight_decay: float) -> float:
    r""":math:`\lambda_{\max}` of the :func:`minibatch_loss` on the first ``images`` training images, on a
    copy of ``model`` so that its running statistics are left alone."""
    probe = copy.deepcopy(model).train()
    fns = minibatch_loss(probe, split.x[:images], split.y[:images], batch_size=batch_size, weight_decay=weight_decay)
    return sharpness.top_eigenvalue(fns, list(probe.parameters()), tol=1e-3, max_iter=80)


@dataclass(frozen=True)
class RateTask:
    """One learning rate: its config, device and checkpoint."""

    config: dict
    lr: float
    device: str
    checkpoint: Path


def build(cfg: dict[str, Any], train: Split) -> torch.nn.Module:
    """The config's network for the images of ``train``."""
    return models.build(cfg["model"], activation=cfg["activation"], width=cfg["width"], in_channels=train.x.shape[1])


def train_rate(task: RateTask, tick: Callable[[], None]) -> dict[str, Any]:
    """Train the lockstep k = 1 / k = 3 pair at one rate (resumable), then measure the k = 1 copy's sharpness."""
    cfg, device = task.config, torch.device(task.device)
    prepare_device(device)
    train, test, _ = load_splits(cfg, device)
    epochs = epochs_for(task.lr, cfg, len(train.y))
    tc = TrainConfig(ks=tuple(cfg["ks"]), optimizer="sgd", lr=task.lr, momentum=0.0, nesterov=False,
                     weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"], epochs=epochs,
                     milestones=(), dtype=cfg["dtype"])
    trainer = train_lockstep(lambda: build(cfg, train), train, test, tc, init_seed=0, device=device,
                             checkpoint=task.checkpoint, progress=lambda it: _ticking(it, tick))
    history = trainer.history.arrays()
    layer = trainer.layers.index(cfg["official_layer"])
    return {"epochs": epochs, "rel_l1": history["rel_l1"][:, 1], "rel_l1_layer": history["rel_l1_layers"][:, 1, layer],
            "test_acc": history["test_acc"][:, 0],
            "sharpness": network_sharpness(trainer.models[0], trainer.train_split, images=cfg["sharpness_images"],
                                           batch_size=cfg["batch_size"], weight_decay=cfg["weight_decay"])}


def _ticking(epochs, tick: Callable[[], None]):
    for epoch in epochs:
        yield epoch
        tick()


def run(ctx: RunContext) -> RunOutput:
    """One lockstep k = 1 / k = 3 pair per learning rate, ``lr × steps`` fixed."""
    cfg = ctx.config
    prepare_device(ctx.device)
    train, _, described = load_splits(cfg, ctx.device)
    probe = build(cfg, train)
    layers = [n for n, p in probe.named_parameters() if p.ndim > 1]
    if cfg["official_layer"] not in layers:
        raise ValueError(f"official_layer {cfg['official_layer']!r} is not a weight layer of {cfg['model']}: {layers}")
    lrs = np.asarray(cfg["lrs"], dtype=float)
    epochs = [epochs_for(lr, cfg, len(train.y)) for lr in lrs]
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = [RateTask(cfg, float(lr), str(ctx.device), ctx.checkpoint_dir / f"lr{lr:.6g}.pt") for lr in lrs]
    outs = ctx.map(train_rate, tasks, units=epochs, desc=ctx.experiment)
    torch.manual_seed(0)
    initial = network_sharpness(build(cfg, train).to(ctx.device), train, images=cfg["sharpness_images"],
                                batch_size=cfg["batch_size"], weight_decay=cfg["weight_decay"])

    def padded(key: str) -> np.ndarray:
        out = np.full((len(lrs), max(epochs)), np.nan)
        for i, o in enumerate(outs):
            out[i, :o["epochs"]] = o[key]
        return out

    rel, rel_layer, acc = padded("rel_l1"), padded("rel_l1_layer"), padded("test_acc")
    per_epoch = math.ceil(len(train.y) / cfg["batch_size"])
    largest, largest_layer = np.nanmax(rel, axis=1), np.nanmax(rel_layer, axis=1)
    stays = np.array([persistent(r) for r in rel])
    stays_layer = np.array([persistent(r) for r in rel_layer])
    amplified, amplified_layer = stays > AMPLIFIED, stays_layer > AMPLIFIED
    final_sharpness = np.array([o["sharpness"] for o in outs])
    summary = {"data": described, "lrs": lrs.tolist(), "epochs": epochs,
               "lr_times_steps": [float(lr * e * per_epoch) for lr, e in zip(lrs, epochs)],
               "amplified_rel_l1": AMPLIFIED, "amplified": amplified.tolist(),
               "threshold_lr": largest_safe(lrs, amplified),
               "amplified_layer": amplified_layer.tolist(), "threshold_lr_layer": largest_safe(lrs, amplified_layer),
               "official_layer": cfg["official_layer"],
               "first_rel_l1": rel[:, 0].tolist(), "largest_rel_l1": largest.tolist(),
               "final_rel_l1": [float(rel[i, e - 1]) for i, e in enumerate(epochs)],
               "persistent_rel_l1": stays.tolist(), "persistent_rel_l1_layer": stays_layer.tolist(),
               "largest_rel_l1_layer": largest_layer.tolist(), "parameters": models.count_parameters(probe),
               "initial_sharpness": initial, "final_sharpness": final_sharpness.tolist(),
               "lr_times_final_sharpness": (lrs * final_sharpness).tolist(),
               "predicted_threshold_lr": float(2.0 / final_sharpness[np.argmin(lrs)])}
    return RunOutput(arrays={"lrs": lrs, "epochs": np.asarray(epochs), "rel_l1": rel, "rel_l1_layer": rel_layer,
                             "test_acc": acc, "final_sharpness": final_sharpness}, summary=summary)


def measured(summary: dict[str, Any], key: str = "amplified") -> bool:
    """Whether a stored run brackets the threshold: some tested rates amplify and some do not, by the
    whole network (``key="amplified"``) or by the official layer (``"amplified_layer"``)."""
    return 0 < sum(summary[key]) < len(summary[key])


def outcome(summary: dict[str, Any], key: str = "amplified") -> str:
    """What a stored run's ``summary`` says of the threshold, in one sentence, by the whole network
    (``key="amplified"``) or by the official layer (``"amplified_layer"``)."""
    lrs, amplified = summary["lrs"], summary[key]
    threshold = summary["threshold_lr" if key == "amplified" else "threshold_lr_layer"]
    if measured(summary, key):
        return f"largest learning rate below every amplifying one: {threshold:.3g}"
    if any(amplified):
        return f"every tested learning rate amplifies, down to {min(lrs):.3g}: the threshold lies below"
    return (f"no tested learning rate ({min(lrs):.3g}–{max(lrs):.3g}) amplifies: the threshold is not "
            f"reached (it is at least {threshold:.3g})")


def _experiment(name: str, summary: str, activation: str) -> Experiment:
    configs = {scale: dict(cfg, activation=activation) for scale, cfg in CONFIGS.items()}
    return Experiment(name=name, summary=summary, chapter="06-perturbed-sgd", configs=configs,
                      func=run, dtype="float32")


EXPERIMENT = (
    _experiment("lr-threshold", "Fig. 3 right / Fig. 10: RelL1 of k = 1 vs 3 at fixed lr, lr × steps = 39.1",
                "swish"),
    _experiment("lr-threshold-relu", "the Fig. 3 right protocol with ReLU instead of Swish", "relu"),
)
"""The paper's protocol (Swish) and the same with ReLU, whose kink amplifies in small networks too."""
