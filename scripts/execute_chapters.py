"""Execute the chapters and write their outputs into the paired notebooks.

Each ``chapters/NN-slug.md`` (MyST markdown, the source of truth) is read with jupytext, executed
top to bottom in a fresh kernel from the ``chapters/`` directory, and written to
``chapters/NN-slug.ipynb`` with its outputs: what Colab opens and what nbval re-checks.

    python scripts/execute_chapters.py                 # every chapter
    python scripts/execute_chapters.py chapters/01-heat-cfl.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def execute(md: Path, timeout: int) -> float:
    """Execute one chapter and write its paired notebook; return the wall time in seconds."""
    notebook = jupytext.read(md)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                "language": "python"})
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(md.parent)}}).execute()
    jupytext.write(notebook, md.with_suffix(".ipynb"), fmt="ipynb")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", type=Path, help="chapter .md files (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    args = parser.parse_args()
    for md in args.chapters or sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        print(f"executing {md.name} ...", flush=True)
        print(f"  {execute(md.resolve(), args.timeout):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
