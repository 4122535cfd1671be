"""Recompute the spread statistics of every stored perturbed-SGD run (chapter 6) and of the stored
ResNet comparison of chapter 8 (``local-cfl-resnet``) from their stored predictions, and the twin summaries of
chapter 9's ``own-network`` from its stored twin records.

    .venv/bin/python scripts/resummarize.py

No training: :func:`pdeeos.book.experiments.perturbed_sgd.resummarize` reads each run's ``predictions`` and
``test_labels`` (:func:`pdeeos.book.experiments.local_cfl.resummarize_resnet` each method's predictions and the
data set's labels) and :func:`pdeeos.book.results.replace_summary` rewrites its ``run.json``, recording the commit
that recomputed it. Run it from a clean checkout, so that commit names the code.
"""

from __future__ import annotations

from pdeeos.book import experiments, results
from pdeeos.book.experiments import local_cfl, own_network, perturbed_sgd


def main() -> None:
    for name in perturbed_sgd.SPREAD_RUNS:
        for scale in results.stored_scales(name):
            run = experiments.load_run(name, scale)
            results.replace_summary(run, perturbed_sgd.resummarize(run))
            print(f"{name} ({scale}): {perturbed_sgd.verdict(experiments.load_run(name, scale).summary, run.arrays['rel_l1'])}")
    for scale in results.stored_scales("local-cfl-resnet"):
        run = experiments.load_run("local-cfl-resnet", scale)
        results.replace_summary(run, local_cfl.resummarize_resnet(run))
        print(f"local-cfl-resnet ({scale}): recomputed")
    for scale in results.stored_scales("own-network"):
        run = experiments.load_run("own-network", scale)
        results.replace_summary(run, own_network.resummarize(run))
        print(f"own-network ({scale}): twin summaries recomputed")


if __name__ == "__main__":
    main()
