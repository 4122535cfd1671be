"""own-network (chapter 9): twins of a reader's own networks in a plain DataLoader loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pdeeos import checkpoints, lyapunov, spread
from pdeeos.book import experiments
from pdeeos.book.experiments import RunContext, get, run_experiment
from pdeeos.book.experiments import own_network as on

pytestmark = pytest.mark.usefixtures("one_thread")

CI = on.CONFIGS["ci"]


def _task(model: str = "mlp-relu", optimizer: str = "sgd", seed: int = 0, checkpoint: Path | None = None,
          **changes) -> on.Task:
    return on.Task(model, optimizer, seed, dict(CI, **changes), checkpoint)


def _equal(a: dict, b: dict) -> bool:
    """Every array of two task outputs bit-identical (float64 compared byte by byte)."""
    return all(np.array_equal(np.ascontiguousarray(a[k]).view(np.uint8), np.ascontiguousarray(b[k]).view(np.uint8))
               for k in ("rel_l1", "loss", "predictions", "sharpness", "steps"))


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, run_experiment("own-network", "ci", root=root, show_progress=False, workers=1)


def test_the_ci_run_stores_every_network_and_optimizer(ci_run):
    root, run = ci_run
    s, a = run.summary, run.arrays
    assert s["runs"] == [f"{m}_{o}" for m in CI["models"] for o in CI["optimizers"]]
    steps = CI["epochs"] * -(-CI["train_images"] // CI["batch_size"])
    assert s["steps"] == steps and a["steps"].tolist() == list(range(1, steps + 1))   # a record every step
    for key in s["runs"]:
        r = s[key]
        assert set(r) >= {"k3", "k5", "churn_ratio", "churn_ratio_seed_ci", "churn_over_k", "churn_over_seeds"}
        assert r["k3"]["records"] == len(CI["seeds"]) and all(f in lyapunov.FATES for f in r["k3"]["fates"])
        for seed in CI["seeds"]:
            d = a[f"{key}_seed{seed}_rel_l1"]
            assert d.shape == (steps, len(CI["ks"])) and not d[:, 0].any()     # the reference's own column
            assert a[f"{key}_seed{seed}_predictions"].shape == (len(CI["ks"]), CI["test_images"])
        assert r["edge"] == (pytest.approx(2 * (1 + CI["momentum"])) if "_sgd" in key else None)
    assert experiments.load_run("own-network", "ci", root=root).summary == s


def test_the_summary_is_what_the_public_tools_give(ci_run):
    _, run = ci_run
    a, steps = run.arrays, run.arrays["steps"]
    key = run.summary["runs"][0]
    rows = np.stack([a[f"{key}_seed{s}_rel_l1"][:, 1] for s in CI["seeds"]])
    onsets = lyapunov.onset_statistics(rows, dtype="float32", steps=steps)
    mine = run.summary[key]
    assert mine["k3"]["bursts"] == onsets.bursts
    assert mine["k3"]["fates"] == [lyapunov.fate(r, dtype="float32", steps=steps) for r in rows]
    predictions = np.stack([a[f"{key}_seed{s}_predictions"] for s in CI["seeds"]])
    full = spread.summarize(predictions, a["test_labels"])
    assert mine["churn_over_seeds"] == pytest.approx(full["churn_over_seeds"])
    assert mine["churn_over_k"] == pytest.approx(full["churn_over_k"])


def test_a_k_of_2_is_k_1_bit_for_bit_and_3_is_not():
    out = on.train_task(_task(ks=[1, 2, 3]), lambda: None)
    assert not out["rel_l1"][:, 1].any()                                   # distance exactly 0 at every step
    assert np.array_equal(out["loss"][:, 0], out["loss"][:, 1])
    assert np.array_equal(out["predictions"][0], out["predictions"][1])
    assert out["rel_l1"][:, 2].max() > 0


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("model", ["mlp-relu", "cnn-bn"])
def test_a_resumed_task_is_bit_identical_to_an_uninterrupted_one(tmp_path, model):
    whole = on.train_task(_task(model, "adamw"), lambda: None)
    checkpoint = tmp_path / "task.pt"

    def stop() -> None:
        raise _Interrupted

    with pytest.raises(_Interrupted):           # stops after its first epoch, its checkpoint written
        on.train_task(_task(model, "adamw", checkpoint=checkpoint), stop)
    assert checkpoints.load_checkpoint(checkpoint)["epochs"] == 1
    resumed = on.train_task(_task(model, "adamw", checkpoint=checkpoint), lambda: None)
    assert _equal(resumed, whole)
    assert not _equal(on.train_task(_task(model, "adamw", seed=1), lambda: None), whole)  # the check can fail


@pytest.mark.parametrize("change, words", [
    ({"seeds": [0, 1]}, "seeds must be a list of at least 3"),
    ({"ks": [3, 1, 5]}, "ks must be a list of at least 3 distinct integers >= 1 starting with 1"),
    ({"ks": [1, 3]}, "ks must be a list of at least 3"),
    ({"models": ["resnet56"]}, "models must be a non-empty list"),
    ({"optimizers": ["sgd", "sgd"]}, "optimizers must be a non-empty list of distinct names"),
    ({"sgd_lr": 0}, "sgd_lr must be a number > 0"),
    ({"sgd_low_lr": -1.0}, "sgd_low_lr must be a number > 0"),
    ({"momentum": 1.0}, "momentum must be a number in [0, 1)"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"dataset": "cifar10"}, "dataset must be fashion_mnist or mnist"),
    ({"sharpness_images": 10_000}, "sharpness_images (10000) must be at most train_images"),
    ({"train_images": 70_000}, "train_images is 70000, but fashion_mnist train has 60000"),
])
def test_a_bad_config_is_refused_before_any_training(tmp_path, monkeypatch, change, words):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(on, "train_task", no_training)
    ctx = RunContext(experiment="own-network", scale="ci", config=dict(CI, **change),
                     device=__import__("torch").device("cpu"), run_dir=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match=r"own-network: " + __import__("re").escape(words)):
        on.run(ctx)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="model must be one of"):
        on.build_model("mlp-swish")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        on.make_optimizer("lion", CI)


def test_the_book_config_is_the_chapter_protocol():
    book = get("own-network").config("book")
    assert on.check_config(book) is book
    assert book["models"] == list(on.MODELS) and book["optimizers"] == list(on.OPTIMIZERS)
    assert len(book["seeds"]) >= 5 and book["ks"][:2] == [1, 3]


def test_the_stored_book_run_is_recomputable_from_its_arrays():
    try:
        run = experiments.load_run("own-network", "book")
    except FileNotFoundError:
        pytest.skip("own-network has no stored book run")
    assert on.resummarize(run) == run.summary       # every twin summary, fates included, from the stored records


# ----------------------------------------------------------------------------- the ledger's rules


class _Run:
    def __init__(self, summary: dict) -> None:
        self.summary = summary


def _summary(per: list[dict]) -> dict:
    keys = [f"net{i}_sgd" for i in range(len(per))]
    rows = {key: {"model": f"net{i}", "optimizer": "sgd", "lr": 0.2, "churn_ratio_image_ci": None,
                  "anova_p_seed": None} | r for i, (key, r) in enumerate(zip(keys, per))}
    return {"own-network": _Run({"runs": keys, "steps": 100, **rows})}


def _k3(bursts: int, records: int = 5) -> dict:
    return {"k3": {"bursts": bursts, "records": records, "onset_median": 20.0 if 2 * bursts > records else None,
                   "rate_median": 0.1 if bursts else None}}


@pytest.mark.parametrize("bursts, verdict", [([5, 3], "reproduced"), ([5, 2], "partly"), ([0, 2], "not reproduced")])
def test_the_amplification_rule(bursts, verdict):
    from pdeeos.book import ledger
    ours, found = ledger._own_amplified(_summary([_k3(b) for b in bursts]))
    assert found == verdict and f"amplified: {sum(2 * b >= 5 for b in bursts)} of {len(bursts)}" in ours


def _churn(ratio: float | None, ci: list[float] | None, over_k: float = 1.0) -> dict:
    return {"churn_ratio": ratio, "churn_ratio_seed_ci": ci, "churn_over_k": over_k}


@pytest.mark.parametrize("rows, verdict", [
    ([_churn(1.0, [0.85, 1.1]), _churn(0.9, [0.81, 1.0])], "reproduced"),
    ([_churn(1.0, [0.85, 1.1]), _churn(0.0, None, over_k=0.0)], "partly"),
    ([_churn(0.3, [0.2, 0.4]), _churn(0.05, [0.0, 0.09])], "partly"),
    ([_churn(0.0, None, over_k=0.0), _churn(0.05, [0.0, 0.09])], "not reproduced"),
    ([_churn(0.5, [0.05, 0.9]), _churn(0.0, None, over_k=0.0)], "inconclusive"),
])
def test_the_churn_rule(rows, verdict):
    from pdeeos.book import ledger
    assert ledger._own_churn(_summary(rows))[1] == verdict
