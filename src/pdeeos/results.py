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
import math
import os
import platform
import secrets
import shlex
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Mapping
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
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the permissions of any file the user creates (0666 less the umask), not the
    0600 of :func:`tempfile.mkstemp`, so stored runs can be shared like the rest of the checkout.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies
            break
        except FileExistsError:
            continue
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


_STARTS_OVER = "that part of the run starts over"


def _damaged_checkpoint(path: Path, what: str, consequence: str = _STARTS_OVER) -> ValueError:
    """The one-line error for a checkpoint file that cannot be used: the file, what is wrong with
    it (its first sentence, on one line) and what to do (delete it, with the command; ``consequence``)."""
    what = " ".join(what.split(". ")[0].split())[:200]
    return ValueError(f"checkpoint {path} is damaged ({what}); delete it "
                      f"(rm {shlex.quote(str(path))}) and run again: {consequence}")


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`save_checkpoint`, or ``None`` if there is none;
    ``ValueError`` naming the file and how to recover when it is damaged (truncated, garbage)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:   # unpickling garbage can raise nearly any exception type
        raise _damaged_checkpoint(path, f"torch cannot read it: {err}") from err
    if not isinstance(state, dict):
        raise _damaged_checkpoint(path, f"it holds a {type(state).__name__}, not a dict")
    return state


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
        raise _damaged_checkpoint(path, f"not readable as JSON: {err}", resumes) from err
    seconds = record.get("wall_time_s") if isinstance(record, dict) else None
    if not _is_seconds(seconds):
        raise _damaged_checkpoint(path, f"wall_time_s is {seconds!r}, not a number of seconds >= 0", resumes)
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
                raise _damaged_checkpoint(path, f"NumPy cannot read it: {err}") from err


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


def _run_command(experiment: str, scale: str, root: Path | None) -> str:
    """The command line that stores a run of ``experiment`` at ``scale`` under ``root``."""
    where = "" if root is None else f" --results {shlex.quote(str(root))}"
    return f"python -m pdeeos run {experiment} --scale {scale}{where}"


def _no_run(experiment: str, scale: str | None, root: Path | None, available: list[str]) -> FileNotFoundError:
    """The error for a run that is not stored, advising only a command that exists: a scale the
    experiment has, and no ``run`` at all for a name no experiment has."""
    from pdeeos.experiments import did_you_mean, registry

    known = registry()
    where = f"under {root or results_root()}" if scale is None else f"at scale {scale!r} in {run_dir(experiment, scale, root)}"
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
    from pdeeos.experiments import registry

    exp = registry().get(experiment)
    if exp is None or scale not in exp.configs:
        return (f"no experiment makes {experiment!r} at scale {scale!r} now, so restore the folder "
                f"{run_dir(experiment, scale, root)} from version control or delete it")
    return f"re-make it with: {_run_command(experiment, scale, root)}"


def load_run(experiment: str, scale: str | None = None, root: Path | None = None) -> StoredRun:
    """Load the stored run of ``experiment`` at ``scale`` (default: the largest one stored).

    ``FileNotFoundError`` when there is none, ``ValueError`` when its files are damaged (unreadable,
    a provenance field of the wrong type, another config than the experiment's); each names the file
    and the command that makes the run.
    """
    available = stored_scales(experiment, root)
    if scale is None and available:
        scale = available[-1]
    if scale not in available:
        raise _no_run(experiment, scale, root, available)
    directory = run_dir(experiment, scale, root)
    remake = _remake(experiment, scale, root)
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
