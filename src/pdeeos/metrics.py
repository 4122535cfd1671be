"""Distances between twin runs, the book's one definition of a blow-up, and the largest safe value of a swept
parameter."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["BLOW_UP_GROWTH", "ArrayLike", "blows_up", "largest_safe", "rel_l1"]

BLOW_UP_GROWTH = 10.0
"""A run blows up when its last loss exceeds this many times its first (or is not finite)."""


def rel_l1(a: ArrayLike, b: ArrayLike) -> float:
    r"""Relative L1 distance of the paper (and of its official code).

    .. math:: \mathrm{RelL1}(\theta, \theta') = \frac{2}{N} \sum_{i=1}^N
              \frac{|\theta_i - \theta'_i|}{|\theta_i| + |\theta'_i|}

    Each fraction lies in [0, 1] (1 when the signs differ or one entry is zero), so the
    distance lies in [0, 2]; a term with :math:`\theta_i = \theta'_i = 0` counts as 0. Any non-finite entry makes the result
    ``nan``: a blown-up run has no meaningful distance to its twin. ``a`` and ``b`` are NumPy arrays or
    torch tensors of the same shape (at least one element).
    """
    a_np = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)
    b_np = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, float)
    if a_np.shape != b_np.shape:
        raise ValueError(f"rel_l1 needs arrays of one shape; got {a_np.shape} and {b_np.shape}")
    if a_np.size == 0:
        raise ValueError("rel_l1 needs at least one element")
    if not (np.isfinite(a_np).all() and np.isfinite(b_np).all()):
        return float("nan")
    den = np.abs(a_np) + np.abs(b_np)
    num = np.abs(a_np - b_np)
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(2.0 * terms.mean())


def blows_up(loss: np.ndarray) -> np.ndarray:
    """Per loss history ``(..., steps)``: whether the run *blew up*, the book's one definition: its last loss is
    not finite or more than :data:`BLOW_UP_GROWTH` (10) times its first. A bounded run that ends a little above
    its start has not blown up (it is restrained, or stuck)."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim < 1 or loss.shape[-1] < 2:
        raise ValueError(f"loss must hold at least 2 steps on its last axis; got shape {loss.shape}")
    end = loss[..., -1]
    return ~np.isfinite(end) | ~(end <= BLOW_UP_GROWTH * loss[..., 0])


def largest_safe(values: ArrayLike, failed: ArrayLike) -> float:
    """The largest swept value (a step size, a learning rate) such that no run at that or a smaller
    value ``failed``; ``nan`` when even the smallest failed, the largest value when none did."""
    values, failed = np.asarray(values, dtype=float), np.asarray(failed, dtype=bool)
    if values.shape != failed.shape or values.ndim != 1 or not len(values):
        raise ValueError(f"values and failed must be non-empty 1-D arrays of one shape; got "
                         f"{values.shape} and {failed.shape}")
    order = np.argsort(values)
    ok = np.cumprod(~failed[order]).astype(bool)
    return float(values[order][ok].max()) if ok.any() else float("nan")
