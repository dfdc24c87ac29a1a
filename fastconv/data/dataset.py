"""Datasets: anything with ``__len__`` and ``__getitem__(index)``, plus in-memory arrays, subsets
and splits."""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np


@runtime_checkable
class Dataset(Protocol):
    """What `DataLoader` needs: a length and integer indexing from 0 to ``len - 1``.

    ``dataset[i]`` returns one sample, normally a tuple ``(input, target, ...)`` of numpy arrays
    or numbers; the loader stacks each field across a batch.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def check_dataset(dataset, who: str) -> None:
    """TypeError naming ``who`` unless ``dataset`` has ``__len__`` and ``__getitem__``."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{who}: dataset must have __len__ and __getitem__, got "
                        f"{type(dataset).__name__}")


class ArrayDataset:
    """Samples are the rows of equally long arrays (like ``torch.utils.data.TensorDataset``).

    ``dataset[i]`` is ``(arrays[0][i], arrays[1][i], ...)`` with ``transform`` applied to the
    first field and ``target_transform`` to the second. Without transforms, `DataLoader`
    gathers whole batches by fancy indexing instead of sample by sample.

    Args:
        *arrays: one or more array-likes with the same first dimension, e.g. images (N, C, H, W)
            and labels (N,).
        transform: callable applied to ``arrays[0][i]`` (e.g. a `Compose` of CHW transforms).
        target_transform: callable applied to ``arrays[1][i]``.

    Example:
        >>> ds = ArrayDataset(np.zeros((10, 1, 8, 8), np.float32), np.arange(10))
        >>> len(ds), int(ds[3][1])
        (10, 3)
    """

    def __init__(self, *arrays, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None):
        if not arrays:
            raise ValueError("ArrayDataset: need at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        for i, a in enumerate(self.arrays):
            if a.ndim == 0 or len(a) != len(self.arrays[0]):
                raise ValueError(f"ArrayDataset: all arrays need the same first dimension; "
                                 f"arrays[0] has {len(self.arrays[0])} rows but arrays[{i}] "
                                 f"has shape {a.shape}")
        if target_transform is not None and len(self.arrays) < 2:
            raise ValueError("ArrayDataset: target_transform needs a second (target) array")
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> Tuple:
        sample = [a[index] for a in self.arrays]
        if self.transform is not None:
            sample[0] = self.transform(sample[0])
        if self.target_transform is not None:
            sample[1] = self.target_transform(sample[1])
        return tuple(sample)


class Subset:
    """The samples of ``dataset`` at ``indices``, in that order.

    Args:
        dataset: any dataset.
        indices: integer indices into ``dataset`` (negative ones count from the end).

    Example:
        >>> Subset(ArrayDataset(np.arange(5)), [4, 0])[0][0].item()
        4
    """

    def __init__(self, dataset, indices: Sequence[int]):
        check_dataset(dataset, "Subset")
        indices = np.asarray(indices)
        n = len(dataset)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(f"Subset: indices must be a 1-D sequence of ints, got "
                             f"{indices.dtype} array of shape {indices.shape}")
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"Subset: indices must lie in [-{n}, {n}) for a dataset of "
                             f"{n} samples, got values from {indices.min()} to {indices.max()}")
        self.dataset = dataset
        self.indices = np.where(indices < 0, indices + n, indices).astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


def random_split(dataset, lengths: Sequence[float], seed: Optional[int] = None) -> List[Subset]:
    """Split a dataset into non-overlapping random subsets.

    Args:
        dataset: any dataset.
        lengths: sizes summing to ``len(dataset)``, or fractions summing to 1 (each gets
            ``floor(fraction * n)`` samples, the remainder going one by one to the first
            subsets, as ``torch.utils.data.random_split``).
        seed: seed of the permutation (None: fresh entropy).

    Returns:
        list of `Subset`, one per length.

    Example:
        >>> train, val = random_split(ArrayDataset(np.arange(10)), [0.8, 0.2], seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    check_dataset(dataset, "random_split")
    n = len(dataset)
    values = [float(v) for v in lengths]
    if values and all(v == int(v) >= 0 for v in values) and sum(values) == n:
        sizes = [int(v) for v in values]
    elif values and all(0 <= v <= 1 for v in values) and math.isclose(sum(values), 1.0):
        sizes = [math.floor(v * n) for v in values]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        raise ValueError(f"random_split: lengths must be non-negative ints summing to the "
                         f"dataset's length ({n}) or fractions summing to 1, got {list(lengths)}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + sizes)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def stratified_split(labels, test_size: float = 0.2, seed: Optional[int] = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of a train/test split that keeps each class's share (stratified).

    Each class with ``n_c`` samples puts ``round(test_size * n_c)`` of them, chosen at random,
    into the test set; both index arrays are then shuffled.

    Args:
        labels: 1-D array of class labels (any values that ``np.unique`` can sort).
        test_size: fraction of each class for the test set, in [0, 1).
        seed: seed of the draw (None: fresh entropy); the same seed gives the same split.

    Returns:
        (train_indices, test_indices): int64 arrays that together cover ``range(len(labels))``.

    Example:
        >>> train, test = stratified_split(np.repeat([0, 1], 5), test_size=0.4, seed=0)
        >>> len(train), len(test)
        (6, 4)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"stratified_split: labels must be 1-D, got shape {labels.shape}")
    if not 0 <= test_size < 1:
        raise ValueError(f"stratified_split: test_size must be in [0, 1), got {test_size!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_size * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return (rng.permutation(np.concatenate(train)).astype(np.int64),
            rng.permutation(np.concatenate(test)).astype(np.int64))
