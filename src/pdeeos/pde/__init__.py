"""The paper's PDE models: the explicit heat scheme and its CFL condition (:mod:`~pdeeos.pde.heat`), restrained
instability in the Beltrami flow (:mod:`~pdeeos.pde.beltrami`), the one-layer CNN's gradient-descent PDE
(:mod:`~pdeeos.pde.cnnpde`), Von Neumann analysis (:mod:`~pdeeos.pde.vonneumann`), the SymPy derivations
(:mod:`~pdeeos.pde.symbolic`), the Edge of Stability with Zhu et al.'s two-parameter example
(:mod:`~pdeeos.pde.eos`, :mod:`~pdeeos.pde.eos_networks`), and period-doubling cascades with Feigenbaum's ratios
(:mod:`~pdeeos.pde.bifurcation`). They use the reader's tools (:mod:`pdeeos.metrics`,
:mod:`pdeeos.lyapunov`, ...), never the book's apparatus. Imported on first use.
"""

from __future__ import annotations

from pdeeos import lazy_modules

MODULES = ("heat", "beltrami", "cnnpde", "vonneumann", "symbolic", "eos", "eos_networks", "bifurcation")
"""The PDE models' modules."""

__all__ = ["MODULES", *MODULES]

__getattr__ = lazy_modules("pdeeos.pde", MODULES)
