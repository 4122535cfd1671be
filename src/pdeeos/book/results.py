"""Stored runs: a directory per (experiment, scale) under ``results/`` with provenance.

Layout::

    results/<experiment>/<scale>/data.npz     arrays (NumPy)
    results/<experiment>/<scale>/run.json     config, summary numbers, provenance
    results/<experiment>/<scale>/checkpoints/ resumable state of a run in progress (git-ignored)

Every file is written atomically (a temporary file in the same directory, then ``os.replace``)
and ``run.json`` is written last, so a directory with a ``run.json`` always holds a complete run.
Chapters load runs with :func:`pdeeos.book.experiments.load_run` (which checks a run against its
experiment), never by hand-written paths; this module knows the files, not the experiments.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeeos.book.config import SCALES, check_scale
from pdeeos.checkpoints import atomic_write_bytes, damaged_checkpoint, load_checkpoint

RESULTS_ENV = "PDEEOS_RESULTS"
"""Environment variable naming another results directory (tests use a temporary one)."""

_REPO_ROOT = Path(__file__).resolve().parents[3]


def results_root() -> Path:
    """The results directory: ``$PDEEOS_RESULTS`` if set, else ``results/`` of this checkout."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else _REPO_ROOT / "results"


def run_dir(experiment: str, scale: str, root: Path | None = None) -> Path:
    """Directory of the stored run of ``experiment`` at ``scale``."""
    return (root or results_root()) / experiment / check_scale(scale)


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


def _is_seconds(value: Any) -> bool:
    """Whether ``value`` is a finite, non-negative number of seconds as JSON stores it."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and value >= 0


def load_wall_time(path: Path) -> float:
    """The seconds recorded in a run's ``wall_time.json`` (0 when there is none); ``ValueError``
    naming the file and how to recover when it is damaged."""
    path = Path(path)
    if not path.exists():
        return 0.0
    resumes = "the run resumes from its other checkpoints, without counting the time of its earlier attempts"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise damaged_checkpoint(path, f"not readable as JSON: {err}", resumes) from err
    seconds = record.get("wall_time_s") if isinstance(record, dict) else None
    if not _is_seconds(seconds):
        raise damaged_checkpoint(path, f"wall_time_s is {seconds!r}, not a number of seconds >= 0", resumes)
    return float(seconds)


def check_checkpoints(directory: Path) -> None:
    """Read every checkpoint under ``directory`` (``*.pt`` through :func:`load_checkpoint`, ``*.npz``
    array by array) so that a damaged one is refused with :func:`load_checkpoint`'s ``ValueError``
    before a run starts, not in a worker process hours into it."""
    for path in sorted(Path(directory).rglob("*")):
        if path.suffix == ".pt":
            load_checkpoint(path)
        elif path.suffix == ".npz":
            try:
                with np.load(path) as npz:
                    for key in npz.files:
                        npz[key]
            except Exception as err:   # truncated zip, bad header, pickled object arrays
                raise damaged_checkpoint(path, f"NumPy cannot read it: {err}") from err


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """``HEAD`` of the checkout the package runs from, ``+dirty`` if its code has changes (the stored runs
    under ``results/`` are not code: a script that rewrites several of them still names a clean commit);
    else 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
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


def _is_iso_date(value: Any) -> bool:
    """Whether ``value`` is a date as :func:`provenance` stores it (ISO 8601)."""
    try:
        _dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


_PROVENANCE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "wall_time_s": (_is_seconds, "not a number of seconds >= 0"),
    "scale": (lambda value: isinstance(value, str) and value in SCALES, f"not one of {', '.join(SCALES)}"),
    "date": (_is_iso_date, "not an ISO date string"),
}
"""Provenance fields that are not just any string: the test each must pass, and what it says otherwise."""


def _check_provenance(record: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first provenance field that is missing or has the wrong type (what
    :meth:`StoredRun.describe` and the ledger format must not fail on)."""
    missing = sorted(set(PROVENANCE_KEYS) - set(record))
    if missing:
        raise ValueError(f"provenance lacks {', '.join(missing)}")
    for key in PROVENANCE_KEYS:
        valid, problem = _PROVENANCE_CHECKS.get(key, (lambda value: isinstance(value, str), "not a string"))
        if not valid(record[key]):
            raise ValueError(f"provenance {key} is {record[key]!r}, {problem}")


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
        """One line naming what the run is and where it came from, for chapters to print (the
        provenance's types were checked by :func:`load_run`)."""
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


def replace_summary(run: StoredRun, summary: Mapping[str, Any]) -> None:
    """Rewrite a stored run's ``run.json`` with a new ``summary`` computed from its stored arrays (its
    arrays, config and provenance untouched), recording in the provenance, under ``summary_recomputed``,
    the commit and date of the code that recomputed it."""
    record = {"experiment": run.experiment, "config": run.config, "summary": dict(summary),
              "provenance": {**run.provenance, "summary_recomputed": {
                  "git_commit": git_commit(),
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}}
    text = json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write_bytes(run.path / "run.json", text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in run.json")


def stored_scales(experiment: str, root: Path | None = None) -> list[str]:
    """The scales at which ``experiment`` has a complete stored run, smallest first."""
    return [s for s in SCALES if (run_dir(experiment, s, root) / "run.json").exists()]


def as_stored(value: Any) -> Any:
    """``value`` as ``run.json`` stores it (NumPy numbers and arrays as JSON numbers and lists)."""
    return json.loads(json.dumps(value, default=_json_default))


def read_run(experiment: str, scale: str, root: Path | None = None, *, remake: str) -> StoredRun:
    """Read the stored run of ``experiment`` at ``scale`` from its files; ``ValueError`` naming the file, what
    is wrong and ``remake`` (what to do about it) when one is damaged (unreadable, a provenance field of the
    wrong type). :func:`pdeeos.book.experiments.load_run` finds the run and checks it against its experiment."""
    directory = run_dir(experiment, scale, root)
    try:
        record = json.loads((directory / "run.json").read_text())
        parts = {key: record[key] for key in ("config", "summary", "provenance")}
        if not all(isinstance(v, dict) for v in parts.values()):
            raise ValueError("config, summary and provenance must be JSON objects")
        _check_provenance(parts["provenance"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"stored run {directory / 'run.json'} is damaged ({err}); {remake}") from err
    try:
        with np.load(directory / "data.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"stored run {directory / 'data.npz'} is damaged ({err}); {remake}") from err
    return StoredRun(experiment=experiment, scale=scale, path=directory, arrays=arrays, **parts)


__all__ = ["PROVENANCE_KEYS", "RESULTS_ENV", "StoredRun", "as_stored", "check_checkpoints", "check_writable",
           "device_name", "git_commit", "load_wall_time", "provenance", "read_run", "replace_summary",
           "results_root", "run_dir", "save_run", "stored_scales"]
