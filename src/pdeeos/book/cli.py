"""Command line: ``python -m pdeeos list``, ``run EXPERIMENT --scale S`` and ``show EXPERIMENT``."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pdeeos.book import experiments, results
from pdeeos.book.config import SCALES


class _Parser(argparse.ArgumentParser):
    """An argument parser that adds "did you mean" to an invalid choice (a command, a scale)."""

    def _check_value(self, action: argparse.Action, value: str) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as err:
            raise argparse.ArgumentError(
                action, err.message + experiments.did_you_mean(value, map(str, action.choices or ()))) from None


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and, by name, the parsers of its commands; abbreviated flags are refused (an
    abbreviation that works today would mean another flag once one is added)."""
    parser = _Parser(prog="python -m pdeeos", description=__doc__, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    lister = sub.add_parser("list", help="list the experiments, their scales and the stored runs",
                            allow_abbrev=False)
    lister.add_argument("--results", type=Path, default=None, help="results directory (default: results/)")
    run = sub.add_parser("run", help="run experiments and store them under results/", allow_abbrev=False)
    run.add_argument("experiment", nargs="+",
                     help="experiment names or shell patterns ('perturbed-sgd*'), run one after another")
    run.add_argument("--scale", choices=SCALES, default="ci")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--results", type=Path, default=None, help="results directory (default: results/)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes for independent tasks (default: 2 on a CPU, 1 on a GPU); "
                          "the stored arrays do not depend on it")
    show = sub.add_parser("show", help="print the provenance and summary of a stored run", allow_abbrev=False)
    show.add_argument("experiment")
    show.add_argument("--scale", choices=SCALES, default=None)
    show.add_argument("--results", type=Path, default=None, help="results directory (default: results/)")
    return parser, {"list": lister, "run": run, "show": show}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed ``argv``; an unknown flag is an argparse error (exit 2) suggesting the closest ones."""
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = commands[args.command]
        flags = [flag for action in command._actions for flag in action.option_strings]
        hints = "".join(experiments.did_you_mean(arg.split("=")[0], flags) for arg in unknown if arg.startswith("-"))
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hints}")
    return args


def _list(root: Path | None) -> int:
    for name, exp in sorted(experiments.registry().items()):
        stored = results.stored_scales(name, root) or ["none"]
        print(f"{name:28s} {exp.summary}")
        print(f"{'':28s} chapter {exp.chapter}; scales {', '.join(exp.configs)}; stored {', '.join(stored)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parse(argv)
    try:
        if args.command == "list":
            return _list(args.results)
        if args.command == "run":
            names = _expand(args.experiment, args.scale)
            for name in names:
                _print(experiments.run_experiment(
                    name, args.scale, device=args.device, root=args.results,
                    show_progress=not args.no_progress, workers=args.workers))
        else:
            _print(experiments.load_run(args.experiment, args.scale, args.results))
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
            hint = experiments.did_you_mean(pattern, known) or f"; known: {', '.join(known)}"
            raise KeyError(f"no experiment matches {pattern!r}{hint}")
        names += [m for m in matched if m not in names]
    for name in names:
        experiments.get(name).config(scale)
    return names


def _print(run: results.StoredRun) -> None:
    print(run.describe())
    print(f"stored in {run.path}")
    print(json.dumps(run.summary, indent=2, sort_keys=True))


__all__ = ["main"]
