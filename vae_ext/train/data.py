"""The train command's data: --data and --limit to a (train, test) pair of data sets."""

from __future__ import annotations

from .dataset import Dataset, train_test_split
from .downloads import SOURCES, download
from .sources import load_dataset


def load_data(args, procs=None) -> tuple[Dataset, Dataset]:
    """(train, test) data sets after --limit (which caps a source's own test split in proportion).
    Under torchrun a data set to download is downloaded by rank 0 while the others wait."""
    if procs is not None and procs.distributed and args.data in SOURCES:
        procs.main_first(lambda: download(args.data, args.data_dir))
    n_shapes = args.shapes if args.limit is None else min(args.shapes, args.limit)
    dataset = load_dataset(args.data, seed=args.seed, size=args.size, n=n_shapes, cache_dir=args.data_dir)
    if args.limit is not None:
        test = dataset.test
        dataset = dataset.subset(slice(0, args.limit))
        if test is not None:
            dataset.test = test.subset(slice(0, max(1, round(args.limit * args.test_fraction))))
    if args.arch == "conv" and len(dataset.sample_shape) != 3:
        raise ValueError(f"--arch conv needs image data [N, C, H, W], got samples of shape {dataset.sample_shape}")
    return train_test_split(dataset, args.test_fraction, seed=args.seed)
