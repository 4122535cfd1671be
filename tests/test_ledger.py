"""The claims ledger lists every result the chapters produce, and only results that exist."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pdeeos.book import bookgen, experiments, ledger, results
from pdeeos.book.experiments import registry

ROOT = Path(__file__).resolve().parents[1]
LISTED = {name for claim in ledger.CLAIMS for name in claim.experiments}


def test_every_experiment_is_in_the_ledger():
    missing = set(registry()) - LISTED - {"beltrami-benchmark"}   # a timing, reported on the Reproduce page
    assert not missing, f"experiments with no row in pdeeos.book.ledger.CLAIMS: {sorted(missing)}"


def test_the_ledger_names_only_real_experiments():
    unknown = LISTED - set(registry())
    assert not unknown, f"the ledger names experiments that do not exist: {sorted(unknown)}"


def test_every_stored_run_is_in_the_ledger_or_benchmark():
    stored = {p.parent.parent.name for p in (ROOT / "results").glob("*/*/run.json")}
    assert stored, "no stored runs found"
    assert stored <= LISTED | {"beltrami-benchmark"}, sorted(stored - LISTED)


@pytest.mark.parametrize("claim", ledger.CLAIMS, ids=lambda c: c.item)
def test_claim_links_to_a_real_section(claim):
    source = (ROOT / "chapters" / f"{claim.chapter}.md").read_text()
    headings = {m.group(1).strip() for m in re.finditer(r"^#{1,4} (.+)$", source, re.MULTILINE)}
    assert claim.section in headings, f"{claim.item}: chapter {claim.chapter} has no heading {claim.section!r}"


def test_rows_of_the_stored_runs():
    table = ledger.rows()
    assert len(table) == len(ledger.CLAIMS)
    for row in table:
        assert row.verdict in ledger.VERDICTS
        assert (row.verdict == "not yet run") == (not row.runs), row.claim.item
        assert {r.experiment for r in row.runs} == (set(row.claim.experiments) if row.runs else set())
    text = bookgen.ledger_page()
    assert f"{len(table)} claims" in text and text.count("\n* - {bdg-") == len(table)  # one row each


def test_without_stored_runs_nothing_is_claimed(tmp_path):
    table = ledger.rows(tmp_path)
    assert {row.verdict for row in table} == {"not yet run"}
    runs = [line for line in ledger.markdown(table).splitlines() if line[:1].isdigit()]
    assert len(runs) == len(table) and all("python -m pdeeos run" in line for line in runs)


def _copy_run(name: str, root: Path) -> Path:
    source = experiments.load_run(name)
    target = results.run_dir(name, source.scale, root)
    shutil.copytree(source.path, target)
    return target


def test_a_verdict_follows_the_numbers(tmp_path):
    """Spoil the stored heat-equation run: the same rule must now say 'not reproduced'."""
    _copy_run("heat-cfl", tmp_path)
    row = next(r for r in ledger.rows(tmp_path) if r.claim.item == "Fig. 1")
    assert row.verdict == "reproduced"
    run = experiments.load_run("heat-cfl", root=tmp_path)
    arrays = dict(run.arrays, critical_r=run.arrays["critical_r"] + 0.05)
    results.save_run(run.path, experiment=run.experiment, config=run.config, arrays=arrays,
                     summary=run.summary, provenance=run.provenance)
    row = next(r for r in ledger.rows(tmp_path) if r.claim.item == "Fig. 1")
    assert row.verdict == "not reproduced"


def test_slug_matches_myst():
    assert ledger.slug("Fig. 5 (left): three regimes in the loss") == "fig-5-left-three-regimes-in-the-loss"
    assert ledger.slug("Table 1: spread over $k$ against seeds") == "table-1-spread-over--against-seeds"


def test_generated_pages(tmp_path):
    bookgen.write_pages(tmp_path)
    out = tmp_path / "_generated"
    assert (out / "story.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = (out / "runs.md").read_text()
    assert all(f"`{name}`" in runs for name in registry())
    assert "claims." in (out / "ledger.md").read_text()


def test_frozen_g_is_exact_where_g_cannot_depend_on_the_kernel():
    """A loss linear in the last map makes G_L a constant: its elasticity and the frozen-G_L error
    vanish for the last layer, and not for the layer below, whose G depends on the last kernel's
    input through the Swish."""
    import torch

    from pdeeos.book.experiments import appf_layers

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    kernels = [torch.randn(3, 3, generator=gen, dtype=torch.float64) / 3 for _ in range(2)]
    elastic, error = appf_layers.frozen_g(kernels, x, torch.zeros(4, dtype=torch.float64), eta=0.5,
                                          beta=1.0, loss_fn=lambda last, y: last.mean())
    assert elastic[-1] == 0 and error[-1] < 1e-12
    assert elastic[0] > 1e-3 and error[0] > 1e-3


def test_app_b_odd_part():
    from pdeeos.book.experiments.app_b import odd_part

    assert [odd_part(k) for k in (1, 2, 4, 8, 3, 6, 12, 5, 10, 7)] == [1, 1, 1, 1, 3, 3, 3, 5, 5, 7]


def test_layer_onsets():
    from pdeeos.book.experiments.perturbed_sgd import layer_onsets

    rel = np.zeros((2, 4, 2, 3))                  # seeds × epochs × ks × layers
    rel[:, 1:, 1, 0] = 1.0                        # layer 0 from epoch 1
    rel[:, 3:, 1, 2] = 1.0                        # layer 2 from epoch 3; layer 1 never
    assert layer_onsets(rel, 1, 0.5) == [1, -1, 3]


def test_rows_of_one_chapter_and_an_unknown_chapter():
    chapter = ledger.rows(chapter="08-local-cfl")
    assert chapter and {row.claim.chapter for row in chapter} == {"08-local-cfl"}
    with pytest.raises(ValueError, match="no claim of the ledger is shown in chapter '09-none'"):
        ledger.rows(chapter="09-none")
