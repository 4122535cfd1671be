"""``scripts/second_config.py``: nbval under a second numerical configuration (CI runs it on a schedule).

The whole run takes as long as the chapters' nbval run, so README's test command checks only that
the configuration takes effect in a fresh Python (PyTorch's CPU capability, its thread count, NumPy's
run-time dispatch), that it differs from this process's, and that a bad argument is refused.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "second_config.py"


def _module():
    spec = importlib.util.spec_from_file_location("second_config", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_takes_effect() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "PyTorch capability DEFAULT, 1 thread, no NumPy dispatch" in done.stdout


def test_it_runs_nbval_at_the_ci_scale_and_moves_every_dispatcher() -> None:
    env = _module().environment()
    assert env["PDEEOS_SCALE"] == "ci"
    for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS"):
        assert env.get(name), name
    # on this machine the second configuration is a different one, not the default under another name
    assert torch.backends.cpu.get_cpu_capability() != "DEFAULT" or torch.get_num_threads() != 1


def test_a_missing_notebook_is_refused() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "chapters/no-such-chapter.ipynb"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode != 0
    assert "error: no such notebook: chapters/no-such-chapter.ipynb" in done.stderr
