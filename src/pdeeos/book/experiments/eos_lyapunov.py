r"""``eos-lyapunov``: the top Lyapunov exponents of gradient descent along chapter 7's runs, by phase.

For every run of ``eos-twins`` but the slow tanh one (Fig. 7's one-channel Swish CNNs on MNIST 0/1 and Fig. 8's
tanh network on the CIFAR-10 subset, full batch, float64, no weight decay), :func:`pdeeos.tangent.log_stretches` carries
``vectors`` tangent vectors through the tangent map :math:`I - \eta H` of every step (one Hessian-vector
product each, re-orthonormalised by QR), from the same initial weights and at the same step size. Stored per
run: the log stretches ``(steps, vectors)`` and the loss along the trajectory they were measured on.

:func:`phase_exponents` cuts a run into phases at the step where :math:`\eta\lambda_{\max}` first reaches 2
(read from ``eos-twins``, measured along the same run): *before the edge*, the *catapult* (the
:data:`CATAPULT` steps from that step on) and *after*; runs that never reach the edge have one phase.
:func:`mechanism` says how the map treats a difference after the catapult (:data:`MECHANISM_RULE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos import checkpoints, lyapunov, tangent
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.eos_twins import EXPERIMENT as TWINS
from pdeeos.book.experiments.eos_twins import network_and_data
from pdeeos.book.experiments.eos_twins import tasks as twin_tasks
from pdeeos.pde import eos_networks as en

CATAPULT = 50
r"""Steps after :math:`\eta\lambda_{\max}` first reaches 2 that make the catapult phase."""
NEUTRAL = 0.005
r"""A top exponent within this of 0 per step (a difference changes by less than :math:`e^{0.5}` in 100 steps)
counts as neutral, whatever its interval."""
MECHANISM_RULE = (f"after the catapult (or over the whole run if it never reaches the edge), the top exponent "
                  f"Λ1 with its 95 % interval over 5 blocks: chaotic if the interval lies above {NEUTRAL} per step, "
                  f"contracting if it lies below -{NEUTRAL}, neutral otherwise (|Λ1| < {NEUTRAL} or the interval "
                  "straddles it)")
"""How :func:`mechanism` reads a run's late top exponent, fixed before the run was stored."""
MECHANISMS: tuple[str, ...] = ("chaotic", "neutral", "contracting")


@dataclass(frozen=True)
class Phase:
    """One phase of a run: its name, its steps ``[start, stop)``, the exponents :math:`\\Lambda_1 \\ge \\dots`
    over it, and the 95 % interval of :math:`\\Lambda_1` over five blocks."""

    name: str
    start: int
    stop: int
    exponents: np.ndarray
    low: float
    high: float


def phase_exponents(log_stretch: np.ndarray, edge_step: int | None) -> list[Phase]:
    """The phases of a run (``log_stretch`` of shape ``(steps, vectors)``) around ``edge_step``, the first step
    with :math:`\\eta\\lambda_{\\max} \\ge 2` (``None``: never), each with its exponents; phases shorter than
    ten steps are left out."""
    steps = log_stretch.shape[0]
    if edge_step is None:
        cuts = [("below the edge", 0, steps)]
    else:
        end = min(edge_step + CATAPULT, steps)
        cuts = [("before the edge", 0, edge_step), ("catapult", edge_step, end), ("after", end, steps)]
    phases = []
    for name, start, stop in cuts:
        if stop - start < 10:
            continue
        window = log_stretch[start:stop].T
        low, high = lyapunov.exponent_interval(window[0], blocks=5)
        phases.append(Phase(name, start, stop, lyapunov.exponent(window), float(low), float(high)))
    return phases


def mechanism(phases: list[Phase]) -> str:
    """:data:`MECHANISM_RULE` applied to the last phase."""
    last = phases[-1]
    if last.low > NEUTRAL:
        return "chaotic"
    if last.high < -NEUTRAL:
        return "contracting"
    return "neutral"


@dataclass(frozen=True)
class TangentTask:
    """One run of ``eos-twins``, with where its finished arrays are kept."""

    family: str
    depth: int
    eta: float
    steps: int
    key: str
    config: dict
    checkpoint: Path


def run_tangent(task: TangentTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """The log stretches and losses of one run (read back if its finished arrays are there)."""
    out = checkpoints.computed_once(task.checkpoint, lambda: tangent_run(task))
    tick()
    return out


def tangent_run(task: TangentTask) -> dict[str, np.ndarray]:
    """The log stretches of one run's tangent vectors and the loss along it."""
    torch.set_num_threads(1)
    model, x, y = network_and_data(task.family, task.depth, task.config)
    losses: list[float] = []
    stretch = tangent.log_stretches(model, (lambda m: en.task_loss(m, x, y) for _ in range(task.steps)),
                                    lr=task.eta, vectors=task.config["vectors"], losses=losses)
    return {"log_stretch": stretch.reshape(task.steps, -1), "loss": np.array(losses)}


def run(ctx: RunContext) -> RunOutput:
    """Every run of ``eos-twins`` at this scale (its config's networks, step sizes and steps) but the slow tanh
    run at :math:`\\eta/4`, which stays below the edge (four times the steps, at 4 Hessian-vector products a
    step: an hour on a CPU core), in workers."""
    cfg = ctx.config
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    todo = [TangentTask(t.family, t.depth, t.eta, t.steps, t.key, cfg, ctx.checkpoint_dir / f"{t.key}.npz")
            for t in twin_tasks(ctx) if t.family == "cnn" or t.eta == cfg["tanh_eta"]]
    outs = ctx.map(run_tangent, todo, units=1, desc=ctx.experiment)
    arrays = {f"{t.key}_{name}": value for t, out in zip(todo, outs) for name, value in out.items()}
    summary: dict[str, Any] = {"runs": [t.key for t in todo], "vectors": cfg["vectors"]}
    for task, out in zip(todo, outs):
        whole = lyapunov.exponent(out["log_stretch"].T)
        summary[task.key] = {"family": task.family, "depth": task.depth, "eta": task.eta, "steps": task.steps,
                             "exponents": [float(e) for e in whole]}
    return RunOutput(arrays=arrays, summary=summary)


def _shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    shapes = {f"tanh_d{depth}_eta{cfg['tanh_eta']:.6g}_log_stretch": (cfg["tanh_steps"], cfg["vectors"])
              for depth in cfg["tanh_depths"]}
    for depth in cfg["cnn_depths"]:
        for eta in cfg["cnn_etas"]:
            shapes[f"cnn_d{depth}_eta{eta:.6g}_log_stretch"] = (cfg["cnn_steps"], cfg["vectors"])
    return shapes


def _config(scale: str) -> dict:
    return TWINS.configs[scale] | {"vectors": 4}


EXPERIMENT = Experiment(
    name="eos-lyapunov",
    summary="the top four Lyapunov exponents (QR on tangent vectors, Hessian-vector products) along the runs of "
            "eos-twins: Fig. 7's CNNs and Fig. 8's tanh network, before the edge, during the catapult, after it",
    chapter="07-edge-of-stability",
    configs={"ci": _config("ci"), "book": _config("book")},
    func=run,
    shapes=_shapes,
)
