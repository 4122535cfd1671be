"""The GitHub workflows in .github/workflows/: the tests on every push and pull request, the book on
GitHub Pages from main.

Both are validated offline against the GitHub-workflow JSON schema (``check-jsonschema
--builtin-schema vendor.github-workflows``) and audited with ``zizmor --offline`` (actions pinned to
commit SHAs, least permissions, no persisted credentials, no template injection), and both checks are
shown to fail on broken copies. A few rules zizmor leaves to the author (a version comment on every
pin, no write permission beyond the Pages deployment, checkout without credentials) are checked here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
TESTS, PAGES, SECOND = WORKFLOWS / "tests.yml", WORKFLOWS / "pages.yml", WORKFLOWS / "second-config.yml"

# owner/repo[/path]@<full commit SHA> # vX.Y.Z
PINNED = re.compile(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
# The only write permissions anywhere: the deployment's.
DEPLOY_PERMISSIONS = {"pages": "write", "id-token": "write"}


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; it is in the test extras (bash scripts/install.sh)")
    return path


def _schema(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def _zizmor(folder: Path) -> tuple[int, list[str], str]:
    """zizmor's exit status, the ids of its findings and its plain report."""
    command = [_tool("zizmor"), "--offline", "--no-progress", "--color", "never", "-q", str(folder)]
    report = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = subprocess.run(command + ["--format", "json"], capture_output=True, text=True, timeout=120)
    assert found.returncode == report.returncode, found.stderr
    return report.returncode, [f["ident"] for f in json.loads(found.stdout)], report.stdout + report.stderr


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def _policy_problems(path: Path) -> list[str]:
    """What breaks this project's rules for a workflow, beyond what zizmor reports."""
    problems = []
    text = path.read_text()
    for line in text.splitlines():
        if "uses:" in line and not PINNED.search(line.strip().removeprefix("- ")):
            problems.append(f"not pinned to a commit SHA with a version comment: {line.strip()}")
    workflow = _load(path)
    if workflow.get("permissions") != {}:
        problems.append(f"top-level permissions are {workflow.get('permissions')!r}, not {{}}")
    if "concurrency" not in workflow:
        problems.append("no concurrency group")
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions")
        if not isinstance(permissions, dict):
            problems.append(f"job {name}: permissions {permissions!r}, not a mapping")
            continue
        for scope, level in permissions.items():
            if level == "write" and DEPLOY_PERMISSIONS.get(scope) != "write":
                problems.append(f"job {name}: {scope}: write")
        if "timeout-minutes" not in job:
            problems.append(f"job {name}: no timeout-minutes")
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@") and \
                    step.get("with", {}).get("persist-credentials") is not False:
                problems.append(f"job {name}: checkout without persist-credentials: false")
    return problems


def test_the_workflows_are_valid_against_the_github_workflow_schema():
    result = _schema(TESTS, PAGES, SECOND)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_zizmor_finds_nothing_in_the_workflows():
    status, found, report = _zizmor(WORKFLOWS)
    assert status == 0 and found == [], report


@pytest.mark.parametrize("path", [TESTS, PAGES, SECOND], ids=lambda p: p.name)
def test_every_action_is_pinned_and_every_permission_is_the_least_needed(path):
    assert _policy_problems(path) == []


def test_the_tests_workflow_runs_the_readme_test_command_on_pushes_and_pull_requests():
    workflow = _load(TESTS)
    assert {"push", "pull_request"} <= set(workflow["on"])
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "bash scripts/test.sh" in runs
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()


def test_the_second_configuration_runs_on_a_schedule_and_by_hand():
    workflow = _load(SECOND)
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert runs[-2:] == ["bash scripts/install.sh", ".venv/bin/python scripts/second_config.py"]
    assert (ROOT / "scripts" / "second_config.py").exists()


def test_the_pages_workflow_builds_the_book_on_main_and_deploys_it():
    workflow = _load(PAGES)
    assert workflow["on"]["push"] == {"branches": ["main"]}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = [step.get("uses", "").split("@")[0] for step in build["steps"]]
    assert {"actions/setup-python", "actions/cache", "actions/upload-pages-artifact"} <= set(uses)
    assert next(s for s in build["steps"] if "setup-python" in s.get("uses", ""))["with"]["cache"] == "pip"
    data = next(s for s in build["steps"] if "actions/cache" in s.get("uses", ""))
    assert data["with"]["path"] == "~/.cache/pdeeos"  # pdeeos.data.cache_dir(), where downloads go
    upload = next(s for s in build["steps"] if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert "bash scripts/install.sh" in runs and "bash scripts/build_book.sh" in runs
    assert ".venv/bin/jupyter-book build . --warningiserror --nitpick --keep-going" in runs
    assert deploy["needs"] == "build" and deploy["permissions"] == DEPLOY_PERMISSIONS
    assert deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]


def test_the_readme_links_the_published_book():
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner, name = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)/?", repository).groups()
    assert f"https://{owner.lower()}.github.io/{name}/" in (ROOT / "README.md").read_text()


# ----------------------------------------------------------------------------- broken copies

CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"
JOB_PERMISSIONS = "    permissions:\n      contents: read  # check out the repository\n"
# the top-level `permissions: {}` and every job's block: the jobs get the default token permissions
EVERY_PERMISSIONS_BLOCK = re.compile(r"(?m)^ *permissions:.*\n(?: {6}\S.*\n)*")

# name: (file, text in it, what replaces it, the zizmor finding or "schema")
BROKEN = {
    "unpinned action": ("tests.yml", CHECKOUT, "actions/checkout@v7", "unpinned-uses"),
    "job with write-all": ("tests.yml", JOB_PERMISSIONS, "    permissions: write-all\n",
                           "excessive-permissions"),
    "no permissions at all": ("pages.yml", EVERY_PERMISSIONS_BLOCK, "", "excessive-permissions"),
    "checkout keeps its credentials": ("tests.yml", "        with:\n          persist-credentials: false\n",
                                       "", "artipacked"),
    "template injection": ("tests.yml", "      - run: bash scripts/test.sh",
                           '      - run: echo "${{ github.event.head_commit.message }}"',
                           "template-injection"),
    "misspelled runs-on": ("pages.yml", "    runs-on: ubuntu-latest\n    timeout-minutes: 15",
                           "    run-on: ubuntu-latest\n    timeout-minutes: 15", "schema"),
    "unknown permission level": ("tests.yml", "contents: read  #", "contents: maybe  #", "schema"),
    "unknown event": ("tests.yml", "  pull_request:\n", "  pull-request:\n", "schema"),
}


def _broken_copy(tmp_path: Path, file: str, old: str | re.Pattern, new: str) -> Path:
    """A copy of ``file`` under ``tmp_path/.github/workflows`` with ``old`` replaced by ``new``."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    text = (WORKFLOWS / file).read_text()
    if isinstance(old, re.Pattern):
        text, count = old.subn(new, text)
    else:
        count = text.count(old)
        text = text.replace(old, new, 1)
    assert count, f"{file} no longer contains {old!r}; update the broken cases"
    (folder / file).write_text(text)
    return folder / file


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_a_broken_workflow_fails_the_checks(tmp_path, case):
    file, old, new, expected = BROKEN[case]
    broken = _broken_copy(tmp_path, file, old, new)
    if expected == "schema":
        result = _schema(broken)
        assert result.returncode != 0, result.stdout
        assert "Schema validation errors were encountered" in result.stdout + result.stderr
    else:
        status, found, report = _zizmor(broken.parent)
        assert status != 0 and expected in found, report


@pytest.mark.parametrize("old, new, problem", [
    (CHECKOUT, "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
     "not pinned to a commit SHA with a version comment"),
    ("persist-credentials: false", "persist-credentials: true", "checkout without persist-credentials"),
    ("contents: read  #", "contents: write  #", "test: contents: write"),
    ("permissions: {}\n", "permissions: read-all\n", "top-level permissions are 'read-all'"),
], ids=["no version comment", "persisted credentials", "contents write", "top-level read-all"])
def test_the_project_rules_catch_what_zizmor_allows(tmp_path, old, new, problem):
    broken = _broken_copy(tmp_path, "tests.yml", old, new)
    assert any(problem in p for p in _policy_problems(broken)), _policy_problems(broken)
