"""Stored runs, provenance, the experiment registry and the command line."""

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
import time

import numpy as np
import pytest
import torch

from pdeeos import checkpoints
from pdeeos.book import cli, config, experiments, results


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    return tmp_path


def test_scales_are_checked(monkeypatch):
    assert config.check_scale("book") == "book"
    with pytest.raises(ValueError, match="scale"):
        config.check_scale("huge")
    monkeypatch.setenv(config.SCALE_ENV, "ci")
    assert config.chapter_scale() == "ci"
    monkeypatch.setenv(config.SCALE_ENV, "nope")
    with pytest.raises(ValueError, match="nope"):
        config.chapter_scale()


def test_save_and_load_round_trip_with_provenance(root):
    prov = results.provenance(scale="ci", device="cpu", dtype="float64", wall_time_s=1.25)
    for key in ("git_commit", "device", "torch", "dtype", "scale", "wall_time_s", "date"):
        assert prov[key] not in ("", None)
    results.save_run(results.run_dir("demo", "ci"), experiment="demo", config={"n": 3},
                     arrays={"x": np.arange(3.0)}, summary={"mean": np.float64(1.0)}, provenance=prov)
    run = experiments.load_run("demo")
    assert run.scale == "ci" and run.config == {"n": 3} and run.summary == {"mean": 1.0}
    np.testing.assert_array_equal(run.arrays["x"], np.arange(3.0))
    assert "demo at scale 'ci'" in run.describe()


def test_load_run_prefers_the_largest_scale_and_ignores_incomplete_runs(root):
    prov = results.provenance(scale="ci", device="cpu", dtype="float32", wall_time_s=0)
    for scale in ("ci", "book"):
        results.save_run(results.run_dir("demo", scale), experiment="demo", config={"s": scale},
                         arrays={}, summary={}, provenance=prov | {"scale": scale})
    (results.run_dir("demo", "paper") / "data.npz").parent.mkdir(parents=True)
    (results.run_dir("demo", "paper") / "data.npz").write_bytes(b"partial")  # no run.json: incomplete
    assert results.stored_scales("demo") == ["ci", "book"]
    assert experiments.load_run("demo").scale == "book"
    with pytest.raises(FileNotFoundError, match="stored at ci, book .*no experiment is called 'demo'"):
        experiments.load_run("demo", "paper")
    with pytest.raises(FileNotFoundError, match="no experiment is called 'other'") as missing:
        experiments.load_run("other")
    assert "pdeeos run" not in str(missing.value)   # no command that would fail


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_stored_files_get_the_users_umask(root, umask, mode):
    """Stored runs and checkpoints are created like any file of the user's (not mkstemp's 0600)."""
    before = os.umask(umask)
    try:
        prov = results.provenance(scale="ci", device="cpu", dtype="float64", wall_time_s=0)
        directory = results.save_run(results.run_dir("demo", "ci"), experiment="demo", config={},
                                     arrays={"x": np.zeros(1)}, summary={}, provenance=prov)
        checkpoints.save_checkpoint(directory / "checkpoints" / "state.pt", {"step": 1})
    finally:
        os.umask(before)
    for path in (directory / "run.json", directory / "data.npz", directory / "checkpoints" / "state.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_atomic_write_leaves_no_temporary_files(root):
    target = root / "a" / "file.bin"
    checkpoints.atomic_write_bytes(target, b"one")
    checkpoints.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_checkpoint_round_trip(root):
    path = root / "ckpt" / "state.pt"
    assert checkpoints.load_checkpoint(path) is None
    checkpoints.save_checkpoint(path, {"step": 7, "x": np.ones(2)})
    state = checkpoints.load_checkpoint(path)
    assert state["step"] == 7


def test_registry_finds_the_heat_experiment_and_rejects_unknown_names():
    assert "heat-cfl" in experiments.registry()
    with pytest.raises(KeyError, match="heat-cfl"):
        experiments.get("no-such-experiment")
    with pytest.raises(ValueError, match="no 'paper' scale"):
        experiments.get("heat-cfl").config("paper")


def test_cli_run_list_and_show(root, capsys):
    assert cli.main(["run", "heat-cfl", "--scale", "ci", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "heat-cfl at scale 'ci'" in out
    record = json.loads((root / "heat-cfl" / "ci" / "run.json").read_text())
    assert record["provenance"]["scale"] == "ci"
    assert record["summary"]["max_abs_critical_r_error"] <= record["summary"]["r_resolution"]
    assert cli.main(["list"]) == 0
    assert "stored ci" in capsys.readouterr().out
    assert cli.main(["show", "heat-cfl"]) == 0
    assert cli.main(["run", "missing-experiment"]) == 2
    assert "no experiment matches 'missing-experiment'" in capsys.readouterr().err
    assert cli.main(["run", "perturbed-sgd*", "--scale", "paper"]) == 2   # one of them has no paper scale
    assert "has no 'paper' scale" in capsys.readouterr().err
    assert not (root / "perturbed-sgd").exists()   # refused before anything ran


def test_wall_time_sums_interrupted_attempts(tmp_path, monkeypatch):
    """A run killed after two steps and resumed records the time of both attempts."""
    def func(ctx):
        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        done = ctx.checkpoint_dir / "done.txt"
        start = int(done.read_text()) if done.exists() else 0
        for step in ctx.progress(range(start, 4)):
            time.sleep(0.05)
            done.write_text(str(step + 1))
            if step == 1 and start == 0:
                raise KeyboardInterrupt  # the first attempt dies after two steps
        return experiments.RunOutput(arrays={"x": np.zeros(1)}, summary={})

    exp = experiments.Experiment(name="resumable", summary="", chapter="01-heat-cfl",
                                 configs={"ci": {}}, func=func)
    monkeypatch.setattr(experiments, "get", lambda name: exp)
    with pytest.raises(KeyboardInterrupt):
        experiments.run_experiment("resumable", "ci", root=tmp_path, show_progress=False)
    first = json.loads((results.run_dir("resumable", "ci", tmp_path) / "checkpoints" / "wall_time.json").read_text())
    assert first["wall_time_s"] >= 0.05  # the step that was cut off is not counted, like its work
    run = experiments.run_experiment("resumable", "ci", root=tmp_path, show_progress=False)
    assert run.provenance["wall_time_s"] >= first["wall_time_s"] + 0.1


@pytest.mark.parametrize("name", sorted(experiments.registry()))
def test_stored_runs_match_the_config_their_experiment_has_now(name):
    """A stored run made with another config than its experiment now has would be shown as this one."""
    exp = experiments.registry()[name]
    for scale in results.stored_scales(name):
        stored = experiments.load_run(name, scale).config
        assert stored == json.loads(json.dumps(exp.configs[scale])), (
            f"{name} ({scale}) was stored with another config: re-run it")


# ----------------------------------------------------------------------------- runs that fail early


@pytest.fixture
def never_runs(monkeypatch):
    """heat-cfl's config with a function that fails the test if it is ever called."""
    real = experiments.get("heat-cfl")

    def must_not_run(ctx):
        raise AssertionError("the experiment started although its set-up was bad")

    fake = experiments.Experiment(name=real.name, summary=real.summary, chapter=real.chapter,
                                  configs=real.configs, func=must_not_run)
    monkeypatch.setattr(experiments, "get", lambda name: fake)
    return fake


def test_an_unwritable_results_folder_fails_before_any_work(never_runs, capsys):
    with pytest.raises(ValueError, match="cannot write the results of heat-cfl to /proc/forbidden"):
        experiments.run_experiment("heat-cfl", "ci", device="cpu", root=Path("/proc/forbidden"))
    assert cli.main(["run", "heat-cfl", "--scale", "ci", "--results", "/proc/forbidden"]) == 2
    assert "cannot write the results of heat-cfl to /proc/forbidden" in capsys.readouterr().err


def test_an_unwritable_checkpoint_folder_fails_before_any_work(never_runs, tmp_path):
    blocked = results.run_dir("heat-cfl", "ci", tmp_path) / "checkpoints"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the checkpoint folder should be")
    with pytest.raises(ValueError, match="cannot write the checkpoints of heat-cfl"):
        experiments.run_experiment("heat-cfl", "ci", device="cpu", root=tmp_path)


@pytest.mark.parametrize(("device", "message"), [("nonsense", "is not a torch device"),
                                                  ("cuda:7", "asked for, but torch sees")])
def test_a_device_that_does_not_exist_fails_before_any_work(never_runs, tmp_path, device, message, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    with pytest.raises(ValueError, match=message):
        experiments.run_experiment("heat-cfl", "ci", device=device, root=tmp_path)
    assert cli.main(["run", "heat-cfl", "--scale", "ci", "--device", device, "--results", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def _stored_heat(root: Path) -> results.StoredRun:
    run = experiments.load_run("heat-cfl")
    target = results.run_dir("heat-cfl", run.scale, root)
    shutil.copytree(run.path, target)
    return experiments.load_run("heat-cfl", root=root)


@pytest.mark.parametrize("damaged", ["run.json", "data.npz"])
def test_a_truncated_stored_run_is_a_clear_error(tmp_path, damaged, capsys):
    run = _stored_heat(tmp_path)
    path = run.path / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"stored run {path} is damaged"):
        experiments.load_run("heat-cfl", root=tmp_path)
    assert cli.main(["show", "heat-cfl", "--results", str(tmp_path)]) == 2
    assert "is damaged" in capsys.readouterr().err


def test_a_stored_run_with_another_config_or_wrong_arrays_is_refused(tmp_path):
    run = _stored_heat(tmp_path)
    results.save_run(run.path, experiment=run.experiment, config=dict(run.config, steps=1),
                     arrays=run.arrays, summary=run.summary, provenance=run.provenance)
    with pytest.raises(ValueError, match="was made with another config .* \\(differs in steps\\)"):
        experiments.load_run("heat-cfl", root=tmp_path)
    cfg = experiments.get("perturbed-sgd").config("ci")
    arrays = {"test_acc": np.zeros((1, cfg["epochs"], len(cfg["ks"])))}
    results.save_run(results.run_dir("perturbed-sgd", "ci", tmp_path), experiment="perturbed-sgd",
                     config=cfg, arrays=arrays, summary={}, provenance=run.provenance)
    with pytest.raises(ValueError, match="array 'test_acc' has shape \\(1, 3, 3\\), its config gives \\(2, 3, 3\\)"):
        experiments.load_run("perturbed-sgd", root=tmp_path)


@pytest.mark.parametrize("device", ["meta", "cpu:1"])
def test_devices_that_are_not_cpu_or_cuda_are_refused(never_runs, tmp_path, device):
    with pytest.raises(ValueError, match="experiments run on cpu or cuda"):
        experiments.run_experiment("heat-cfl", "ci", device=device, root=tmp_path)


@pytest.mark.parametrize("change", [{"config": None}, {"config": [1, 2]}, {"provenance": {"scale": "book"}}])
def test_a_stored_run_with_malformed_records_is_a_clear_error(tmp_path, change, capsys):
    run = _stored_heat(tmp_path)
    record = json.loads((run.path / "run.json").read_text()) | change
    (run.path / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="is damaged"):
        experiments.load_run("heat-cfl", root=tmp_path)
    assert cli.main(["show", "heat-cfl", "--results", str(tmp_path)]) == 2
    assert "is damaged" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "problem"), [
    ({"date": 20240101}, "provenance date is 20240101, not an ISO date string"),
    ({"date": "last tuesday"}, "provenance date is 'last tuesday', not an ISO date string"),
    ({"git_commit": None}, "provenance git_commit is None, not a string"),
    ({"wall_time_s": "fast"}, "provenance wall_time_s is 'fast', not a number of seconds >= 0"),
    ({"wall_time_s": True}, "provenance wall_time_s is True, not a number of seconds >= 0"),
    ({"scale": "huge"}, "provenance scale is 'huge', not one of ci, book, gpu, paper"),
])
def test_a_provenance_field_of_the_wrong_type_is_one_line_naming_the_file(tmp_path, change, problem, capsys):
    run = _stored_heat(tmp_path)
    path = run.path / "run.json"
    record = json.loads(path.read_text())
    record["provenance"] |= change
    path.write_text(json.dumps(record))
    remake = f"re-make it with: python -m pdeeos run heat-cfl --scale {run.scale} --results {tmp_path}"
    with pytest.raises(ValueError) as err:
        experiments.load_run("heat-cfl", root=tmp_path)
    assert str(err.value) == f"stored run {path} is damaged ({problem}); {remake}"
    assert cli.main(["show", "heat-cfl", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {err.value}\n"


def _garbage(path: Path) -> None:
    path.write_text("garbage\n")


def _truncated(path: Path) -> None:
    if path.suffix == ".npz":
        np.savez(path, x=np.arange(1000.0))
    else:
        checkpoints.save_checkpoint(path, {"x": torch.arange(1000.0)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("name", "damage", "problem"), [
    ("seed0.pt", _garbage, "torch cannot read it: invalid literal for int()"),
    ("seed0.pt", _truncated, "torch cannot read it: PytorchStreamReader failed"),
    ("sub/dt0.1.npz", _truncated, "NumPy cannot read it"),
    ("wall_time.json", _garbage, "not readable as JSON"),
    ("wall_time.json", lambda p: p.write_text('{"wall_time_s": "fast"}'), "wall_time_s is 'fast', not a number"),
])
def test_a_damaged_checkpoint_is_one_line_naming_it_before_any_work(never_runs, tmp_path, name, damage,
                                                                     problem, capsys):
    path = results.run_dir("heat-cfl", "ci", tmp_path) / "checkpoints" / name
    path.parent.mkdir(parents=True)
    damage(path)
    assert cli.main(["run", "heat-cfl", "--scale", "ci", "--device", "cpu", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {path} is damaged ({problem}") and err.count("\n") == 1, err
    assert f"; delete it (rm {path}) and run again: " in err


def test_load_checkpoint_refuses_a_file_that_holds_no_dict(tmp_path):
    path = tmp_path / "state.pt"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged \\(it holds a list, not a dict\\)"):
        checkpoints.load_checkpoint(path)


def _damage_then_load(path: str, tick):
    """A task whose checkpoint is damaged while the run goes on (after the up-front check)."""
    _garbage(Path(path))
    return checkpoints.load_checkpoint(Path(path))


def test_a_damaged_checkpoint_met_in_a_worker_process_reaches_the_cli_as_one_line(never_runs, tmp_path,
                                                                                   monkeypatch, capsys):
    tasks = [str(tmp_path / f"task{i}.pt") for i in range(2)]
    fake = experiments.Experiment(
        name="heat-cfl", summary="", chapter="01-heat-cfl", configs=never_runs.configs,
        func=lambda ctx: ctx.map(_damage_then_load, tasks, units=1, desc="demo"))
    monkeypatch.setattr(experiments, "get", lambda name: fake)
    assert cli.main(["run", "heat-cfl", "--scale", "ci", "--device", "cpu", "--workers", "2",
                     "--no-progress", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checkpoint "), err
    assert any(err.startswith(f"error: checkpoint {t} is damaged (torch cannot read it") for t in tasks)


def _fails_for_odd(item, tick):
    if item % 2:
        raise ValueError(f"task {item} failed")
    return item


def test_a_failing_worker_task_fails_the_map(tmp_path):
    ctx = experiments.RunContext(experiment="demo", scale="ci", config={}, device=torch.device("cpu"),
                                 run_dir=tmp_path, show_progress=False, workers=2)
    with pytest.raises(ValueError, match="task 1 failed"):
        ctx.map(_fails_for_odd, [0, 1, 2, 4], units=1, desc="demo")


def _ticks(n, tick):
    for _ in range(n):
        tick()
    return n * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_map_counts_each_tasks_own_units_and_keeps_the_items_order(tmp_path, workers):
    ctx = experiments.RunContext(experiment="demo", scale="ci", config={}, device=torch.device("cpu"),
                                 run_dir=tmp_path, show_progress=False, workers=workers)
    assert ctx.map(_ticks, [1, 5, 2], units=[1, 5, 2], desc="demo") == [10, 50, 20]
    with pytest.raises(ValueError, match="units has 2 entries for 3 tasks"):
        ctx.map(_ticks, [1, 5, 2], units=[1, 5], desc="demo")


def test_git_commit_is_dirty_for_code_not_for_stored_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    monkeypatch.setattr(results, "_REPO_ROOT", tmp_path)
    (tmp_path / "results" / "run.json").write_text('{"summary": {}}')
    assert not results.git_commit().endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_commit().endswith("+dirty")
