"""Spreads over k and over seeds: standard deviations, churn, ANOVA and the verdict rule."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_scrambling_copies_reproduce_and_identical_copies_do_not() -> None:
    acc = RNG.normal(70, 1, (6, 6))
    scrambled = spread.summarize(acc, _predictions(6, 6, k_scrambles=True))
    lo, hi = scrambled["churn_ratio_ci"]
    assert lo < 1 < hi and scrambled["churn_over_k_ci"][0] < scrambled["churn_over_k"] < scrambled["churn_over_k_ci"][1]
    assert spread.verdict(scrambled) == "reproduced"
    same_acc = np.repeat(acc[:1], 6, axis=0)                      # every k of a seed: the same accuracy
    frozen = spread.summarize(same_acc, _predictions(6, 6, k_scrambles=False))
    assert frozen["churn_over_k"] == 0 and frozen["mean_std_over_k"] < 1e-12
    assert frozen["anova_p_seed"] < 1e-6 and frozen["seed_share"] == pytest.approx(1.0)
    assert spread.verdict(frozen) == "not reproduced"


def test_anova_matches_the_textbook_two_way_table() -> None:
    acc = RNG.normal(70, 1, (6, 3))
    grand, rows, cols = acc.mean(), acc.mean(axis=1, keepdims=True), acc.mean(axis=0, keepdims=True)
    ms_seed = 6 * ((cols - grand) ** 2).sum() / 2
    ms_res = ((acc - rows - cols + grand) ** 2).sum() / (5 * 2)
    result = spread.anova(acc)
    assert result["anova_f_seed"] == pytest.approx(ms_seed / ms_res)
    assert result["var_residual"] == pytest.approx(ms_res)


def test_verdict_rule_and_inconclusive() -> None:
    def verdict(lo: float, hi: float, p: float = 0.5) -> str:
        return spread.verdict({"churn_ratio_ci": [lo, hi], "anova_p_seed": p})
    assert verdict(0.85, 1.05) == "reproduced"
    assert verdict(0.85, 1.05, p=0.01) == "partly"
    assert verdict(0.3, 0.6) == "partly"
    assert verdict(0.01, 0.05) == "not reproduced"
    assert verdict(0.6, 0.9) == verdict(0.05, 0.2) == "inconclusive"


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
