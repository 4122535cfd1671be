"""Book pages generated from the stored runs at build time (a Sphinx extension).

Listed in ``_config.yml``'s extensions, it writes ``book/_generated/ledger.md`` (the claims ledger of
:mod:`pdeeos.ledger`), ``book/_generated/runs.md`` (every experiment, its stored runs and what they
cost) and ``book/_generated/story.png`` (the introduction's figure, chapter 5's Fig. 5 right and Fig. 6
from the stored ``cnnpde-regimes`` run) before Sphinx reads any page; ``book/ledger.md``,
``book/reproduce.md`` and ``book/intro.md`` include them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from pdeeos import cnnpde, ledger, results, style
from pdeeos.config import SCALES
from pdeeos.experiments import registry


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ledger_page(root: Path | None = None) -> str:
    """The ledger table and its verdict counts, as MyST markdown."""
    table = ledger.rows(root)
    return f"{len(table)} claims.\n\n" + ledger.markdown(table)


def runs_page(root: Path | None = None) -> str:
    """A table of every experiment: chapter, scales, and for each stored run its device, wall time and date."""
    lines = ["| experiment | chapter | scales | stored runs (device, wall time, date) |",
             "| --- | --- | --- | --- |"]
    for name, exp in sorted(registry().items()):
        stored = []
        for scale in results.stored_scales(name, root):
            p = results.load_run(name, scale, root).provenance
            stored.append(f"{scale}: {p['device']}, {_duration(p['wall_time_s'])}, {p['date'][:10]}")
        scales = ", ".join(s for s in SCALES if s in exp.configs)
        lines.append(f"| `{name}` | [{int(exp.chapter[:2])}](../chapters/{exp.chapter}.ipynb) | {scales} | "
                     f"{'; '.join(stored) or 'none stored'} |")
    return "\n".join(lines) + "\n"


def story_figure(root: Path | None = None) -> bytes:
    """PNG of the book in one figure: the one-layer CNN's k = 1 and k = 3 twins drift apart exactly in
    the runs whose normalised sharpness reaches 2 (chapter 5, from the stored ``cnnpde-regimes`` run)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    run = results.load_run("cnnpde-regimes", root=root)
    a = run.arrays
    names = [cnnpde.RUN_CLASSES[int(c)] for c in a["paper_class"]]
    colors = {"stable": style.STABLE, "periodic": style.PERIODIC, "chaotic": style.CHAOTIC, "blow-up": style.UNSTABLE}
    style.use()
    fig, (left, right) = style.figure(1, 2, width=10, height=3.6)
    seen: set[str] = set()
    for dt, name, rel, sharp in zip(a["dts"], names, a["rel_l1_k3"], a["normalised_sharpness"]):
        if name == "blow-up":
            continue
        label = None if name in seen else name
        seen.add(name)
        left.semilogy(np.where(rel > 0, rel, np.nan), color=colors[name], linewidth=0.8, label=label)
        right.plot(sharp[:101], color=colors[name], linewidth=0.8 if name in cnnpde.RESTRAINED else 1.8, label=label)
    left.set(xlabel="iteration $n$", ylabel="RelL1 between the $k = 1$ and $k = 3$ runs", ylim=(1e-18, 5),
             title="last-bit differences: damped, or amplified where chaotic")
    style.reference_line(right, 2.0, "edge of stability: 2")
    right.set(xlabel="iteration $n$", ylabel=r"$\Delta t\,\lambda_{\max}(\nabla^2 L)$", ylim=(0, 8),
              title="normalised sharpness, first 100 iterations")
    left.legend(fontsize=8)
    right.legend(fontsize=8, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_pages(book_dir: Path, root: Path | None = None) -> None:
    """Write the generated pages under ``book_dir/_generated`` (atomically, only when they change)."""
    out = book_dir / "_generated"
    pages = {"ledger.md": ledger_page(root).encode(), "runs.md": runs_page(root).encode(),
             "story.png": story_figure(root)}
    for name, data in pages.items():
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            results.atomic_write_bytes(path, data)


def _on_builder_inited(app: Any) -> None:
    write_pages(Path(app.srcdir) / "book")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
