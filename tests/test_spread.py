"""Spreads over k and over seeds: standard deviations, churn, ANOVA and the verdict rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pdeeos import spread

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 10, 1000)


def _predictions(n_seeds: int, n_ks: int, *, k_scrambles: bool) -> np.ndarray:
    """Copies that get 70 % right; their errors are random per copy (k scrambles) or per seed."""
    shape = (n_seeds, n_ks if k_scrambles else 1, LABELS.size)
    wrong = RNG.random(shape) > 0.7
    pred = np.where(wrong, (LABELS + RNG.integers(1, 10, shape)) % 10, LABELS)
    return np.broadcast_to(pred, (n_seeds, n_ks, LABELS.size)).copy()


def test_std_uses_the_same_ddof_for_both_spreads() -> None:
    acc = np.array([[90.0, 94.0], [92.0, 92.0], [91.0, 93.0]])   # ks × seeds
    np.testing.assert_allclose(spread.std_over_k(acc), [1.0, 1.0])
    np.testing.assert_allclose(spread.std_over_seeds(acc), [np.sqrt(8), 0.0, np.sqrt(2)])
    np.testing.assert_allclose(spread.std_over_k(acc, ddof=0), acc.std(axis=0))


def test_churn_counts_disagreeing_test_images() -> None:
    pred = np.array([[[0, 1, 2, 3], [0, 1, 2, 0]], [[1, 1, 2, 3], [1, 1, 2, 3]]])   # 2 seeds × 2 ks × 4
    over_k, over_seeds = spread.churn_per_image(pred)
    np.testing.assert_allclose(over_k, [0, 0, 0, 0.5])          # seed 0's copies differ on image 3
    np.testing.assert_allclose(over_seeds, [1, 0, 0, 0.5])      # k = first: image 0; k = second: 0, 3
    c = spread.churn(pred)
    assert c["churn_over_k"] == pytest.approx(12.5) and c["churn_over_seeds"] == pytest.approx(37.5)
    np.testing.assert_allclose(spread.churn_over_k_per_seed(pred), [25.0, 0.0])   # their mean is churn_over_k


def _summary(pred: np.ndarray) -> dict:
    return spread.summarize(pred, LABELS)


def test_scrambling_copies_are_exchangeable_and_identical_copies_are_not() -> None:
    scrambled = _summary(_predictions(6, 6, k_scrambles=True))
    lo, hi = scrambled["churn_ratio_seed_ci"]
    assert lo < 1 < hi and lo > 0.8
    assert scrambled["exchangeability_p"] > 0.05 and abs(scrambled["seed_imprint"]) < 0.05
    frozen = _summary(_predictions(6, 6, k_scrambles=False))
    assert frozen["churn_over_k"] == 0 and frozen["mean_std_over_k"] == 0 and frozen["pooled_std_over_k"] == 0
    assert frozen["pooled_std_over_k_ci"] is None                  # one distinct value: no interval
    assert frozen["anova_p_seed"] is None and frozen["anova_f_seed"] is None   # zero residual: undefined
    assert frozen["exchangeability_p"] == pytest.approx(1 / (1 + spread.PERMUTATIONS))
    assert frozen["seed_imprint"] == pytest.approx(1.0)
    assert frozen["churn_ratio_seed_ci"] is None                   # every leave-one-out ratio is 0


def test_accuracy_comes_from_the_predictions_as_ks_by_seeds() -> None:
    pred = _predictions(3, 4, k_scrambles=True)
    acc = spread.accuracy(pred, LABELS)
    assert acc.shape == (4, 3)
    assert acc[2, 1] == pytest.approx(100 * (pred[1, 2] == LABELS).mean())
    with pytest.raises(ValueError, match="labels one per image"):
        spread.accuracy(pred, LABELS[:10])


def test_jackknife_matches_a_hand_computation_over_seeds() -> None:
    pred = _predictions(4, 3, k_scrambles=True)
    pred[1, 1:] = pred[1, 0]                                       # seed 1's k-copies all alike
    d = spread.disagreement(pred)
    assert d.shape == (12, 12) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)

    def ratio(seeds: list[int]) -> float:
        p = pred[seeds]
        over_k, over_seeds = spread.churn_per_image(p)
        return over_k.mean() / over_seeds.mean()

    loo = np.array([ratio([s for s in range(4) if s != i]) for i in range(4)])
    se = np.sqrt(3 / 4 * ((loo - loo.mean()) ** 2).sum())
    t = stats.t.ppf(0.975, 3)
    found = spread.churn_ratio_jackknife(pred)
    np.testing.assert_allclose(found["churn_ratio_leave_one_out"], loo)
    np.testing.assert_allclose(found["churn_ratio_seed_ci"], [ratio([0, 1, 2, 3]) - t * se, ratio([0, 1, 2, 3]) + t * se])
    with pytest.raises(ValueError, match="at least 3 seeds"):
        spread.churn_ratio_jackknife(pred[:2])


def test_a_seed_imprint_is_found_by_the_permutation_test() -> None:
    """Copies that share half their errors with their seed: exchangeability is rejected."""
    base = _predictions(6, 1, k_scrambles=True)
    own = _predictions(6, 6, k_scrambles=True)
    half = RNG.random(LABELS.size) < 0.5
    pred = np.where(half, base, own)
    found = spread.exchangeability(pred)
    assert found["exchangeability_p"] < 0.01 and 0.2 < found["seed_imprint"] < 0.8
    lo, median, hi = found["exchangeability_null"]
    assert lo < median < hi and abs(median - 1) < 0.05


def test_chi2_intervals_are_the_textbook_ones() -> None:
    acc = RNG.normal(70, 1, (6, 3))
    found = spread.std_chi2_intervals(acc)
    s2, df = acc.var(axis=0, ddof=1).mean(), 3 * 5
    assert found["pooled_std_over_k"] == pytest.approx(np.sqrt(s2))
    assert found["pooled_std_over_k_ci"] == pytest.approx([np.sqrt(df * s2 / stats.chi2.ppf(0.975, df)),
                                                           np.sqrt(df * s2 / stats.chi2.ppf(0.025, df))])


def test_anova_matches_the_textbook_two_way_table() -> None:
    acc = RNG.normal(70, 1, (6, 3))
    grand, rows, cols = acc.mean(), acc.mean(axis=1, keepdims=True), acc.mean(axis=0, keepdims=True)
    ms_seed = 6 * ((cols - grand) ** 2).sum() / 2
    ms_res = ((acc - rows - cols + grand) ** 2).sum() / (5 * 2)
    result = spread.anova(acc)
    assert result["anova_f_seed"] == pytest.approx(ms_seed / ms_res)
    assert result["var_residual"] == pytest.approx(ms_res)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="final_acc must be ks × seeds"):
        spread.std_over_k(np.ones(5))
    with pytest.raises(ValueError, match="predictions must be seeds × ks × images"):
        spread.churn(np.ones((1, 3, 10)))
    with pytest.raises(ValueError, match="predictions must be seeds × ks × images"):
        spread.churn_over_k_per_seed(np.ones((3, 10)))


def test_std_intervals_contain_their_estimates() -> None:
    acc = RNG.normal(70, 1, (6, 6))
    acc[:, 2] += 3.0                                              # one seed far from the others
    k_ci, seeds_ci = spread.std_intervals(acc)
    assert k_ci[0] <= spread.std_over_k(acc).mean() <= k_ci[1]
    assert seeds_ci[0] <= spread.std_over_seeds(acc).mean() <= seeds_ci[1]
    assert seeds_ci[1] - seeds_ci[0] > 0.1                       # resampled over seeds, not over nothing


def test_a_residual_at_rounding_level_is_zero_on_every_cpu() -> None:
    """Accuracies that are a k effect plus a seed effect leave a residual of rounding only (its digits
    depend on the CPU's summation): it is reported as exactly 0, with F and p undefined."""
    acc = 60.9 + np.array([0.0, 0.3, -0.1])[:, None] + np.array([1.1, -0.7, 0.4, 2.3])[None, :]
    result = spread.anova(acc)
    assert result["var_residual"] == 0.0 and result["anova_p_seed"] is None
    assert result["seed_share"] == 1.0


def test_an_effect_at_rounding_level_is_zero_too() -> None:
    """Equal accuracies for every k: the k mean square is rounding, and σ²_k is exactly 0."""
    acc = np.repeat(np.array([[61.2, 59.8, 60.4, 62.0]]), 3, axis=0)
    result = spread.anova(acc)
    assert result["var_k"] == 0.0 and result["var_residual"] == 0.0 and result["var_seed"] > 0


def test_summarize_takes_the_axes_by_name() -> None:
    """A grid stored ks × seeds × images gives the same summary when its axes are named; a wrong name or a
    shape the names do not fit is refused before any statistic is computed."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    pred = np.where(rng.random((3, 4, 200)) < 0.7, labels, rng.integers(0, 10, (3, 4, 200)))
    by_name = spread.summarize(pred.transpose(1, 0, 2), labels, axes=("k", "seed", "image"))
    assert by_name == spread.summarize(pred, labels)
    with pytest.raises(ValueError, match="axes must name"):
        spread.summarize(pred, labels, axes=("seeds", "k", "image"))
    with pytest.raises(ValueError, match="three axes"):
        spread.summarize(pred[0], labels, axes=("k", "seed", "image"))
