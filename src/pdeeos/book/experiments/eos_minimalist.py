"""``eos-minimalist``: sharpness concentration in Zhu et al.'s minimalist example at several step sizes.

Gradient descent on :math:`L(x, y) = \\tfrac14(1 - x^2y^2)^2` from a grid of starts beyond the η-EoS
minimum (:func:`pdeeos.pde.eos.sharpness_concentration`): whether the converged runs all end at one sharpness,
just below :math:`2/\\eta`, at step sizes up to 0.45 (below the 1/2 beyond which no minimum is flat enough).
"""

from __future__ import annotations

import numpy as np

from pdeeos.pde import eos
from pdeeos.book.experiments import Experiment, RunContext, RunOutput


def run(ctx: RunContext) -> RunOutput:
    """One concentration measurement per step size."""
    cfg = ctx.config
    rows = [eos.sharpness_concentration(eta, n=cfg["grid"], steps=cfg["steps"])
            for eta in ctx.progress(cfg["etas"], desc="eta")]
    arrays = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    return RunOutput(arrays=arrays, summary={"final_sharpness_max": arrays["final sharpness max"].tolist()})


EXPERIMENT = Experiment(
    name="eos-minimalist",
    summary="Zhu et al.'s minimalist example: final sharpness of GD from many starts at seven step sizes up to 0.45",
    chapter="07-edge-of-stability",
    configs={
        "ci": {"etas": [0.1, 0.2], "grid": 10, "steps": 5_000},
        "book": {"etas": [0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.45], "grid": 60, "steps": 20_000},
    },
    func=run,
)
