"""Stored runs: a directory per (experiment, scale) under ``results/`` with provenance.

Layout::

    results/<experiment>/<scale>/data.npz     arrays (NumPy)
    results/<experiment>/<scale>/run.json     config, summary numbers, provenance
    results/<experiment>/<scale>/checkpoints/ resumable state of a run in progress (git-ignored)

Every file is written atomically (a temporary file in the same directory, then ``os.replace``)
and ``run.json`` is written last, so a directory with a ``run.json`` always holds a complete run.
Chapters load runs with :func:`load_run`, never by hand-written paths.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos.config import SCALES, check_scale

RESULTS_ENV = "PDEEOS_RESULTS"
"""Environment variable naming another results directory (tests use a temporary one)."""

_REPO_ROOT = Path(__file__).resolve().parents[2]


def results_root() -> Path:
    """The results directory: ``$PDEEOS_RESULTS`` if set, else ``results/`` of this checkout."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else _REPO_ROOT / "results"


def run_dir(experiment: str, scale: str, root: Path | None = None) -> Path:
    """Directory of the stored run of ``experiment`` at ``scale``."""
    return (root or results_root()) / experiment / check_scale(scale)


# ----------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path, what: str) -> None:
    """Create ``directory`` if needed and check that a file can be written there; ``ValueError``
    naming the folder and the reason otherwise (before any long work starts)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {what} to {directory}: {err.strerror or err}") from err


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically save a checkpoint (any ``torch.save``-able mapping)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`save_checkpoint`, or ``None`` if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """``HEAD`` of the checkout the package runs from, ``+dirty`` if it has changes; else 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def device_name(device: torch.device | str) -> str:
    """A human-readable name of ``device``: the GPU model, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


PROVENANCE_KEYS = ("git_commit", "device", "torch", "numpy", "python", "platform", "dtype", "scale",
                   "wall_time_s", "date")
"""What every stored run's provenance records (:func:`provenance`)."""


def provenance(*, scale: str, device: torch.device | str, dtype: str, wall_time_s: float) -> dict:
    """The provenance record stored with every run."""
    return {
        "git_commit": git_commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dtype": dtype,
        "scale": check_scale(scale),
        "wall_time_s": round(float(wall_time_s), 3),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- stored runs


@dataclass
class StoredRun:
    """A complete run read back from disk."""

    experiment: str
    scale: str
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    provenance: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)

    def describe(self) -> str:
        """One line naming what the run is and where it came from, for chapters to print."""
        p = self.provenance
        return (
            f"{self.experiment} at scale '{self.scale}': {p['device']}, torch {p['torch']}, "
            f"{p['dtype']}, {p['wall_time_s']:.1f} s, {p['date'][:10]}, commit {p['git_commit'][:10]}"
        )


def save_run(
    directory: Path,
    *,
    experiment: str,
    config: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    summary: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> Path:
    """Write ``data.npz`` then ``run.json`` (last, so its presence marks a complete run)."""
    directory = Path(directory)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(directory / "data.npz", buf.getvalue())
    record = {
        "experiment": experiment,
        "config": dict(config),
        "summary": dict(summary),
        "provenance": dict(provenance),
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write_bytes(directory / "run.json", text.encode())
    return directory


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in run.json")


def stored_scales(experiment: str, root: Path | None = None) -> list[str]:
    """The scales at which ``experiment`` has a complete stored run, smallest first."""
    return [s for s in SCALES if (run_dir(experiment, s, root) / "run.json").exists()]


def load_run(experiment: str, scale: str | None = None, root: Path | None = None) -> StoredRun:
    """Load the stored run of ``experiment`` at ``scale`` (default: the largest one stored)."""
    available = stored_scales(experiment, root)
    if scale is None:
        if not available:
            raise FileNotFoundError(
                f"no stored run of {experiment!r} under {root or results_root()}; "
                f"produce one with: python -m pdeeos run {experiment} --scale book"
            )
        scale = available[-1]
    directory = run_dir(experiment, scale, root)
    if scale not in available:
        raise FileNotFoundError(
            f"no stored run of {experiment!r} at scale {scale!r} in {directory}; "
            f"produce one with: python -m pdeeos run {experiment} --scale {scale}"
        )
    remake = f"re-make it with: python -m pdeeos run {experiment} --scale {scale}"
    try:
        record = json.loads((directory / "run.json").read_text())
        parts = {key: record[key] for key in ("config", "summary", "provenance")}
        if not all(isinstance(v, dict) for v in parts.values()):
            raise ValueError("config, summary and provenance must be JSON objects")
        missing = sorted(set(PROVENANCE_KEYS) - set(parts["provenance"]))
        if missing:
            raise ValueError(f"provenance lacks {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"stored run {directory / 'run.json'} is damaged ({err}); {remake}") from err
    try:
        with np.load(directory / "data.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"stored run {directory / 'data.npz'} is damaged ({err}); {remake}") from err
    run = StoredRun(experiment=experiment, scale=scale, path=directory, arrays=arrays, **parts)
    _check_against_experiment(run, remake)
    return run


def _check_against_experiment(run: StoredRun, remake: str) -> None:
    """``ValueError`` when a stored run of a known experiment was made with another config than the
    experiment's, or its arrays do not have the shapes that config gives (where it declares them)."""
    from pdeeos.experiments import registry

    exp = registry().get(run.experiment)
    if exp is None or run.scale not in exp.configs:
        return
    now = json.loads(json.dumps(dict(exp.configs[run.scale]), default=_json_default))  # as stored
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
