r"""``own-network``: the paper's question asked of networks that are not the paper's (chapter 9).

Four small networks on the real Fashion-MNIST — a multilayer perceptron (784-128-128-10) with ReLU, with
tanh and with GELU, and a two-layer convolutional network with BatchNorm — each trained with SGD (heavy-ball
momentum 0.9) at a large learning rate, near the edge of its stability on the batches, and at a four times
smaller one, and with AdamW, in a plain PyTorch loop over a :class:`torch.utils.data.DataLoader`, the way
a reader trains their own model. The perturbed copies come from :class:`pdeeos.Twins` (one copy per
``k`` of ``ks``, same initial weights, each optimizer's update re-applied as
:math:`\theta_{\text{old}} + (k\Delta)/k` by :func:`pdeeos.optim.perturb`), which records the RelL1 of every
copy to the :math:`k = 1` copy at every step. A seed fixes both the initial weights
(``torch.manual_seed`` before the model is built) and the batch order (the DataLoader's generator).

Per network, optimizer and seed the run keeps the twins' distances and losses at every step, every copy's
prediction of every test image after the last epoch (full-batch evaluation), and at a few steps the
sharpness of the :math:`k = 1` copy (:func:`pdeeos.sharpness.of_model`, which leaves the copy untouched)
on the step's batch and on a fixed set of training images, against the stable step of SGD
(:func:`pdeeos.twins.edge`). The summary reads them with the package's public tools:
:func:`pdeeos.lyapunov.onset_statistics`, :func:`pdeeos.lyapunov.growth`, :func:`pdeeos.lyapunov.fate` and
:func:`pdeeos.spread.summarize` (churn over ``k`` against churn over seeds, with the seed-level interval of
their ratio). Every task checkpoints after each epoch (:meth:`pdeeos.Twins.state_dict` and the
DataLoader's generator), so an interrupted run resumes bit-exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pdeeos import checkpoints, data, lyapunov, sharpness, spread
from pdeeos.book import results
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.twins import Twins, edge

MODELS: tuple[str, ...] = ("mlp-relu", "mlp-tanh", "mlp-gelu", "cnn-bn")
"""The networks: an MLP with three activations and a small CNN with BatchNorm."""

OPTIMIZERS: tuple[str, ...] = ("sgd", "sgd-low", "adamw")
"""SGD with heavy-ball momentum at a large learning rate (``sgd_lr``) and at a four times smaller one
(``sgd_low_lr``), and AdamW."""

SHARPNESS_TOL = 1e-3
"""Relative Lanczos residual of each sharpness measurement."""
SHARPNESS_MAX_ITER = 60
"""The most Hessian-vector products one sharpness measurement may spend."""

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def build_model(name: str) -> nn.Module:
    """A fresh network ``name`` (one of :data:`MODELS`) with PyTorch's default initialisation (draws from the
    global generator: seed it first)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    if name.startswith("mlp-"):
        act = _ACTIVATIONS[name.removeprefix("mlp-")]
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), act(), nn.Linear(128, 128), act(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def make_optimizer(name: str, cfg: dict[str, Any]) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """``params -> optimizer`` for :class:`pdeeos.Twins`: ``"sgd"`` (``sgd_lr``, ``momentum``), ``"sgd-low"``
    (``sgd_low_lr``, ``momentum``) or ``"adamw"`` (``adamw_lr``, ``adamw_weight_decay``)."""
    if name in ("sgd", "sgd-low"):
        lr = cfg["sgd_lr" if name == "sgd" else "sgd_low_lr"]
        return lambda params: torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"])
    if name == "adamw":
        return lambda params: torch.optim.AdamW(params, lr=cfg["adamw_lr"], weight_decay=cfg["adamw_weight_decay"])
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


# ----------------------------------------------------------------------------- the config


def _positive_int(cfg: dict[str, Any], key: str, least: int = 1) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"own-network: {key} must be an integer >= {least}; got {value!r}")


def _positive_float(cfg: dict[str, Any], key: str) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"own-network: {key} must be a number > 0; got {value!r}")


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` if it is a usable config, else ``ValueError`` naming the key (called before any training)."""
    for key, allowed in (("models", MODELS), ("optimizers", OPTIMIZERS)):
        chosen = cfg.get(key)
        if not isinstance(chosen, list) or not chosen or any(c not in allowed for c in chosen) \
                or len(set(chosen)) != len(chosen):
            raise ValueError(f"own-network: {key} must be a non-empty list of distinct names from "
                             f"{', '.join(allowed)}; got {chosen!r}")
    seeds = cfg.get("seeds")
    if not isinstance(seeds, list) or len(seeds) < 3 or len(set(seeds)) != len(seeds) \
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError("own-network: seeds must be a list of at least 3 distinct integers >= 0 (the churn "
                         f"ratio's seed-level interval is a delete-one-seed jackknife); got {seeds!r}")
    ks = cfg.get("ks")
    if not isinstance(ks, list) or len(ks) < 3 or ks[0] != 1 or len(set(ks)) != len(ks) \
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError("own-network: ks must be a list of at least 3 distinct integers >= 1 starting with 1 "
                         f"(the reference copy; churn over k needs two perturbed copies); got {ks!r}")
    for key in ("train_images", "test_images", "batch_size", "epochs", "sharpness_images"):
        _positive_int(cfg, key)
    _positive_int(cfg, "sharpness_every")
    for key in ("sgd_lr", "sgd_low_lr", "adamw_lr"):
        _positive_float(cfg, key)
    for key in ("momentum", "adamw_weight_decay"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"own-network: {key} must be a number in [0, 1); got {value!r}")
    if cfg.get("dataset") not in data.LOADERS or cfg["dataset"] == "cifar10":
        raise ValueError(f"own-network: dataset must be fashion_mnist or mnist; got {cfg.get('dataset')!r}")
    if cfg["sharpness_images"] > cfg["train_images"]:
        raise ValueError(f"own-network: sharpness_images ({cfg['sharpness_images']}) must be at most "
                         f"train_images ({cfg['train_images']})")
    return cfg


def load_data(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The first ``train_images`` training and ``test_images`` test images (float, N×1×28×28, normalised)
    and labels, and a description; ``ValueError`` when the data set has fewer."""
    train, test = data.load(cfg["dataset"], "train"), data.load(cfg["dataset"], "test")
    for split, have, want in (("train", len(train.labels), cfg["train_images"]),
                              ("test", len(test.labels), cfg["test_images"])):
        if want > have:
            raise ValueError(f"own-network: {split}_images is {want}, but {cfg['dataset']} {split} has {have}")
    n, m = cfg["train_images"], cfg["test_images"]
    described = (f"the first {n:,} training and {m:,} test images of {train.describe()} and "
                 f"{test.describe()}")
    return data.to_float(train.images[:n]), train.labels[:n], data.to_float(test.images[:m]), test.labels[:m], \
        described


# ----------------------------------------------------------------------------- one task


@dataclass(frozen=True)
class Task:
    """One network, one optimizer, one seed."""

    model: str
    optimizer: str
    seed: int
    config: dict
    checkpoint: Path | None

    @property
    def key(self) -> str:
        return f"{self.model}_{self.optimizer}"


def train_task(task: Task, tick: Callable[[], None]) -> dict[str, Any]:
    """Train the copies of one task in a plain loop over a DataLoader, resuming from its checkpoint; ``tick``
    after every epoch. Returns the twins' records, the copies' test predictions and the sharpness points."""
    cfg = task.config
    torch.set_num_threads(1)
    x, y, x_test, _, _ = load_data(cfg)
    torch.manual_seed(task.seed)                                        # the seed sets the initial weights ...
    model = build_model(task.model)
    twins = Twins(model, make_optimizer(task.optimizer, cfg), ks=tuple(cfg["ks"]))
    order = torch.Generator().manual_seed(task.seed)                    # ... and the batch order
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"], shuffle=True, generator=order)
    fixed_x, fixed_y = x[:cfg["sharpness_images"]], y[:cfg["sharpness_images"]]
    points: list[list[float]] = []                                      # step, batch λ, fixed-set λ

    done = 0
    state = checkpoints.load_checkpoint(task.checkpoint) if task.checkpoint is not None else None
    if state is not None:
        twins.load_state_dict(state["twins"])
        order.set_state(state["order"])
        points, done = state["points"], state["epochs"]
    for epoch in range(done, cfg["epochs"]):
        for xb, yb in loader:
            def loss_fn(m: nn.Module, xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                return F.cross_entropy(m(xb), yb)

            twins.step(loss_fn)
            if twins.steps % cfg["sharpness_every"] == 0:
                reference = twins.models[twins.reference]
                points.append([twins.steps, *(sharpness.of_model(reference, fn, tol=SHARPNESS_TOL,
                                                                 max_iter=SHARPNESS_MAX_ITER)
                                              for fn in (loss_fn, lambda m: F.cross_entropy(m(fixed_x), fixed_y)))])
        if task.checkpoint is not None:
            checkpoints.save_checkpoint(task.checkpoint, {"twins": twins.state_dict(), "order": order.get_state(),
                                                      "points": points, "epochs": epoch + 1})
        tick()
    h = twins.history
    lr = twins.optimizers[twins.reference].param_groups[0]["lr"]
    return {"steps": h["steps"], "rel_l1": h["rel_l1"], "loss": h["loss"].astype(np.float32),
            "predictions": twins.predict(x_test).numpy().astype(np.int8),
            "sharpness": np.array(points, dtype=np.float64).reshape(-1, 3),
            "lr": lr, "edge": edge(twins.optimizers[twins.reference]), "dtype": str(twins.dtype)}


# ----------------------------------------------------------------------------- the summary


def _none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def twin_summary(rows: np.ndarray, *, dtype: str, steps: np.ndarray) -> dict[str, Any]:
    """The twin records of one perturbed ``k`` over the seeds (``rows``: seeds × recorded steps): the onsets
    (:func:`pdeeos.lyapunov.onset_statistics`), growth rates with intervals and drifts
    (:func:`pdeeos.lyapunov.growth`), fates (:func:`pdeeos.lyapunov.fate`), and the final and largest RelL1."""
    onsets = lyapunov.onset_statistics(rows, dtype=dtype, steps=steps)
    grown = [lyapunov.growth(row, dtype=dtype, steps=steps) for row in rows]
    rates = np.array([g.rate for g in grown])
    burst = rates[np.isfinite(rates)]
    return {
        "onsets": [_none(o) for o in onsets.onsets], "bursts": onsets.bursts, "records": onsets.records,
        "onset_median": _none(onsets.median), "onset_earliest": _none(onsets.earliest),
        "onset_latest": _none(onsets.latest),
        "rates": [_none(r) for r in rates], "rate_intervals": [[_none(g.low), _none(g.high)] for g in grown],
        "rate_median": _none(np.median(burst)) if burst.size else None,
        "rate_min": _none(burst.min()) if burst.size else None,
        "rate_max": _none(burst.max()) if burst.size else None,
        "drifts": [g.drift for g in grown], "fates": [g.fate for g in grown],
        "final_rel_l1": [float(row[-1]) for row in rows], "max_rel_l1": [float(row.max()) for row in rows],
    }


def summarise(outs: list[dict[str, Any]], labels: np.ndarray, ks: list[int], dtype: str) -> dict[str, Any]:
    """One network and optimizer over its seeds (``outs`` in seed order): for every perturbed ``k``, its
    :func:`twin_summary`; the spread of the predictions (:func:`pdeeos.spread.summarize`); and the sharpness
    points against the stable step."""
    steps = outs[0]["steps"]
    out: dict[str, Any] = {f"k{k}": twin_summary(np.stack([o["rel_l1"][:, j] for o in outs]), dtype=dtype,
                                                 steps=steps)
                           for j, k in enumerate(ks) if j > 0}
    predictions = np.stack([o["predictions"] for o in outs])           # seeds × ks × images
    s = spread.summarize(predictions, labels)
    keep = ("mean_acc", "churn_over_k", "churn_over_k_image_ci", "churn_over_seeds", "churn_over_seeds_image_ci",
            "churn_ratio", "churn_ratio_image_ci", "churn_ratio_seed_ci", "churn_ratio_seed_se",
            "exchangeability_p", "seed_imprint")
    out |= {key: s.get(key) for key in keep}
    out["churn_over_k_per_seed"] = spread.churn_over_k_per_seed(predictions).tolist()
    points = np.concatenate([o["sharpness"] for o in outs])            # seed-major
    lr, stable = outs[0]["lr"], outs[0]["edge"]
    eta_lam = lr * points[:, 1:]                                        # points × (batch, fixed set)
    out |= {"lr": lr, "edge": _none(stable),
            "eta_sharpness_batch_max": _none(eta_lam[:, 0].max()) if len(points) else None,
            "eta_sharpness_fixed_max": _none(eta_lam[:, 1].max()) if len(points) else None,
            "eta_sharpness_batch_median": _none(np.median(eta_lam[:, 0])) if len(points) else None,
            "eta_sharpness_fixed_median": _none(np.median(eta_lam[:, 1])) if len(points) else None}
    if np.isfinite(stable) and len(points):
        out["batch_over_edge_max"] = float(eta_lam[:, 0].max() / stable)
        out["fixed_over_edge_max"] = float(eta_lam[:, 1].max() / stable)
    return out


def tasks(cfg: dict[str, Any], checkpoint_dir: Path | None) -> list[Task]:
    """Every network × optimizer × seed, each with its own checkpoint file."""
    return [Task(m, o, s, cfg, None if checkpoint_dir is None else checkpoint_dir / f"{m}_{o}_seed{s}.pt")
            for m in cfg["models"] for o in cfg["optimizers"] for s in cfg["seeds"]]


def run(ctx: RunContext) -> RunOutput:
    """Every task (one worker each), stored arrays keyed by network, optimizer and seed, one summary per
    network and optimizer."""
    cfg = check_config(ctx.config)
    _, _, _, test_labels, described = load_data(cfg)
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    todo = tasks(cfg, ctx.checkpoint_dir)
    outs = ctx.map(train_task, todo, units=cfg["epochs"], desc=ctx.experiment)
    labels = test_labels.numpy()
    arrays: dict[str, np.ndarray] = {"test_labels": labels.astype(np.int8), "steps": outs[0]["steps"]}
    dtype = outs[0]["dtype"]
    summary: dict[str, Any] = {"data": described, "dtype": dtype, "rounding_floor": lyapunov.rounding_floor(dtype),
                               "steps": int(outs[0]["steps"][-1]), "runs": []}
    for m in cfg["models"]:
        for o in cfg["optimizers"]:
            mine = [out for task, out in zip(todo, outs) if (task.model, task.optimizer) == (m, o)]
            key = f"{m}_{o}"
            for seed, out in zip(cfg["seeds"], mine):
                arrays |= {f"{key}_seed{seed}_{name}": out[name]
                           for name in ("rel_l1", "loss", "predictions", "sharpness")}
            summary["runs"].append(key)
            summary[key] = summarise(mine, labels, cfg["ks"], dtype) | {"model": m, "optimizer": o}
    return RunOutput(arrays=arrays, summary=summary)


def resummarize(run: results.StoredRun) -> dict[str, Any]:
    """A stored run's summary with every network's and optimizer's :func:`twin_summary` recomputed from its
    stored twin records by the current :mod:`pdeeos.lyapunov` (no re-training); the rest kept."""
    steps, dtype, cfg = run.arrays["steps"], run.summary["dtype"], run.config
    redone = {key: run.summary[key] | {
        f"k{k}": twin_summary(np.stack([run.arrays[f"{key}_seed{seed}_rel_l1"][:, j] for seed in cfg["seeds"]]),
                              dtype=dtype, steps=steps)
        for j, k in enumerate(cfg["ks"]) if j > 0} for key in run.summary["runs"]}
    return run.summary | redone


def _shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    steps = cfg["epochs"] * -(-cfg["train_images"] // cfg["batch_size"])
    return {"test_labels": (cfg["test_images"],), "steps": (steps,)} | {
        f"{m}_{o}_seed{s}_rel_l1": (steps, len(cfg["ks"]))
        for m in cfg["models"] for o in cfg["optimizers"] for s in cfg["seeds"]}


_BASE = {"dataset": "fashion_mnist", "ks": [1, 3, 5], "sgd_lr": 0.2, "sgd_low_lr": 0.05, "momentum": 0.9,
         "adamw_lr": 1e-3,
         "adamw_weight_decay": 1e-2}

CONFIGS: dict[str, dict[str, Any]] = {
    "ci": _BASE | {"models": ["mlp-relu", "cnn-bn"], "optimizers": ["sgd", "adamw"], "seeds": [0, 1, 2],
                   "train_images": 256, "test_images": 128, "batch_size": 64, "epochs": 2,
                   "sharpness_every": 4, "sharpness_images": 64},
    "book": _BASE | {"models": list(MODELS), "optimizers": list(OPTIMIZERS), "seeds": [0, 1, 2, 3, 4],
                     "train_images": 10_000, "test_images": 2_000, "batch_size": 128, "epochs": 8,
                     "sharpness_every": 158, "sharpness_images": 512},
}

EXPERIMENT = Experiment(
    name="own-network",
    summary="Twins of networks that are not the paper's (MLP with ReLU, tanh, GELU; a BatchNorm CNN) on "
            "Fashion-MNIST, SGD at two learning rates and AdamW, a plain DataLoader loop: onsets, growth, fates, "
            "churn, sharpness",
    chapter="09-test-your-own-network",
    configs=CONFIGS,
    func=run,
    dtype="float32",
    shapes=_shapes,
)
