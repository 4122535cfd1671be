"""A Colab reader's first minute: where ``pdeeos`` is not installed, a chapter's first cell clones the
repository, installs the package, and the chapter then executes.

The reader's machine is simulated by a fresh virtual environment that sees this environment's
packages (torch, numpy, Jupyter, ...) through a plain path entry, but not the editable ``pdeeos``
install (path entries in a ``.pth`` file are added to ``sys.path``; the ``.pth`` files inside them
are not run). ``PDEEOS_REPO`` points the set-up cell at a local clone of this repository instead of
the public one, so the test needs no network beyond the package registry (pip builds the package).
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import venv
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "01-heat-cfl.md"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def reader_python(tmp_path: Path) -> Path:
    """A Python with every dependency of the book but without ``pdeeos``."""
    env = tmp_path / "colab-env"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "book-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; import torch, ipykernel; "
                            "print(u.find_spec('pdeeos') is None)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stderr
    return python


def test_first_cell_installs_pdeeos_and_the_chapter_runs(reader_python: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = tmp_path / "jupyter" / "kernels" / "colab-reader"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(reader_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "a reader without pdeeos", "language": "python"}))
    clone = tmp_path / "content" / "pdeeos"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PDEEOS_REPO", f"file://{ROOT}")
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    monkeypatch.setenv("PDEEOS_BRANCH", "main" if branch == "HEAD" else branch)
    monkeypatch.setenv("PDEEOS_CLONE", str(clone))
    monkeypatch.setenv("PDEEOS_SCALE", "ci")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = jupytext.read(CHAPTER)
    NotebookClient(notebook, timeout=600, kernel_name="colab-reader",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (clone / "src" / "pdeeos" / "__init__.py").exists()
    where = subprocess.run([str(reader_python), "-c", "import pdeeos; print(pdeeos.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(clone), where     # installed from the clone, not from here
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
