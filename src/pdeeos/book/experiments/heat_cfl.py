"""``heat-cfl``: the measured CFL limit and round-off blow-up times of the explicit heat scheme.

For every grid size and diffusivity, the critical mesh ratio measured by :func:`pdeeos.pde.heat.critical_r`
beside the exact discrete limit; for every step size beyond it and every precision, the number of
steps before amplified round-off reaches the size of the solution (:func:`pdeeos.pde.heat.blowup_step`).
"""

from __future__ import annotations

import numpy as np

from pdeeos.pde import heat
from pdeeos.book.experiments import Experiment, RunContext, RunOutput

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def run(ctx: RunContext) -> RunOutput:
    """Measure critical r over (grid size, kappa) and blow-up steps over (r, dtype)."""
    cfg = ctx.config
    r_grid = np.linspace(*cfg["r_range"], cfg["r_points"])
    pairs = [(n, kappa) for n in cfg["grid_points"] for kappa in cfg["kappas"]]
    measured = np.array([
        heat.critical_r(n, kappa=kappa, r_grid=r_grid, steps=cfg["steps"])
        for n, kappa in ctx.progress(pairs, desc="critical r")
    ])
    exact = np.array([heat.discrete_critical_r(n) for n, _ in pairs])
    blowup = np.array([
        [heat.blowup_step(heat.sine_mode(cfg["blowup_points"], 1, d), r=r, steps=cfg["blowup_max_steps"])
         for d in _DTYPES.values()]
        for r in cfg["blowup_r"]
    ])
    return RunOutput(
        arrays={
            "grid_points": np.array([n for n, _ in pairs]),
            "kappa": np.array([k for _, k in pairs]),
            "critical_r": measured,
            "exact_critical_r": exact,
            "blowup_r": np.array(cfg["blowup_r"]),
            "blowup_steps": blowup,
        },
        summary={
            "max_abs_critical_r_error": float(np.max(np.abs(measured - exact))),
            "r_resolution": float(r_grid[1] - r_grid[0]),
            "dtypes": list(_DTYPES),
        },
    )


_BASE = {"r_range": (0.49, 0.53), "kappas": [0.5, 1.0, 2.0], "blowup_points": 31,
         "blowup_r": [0.6, 0.7, 0.8, 1.0], "blowup_max_steps": 5000}

EXPERIMENT = Experiment(
    name="heat-cfl",
    summary="measured CFL limit and round-off blow-up times of the explicit heat scheme",
    chapter="01-heat-cfl",
    configs={
        "ci": _BASE | {"grid_points": [11, 31], "r_points": 81, "steps": 4000},
        "book": _BASE | {"grid_points": [11, 31, 101], "r_points": 401, "steps": 20000},
    },
    func=run,
)
