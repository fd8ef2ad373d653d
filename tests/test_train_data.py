"""The train command's data: built-in shapes, user files, IDX, scikit-learn's digits and the
MNIST-family downloads (served from files the tests write)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import struct

import pytest
import torch

from vae_ext import train
from vae_ext.train import dataset, downloads, files, idx, shapes, sources
from vae_ext.train.distributed import Processes

# --------------------------------------------------------------------------- built-in shapes


def test_shapes_are_deterministic_and_span_their_factors():
    first, again, other = (
        shapes.shapes_dataset(300, seed=5),
        shapes.shapes_dataset(300, seed=5),
        shapes.shapes_dataset(300),
    )
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.images.shape == (300, 1, 32, 32) and first.images.dtype == torch.float32
    assert first.images.min() == 0 and first.images.max() == 1
    assert set(first.factors["shape"].tolist()) == {0, 1, 2, 3}
    assert (
        first.factors["scale"].min() >= shapes.SCALE_RANGE[0] and first.factors["scale"].max() <= shapes.SCALE_RANGE[1]
    )
    border = torch.cat([first.images[..., 0, :], first.images[..., -1, :], first.images[..., 0], first.images[..., -1]])
    assert border.max() < 0.5  # shapes stay inside the frame (anti-aliased edges may touch it)


@pytest.mark.parametrize(
    "shape_id, area",
    [
        (0, 1.4**2),  # square of half side 0.7
        (1, math.pi * 0.55),  # ellipse with semi-axes 1 and 0.55
        (2, 3 * math.sqrt(3) / 4),  # equilateral triangle of circumradius 1
        (3, 1.05**2 + math.pi * 0.525**2),  # heart: diamond of side 1.05 and two half discs
    ],
)
def test_rendered_area_matches_the_shape(shape_id, area):
    n, size, scale = 16, 64, 0.3
    factors = {
        "shape": torch.full((n,), shape_id),
        "scale": torch.full((n,), scale),
        "rotation": torch.linspace(0, 2 * math.pi, n),
        "pos_x": torch.full((n,), 0.5),
        "pos_y": torch.full((n,), 0.5),
    }
    pixels = shapes.render_shapes(**factors, size=size).sum(dim=(1, 2, 3))
    expected = area * (scale * size) ** 2
    torch.testing.assert_close(pixels, torch.full((n,), expected), rtol=0.02, atol=0)


def test_shapes_differ_between_classes():
    n = 4
    factors = {
        "shape": torch.arange(n),
        "scale": torch.full((n,), 0.3),
        "rotation": torch.zeros(n),
        "pos_x": torch.full((n,), 0.5),
        "pos_y": torch.full((n,), 0.5),
    }
    rendered = shapes.render_shapes(**factors).reshape(n, -1)
    distances = torch.cdist(rendered, rendered)
    assert distances[~torch.eye(n, dtype=torch.bool)].min() > 2.0


# --------------------------------------------------------------------------- file loaders


def _write_idx(path, tensor, type_code, opener=open):
    raw = tensor.contiguous().view(torch.uint8).reshape(-1, tensor.element_size()).flip(1).flatten()  # big-endian
    header = struct.pack(">BBBB", 0, 0, type_code, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    with opener(path, "wb") as f:
        f.write(header + bytes(raw.tolist()))


def test_idx_files_read_back_exactly(tmp_path):
    pixels = torch.randint(0, 256, (7, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    _write_idx(tmp_path / "a-images-idx3-ubyte", pixels, 0x08)
    assert torch.equal(idx.read_idx(tmp_path / "a-images-idx3-ubyte"), pixels)
    values = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    _write_idx(tmp_path / "f.idx.gz", values, 0x0D, gzip.open)
    assert torch.equal(idx.read_idx(tmp_path / "f.idx.gz"), values)
    shorts = torch.tensor([[1, -2, 300]], dtype=torch.int16)
    _write_idx(tmp_path / "s.idx", shorts, 0x0B)
    assert torch.equal(idx.read_idx(tmp_path / "s.idx"), shorts)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(tmp_path / "bad.idx")


def test_mnist_folder_prefers_the_training_images(tmp_path):
    train_pixels = torch.full((3, 6, 6), 255, dtype=torch.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_pixels, 0x08, gzip.open)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", torch.zeros(2, 6, 6, dtype=torch.uint8), 0x08, gzip.open)
    dataset = files.load_file(tmp_path)
    assert dataset.images.shape == (3, 1, 6, 6) and torch.all(dataset.images == 1.0)


@pytest.mark.parametrize(
    "raw, shape",
    [
        (torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16), (2, 1, 4, 4)),  # flat square images
        (torch.rand(2, 10), (2, 10)),  # flat vectors
        (torch.rand(2, 5, 6, 3), (2, 3, 5, 6)),  # channels last
        (torch.rand(2, 3, 5, 6), (2, 3, 5, 6)),
    ],
)
def test_to_images_shapes_and_range(raw, shape):
    x = dataset.to_images(raw)
    assert x.shape == shape and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert x.max() > 0.5


def test_idx_header_and_body_must_agree(tmp_path):
    _write_idx(tmp_path / "ok.idx", torch.zeros(2, 3, dtype=torch.uint8), 0x08)
    data = (tmp_path / "ok.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(data[:-1])
    with pytest.raises(ValueError, match=r"says shape \(2, 3\) but holds 5 bytes"):
        idx.read_idx(tmp_path / "short.idx")
    (tmp_path / "notgz.idx.gz").write_bytes(data)
    with pytest.raises(ValueError, match="cannot read it as an IDX file"):
        idx.read_idx(tmp_path / "notgz.idx.gz")


def test_shapes_carry_their_class_labels():
    data = shapes.shapes_dataset(50, seed=2)
    assert torch.equal(data.labels, data.factors["shape"]) and data.label_names == shapes.SHAPE_NAMES
    part = data.subset(slice(10, 20))
    assert torch.equal(part.labels, data.labels[10:20]) and part.label_names == shapes.SHAPE_NAMES


def test_digits_are_scikit_learns_handwritten_digits():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    digits = sources.load_dataset("digits")
    reference = load_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.dtype == torch.float32
    assert digits.images.min() == 0 and digits.images.max() == 1  # 17 grey levels, 0..16
    torch.testing.assert_close(digits.images[:, 0] * 16, torch.as_tensor(reference.images, dtype=torch.float32))
    assert digits.labels.tolist() == reference.target.tolist() and len(digits.label_names) == 10


# --------------------------------------------------------------------------- MNIST-family downloads


def _fake_mnist(folder, n_train=12, n_test=5):
    """The four standard files, gzipped IDX, with recognisable pixels; returns their MD5 sums."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(11)
    contents = {
        "train-images-idx3-ubyte.gz": (torch.randint(0, 256, (n_train, 28, 28), generator=generator), 0x08),
        "train-labels-idx1-ubyte.gz": (torch.arange(n_train) % 10, 0x08),
        "t10k-images-idx3-ubyte.gz": (torch.randint(0, 256, (n_test, 28, 28), generator=generator), 0x08),
        "t10k-labels-idx1-ubyte.gz": (torch.arange(n_test) % 10, 0x08),
    }
    sums, tensors = {}, {}
    for name, (tensor, code) in contents.items():
        tensors[name] = tensor.to(torch.uint8)
        _write_idx(folder / name, tensors[name], code, gzip.open)
        sums[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return sums, tensors


@pytest.fixture
def served_mnist(tmp_path, monkeypatch):
    """MNIST as a file:// mirror holding files the test wrote, with their true MD5 sums."""
    served = tmp_path / "mirror"
    sums, tensors = _fake_mnist(served)
    source = downloads.Source(mirrors=(served.as_uri() + "/",), md5=sums, label_names=tuple("0123456789"))
    monkeypatch.setitem(downloads.SOURCES, "mnist", source)
    return served, tensors


def test_mnist_downloads_verifies_and_caches(tmp_path, served_mnist, monkeypatch):
    served, tensors = served_mnist
    cache = tmp_path / "cache"
    data = sources.load_dataset("mnist", cache_dir=str(cache))
    assert data.images.shape == (12, 1, 28, 28) and data.test.images.shape == (5, 1, 28, 28)
    assert torch.equal((data.images[:, 0] * 255).round().to(torch.uint8), tensors["train-images-idx3-ubyte.gz"])
    assert data.labels.tolist() == [i % 10 for i in range(12)] and data.test.labels.tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(downloads.FILES)
    train, test = dataset.train_test_split(data, 0.5)
    assert train is data and test is data.test  # the standard split, not a random one

    # A second load reads the verified cache: the mirror may be gone.
    for path in served.iterdir():
        path.unlink()
    again = sources.load_dataset("mnist", cache_dir=str(cache))
    assert torch.equal(again.images, data.images)


def test_mnist_checksum_mismatch_is_refused_and_not_kept(tmp_path, served_mnist, monkeypatch):
    source = downloads.SOURCES["mnist"]
    wrong = {**source.md5, "t10k-labels-idx1-ubyte.gz": "0" * 32}
    monkeypatch.setitem(downloads.SOURCES, "mnist", downloads.Source(source.mirrors, wrong, source.label_names))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: MD5 [0-9a-f]{32}, expected 0{32}"):
        sources.load_dataset("mnist", cache_dir=str(cache))
    assert not (cache / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_mnist_offline_says_so(tmp_path, monkeypatch):
    unreachable = downloads.Source(("http://127.0.0.1:9/",), downloads.SOURCES["mnist"].md5, ())
    monkeypatch.setitem(downloads.SOURCES, "mnist", unreachable)
    with pytest.raises(ValueError, match=r"(?s)cannot get train-images-idx3-ubyte.gz \(is this machine offline\?\)"):
        sources.load_dataset("mnist", cache_dir=str(tmp_path))


def test_the_published_checksums_are_the_known_ones():
    # MD5 of the standard files as published with the data sets (and listed by torchvision).
    assert downloads.SOURCES["mnist"].md5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert downloads.SOURCES["fashion-mnist"].md5["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    for source in downloads.SOURCES.values():
        assert sorted(source.md5) == sorted(downloads.FILES) and len(set(source.md5.values())) == 4


def test_training_on_mnist_uses_its_test_split(tmp_path, served_mnist, capsys):
    out = tmp_path / "run"
    argv = ["--data", "mnist", "--data-dir", str(tmp_path / "cache"), "--epochs", "1", "--batch-size", "4"]
    argv += ["--hidden", "32", "--iwae-k", "2", "--quiet", "--out", str(out)]
    assert train.main(argv) == 0
    assert "mnist" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == {"name": "mnist", "train": 12, "test": 5}


def test_a_download_with_a_wrong_md5_never_touches_the_verified_copy(tmp_path, served_mnist):
    served, _ = served_mnist
    cache = tmp_path / "cache"
    paths = downloads.download("mnist", str(cache))
    name = "t10k-labels-idx1-ubyte.gz"
    good = (cache / "mnist" / name).read_bytes()
    (served / name).write_bytes(b"other bytes")  # a mirror serving something else
    expected = downloads.SOURCES["mnist"].md5[name]
    assert (
        downloads._fetch_verified_copy((served / name).as_uri(), paths[name], expected)
        == hashlib.md5(b"other bytes").hexdigest()
    )
    assert (cache / "mnist" / name).read_bytes() == good
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(downloads.FILES)  # no temporary left


def test_each_download_writes_a_temporary_file_of_its_own(tmp_path, served_mnist, monkeypatch):
    """Two processes downloading into one cache (as torchrun's ranks did) never share a file."""
    made = []
    mkstemp = downloads.tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, path = mkstemp(*args, **kwargs)
        made.append(path)
        return fd, path

    monkeypatch.setattr(downloads.tempfile, "mkstemp", recording_mkstemp)
    for _ in range(2):  # twice into one folder, as two ranks would
        downloads.download("mnist", str(tmp_path / "shared"))
        for path in (tmp_path / "shared" / "mnist").iterdir():
            path.unlink()
    assert len(made) == 2 * len(downloads.FILES) and len(set(made)) == len(made)
    assert all(os.path.dirname(p) == str(tmp_path / "shared" / "mnist") and p.endswith(".part") for p in made)


class _Rank:
    """A process of a two-process job, the other rank's flag given (no process group needed)."""

    def __init__(self, rank, other_failed=False):
        self.rank, self.world_size, self.device = rank, 2, torch.device("cpu")
        self.other_failed = other_failed

    distributed = property(lambda self: True)
    is_main = property(lambda self: self.rank == 0)

    def all_max(self, tensor):
        return tensor.clamp(min=float(self.other_failed))

    main_first = Processes.main_first


def test_under_torchrun_rank_zero_downloads_and_the_others_wait(tmp_path, served_mnist):
    calls = []

    def work():
        calls.append("downloaded")

    _Rank(1).main_first(work)
    assert calls == []  # rank 1 waits (the flag is the barrier) and does not download
    _Rank(0).main_first(work)
    assert calls == ["downloaded"]
    with pytest.raises(ValueError, match="rank 0 could not prepare the data"):
        _Rank(1, other_failed=True).main_first(work)

    def offline():
        raise ValueError("offline")

    with pytest.raises(ValueError, match="offline"):
        _Rank(0).main_first(offline)

    # load_data: rank 0 downloads, then every rank reads the verified cache.
    args = train.parse_args(["--data", "mnist", "--data-dir", str(tmp_path / "cache")])
    train_set, test_set = train.load_data(args, _Rank(0))
    assert len(train_set) == 12 and len(test_set) == 5
