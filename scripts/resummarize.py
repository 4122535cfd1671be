"""Recompute the spread statistics of every stored perturbed-SGD run from its stored predictions.

    .venv/bin/python scripts/resummarize.py            # every perturbed-sgd* run under results/

No training: :func:`pdeeos.experiments.perturbed_sgd.resummarize` reads each run's ``predictions`` and
``test_labels`` and :func:`pdeeos.results.replace_summary` rewrites its ``run.json``, recording the commit
that recomputed it. Run it from a clean checkout, so that commit names the code.
"""

from __future__ import annotations

from pdeeos import results
from pdeeos.experiments import perturbed_sgd, registry


def main() -> None:
    for name in sorted(n for n in registry() if n.startswith("perturbed-sgd") and not n.endswith("constant-lr")):
        for scale in results.stored_scales(name):
            run = results.load_run(name, scale)
            results.replace_summary(run, perturbed_sgd.resummarize(run))
            print(f"{name} ({scale}): {perturbed_sgd.verdict(results.load_run(name, scale).summary, run.arrays['rel_l1'])}")


if __name__ == "__main__":
    main()
