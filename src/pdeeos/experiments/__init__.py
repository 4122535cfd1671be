"""The experiment registry behind ``python -m pdeeos run``.

An experiment is a module in this package that defines ``EXPERIMENT`` (an :class:`Experiment`,
or a tuple of them). The registry discovers them, so adding an experiment touches no shared file.
An experiment's function receives a :class:`RunContext` (its scale's config, the device, the
directory for checkpoints, a progress-bar factory) and returns a :class:`RunOutput`;
:func:`run_experiment` times it and stores the result with provenance. The wall time recorded is
the sum over every attempt that contributed to the result: a run that checkpoints writes its elapsed
time next to its checkpoints at each step of its progress bar, and a resumed run starts from it (an
attempt's last, unfinished step is not counted, as its work is not kept either).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import TqdmWarning

with warnings.catch_warnings():
    # In a notebook without ipywidgets tqdm.auto falls back to text bars, warning on stderr with a
    # machine-specific path that would differ between a chapter's stored and re-executed outputs.
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from pdeeos import results
from pdeeos.config import SCALES, check_scale


@dataclass(frozen=True)
class RunOutput:
    """What an experiment returns: arrays for ``data.npz`` and JSON-able summary numbers."""

    arrays: Mapping[str, np.ndarray]
    summary: Mapping[str, Any]


@dataclass
class RunContext:
    """Everything an experiment function needs besides its own code."""

    experiment: str
    scale: str
    config: dict[str, Any]
    device: torch.device
    run_dir: Path
    show_progress: bool = True
    started: float = field(default_factory=time.perf_counter)
    earlier_wall_s: float = 0.0

    @property
    def checkpoint_dir(self) -> Path:
        """Where the run keeps resumable state (git-ignored)."""
        return self.run_dir / "checkpoints"

    @property
    def wall_file(self) -> Path:
        """Where a checkpointing run keeps the wall time spent on it so far."""
        return self.checkpoint_dir / "wall_time.json"

    def wall_time(self) -> float:
        """Seconds spent on this result: earlier interrupted attempts plus this one."""
        return self.earlier_wall_s + time.perf_counter() - self.started

    def record_wall_time(self) -> None:
        """Save :meth:`wall_time` beside the checkpoints, if the run keeps any."""
        if self.checkpoint_dir.is_dir():
            results.atomic_write_bytes(self.wall_file, json.dumps({"wall_time_s": self.wall_time()}).encode())

    def progress(self, iterable: Iterable, **kwargs: Any) -> Iterator:
        """Iterate ``iterable`` with a tqdm progress bar (silenced when ``show_progress`` is false),
        recording the wall time after each item."""
        for item in tqdm(iterable, disable=not self.show_progress, **kwargs):
            yield item
            self.record_wall_time()


@dataclass(frozen=True)
class Experiment:
    """A named, scaled experiment.

    ``configs`` maps each supported scale to its config; ``func`` does the work.
    ``dtype`` names the floating-point type recorded in the provenance (a config key
    ``dtype`` overrides it).
    """

    name: str
    summary: str
    chapter: str
    configs: Mapping[str, Mapping[str, Any]]
    func: Callable[[RunContext], RunOutput] = field(repr=False)
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for scale in self.configs:
            check_scale(scale)

    def config(self, scale: str) -> dict[str, Any]:
        """The config at ``scale``; ``ValueError`` if the experiment has none there."""
        check_scale(scale)
        if scale not in self.configs:
            raise ValueError(
                f"experiment {self.name!r} has no {scale!r} scale; it has {', '.join(self.configs)}"
            )
        return dict(self.configs[scale])


def registry() -> dict[str, Experiment]:
    """All experiments, by name, discovered from the modules of this package."""
    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        declared = getattr(module, "EXPERIMENT", ())
        for exp in declared if isinstance(declared, tuple) else (declared,):
            if exp.name in found:
                raise RuntimeError(f"experiment {exp.name!r} is defined twice")
            found[exp.name] = exp
    return found


def get(name: str) -> Experiment:
    """The experiment called ``name``; ``KeyError`` listing the known names otherwise."""
    experiments = registry()
    if name not in experiments:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(sorted(experiments))}")
    return experiments[name]


def resolve_device(device: str | None) -> torch.device:
    """``None`` picks the GPU when there is one, else the CPU; otherwise ``torch.device(device)``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return resolved


def run_experiment(
    name: str,
    scale: str,
    *,
    device: str | None = None,
    root: Path | None = None,
    show_progress: bool = True,
) -> results.StoredRun:
    """Run experiment ``name`` at ``scale`` and store it (with provenance) under ``root``."""
    exp = get(name)
    config = exp.config(scale)
    ctx = RunContext(
        experiment=name,
        scale=scale,
        config=config,
        device=resolve_device(device),
        run_dir=results.run_dir(name, scale, root),
        show_progress=show_progress,
    )
    if ctx.wall_file.exists():
        ctx.earlier_wall_s = float(json.loads(ctx.wall_file.read_text())["wall_time_s"])
    ctx.started = time.perf_counter()
    output = exp.func(ctx)
    ctx.record_wall_time()
    wall = ctx.wall_time()
    results.save_run(
        ctx.run_dir,
        experiment=name,
        config=config,
        arrays=output.arrays,
        summary=output.summary,
        provenance=results.provenance(
            scale=scale, device=ctx.device, dtype=str(config.get("dtype", exp.dtype)), wall_time_s=wall
        ),
    )
    return results.load_run(name, scale, root)


__all__ = ["SCALES", "Experiment", "RunContext", "RunOutput", "get", "registry", "run_experiment"]
