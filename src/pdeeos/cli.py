"""Command line: ``python -m pdeeos list`` and ``python -m pdeeos run EXPERIMENT --scale S``."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pdeeos import experiments, results
from pdeeos.config import SCALES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pdeeos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments, their scales and the stored runs")
    run = sub.add_parser("run", help="run experiments and store them under results/")
    run.add_argument("experiment", nargs="+",
                     help="experiment names or shell patterns ('perturbed-sgd*'), run one after another")
    run.add_argument("--scale", choices=SCALES, default="ci")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--results", type=Path, default=None, help="results directory (default: results/)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes for independent tasks (default: 2 on a CPU, 1 on a GPU); "
                          "the stored arrays do not depend on it")
    show = sub.add_parser("show", help="print the provenance and summary of a stored run")
    show.add_argument("experiment")
    show.add_argument("--scale", choices=SCALES, default=None)
    show.add_argument("--results", type=Path, default=None)
    return parser


def _list() -> int:
    for name, exp in sorted(experiments.registry().items()):
        stored = results.stored_scales(name) or ["none"]
        print(f"{name:28s} {exp.summary}")
        print(f"{'':28s} chapter {exp.chapter}; scales {', '.join(exp.configs)}; stored {', '.join(stored)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "run":
            names = _expand(args.experiment, args.scale)
            for name in names:
                _print(experiments.run_experiment(
                    name, args.scale, device=args.device, root=args.results,
                    show_progress=not args.no_progress, workers=args.workers))
        else:
            _print(results.load_run(args.experiment, args.scale, args.results))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except OSError as err:   # FileNotFoundError of a missing run, a data set that cannot be read
        print(f"error: {err.strerror + ': ' + str(err.filename) if err.filename else err}", file=sys.stderr)
        return 2
    return 0


def _expand(patterns: Sequence[str], scale: str) -> list[str]:
    """The experiments named or matched by ``patterns``, each checked to have ``scale`` before
    anything runs; ``KeyError``/``ValueError`` otherwise."""
    known = sorted(experiments.registry())
    names: list[str] = []
    for pattern in patterns:
        matched = fnmatch.filter(known, pattern)
        if not matched:
            raise KeyError(f"no experiment matches {pattern!r}; known: {', '.join(known)}")
        names += [m for m in matched if m not in names]
    for name in names:
        experiments.get(name).config(scale)
    return names


def _print(run: results.StoredRun) -> None:
    print(run.describe())
    print(f"stored in {run.path}")
    print(json.dumps(run.summary, indent=2, sort_keys=True))
