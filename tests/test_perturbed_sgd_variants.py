"""The App. C variants of the perturbed-SGD experiment: each changes only its own setting of the
protocol (plus, where a scale says so, the size of the run), and every stored run holds consistent
arrays (that it matches its experiment's config is checked for every experiment in test_results)."""

import numpy as np
import pytest

from pdeeos.book import experiments, results
from pdeeos.book.experiments import get, perturbed_sgd
from pdeeos import spread
from pdeeos.book.experiments.perturbed_sgd import CONFIGS, VARIANTS

NAMES = ["perturbed-sgd", *(f"perturbed-sgd-{key}" for key in VARIANTS)]
SIZE_KEYS = {"train_limit", "test_limit", "ks", "seeds", "epochs", "milestones", "last",
             "fluctuation_batches", "width"}
"""What a per-scale change may touch: how much is run and how wide the network is, never how it is
trained (optimizer, lr, model family, dtype, data)."""

BOOK_ACCURACY = {"perturbed-sgd-fashion-mnist": 88.0, "perturbed-sgd-vgg16": 50.0}
"""The least mean test accuracy (%) of a book run; 60 % for the other runs on the CIFAR-10 subset."""


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variant_changes_only_its_setting_and_size(key):
    _, overrides, per_scale = VARIANTS[key]
    experiment = get(f"perturbed-sgd-{key}")
    for scale, base in CONFIGS.items():
        cfg = experiment.configs[scale]
        changed = {k for k in cfg if cfg[k] != base.get(k)}
        reduced = set(per_scale.get(scale, {}))
        assert reduced <= SIZE_KEYS
        assert changed <= set(overrides) | reduced, (scale, changed)
        assert all(cfg[k] == v for k, v in overrides.items())
        assert cfg["ks"][0] == 1 and 3 in cfg["ks"]  # RelL1 is to k = 1; Fig. 3 shows k = 3
        if "epochs" in cfg:   # a schedule in steps (gpu, paper) gets its epochs from the data set's size
            assert all(m < cfg["epochs"] for m in cfg["milestones"]) and cfg["last"] <= cfg["epochs"]


@pytest.mark.parametrize("name", NAMES)
def test_stored_runs_match_their_experiment(name):
    scales = results.stored_scales(name)
    if not scales:
        pytest.skip(f"no stored run of {name}")
    for scale in scales:
        run = experiments.load_run(name, scale)
        cfg = get(name).configs[scale]
        a = run.arrays
        n_seeds, n_epochs, n_ks = len(cfg["seeds"]), cfg["epochs"], len(cfg["ks"])
        assert a["test_acc"].shape == a["rel_l1"].shape == (n_seeds, n_epochs, n_ks)
        assert a["final_acc"].shape == (n_ks, n_seeds)
        assert np.all(a["rel_l1"][:, :, 0] == 0)  # the k = 1 copy against itself
        assert a["predictions"].shape == (n_seeds, n_ks, len(a["test_labels"]))
        np.testing.assert_allclose(spread.accuracy(a["predictions"], a["test_labels"]),
                                   a["test_acc"][:, -1, :].T, atol=1e-9)   # accuracy and churn: one epoch
        recomputed = spread.summarize(a["predictions"], a["test_labels"])
        for key, value in recomputed.items():
            if value is None:
                assert run.summary[key] is None, key
            else:
                np.testing.assert_allclose(run.summary[key], value, err_msg=key)
        assert run.summary["steps_at_large_lr"] >= (2_500 if scale == "book" else 1)
        if scale == "book":   # networks that really learn, as the book's protocol promises
            assert run.summary["mean_acc"] >= BOOK_ACCURACY.get(name, 60.0), run.summary["mean_acc"]
        assert run.provenance["scale"] == scale and run.provenance["dtype"]


def _rel_l1(final: float, growth_per_epoch: float, epochs: int = 50) -> np.ndarray:
    """seeds × epochs × ks: every k > 1 copy at ``final`` in the last epoch, growing geometrically."""
    curve = final * growth_per_epoch ** (np.arange(epochs) - (epochs - 1))
    out = np.zeros((3, epochs, 4))
    out[:, :, 1:] = curve[None, :, None]
    return out


@pytest.mark.parametrize("final, growth, ratio_ci, expected", [
    (0.1, 1.1, [0.11, 0.13], "inconclusive"),      # still approaching: a small ratio proves nothing yet
    (1.2, 1.0, [0.11, 0.13], "partly"),            # apart and settled: the spread verdict stands
    (1e-6, 1.0, [0.0, 0.05], "not reproduced"),    # at rounding level and flat: the effect is absent
    (0.1, 1.1, [0.85, 0.95], "reproduced"),        # a reproduced spread is never downgraded
    (1.2, 1.0, None, "inconclusive"),              # no seed-level interval: nothing to decide on
])
def test_a_run_still_approaching_the_seeds_distance_is_inconclusive(final, growth, ratio_ci, expected):
    summary = {"churn_ratio_seed_ci": ratio_ci, "churn_over_k": 1.0, "rel_l1_between_seeds": 1.3,
               "steps_at_large_lr": 40 * 50, "steps_per_epoch": 40, "paper_protocol": {"steps_at_large_lr": 15640}}
    assert perturbed_sgd.verdict(summary, _rel_l1(final, growth)) == expected


def test_copies_approaching_too_slowly_for_the_papers_budget_keep_their_verdict():
    """Growing ×1.001 per epoch (40 steps) from 0.1, the copies need ~77,000 more steps to be apart."""
    summary = {"churn_ratio_seed_ci": [0.11, 0.13], "churn_over_k": 1.0, "rel_l1_between_seeds": 1.3,
               "steps_at_large_lr": 40 * 50, "steps_per_epoch": 40, "paper_protocol": {"steps_at_large_lr": 15640}}
    found = perturbed_sgd.approach(summary, _rel_l1(0.1, 1.001))
    assert found["steps_to_apart"] == pytest.approx(40 * np.log(6.5) / np.log(1.001), rel=1e-6)
    assert perturbed_sgd.verdict(summary, _rel_l1(0.1, 1.001)) == "partly"


def test_copies_distance_is_the_median_over_seeds_and_copies_in_the_large_rate_phase():
    summary = {"steps_per_epoch": 40, "steps_at_large_lr": 40 * 3}
    rel_l1 = np.arange(3 * 5 * 4, dtype=float).reshape(3, 5, 4)   # seeds × epochs × ks
    rel_l1[:, :, 0] = -1.0                                        # the k = 1 column is not a copy
    expected = [np.median(rel_l1[:, epoch, 1:]) for epoch in range(3)]
    assert perturbed_sgd.copies_distance(summary, rel_l1).tolist() == expected


def test_drift_exponent_recovers_a_power_law_per_seed_and_copy():
    summary = {"steps_per_epoch": 40, "steps_at_large_lr": 40 * 50}
    steps = 40 * np.arange(1, 53)                        # two epochs past the large rate, ignored
    exponents = np.array([[0.5, 0.8, 1.0], [0.7, 0.7, 0.2]])
    rel_l1 = np.zeros((2, 52, 4))
    rel_l1[:, :, 1:] = 1e-3 * steps[None, :, None] ** exponents[:, None, :]
    rel_l1[:, :8, 1:] = 5.0                              # before step 400: not fitted
    assert np.allclose(perturbed_sgd.drift_exponent(summary, rel_l1), exponents)
    assert np.allclose(perturbed_sgd.drift_exponent(summary, rel_l1, from_step=1_600), exponents)
    geometric = _rel_l1(0.5, 1.05)          # exponential drift: the log-log slope grows with the window
    early, late = (perturbed_sgd.drift_exponent(summary, geometric, from_step=t) for t in (400, 1_600))
    assert np.all(late > 1.5 * early)
    with pytest.raises(ValueError, match="from_step"):
        perturbed_sgd.drift_exponent(summary, rel_l1, from_step=2_000)
    rel_l1[1, 30, 2] = 0.0                               # a copy identical to k = 1 has no exponent
    with pytest.raises(ValueError, match="positive RelL1"):
        perturbed_sgd.drift_exponent(summary, rel_l1)


def test_at_first_rate_keeps_the_training_and_cuts_the_length():
    cfg = get("perturbed-sgd-float64").config("book")
    short = perturbed_sgd.at_first_rate(cfg, (1, 3), dtype="float32")
    assert (short["ks"], short["epochs"], short["milestones"], short["last"]) == ([1, 3], 1, [], 1)
    assert short["dtype"] == "float32" and cfg["dtype"] == "float64"   # the change applies to the copy only
    kept = {key for key in cfg if cfg[key] == short[key]}
    assert kept == set(cfg) - {"ks", "epochs", "milestones", "last", "dtype"}


def test_nudged_distance_starts_at_the_nudge_and_is_kept_without_steps():
    cfg = dict(get("perturbed-sgd-float64").config("ci"), train_limit=64, test_limit=64)
    start, after = perturbed_sgd.nudged_distance(dict(cfg, lr=0.0), 30)
    assert 2.0 ** -31 < start < 2.0 ** -29      # each entry's relative change is 2^-30
    assert after == start                        # lr 0: the weights, and so their distance, stay
    moved = perturbed_sgd.nudged_distance(cfg, 30)
    assert moved[0] == start and moved[1] != start


@pytest.mark.parametrize("exponent", [0, 65, 2.5, True])
def test_nudged_distance_rejects_a_bad_exponent(exponent):
    with pytest.raises(ValueError, match="exponent"):
        perturbed_sgd.nudged_distance(get("perturbed-sgd-float64").config("ci"), exponent)


@pytest.mark.parametrize("seed_ci, image_ci, p, new, old", [
    ([0.85, 0.97], [0.90, 0.94], 0.049, "reproduced", "partly"),       # the old veto flips on p either side of 0.05
    ([0.85, 0.97], [0.90, 0.94], 0.054, "reproduced", "reproduced"),
    ([0.01, 0.23], [0.11, 0.13], 1e-9, "inconclusive", "partly"),     # the interval over images hides the seeds
    ([0.15, 0.44], [0.27, 0.32], 0.009, "partly", "partly"),
    ([0.01, 0.05], [0.01, 0.02], None, "not reproduced", "not reproduced"),
])
def test_the_verdict_reads_the_seed_level_interval_and_no_p_value(seed_ci, image_ci, p, new, old):
    summary = {"churn_ratio_seed_ci": seed_ci, "churn_ratio_image_ci": image_ci, "anova_p_seed": p,
               "churn_over_k": 1.0}
    assert perturbed_sgd.ratio_verdict(summary) == new and perturbed_sgd.old_ratio_verdict(summary) == old
    for q in (0.001, 0.049, 0.051, 0.9, None):
        assert perturbed_sgd.ratio_verdict(summary | {"anova_p_seed": q}) == new


def test_no_k_copy_differing_anywhere_is_not_reproduced_though_its_interval_is_undefined():
    summary = {"churn_ratio_seed_ci": None, "churn_over_k": 0.0}
    assert perturbed_sgd.ratio_verdict(summary) == "not reproduced"


def test_resummarize_recomputes_from_the_predictions_and_records_the_commit(tmp_path):
    import shutil

    src = results.run_dir("perturbed-sgd-float64", "book")
    shutil.copytree(src, tmp_path / "perturbed-sgd-float64" / "book")
    run = experiments.load_run("perturbed-sgd-float64", "book", root=tmp_path)
    damaged = dict(run.summary, churn_ratio=0.5)
    results.replace_summary(run, damaged)
    assert experiments.load_run("perturbed-sgd-float64", "book", root=tmp_path).summary["churn_ratio"] == 0.5
    results.replace_summary(run, perturbed_sgd.resummarize(run))
    again = experiments.load_run("perturbed-sgd-float64", "book", root=tmp_path)
    assert again.summary["churn_ratio"] == 0.0 and again.summary["churn_ratio_seed_ci"] is None
    assert again.provenance["summary_recomputed"]["git_commit"] == results.git_commit()
    assert again.provenance["git_commit"] == run.provenance["git_commit"]      # the run's own commit stays
    np.testing.assert_array_equal(again.arrays["predictions"], run.arrays["predictions"])


def test_churn_along_follows_the_snapshots_and_matches_the_final_summary():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 300)
    snapshots = rng.integers(0, 10, (3, 4, 3, 300))          # snapshots × seeds × ks × images
    snapshots[0, :, 1:] = snapshots[0, :, :1]                 # at first every k-copy equals its k = 1 copy
    along = perturbed_sgd.churn_along({"predictions_along": snapshots, "prediction_steps": np.array([10, 20, 30])})
    assert along["steps"].tolist() == [10, 20, 30] and along["churn_over_k"][0] == along["churn_ratio"][0] == 0
    last = spread.summarize(snapshots[-1], labels)
    assert along["churn_ratio"][-1] == pytest.approx(last["churn_ratio"])
    np.testing.assert_allclose(along["churn_ratio_seed_ci"][-1], last["churn_ratio_seed_ci"])
    with pytest.raises(ValueError, match="predict_every"):
        perturbed_sgd.churn_along({"predictions": snapshots[0]})
