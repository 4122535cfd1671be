"""The one plotting style of the book.

Colour-blind-safe colours (Okabe & Ito), labelled axes, light grids, and the paper's value drawn
as a dashed grey reference line. Chapters call :func:`figure` to get axes in this style.
"""

from __future__ import annotations

import math
import re
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
from cycler import cycler

__all__ = ["CHAOTIC", "METHOD_COLORS", "METHOD_LINESTYLES", "PALETTE", "PERIODIC", "RC", "REFERENCE_COLOR",
           "RESTRAINED", "STABLE", "UNSTABLE", "figure", "minus_in_exponents", "number", "reference_line", "table", "use"]

PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (use on dark backgrounds only)
)
"""Okabe-Ito colours, in the order lines are drawn."""

REFERENCE_COLOR = "#7F7F7F"
"""Colour of reference lines (the paper's value, a theoretical bound)."""

STABLE, RESTRAINED, UNSTABLE = PALETTE[0], PALETTE[4], PALETTE[1]
"""Colours of the three regimes, used the same way in every chapter."""

PERIODIC, CHAOTIC = PALETTE[2], RESTRAINED
"""Colours of the two kinds of restrained run (chapter 5): periodic ones absorb rounding errors, chaotic
ones amplify them (drawn in the restrained colour)."""

METHOD_COLORS: dict[str, str] = {"sgd": PALETTE[1], "local-cfl": PALETTE[0], "global-cfl": PALETTE[2],
                                 "eigen-cfl": PALETTE[4], "secant": PALETTE[5], "warmup": PALETTE[6],
                                 "adam": PALETTE[3], "block-adam": PALETTE[3], "reference": REFERENCE_COLOR}
"""Colours of the optimizers compared in chapter 8 (and of its stable reference run); the two Adams share
one, told apart by :data:`METHOD_LINESTYLES`."""
METHOD_LINESTYLES: dict[str, str] = {"sgd": "-", "local-cfl": "--", "global-cfl": "-", "eigen-cfl": "-",
                                     "secant": "-", "warmup": "-.", "adam": "-", "block-adam": "--",
                                     "reference": ":"}
"""Line styles of the optimizers of chapter 8: LocalCFL dashed, since on the PDE it lies on SGD."""

RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (7.0, 3.6),
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def use() -> None:
    """Apply the book's style to matplotlib (idempotent)."""
    mpl.rcParams.update(RC)


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 7.0, height: float | None = None,
           **kwargs: Any) -> tuple[plt.Figure, Any]:
    """``plt.subplots`` in the book's style; ``height`` defaults to 3.2 inches per row."""
    use()
    size = (width, height if height is not None else 3.2 * nrows)
    return plt.subplots(nrows, ncols, figsize=size, **kwargs)


def reference_line(ax: plt.Axes, value: float, label: str, *, axis: str = "y", **kwargs: Any) -> None:
    """Draw a reference value (a bound, the paper's number) as a dashed grey line."""
    style = {"color": REFERENCE_COLOR, "linestyle": "--", "linewidth": 1.2, "label": label} | kwargs
    if axis == "y":
        ax.axhline(value, **style)
    elif axis == "x":
        ax.axvline(value, **style)
    else:
        raise ValueError(f"axis must be 'x' or 'y'; got {axis!r}")


def minus_in_exponents(text: str) -> str:
    """``text`` with every negative exponent written with a true minus sign (``4e-05`` → ``4e−05``): a
    browser may break a line after a hyphen, inside the number, never after a minus sign."""
    return re.sub(r"(\de)-(\d)", "\\1\u2212\\2", text)


def number(x: Any, digits: int = 4) -> Any:
    """A float as ``digits`` significant digits, its exponent's sign a true minus
    (:func:`minus_in_exponents`: ``7.367e−06``). Anything else is returned as it is."""
    if isinstance(x, float) and math.isfinite(x):
        return minus_in_exponents(f"{x:.{digits}g}")
    return x


def table(frame: Any, digits: int = 4) -> Any:
    """A copy of a pandas DataFrame with every float written by :func:`number`, for display."""
    return frame.map(lambda x: number(x, digits))
