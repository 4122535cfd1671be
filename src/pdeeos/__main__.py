"""``python -m pdeeos``: see :mod:`pdeeos.book.cli`."""

from pdeeos.book.cli import main

raise SystemExit(main())
