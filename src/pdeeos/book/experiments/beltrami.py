"""``beltrami``: restrained instability of gradient descent on the Beltrami energy of a noisy photograph.

Two batched runs of :func:`pdeeos.pde.beltrami.simulate` on scikit-image's ``camera`` image with noise,
float32: the paper's Fig. 2 step sizes (multiples of the strict bound) with their ``k = 3`` twins,
recording energy, violated fraction, oscillation and twin RelL1, with snapshots of the state and the
violation map; and a finer sweep of multiples, classified into regimes.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pdeeos.pde import beltrami
from pdeeos.book.experiments import Experiment, RunContext, RunOutput


def run(ctx: RunContext) -> RunOutput:
    """Run the figure step sizes (with twins and snapshots) and the regime sweep; classify the sweep."""
    cfg = ctx.config
    torch.set_num_threads(cfg["threads"])
    clean, noisy = beltrami.noisy_camera(cfg["size"], cfg["sigma"], cfg["seed"])
    strict = beltrami.strict_bound(cfg["eps"], cfg["lam"], 2)
    common = {"eps": cfg["eps"], "lam": cfg["lam"], "compiled": cfg["compiled"]}
    fig = beltrami.simulate(noisy, dt=strict * np.array(cfg["figure_multiples"]), steps=cfg["steps"],
                            twin_k=cfg["twin_k"], record_every=cfg["record_every"],
                            snapshot_at=cfg["snapshot_at"], **common)
    sweep = beltrami.simulate(noisy, dt=strict * np.array(cfg["sweep_multiples"]), steps=cfg["sweep_steps"],
                              record_every=cfg["sweep_record_every"], **common)
    regimes = beltrami.classify(sweep.final, sweep.violated)
    return RunOutput(
        arrays={
            "clean": clean, "noisy": noisy,
            "figure_multiples": np.array(cfg["figure_multiples"]), "iterations": fig.iterations,
            "energy": fig.energy, "violated": fig.violated, "oscillation": fig.oscillation,
            "twin_rel_l1": fig.twin_rel_l1, "snapshot_at": fig.snapshot_at, "snapshots": fig.snapshots,
            "violation_maps": fig.violation_maps, "final": fig.final,
            "sweep_multiples": np.array(cfg["sweep_multiples"]), "sweep_iterations": sweep.iterations,
            "sweep_oscillation": sweep.oscillation, "sweep_violated": sweep.violated,
            "sweep_energy": sweep.energy, "sweep_regimes": regimes,
        },
        summary={
            "strict_bound": strict,
            "unstable_bound_multiple": beltrami.unstable_bound(cfg["lam"]) / strict,
            **beltrami.regime_boundaries(np.array(cfg["sweep_multiples"]), regimes),
        },
    )


_BASE = {"eps": 1e-3, "lam": 10.0, "sigma": 0.1, "seed": 0, "twin_k": 3, "threads": 2, "compiled": True,
         "figure_multiples": [1, 10, 100, 1000],
         "sweep_multiples": [0.5, 0.9, 1.0, 1.1, 1.5, 2, 5, 10, 30, 100, 300, 600, 760, 840, 1000]}

EXPERIMENT = Experiment(
    name="beltrami",
    summary="Fig. 2: stable, restrained and unstable gradient descent on the Beltrami energy of a noisy photo",
    chapter="02-beltrami",
    configs={
        "ci": _BASE | {"size": 64, "steps": 500, "record_every": 10, "snapshot_at": [0, 250, 500],
                       "sweep_steps": 300, "sweep_record_every": 10},
        "book": _BASE | {"size": 256, "steps": 10000, "record_every": 10,
                         "snapshot_at": [0, 10, 100, 1000, 9998, 9999, 10000],
                         "sweep_steps": 4000, "sweep_record_every": 20},
    },
    func=run,
    dtype="float32",
)


def benchmark(ctx: RunContext) -> RunOutput:
    """Time one batched, compiled call over the whole sweep against a plain loop of eager one-step-size runs.

    The plain loop is timed on ``naive_steps`` iterations per step size and scaled to ``steps``; both
    are measured in this run on ``threads`` threads; their final states at the stable step (the first)
    are checked to agree (beyond it, rounding differences are amplified by design).
    """
    cfg = ctx.config
    torch.set_num_threads(cfg["threads"])
    _, noisy = beltrami.noisy_camera(cfg["size"], cfg["sigma"], cfg["seed"])
    dts = beltrami.strict_bound(cfg["eps"], cfg["lam"], 2) * np.array(cfg["multiples"])
    common = {"eps": cfg["eps"], "lam": cfg["lam"]}
    beltrami.simulate(noisy, dt=dts, steps=2, compiled=True, **common)  # compile outside the timing
    start = time.perf_counter()
    fast = beltrami.simulate(noisy, dt=dts, steps=cfg["steps"], record_every=cfg["steps"], compiled=True, **common)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = [beltrami.simulate(noisy, dt=dt, steps=cfg["naive_steps"], record_every=cfg["naive_steps"], **common)
             for dt in dts]
    plain_s = (time.perf_counter() - start) * cfg["steps"] / cfg["naive_steps"]
    short = beltrami.simulate(noisy, dt=dts, steps=cfg["naive_steps"], record_every=cfg["naive_steps"],
                              compiled=True, **common)
    agree = float(np.max(np.abs(plain[0].final[0] - short.final[0])))
    if not agree < 1e-5:
        raise RuntimeError(f"batched and plain runs disagree by {agree:.2e} after {cfg['naive_steps']} steps")
    return RunOutput(
        arrays={"multiples": np.array(cfg["multiples"]), "final_energy": fast.energy[:, -1]},
        summary={"batched_s": fast_s, "plain_loop_s": plain_s, "ratio": plain_s / fast_s,
                 "max_abs_difference_at_stable_step": agree},
    )


_BENCH = {"eps": 1e-3, "lam": 10.0, "sigma": 0.1, "seed": 0, "threads": 2,
          "multiples": [1, 2, 5, 10, 30, 100, 300, 1000]}

EXPERIMENT = (EXPERIMENT, Experiment(
    name="beltrami-benchmark",
    summary="batched compiled sweep vs a plain per-step-size loop: 256x256, 8 step sizes",
    chapter="02-beltrami",
    configs={"ci": _BENCH | {"size": 64, "steps": 200, "naive_steps": 20},
             "book": _BENCH | {"size": 256, "steps": 10000, "naive_steps": 200}},
    func=benchmark,
    dtype="float32",
))
