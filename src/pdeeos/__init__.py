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
* :mod:`pdeeos.sharpness` -- the top Hessian eigenvalues by Lanczos, measured without disturbing training,
* :mod:`pdeeos.spread` -- accuracy spread and prediction churn over ``k`` and over seeds,
* :mod:`pdeeos.training` -- lockstep training of the book's perturbed-SGD protocol,
* :mod:`pdeeos.models`, :mod:`pdeeos.data` -- the paper's networks and the datasets' loaders.

The paper's PDE models: :mod:`pdeeos.heat` (the explicit heat scheme and its CFL condition),
:mod:`pdeeos.beltrami` (restrained instability), :mod:`pdeeos.cnnpde` (the one-layer CNN),
:mod:`pdeeos.vonneumann` (Von Neumann analysis), :mod:`pdeeos.symbolic` (the SymPy derivations),
:mod:`pdeeos.eos` and :mod:`pdeeos.eos_networks` (the Edge of Stability, Zhu et al.'s example).

The book's own apparatus: :mod:`pdeeos.config`, :mod:`pdeeos.results`, :mod:`pdeeos.experiments`
(scales, stored runs with provenance, the experiment registry behind ``python -m pdeeos``),
:mod:`pdeeos.ledger`, :mod:`pdeeos.bookgen`, :mod:`pdeeos.style` and :mod:`pdeeos.cli`.

Modules and :class:`Twins` are imported on first use, so ``import pdeeos`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

MODULES = ("twins", "optim", "metrics", "lyapunov", "sharpness", "spread", "training", "models", "data",
           "heat", "beltrami", "cnnpde", "vonneumann", "symbolic", "eos", "eos_networks",
           "config", "results", "experiments", "ledger", "bookgen", "style", "cli")
"""Every public module of the package."""

__all__ = ["MODULES", "Twins", *MODULES]


def __getattr__(name: str) -> Any:
    """``pdeeos.Twins`` and ``pdeeos.<module>``, imported on first use."""
    if name == "Twins":
        return importlib.import_module("pdeeos.twins").Twins
    if name in MODULES:
        return importlib.import_module(f"pdeeos.{name}")
    raise AttributeError(f"module 'pdeeos' has no attribute {name!r}")
