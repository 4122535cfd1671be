"""Small networks trained by full-batch gradient descent, with the sharpness measured along the way.

The paper's multi-layer Edge-of-Stability evidence (§6.2, Fig. 7–9; NeurIPS App. E):

* :class:`ConvChain` -- a VGG-style CNN with one channel: ``depth`` layers of 3×3 convolution
  (same padding, no bias) each followed by Swish :math:`r(u) = u\\,\\sigma(\\beta u)`, then global
  average pooling to one logit; binary cross-entropy on MNIST digits 0 and 1.
* :class:`TanhMLP` -- ``depth`` fully connected tanh layers of ``width`` units and a linear read-out;
  cross-entropy on the CIFAR-10 subset (Fig. 8, experiment ``eos-fc-tanh``).

Gradient descent on :math:`L(\\theta) + \\tfrac{\\alpha}{2}\\|\\theta\\|^2` is
:math:`\\theta \\leftarrow \\theta - \\eta(\\nabla L + \\alpha\\theta)`; the Hessian of the weight-decay
term is :math:`\\alpha I`, so the stability bound :math:`\\eta < 2/(\\alpha + \\lambda_{\\max}(\\nabla^2 L))`
tends to :math:`2/\\alpha` as :math:`\\alpha` grows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pdeeos import checkpoints, data, metrics, sharpness
from pdeeos.pde import cnnpde
from pdeeos.metrics import rel_l1

__all__ = ["RUN_CLASSES", "ConvChain", "History", "TanhMLP", "cifar_subset", "classify", "conv3x3",
           "is_stable", "largest_stable_eta", "loss_spikes", "mnist01", "regularised_loss_fns", "swish",
           "task_loss", "train_gd"]

RUN_CLASSES: tuple[str, ...] = ("stable", "restrained", "blow-up")
"""The behaviours :func:`classify` tells apart, in the order of its codes. Unlike
:data:`pdeeos.pde.cnnpde.RUN_CLASSES`, restrained runs are not split into periodic and chaotic: that takes a
Lyapunov exponent or twins, which these short scans do not measure."""


def swish(u: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish :math:`r(u) = u\\,\\sigma(\\beta u)`."""
    return u * torch.sigmoid(beta * u)


def conv3x3(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same-padded 3×3 cross-correlation of one-channel maps, :math:`\\sum_{ij} K_{ij}\\,u(\\cdot + (i-1, j-1))`,
    as nine shifted sums (equal to ``conv2d(u, K, padding=1)``, faster for one channel in float64)."""
    padded = F.pad(u, (1, 1, 1, 1))
    h, w = u.shape[-2:]
    return sum(kernel[i, j] * padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3))


class ConvChain(nn.Module):
    """``depth`` one-channel 3×3 convolutions with Swish, global average pooling, one logit."""

    def __init__(self, depth: int, beta: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1; got {depth}")
        g = torch.Generator().manual_seed(seed)
        self.beta = beta
        self.kernels = nn.ParameterList(
            nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64) / 3.0)
            for _ in range(depth))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(N,)``, of images ``(N, 1, H, W)``."""
        u = images
        for kernel in self.kernels:
            u = swish(conv3x3(u, kernel), self.beta)
        return u.mean(dim=(1, 2, 3))


class TanhMLP(nn.Module):
    """``depth`` fully connected tanh layers of ``width`` units and a linear read-out (PyTorch init)."""

    def __init__(self, depth: int, n_in: int, n_out: int, width: int = 200, seed: int = 0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1; got {depth}")
        torch.manual_seed(seed)
        sizes = [n_in] + [width] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.net = nn.Sequential(*layers, nn.Linear(width, n_out)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_out)`` of flattened inputs."""
        return self.net(x.flatten(1))


def mnist01(n: int | None = None, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` MNIST training images of digits 0 and 1 (all 12,665 if ``None``), float64
    ``(N, 1, 28, 28)`` normalised, labels float64 in {0, 1}, and a description."""
    ds = data.load_mnist("train", root, download=False)
    keep = torch.nonzero(ds.labels <= 1).squeeze(1)[:n]
    if n is not None and len(keep) < n:
        raise ValueError(f"n: MNIST has only {len(keep)} images of digits 0 and 1; asked for {n}")
    images = data.to_float(ds.images[keep], dtype=torch.float64)
    return images, ds.labels[keep].double(), f"MNIST digits 0/1, {len(keep):,} images of {ds.describe()}"


def cifar_subset(root: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The CIFAR-10 training images found (the 5,085-image subset offline), float64, and labels."""
    ds = data.load_cifar10("train", root, download=False)
    return data.to_float(ds.images, dtype=torch.float64), ds.labels, ds.describe()


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: binary on one logit (float labels), categorical otherwise."""
    logits = model(x)
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


@dataclass(frozen=True)
class History:
    """Objective :math:`L + \\frac{\\alpha}{2}\\|\\theta\\|^2` per step (``steps + 1`` values, fewer if it
    overflowed), sharpness at ``sharpness_steps``, and the RelL1 distance to the twin at every step
    (empty without a twin)."""

    loss: np.ndarray
    sharpness_steps: np.ndarray
    sharpness: np.ndarray
    twin_rel_l1: np.ndarray = field(default_factory=lambda: np.empty(0))


def regularised_loss_fns(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float,
                         chunk: int) -> list[Callable[[], torch.Tensor]]:
    """Chunks whose losses sum to :math:`L + \\tfrac{\\alpha}{2}\\|\\theta\\|^2` (for HVPs)."""
    n = len(x)
    fns = [lambda i=i: task_loss(model, x[i:i + chunk], y[i:i + chunk]) * (len(x[i:i + chunk]) / n)
           for i in range(0, n, chunk)]
    params = list(model.parameters())
    return fns + [lambda: 0.5 * alpha * sum((p**2).sum() for p in params)]


def train_gd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eta: float, steps: int,
             alpha: float = 0.0, sharpness_every: int = 0, chunk: int = 2048,
             checkpoint: Path | None = None, checkpoint_every: int = 0,
             progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
             twin_k: int | None = None) -> History:
    """Full-batch GD :math:`\\theta \\leftarrow \\theta - \\eta(\\nabla L + \\alpha\\theta)`; the sharpness
    of :math:`L + \\frac{\\alpha}{2}\\|\\theta\\|^2` every ``sharpness_every`` steps (never if 0).

    With ``twin_k`` a copy of the model trains in lockstep with the step written as
    :math:`\\theta - (k\\eta)\\,((\\nabla L + \\alpha\\theta)/k)`, the paper's last-bit perturbation, and the
    RelL1 distance between the two is recorded at every step (``History.twin_rel_l1``).

    With ``checkpoint`` the weights and the history so far are saved there every ``checkpoint_every``
    steps, and a run started again with the same settings resumes from the file (bit-identically: every
    step is deterministic). ``progress`` wraps the iterable of steps (e.g. a tqdm factory)."""
    if not eta > 0:
        raise ValueError(f"eta must be positive; got {eta}")
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    if checkpoint_every < 0 or sharpness_every < 0:
        raise ValueError("sharpness_every and checkpoint_every must be non-negative; "
                         f"got {sharpness_every}, {checkpoint_every}")
    if twin_k is not None and (isinstance(twin_k, bool) or not isinstance(twin_k, int) or twin_k < 1):
        raise ValueError(f"twin_k must be a positive integer or None; got {twin_k!r}")
    twin = None if twin_k is None else copy.deepcopy(model)
    models = [(model, 1)] + ([] if twin is None else [(twin, twin_k)])
    params = list(model.parameters())
    settings = {"eta": eta, "steps": steps, "alpha": alpha, "sharpness_every": sharpness_every, "n": len(x),
                "twin_k": twin_k}
    losses, where, sharp, rel, start = [], [], [], [], 0
    if checkpoint is not None and (state := checkpoints.load_checkpoint(checkpoint)) is not None:
        if state["settings"] != settings:
            raise ValueError(f"checkpoint {checkpoint} was written with {state['settings']}, not {settings}")
        for (m, _), weights in zip(models, state["models"]):
            m.load_state_dict(weights)
        losses, where, sharp, rel, start = state["loss"], state["where"], state["sharp"], state["rel"], state["t"]
    for t in (progress or iter)(range(start, steps + 1)):
        if checkpoint is not None and checkpoint_every and t > start and t % checkpoint_every == 0:
            checkpoints.save_checkpoint(checkpoint, {"settings": settings, "models": [m.state_dict() for m, _ in models],
                                                 "t": t, "loss": losses, "where": where, "sharp": sharp, "rel": rel})
        loss = task_loss(model, x, y)
        with torch.no_grad():
            losses.append(loss.item() + 0.5 * alpha * sum((p**2).sum() for p in params).item())
            if twin is not None:
                rel.append(rel_l1(nn.utils.parameters_to_vector(params),
                                  nn.utils.parameters_to_vector(twin.parameters())))
        if sharpness_every and t % sharpness_every == 0 and np.isfinite(losses[-1]):
            where.append(t)
            sharp.append(sharpness.top_eigenvalue(regularised_loss_fns(model, x, y, alpha, chunk), params,
                                                  tol=1e-4, max_iter=100))
        if t == steps or not np.isfinite(losses[-1]):
            break
        for m, k in models:
            m_params = list(m.parameters())
            grads = torch.autograd.grad(loss if m is model else task_loss(m, x, y), m_params)
            with torch.no_grad():
                for p, g in zip(m_params, grads):
                    p -= (k * eta) * ((g + alpha * p) / k)
    return History(np.array(losses), np.array(where), np.array(sharp), np.array(rel))


def loss_spikes(loss: np.ndarray, rel: float = 0.1) -> np.ndarray:
    """Steps at which a **spike** starts: the loss rises above :math:`(1 + \\text{rel})` times the lowest
    loss so far, having been below that level the step before (one index per excursion)."""
    loss = np.asarray(loss, dtype=float)
    if loss.ndim != 1 or not np.all(np.isfinite(loss)):
        raise ValueError("loss must be a one-dimensional array of finite values")
    if not rel > 0:
        raise ValueError(f"rel must be positive; got {rel}")
    above = loss > (1 + rel) * np.minimum.accumulate(loss)
    return np.flatnonzero(above[1:] & ~above[:-1]) + 1


def _settles_monotonically(loss: np.ndarray, rtol: float) -> np.ndarray:
    """Finite throughout and, over the second half of the last axis, never rising by more than ``rtol``."""
    second_half = loss.shape[-1] - loss.shape[-1] // 2
    return np.all(np.isfinite(loss), axis=-1) & cnnpde.never_rises(loss, second_half, rtol)


def is_stable(history: History, rtol: float = 1e-9) -> bool:
    """Stable: the objective finite throughout and, over the second half of the run, never rising by more than
    ``rtol`` relative (a stable GD on a quadratic decreases the loss monotonically)."""
    return bool(_settles_monotonically(np.asarray(history.loss, dtype=float), rtol))


def classify(loss: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Code (index into :data:`RUN_CLASSES`) of each objective history ``(..., steps)``,
    with ``nan`` after a non-finite value:

    * blow-up: :func:`pdeeos.metrics.blows_up` (the last value not finite or more than 10 times the first);
    * stable: otherwise, if the second half never rises by more than ``rtol`` (as :func:`is_stable`);
    * restrained: otherwise (bounded, rising somewhere in the second half).

    Unlike :func:`pdeeos.pde.cnnpde.classify`, a run that is still creeping down counts as stable (these
    short runs need not have settled)."""
    loss = np.asarray(loss, dtype=float)
    if loss.ndim < 1 or loss.shape[-1] < 3:
        raise ValueError(f"loss must have at least 3 steps on its last axis; got shape {loss.shape}")
    return np.where(metrics.blows_up(loss), 2, np.where(_settles_monotonically(loss, rtol), 0, 1))


def largest_stable_eta(make_model: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                       alpha: float, lo: float, hi: float, steps: int, rtol_eta: float = 0.01) -> tuple[float, float]:
    """Bisection for the stability threshold: ``(stable, unstable)`` step sizes with
    ``unstable - stable <= rtol_eta * unstable``. ``ValueError`` unless ``lo`` is stable and ``hi`` not."""
    def stable(eta: float) -> bool:
        return is_stable(train_gd(make_model(), x, y, eta=eta, steps=steps, alpha=alpha))
    if not 0 < lo < hi:
        raise ValueError(f"lo, hi must satisfy 0 < lo < hi; got {lo}, {hi}")
    if not stable(lo):
        raise ValueError(f"lo: gradient descent is not stable at eta = {lo}")
    if stable(hi):
        raise ValueError(f"hi: gradient descent is still stable at eta = {hi}")
    while hi - lo > rtol_eta * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo, hi
