"""The paper's datasets, read from their official file formats, and on-device augmentation.

MNIST and Fashion-MNIST come as the four official ``*-idx?-ubyte.gz`` files, CIFAR-10 as the
python-pickle batches of ``cifar-10-batches-py``. Every file is checked against its md5 before it
is read. A loader looks for the files

1. in ``root`` when one is given (and only there), else
2. in ``$PDEEOS_DATA``, ``../shared/data`` beside this checkout, ``/usr/share/datasets`` and the
   download cache ``~/.cache/pdeeos`` (``$XDG_CACHE_HOME/pdeeos``), in that order;

when none holds a valid copy and ``download`` is true it downloads the official files into the
cache. A missing or corrupt file raises ``ValueError`` naming the file, its expected md5 and every
place that was searched.

Accepted md5s: the official one of each file; for the idx files also the md5 of the decompressed
bytes (the Debian copies in ``/usr/share/datasets`` differ only in their gzip headers); for CIFAR-10
also the genuine 5,085-image subset described in ``shared/data/README.md`` (first 1,017 images of
every batch), which the loaders report through :attr:`Dataset.variant`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATA_ENV", "LOADERS", "Dataset", "augment", "cache_dir", "load", "load_cifar10", "load_fashion_mnist",
           "load_mnist", "locate", "md5sum", "search_dirs", "to_float"]

DATA_ENV = "PDEEOS_DATA"
"""Environment variable naming a data directory searched before the defaults."""

_REPO_ROOT = Path(__file__).resolve().parents[2]

_IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}

# file name -> {md5: variant}; the first entry is the official md5 named in errors.
_MD5: dict[str, dict[str, dict[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": {"f68b3c2dcbeaaa9fbdd348bbdeb94873": "full",
                                       "6bbc9ace898e44ae57da46a324031adb": "full"},
        "train-labels-idx1-ubyte.gz": {"d53e105ee54ea40749a09fcbcd1e9432": "full",
                                       "a25bea736e30d166cdddb491f175f624": "full"},
        "t10k-images-idx3-ubyte.gz": {"9fb629c4189551a2d022fa330f9573f3": "full",
                                      "2646ac647ad5339dbf082846283269ea": "full"},
        "t10k-labels-idx1-ubyte.gz": {"ec29112dd5afa0611ce80d1b7f02629c": "full",
                                      "27ae3e4e09519cfbb04c329615203637": "full"},
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": {"8d4fb7e6c68d591d4c3dfef9ec88bf0d": "full",
                                       "f4a8712d7a061bf5bd6d2ca38dc4d50a": "full"},
        "train-labels-idx1-ubyte.gz": {"25c81989df183df01b3e8a0aad5dffbe": "full",
                                       "9018921c3c673c538a1fc5bad174d6f9": "full"},
        "t10k-images-idx3-ubyte.gz": {"bef4ecab320f06d8554ea6380940ec79": "full",
                                      "8181f5470baa50b63fa0f6fddb340f0a": "full"},
        "t10k-labels-idx1-ubyte.gz": {"bb300cfdad3c16e7a12a480ee83cd310": "full",
                                      "15d484375f8d13e6eb1aabb0c3f46965": "full"},
    },
    "cifar-10-batches-py": {
        "data_batch_1": {"c99cafc152244af753f735de768cd75f": "full",
                         "f209a538ab9e89d1557b2cbcd55f198d": "subset"},
        "data_batch_2": {"d4bba439e000b95fd0a9bffe97cbabec": "full",
                         "6768f68bb726d50ff74e5a7e4ea8439e": "subset"},
        "data_batch_3": {"54ebc095f3ab1f0389bbae665268c751": "full",
                         "ca9cb46a4010c8fb6f480d501a764826": "subset"},
        "data_batch_4": {"634d18415352ddfa80567beed471001a": "full",
                         "288d54774abba3b426d8cf3988b6fd2f": "subset"},
        "data_batch_5": {"482c414d41f54cd18b22e5b47cb7c3cb": "full",
                         "77deea15f142a62e73e3fea326c21dc0": "subset"},
        "test_batch": {"40351d587109b95175f43aff81a1287e": "full",
                       "6f90e0a682f529a09d3f0e597be0ce28": "subset"},
    },
}

# Where each dataset's files sit inside a data directory (first match wins).
_SUBDIRS = {
    "mnist": ("mnist", "MNIST/raw", "."),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw", "."),
    "cifar-10-batches-py": ("cifar10/cifar-10-batches-py", "cifar10-subset/cifar-10-batches-py",
                            "cifar-10-batches-py"),
}

_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar-10-batches-py": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
_CIFAR_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel normalisation of CIFAR-10 images scaled to [0, 1]."""


@dataclass(frozen=True)
class Dataset:
    """Images (uint8, N×H×W or N×C×H×W), labels (int64, N) and where they came from."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    variant: str
    source: Path

    def __iter__(self):
        """Unpack as ``images, labels = load_mnist("train")``."""
        return iter((self.images, self.labels))

    def describe(self) -> str:
        """One line naming the dataset, split, size and origin, for outputs that use it."""
        return (f"{self.name} {self.split} ({self.variant}, {len(self.labels):,} images) "
                f"from {self.source}")


# ----------------------------------------------------------------------------- locating files


def cache_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/pdeeos`` or ``~/.cache/pdeeos``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pdeeos"


def search_dirs(root: Path | str | None = None) -> list[Path]:
    """The data directories searched, in order (only ``root`` when it is given)."""
    if root is not None:
        return [Path(root)]
    env = os.environ.get(DATA_ENV)
    dirs = [Path(env)] if env else []
    return dirs + [_REPO_ROOT.parent / "shared" / "data", Path("/usr/share/datasets"), cache_dir()]


def md5sum(path: Path) -> str:
    """The md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _variant(dataset: str, path: Path) -> str | None:
    """The variant of a valid copy of ``path`` (``None`` if its md5 is unknown)."""
    known = _MD5[dataset][path.name]
    found = known.get(md5sum(path))
    if found is None and path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            try:
                found = known.get(hashlib.md5(fh.read()).hexdigest())
            except (OSError, EOFError):
                return None
    return found


def _candidates(dataset: str, dirs: list[Path]) -> list[Path]:
    return [d / sub for d in dirs for sub in _SUBDIRS[dataset]]


def locate(dataset: str, files: list[str], root: Path | str | None = None,
           download: bool = True) -> tuple[Path, str]:
    """The first directory holding valid copies of all ``files`` of ``dataset``, and its variant.

    ``ValueError`` naming the file, its official md5 and the places searched when there is none.
    """
    if dataset not in _MD5:
        raise ValueError(f"dataset must be one of {', '.join(_MD5)}; got {dataset!r}")
    places = _candidates(dataset, search_dirs(root))
    problem = ""
    for place in places:
        variants = set()
        for name in files:
            path = place / name
            variant = _variant(dataset, path) if path.is_file() else None
            if variant is None:
                problem = problem or (f"{name}: " + ("md5 mismatch" if path.is_file() else "missing")
                                      + f" in {place}")
                break
            variants.add(variant)
        else:
            return place, "subset" if "subset" in variants else "full"
    if download and root is None:
        place = _download(dataset)
        if place is not None:
            return locate(dataset, files, place.parent if dataset == "cifar-10-batches-py" else place,
                          download=False)
    expected = ", ".join(f"{name} (md5 {next(iter(_MD5[dataset][name]))})" for name in files)
    raise ValueError(
        f"dataset {dataset!r}: no valid copy of {expected}; first problem: {problem}; "
        f"looked in {', '.join(str(p) for p in places)}"
        + ("" if download and root is None else " (download disabled)")
    )


def _download(dataset: str) -> Path | None:
    """Download ``dataset`` into the cache; ``None`` when offline."""
    target = cache_dir() / dataset
    target.mkdir(parents=True, exist_ok=True)
    try:
        if dataset == "cifar-10-batches-py":
            tar = cache_dir() / "cifar-10-python.tar.gz"
            urllib.request.urlretrieve(_URLS[dataset], tar)
            if md5sum(tar) != _CIFAR_TAR_MD5:
                raise ValueError(f"downloaded {tar} has md5 {md5sum(tar)}, expected {_CIFAR_TAR_MD5}")
            with tarfile.open(tar) as archive:
                archive.extractall(cache_dir(), filter="data")
        else:
            for name in _MD5[dataset]:
                urllib.request.urlretrieve(_URLS[dataset] + name, target / name)
    except OSError:
        return None
    return target


# ----------------------------------------------------------------------------- readers


def _read_idx(path: Path) -> np.ndarray:
    """An idx array (magic 0x0000_08_dims, big-endian sizes, uint8 data) from a gzip file."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, found {data.size} bytes")
    return data.reshape(shape)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    return split


def _load_idx_dataset(dataset: str, split: str, root: Path | str | None, download: bool) -> Dataset:
    _check_split(split)
    names = [_IDX_FILES[(split, "images")], _IDX_FILES[(split, "labels")]]
    place, variant = locate(dataset, names, root, download)
    images = torch.from_numpy(_read_idx(place / names[0]).copy())
    labels = torch.from_numpy(_read_idx(place / names[1]).astype(np.int64))
    return Dataset(dataset, split, images, labels, variant, place)


def load_mnist(split: str = "train", root: Path | str | None = None,
               download: bool = True) -> Dataset:
    """MNIST ``split`` ('train' or 'test'): images uint8 N×28×28, labels int64 N."""
    return _load_idx_dataset("mnist", split, root, download)


def load_fashion_mnist(split: str = "train", root: Path | str | None = None,
                       download: bool = True) -> Dataset:
    """Fashion-MNIST ``split`` ('train' or 'test'): images uint8 N×28×28, labels int64 N."""
    return _load_idx_dataset("fashion-mnist", split, root, download)


def load_cifar10(split: str = "train", root: Path | str | None = None,
                 download: bool = True) -> Dataset:
    """CIFAR-10 ``split``: images uint8 N×3×32×32, labels int64 N (variant 'full' or 'subset')."""
    _check_split(split)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    place, variant = locate("cifar-10-batches-py", names, root, download)
    images, labels = [], []
    for name in names:
        with open(place / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Dataset("cifar10", split, torch.from_numpy(np.concatenate(images)),
                   torch.from_numpy(np.concatenate(labels)), variant, place)


LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
"""The loaders by dataset name, as experiment configs name them."""


def load(name: str, split: str = "train", root: Path | str | None = None,
         download: bool = True) -> Dataset:
    """The loader of dataset ``name`` (a key of :data:`LOADERS`) applied to ``split``."""
    if name not in LOADERS:
        raise ValueError(f"dataset must be one of {', '.join(LOADERS)}; got {name!r}")
    return LOADERS[name](split, root, download)


# ----------------------------------------------------------------------------- on-device tensors


def to_float(images: torch.Tensor, *, dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images as normalised float N×C×H×W on ``device`` (CIFAR statistics for 3 channels,
    mean 0.5 / std 0.5 for one channel)."""
    x = images.to(device=device, dtype=dtype) / 255.0
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.shape[1] == 3:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        mean, std = (0.5,), (0.5,)
    mean_t = torch.tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def augment(batch: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` zero pixels and random horizontal flip of an N×C×H×W batch.

    All randomness comes from ``generator`` (on the batch's device), so two calls from equal
    generator states give bit-identical batches.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    n, _, h, w = batch.shape
    dev = batch.device
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])  # n×h
    cols = dx[:, None] + torch.arange(w, device=dev)[None, :]  # n×w
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
