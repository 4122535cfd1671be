r"""``cnnpde-regimes``: where the one-layer CNN PDE turns restrained and where it blows up, and how two
equal implementations of it drift apart.

A grid of step sizes (finer near the two boundaries), each run classified stable / restrained / blow-up by
:func:`pdeeos.cnnpde.classify`; and, at the paper's eight step sizes, the RelL1 distance over iterations
between the FFT scheme in float64 and (i) the same scheme by direct convolution, (ii) the FFT scheme in
float32 (the official protocol: 256x256 checkerboard, 32x32 kernel, alpha = 20, beta = 1, 1000 steps;
the twins run ``twin_steps`` iterations, as direct convolution is slow). At the eight step sizes, the
full ``steps``: the class of each run, RelL1 between the :math:`k = 1` and :math:`k = 3` runs (Fig. 5
right) and the normalised sharpness :math:`\Delta t\,\lambda_{\max}` of every iterate (Fig. 6).
"""

from __future__ import annotations

import numpy as np
import torch

from pdeeos import cnnpde
from pdeeos.experiments import Experiment, RunContext, RunOutput


def run(ctx: RunContext) -> RunOutput:
    """Classify the fine grid; measure the implementation and precision twins."""
    cfg = ctx.config
    torch.set_num_threads(cfg["threads"])
    image, kernel0 = cnnpde.checkerboard(cfg["image"]), cnnpde.official_kernel(cfg["kernel"])
    model = {"alpha": cfg["alpha"], "beta": cfg["beta"], "steps": cfg["steps"]}
    fine = np.unique(np.round(np.concatenate([np.arange(*grid) for grid in cfg["dt_grids"]]), 6))
    losses = np.concatenate([cnnpde.simulate(image, kernel0, part, **model).loss
                             for part in ctx.progress(np.array_split(fine, 8), desc="fine grid")])
    twins = {}
    for name, options in ctx.progress({"fft": {}, "direct": {"method": "direct"},
                                       "float32": {"dtype": torch.float32}}.items(), desc="twins"):
        twins[name] = cnnpde.simulate(image, kernel0, cfg["dts"], record_every=1, **options,
                                      **(model | {"steps": cfg["twin_steps"]}))
    reference = twins["fft"]
    paper = cnnpde.simulate(image, kernel0, cfg["dts"], k=[1, 3], record_every=1, **model)
    sharp = cnnpde.sharpness_along(paper.history[0], image, alpha=cfg["alpha"], beta=cfg["beta"])
    return RunOutput(
        arrays={
            "fine_dts": fine,
            "fine_class": cnnpde.classify(losses),
            "fine_final_loss": losses[:, -1],
            "dts": np.array(cfg["dts"]),
            "loss_fft": reference.loss,
            "loss_direct": twins["direct"].loss,
            "loss_float32": twins["float32"].loss,
            "rel_l1_direct": cnnpde.rel_l1_over_iterations(reference.history, twins["direct"].history),
            "rel_l1_float32": cnnpde.rel_l1_over_iterations(reference.history, twins["float32"].history),
            "paper_class": cnnpde.classify(paper.loss[0]),
            "rel_l1_k3": cnnpde.rel_l1_over_iterations(paper.history[0], paper.history[1]),
            "normalised_sharpness": np.array(cfg["dts"])[:, None] * sharp,
        },
        summary={"dt_grids": cfg["dt_grids"]},
    )


_BASE = {"image": 256, "kernel": 32, "alpha": 20.0, "beta": 1.0, "threads": 1,
         "dts": [0.01, 0.03, 0.05, 0.07, 0.09, 0.1, 0.11, 0.13]}

EXPERIMENT = Experiment(
    name="cnnpde-regimes",
    summary="stable/restrained/blow-up boundaries of the one-layer CNN PDE and its implementation twins",
    chapter="05-one-layer-cnn",
    configs={
        "ci": _BASE | {"steps": 300, "twin_steps": 50, "dt_grids": [(0.005, 0.1405, 0.005)]},
        "book": _BASE | {"steps": 1000, "twin_steps": 150,
                         "dt_grids": [(0.005, 0.1405, 0.005), (0.025, 0.04, 0.0005), (0.095, 0.1055, 0.001)]},
    },
    func=run,
)
