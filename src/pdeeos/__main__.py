"""``python -m pdeeos``: see :mod:`pdeeos.cli`."""

from pdeeos.cli import main

raise SystemExit(main())
