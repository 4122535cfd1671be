"""Benchmark: the whole step-size sweep of the Beltrami scheme in one batched call vs a plain per-step-size loop.

Work: the 256x256 noisy ``camera`` image, eight step sizes (1x to 1000x the strict bound), 10,000
iterations, float32. Fast: :func:`pdeeos.pde.beltrami.simulate` with every step size in one batch, its step
fused by ``torch.compile``. Plain: one eager run per step size, timed on ``naive_steps`` iterations and
scaled. Both are measured in this run; the result is stored as the run ``beltrami-benchmark``.

    python scripts/bench_beltrami.py [--scale book]
"""

from __future__ import annotations

import argparse

from pdeeos.book.experiments import run_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="book", choices=("ci", "book"))
    args = parser.parse_args()
    run = run_experiment("beltrami-benchmark", args.scale, show_progress=False)
    s, c = run.summary, run.config
    print(run.describe())
    print(f"work: {len(c['multiples'])} step sizes x {c['steps']} iterations, {c['size']}x{c['size']} image, float32, "
          f"{c['threads']} threads")
    print(f"plain per-step-size loop (eager, timed on {c['naive_steps']} iterations): {s['plain_loop_s']:.1f} s")
    print(f"one batched call (pdeeos.pde.beltrami.simulate, compiled): {s['batched_s']:.1f} s")
    print(f"ratio plain / batched: {s['ratio']:.1f}x")


if __name__ == "__main__":
    main()
