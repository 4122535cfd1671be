"""Named scales and the chapter-level choice of scale.

Every experiment is a function of a config chosen by a named scale:

* ``ci`` -- seconds to a few minutes on 2 CPU cores; what nbval re-executes in CI,
* ``book`` -- what the committed notebook outputs show (CPU chapters run the paper's full
  protocol here),
* ``gpu`` -- a larger protocol for one GPU, at most about 8 minutes per experiment there,
* ``paper`` -- the paper's full protocol where that needs a GPU.
"""

from __future__ import annotations

import os

__all__ = ["SCALE_ENV", "SCALES", "chapter_scale", "check_scale"]

SCALES: tuple[str, ...] = ("ci", "book", "gpu", "paper")
"""The scales, smallest first."""

SCALE_ENV = "PDEEOS_SCALE"
"""Environment variable that overrides the scale a chapter runs at (CI sets it to ``ci``)."""


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise ``ValueError``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return scale


def chapter_scale(default: str = "book") -> str:
    """The scale a chapter runs at: ``$PDEEOS_SCALE`` when set, else ``default``."""
    return check_scale(os.environ.get(SCALE_ENV, default))
