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
* the same ratio with the *training run* as the unit of replication: a delete-one-seed jackknife
  interval (:func:`churn_ratio_jackknife`). The intervals over test images above are conditional on
  the trained networks; a claim about training randomness needs the seed-level one;
* a permutation test of exchangeability (:func:`exchangeability`): if a last-bit change scrambles
  training as much as a new batch order, every copy of the grid is exchangeable with every other, and
  reassigning the copies to the grid's cells at random leaves the ratio where it is;
* a two-way ANOVA without replication, ``acc ~ C(k) + C(seed)`` (statsmodels), descriptive: with a
  handful of seeds it has little power, and not rejecting is no evidence of no seed effect.

Everything here is a number with its interval; the words that turn them into a verdict are the book's
(:mod:`pdeeos.book.experiments.perturbed_sgd`). A statistic that is undefined on the data (a variance of
one distinct value, an F ratio over a zero residual) is ``None``, never a number.
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

PERMUTATIONS = 4999
"""Random reassignments of the copies to the grid in :func:`exchangeability` (a fixed random seed)."""

SUPERSEDED = ("churn_over_k_ci", "churn_over_seeds_ci", "churn_ratio_ci", "std_over_k_ci", "std_over_seeds_ci")
"""Keys of summaries stored before :func:`summarize` named its intervals after their unit of replication
(``*_image_ci`` over test images, ``*_seed_ci`` over training runs, ``*_bootstrap_ci``): a recomputed
summary drops them (:func:`resummarized`)."""


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


def _std(acc: np.ndarray, axis: int, ddof: int) -> np.ndarray:
    """Standard deviations along ``axis``, exactly 0 where the values are all equal (no rounding noise)."""
    return np.where(np.ptp(acc, axis=axis) == 0, 0.0, acc.std(axis=axis, ddof=ddof))


def std_over_k(final_acc: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Per seed, the standard deviation of the accuracies over ``k`` (``final_acc``: ks × seeds)."""
    return _std(_check_grid(final_acc), 0, ddof)


def std_over_seeds(final_acc: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Per ``k``, the standard deviation of the accuracies over seeds."""
    return _std(_check_grid(final_acc), 1, ddof)


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
    images, conditional on the trained copies (the ratio's from a paired bootstrap)."""
    over_k, over_seeds = churn_per_image(predictions)

    def mean(x: np.ndarray, axis: int) -> np.ndarray:
        return 100 * x.mean(axis=axis)

    def ratio(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.mean(axis=axis) / b.mean(axis=axis)

    defined = bool(over_seeds.any())
    return {
        "churn_over_k": 100 * float(over_k.mean()), "churn_over_k_image_ci": _bootstrap((over_k,), mean),
        "churn_over_seeds": 100 * float(over_seeds.mean()),
        "churn_over_seeds_image_ci": _bootstrap((over_seeds,), mean),
        "churn_ratio": float(over_k.mean() / over_seeds.mean()) if defined else None,
        "churn_ratio_image_ci": _bootstrap((over_k, over_seeds), ratio, paired=True) if defined else None,
    }


def disagreement(predictions: np.ndarray) -> np.ndarray:
    """Share of test images on which two copies disagree, for every pair of the grid's copies: a
    (seeds·ks) × (seeds·ks) matrix, copies in seed-major order (``predictions``: seeds × ks × images)."""
    pred = np.asarray(predictions)
    flat = pred.reshape(-1, pred.shape[-1])
    return np.stack([(flat != row).mean(axis=1) for row in flat])


def _grid_ratio(d: np.ndarray, n_seeds: int, n_ks: int) -> float:
    """Churn over k / churn over seeds of the grid whose copies' disagreements are ``d`` (seed-major)."""
    seed, k = np.divmod(np.arange(n_seeds * n_ks), n_ks)
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    over_seeds = d[upper & (k[:, None] == k[None, :])].mean()
    return float(d[upper & (seed[:, None] == seed[None, :])].mean() / over_seeds) if over_seeds else float("nan")


def churn_ratio_jackknife(predictions: np.ndarray) -> dict[str, Any]:
    r"""The churn ratio :math:`\hat\rho` with the training run as the unit: the delete-one-seed jackknife.

    :math:`\hat\rho_{(i)}` is the ratio of the grid without seed :math:`i`;
    :math:`\widehat{\mathrm{se}}^2 = \frac{S-1}{S}\sum_i(\hat\rho_{(i)} - \bar\rho_{(\cdot)})^2`, and the 95 %
    interval is :math:`\hat\rho \pm t_{0.975,\,S-1}\,\widehat{\mathrm{se}}`. A jackknife rather than a
    bootstrap over seeds: a resample that draws a seed twice pairs a training run with itself, whose
    churn is 0 by construction, and so biases the churn over seeds down. Needs at least 3 seeds. The
    interval is ``None`` when it is undefined (a ratio over zero churn between seeds) or degenerate
    (every leave-one-out ratio the same)."""
    pred = np.asarray(predictions)
    churn_per_image(pred)   # checks the shape
    n_seeds, n_ks = pred.shape[:2]
    if n_seeds < 3:
        raise ValueError(f"a delete-one-seed jackknife needs at least 3 seeds; got {n_seeds}")
    d = disagreement(pred)
    value = _grid_ratio(d, n_seeds, n_ks)
    keep = [np.delete(np.arange(n_seeds * n_ks).reshape(n_seeds, n_ks), i, axis=0).ravel() for i in range(n_seeds)]
    loo = np.array([_grid_ratio(d[np.ix_(c, c)], n_seeds - 1, n_ks) for c in keep])
    se = float(np.sqrt((n_seeds - 1) / n_seeds * ((loo - loo.mean()) ** 2).sum()))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n_seeds - 1))
    defined = np.isfinite(value) and np.isfinite(loo).all() and np.ptp(loo) > 0
    return {"churn_ratio_seed_ci": [value - t * se, value + t * se] if defined else None,
            "churn_ratio_leave_one_out": loo.tolist(), "churn_ratio_seed_se": se if defined else None}


def exchangeability(predictions: np.ndarray, *, permutations: int = PERMUTATIONS) -> dict[str, Any]:
    r"""Permutation test of "every copy of the grid is exchangeable" (a last-bit change scrambles
    training as much as a new batch order): the seeds × ks copies are reassigned to the grid's cells at
    random ``permutations`` times, and the churn ratio recomputed each time. Returns the one-sided
    :math:`p = (1 + \#\{\rho_\pi \le \hat\rho\})/(1 + N)` (a seed imprint makes copies of one seed
    alike, so the ratio small), the null distribution's median and 95 % band, and the *seed imprint*
    :math:`1 - \hat\rho / \mathrm{median}(\rho_\pi)`: the share of the churn that independent copies
    would show and the k-copies of one seed do not."""
    pred = np.asarray(predictions)
    churn_per_image(pred)
    n_seeds, n_ks = pred.shape[:2]
    d = disagreement(pred)
    value = _grid_ratio(d, n_seeds, n_ks)
    if not np.isfinite(value):
        return {"exchangeability_p": None, "exchangeability_null": None, "seed_imprint": None}
    rng = np.random.default_rng(0)
    null = np.array([_grid_ratio(d[np.ix_(order, order)], n_seeds, n_ks)
                     for order in (rng.permutation(len(d)) for _ in range(permutations))])
    median = float(np.median(null))
    return {"exchangeability_p": float((1 + (null <= value).sum()) / (1 + permutations)),
            "exchangeability_null": [float(np.quantile(null, 0.025)), median, float(np.quantile(null, 0.975))],
            "seed_imprint": 1 - value / median}


def std_chi2_intervals(final_acc: np.ndarray) -> dict[str, Any]:
    r"""Pooled standard deviations over k (within seeds) and over seeds (within k), ddof 1, with their
    95 % :math:`\chi^2` intervals :math:`\bigl[s\sqrt{\nu/\chi^2_{0.975,\nu}},\ s\sqrt{\nu/\chi^2_{0.025,\nu}}\bigr]`,
    :math:`\nu = S(K-1)` resp. :math:`K(S-1)` (normal accuracies assumed; ``final_acc``: ks × seeds).
    A pooled STD of zero (one distinct value in every group) has no interval: ``None``."""
    acc = _check_grid(final_acc)
    n_k, n_s = acc.shape
    out: dict[str, Any] = {}
    for name, axis, df in (("over_k", 0, n_s * (n_k - 1)), ("over_seeds", 1, n_k * (n_s - 1))):
        pooled = float(np.sqrt((_std(acc, axis, 1) ** 2).mean()))
        lo, hi = (pooled * np.sqrt(df / stats.chi2.ppf(q, df)) for q in (0.5 + CONFIDENCE / 2, 0.5 - CONFIDENCE / 2))
        out[f"pooled_std_{name}"] = pooled
        out[f"pooled_std_{name}_ci"] = [float(lo), float(hi)] if pooled > 0 else None
    return out


def anova(final_acc: np.ndarray) -> dict[str, Any]:
    """Two-way ANOVA without replication, ``acc ~ C(k) + C(seed)`` (statsmodels ``anova_lm``), and the
    variance components from its mean squares: σ²_seed = (MS_seed − MS_res)/K, σ²_k =
    (MS_k − MS_res)/S (clipped at 0), and the share of the seed in σ²_seed + σ²_res. A mean square below
    1e-12 of the largest one (and of 1) is the rounding of the fit, whose digits differ between CPUs: it
    counts as 0. With a zero residual mean square (no variation within seeds beyond the k and seed means)
    F and p are undefined: ``None``."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    acc = _check_grid(final_acc)
    n_k, n_s = acc.shape
    frame = pd.DataFrame({"acc": acc.ravel(), "k": np.repeat(np.arange(n_k), n_s),
                          "seed": np.tile(np.arange(n_s), n_k)})
    table = anova_lm(smf.ols("acc ~ C(k) + C(seed)", data=frame).fit())
    ms = table["sum_sq"] / table["df"]
    ms = ms.where(ms > 1e-12 * max(1.0, float(ms.max())), 0.0)
    ms_res = float(ms["Residual"])
    defined = ms_res > 0
    var_seed = max(0.0, (float(ms["C(seed)"]) - ms_res) / n_k)
    var_k = max(0.0, (float(ms["C(k)"]) - ms_res) / n_s)

    def term(column: str, name: str) -> float | None:
        return float(table.loc[name, column]) if defined else None

    return {"anova_f_seed": term("F", "C(seed)"), "anova_p_seed": term("PR(>F)", "C(seed)"),
            "anova_f_k": term("F", "C(k)"), "anova_p_k": term("PR(>F)", "C(k)"),
            "var_seed": var_seed, "var_k": var_k, "var_residual": ms_res,
            "seed_share": var_seed / (var_seed + ms_res) if var_seed + ms_res > 0 else None}


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Test accuracy (%) of every copy, ks × seeds, from its predictions (seeds × ks × images)."""
    pred, labels = np.asarray(predictions), np.asarray(labels)
    if pred.ndim != 3 or pred.shape[-1] != labels.shape[-1]:
        raise ValueError(f"predictions must be seeds × ks × images and labels one per image; got shapes "
                         f"{pred.shape} and {labels.shape}")
    return 100 * (pred == labels).mean(axis=-1).T


AXES: tuple[str, ...] = ("seed", "k", "image")
"""The axes of a grid of predictions, in the order the functions of this module take them."""


def in_order(predictions: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    """``predictions`` whose axes are named ``axes`` (an order of :data:`AXES`), transposed to seeds × ks ×
    images; ``ValueError`` for names that are not the three of :data:`AXES` or that do not match the array."""
    pred = np.asarray(predictions)
    if len(axes) != 3 or sorted(axes) != sorted(AXES):
        raise ValueError(f"axes must name the three axes {AXES} in the predictions' order; got {axes!r}")
    if pred.ndim != 3:
        raise ValueError(f"predictions must have three axes, named by axes={axes!r}; got shape {pred.shape}")
    return pred.transpose([axes.index(a) for a in AXES])


def summarize(predictions: np.ndarray, labels: np.ndarray, *,
              axes: tuple[str, ...] = AXES) -> dict[str, Any]:
    """Every spread statistic of a perturbed-SGD grid, from one array: every copy's prediction of every
    test image (``predictions``, its axes named by ``axes``: seeds × ks × images unless said otherwise)
    and the true ``labels``. The accuracies come from the same predictions, so accuracy and churn are of
    the same epoch and no two arrays can disagree on which axis is k. STDs are ddof 1 (means of the
    per-group STDs, and pooled with χ² intervals)."""
    predictions = in_order(predictions, axes)
    acc = accuracy(predictions, labels)
    k_ci, seeds_ci = std_intervals(acc)
    summary = {
        "mean_acc": float(acc.mean()), "ddof": 1,
        "mean_std_over_k": float(std_over_k(acc).mean()), "std_over_k_bootstrap_ci": k_ci,
        "mean_std_over_seeds": float(std_over_seeds(acc).mean()), "std_over_seeds_bootstrap_ci": seeds_ci,
        **std_chi2_intervals(acc), **churn(predictions), **anova(acc), **exchangeability(predictions),
    }
    if np.asarray(predictions).shape[0] >= 3:
        summary |= churn_ratio_jackknife(predictions)
    return summary


def resummarized(summary: dict[str, Any], predictions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A stored ``summary`` with every spread statistic recomputed by :func:`summarize` from the stored
    ``predictions`` and ``labels``, the :data:`SUPERSEDED` keys dropped and every other key kept."""
    return {k: v for k, v in summary.items() if k not in SUPERSEDED} | summarize(predictions, labels)


__all__ = ["AXES", "PERMUTATIONS", "SUPERSEDED", "accuracy", "anova", "churn", "churn_over_k_per_seed", "churn_per_image",
           "churn_ratio_jackknife", "disagreement", "exchangeability", "std_chi2_intervals", "std_intervals",
           "std_over_k", "std_over_seeds", "in_order", "resummarized", "summarize"]
