"""environment.yml and pyproject.toml name the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_lists_every_dependency_of_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_name(r) for r in project["dependencies"]}
    required |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    listed = {_name(line.strip().lstrip("- ")) for line in (ROOT / "environment.yml").read_text().splitlines()
              if line.strip().startswith("- ")}
    missing = {CONDA_NAMES.get(name, name) for name in required} - listed
    assert not missing, f"environment.yml lacks {sorted(missing)}"
