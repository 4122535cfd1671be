"""Table 1 and Fig. 3 (left) of the paper: lockstep copies per k, several batch-selection seeds.

For every seed (the batch order and augmentation; the initial weights stay fixed, as the paper's
text says — the official ``main6.py`` seeds torch before building the network, so there a seed also
changes the initial weights) one copy of the network per k in {1, 3, 5, 7, 9, 11} trains on
identical batches. The seeds are independent tasks shared by worker processes. The run stores every
copy's test accuracy, RelL1 distance to the k = 1 copy (whole network and per layer) and movement
after every epoch, every copy's final prediction for every test image, and for the first seed the
relative gradient fluctuation from batch selection (footnote 5). Accuracy of a copy = mean test
accuracy over the last ``last`` epochs. The spreads over k and over seeds, their intervals, the
prediction churn and the ANOVA come from :mod:`pdeeos.spread`.

The ``book`` protocol keeps what the effect depends on: at least 2,500 SGD steps at the paper's
large learning rate 0.1 before the first decay (the paper: 15,640), then two decays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos import data, models, spread
from pdeeos.book import results
from pdeeos.book.experiments import Experiment, RunContext, RunOutput, Tick
from pdeeos.metrics import rel_l1
from pdeeos.optim import LocalCFL
from pdeeos.training import DTYPES, LockstepTrainer, Split, TrainConfig, set_deterministic

KS = (1, 3, 5, 7, 9, 11)
PROTOCOL = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                batch_size=128, gamma=0.1, augment=True, dtype="float32")
"""The paper's training protocol (milestones and epochs are per scale)."""

PAPER_PROTOCOL = {"images": 50_000, "steps_at_large_lr": 15_640, "total_steps": 78_200, "seeds": 6,
                  "ks": 6, "model": "ResNet-56 (855,770 parameters)",
                  "schedule": [(0.1 * 0.1 ** i, 15_640) for i in range(5)]}
"""The paper's Table 1 protocol in numbers (391 steps an epoch, 40 of 200 epochs at lr 0.1)."""

CIFAR = dict(dataset="cifar10", train_limit=None, test_limit=None)
"""The whole offline CIFAR-10 subset (5,085 training, 1,017 test images): 40 steps an epoch."""
CIFAR_SCHEDULE = dict(epochs=67, milestones=[63, 65], last=2)
"""2,520 steps at lr 0.1, then 80 at 0.01 and 80 at 0.001 on the CIFAR-10 subset."""

PAPER_EPOCHS_AT_LARGE_LR = 40
"""Epochs the paper trains at lr 0.1 before the first decay, on its full data set (CIFAR-10: 391 steps an
epoch, 15,640 steps; Fashion-MNIST: 469, 18,760)."""
PAPER_IMAGES = {"cifar10": 50_000, "fashion_mnist": 60_000}
"""Training images of the paper's full data sets."""


def paper_length(decays: list[int] | str, last: int = 1) -> dict[str, Any]:
    """A schedule given in steps: at the large lr the paper's own number of steps
    (:data:`PAPER_EPOCHS_AT_LARGE_LR` epochs of its full data set), then ``decays`` steps at each decayed
    rate (``"paper"``: the paper's four decays of as many steps each). :func:`resolve` turns it into
    epochs for the data set a run actually has, so a subset trains more epochs, never fewer steps at
    the large lr."""
    return dict(steps_at_large_lr="paper", steps_after=decays if decays == "paper" else list(decays), last=last)


CONFIGS: dict[str, dict[str, Any]] = {
    "ci": dict(PROTOCOL, dataset="cifar10", train_limit=256, test_limit=256, model="resnet8",
               width=4, activation="relu", ks=[1, 3, 5], seeds=[0, 1], epochs=3, milestones=[1, 2],
               fluctuation_batches=2, last=1),
    "book": dict(PROTOCOL, **CIFAR, **CIFAR_SCHEDULE, model="resnet8", width=8, activation="relu",
                 ks=list(KS), seeds=list(range(6)), fluctuation_batches=8),
    "gpu": dict(PROTOCOL, **CIFAR, **paper_length([400, 400]), model="resnet20", width=16,
                activation="relu", ks=list(KS), seeds=list(range(6)), fluctuation_batches=8),
    "paper": dict(PROTOCOL, dataset="cifar10", train_limit=None, test_limit=None, model="resnet56",
                  width=16, activation="relu", ks=list(KS), seeds=list(range(6)),
                  **paper_length("paper", last=10), fluctuation_batches=8),
}


def resolve(cfg: dict[str, Any], n_train: int) -> dict[str, Any]:
    """``cfg`` with ``epochs`` and ``milestones`` for ``n_train`` training images. A config given in
    epochs is returned as it is; one given in steps (:func:`paper_length`) gets the fewest whole epochs
    that hold at least its steps at each rate."""
    if "steps_at_large_lr" not in cfg:
        return dict(cfg)
    per_epoch = steps_per_epoch(cfg, n_train)
    large = PAPER_EPOCHS_AT_LARGE_LR * steps_per_epoch(cfg, PAPER_IMAGES[cfg["dataset"]])
    after = [large] * 4 if cfg["steps_after"] == "paper" else cfg["steps_after"]
    bounds = np.cumsum([math.ceil(n / per_epoch) for n in [large, *after]]).tolist()
    return dict(cfg, epochs=bounds[-1], milestones=bounds[:-1])


def train_config(cfg: dict[str, Any], seed: int, *, fluctuation: bool = True) -> TrainConfig:
    """The trainer's config for one batch-selection ``seed`` (gradient fluctuation measured only
    where ``fluctuation``)."""
    keys = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "epochs",
            "gamma", "augment", "dtype")
    optional = ("safety", "every", "power_iterations",   # LocalCFL's settings, where the config has them
                "predict_every")
    return TrainConfig(ks=tuple(cfg["ks"]), milestones=tuple(cfg["milestones"]), batch_seed=seed,
                       fluctuation_batches=cfg["fluctuation_batches"] if fluctuation else 0,
                       **{k: cfg[k] for k in keys}, **{k: cfg[k] for k in optional if k in cfg})


def load_splits(cfg: dict[str, Any], device: torch.device) -> tuple[Split, Split, str]:
    """The config's train and test splits on ``device`` with a line describing them."""
    dtype = DTYPES[cfg["dtype"]]
    train_ds, test_ds = data.load(cfg["dataset"], "train"), data.load(cfg["dataset"], "test")
    train = Split.from_dataset(train_ds, limit=cfg["train_limit"], dtype=dtype, device=device)
    test = Split.from_dataset(test_ds, limit=cfg["test_limit"], dtype=dtype, device=device)
    line = (f"{train_ds.name} ({train_ds.variant}): {len(train.y):,} training and "
            f"{len(test.y):,} test images")
    return train, test, line


def prepare_device(device: torch.device) -> None:
    """Deterministic kernels, and one thread on a CPU (parallelism comes from worker processes)."""
    set_deterministic()
    if device.type == "cpu":
        torch.set_num_threads(1)


def build_model(cfg: dict[str, Any], train: Split) -> torch.nn.Module:
    """The config's network for the images of ``train``."""
    shape = {"width": cfg["width"]}
    if not cfg["model"].startswith("resnet"):
        shape["input_size"] = train.x.shape[-1]
    return models.build(cfg["model"], activation=cfg["activation"], in_channels=train.x.shape[1],
                        **shape)


def steps_per_epoch(cfg: dict[str, Any], n_train: int) -> int:
    """SGD steps in one epoch (the last, partial batch counts)."""
    return math.ceil(n_train / cfg["batch_size"])


def schedule(cfg: dict[str, Any], n_train: int) -> list[tuple[float, int]]:
    """(learning rate, steps at it) for each stage of the step schedule, on ``n_train`` images."""
    cfg = resolve(cfg, n_train)
    per_epoch, bounds = steps_per_epoch(cfg, n_train), [0, *cfg["milestones"], cfg["epochs"]]
    return [(cfg["lr"] * cfg["gamma"] ** i, (b - a) * per_epoch)
            for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]


@dataclass(frozen=True)
class SeedTask:
    """One batch-selection seed's lockstep copies: what a worker process needs to train them."""

    config: dict[str, Any]
    seed: int
    fluctuation: bool
    device: str
    checkpoint: Path


def make_trainer(cfg: dict[str, Any], seed: int, device: torch.device | str, *,
                 fluctuation: bool = True) -> LockstepTrainer:
    """The config's lockstep copies for batch-selection ``seed``, from the initial weights that every seed
    shares (as the paper's text says), with deterministic kernels on ``device``."""
    device = torch.device(device)
    prepare_device(device)
    train, test, _ = load_splits(cfg, device)
    torch.manual_seed(0)
    return LockstepTrainer(build_model(cfg, train), train, test,
                           train_config(cfg, seed, fluctuation=fluctuation), device)


def train_seed(task: SeedTask, tick: Tick) -> dict[str, np.ndarray]:
    """Train one seed's copies (resuming from its checkpoint); their history and final predictions."""
    trainer = make_trainer(task.config, task.seed, task.device, fluctuation=task.fluctuation)

    def ticking(epochs: range):
        for epoch in epochs:
            yield epoch
            tick()

    trainer.train(checkpoint=task.checkpoint, progress=ticking)
    return {**trainer.history.arrays(), "predictions": trainer.predictions().numpy(),
            "final_weights": torch.stack(trainer.flat_weights()).double().cpu().numpy(),
            "hvps": np.array(getattr(trainer.optimizers[0], "hvps", 0)), **region_records(trainer.optimizers[0])}


def at_first_rate(cfg: dict[str, Any], ks: list[int], *, epochs: int = 1, **changes: Any) -> dict[str, Any]:
    """``cfg`` (with ``changes``) cut to ``epochs`` epochs at its first learning rate, for the copies
    ``ks``: no decay, accuracy taken at the last epoch. A short probe of the large-rate regime."""
    return dict(cfg, **changes, ks=list(ks), epochs=epochs, milestones=[], last=1)


def nudged_distance(cfg: dict[str, Any], exponent: int, *, seed: int = 0, epochs: int = 1,
                    device: torch.device | str = "cpu") -> np.ndarray:
    r"""How a difference of a chosen size evolves under the config's training, apart from the
    k-perturbation: two :math:`k = 1` copies on identical batches, the second with every weight nudged
    to :math:`\theta_i (1 + s_i 2^{-e})` (random signs :math:`s_i = \pm 1`, :math:`e` = ``exponent``),
    at the config's first learning rate. Returns their RelL1 at the start and after each of ``epochs``
    epochs."""
    if isinstance(exponent, bool) or not isinstance(exponent, int) or not 1 <= exponent <= 64:
        raise ValueError(f"exponent must be an integer in 1..64; got {exponent!r}")
    trainer = make_trainer(at_first_rate(cfg, [1, 1], epochs=epochs), seed, device, fluctuation=False)
    signs = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainer.models[1].parameters():
            s = torch.randint(0, 2, p.shape, generator=signs).to(p) * 2 - 1
            p.mul_(1 + s * 2.0 ** -exponent)
    start = rel_l1(*trainer.flat_weights())
    return np.array([start, *trainer.train().arrays()["rel_l1"][:, 1]])


def region_records(opt: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    r"""A LocalCFL optimizer's step size :math:`\eta_r` and curvature :math:`\rho_r` of every region at the
    end, in parameter order (nothing for other optimizers)."""
    if not isinstance(opt, LocalCFL):
        return {}
    return {"region_steps": np.array([r for rates in opt.step_sizes() for r in rates]),
            "region_sharpness": np.array([r for rhos in opt.sharpness() for r in rhos])}


def rel_l1_between_seeds(weights: list[np.ndarray], copy: int = 0) -> float:
    """Mean RelL1 between the ``copy``-th copies (k = 1 by default) of every pair of seeds: how far
    apart independent batch orders take the weights (``weights``: per seed, copies × parameters)."""
    pairs = [(i, j) for i in range(len(weights)) for j in range(i + 1, len(weights))]
    return float(np.mean([rel_l1(weights[i][copy], weights[j][copy]) for i, j in pairs]))


def final_accuracy(acc: np.ndarray, last: int) -> np.ndarray:
    """Accuracy of each copy, the mean of its last ``last`` epochs: ks × seeds from seeds × epochs × ks."""
    return acc[:, -last:, :].mean(axis=1).T


def check_ready(ctx: RunContext) -> tuple[Split, Split, str]:
    """Load the data and build the network once before any training, so that a missing data set
    or a bad config fails at once; the splits and their description."""
    cfg = ctx.config
    train, test, described = load_splits(cfg, torch.device("cpu"))
    build_model(cfg, train)
    return train, test, described


def run(ctx: RunContext) -> RunOutput:
    """Train every seed's lockstep copies in worker processes (resuming from checkpoints) and
    summarise the spreads."""
    train, test, described = check_ready(ctx)
    cfg = resolve(ctx.config, len(train.y))
    tasks = [SeedTask(cfg, seed, i == 0, str(ctx.device), ctx.checkpoint_dir / f"seed{seed}.pt")
             for i, seed in enumerate(cfg["seeds"])]
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    histories = ctx.map(train_seed, tasks, units=cfg["epochs"], desc=ctx.experiment)

    def stack(key: str) -> np.ndarray:
        return np.stack([h[key] for h in histories])

    acc = stack("test_acc")
    final = final_accuracy(acc, cfg["last"])
    predictions = stack("predictions")
    along = {"prediction_steps": histories[0]["prediction_epochs"] * steps_per_epoch(cfg, len(train.y)),
             "predictions_along": stack("predictions_along").transpose(1, 0, 2, 3)} if cfg.get("predict_every") else {}
    stages = schedule(cfg, len(train.y))
    net = build_model(cfg, train)
    arrays = {
        "ks": np.asarray(cfg["ks"]), "seeds": np.asarray(cfg["seeds"]), "test_acc": acc,
        "train_loss": stack("train_loss"), "rel_l1": stack("rel_l1"),
        "rel_l1_layers": stack("rel_l1_layers"), "movement": stack("movement"),
        "grad_fluctuation": histories[0]["grad_fluctuation"], "final_acc": final,
        "std_over_k": spread.std_over_k(final), "std_over_seeds": spread.std_over_seeds(final),
        "predictions": predictions.astype(np.int8), "test_labels": test.y.numpy().astype(np.int8), **along,
    }
    summary = {
        "data": described,
        "model": f"{cfg['model']} ({cfg['activation']}, {models.count_parameters(net):,} parameters)",
        "steps_per_epoch": steps_per_epoch(cfg, len(train.y)),
        "steps_at_large_lr": stages[0][1], "total_steps": sum(n for _, n in stages),
        "schedule": [[lr, n] for lr, n in stages], "paper_protocol": PAPER_PROTOCOL,
        **spread.summarize(predictions, test.y.numpy()),
        "grad_fluctuation_median": (float(np.median(histories[0]["grad_fluctuation"]))
                                    if cfg["fluctuation_batches"] else None),
        "rel_l1_between_seeds": rel_l1_between_seeds([h["final_weights"] for h in histories]),
        "layers": [n for n, p in net.named_parameters() if p.ndim > 1],
    }
    return RunOutput(arrays=arrays, summary=summary)


FEW_SEEDS = dict(seeds=[0, 1, 2])
"""6 k × 3 seeds: the issue's minimum for the App. C variants (Table 1 and Swish keep six)."""

VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, dict[str, Any]]]] = {
    "swish": ("App. C Table 6: Swish activation", dict(activation="swish"), {}),
    "adam": ("App. C Table 7: perturbed Adam (lr 1e-3)", dict(optimizer="adam", lr=1e-3),
             {"book": dict(FEW_SEEDS, width=12), "gpu": FEW_SEEDS}),
    "float64": ("App. C Table 8: float64 weights and data", dict(dtype="float64"),
                {"book": dict(FEW_SEEDS, width=4), "gpu": FEW_SEEDS}),
    "vgg16": ("App. C: VGG16-BN, Swish", dict(model="vgg16_bn", activation="swish"),
              {"ci": dict(width=8), "book": dict(FEW_SEEDS, width=8), "gpu": dict(FEW_SEEDS, width=32),
               "paper": dict(width=64)}),
    "fashion-mnist": ("App. C: Fashion-MNIST, Swish",
                      dict(dataset="fashion_mnist", activation="swish"),
                      {"book": dict(FEW_SEEDS, epochs=8, milestones=[6, 7], last=1), "gpu": FEW_SEEDS}),
}
"""The appendix variants: the same protocol with these config changes, and per-scale changes
(fewer seeds; float64 convolutions are four times slower on a CPU, so the float64 ``book`` network
is the width-4 ResNet-8; with Adam the width-8 ResNet-8 ends at 58.6 %, below the 60 % a ``book`` run
must reach, so the Adam ``book`` network is the width-12 one (63.4 % for one seed's k = 1 copy);
VGG16-BN is narrowed to 1/8 of its channels; Fashion-MNIST has 469 steps an epoch, so 6 epochs give
2,814 steps at lr 0.1)."""


def stored_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes a config gives the stored arrays (checked when a run is loaded)."""
    n_seeds, n_ks = len(cfg["seeds"]), len(cfg["ks"])
    grid = (n_seeds, cfg["epochs"], n_ks) if "epochs" in cfg else None   # a schedule in steps has its
    shapes = {"test_acc": grid, "rel_l1": grid} if grid else {}         # epochs once the data are known
    return shapes | {"final_acc": (n_ks, n_seeds), "ks": (n_ks,), "seeds": (n_seeds,)}


def _experiment(name: str, summary: str, overrides: dict[str, Any],
                per_scale: dict[str, dict[str, Any]] | None = None) -> Experiment:
    per_scale = per_scale or {}
    configs = {scale: dict(cfg, **overrides, **per_scale.get(scale, {}))
               for scale, cfg in CONFIGS.items()}
    return Experiment(name=name, summary=summary, chapter="06-perturbed-sgd", configs=configs,
                      func=run, dtype="float32", shapes=stored_shapes)


SWISH_LONG: dict[str, dict[str, Any]] = {
    "ci": dict(CONFIGS["ci"], activation="swish", ks=[1, 3], seeds=[0, 1, 2], epochs=4, milestones=[2, 3],
               fluctuation_batches=0, predict_every=2),
    "book": dict(PROTOCOL, **CIFAR, **paper_length([80, 80]), model="resnet8", width=8, activation="swish",
                 ks=[1, 3, 5], seeds=list(range(6)), fluctuation_batches=0, predict_every=25),
}
"""The Swish network of App. C Table 6 at the paper's length: 15,640 steps at lr 0.1 (391 epochs of the
CIFAR-10 subset's 40 steps), then 80 at 0.01 and 80 at 0.001; 3 k × 6 seeds; every copy's prediction of
every test image stored every 25 epochs (1,000 steps), so that the churn over k can be followed against the
steps beside the churn over seeds. Accuracy and churn from the last epoch."""

SPREAD_RUNS = ("perturbed-sgd", *(f"perturbed-sgd-{key}" for key in VARIANTS), "perturbed-sgd-swish-long")
"""The perturbed-SGD grids (k × seeds) whose spreads the verdict rule judges."""

EXPERIMENT = (
    Experiment(name="perturbed-sgd-swish-long", chapter="06-perturbed-sgd", configs=SWISH_LONG, func=run,
               dtype="float32", shapes=stored_shapes,
               summary="App. C Table 6 (Swish) at the paper's 15,640 steps at lr 0.1, predictions every 1,000 steps"),
    _experiment("perturbed-sgd",
                "Table 1 / Fig. 3 left: lockstep perturbed-SGD copies (k = 1..11) over batch seeds", {}),
    *(_experiment(f"perturbed-sgd-{key}", summary, overrides, per_scale)
      for key, (summary, overrides, per_scale) in VARIANTS.items()),
)


def layer_onsets(rel_l1_layers: np.ndarray, copy: int, threshold: float) -> list[int]:
    """Per layer, the first epoch (0-based) at which the RelL1 of copy ``copy`` to k = 1, averaged over
    seeds, exceeds ``threshold`` (-1 if never); ``rel_l1_layers`` is seeds × epochs × ks × layers."""
    mean = np.asarray(rel_l1_layers)[:, :, copy, :].mean(axis=0)       # epochs × layers
    above = mean > threshold
    return [int(np.argmax(col)) if col.any() else -1 for col in above.T]


TRAIN_IMAGES = {"cifar10": 5_085, "fashion_mnist": 60_000}
"""Training images of the offline data sets the configs use (``train_limit = None``: all of them)."""


def protocol(name: str, scale: str = "book") -> dict[str, Any]:
    """What experiment ``name`` trains at ``scale``, in numbers, without running it: images, steps at
    each learning rate, copies and seeds (for the chapter's table beside the paper's protocol)."""
    from pdeeos.book.experiments import get

    cfg = get(name).config(scale)
    n_train = cfg["train_limit"] or TRAIN_IMAGES[cfg["dataset"]]
    stages = schedule(cfg, n_train)
    return {"experiment": name, "network": f"{cfg['model']} width {cfg['width']}, {cfg['activation']}",
            "optimizer, dtype": f"{cfg['optimizer']}, {cfg['dtype']}", "training images": n_train,
            "steps at the large lr": stages[0][1], "steps after it": sum(n for _, n in stages[1:]),
            "decays": len(stages) - 1, "k × seeds": f"{len(cfg['ks'])} × {len(cfg['seeds'])}",
            "steps @ lr": ", ".join(f"{n:,} @ {lr:g}" for lr, n in stages)}


APART_SHARE = 0.5
"""The k-copies count as apart when their distance to the k = 1 copy reaches this share of the distance
between independent runs (the seeds)."""
REPRODUCED_RATIO = 0.8
"""Equivalence margin of "as large as": the churn ratio's seed-level interval lies above it."""
ABSENT_RATIO = 0.1
"""Margin of "no effect": the churn ratio's seed-level interval lies below it."""

VERDICT_RULE = (
    "ρ = churn over k / churn over seeds (test images two copies classify differently, at the last epoch), "
    "with its 95 % delete-one-seed jackknife interval [lo, hi] (the training run is the unit): reproduced if "
    f"lo ≥ {REPRODUCED_RATIO} (as large as within the margin); not reproduced if hi < {ABSENT_RATIO}, or if "
    f"no k-copy differs from its k = 1 copy on any test image in any seed; partly if {ABSENT_RATIO} ≤ lo and "
    f"hi < {REPRODUCED_RATIO}; inconclusive if the interval reaches over {ABSENT_RATIO} or "
    f"{REPRODUCED_RATIO}, or is undefined; and, unless reproduced, inconclusive while the k-copies are still "
    f"approaching: less than {APART_SHARE} × the RelL1 between seeds apart at the end of the large-lr phase, "
    "and growing fast enough (log-linear fit over its last fifth) to get there within the paper's number of "
    "steps at the large lr. No p-value enters; the permutation test of exchangeability is reported beside "
    "every verdict as the seed imprint that remains"
)
"""The rule by which :func:`verdict` turns a perturbed-SGD run into a ledger verdict, fixed before the
paper-length Swish run was seen (the chapter prints it with the commit that set it)."""
OLD_VERDICT_RULE = (
    "churn ratio's 95 % interval over test images [lo, hi]: reproduced if lo ≥ 0.8 and a two-way ANOVA finds "
    "no seed effect (p ≥ 0.05); not reproduced if hi < 0.1; partly if 0.1 ≤ lo and hi < 0.8 (or lo ≥ 0.8 "
    "with a seed effect); inconclusive if it straddles 0.1 or 0.8; the same still-approaching clause"
)
"""The rule the book used before, kept to print each verdict under both."""


def copies_distance(summary: dict[str, Any], rel_l1: np.ndarray) -> np.ndarray:
    """The k-copies' distance to their k = 1 copy after each epoch of the large-learning-rate phase: the
    median RelL1 over seeds and k > 1 (``rel_l1``: seeds × epochs × ks)."""
    large = summary["steps_at_large_lr"] // summary["steps_per_epoch"]
    return np.median(rel_l1[:, :large, 1:], axis=(0, 2))


def approach(summary: dict[str, Any], rel_l1: np.ndarray) -> dict[str, float]:
    r"""How far the k-copies are from the k = 1 copy at the end of the large-learning-rate phase (median
    RelL1 :math:`d` over seeds and k > 1, from ``rel_l1``: seeds × epochs × ks) against independent runs,
    their growth rate :math:`g` (least-squares slope of :math:`\log d` per step over the last fifth of
    that phase), and the steps :math:`\log(s\,d_{\text{seeds}}/d)/g` they would still need to be apart
    at that rate (0 if apart, infinite if not growing)."""
    per_epoch = summary["steps_per_epoch"]
    median = copies_distance(summary, rel_l1)
    large = len(median)
    window = np.arange(large - max(large // 5, 2), large)
    rate = float(np.polyfit(window * per_epoch, np.log(median[window]), 1)[0])
    gap = np.log(APART_SHARE * summary["rel_l1_between_seeds"] / median[-1])
    needed = 0.0 if gap <= 0 else (float(gap / rate) if rate > 0 else float("inf"))
    return {"copies_rel_l1": float(median[-1]), "seeds_rel_l1": summary["rel_l1_between_seeds"],
            "growth_per_1000_steps": float(np.exp(1000 * rate)), "steps_to_apart": needed}


def drift_exponent(summary: dict[str, Any], rel_l1: np.ndarray, *, from_step: int = 400) -> np.ndarray:
    r"""Per seed and copy :math:`k > 1`, the exponent :math:`p` of a power law :math:`d(t) \propto t^p`
    for the copy's RelL1 :math:`d` to the :math:`k = 1` copy after :math:`t` steps: the least-squares
    slope of :math:`\log d` against :math:`\log t` over the snapshots from step ``from_step`` to the end
    of the large-learning-rate phase (``rel_l1``: seeds × epochs × ks, one snapshot an epoch). For a
    power law the exponent does not depend on ``from_step``; for an exponential drift it grows with it.
    Returns seeds × (ks − 1)."""
    per_epoch = summary["steps_per_epoch"]
    steps = per_epoch * np.arange(1, summary["steps_at_large_lr"] // per_epoch + 1)
    window = steps >= from_step
    if window.sum() < 2:
        raise ValueError(f"from_step {from_step} leaves fewer than two snapshots before step {steps[-1]}")
    d = rel_l1[:, :len(steps), 1:][:, window]                       # seeds × snapshots × copies
    if not ((d > 0) & np.isfinite(d)).all():
        raise ValueError("a power law needs a positive RelL1 at every fitted snapshot; some copy is at 0 "
                         "(identical to k = 1) or not finite")
    slopes = np.polyfit(np.log(steps[window]), np.log(d.transpose(1, 0, 2).reshape(window.sum(), -1)), 1)[0]
    return slopes.reshape(d.shape[0], d.shape[2])


def ratio_verdict(summary: dict[str, Any]) -> str:
    """The part of :data:`VERDICT_RULE` that reads the churn ratio's seed-level interval."""
    if summary["churn_over_k"] == 0:
        return "not reproduced"
    if summary.get("churn_ratio_seed_ci") is None:
        return "inconclusive"
    lo, hi = summary["churn_ratio_seed_ci"]
    if lo >= REPRODUCED_RATIO:
        return "reproduced"
    if hi < ABSENT_RATIO:
        return "not reproduced"
    return "partly" if lo >= ABSENT_RATIO and hi < REPRODUCED_RATIO else "inconclusive"


def old_ratio_verdict(summary: dict[str, Any]) -> str:
    """The ratio part of :data:`OLD_VERDICT_RULE` (image-level interval, ANOVA veto at p = 0.05), read
    from a summary of :func:`pdeeos.spread.summarize`."""
    lo, hi = summary["churn_ratio_image_ci"] or (float("nan"),) * 2
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo >= REPRODUCED_RATIO:
        p = summary["anova_p_seed"]
        return "reproduced" if p is None or p >= 0.05 else "partly"
    if hi < ABSENT_RATIO:
        return "not reproduced"
    return "partly" if lo >= ABSENT_RATIO and hi < REPRODUCED_RATIO else "inconclusive"


def verdict(summary: dict[str, Any], rel_l1: np.ndarray, *, rule: str = "new") -> str:
    """A run's verdict under :data:`VERDICT_RULE` (``rule="old"``: :data:`OLD_VERDICT_RULE`): the
    churn ratio's interval, made inconclusive where the k-copies are still approaching."""
    found = ratio_verdict(summary) if rule == "new" else old_ratio_verdict(summary)
    needed = approach(summary, rel_l1)["steps_to_apart"]
    budget = summary["paper_protocol"]["steps_at_large_lr"]
    approaching = 0 < needed and summary["steps_at_large_lr"] + needed <= budget
    return "inconclusive" if approaching and found != "reproduced" else found


def churn_along(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The churn over k and over seeds (%) and their ratio with its seed-level (jackknife) 95 % interval
    at every stored snapshot of a run that records predictions along training (``predictions_along``:
    snapshots × seeds × ks × images, at ``prediction_steps``): when, if ever, the last bit scrambles the
    predictions as much as the batch order does."""
    if "predictions_along" not in arrays:
        raise ValueError("the run stores no predictions along training (its config has no predict_every)")
    rows = []
    for snapshot in arrays["predictions_along"]:
        s = spread.churn(snapshot) | spread.churn_ratio_jackknife(snapshot)
        ci = s["churn_ratio_seed_ci"] or [np.nan, np.nan]
        ratio = np.nan if s["churn_ratio"] is None else s["churn_ratio"]
        rows.append([s["churn_over_k"], s["churn_over_seeds"], ratio, *ci])
    table = np.array(rows)
    return {"steps": np.asarray(arrays["prediction_steps"]), "churn_over_k": table[:, 0],
            "churn_over_seeds": table[:, 1], "churn_ratio": table[:, 2], "churn_ratio_seed_ci": table[:, 3:]}


def summary_commit(run: results.StoredRun) -> str:
    """The commit of the code that computed a stored run's summary: the one that recomputed it from the
    stored arrays (:func:`pdeeos.book.results.replace_summary`), else the run's own."""
    return run.provenance.get("summary_recomputed", run.provenance)["git_commit"]


def resummarize(run: results.StoredRun) -> dict[str, Any]:
    """A stored run's summary with its spread statistics recomputed from its stored predictions by the
    current :func:`pdeeos.spread.summarize` (no re-training), the rest kept."""
    return spread.resummarized(run.summary, run.arrays["predictions"], run.arrays["test_labels"])


def spread_row(summary: dict[str, Any], rel_l1: np.ndarray) -> dict[str, Any]:
    """A stored run's spreads, the churn ratio with its seed-level interval and the seed imprint, and its
    verdict under :data:`VERDICT_RULE` and :data:`OLD_VERDICT_RULE`, as one table row."""
    def interval(ci: list[float] | None, digits: int = 2) -> str:
        return "undefined" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    a, null = approach(summary, rel_l1), summary["exchangeability_null"]
    return {"mean acc (%)": summary["mean_acc"],
            "pooled STD over k (%)": summary["pooled_std_over_k"],
            "95 % χ² CI (k)": interval(summary["pooled_std_over_k_ci"]),
            "pooled STD over seeds (%)": summary["pooled_std_over_seeds"],
            "95 % χ² CI (seeds)": interval(summary["pooled_std_over_seeds_ci"]),
            "churn over k (%)": summary["churn_over_k"], "churn over seeds (%)": summary["churn_over_seeds"],
            "churn ratio": summary["churn_ratio"],
            "95 % CI over seeds (jackknife)": interval(summary.get("churn_ratio_seed_ci")),
            "95 % CI over images (conditional)": interval(summary["churn_ratio_image_ci"]),
            "exchangeable copies' ratio (95 %)": interval(None if null is None else [null[0], null[2]]),
            "seed imprint": summary["seed_imprint"],
            "RelL1 k-copies / seeds": f"{a['copies_rel_l1']:.2g} / {a['seeds_rel_l1']:.2g}",
            "k-copies' growth per 1,000 steps": f"×{a['growth_per_1000_steps']:.2f}",
            "verdict": verdict(summary, rel_l1), "verdict, old rule": verdict(summary, rel_l1, rule="old")}
