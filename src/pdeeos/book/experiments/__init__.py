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

import difflib
import importlib
import json
import multiprocessing
import os
import pkgutil
import queue
import shlex
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import TqdmWarning

with warnings.catch_warnings():
    # In a notebook without ipywidgets tqdm.auto falls back to text bars, warning on stderr with a
    # machine-specific path that would differ between a chapter's stored and re-executed outputs.
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from pdeeos import checkpoints
from pdeeos.book import results
from pdeeos.book.config import SCALES, check_scale

T = TypeVar("T")
R = TypeVar("R")

Tick = Callable[[], None]
"""What a mapped task calls after each unit of work (an epoch, say) to advance the progress bar."""


def default_workers(device: torch.device) -> int:
    """Worker processes for independent tasks: every core on a CPU (at most 2: the project's
    machines have 2), one on a GPU (the tasks share the device)."""
    return 1 if device.type != "cpu" else max(1, min(2, os.cpu_count() or 1))


def check_workers(workers: int) -> int:
    """``workers`` if it is an integer >= 1, else ``ValueError``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    return workers


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
    workers: int = 1
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
            checkpoints.atomic_write_bytes(self.wall_file, json.dumps({"wall_time_s": self.wall_time()}).encode())

    def progress(self, iterable: Iterable, **kwargs: Any) -> Iterator:
        """Iterate ``iterable`` with a tqdm progress bar (silenced when ``show_progress`` is false),
        recording the wall time after each item."""
        for item in tqdm(iterable, disable=not self.show_progress, **kwargs):
            yield item
            self.record_wall_time()

    def map(self, func: Callable[[T, Tick], R], items: Sequence[T], *, units: int | Sequence[int],
            desc: str) -> list[R]:
        """``[func(item, tick) for item in items]``, in :attr:`workers` processes.

        Each task must be independent of the others and deterministic, so the results are
        bit-identical whatever the number of workers (a test checks it); ``func`` must be a
        module-level function and the items picklable. Every task calls ``tick()`` after each of
        its units of work (``units``: the same number for every task, or one number per task); one
        progress bar counts them all and the wall time is recorded at each tick. Worker processes
        take the tasks with the most units first, so that the longest does not start last; the
        results keep the order of ``items``.
        """
        items = list(items)
        per_task = [units] * len(items) if isinstance(units, int) else list(units)
        if len(per_task) != len(items):
            raise ValueError(f"units has {len(per_task)} entries for {len(items)} tasks")
        bar = tqdm(total=sum(per_task), disable=not self.show_progress, desc=desc)

        def tick() -> None:
            bar.update()
            self.record_wall_time()

        with bar:
            if self.workers == 1 or len(items) == 1:
                return [func(item, tick) for item in items]
            ctx = multiprocessing.get_context("spawn")
            with ctx.Manager() as manager, ProcessPoolExecutor(
                    min(self.workers, len(items)), mp_context=ctx) as pool:
                ticks = manager.Queue()
                longest_first = sorted(range(len(items)), key=lambda i: -per_task[i])
                submitted = {i: pool.submit(func, items[i], _QueueTick(ticks)) for i in longest_first}
                futures = [submitted[i] for i in range(len(items))]
                while not all(f.done() for f in futures):
                    failed = [f for f in futures if f.done() and f.exception() is not None]
                    if failed:   # fail at once, not after every other task has finished
                        for f in futures:
                            f.cancel()
                        raise failed[0].exception()
                    try:
                        ticks.get(timeout=0.5)
                        tick()
                    except queue.Empty:
                        pass
                while not ticks.empty():
                    ticks.get()
                    tick()
                return [f.result() for f in futures]


class _QueueTick:
    """A picklable ``tick`` for worker processes: one message per unit of work."""

    def __init__(self, ticks: Any) -> None:
        self.ticks = ticks

    def __call__(self) -> None:
        self.ticks.put(1)


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
    shapes: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] | None = field(default=None, repr=False)
    """The shapes of (some of) the stored arrays that a config gives, checked when a run is loaded."""

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


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the candidates closest to a mistyped ``word`` (difflib),
    or ``""`` when none is close; for the end of an error message."""
    close = difflib.get_close_matches(word, list(candidates), n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def get(name: str) -> Experiment:
    """The experiment called ``name``; otherwise ``KeyError`` suggesting the closest names, or
    listing the known ones when none is close."""
    experiments = registry()
    if name not in experiments:
        hint = did_you_mean(name, experiments) or f"; known: {', '.join(sorted(experiments))}"
        raise KeyError(f"unknown experiment {name!r}{hint}")
    return experiments[name]


def resolve_device(device: str | None) -> torch.device:
    """``None`` picks the GPU when there is one, else the CPU; otherwise ``torch.device(device)``,
    checked to exist here (``ValueError`` saying why not)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device (try cpu or cuda): {err}") from err
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index not in (None, 0)):
        raise ValueError(f"device {device!r}: experiments run on cpu or cuda[:N] only")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA devices")
    try:
        torch.empty(1, device=resolved)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"device {device!r} cannot be used here: {err}") from err
    return resolved


def run_experiment(
    name: str,
    scale: str,
    *,
    device: str | None = None,
    root: Path | None = None,
    show_progress: bool = True,
    workers: int | None = None,
) -> results.StoredRun:
    """Run experiment ``name`` at ``scale`` and store it (with provenance) under ``root``.

    ``workers`` processes share independent tasks (default :func:`default_workers`); the stored
    arrays do not depend on it.
    """
    exp = get(name)
    config = exp.config(scale)
    resolved = resolve_device(device)
    ctx = RunContext(
        experiment=name,
        scale=scale,
        config=config,
        device=resolved,
        run_dir=results.run_dir(name, scale, root),
        show_progress=show_progress,
        workers=default_workers(resolved) if workers is None else check_workers(workers),
    )
    results.check_writable(ctx.run_dir, f"the results of {name}")
    if ctx.checkpoint_dir.exists():
        results.check_writable(ctx.checkpoint_dir, f"the checkpoints of {name}")
        results.check_checkpoints(ctx.checkpoint_dir)   # a damaged one is refused before any work
    ctx.earlier_wall_s = results.load_wall_time(ctx.wall_file)
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
    return load_run(name, scale, root)


# ----------------------------------------------------------------------------- stored runs


def _run_command(experiment: str, scale: str, root: Path | None) -> str:
    """The command line that stores a run of ``experiment`` at ``scale`` under ``root``."""
    where = "" if root is None else f" --results {shlex.quote(str(root))}"
    return f"python -m pdeeos run {experiment} --scale {scale}{where}"


def _no_run(experiment: str, scale: str | None, root: Path | None, available: list[str]) -> FileNotFoundError:
    """The error for a run that is not stored, advising only a command that exists: a scale the
    experiment has, and no ``run`` at all for a name no experiment has."""
    known = registry()
    where = f"under {root or results.results_root()}" if scale is None else f"at scale {scale!r} in {results.run_dir(experiment, scale, root)}"
    message = f"no stored run of {experiment!r} {where}"
    stored = f"; it is stored at {', '.join(available)} (choose one with --scale)" if available else ""
    if experiment not in known:
        return FileNotFoundError(f"{message}{stored}; no experiment is called {experiment!r}"
                                 f"{did_you_mean(experiment, known)}")
    scales = list(known[experiment].configs)
    if scale is not None and scale not in scales:
        message += f"; {experiment!r} has no {scale!r} scale (it has {', '.join(scales)})"
        scale = None
    if stored and scale is None:
        return FileNotFoundError(message + stored)
    runnable = scale or ("book" if "book" in scales else scales[0])
    return FileNotFoundError(f"{message}; produce one with: {_run_command(experiment, runnable, root)}")


def _remake(experiment: str, scale: str, root: Path | None) -> str:
    """What to do about a damaged stored run: the command that makes it again, where one exists."""
    exp = registry().get(experiment)
    if exp is None or scale not in exp.configs:
        return (f"no experiment makes {experiment!r} at scale {scale!r} now, so restore the folder "
                f"{results.run_dir(experiment, scale, root)} from version control or delete it")
    return f"re-make it with: {_run_command(experiment, scale, root)}"


def load_run(experiment: str, scale: str | None = None, root: Path | None = None) -> results.StoredRun:
    """Load the stored run of ``experiment`` at ``scale`` (default: the largest one stored).

    ``FileNotFoundError`` when there is none, ``ValueError`` when its files are damaged (unreadable,
    a provenance field of the wrong type, another config than the experiment's); each names the file
    and the command that makes the run.
    """
    available = results.stored_scales(experiment, root)
    if scale is None and available:
        scale = available[-1]
    if scale not in available:
        raise _no_run(experiment, scale, root, available)
    remake = _remake(experiment, scale, root)
    run = results.read_run(experiment, scale, root, remake=remake)
    _check_against_experiment(run, remake)
    return run


def _check_against_experiment(run: results.StoredRun, remake: str) -> None:
    """``ValueError`` when a stored run of a known experiment was made with another config than the
    experiment's, or its arrays do not have the shapes that config gives (where it declares them)."""
    exp = registry().get(run.experiment)
    if exp is None or run.scale not in exp.configs:
        return
    now = results.as_stored(dict(exp.configs[run.scale]))
    if run.config != now:
        changed = sorted(k for k in set(run.config) | set(now) if run.config.get(k) != now.get(k))
        raise ValueError(f"stored run {run.path / 'run.json'} was made with another config than "
                         f"{run.experiment!r} has now (differs in {', '.join(changed)}); {remake}")
    if exp.shapes is None:
        return
    for name, shape in exp.shapes(run.config).items():
        found = run.arrays[name].shape if name in run.arrays else None
        if found != tuple(shape):
            raise ValueError(f"stored run {run.path / 'data.npz'}: array {name!r} has shape {found}, "
                             f"its config gives {tuple(shape)}; {remake}")


__all__ = ["SCALES", "Experiment", "RunContext", "RunOutput", "did_you_mean", "get", "load_run", "registry",
           "run_experiment"]
