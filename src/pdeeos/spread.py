"""How far apart trained copies end: accuracy spread and prediction churn, over k and over seeds.

A perturbed-SGD run trains a grid of copies: one per last-bit perturbation ``k`` (rows) and per
batch-selection seed (columns), all from the same initial weights. The paper's claim (Table 1) is
that the spread over ``k`` is as large as the spread over seeds. This module measures both spreads
with intervals and tests them against each other:

* standard deviations of the final test accuracies over ``k`` (within a seed) and over seeds (within
  a ``k``), with the same ``ddof`` for both, and 95 % bootstrap intervals (``scipy.stats.bootstrap``,
  resampling the ``k`` rows, resp. the seed columns);
* *prediction churn* (Summers & Dinneen 2021): the percentage of test images two copies classify
  differently, averaged over the pairs of ``k``-copies of a seed (``churn_over_k``) and over the
  pairs of seed-copies of a ``k`` (``churn_over_seeds``), with 95 % bootstrap intervals over the test
  images, and the interval of their ratio (a paired bootstrap);
* a two-way ANOVA without replication, ``acc ~ C(k) + C(seed)`` (statsmodels): if a last-bit change
  scrambles the training as much as a new batch order, the copies of one seed are no more alike than
  copies of different seeds and the seed effect vanishes; if it changes nothing, the seed explains
  everything. With three seeds the ANOVA has little power, so in the verdict it can only veto.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 4999
"""Bootstrap resamples (percentile intervals, a fixed random seed so a summary is reproducible)."""

REPRODUCED_RATIO = 0.8
"""Churn over k at least this fraction of churn over seeds (interval's lower end): "as large"."""
ABSENT_RATIO = 0.1
"""Churn over k below this fraction of churn over seeds (interval's upper end): no effect."""

VERDICT_RULE = (
    "churn ratio ρ = churn over k / churn over seeds, 95 % interval [lo, hi]: reproduced if "
    f"lo ≥ {REPRODUCED_RATIO} and the ANOVA finds no seed effect (p ≥ 0.05); not reproduced if "
    f"hi < {ABSENT_RATIO}; partly if {ABSENT_RATIO} ≤ lo and hi < {REPRODUCED_RATIO} (or lo ≥ "
    f"{REPRODUCED_RATIO} with a seed effect); inconclusive if the interval straddles {ABSENT_RATIO} "
    f"or {REPRODUCED_RATIO}"
)
"""The rule by which :func:`verdict` turns a perturbed-SGD summary into a ledger verdict."""


def _check_grid(final_acc: np.ndarray) -> np.ndarray:
    acc = np.asarray(final_acc, dtype=float)
    if acc.ndim != 2 or min(acc.shape) < 2:
        raise ValueError(f"final_acc must be ks × seeds with at least 2 of each; got shape {acc.shape}")
    return acc


def _interval(result: Any) -> list[float]:
    ci = result.confidence_interval
    return [float(ci.low), float(ci.high)]


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., Any], *, axis: int = -1,
               paired: bool = False) -> list[float]:
    """95 % percentile bootstrap interval of ``statistic`` (vectorised along ``axis``)."""
    res = stats.bootstrap(data, statistic, axis=axis, paired=paired, vectorized=True,
                          confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                          random_state=np.random.default_rng(0))
    return _interval(res)


def std_over_k(final_acc: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Per seed, the standard deviation of the accuracies over ``k`` (``final_acc``: ks × seeds)."""
    return _check_grid(final_acc).std(axis=0, ddof=ddof)


def std_over_seeds(final_acc: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Per ``k``, the standard deviation of the accuracies over seeds."""
    return _check_grid(final_acc).std(axis=1, ddof=ddof)


def std_intervals(final_acc: np.ndarray, ddof: int = 1) -> tuple[list[float], list[float]]:
    """95 % bootstrap intervals of the mean STD over k (the k rows resampled) and of the mean STD
    over seeds (the seed columns resampled)."""
    acc = _check_grid(final_acc)

    def mean_std(x: np.ndarray, axis: int) -> np.ndarray:
        # scipy hands over (other groups, resamples, resampled values): std over the resampled values,
        # then the mean over the other groups (seeds for the STD over k, and vice versa).
        return x.std(axis=axis, ddof=ddof).mean(axis=0)

    return _bootstrap((acc,), mean_std, axis=0), _bootstrap((acc,), mean_std, axis=1)


def _pair_disagreement(groups: np.ndarray) -> np.ndarray:
    """groups: G × M × n predictions; per image, the fraction of the M(M−1)/2 pairs within a group
    that disagree, averaged over the G groups (n values)."""
    g, m, _ = groups.shape
    i, j = np.triu_indices(m, 1)
    return (groups[:, i, :] != groups[:, j, :]).mean(axis=(0, 1))


def churn_per_image(predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per test image, the disagreement rate between k-copies of a seed and between seed-copies
    of a k (``predictions``: seeds × ks × test images)."""
    pred = np.asarray(predictions)
    if pred.ndim != 3 or pred.shape[0] < 2 or pred.shape[1] < 2:
        raise ValueError(f"predictions must be seeds × ks × images with at least 2 seeds and 2 ks; "
                         f"got shape {pred.shape}")
    return _pair_disagreement(pred), _pair_disagreement(pred.transpose(1, 0, 2))


def churn_over_k_per_seed(predictions: np.ndarray) -> np.ndarray:
    """Per seed, the churn over k (in %): the mean over pairs of k-copies of the share of test images
    they classify differently (``predictions``: seeds × ks × test images). Its mean over seeds is
    ``churn_over_k``; the values show the run-to-run spread that the interval over images leaves out."""
    pred = np.asarray(predictions)
    if pred.ndim != 3 or pred.shape[1] < 2:
        raise ValueError(f"predictions must be seeds × ks × images with at least 2 ks; got shape {pred.shape}")
    return np.array([100 * float(_pair_disagreement(seed[None]).mean()) for seed in pred])


def churn(predictions: np.ndarray) -> dict[str, Any]:
    """Churn over k and over seeds (in %), their ratio, and 95 % bootstrap intervals over the test
    images (the ratio's from a paired bootstrap)."""
    over_k, over_seeds = churn_per_image(predictions)

    def mean(x: np.ndarray, axis: int) -> np.ndarray:
        return 100 * x.mean(axis=axis)

    def ratio(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.mean(axis=axis) / b.mean(axis=axis)

    value = float(over_k.mean() / over_seeds.mean()) if over_seeds.any() else float("nan")
    return {
        "churn_over_k": 100 * float(over_k.mean()), "churn_over_k_ci": _bootstrap((over_k,), mean),
        "churn_over_seeds": 100 * float(over_seeds.mean()),
        "churn_over_seeds_ci": _bootstrap((over_seeds,), mean),
        "churn_ratio": value,
        "churn_ratio_ci": (_bootstrap((over_k, over_seeds), ratio, paired=True)
                           if over_seeds.any() else [float("nan")] * 2),
    }


def anova(final_acc: np.ndarray) -> dict[str, float]:
    """Two-way ANOVA without replication, ``acc ~ C(k) + C(seed)`` (statsmodels ``anova_lm``), and the
    variance components from its mean squares: σ²_seed = (MS_seed − MS_res)/K, σ²_k =
    (MS_k − MS_res)/S (clipped at 0), and the share of the seed in σ²_seed + σ²_res."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    acc = _check_grid(final_acc)
    n_k, n_s = acc.shape
    frame = pd.DataFrame({"acc": acc.ravel(), "k": np.repeat(np.arange(n_k), n_s),
                          "seed": np.tile(np.arange(n_s), n_k)})
    table = anova_lm(smf.ols("acc ~ C(k) + C(seed)", data=frame).fit())
    ms = table["sum_sq"] / table["df"]
    ms_res = float(ms["Residual"])
    var_seed = max(0.0, (float(ms["C(seed)"]) - ms_res) / n_k)
    var_k = max(0.0, (float(ms["C(k)"]) - ms_res) / n_s)

    def p_value(term: str) -> float:
        p = table.loc[term, "PR(>F)"]
        return 0.0 if ms_res == 0 and ms[term] > 0 else float(p) if np.isfinite(p) else 1.0

    return {"anova_f_seed": float(table.loc["C(seed)", "F"]), "anova_p_seed": p_value("C(seed)"),
            "anova_f_k": float(table.loc["C(k)", "F"]), "anova_p_k": p_value("C(k)"),
            "var_seed": var_seed, "var_k": var_k, "var_residual": ms_res,
            "seed_share": var_seed / (var_seed + ms_res) if var_seed + ms_res > 0 else 1.0}


def summarize(final_acc: np.ndarray, predictions: np.ndarray, ddof: int = 1) -> dict[str, Any]:
    """Every spread statistic of a perturbed-SGD grid, as stored in a run's summary."""
    acc = _check_grid(final_acc)
    k_ci, seeds_ci = std_intervals(acc, ddof)
    return {
        "mean_acc": float(acc.mean()), "ddof": ddof,
        "mean_std_over_k": float(std_over_k(acc, ddof).mean()), "std_over_k_ci": k_ci,
        "mean_std_over_seeds": float(std_over_seeds(acc, ddof).mean()), "std_over_seeds_ci": seeds_ci,
        **churn(predictions), **anova(acc),
    }


def verdict(summary: dict[str, Any]) -> str:
    """The ledger's verdict on "the spread over k is as large as over seeds" (:data:`VERDICT_RULE`)."""
    lo, hi = summary["churn_ratio_ci"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo >= REPRODUCED_RATIO:
        return "reproduced" if summary["anova_p_seed"] >= 0.05 else "partly"
    if hi < ABSENT_RATIO:
        return "not reproduced"
    if lo >= ABSENT_RATIO and hi < REPRODUCED_RATIO:
        return "partly"
    return "inconclusive"


__all__ = ["VERDICT_RULE", "anova", "churn", "churn_over_k_per_seed", "churn_per_image", "std_intervals",
           "std_over_k", "std_over_seeds", "summarize", "verdict"]
