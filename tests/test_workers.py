"""Worker processes share the seeds of a run; the stored arrays must not depend on how many."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pdeeos.book import experiments


def test_one_and_two_workers_store_bit_identical_arrays(tmp_path: Path) -> None:
    runs = [experiments.run_experiment("perturbed-sgd", "ci", device="cpu", root=tmp_path / str(n),
                                       show_progress=False, workers=n) for n in (1, 2)]
    one, two = (r.arrays for r in runs)
    assert one.keys() == two.keys()
    for key in one:
        assert np.array_equal(one[key], two[key], equal_nan=True), key
    assert runs[0].summary == runs[1].summary


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused_before_any_work(workers, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        experiments.run_experiment("perturbed-sgd", "ci", device="cpu", root=tmp_path, workers=workers)
    assert not (tmp_path / "perturbed-sgd").exists()
