"""Lockstep training: copies of one network, one per perturbation ``k``, on identical batches.

The book's protocol for the paper's networks, built on :class:`pdeeos.twins.Twins`: the copies, one per
``k``, are a :class:`~pdeeos.twins.Twins` stepped on whole tensors of images. Every copy starts from the
same initial weights and sees the same shuffled, augmented batches (drawn once per step from one seeded
generator on the device), so the copies differ only by the last-bit perturbation of their optimizer
(:mod:`pdeeos.optim`). After every epoch the trainer
records each copy's test accuracy and training loss, its RelL1 distance (:func:`pdeeos.metrics.rel_l1`)
to the ``k = 1`` copy, per layer and for the whole network, and how far each copy moved during the epoch
(RelL1 to its own weights one epoch earlier). At the end :meth:`LockstepTrainer.predictions` gives
every copy's predicted class for every test image. Its state — weights, optimizer buffers,
generator state, history — checkpoints at epoch ends, and a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from pdeeos import checkpoints, data
from pdeeos.metrics import rel_l1
from pdeeos.optim import LocalCFL, PerturbedAdam, PerturbedSGD
from pdeeos.twins import Twins, check_ks

DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = ("sgd", "adam", "local-cfl", "global-cfl")


def set_deterministic() -> None:
    """Deterministic kernels everywhere: deterministic algorithms, cuBLAS workspace, cuDNN flags."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (defaults: the paper's ResNet-56 / CIFAR-10 protocol)."""

    ks: tuple[int, ...] = (1, 3, 5, 7, 9, 11)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 200
    milestones: tuple[int, ...] = (40, 80, 120, 160)
    gamma: float = 0.1
    augment: bool = True
    dtype: str = "float32"
    batch_seed: int = 0
    fluctuation_batches: int = 0
    safety: float = 0.9
    every: int = 10
    power_iterations: int = 2
    """LocalCFL's settings (``optimizer`` ``"local-cfl"``: a region per tensor; ``"global-cfl"``: one region)."""
    predict_every: int = 0
    """Record every copy's prediction for every test image after each ``predict_every``-th epoch (0: never)."""

    def __post_init__(self) -> None:
        check_ks(self.ks)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if not (self.lr >= 0):
            raise ValueError(f"lr must be >= 0; got {self.lr!r}")
        for name in ("batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if isinstance(self.predict_every, bool) or not isinstance(self.predict_every, int) or self.predict_every < 0:
            raise ValueError(f"predict_every must be an integer >= 0 (epochs; 0: never); got {self.predict_every!r}")

    def lr_at(self, epoch: int) -> float:
        """The step schedule: ``lr · gamma^(number of milestones <= epoch)``."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def make_optimizer(self, params: Iterable[torch.Tensor], k: int = 1) -> torch.optim.Optimizer:
        """The optimizer of one copy's parameters, perturbed by ``k`` (:class:`~pdeeos.twins.Twins` builds
        it with ``k = 1`` and perturbs it by the copy's own ``k``: the same optimizer)."""
        if self.optimizer == "adam":
            return PerturbedAdam(params, self.lr, k=k, weight_decay=self.weight_decay)
        if self.optimizer in ("local-cfl", "global-cfl"):
            return LocalCFL(params, self.lr, k=k, momentum=self.momentum, nesterov=self.nesterov,
                            weight_decay=self.weight_decay, safety=self.safety, every=self.every,
                            power_iterations=self.power_iterations,
                            regions="tensor" if self.optimizer == "local-cfl" else "global")
        return PerturbedSGD(params, self.lr, k=k, momentum=self.momentum,
                            weight_decay=self.weight_decay, nesterov=self.nesterov)


@dataclass
class Split:
    """Normalised float images (N×C×H×W) and labels, on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: data.Dataset, *, limit: int | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Split:
        """The first ``limit`` images of ``ds`` (all when ``None``)."""
        n = len(ds.labels) if limit is None else min(limit, len(ds.labels))
        return cls(data.to_float(ds.images[:n], dtype=dtype, device=device),
                   ds.labels[:n].to(device))


@dataclass
class History:
    """Per-epoch records, one row per epoch and one column per copy."""

    test_acc: list[list[float]] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)
    rel_l1: list[list[float]] = field(default_factory=list)
    rel_l1_layers: list[list[list[float]]] = field(default_factory=list)
    movement: list[list[float]] = field(default_factory=list)
    grad_fluctuation: list[float] = field(default_factory=list)
    prediction_epochs: list[int] = field(default_factory=list)
    predictions_along: list[list[list[int]]] = field(default_factory=list)
    """Every copy's predicted class of every test image (copies × images, int8) after each epoch of
    ``prediction_epochs`` (see :attr:`TrainConfig.predict_every`)."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The records as arrays (epochs × copies, epochs × copies × layers, epochs; the predictions
        along training as snapshots × copies × images, int8)."""
        records = {name: np.asarray(value, dtype=float) for name, value in asdict(self).items()
                   if name not in ("prediction_epochs", "predictions_along")}
        along = (np.asarray(self.predictions_along, dtype=np.int8) if self.predictions_along
                 else np.zeros((0, 0, 0), dtype=np.int8))
        return {**records, "prediction_epochs": np.asarray(self.prediction_epochs, dtype=np.int64),
                "predictions_along": along}


class LockstepTrainer:
    """Trains one copy of ``model`` per ``k`` of ``config`` on identical batches: a
    :class:`~pdeeos.twins.Twins` (``twins``, without per-step records) stepped through the epochs of
    the protocol, recording per epoch."""

    def __init__(self, model: nn.Module, train: Split, test: Split, config: TrainConfig,
                 device: torch.device | str = "cpu") -> None:
        self.config, self.device = config, torch.device(device)
        dtype = DTYPES[config.dtype]
        self.train_split, self.test_split = (Split(s.x.to(self.device, dtype), s.y.to(self.device))
                                             for s in (train, test))
        base = model.to(device=self.device, dtype=dtype)
        self.twins = Twins(base, config.make_optimizer, config.ks, record_every=None)
        self.generator = torch.Generator(device=self.device).manual_seed(config.batch_seed)
        self.layers = [n for n, p in base.named_parameters() if p.ndim > 1]
        self.epoch = 0
        self.history = History()
        self.previous = self.flat_weights()

    @property
    def models(self) -> list[nn.Module]:
        """The copies, in ``config.ks`` order."""
        return self.twins.models

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The copies' perturbed optimizers, in ``config.ks`` order."""
        return self.twins.optimizers

    # ------------------------------------------------------------------ one epoch

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's shuffled (and augmented) batches, drawn from the shared generator."""
        x, y = self.train_split.x, self.train_split.y
        order = torch.randperm(len(y), generator=self.generator, device=self.device)
        out = []
        for start in range(0, len(y), self.config.batch_size):
            idx = order[start: start + self.config.batch_size]
            xb = data.augment(x[idx], self.generator) if self.config.augment else x[idx]
            out.append((xb, y[idx]))
        return out

    def train_epoch(self) -> list[float]:
        """One epoch of every copy on the same batches; the copies' mean training losses."""
        lr = self.config.lr_at(self.epoch)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        losses = torch.zeros(len(self.models), dtype=torch.float64)
        batches = self.batches()
        for xb, yb in batches:
            losses += self.twins.step(lambda model, xb=xb, yb=yb: F.cross_entropy(model.train()(xb), yb)).double().cpu()
        return (losses / len(batches)).tolist()

    @torch.no_grad()
    def test_accuracy(self, model: nn.Module, batch_size: int = 1000) -> float:
        """Accuracy (%) of ``model`` on the test split."""
        model.eval()
        x, y = self.test_split.x, self.test_split.y
        correct = sum(int((model(x[i: i + batch_size]).argmax(1) == y[i: i + batch_size]).sum())
                      for i in range(0, len(y), batch_size))
        return 100.0 * correct / len(y)

    @torch.no_grad()
    def predictions(self, batch_size: int = 1000) -> torch.Tensor:
        """Every copy's predicted class for every test image (copies × test images, int64, CPU)."""
        x = self.test_split.x
        out = []
        for model in self.models:
            model.eval()
            out.append(torch.cat([model(x[i: i + batch_size]).argmax(1).cpu()
                                  for i in range(0, len(x), batch_size)]))
        return torch.stack(out)

    def flat_weights(self) -> list[torch.Tensor]:
        """Every copy's parameters as one flat vector each (detached copies)."""
        return [torch.cat([p.detach().flatten() for p in m.parameters()]).clone() for m in self.models]

    def distances(self) -> tuple[list[float], list[list[float]]]:
        """RelL1 of each copy to the ``k = 1`` copy: whole network, and per weight layer."""
        ref = dict(self.models[self.twins.reference].named_parameters())
        whole, layers = [], []
        flat_ref = torch.cat([p.detach().flatten() for p in ref.values()])
        for model in self.models:
            params = dict(model.named_parameters())
            whole.append(rel_l1(torch.cat([p.detach().flatten() for p in params.values()]), flat_ref))
            layers.append([rel_l1(params[n], ref[n]) for n in self.layers])
        return whole, layers

    def run_epoch(self) -> None:
        """Train one epoch and record it."""
        losses = self.train_epoch()
        self.epoch += 1
        whole, layers = self.distances()
        current = self.flat_weights()
        self.history.movement.append([rel_l1(a, b) for a, b in zip(current, self.previous)])
        self.previous = current
        self.history.test_acc.append([self.test_accuracy(m) for m in self.models])
        self.history.train_loss.append(losses)
        self.history.rel_l1.append(whole)
        self.history.rel_l1_layers.append(layers)
        if self.config.predict_every and self.epoch % self.config.predict_every == 0:
            self.history.prediction_epochs.append(self.epoch)
            self.history.predictions_along.append(self.predictions().tolist())
        if self.config.fluctuation_batches > 0:
            gen = torch.Generator(device=self.device).manual_seed(1_000_003 * self.epoch)
            self.history.grad_fluctuation.append(gradient_fluctuation(
                self.models[0], self.train_split, batch_size=self.config.batch_size,
                n_batches=self.config.fluctuation_batches, generator=gen))

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs."""
        return {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "generator": self.generator.get_state(),
            "history": asdict(self.history),
            "previous": self.previous,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ``ValueError`` if it belongs to another config. A checkpoint
        written before a config field existed counts as written with that field's default."""
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        if {**defaults, **state["config"]} != asdict(self.config):
            raise ValueError("checkpoint was written with a different config")
        self.epoch = state["epoch"]
        for model, sd in zip(self.models, state["models"]):
            model.load_state_dict(sd)
        for opt, sd in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        self.generator.set_state(state["generator"])
        self.history = History(**state["history"])
        self.previous = [p.to(self.device) for p in state["previous"]]

    def train(self, epochs: int | None = None, *, checkpoint: Path | None = None,
              progress: Callable[..., Any] | None = None) -> History:
        """Train until ``epochs`` (default: the config's), resuming from and writing ``checkpoint``."""
        epochs = self.config.epochs if epochs is None else epochs
        if checkpoint is not None and (state := checkpoints.load_checkpoint(checkpoint)) is not None:
            self.load_state_dict(state)
        todo = range(self.epoch, epochs)
        for _ in progress(todo) if progress is not None else todo:
            self.run_epoch()
            if checkpoint is not None:
                checkpoints.save_checkpoint(checkpoint, self.state_dict())
        return self.history


def gradient_fluctuation(model: nn.Module, train: Split, *, batch_size: int, n_batches: int,
                         generator: torch.Generator) -> float:
    r"""Relative fluctuation of a batch gradient (paper footnote 5).

    The mean gradient :math:`\bar g` of ``n_batches`` random batches against one more random
    batch's gradient :math:`g`: :math:`\frac1N\sum_i |g_i - \bar g_i| / |\bar g_i|` (components with
    :math:`\bar g_i = 0` left out). Runs on a copy, so ``model`` (and its BN statistics) is untouched.
    """
    probe = copy.deepcopy(model).train()

    def grad_of(idx: torch.Tensor) -> torch.Tensor:
        probe.zero_grad(set_to_none=True)
        F.cross_entropy(probe(train.x[idx]), train.y[idx]).backward()
        return torch.cat([p.grad.flatten() for p in probe.parameters()]).double()

    def draw() -> torch.Tensor:
        return torch.randperm(len(train.y), generator=generator, device=train.y.device)[:batch_size]

    mean = torch.stack([grad_of(draw()) for _ in range(n_batches)]).mean(0)
    g = grad_of(draw())
    keep = mean != 0
    return float(((g - mean).abs()[keep] / mean.abs()[keep]).mean())


def train_lockstep(model_fn: Callable[[], nn.Module], train: Split, test: Split,
                   config: TrainConfig, *, init_seed: int = 0, device: torch.device | str = "cpu",
                   checkpoint: Path | None = None,
                   progress: Callable[..., Any] | None = None) -> LockstepTrainer:
    """Build ``model_fn()`` under ``init_seed``, train its copies, and return the trainer."""
    torch.manual_seed(init_seed)
    trainer = LockstepTrainer(model_fn(), train, test, config, device)
    trainer.train(checkpoint=checkpoint, progress=progress)
    return trainer


def identical(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models have bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)


__all__ = ["History", "LockstepTrainer", "Split", "TrainConfig", "gradient_fluctuation",
           "identical", "set_deterministic", "train_lockstep"]
