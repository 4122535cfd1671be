"""Dataset loaders on tiny synthetic files in the official formats, md5 checks, augmentation."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pdeeos import data


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray]:
    """A 5-image 'mnist' test split whose md5s the loader accepts."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 256
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5]))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        known = dict(data._MD5["mnist"][name]) | {data.md5sum(folder / name): "full"}
        monkeypatch.setitem(data._MD5["mnist"], name, known)
    return tmp_path, images


def test_mnist_reads_idx_files(fake_mnist: tuple[Path, np.ndarray]) -> None:
    root, images = fake_mnist
    ds = data.load_mnist("test", root=root, download=False)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5, 28, 28)
    assert np.array_equal(ds.images.numpy(), images)
    _, labels = ds  # unpacks like a tuple
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1, 4, 1, 5]


def test_corrupt_file_names_file_md5_and_places(fake_mnist: tuple[Path, np.ndarray]) -> None:
    root, _ = fake_mnist
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    _write_idx(path, np.array([0, 0, 0, 0, 0]))
    with pytest.raises(ValueError) as err:
        data.load_mnist("test", root=root, download=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "md5 mismatch" in msg
    assert "ec29112dd5afa0611ce80d1b7f02629c" in msg and str(root / "mnist") in msg


def test_missing_file_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        data.load_fashion_mnist("train", root=tmp_path, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "missing" in msg
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in msg and str(tmp_path) in msg


def test_cifar10_reads_pickle_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": pixels, b"labels": [0, 9, 2, 7], b"batch_label": b"test"}, fh)
    known = dict(data._MD5["cifar-10-batches-py"]["test_batch"])
    monkeypatch.setitem(data._MD5["cifar-10-batches-py"], "test_batch",
                        known | {data.md5sum(folder / "test_batch"): "subset"})
    ds = data.load_cifar10("test", root=tmp_path, download=False)
    assert ds.images.shape == (4, 3, 32, 32) and ds.variant == "subset"
    assert np.array_equal(ds.images[1].numpy().reshape(-1), pixels[1])
    assert ds.labels.tolist() == [0, 9, 2, 7]


def test_bad_split_and_name_raise() -> None:
    with pytest.raises(ValueError, match="split must be"):
        data.load_mnist("val", download=False)
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("imagenet")


def test_augment_is_reproducible_and_crops_and_flips() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    a = data.augment(x, torch.Generator().manual_seed(3))
    b = data.augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    same = data.augment(x, torch.Generator().manual_seed(3), padding=0)
    for img, out in zip(x, same):
        assert torch.equal(out, img) or torch.equal(out, img.flip(-1))
    with pytest.raises(ValueError, match="padding"):
        data.augment(x, torch.Generator(), padding=-1)


def test_to_float_normalises() -> None:
    x = data.to_float(torch.full((2, 28, 28), 255, dtype=torch.uint8))
    assert x.shape == (2, 1, 28, 28) and torch.allclose(x, torch.ones_like(x))
