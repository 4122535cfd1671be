"""Checkpoint files that a run can trust: written atomically, read back with a one-line error when damaged.

A file written by :func:`atomic_write_bytes` is seen whole or not at all (a temporary file in the same
directory, then ``os.replace``), so a run killed while it saves leaves the previous checkpoint intact and
resumes from it bit for bit; :func:`save_checkpoint` and :func:`load_checkpoint` do so for any
``torch.save``-able mapping, for instance a :meth:`pdeeos.twins.Twins.state_dict`::

    checkpoints.save_checkpoint(path, twins.state_dict())          # after every epoch
    if (state := checkpoints.load_checkpoint(path)) is not None:   # at the start
        twins.load_state_dict(state)
"""

from __future__ import annotations

import io
import os
import secrets
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["STARTS_OVER", "atomic_write_bytes", "computed_once", "damaged_checkpoint", "finished_arrays",
           "load_checkpoint", "save_checkpoint"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the permissions of any file the user creates (0666 less the umask), not the
    0600 of ``tempfile.mkstemp``, so stored runs can be shared like the rest of the checkout.
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


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically save a checkpoint (any ``torch.save``-able mapping)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


STARTS_OVER = "that part of the run starts over"
"""What happens when a damaged checkpoint is deleted: the part of the run it saved is done again."""


def damaged_checkpoint(path: Path, what: str, consequence: str = STARTS_OVER) -> ValueError:
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
        raise damaged_checkpoint(path, f"torch cannot read it: {err}") from err
    if not isinstance(state, dict):
        raise damaged_checkpoint(path, f"it holds a {type(state).__name__}, not a dict")
    return state


def computed_once(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays a finished piece of a run saved at ``path`` (:func:`finished_arrays`), or ``compute()``'s,
    saved there with ``np.savez`` first: a run that stops resumes with the pieces it finished."""
    if (stored := finished_arrays(path)) is not None:
        return stored
    out = compute()
    np.savez(path, **out)
    return out


def finished_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays a finished piece of a run saved at ``path`` with ``np.savez``, or ``None`` if it has not
    finished (a run resumes by reading them instead of computing them again)."""
    path = Path(path)
    if not path.exists():
        return None
    with np.load(path) as stored:
        return dict(stored)
