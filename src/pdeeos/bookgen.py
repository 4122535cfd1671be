"""Book pages generated from the stored runs at build time (a Sphinx extension).

Listed in ``_config.yml``'s extensions, it writes ``book/_generated/ledger.md`` (the claims ledger of
:mod:`pdeeos.ledger`) and ``book/_generated/runs.md`` (every experiment, its stored runs and what they
cost) before Sphinx reads any page; ``book/ledger.md`` and ``book/reproduce.md`` include them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdeeos import ledger, results
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
    counts = ", ".join(f"{n} {verdict}" for verdict, n in ledger.counts(table).items())
    return f"{len(table)} claims: {counts}.\n\n" + ledger.markdown(table)


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


def write_pages(book_dir: Path, root: Path | None = None) -> None:
    """Write the generated pages under ``book_dir/_generated`` (atomically, only when they change)."""
    out = book_dir / "_generated"
    for name, text in (("ledger.md", ledger_page(root)), ("runs.md", runs_page(root))):
        path = out / name
        if not path.exists() or path.read_text() != text:
            results.atomic_write_bytes(path, text.encode())


def _on_builder_inited(app: Any) -> None:
    write_pages(Path(app.srcdir) / "book")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
