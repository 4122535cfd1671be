"""Shared fixtures."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch CPU thread for the test, restored afterwards: tiny models run many times faster without
    intra-op threads, especially on a machine that other work shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
