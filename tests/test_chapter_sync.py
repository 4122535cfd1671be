"""Every chapter .md (the source) has a paired, executed .ipynb with the same cells."""

import importlib.util
from pathlib import Path

import jupytext
import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
SOURCES = sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))
TOC = (CHAPTERS.parent / "_toc.yml").read_text()


def _cells(notebook):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def test_there_are_chapters():
    assert SOURCES, "no chapters found"


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.name)
def test_pair_is_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{md.name} has no paired notebook: run scripts/execute_chapters.py {md}"
    assert _cells(jupytext.read(md)) == _cells(jupytext.read(ipynb)), (
        f"{ipynb.name} is out of sync with {md.name}: run scripts/execute_chapters.py {md}"
    )


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.name)
def test_notebook_holds_outputs_of_a_full_execution(md):
    notebook = jupytext.read(md.with_suffix(".ipynb"))
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{md.name}: not executed top to bottom in one kernel"
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{md.name}: a cell raised {errors[0]['ename']}"


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.name)
def test_chapter_is_in_the_table_of_contents(md):
    assert f"chapters/{md.stem}" in TOC


def _setup_cell_source() -> str:
    spec = importlib.util.spec_from_file_location("setup_cell", CHAPTERS.parent / "scripts" / "setup_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return jupytext.reads(module.cell(), fmt="md:myst").cells[0].source.strip()


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.name)
def test_first_cell_sets_up_colab(md):
    first = next(c for c in jupytext.read(md).cells if c.cell_type == "code")
    assert first.source.strip() == _setup_cell_source(), (
        f"{md.name}: its first code cell is not the Colab set-up cell: run scripts/setup_cell.py")
    assert "hide-input" in first.metadata.get("tags", ())


DRAWS = ("fig.show()", "plt.show()", "style.figure(")


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.name)
def test_every_cell_that_draws_a_figure_folds_its_code(md):
    """A reader in a hurry sees the figure; the plotting code is one click away (``hide-input``)."""
    shown = [c.source.splitlines()[0] for c in jupytext.read(md).cells
             if c.cell_type == "code" and any(d in c.source for d in DRAWS)
             and "hide-input" not in c.metadata.get("tags", ())]
    assert not shown, f"{md.name}: cells that draw a figure without the hide-input tag: {shown}"
