"""Put the Colab set-up cell at the top of every chapter (or check that it is there).

The cell is rendered from the repository configured once in ``_config.yml``: where ``pdeeos`` is not
installed (Colab) it clones the repository, which holds the package and the stored runs, installs it
and moves into its ``chapters/``; elsewhere it does nothing. Run this after changing the repository,
then re-execute the chapters.

    python scripts/setup_cell.py            # insert or update the cell in every chapters/NN-slug.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# Set-up for Colab"
TEMPLATE = '''```{{code-cell}} ipython3
:tags: [hide-input]

{marker}: where `pdeeos` is not installed, fetch this book's repository (the package and
# its stored runs) and install it. Elsewhere this cell does nothing. Choose a GPU runtime to re-run the
# GPU experiments; the package picks the GPU when there is one. PDEEOS_REPO, PDEEOS_BRANCH and
# PDEEOS_CLONE choose another repository (a fork, a local clone), branch or folder.
import importlib.util, os, subprocess, sys

if importlib.util.find_spec("pdeeos") is None:
    URL = os.environ.get("PDEEOS_REPO", "{url}")
    BRANCH = os.environ.get("PDEEOS_BRANCH", "{branch}")
    REPO = os.environ.get("PDEEOS_CLONE", "/content/pdeeos")
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", BRANCH, URL, REPO], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--editable", REPO], check=True)
    sys.path.insert(0, f"{{REPO}}/src")
    os.chdir(f"{{REPO}}/chapters")
```
'''


def cell() -> str:
    """The set-up cell, as MyST markdown, for the repository of ``_config.yml``."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return TEMPLATE.format(marker=MARKER, url=repo["url"], branch=repo.get("branch", "main"))


def with_cell(text: str) -> str:
    """``text`` (a chapter) with the set-up cell as its first code cell, replacing an older one."""
    pattern = re.compile(r"```\{code-cell\} ipython3\n(?::tags: \[hide-input\]\n\n)?" + re.escape(MARKER)
                         + r".*?\n```\n\n?", re.DOTALL)
    text = pattern.sub("", text, count=1)
    first = text.index("```{code-cell}")
    return text[:first] + cell() + "\n" + text[first:]


def main() -> int:
    for md in sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md")):
        text = md.read_text()
        new = with_cell(text)
        if new != text:
            md.write_text(new)
            print(f"updated {md.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
