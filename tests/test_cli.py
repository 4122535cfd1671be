"""The command line's advice: only commands that exist, "did you mean" for typos, no abbreviations."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from pdeeos.book import cli, experiments, results


@pytest.fixture
def stored_heat(tmp_path: Path) -> Path:
    """A results folder holding a copy of heat-cfl's stored run (at the largest scale stored)."""
    run = experiments.load_run("heat-cfl")
    shutil.copytree(run.path, results.run_dir("heat-cfl", run.scale, tmp_path))
    return tmp_path


def _advised_run_works(message: str) -> None:
    """Every ``python -m pdeeos run ...`` in ``message`` parses and names a scale its experiment has."""
    commands = re.findall(r"python -m pdeeos (run [^;)]*)", message)
    assert len(commands) == message.count("python -m pdeeos run"), message
    for command in commands:
        args = cli._parse(shlex.split(command))
        for name in args.experiment:
            experiments.get(name).config(args.scale)


@pytest.mark.parametrize(("argv", "expected", "not_expected"), [
    (["show", "heat-cfll"], "no experiment is called 'heat-cfll'; did you mean 'heat-cfl'?", "pdeeos run"),
    (["show", "heat-cfl", "--scale", "gpu"], "'heat-cfl' has no 'gpu' scale (it has ci, book); "
                                             "produce one with: python -m pdeeos run heat-cfl --scale book",
     "--scale gpu"),
    (["show", "heat-cfl", "--scale", "ci"], "produce one with: python -m pdeeos run heat-cfl --scale ci --results",
     None),
], ids=["unknown-name", "scale-it-lacks", "scale-not-stored"])
def test_show_advises_only_commands_that_exist(tmp_path, argv, expected, not_expected, capsys):
    assert cli.main([*argv, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not_expected is None or not_expected not in err, err
    _advised_run_works(err)


def test_show_of_a_scale_the_experiment_lacks_points_at_the_stored_ones(stored_heat, capsys):
    assert cli.main(["show", "heat-cfl", "--scale", "gpu", "--results", str(stored_heat)]) == 2
    err = capsys.readouterr().err
    assert "has no 'gpu' scale (it has ci, book); it is stored at book (choose one with --scale)" in err, err


def test_list_reads_the_results_folder_it_is_given(stored_heat, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "empty"))
    assert cli.main(["list"]) == 0
    heat = [line for line in capsys.readouterr().out.splitlines() if "chapter 01-heat-cfl" in line]
    assert heat and heat[0].endswith("stored none")
    assert cli.main(["list", "--results", str(stored_heat)]) == 0
    heat = [line for line in capsys.readouterr().out.splitlines() if "chapter 01-heat-cfl" in line]
    assert heat and heat[0].endswith("stored book")


def test_a_mistyped_experiment_name_gets_did_you_mean(tmp_path, capsys):
    assert cli.main(["run", "heat-cfll", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: no experiment matches 'heat-cfll'; did you mean 'heat-cfl'?\n"
    with pytest.raises(KeyError, match="unknown experiment 'perturbed-sdg'; did you mean 'perturbed-sgd'"):
        experiments.get("perturbed-sdg")
    assert cli.main(["run", "zzz", "--results", str(tmp_path)]) == 2   # nothing close: the known names
    assert "no experiment matches 'zzz'; known: app-b-controls" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("argv", "hint"), [
    (["lsit"], "invalid choice: 'lsit' (choose from 'list', 'run', 'show'); did you mean 'list'?"),
    (["show", "heat-cfl", "--scale", "boook"], "did you mean 'book'?"),
    (["run", "heat-cfl", "--sclae", "ci"], "unrecognized arguments: --sclae ci; did you mean '--scale'?"),
    (["run", "heat-cfl", "--no-progres"], "did you mean '--no-progress'?"),
    (["show", "heat-cfl", "--result=/tmp"], "unrecognized arguments: --result=/tmp; did you mean '--results'?"),
], ids=["command", "scale", "flag", "flag-without-value", "flag-with-value"])
def test_a_mistyped_command_choice_or_flag_gets_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert hint in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "heat-cfl", "--scal", "ci"], ["show", "heat-cfl", "--res", "/tmp"],
                                  ["run", "heat-cfl", "--work", "2"], ["list", "--result", "/tmp"]])
def test_abbreviated_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert f"unrecognized arguments: {argv[-2]}" in capsys.readouterr().err
