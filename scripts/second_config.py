"""Re-check every chapter's compared outputs under a second numerical configuration.

nbval (``scripts/test.sh``) re-executes the chapters on the machine at hand. A printed digit that
depends on rounding passes there and fails on a reader's machine whose libraries round differently;
this script makes such a digit fail here. It runs nbval, as ``scripts/test.sh`` does (``PDEEOS_SCALE=ci``),
with every run-time CPU dispatcher of the stack moved off its usual code path and one thread:

* ``ATEN_CPU_CAPABILITY=default``: PyTorch's own kernels without AVX2/AVX-512;
* ``MKL_CBWR=COMPATIBLE``: MKL, which PyTorch calls for ``sqrt`` and other vector maths, BLAS, LAPACK
  and FFTs, and which picks its code path from the CPU on its own (``ATEN_CPU_CAPABILITY`` does not reach
  it). This is the path that changed chapter 2's digits between an AMD and an Intel machine;
* ``ONEDNN_MAX_CPU_ISA=SSE41``: oneDNN, PyTorch's CPU convolutions;
* ``OPENBLAS_CORETYPE=Prescott``: the OpenBLAS of NumPy and SciPy;
* ``NPY_DISABLE_CPU_FEATURES``: every optimisation NumPy dispatches at run time (its ``exp``, ``log``,
  ``sin``, ... differ in the last bit between AVX2 and AVX-512);
* ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``.

A compared output (one not tagged ``nbval-ignore-output``) that changes fails the run.

    python scripts/second_config.py                           # every chapter
    python scripts/second_config.py chapters/02-beltrami.ipynb
    python scripts/second_config.py --check                   # only check that the configuration takes effect

It takes about as long as the chapters' nbval run (about 10 minutes on two cores), which is why README's test
command does not run it; CI runs it on a schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIXED = {
    "PDEEOS_SCALE": "ci",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "DNNL_MAX_CPU_ISA": "SSE41",
    "OPENBLAS_CORETYPE": "Prescott",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

def _numpy_umath():
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:                                   # NumPy < 2
        from numpy.core import _multiarray_umath as umath
    return umath


def numpy_dispatched() -> list[str]:
    """The CPU features NumPy was built to dispatch to at run time (all of them, whether this CPU has them)."""
    return list(_numpy_umath().__cpu_dispatch__)


def probe() -> dict:
    """What this Python computes with: PyTorch's CPU capability and threads, NumPy's enabled dispatch targets."""
    import torch

    umath = _numpy_umath()
    return {"aten": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "numpy_dispatched": [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]}


def environment() -> dict[str, str]:
    """This process's environment with the second configuration on top."""
    env = os.environ | FIXED
    dispatched = numpy_dispatched()
    if dispatched:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(dispatched)
    return env


def check(env: dict[str, str]) -> dict:
    """Start a Python under ``env`` and fail with a clear message if the configuration did not take effect."""
    done = subprocess.run([sys.executable, __file__, "--probe"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: a Python under the second configuration failed to start:\n{done.stderr}")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    problems = []
    if seen["aten"] != "DEFAULT":
        problems.append(f"PyTorch still dispatches to {seen['aten']} (ATEN_CPU_CAPABILITY=default ignored)")
    if seen["threads"] != 1:
        problems.append(f"PyTorch runs {seen['threads']} threads, not 1")
    if seen["numpy_dispatched"]:
        problems.append(f"NumPy still dispatches to {seen['numpy_dispatched']}")
    if problems:
        raise SystemExit("error: the second configuration did not take effect: " + "; ".join(problems))
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks (default: every chapters/NN-*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only check that the configuration takes effect")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)   # used by --check
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe()))
        return 0
    env = environment()
    seen = check(env)
    print("second configuration: " + " ".join(f"{k}={env[k]}" for k in (*FIXED, "NPY_DISABLE_CPU_FEATURES") if k in env))
    print(f"  a Python under it reports: PyTorch capability {seen['aten']}, {seen['threads']} thread, "
          "no NumPy dispatch", flush=True)
    if args.check:
        return 0
    notebooks = [str(p) for p in args.notebooks] or sorted(str(p) for p in (ROOT / "chapters").glob("[0-9][0-9]-*.ipynb"))
    missing = [p for p in notebooks if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"error: no such notebook: {', '.join(missing)}")
    command = [sys.executable, "-m", "pytest", *notebooks, "--nbval", "-p", "no:cacheprovider", "--durations=10"]
    return subprocess.run(command, env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
