"""pdeeos: numerical PDE stability, restrained instability and the Edge of Stability.

The package behind the pdeeos book. Each module is named after a concept of the paper
(Sun, Lao, Sundaramoorthi, Yezzi) or of Zhu et al.

What a reader imports to test their own training:

* :class:`pdeeos.Twins` (:mod:`pdeeos.twins`) -- copies of one's own model, one per last-bit
  perturbation ``k``, stepped in one's own loop, with their distances, fates and growth rates,
* :mod:`pdeeos.optim` -- the paper's perturbed SGD and Adam, :func:`pdeeos.optim.perturb` for any
  optimizer, stable step sizes, and local CFL step sizes,
* :mod:`pdeeos.metrics` -- RelL1 and other distances between twin runs,
* :mod:`pdeeos.lyapunov` -- Lyapunov exponents, twin rates, onsets and fates of twin records,
* :mod:`pdeeos.tangent` -- the tangent map of SGD (heavy ball, Nesterov) on one's own module, for a
  Lyapunov exponent without twins,
* :mod:`pdeeos.sharpness` -- the top Hessian eigenvalues by Lanczos, measured without disturbing training,
* :mod:`pdeeos.spread` -- accuracy spread and prediction churn over ``k`` and over seeds,
* :mod:`pdeeos.training` -- lockstep training of the book's perturbed-SGD protocol,
* :mod:`pdeeos.models`, :mod:`pdeeos.data` -- the paper's networks and the datasets' loaders,
* :mod:`pdeeos.checkpoints` -- atomic checkpoint files, for runs that resume bit for bit.

The paper's PDE models, in :mod:`pdeeos.pde`: :mod:`pdeeos.pde.heat` (the explicit heat scheme and its CFL condition),
:mod:`pdeeos.pde.beltrami` (restrained instability), :mod:`pdeeos.pde.cnnpde` (the one-layer CNN),
:mod:`pdeeos.pde.vonneumann` (Von Neumann analysis), :mod:`pdeeos.pde.symbolic` (the SymPy derivations),
:mod:`pdeeos.pde.eos` and :mod:`pdeeos.pde.eos_networks` (the Edge of Stability, Zhu et al.'s example).

The book's own apparatus, in :mod:`pdeeos.book`: :mod:`pdeeos.book.config`, :mod:`pdeeos.book.results`, :mod:`pdeeos.book.experiments`
(scales, stored runs with provenance, the experiment registry behind ``python -m pdeeos``),
:mod:`pdeeos.book.ledger`, :mod:`pdeeos.book.bookgen`, :mod:`pdeeos.book.style` and :mod:`pdeeos.book.cli`.

The reader's tools import neither of the other two; the PDE models import the reader's tools only. Modules
and :class:`Twins` are imported on first use, so ``import pdeeos`` stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

MODULES = ("twins", "optim", "metrics", "lyapunov", "tangent", "sharpness", "spread", "training", "models",
           "data", "checkpoints", "pde", "book")
"""The reader's modules, and the two subpackages :mod:`pdeeos.pde` and :mod:`pdeeos.book`."""

__all__ = ["MODULES", "Twins", *MODULES]


def lazy_modules(package: str, modules: tuple[str, ...],
                 extra: dict[str, tuple[str, str]] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``package.<module>`` for each of ``modules``, and each
    name of ``extra`` (name -> (module, attribute)), on first use."""
    extra = extra or {}

    def __getattr__(name: str) -> Any:
        if name in extra:
            module, attribute = extra[name]
            return getattr(importlib.import_module(f"{package}.{module}"), attribute)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_modules("pdeeos", MODULES, {"Twins": ("twins", "Twins")})
