"""The book's own apparatus: scales (:mod:`~pdeeos.book.config`), stored runs with provenance
(:mod:`~pdeeos.book.results`), the experiment registry behind ``python -m pdeeos`` and the loading of stored
runs against it (:mod:`~pdeeos.book.experiments`), the claims ledger (:mod:`~pdeeos.book.ledger`), the pages
generated at build time (:mod:`~pdeeos.book.bookgen`), tables and figures (:mod:`~pdeeos.book.style`) and the
command line (:mod:`~pdeeos.book.cli`). Imported on first use.
"""

from __future__ import annotations

from pdeeos import lazy_modules

MODULES = ("config", "results", "experiments", "ledger", "bookgen", "style", "cli")
"""The apparatus's modules."""

__all__ = ["MODULES", *MODULES]

__getattr__ = lazy_modules("pdeeos.book", MODULES)
