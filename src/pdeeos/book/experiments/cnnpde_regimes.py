r"""``cnnpde-regimes``: where the one-layer CNN PDE is stable, periodic, chaotic or blows up, and which
of its runs amplify rounding errors.

A grid of step sizes (finer near the boundaries and over the whole restrained range), each run with the
official protocol (256x256 checkerboard, 32x32 kernel, alpha = 20, beta = 1, 1000 steps): its loss, the
log stretches of its tangent map (:func:`pdeeos.pde.cnnpde.simulate` with ``tangent_seed``), and the RelL1
distance at every iteration to its :math:`k = 3` twin; classified by :func:`pdeeos.pde.cnnpde.classify` from
the loss and the exponent over the second half. At the paper's eight step sizes, besides: the RelL1
distance between the FFT scheme in float64 and (i) the same scheme by direct convolution, (ii) the FFT
scheme in float32 (over ``twin_steps`` iterations, as direct convolution is slow), and the normalised
sharpness :math:`\Delta t\,\lambda_{\max}` of every iterate (Fig. 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pdeeos import checkpoints, lyapunov
from pdeeos.pde import cnnpde
from pdeeos.book.experiments import Experiment, RunContext, RunOutput


@dataclass(frozen=True)
class StepTask:
    """One step size of the fine grid, with where its finished arrays are kept."""

    dt: float
    config: dict
    checkpoint: Path


def run_step(task: StepTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Loss, tangent log stretches and twin RelL1 of one step size (resumed from its checkpoint if there)."""
    out = checkpoints.computed_once(task.checkpoint, lambda: step_size_run(task))
    tick()
    return out


def step_size_run(task: StepTask) -> dict[str, np.ndarray]:
    """The k = 1 run (with its tangent map) and the k = 3 twin at one step size."""
    cfg = task.config
    torch.set_num_threads(cfg["threads"])
    image, kernel0 = cnnpde.checkerboard(cfg["image"]), cnnpde.official_kernel(cfg["kernel"])
    model = {"alpha": cfg["alpha"], "beta": cfg["beta"], "steps": cfg["steps"], "record_every": 1}
    one = cnnpde.simulate(image, kernel0, [task.dt], tangent_seed=cfg["tangent_seed"], **model)
    three = cnnpde.simulate(image, kernel0, [task.dt], k=3, **model)
    return {"loss": one.loss[0], "log_stretch": one.log_stretch[0],
            "rel_l1_k3": cnnpde.rel_l1_over_iterations(one.history, three.history)[0]}


def run(ctx: RunContext) -> RunOutput:
    """Classify the fine grid by loss and Lyapunov exponent, with twins; measure the implementation and
    precision twins and the sharpness at the paper's step sizes."""
    cfg = ctx.config
    torch.set_num_threads(cfg["threads"])
    image, kernel0 = cnnpde.checkerboard(cfg["image"]), cnnpde.official_kernel(cfg["kernel"])
    model = {"alpha": cfg["alpha"], "beta": cfg["beta"], "steps": cfg["steps"]}
    fine = np.unique(np.round(np.concatenate([np.arange(*grid) for grid in cfg["dt_grids"]]), 6))
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = [StepTask(float(dt), cfg, ctx.checkpoint_dir / f"dt{dt:.6f}.npz") for dt in fine]
    steps = ctx.map(run_step, tasks, units=1, desc="fine grid")
    fine_loss, stretch, twin = (np.stack([s[key] for s in steps]) for key in ("loss", "log_stretch", "rel_l1_k3"))
    exponent = lyapunov.exponent(stretch, discard=cfg["steps"] // 2)
    twins = {}
    for name, options in ctx.progress({"fft": {}, "direct": {"method": "direct"},
                                       "float32": {"dtype": torch.float32}}.items(), desc="twins"):
        twins[name] = cnnpde.simulate(image, kernel0, cfg["dts"], record_every=1, **options,
                                      **(model | {"steps": cfg["twin_steps"]}))
    reference = twins["fft"]
    paper = cnnpde.simulate(image, kernel0, cfg["dts"], k=[1, 3], record_every=1, **model)
    sharp = cnnpde.sharpness_along(paper.history[0], image, alpha=cfg["alpha"], beta=cfg["beta"])
    paper_exponent = np.array([exponent[np.isclose(fine, dt)][0] for dt in cfg["dts"]])
    return RunOutput(
        arrays={
            "fine_dts": fine,
            "fine_loss": fine_loss,
            "fine_log_stretch": stretch,
            "fine_exponent": exponent,
            "fine_class": cnnpde.classify(fine_loss, exponent),
            "fine_period": cnnpde.loss_period(fine_loss),
            "fine_rel_l1_k3": twin,
            "dts": np.array(cfg["dts"]),
            "loss_fft": reference.loss,
            "loss_direct": twins["direct"].loss,
            "loss_float32": twins["float32"].loss,
            "rel_l1_direct": cnnpde.rel_l1_over_iterations(reference.history, twins["direct"].history),
            "rel_l1_float32": cnnpde.rel_l1_over_iterations(reference.history, twins["float32"].history),
            "paper_class": cnnpde.classify(paper.loss[0], paper_exponent),
            "rel_l1_k3": cnnpde.rel_l1_over_iterations(paper.history[0], paper.history[1]),
            "normalised_sharpness": np.array(cfg["dts"])[:, None] * sharp,
        },
        summary={"dt_grids": cfg["dt_grids"], "exponent_discard": cfg["steps"] // 2,
                 "tangent_seed": cfg["tangent_seed"]},
    )


_BASE = {"image": 256, "kernel": 32, "alpha": 20.0, "beta": 1.0, "threads": 1, "tangent_seed": 0,
         "dts": [0.01, 0.03, 0.05, 0.07, 0.09, 0.1, 0.11, 0.13]}

EXPERIMENT = Experiment(
    name="cnnpde-regimes",
    summary="stable/periodic/chaotic/blow-up step sizes of the one-layer CNN PDE, Lyapunov exponents and twins",
    chapter="05-one-layer-cnn",
    configs={
        "ci": _BASE | {"steps": 300, "twin_steps": 50, "dt_grids": [(0.01, 0.1405, 0.01)]},
        "book": _BASE | {"steps": 1000, "twin_steps": 150,
                         "dt_grids": [(0.005, 0.1405, 0.005), (0.02, 0.1, 0.001), (0.025, 0.04, 0.0005),
                                      (0.095, 0.1055, 0.001)]},
    },
    func=run,
)
