"""Figures stay readable: every legend is at least 8 pt, in the book's style and in every call that
draws one (the chapters' sources, the package's generated figures)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib as mpl
import pytest

from pdeeos.book import style

ROOT = Path(__file__).resolve().parents[1]
MIN_LEGEND_PT = 8.0
SOURCES = sorted([*(ROOT / "chapters").glob("*.md"), *(ROOT / "src" / "pdeeos").rglob("*.py")])
TOO_SMALL = {"xx-small", "x-small", "smaller"}
"""Named sizes below 8 pt at the book's 10 pt font ("small" is 8.3 pt)."""


def legend_calls(text: str) -> list[tuple[int, str]]:
    """Every ``legend(...)`` call in ``text``: its line number and its arguments (brackets matched)."""
    calls = []
    for match in re.finditer(r"\blegend\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append((text.count("\n", 0, match.start()) + 1, text[match.end():i - 1]))
    return calls


def small_legends(text: str) -> list[str]:
    """The legend calls of ``text`` whose font size is below :data:`MIN_LEGEND_PT`."""
    found = []
    for line, args in legend_calls(text):
        sizes = re.findall(r"""(?:fontsize|size)\s*[=:]\s*(?:"|')?([\w.-]+)""", args)
        for size in sizes:
            try:
                small = float(size) < MIN_LEGEND_PT
            except ValueError:
                small = size in TOO_SMALL
            if small:
                found.append(f"line {line}: legend({' '.join(args.split())})")
    return found


def test_the_style_sets_legends_of_at_least_8_pt():
    style.use()
    size = mpl.rcParams["legend.fontsize"]
    points = size if isinstance(size, (int, float)) else mpl.font_manager.FontProperties(size=size).get_size_in_points()
    assert points >= MIN_LEGEND_PT, f"pdeeos.book.style sets legends of {points} pt"


def test_the_check_finds_small_legends():
    text = 'ax.legend(fontsize=7)\nax.legend(ncol=2,\n          fontsize="x-small")\nax.legend(fontsize=8)\nax.legend()'
    assert small_legends(text) == ["line 1: legend(fontsize=7)", 'line 2: legend(ncol=2, fontsize="x-small")']


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_legend_is_smaller_than_8_pt(path):
    small = small_legends(path.read_text(encoding="utf-8"))
    assert not small, f"{path.relative_to(ROOT)}: legends below {MIN_LEGEND_PT:g} pt: {small}"
