"""pdeeos: numerical PDE stability, restrained instability and the Edge of Stability.

The package behind the pdeeos book. Each module is named after a concept of the paper
(Sun, Lao, Sundaramoorthi, Yezzi) or of Zhu et al.:

* :mod:`pdeeos.heat` -- the explicit heat-equation scheme and its CFL condition,
* :mod:`pdeeos.metrics` -- RelL1 and other distances between twin runs,
* :mod:`pdeeos.style` -- the one plotting style of the book,
* :mod:`pdeeos.config`, :mod:`pdeeos.results`, :mod:`pdeeos.experiments` -- scales, stored runs
  with provenance, and the experiment registry behind ``python -m pdeeos``.
"""

__version__ = "0.1.0"
