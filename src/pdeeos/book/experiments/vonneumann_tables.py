"""``vonneumann-tables``: Table 2 and Table 9 (NeurIPS Table 6), exact and measured.

For the 256x256 checkerboard and each kernel size, the eigenvalues of the windowed operator give the
exact bounds on the weight decay for gradient descent (Thm 5.4, step ``dt_gd``) and for Nesterov
(Jury conditions, step ``dt_nesterov``, momentum ``momentum``); running the homogeneous linear schemes
on a geometric grid of weight decays and refining where stability flips measures the same bounds.
"""

from __future__ import annotations

import numpy as np

from pdeeos.pde import cnnpde, symbolic, vonneumann
from pdeeos.book.experiments import Experiment, RunContext, RunOutput


def _measure(gram: np.ndarray, cfg: dict, steps: int, momentum: float | None) -> tuple[float, float]:
    """Measured (alpha_min, alpha_max) of one scheme: one bracket below and one above ``alpha_stable``."""
    dt = cfg["dt_gd"] if momentum is None else cfg["dt_nesterov"]

    def unstable(alphas: np.ndarray) -> np.ndarray:
        return vonneumann.growth_factor(gram, alphas, dt=dt, a=cfg["a"], beta=cfg["beta"], momentum=momentum,
                                        steps=steps) > 1

    kw = {"points": cfg["points"], "rounds": cfg["rounds"]}
    return (vonneumann.measure_bound(unstable, cfg["alpha_low"], cfg["alpha_stable"], **kw),
            vonneumann.measure_bound(unstable, cfg["alpha_stable"], cfg["alpha_high"], **kw))


def run(ctx: RunContext) -> RunOutput:
    """Exact and measured bounds for every kernel size."""
    cfg = ctx.config
    image = cnnpde.checkerboard(cfg["image_size"]).numpy()
    rows = {key: [] for key in ("eig_min", "eig_max", "gd_exact", "gd_measured", "nesterov_exact",
                                "nesterov_measured")}
    for w, steps in ctx.progress(list(zip(cfg["kernel_sizes"], cfg["steps"])), desc="kernel sizes"):
        gram = vonneumann.patch_gram(image, w)
        eig = np.linalg.eigvalsh(gram)
        rows["eig_min"].append(eig[0])
        rows["eig_max"].append(eig[-1])
        rows["gd_exact"].append(vonneumann.windowed_alpha_bounds(image, w, cfg["dt_gd"], cfg["a"], cfg["beta"]))
        rows["nesterov_exact"].append(vonneumann.nesterov_alpha_bounds(eig, cfg["dt_nesterov"], cfg["momentum"],
                                                                       cfg["a"], cfg["beta"]))
        rows["gd_measured"].append(_measure(gram, cfg, steps, None))
        rows["nesterov_measured"].append(_measure(gram, cfg, steps, cfg["momentum"]))
    arrays = {key: np.array(value) for key, value in rows.items()} | {"kernel_sizes": np.array(cfg["kernel_sizes"])}
    rel = {scheme: float(np.max(np.abs(arrays[f"{scheme}_measured"] / arrays[f"{scheme}_exact"] - 1)))
           for scheme in ("gd", "nesterov")}
    return RunOutput(arrays=arrays, summary={"max_rel_measured_vs_exact": rel,
                                             "grid_resolution": cfg["points"] ** -cfg["rounds"]})


_BASE = {"image_size": 256, "dt_gd": 1e-8, "dt_nesterov": 1e-4, "momentum": 0.9, "a": -0.5, "beta": 1.0,
         "alpha_low": 1e5, "alpha_stable": 1e8, "alpha_high": 1e10, "points": 16, "rounds": 4}

def run_curves(ctx: RunContext) -> RunOutput:
    """Fig. 11 (App. E.2): the windowed linear Nesterov scheme at weight decays 10 % below and above its
    exact lower bound and 1 % below and above its exact upper bound; distance to the fixed point."""
    cfg = ctx.config
    image = cnnpde.checkerboard(cfg["image_size"]).numpy()
    w, n = cfg["kernel_size"], cfg["image_size"]
    gram = vonneumann.patch_gram(image, w)
    lo, hi = vonneumann.nesterov_alpha_bounds(np.linalg.eigvalsh(gram), cfg["dt"], cfg["momentum"],
                                              cfg["a"], cfg["beta"])
    alphas = np.array([0.9 * lo, 1.1 * lo, 0.99 * hi, 1.01 * hi])
    window_sum = symbolic.correlate(np.ones((n - w + 1, n - w + 1)), image)
    distance = vonneumann.distance_to_fixed_point(gram, window_sum, alphas, dt=cfg["dt"], a=cfg["a"],
                                                  beta=cfg["beta"], momentum=cfg["momentum"],
                                                  steps=cfg["steps"])
    start, end = distance[0], distance[-1]
    converged = end < 1e-3 * start
    diverged = ~np.isfinite(end) | (end > 1e3 * start)
    inside = (alphas > lo) & (alphas < hi)
    return RunOutput(arrays={"alphas": alphas, "distance": distance, "inside": inside},
                     summary={"alpha_min": lo, "alpha_max": hi, "converged": converged.tolist(),
                              "diverged": diverged.tolist(), "inside": inside.tolist()})


EXPERIMENT = (Experiment(
    name="nesterov-curves",
    summary="Fig. 11 (App. E.2): the windowed linear Nesterov scheme inside and outside its exact bounds",
    chapter="04-von-neumann",
    configs={
        "ci": {"image_size": 64, "kernel_size": 8, "dt": 3e-3, "momentum": 0.9, "a": -0.5, "beta": 1.0,
               "steps": 3000},
        "book": {"image_size": 256, "kernel_size": 32, "dt": 1e-4, "momentum": 0.9, "a": -0.5, "beta": 1.0,
                 "steps": 3000},
    },
    func=run_curves,
), Experiment(
    name="vonneumann-tables",
    summary="Table 2 and Table 9: exact and measured weight-decay bounds of the windowed linear schemes",
    chapter="04-von-neumann",
    configs={
        "ci": _BASE | {"image_size": 64, "kernel_sizes": [4, 8], "steps": [400, 400], "rounds": 3, "dt_gd": 1e-5,
                       "dt_nesterov": 3e-3, "alpha_low": 1e3, "alpha_stable": 1e5, "alpha_high": 1e7},
        "book": _BASE | {"kernel_sizes": [16, 32, 64], "steps": [1500, 600, 200]},
    },
    func=run,
))
