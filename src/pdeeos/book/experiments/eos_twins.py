r"""``eos-twins``: do last-bit twins start to diverge when :math:`\eta\lambda_{\max}` reaches 2? (chapter 7)

Full-batch gradient descent in float64 with the :math:`k = 1` and :math:`k = 3` copies in lockstep
(:func:`pdeeos.pde.eos_networks.train_gd` with ``twin_k=3``): the RelL1 distance between them at every step
and the Lanczos sharpness of the :math:`k = 1` copy every ``sharpness_every`` steps, for

* Fig. 8's tanh networks (width 200, the CIFAR-10 subset, cross-entropy, no weight decay) at
  :math:`\eta = 2/30`, where progressive sharpening brings :math:`\eta\lambda_{\max}` to 2 within about 150
  steps, and at :math:`\eta/4` for four times the steps (the same :math:`\eta \times` steps), which stays
  below the Edge of Stability;
* Fig. 7's one-channel Swish CNNs (MNIST 0/1, 1 and 3 layers, no weight decay) at Fig. 7's step sizes.

Every run is a task of :meth:`pdeeos.book.experiments.RunContext.map` with its own checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos.pde import eos_networks as en
from pdeeos import lyapunov
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.eos_fc_tanh import ETA, N_CLASSES, load_data

ONSET = 1e-10
"""RelL1 at which the twins count as diverging: six orders of magnitude above float64 rounding (the twins
start identical, rounding sets them a few units of 1e-16 apart, and without amplification they stay within
about 1e-13 over these runs)."""

PERSIST = 5
"""The onset is the first step from which the RelL1 stays at or above :data:`ONSET` for this many steps
(with 9 to 27 weights, one weight passing near zero makes one-step spikes of the RelL1)."""

LOOKBACK = 20
r"""Steps before the onset over which :func:`summarise` takes the largest :math:`\eta\lambda_{\max}`."""


@dataclass(frozen=True)
class TwinTask:
    """One network at one step size."""

    family: str          # "tanh" or "cnn"
    depth: int
    eta: float
    steps: int
    sharpness_every: int
    config: dict
    checkpoint: Path

    @property
    def key(self) -> str:
        return f"{self.family}_d{self.depth}_eta{self.eta:.6g}"


def network_and_data(family: str, depth: int, cfg: dict) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The initial network of a run (``family`` "tanh": Fig. 8's on the CIFAR-10 subset; "cnn": Fig. 7's on
    MNIST 0/1) and its training images and labels."""
    if family == "tanh":
        x, y, _ = load_data(cfg["tanh_images"])
        return en.TanhMLP(depth, x[0].numel(), N_CLASSES, width=cfg["width"], seed=cfg["seed"]), x, y
    x, y, _ = en.mnist01(cfg["cnn_images"])
    return en.ConvChain(depth, cfg["beta"], seed=cfg["seed"]), x, y


def run_twins(task: TwinTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Train the twins of one task (resuming from its checkpoint); ``tick`` after every 10 % of the steps."""
    cfg = task.config
    torch.set_num_threads(1)
    model, x, y = network_and_data(task.family, task.depth, cfg)
    marks = set(np.linspace(0, task.steps, 11).astype(int)[1:])

    def progress(steps):
        for t in steps:
            yield t
            if t in marks:
                tick()

    h = en.train_gd(model, x, y, eta=task.eta, steps=task.steps, sharpness_every=task.sharpness_every,
                    checkpoint=task.checkpoint, checkpoint_every=cfg["checkpoint_every"], progress=progress,
                    twin_k=3)
    return {"loss": h.loss, "rel_l1": h.twin_rel_l1, "sharpness_steps": h.sharpness_steps,
            "sharpness": h.sharpness}


def onset_step(rel: np.ndarray) -> int | None:
    """First step from which the RelL1 stays at or above :data:`ONSET` for :data:`PERSIST` steps (or to the end)."""
    above = np.asarray(rel) >= ONSET
    for n in np.flatnonzero(above):
        if above[n:n + PERSIST].all():
            return int(n)
    return None


def summarise(out: dict[str, np.ndarray], eta: float) -> dict[str, Any]:
    """When :math:`\\eta\\lambda_{\\max}` first reaches 2, the onset (:func:`onset_step`), and the largest
    :math:`\\eta\\lambda_{\\max}` measured in the :data:`LOOKBACK` steps before it."""
    normalised = eta * out["sharpness"]
    eos = lyapunov.first_at_least(normalised, 2.0)
    onset = onset_step(out["rel_l1"])
    steps = out["sharpness_steps"]
    before = (steps < onset) & (steps >= onset - LOOKBACK) if onset is not None else np.zeros(steps.shape, bool)
    return {"first_step_eta_lambda_at_2": None if eos is None else int(steps[eos]),
            "onset_step": onset,
            "eta_lambda_at_onset": float(normalised[before].max()) if before.any() else None,
            "max_eta_lambda": float(np.nanmax(normalised)) if normalised.size else None,
            "final_rel_l1": float(out["rel_l1"][-1]), "max_rel_l1": float(np.nanmax(out["rel_l1"]))}


def tasks(ctx: RunContext) -> list[TwinTask]:
    """The tanh runs (each depth at eta and eta / slow_factor) and the CNN runs (each depth and Fig. 7 step size)."""
    cfg = ctx.config
    found = []
    for depth in cfg["tanh_depths"]:
        for eta, steps, every in ((cfg["tanh_eta"], cfg["tanh_steps"], cfg["tanh_sharpness_every"]),
                                  (cfg["tanh_eta"] / cfg["slow_factor"], cfg["tanh_steps"] * cfg["slow_factor"],
                                   cfg["tanh_sharpness_every"] * cfg["slow_factor"])):
            found.append(TwinTask("tanh", depth, eta, steps, every, cfg, Path()))
    for depth in cfg["cnn_depths"]:
        for eta in cfg["cnn_etas"]:
            found.append(TwinTask("cnn", depth, eta, cfg["cnn_steps"], cfg["cnn_sharpness_every"], cfg, Path()))
    return [TwinTask(t.family, t.depth, t.eta, t.steps, t.sharpness_every, cfg, ctx.checkpoint_dir / f"{t.key}.pt")
            for t in found]


def run(ctx: RunContext) -> RunOutput:
    """Every task in worker processes; arrays keyed by task, one summary per task."""
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    todo = tasks(ctx)
    outs = ctx.map(run_twins, todo, units=10, desc=ctx.experiment)
    arrays, summary = {}, {"onset_rel_l1": ONSET, "runs": [t.key for t in todo]}
    for task, out in zip(todo, outs):
        arrays |= {f"{task.key}_{name}": value for name, value in out.items()}
        summary[task.key] = summarise(out, task.eta) | {"family": task.family, "depth": task.depth,
                                                         "eta": task.eta, "steps": task.steps}
    return RunOutput(arrays=arrays, summary=summary)


_BASE = {"width": 200, "seed": 0, "beta": 1.0, "tanh_eta": ETA, "slow_factor": 4, "checkpoint_every": 50}

EXPERIMENT = Experiment(
    name="eos-twins",
    summary="k = 1 / k = 3 twins under full-batch GD with the sharpness: Fig. 8 tanh nets at 2/30 and 2/120, "
            "Fig. 7 CNNs",
    chapter="07-edge-of-stability",
    configs={
        "ci": _BASE | {"tanh_images": 128, "tanh_depths": [2], "tanh_steps": 20, "tanh_sharpness_every": 5,
                       "cnn_images": 64, "cnn_depths": [1, 3], "cnn_etas": [1.0, 4.0], "cnn_steps": 20,
                       "cnn_sharpness_every": 5},
        "book": _BASE | {"tanh_images": None, "tanh_depths": [2], "tanh_steps": 400, "tanh_sharpness_every": 10,
                         "cnn_images": 256, "cnn_depths": [1, 3], "cnn_etas": [0.5, 2.0, 4.0, 8.0],
                         "cnn_steps": 300, "cnn_sharpness_every": 1},
    },
    func=run,
)
