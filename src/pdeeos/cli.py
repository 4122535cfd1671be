"""Command line: ``python -m pdeeos list`` and ``python -m pdeeos run EXPERIMENT --scale S``."""

from __future__ import annotations

import argparse
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
    run = sub.add_parser("run", help="run one experiment and store it under results/")
    run.add_argument("experiment")
    run.add_argument("--scale", choices=SCALES, default="ci")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--results", type=Path, default=None, help="results directory (default: results/)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
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
            run = experiments.run_experiment(
                args.experiment, args.scale, device=args.device, root=args.results,
                show_progress=not args.no_progress,
            )
        else:
            run = results.load_run(args.experiment, args.scale, args.results)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(run.describe())
    print(f"stored in {run.path}")
    print(json.dumps(run.summary, indent=2, sort_keys=True))
    return 0
