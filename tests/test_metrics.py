"""RelL1 between twin runs; the largest safe value of a sweep."""

import numpy as np
import pytest
import torch

from pdeeos import metrics
from pdeeos.metrics import largest_safe, rel_l1


def test_rel_l1_of_equal_arrays_is_zero_and_of_opposite_is_two():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_l1(a, a) == 0.0
    assert rel_l1(a, -a) == 2.0


def test_rel_l1_matches_the_definition_and_accepts_tensors():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    expected = 2 / 50 * sum(abs(x - y) / (abs(x) + abs(y)) for x, y in zip(a, b))
    assert rel_l1(a, b) == pytest.approx(expected, rel=1e-12)
    assert rel_l1(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-12)


def test_rel_l1_counts_joint_zeros_as_zero_and_nonfinite_as_nan():
    assert rel_l1(np.zeros(3), np.zeros(3)) == 0.0
    assert np.isnan(rel_l1(np.array([1.0, np.inf]), np.array([1.0, 2.0])))


def test_rel_l1_rejects_mismatched_or_empty():
    with pytest.raises(ValueError, match="shape"):
        rel_l1(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="element"):
        rel_l1(np.zeros(0), np.zeros(0))


def test_largest_safe_is_the_largest_value_below_every_failure():
    lrs = np.array([0.05, 0.025, 0.0125, 0.00625])
    assert largest_safe(lrs, np.array([True, True, False, False])) == 0.0125
    assert largest_safe(lrs, np.array([True, False, True, False])) == 0.00625
    assert largest_safe(lrs, np.array([False] * 4)) == 0.05
    assert np.isnan(largest_safe(lrs, np.array([True] * 4)))
    with pytest.raises(ValueError, match="one shape"):
        largest_safe(lrs, np.array([True, False]))


def test_blows_up_is_one_rule_for_every_loss_history():
    loss = np.array([[1.0, 0.5, 0.2], [1.0, 3.0, 1.2], [1.0, 5.0, 10.5], [1.0, 2.0, np.inf], [1.0, np.nan, np.nan]])
    assert metrics.blows_up(loss).tolist() == [False, False, True, True, True]   # 1.2x its start: not a blow-up
    assert metrics.blows_up(loss[2]) and not metrics.blows_up(np.array([2.0, 20.0]))
    with pytest.raises(ValueError, match="at least 2 steps"):
        metrics.blows_up(np.array([1.0]))
