"""Benchmark: the one-layer CNN PDE scheme of ``pdeeos.pde.cnnpde`` against a naive NumPy im2col loop.

The naive reference is the official script's algorithm (a Python double loop gathers every 32x32
patch, one matrix product forward, one backward; float64), minus its input-gradient pass, which the
kernel update never uses. Both do the same work, Fig. 5 of the paper: eight step sizes, k in {1, 3},
1000 iterations of the 256x256 checkerboard; the periodic method (the checkerboard's four output values)
is timed on the same work. The naive loop is timed on a few iterations and its
per-iteration cost scaled to the full work; both are measured in this run.

    python scripts/bench_cnnpde.py [--naive-iterations 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pdeeos.pde import cnnpde

DTS = (0.01, 0.03, 0.05, 0.07, 0.09, 0.1, 0.11, 0.13)
KS = (1, 3)
STEPS, ALPHA, BETA, Y = 1000, 20.0, 1.0, 1.0


def naive_step(kernel: np.ndarray, image: np.ndarray, dt: float, k: float) -> tuple[float, np.ndarray]:
    """One official-style iteration: im2col by a Python loop, then the Thm 5.1 gradient by matrix products."""
    w = kernel.shape[0]
    m = image.shape[0] - w + 1
    cols = np.array([image[i:i + w, j:j + w].reshape(-1) for i in range(m) for j in range(m)]).T
    pre = kernel.reshape(-1) @ cols
    gate = 1 / (1 + np.exp(-BETA * pre))
    z = np.mean(pre * gate)
    y_hat = 1 / (1 + np.exp(-z))
    loss = -Y * np.log(y_hat) - (1 - Y) * np.log(1 - y_hat) + 0.5 * ALPHA * np.sum(kernel ** 2)
    slope = gate + BETA * pre * gate * (1 - gate)
    grad = (cols @ ((y_hat - Y) * slope / m ** 2)).reshape(w, w) + ALPHA * kernel
    return float(loss), kernel - (k * dt) * (grad / k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--naive-iterations", type=int, default=3, help="iterations of the naive loop to time")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared machine one beats two: idle OpenMP threads spin)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, kernel0 = cnnpde.checkerboard(256), cnnpde.official_kernel(32)

    kernel, image_np = kernel0.numpy().copy(), image.numpy()
    start = time.perf_counter()
    for _ in range(args.naive_iterations):
        naive_loss, kernel = naive_step(kernel, image_np, DTS[0], 1)
    naive_per_iteration = (time.perf_counter() - start) / args.naive_iterations
    naive_total = naive_per_iteration * STEPS * len(DTS) * len(KS)

    start = time.perf_counter()
    run = cnnpde.simulate(image, kernel0, DTS, k=KS, alpha=ALPHA, beta=BETA, steps=STEPS)
    fast_total = time.perf_counter() - start

    start = time.perf_counter()
    periodic = cnnpde.simulate(image, kernel0, DTS, k=KS, alpha=ALPHA, beta=BETA, steps=STEPS, method="periodic")
    periodic_total = time.perf_counter() - start
    stable = DTS.index(0.03)
    assert np.allclose(periodic.loss[:, stable], run.loss[:, stable], rtol=1e-10)

    check = cnnpde.simulate(image, kernel0, DTS[:1], alpha=ALPHA, beta=BETA, steps=args.naive_iterations)
    assert np.isclose(check.loss[0, -1], naive_loss, rtol=1e-12), (check.loss[0, -1], naive_loss)
    assert run.loss.shape == (len(KS), len(DTS), STEPS)
    print(f"work: {len(DTS)} step sizes x k in {KS} x {STEPS} iterations, 256x256 image, 32x32 kernel, float64")
    print(f"naive NumPy im2col: {naive_per_iteration:.3f} s per iteration "
          f"(timed on {args.naive_iterations}) -> {naive_total:.0f} s for the work")
    print(f"pdeeos.pde.cnnpde.simulate (FFT, {args.threads} threads): {fast_total:.1f} s")
    print(f"ratio naive / pdeeos: {naive_total / fast_total:.0f}x")
    print(f"pdeeos.pde.cnnpde.simulate (periodic: the checkerboard's four values): {periodic_total:.2f} s, "
          f"{fast_total / periodic_total:.1f}x faster than FFT (the same loss to 1e-10 at dt 0.03)")


if __name__ == "__main__":
    main()
