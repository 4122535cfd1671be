"""Period-doubling cascades located by continuation: the logistic map's known doublings, the one-layer CNN's
scalar map (its first doubling at 2/λ*) and Zhu et al.'s example, against Feigenbaum's δ."""

from __future__ import annotations

import numpy as np
import pytest

from pdeeos.pde import bifurcation, cnnpde, eos


def logistic(x: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    return r * x * (1 - x), np.reshape(r * (1 - 2 * x), (1, 1))


def test_the_logistic_cascade_has_its_known_doublings_and_feigenbaums_ratios():
    found = bifurcation.cascade(logistic, np.array([0.3]), 2.5, 3.57, max_period=32)
    assert found.periods == (1, 2, 4, 8, 16, 32)
    assert found.points[0] == pytest.approx(3.0, abs=1e-10)
    assert found.points[1] == pytest.approx(1 + np.sqrt(6), abs=1e-10)      # 3.449490 ...
    assert found.points[2] == pytest.approx(3.5440903, abs=1e-7)
    assert found.ratios[-1] == pytest.approx(bifurcation.FEIGENBAUM_DELTA, abs=0.01)
    assert found.stopped == "period 64 exceeds max_period"


def test_the_one_layer_cnn_doubles_first_at_two_over_the_minimisers_sharpness():
    step = cnnpde.scalar_step_map()
    found = bifurcation.cascade(step, np.array([-1.0]), 0.03, 0.0489, max_period=8)
    u_star = bifurcation.refine_cycle(step, np.array([-3.9]), 0.03, 1)     # the fixed point on the side u < 0
    sharpness = (1 - step(u_star, 0.03)[1][0, 0]) / 0.03                     # λ(u*): F'(u*) = 1 - Δt λ(u*)
    assert found.periods == (1, 2, 4, 8) and found.points[0] == pytest.approx(2 / sharpness, rel=1e-10)
    assert np.all(np.diff(found.points) > 0)
    mirror = bifurcation.cascade(step, np.array([1.0]), 0.03, 0.0323, max_period=1)   # its near mirror image
    assert mirror.points[0] == pytest.approx(found.points[0], rel=1e-4) and mirror.points[0] != found.points[0]


def test_zhus_example_cascades_to_feigenbaums_delta():
    found = bifurcation.cascade(eos.gd_map, np.array([1.5, 0.5]), 0.53, 0.9, transient=20_000, max_period=32)
    assert found.periods == (2, 4, 8, 16, 32)
    assert found.ratios[-1] == pytest.approx(bifurcation.FEIGENBAUM_DELTA, abs=0.01)


def test_cycles_and_periods():
    x = bifurcation.refine_cycle(logistic, np.array([0.8]), 3.2, 2)
    image, multiplier = bifurcation.cycle(logistic, x, 3.2, 2)
    assert image == pytest.approx(x, abs=1e-13) and abs(multiplier[0, 0]) < 1
    assert bifurcation.attractor_period(np.tile([0.1, 0.7, 0.4], 50)) == 3
    chaotic = [0.3]
    for _ in range(500):
        chaotic.append(4 * chaotic[-1] * (1 - chaotic[-1]))
    assert bifurcation.attractor_period(np.array(chaotic)) == 0


def test_bad_input_is_refused_before_any_work():
    with pytest.raises(ValueError, match="a0 < a_max"):
        bifurcation.cascade(logistic, np.array([0.3]), 3.0, 2.9)
    with pytest.raises(ValueError, match="no period up to"):
        bifurcation.cascade(logistic, np.array([0.3]), 3.9, 3.95)
