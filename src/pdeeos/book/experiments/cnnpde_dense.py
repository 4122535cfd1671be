r"""``cnnpde-dense``: the one-layer CNN PDE on a dense grid of step sizes over the restrained range, from
several initial kernels, with the fate of every run's last-bit twins.

For every initial kernel (the official one, seed 7, and the official recipe's draws with other seeds) and
every step size of a dense grid over :math:`[2/\lambda^\ast, 0.1]` (:math:`\lambda^\ast` the sharpness at
the minimiser), the full 32 x 32 kernel is trained on the 256 x 256 checkerboard (:math:`\alpha = 20`,
:math:`\beta = 1`) by :func:`pdeeos.pde.cnnpde.simulate` with the periodic method (the checkerboard's four
output values: the same scheme as the FFT one, rounded differently), with ``k = 1`` (carrying the tangent
map) and ``k = 3``. Stored per run: the class (:func:`pdeeos.pde.cnnpde.classify`, codes into
``cnnpde.RUN_CLASSES``) and loss period; the tangent-map exponent over an early and a late window; the
twins' RelL1 sampled along the run, its fate (:func:`pdeeos.lyapunov.fate`, codes into
``lyapunov.FATES``), their separation rate (:func:`pdeeos.lyapunov.twin_rate`, from the onset to saturation)
and the tangent-map exponent over the same window, side by side; the scalar :math:`u = \langle K, P_0\rangle` of both twins over the
last iterations (which state of a cycle, or which mirror image, each ends on); and the RelL1 between two
points of the reference run's own attractor, the size a plateau of kept twins is compared with.
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

TAIL = 64
"""The last iterations whose :math:`u` is stored for each twin (a whole cycle of every period the grid shows)."""
ATTRACTOR_LAG = 97
"""The lag between the two points of the reference run's attractor whose RelL1 is stored (a prime, so that
no short cycle brings the two points together)."""
ATTRACTOR_WINDOW = 200
"""The last iterations over which that RelL1 is averaged."""
PER_RUN_ARRAYS = ("twin_rel_l1", "u_tail", "twin_window")
"""The stored records that are arrays for each run (the others are one number a run)."""


@dataclass(frozen=True)
class ChunkTask:
    """Some step sizes of one initial kernel, with where their finished arrays are kept."""

    kernel_seed: int
    dts: tuple[float, ...]
    config: dict
    checkpoint: Path


def grid(cfg: dict) -> np.ndarray:
    """The config's step sizes: ``dt_points`` evenly spaced over ``dt_range``."""
    low, high = cfg["dt_range"]
    return np.linspace(low, high, cfg["dt_points"])


def _u(history: np.ndarray, p0: np.ndarray) -> np.ndarray:
    r""":math:`u = \langle K, P_0\rangle` of every kernel of a history ``(..., T, w, w)``."""
    return (history * p0).sum(axis=(-2, -1))


def run_one(dt: float, kernel0: torch.Tensor, image: torch.Tensor, cfg: dict) -> dict[str, np.ndarray]:
    """The twins of one step size and what is stored of them."""
    model = {"alpha": cfg["alpha"], "beta": cfg["beta"], "steps": cfg["steps"], "record_every": 1,
             "method": "periodic"}
    one = cnnpde.simulate(image, kernel0, [dt], tangent_seed=cfg["tangent_seed"], **model)
    three = cnnpde.simulate(image, kernel0, [dt], k=3, **model)
    distance = cnnpde.rel_l1_over_iterations(one.history, three.history)[0]
    early, late = cfg["early_window"], cfg["steps"] // 2
    exponent_late = lyapunov.exponent(one.log_stretch, discard=late)
    p0 = image[:kernel0.shape[0], :kernel0.shape[1]].numpy()
    lagged = cnnpde.rel_l1_over_iterations(one.history[0, -ATTRACTOR_WINDOW:],
                                           one.history[0, -ATTRACTOR_WINDOW - ATTRACTOR_LAG:-ATTRACTOR_LAG])
    finite = np.isfinite(distance).all()
    rate = lyapunov.twin_rate(distance, dtype="float64") if finite else lyapunov.TwinRate(np.nan, np.nan, np.nan,
                                                                                           0, 0, "neither")
    return {
        "class": cnnpde.classify(one.loss, exponent_late).astype(np.int8),
        "period": cnnpde.loss_period(one.loss).astype(np.int16),
        "exponent_early": lyapunov.exponent(one.log_stretch[:, :early]),
        "exponent_late": exponent_late,
        "twin_rel_l1": distance[::cfg["sample_every"]].astype(np.float32),
        "twin_fate": np.array([lyapunov.FATES.index(lyapunov.fate(distance, dtype="float64")) if finite else -1],
                              dtype=np.int8),
        "twin_rate": np.array([rate.rate]),
        "twin_window": np.array([rate.start, rate.stop], dtype=np.int32),
        "exponent_twin_window": np.array([float(np.mean(one.log_stretch[0, rate.start:rate.stop]))
                                          if rate.stop > rate.start else np.nan]),
        "u_tail": np.stack([_u(one.history[0, -TAIL:], p0), _u(three.history[0, -TAIL:], p0)]),
        "attractor_rel_l1": np.array([float(np.mean(lagged))]),
    }


def run_chunk(task: ChunkTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Every step size of a chunk (resumed from its checkpoint if it is there)."""
    out = checkpoints.computed_once(task.checkpoint, lambda: chunk_runs(task))
    tick()
    return out


def chunk_runs(task: ChunkTask) -> dict[str, np.ndarray]:
    """The twins of every step size of a chunk, stacked."""
    cfg = task.config
    torch.set_num_threads(1)
    image = cnnpde.checkerboard(cfg["image"])
    kernel0 = cnnpde.official_kernel(cfg["kernel"], seed=task.kernel_seed)
    runs = [run_one(dt, kernel0, image, cfg) for dt in task.dts]
    return {key: (np.stack if key in PER_RUN_ARRAYS else np.concatenate)([r[key] for r in runs]) for key in runs[0]}


def run(ctx: RunContext) -> RunOutput:
    """Every initial kernel × step size in worker processes, in chunks that checkpoint."""
    cfg = ctx.config
    dts = grid(cfg)
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    size = cfg["chunk"]
    tasks = [ChunkTask(seed, tuple(float(d) for d in dts[i:i + size]), cfg,
                       ctx.checkpoint_dir / f"kernel{seed}-from{i:05d}.npz")
             for seed in cfg["kernel_seeds"] for i in range(0, dts.size, size)]
    chunks = ctx.map(run_chunk, tasks, units=1, desc=ctx.experiment)
    per_seed = len(tasks) // len(cfg["kernel_seeds"])
    arrays = {key: np.stack([np.concatenate([c[key] for c in chunks[s * per_seed:(s + 1) * per_seed]])
                             for s in range(len(cfg["kernel_seeds"]))]) for key in chunks[0]}
    classes = arrays["class"]
    fates = arrays["twin_fate"]
    summary = {"kernel_seeds": cfg["kernel_seeds"], "dt_range": cfg["dt_range"], "dt_points": cfg["dt_points"],
               "early_window": cfg["early_window"], "late_window": [cfg["steps"] // 2, cfg["steps"]]}
    for name in cnnpde.RUN_CLASSES:
        code = cnnpde.RUN_CLASSES.index(name)
        runs = classes == code
        summary[f"{name}_runs"] = int(runs.sum())
        summary[f"{name}_kept"] = int((runs & (fates == lyapunov.FATES.index("kept"))).sum())
    return RunOutput(arrays={"dts": dts, **arrays}, summary=summary)


def shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The stored arrays' shapes for a config."""
    seeds, points = len(cfg["kernel_seeds"]), cfg["dt_points"]
    samples = len(range(0, cfg["steps"] + 1, cfg["sample_every"]))
    return {"dts": (points,), "class": (seeds, points), "twin_fate": (seeds, points),
            "twin_rel_l1": (seeds, points, samples), "u_tail": (seeds, points, 2, TAIL),
            "twin_window": (seeds, points, 2)}


_BASE = {"image": 256, "kernel": 32, "alpha": 20.0, "beta": 1.0, "tangent_seed": 0, "early_window": 150,
         "sample_every": 10}

EXPERIMENT = Experiment(
    name="cnnpde-dense",
    summary="the one-layer CNN PDE on a dense step-size grid over the restrained range from three kernels: "
            "class, early and late exponents, and the fate of every run's k = 3 twin",
    chapter="05-one-layer-cnn",
    configs={
        "ci": _BASE | {"image": 32, "kernel": 6, "steps": 400, "dt_range": [0.0323, 0.1], "dt_points": 8,
                       "kernel_seeds": [7, 0], "chunk": 4},
        "book": _BASE | {"steps": 1500, "dt_range": [0.0323, 0.1], "dt_points": 1000, "kernel_seeds": [7, 0, 1],
                         "chunk": 25},
    },
    func=run,
    shapes=shapes,
)
