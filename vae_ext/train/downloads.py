"""MNIST and Fashion-MNIST: the standard IDX files, downloaded once into a cache folder and
checked against their published MD5 sums before use."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

import torch

from .dataset import Dataset, to_images
from .idx import read_idx

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class Source:
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # the published MD5 of each file in FILES (torchvision lists the same)
    label_names: tuple[str, ...]


SOURCES = {
    "mnist": Source(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5=dict(
            zip(
                FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            )
        ),  # fmt: skip
        label_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": Source(
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        md5=dict(
            zip(
                FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            )
        ),  # fmt: skip
        label_names=("top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    ),
}
TIMEOUT_S = 30


def default_cache_dir() -> str:
    """$VAE_EXT_DATA, else $XDG_CACHE_HOME/vae_ext, else ~/.cache/vae_ext."""
    if os.environ.get("VAE_EXT_DATA"):
        return os.environ["VAE_EXT_DATA"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "vae_ext")


def md5_of(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # an integrity check against the published sums
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_verified_copy(url: str, target: str, expected: str) -> str | None:
    """Downloads ``url`` into a temporary file of its own next to ``target`` and moves it onto
    ``target`` only when its MD5 is ``expected`` (a copy there is never replaced by bad bytes);
    the MD5 found when it is not. OSError / URLError when the download fails."""
    fd, partial = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".part", dir=os.path.dirname(target))
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, os.fdopen(fd, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
        actual = md5_of(partial)
        if actual != expected:
            return actual
        os.replace(partial, target)
        return None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def fetch_verified(name: str, file_name: str, folder: str) -> str:
    """The path of ``file_name`` of data set ``name`` in ``folder``: downloaded (first mirror that
    answers) unless a copy with the right MD5 is already there. ValueError when offline or when
    no mirror gives the right bytes."""
    source = SOURCES[name]
    target = os.path.join(folder, file_name)
    expected = source.md5[file_name]
    if os.path.exists(target) and md5_of(target) == expected:
        return target
    os.makedirs(folder, exist_ok=True)
    failures = []
    for mirror in source.mirrors:
        try:
            actual = _fetch_verified_copy(mirror + file_name, target, expected)
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{mirror}{file_name}: {getattr(error, 'reason', error)}")
            continue
        if actual is None:
            return target
        failures.append(f"{mirror}{file_name}: MD5 {actual}, expected {expected}")
    raise ValueError(
        f"--data {name}: cannot get {file_name} (is this machine offline?). Tried:\n  "
        + "\n  ".join(failures)
        + f"\nPut the standard {file_name} into {folder} by hand, or use --data shapes / digits."
    )


def _folder(name: str, cache_dir: str | None) -> str:
    return os.path.join(cache_dir or default_cache_dir(), name)


def download(name: str, cache_dir: str | None = None) -> dict[str, str]:
    """Every file of data set ``name`` in the cache (downloaded when missing or damaged): their paths."""
    folder = _folder(name, cache_dir)
    return {file_name: fetch_verified(name, file_name, folder) for file_name in FILES}


def load_mnist_like(name: str, cache_dir: str | None = None) -> Dataset:
    """The standard 60000 / 10000 train / test split as one Dataset with ``test`` set."""
    paths = download(name, cache_dir)
    images = [read_idx(paths[f]) for f in FILES[0::2]]
    labels = [read_idx(paths[f]).to(torch.int64) for f in FILES[1::2]]
    for split, x, y in zip(("train", "t10k"), images, labels):
        if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"--data {name}: {split} images {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    names = SOURCES[name].label_names
    train, test = (Dataset(to_images(x, name), name, labels=y, label_names=names) for x, y in zip(images, labels))
    train.test = test
    return train
