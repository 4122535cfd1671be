"""``eos-networks``: full-batch gradient descent on one-channel CNNs (MNIST 0/1), paper §6.2.

* Fig. 7: loss and sharpness over iterations of 1- and 3-layer nets at several step sizes, no weight decay.
* Fig. 9: the largest stable step size of 1- and 2-layer nets with weight decay ``alpha``, by bisection,
  and a scan over step sizes that classes every run as stable, restrained or blown up.
* NeurIPS App. E: that step size over the bound ``2/alpha`` as ``alpha`` grows (1-layer net).
"""

from __future__ import annotations

import numpy as np
import torch

from pdeeos.pde import eos_networks as en
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.metrics import largest_safe


def run(ctx: RunContext) -> RunOutput:
    """Fig. 7 histories, Fig. 9 bisection brackets and App. E ratios."""
    cfg = ctx.config
    torch.set_num_threads(1)
    x, y, described = en.mnist01(cfg["images"])
    arrays, summary = {}, {"data": described}
    fig7 = [(d, eta) for d in cfg["fig7_depths"] for eta in cfg["fig7_etas"]]
    for depth, eta in ctx.progress(fig7, desc="Fig. 7"):
        h = en.train_gd(en.ConvChain(depth, cfg["beta"]), x, y, eta=eta, steps=cfg["fig7_steps"],
                        sharpness_every=cfg["sharpness_every"])
        key = f"fig7_d{depth}_eta{eta:g}"
        arrays |= {f"{key}_loss": h.loss, f"{key}_sharpness_steps": h.sharpness_steps,
                   f"{key}_sharpness": h.sharpness}
        summary[f"{key}_stable"] = en.is_stable(h)

    def bracket(depth: int, alpha: float) -> tuple[float, float]:
        return en.largest_stable_eta(lambda: en.ConvChain(depth, cfg["beta"]), x, y, alpha=alpha,
                                     lo=cfg["lo_times_2_over_alpha"] * 2 / alpha, hi=1.2 * 2 / alpha,
                                     steps=cfg["bisection_steps"], rtol_eta=cfg["rtol_eta"])
    arrays["fig9_depths"] = np.array(cfg["fig9_depths"])
    arrays["fig9_brackets"] = np.array([bracket(d, cfg["fig9_alpha"])
                                        for d in ctx.progress(cfg["fig9_depths"], desc="Fig. 9")])
    arrays |= fig9_scan(ctx, x, y)
    summary["fig9_scan_largest_not_blown_up"] = [
        largest_safe(arrays["fig9_scan_etas"], row == en.RUN_CLASSES.index("blow-up"))
        for row in arrays["fig9_scan_class"]]
    arrays["appe_alphas"] = np.array(cfg["appe_alphas"])
    arrays["appe_brackets"] = np.array([bracket(1, a) for a in ctx.progress(cfg["appe_alphas"], desc="App. E")])
    summary["appe_ratio_stable_over_2_over_alpha"] = (arrays["appe_brackets"][:, 0]
                                                      * arrays["appe_alphas"] / 2).tolist()
    return RunOutput(arrays=arrays, summary=summary)


def fig9_scan(ctx: RunContext, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Every Fig. 9 depth at every step size of ``fig9_scan_etas`` for ``bisection_steps`` steps: the
    objective histories (``nan`` after a non-finite value) and their :func:`pdeeos.pde.eos_networks.classify`
    codes, so that restrained runs are told apart from stable and blown-up ones."""
    cfg = ctx.config
    depths, etas, steps = cfg["fig9_depths"], np.asarray(cfg["fig9_scan_etas"], float), cfg["bisection_steps"]
    loss = np.full((len(depths), len(etas), steps + 1), np.nan)
    grid = [(i, j) for i in range(len(depths)) for j in range(len(etas))]
    for i, j in ctx.progress(grid, desc="Fig. 9 scan"):
        h = en.train_gd(en.ConvChain(depths[i], cfg["beta"]), x, y, eta=float(etas[j]), steps=steps,
                        alpha=cfg["fig9_alpha"])
        loss[i, j, :len(h.loss)] = h.loss
    return {"fig9_scan_etas": etas, "fig9_scan_loss": loss,
            "fig9_scan_class": en.classify(loss)}


_BASE = {"beta": 1.0, "fig7_depths": [1, 3], "fig9_depths": [1, 2], "fig9_alpha": 0.02,
         "lo_times_2_over_alpha": 0.01, "rtol_eta": 0.02}

EXPERIMENT = Experiment(
    name="eos-networks",
    summary="loss and sharpness of 1-/3-layer one-channel CNNs under full-batch GD; stable step-size bisection",
    chapter="07-edge-of-stability",
    configs={
        "ci": _BASE | {"images": 64, "fig7_etas": [1.0, 4.0], "fig7_steps": 20, "sharpness_every": 10,
                       "bisection_steps": 40, "appe_alphas": [0.2, 20.0],
                       "fig9_scan_etas": [1.0, 10.0, 100.0]},
        "book": _BASE | {"images": 256, "fig7_etas": [0.5, 2.0, 4.0, 8.0], "fig7_steps": 300,
                         "sharpness_every": 25, "bisection_steps": 200,
                         "appe_alphas": [0.02, 0.2, 2.0, 20.0, 200.0],
                         "fig9_scan_etas": np.geomspace(1.0, 120.0, 25).round(3).tolist()},
    },
    func=run,
)
