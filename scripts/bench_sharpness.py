"""Hessian-vector products needed for the sharpness to 1e-4 relative: Lanczos against power iteration.

Both solvers run on the same model in the same process: a tanh MLP (2 hidden layers of 50 units)
on 512 MNIST images of digits 0 and 1, full-batch cross-entropy, float64, at its initialisation and
after 100 steps of gradient descent (eta = 0.1). The reference is Lanczos run to 1e-10; power
iteration (what PyHessian uses) finds the eigenvalue of largest magnitude, which need not be the
sharpness.

    .venv/bin/python scripts/bench_sharpness.py
"""

from __future__ import annotations

import torch

from pdeeos import sharpness
from pdeeos.pde import eos_networks


def compare(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rtol: float) -> None:
    """Print both solvers' answers and, when power iteration finds the sharpness, the HVP counts."""
    matvec, n = sharpness.hvp_operator(lambda: eos_networks.task_loss(model, x, y), list(model.parameters()))
    reference = sharpness.lanczos(matvec, n, tol=1e-10, max_iter=300)
    power = sharpness.power_iteration(matvec, n, tol=1e-12, max_iter=3000)
    top = reference.values[0]
    print(f"  sharpness (Lanczos) {top:.6f}; power iteration {power.values[0]:.6f} "
          f"after {power.matvecs} products")
    if abs(power.values[0] - top) > rtol * abs(top):
        print("  power iteration converged to another eigenvalue (a negative one of larger magnitude)")
        return
    lanczos_count = reference.products_to_reach(top, rtol)
    power_count = power.products_to_reach(top, rtol)
    print(f"  HVPs to {rtol:g} relative: Lanczos {lanczos_count}, power iteration {power_count}; "
          f"ratio power / Lanczos = {power_count / lanczos_count:.1f}")


def main(rtol: float = 1e-4) -> None:
    torch.set_num_threads(1)
    x, y, described = eos_networks.mnist01(512)
    y = y.long()
    model = eos_networks.TanhMLP(2, n_in=28 * 28, n_out=2, width=50)
    print(f"{described}; MLP with {sum(p.numel() for p in model.parameters()):,} parameters")
    print("at initialisation:")
    compare(model, x, y, rtol)
    eos_networks.train_gd(model, x, y, eta=0.1, steps=100)
    print("after 100 GD steps at eta = 0.1:")
    compare(model, x, y, rtol)


if __name__ == "__main__":
    main()
