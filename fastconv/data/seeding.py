"""Where random transforms get their random numbers, so that augmentation is reproducible.

A random transform (`RandomTransform` subclass) called as ``t(img, rng)`` picks its generator in
this order:

1. the ``rng`` argument, when given (a ``numpy.random.Generator`` or an int seed);
2. the per-sample generator of the `DataLoader` that is loading the sample, when the loader was
   given a ``seed``: ``sample_generator(seed, epoch, index)``, one fresh generator per sample,
   shared by all transforms applied to that sample (a `Compose` draws from it in order);
3. the transform's own generator, built from the ``seed`` it was constructed with.

Rule 2 makes an epoch of augmented batches a pure function of ``(seed, epoch)``: it does not depend
on the order samples are loaded in, on ``prefetch`` (the loading thread), on ``batch_size`` or on
earlier epochs, and epoch ``e`` can be replayed alone (`DataLoader.set_epoch`). The shuffle order
of an epoch comes from ``epoch_generator(seed, epoch)``, an independent stream.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import numpy as np

SeedLike = Union[None, int, np.random.Generator]

_local = threading.local()


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    """The generator a seeded `DataLoader` shuffles epoch ``epoch`` with.

    Args:
        seed: the loader's seed (a non-negative int).
        epoch: the epoch number (0 for the first pass).

    Returns:
        A ``numpy.random.Generator`` seeded from ``SeedSequence(seed, spawn_key=(epoch,))``.

    Example:
        >>> a, b = epoch_generator(0, 1).permutation(4), epoch_generator(0, 1).permutation(4)
        >>> bool((a == b).all())
        True
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch,)))


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator random transforms draw from for sample ``index`` of epoch ``epoch``.

    Args:
        seed: the loader's seed (a non-negative int).
        epoch: the epoch number.
        index: the index of the sample in the dataset the loader iterates.

    Returns:
        A ``numpy.random.Generator`` seeded from ``SeedSequence(seed, spawn_key=(epoch, index))``;
        calling a random transform with it reproduces what the loader produced for that sample.

    Example:
        >>> from fastconv.data import RandomHorizontalFlip
        >>> img = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
        >>> a = RandomHorizontalFlip()(img, sample_generator(7, 0, 3))
        >>> b = RandomHorizontalFlip()(img, sample_generator(7, 0, 3))
        >>> bool((a == b).all())
        True
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, index)))


@contextmanager
def sample_seed(seed: Optional[int], epoch: int, index: int) -> Iterator[None]:
    """Within this block (on this thread), random transforms called without ``rng`` draw from
    ``sample_generator(seed, epoch, index)``, created on first use. ``seed=None`` does nothing.
    Used by `DataLoader` around each ``dataset[index]``."""
    if seed is None:
        yield
        return
    previous = getattr(_local, "pending", None), getattr(_local, "rng", None)
    _local.pending, _local.rng = (seed, epoch, index), None
    try:
        yield
    finally:
        _local.pending, _local.rng = previous


def current_generator() -> Optional[np.random.Generator]:
    """The per-sample generator of the `sample_seed` block this thread is in, or None."""
    pending = getattr(_local, "pending", None)
    if pending is None:
        return None
    if _local.rng is None:
        _local.rng = sample_generator(*pending)
    return _local.rng


def as_generator(rng: SeedLike, who: str) -> Optional[np.random.Generator]:
    """``rng`` as a Generator (an int seeds a new one; None stays None); anything else is a
    TypeError naming ``who``."""
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{who}: rng must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")
