"""``eos-fc-tanh``: the paper's Fig. 8 -- fully connected tanh networks on the CIFAR-10 subset.

Width-200 tanh networks with 2 and with 4 hidden layers (:class:`pdeeos.pde.eos_networks.TanhMLP`, PyTorch's
default initialisation, float64) trained by full-batch gradient descent on the mean cross-entropy, with
no weight decay, at one step size :math:`\\eta`. The run stores the loss after every step and the
sharpness (Lanczos on the full batch) every ``sharpness_every`` steps, and summarises each depth: final
loss, the sharpness relative to :math:`2/\\eta`, and the loss spikes (:func:`pdeeos.pde.eos_networks.loss_spikes`).

The step size is :math:`\\eta = 2/30`: the paper replicates Cohen et al.'s cross-entropy experiment, but
its value of :math:`\\eta` was lost in the text extraction and we could not confirm Cohen et al.'s value
for this network; :math:`2/30` puts :math:`2/\\eta = 30` within reach of progressive sharpening of the
2-hidden-layer net in about 150 steps, which a CPU can afford (see chapter 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos.pde import eos_networks as en
from pdeeos.book.experiments import Experiment, RunContext, RunOutput

ETA = 2 / 30
"""The step size of every scale (see the module docstring)."""

N_CLASSES = 10


def load_data(images: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``images`` images of the CIFAR-10 subset (all if ``None``), labels, and a description."""
    x, y, described = en.cifar_subset()
    if images is not None:
        if images < 1 or images > len(x):
            raise ValueError(f"images must be in [1, {len(x)}]; got {images}")
        x, y = x[:images], y[:images]
    return x, y, f"{len(x):,} images of {described}"


def train_depth(depth: int, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any], *,
                device: torch.device | str = "cpu", checkpoint: Path | None = None,
                progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> en.History:
    """Full-batch GD of the ``depth``-hidden-layer tanh net under ``cfg`` (``width``, ``seed``, ``eta``,
    ``steps``, ``sharpness_every``, ``checkpoint_every``) on ``device``."""
    model = en.TanhMLP(depth, x[0].numel(), N_CLASSES, width=cfg["width"], seed=cfg["seed"]).to(device)
    return en.train_gd(model, x.to(device), y.to(device), eta=cfg["eta"], steps=cfg["steps"], sharpness_every=cfg["sharpness_every"],
                       checkpoint=checkpoint, checkpoint_every=cfg.get("checkpoint_every", 0), progress=progress)


def summarise(history: en.History, eta: float, spike_rel: float) -> dict[str, Any]:
    """Final loss, sharpness over :math:`2/\\eta` (initial, max, and its range after the first crossing),
    the first measurement at or above :math:`2/\\eta`, and the loss spikes."""
    ratio = history.sharpness * eta / 2
    crossed = np.flatnonzero(ratio >= 1)
    after = ratio[crossed[0]:] if len(crossed) else np.array([])
    spikes = en.loss_spikes(history.loss, spike_rel) if np.all(np.isfinite(history.loss)) else np.array([])
    return {
        "steps_run": len(history.loss) - 1,
        "initial_loss": float(history.loss[0]), "final_loss": float(history.loss[-1]),
        "min_loss": float(np.min(history.loss)),
        "initial_sharpness_over_2_over_eta": float(ratio[0]),
        "max_sharpness_over_2_over_eta": float(ratio.max()),
        "first_step_sharpness_at_2_over_eta": int(history.sharpness_steps[crossed[0]]) if len(crossed) else None,
        "after_crossing_min_over_2_over_eta": float(after.min()) if len(after) else None,
        "after_crossing_median_over_2_over_eta": float(np.median(after)) if len(after) else None,
        "loss_rises": int(np.sum(np.diff(history.loss) > 0)),
        "spikes": len(spikes), "spike_steps": spikes.tolist(),
    }


def run(ctx: RunContext) -> RunOutput:
    """Loss and sharpness histories of every depth (each resumable from its checkpoint)."""
    cfg = ctx.config
    torch.set_num_threads(1)
    x, y, described = load_data(cfg["images"])
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"data": described, "eta": cfg["eta"], "2/eta": 2 / cfg["eta"]}
    for depth in cfg["depths"]:
        h = train_depth(depth, x, y, cfg, device=ctx.device, checkpoint=ctx.checkpoint_dir / f"depth{depth}.pt",
                        progress=lambda it, d=depth: ctx.progress(it, desc=f"{d} hidden layers"))
        arrays |= {f"d{depth}_loss": h.loss, f"d{depth}_sharpness_steps": h.sharpness_steps,
                   f"d{depth}_sharpness": h.sharpness}
        summary[f"d{depth}"] = summarise(h, cfg["eta"], cfg["spike_rel"])
    return RunOutput(arrays=arrays, summary=summary)


_BASE = {"eta": ETA, "depths": [2, 4], "width": 200, "seed": 0, "spike_rel": 0.1}

EXPERIMENT = Experiment(
    name="eos-fc-tanh",
    summary="Fig. 8: loss and sharpness of width-200 tanh nets (2 and 4 hidden layers) on the CIFAR-10 subset, "
            "full-batch GD, cross-entropy",
    chapter="07-edge-of-stability",
    configs={
        "ci": _BASE | {"images": 128, "steps": 20, "sharpness_every": 10, "checkpoint_every": 0},
        "book": _BASE | {"images": None, "steps": 700, "sharpness_every": 25, "checkpoint_every": 50},
        "paper": _BASE | {"images": None, "steps": 10_000, "sharpness_every": 50, "checkpoint_every": 250},
    },
    func=run,
)
