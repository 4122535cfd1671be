"""App. F / §5.5: is a layer's upstream gradient G_l nearly independent of the layer's own kernel K_l?

The multi-layer argument (Thm 5.7) writes the kernel gradient of layer l in the one-layer form,
:math:`\\nabla_{K_l}L = [r'(K_l\\star I_{l-1})\\,G_l]\\star I_{l-1}`, with :math:`G_l = \\partial\\ell/\\partial I_l`
the gradient with respect to the layer's output, and then treats :math:`G_l` as independent of
:math:`K_l`, so that each layer is the one-layer PDE of chapters 3–5. This experiment measures how far
that is from true along full-batch gradient descent of the one-channel Swish CNNs of chapter 7
(MNIST 0/1): every ``every`` steps, for each layer, it moves :math:`K_l` alone by its gradient step
:math:`\\delta = -\\eta\\nabla_{K_l}L` and records

* the elasticity of :math:`G_l`, its relative change over the relative change of the kernel,
  :math:`e_l = (\\|G_l(K_l+\\delta) - G_l(K_l)\\|/\\|G_l\\|)\\,/\\,(\\|\\delta\\|/\\|K_l\\|)` (0 if independent);
* the error of the frozen-:math:`G_l` linearisation, the direct test of the claim: the true change of
  the kernel gradient against the change predicted with :math:`G_l` held at its value before the move,
  :math:`\\varepsilon_l = \\|\\Delta_{\\rm true} - \\Delta_{\\rm frozen}\\| / (\\|\\Delta_{\\rm true}\\| + \\|\\Delta_{\\rm frozen}\\|)`:
  0 where the approximation is exact, about 0.71 for two unrelated (orthogonal, equally long)
  changes, 1 where they point in opposite directions or one of them vanishes.

The networks have no weight decay (the paper's multi-layer bound is for heavily regularised ones) and
train only a little in these runs: this probes the early phase of training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pdeeos.pde import eos_networks as en
from pdeeos.book.experiments import Experiment, RunContext, RunOutput


def _outputs(kernels: list[torch.Tensor], x: torch.Tensor, beta: float) -> list[torch.Tensor]:
    """Every layer's output :math:`I_l = r(K_l \\star I_{l-1})`, :math:`I_0 = x`."""
    outs = [x]
    for kernel in kernels:
        outs.append(en.swish(en.conv3x3(outs[-1], kernel), beta))
    return outs


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_of_mean(last: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The chain's loss: binary cross-entropy of the globally average-pooled last map."""
    return F.binary_cross_entropy_with_logits(last.mean(dim=(1, 2, 3)), y)


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.detach()))


def frozen_g(kernels: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, eta: float, beta: float,
             loss_fn: Loss = bce_of_mean) -> tuple[list[float], list[float]]:
    """(:math:`e_l`, :math:`\\varepsilon_l`) for every layer at ``kernels`` (module docstring)."""
    base = [k.detach().requires_grad_(True) for k in kernels]
    outs = _outputs(base, x, beta)
    loss = loss_fn(outs[-1], y)
    grads = torch.autograd.grad(loss, base, retain_graph=True)
    elasticity, error = [], []
    for l, (kernel, grad) in enumerate(zip(base, grads)):
        g_l = torch.autograd.grad(loss, outs[l + 1], retain_graph=True)[0]
        moved = (kernel - eta * grad).detach().requires_grad_(True)
        out_l = en.swish(en.conv3x3(outs[l].detach(), moved), beta)
        frozen = torch.autograd.grad(out_l, moved, grad_outputs=g_l, retain_graph=True)[0]
        new_loss = loss_fn(_outputs([k.detach() for k in base[l + 1:]], out_l, beta)[-1], y)
        new_g_l, true = torch.autograd.grad(new_loss, [out_l, moved])
        elasticity.append((_norm(new_g_l - g_l) / _norm(g_l)) / (_norm(moved - kernel) / _norm(kernel)))
        error.append(_norm(true - frozen) / (_norm(true - grad) + _norm(frozen - grad)))
    return elasticity, error


def run(ctx: RunContext) -> RunOutput:
    """Gradient descent of each depth at each step size, measuring every layer's error as it goes."""
    cfg = ctx.config
    torch.set_num_threads(1)
    x, y, described = en.mnist01(cfg["images"])
    checks = np.arange(0, cfg["steps"], cfg["every"])
    arrays: dict[str, np.ndarray] = {"checks": checks}
    summary: dict[str, Any] = {"data": described}
    for depth, eta in ctx.progress([(d, e) for d in cfg["depths"] for e in cfg["etas"]], desc="runs"):
        kernels = [k.detach().clone() for k in en.ConvChain(depth, cfg["beta"]).kernels]
        elastic, errors = (np.full((len(checks), depth), np.nan) for _ in range(2))
        losses = np.full(cfg["steps"], np.nan)
        for step in range(cfg["steps"]):
            if step % cfg["every"] == 0:
                i = step // cfg["every"]
                elastic[i], errors[i] = frozen_g(kernels, x, y, eta=eta, beta=cfg["beta"])
            params = [k.requires_grad_(True) for k in kernels]
            loss = bce_of_mean(_outputs(params, x, cfg["beta"])[-1], y)
            if not torch.isfinite(loss):
                break
            losses[step] = float(loss)
            kernels = [(k - eta * g).detach() for k, g in zip(params, torch.autograd.grad(loss, params))]
        key = f"d{depth}_eta{eta:g}"
        arrays |= {f"{key}_elasticity": elastic, f"{key}_error": errors, f"{key}_loss": losses}
        summary[key] = {"median_elasticity_per_layer": np.nanmedian(elastic, axis=0).tolist(),
                        "median_error_per_layer": np.nanmedian(errors, axis=0).tolist(),
                        "share_error_above_half": float(np.mean(errors[np.isfinite(errors)] > 0.5))}
    return RunOutput(arrays=arrays, summary=summary)


_BASE = {"beta": 1.0, "depths": [2, 3], "every": 10}

EXPERIMENT = Experiment(
    name="appf-layers",
    summary="App. F: how far a layer's upstream gradient G_l depends on its own kernel K_l, along GD",
    chapter="03-cnn-gradient-pde",
    configs={"ci": _BASE | {"images": 32, "etas": [0.5, 4.0], "steps": 40},
             "book": _BASE | {"images": 256, "etas": [0.5, 2.0, 4.0], "steps": 300}},
    func=run)
