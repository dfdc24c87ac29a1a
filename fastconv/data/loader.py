"""`DataLoader`: batches of stacked numpy arrays from a dataset, shuffled reproducibly, with the
next batches loaded on one background thread while the current one is used."""
from __future__ import annotations

import queue
import sys
import threading
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from fastconv.data.dataset import ArrayDataset, Subset, check_dataset
from fastconv.data.seeding import epoch_generator, sample_seed


def collate(samples: Sequence) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
    """Stack samples into a batch.

    A sample that is a tuple or list gives a tuple with one stacked array per field; any other
    sample (an array or a number) gives one stacked array. Arrays keep their dtype; integer
    scalars (class labels) become int64 and float scalars float32.

    Args:
        samples: non-empty sequence of samples of the same structure and shapes.

    Returns:
        an array (B, ...) or a tuple of them.

    Example:
        >>> img = np.zeros((1, 2, 2), np.float32)
        >>> x, y = collate([(img, 3), (img, 5)])
        >>> x.shape, y.dtype
        ((2, 1, 2, 2), dtype('int64'))
    """
    first = samples[0]
    if not isinstance(first, (tuple, list)):
        return _stack([s for s in samples], "sample")
    for i, s in enumerate(samples):
        if not isinstance(s, (tuple, list)) or len(s) != len(first):
            raise ValueError(f"DataLoader: samples must all have {len(first)} fields like "
                             f"the first one; sample {i} of the batch is {type(s).__name__}"
                             f"{f' of length {len(s)}' if isinstance(s, (tuple, list)) else ''}")
    return tuple(_stack([s[k] for s in samples], f"field {k}") for k in range(len(first)))


def _stack(values: List, what: str) -> np.ndarray:
    arrays = [np.asarray(v) for v in values]
    for i, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(f"DataLoader: cannot stack {what} of the batch: sample {i} has "
                             f"shape {a.shape} but sample 0 has {arrays[0].shape}")
    return _label_dtype(np.stack(arrays), arrays[0].ndim == 0)


def _label_dtype(batch: np.ndarray, from_scalars: bool) -> np.ndarray:
    """Batches of integer scalars become int64 and of float scalars float32."""
    if from_scalars and batch.dtype.kind in "iu":
        return batch.astype(np.int64, copy=False)
    if from_scalars and batch.dtype.kind == "f":
        return batch.astype(np.float32, copy=False)
    return batch


def _plain_arrays(dataset) -> Optional[Tuple[Tuple[np.ndarray, ...], np.ndarray]]:
    """(arrays, index map) when ``dataset`` is an `ArrayDataset` without transforms, possibly
    inside `Subset`s, so that a batch is ``tuple(a[index_map[batch]] for a in arrays)``."""
    index_map = None
    while isinstance(dataset, Subset):
        index_map = dataset.indices if index_map is None else dataset.indices[index_map]
        dataset = dataset.dataset
    if (type(dataset) is ArrayDataset and dataset.transform is None
            and dataset.target_transform is None):
        return dataset.arrays, (np.arange(len(dataset)) if index_map is None else index_map)
    return None


class DataLoader:
    """Iterate over a dataset in batches of stacked numpy arrays.

    Each pass (``for batch in loader``) is one epoch: the loader's ``epoch`` counter is used and
    then incremented. With ``shuffle``, the order of epoch ``e`` is a permutation drawn from
    ``epoch_generator(seed, e)``: reproducible for a given seed, different every epoch. With a
    seed, random transforms applied while loading sample ``i`` draw from
    ``sample_generator(seed, e, i)`` (see `fastconv.data.seeding`), so augmented batches are
    reproducible too, whatever ``prefetch`` is. ``seed=None`` takes fresh entropy for the
    shuffle and leaves transforms to their own generators; a ``numpy.random.Generator`` as seed
    supplies a new base seed each epoch.

    With ``prefetch > 0`` one background thread loads up to ``prefetch`` batches ahead (a
    bounded queue); an exception raised while loading is re-raised in the consumer with its
    original traceback, and the thread stops when the iterator is exhausted, raises, is closed
    (``close()``) or is garbage-collected. An `ArrayDataset` without transforms (or a `Subset` of
    one) is batched by fancy indexing of whole batches.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__``; samples as for `collate`.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: reshuffle every epoch.
        drop_last: drop the last incomplete batch.
        seed: int, None or ``numpy.random.Generator`` (see above).
        prefetch: batches loaded ahead on the background thread; 0 loads in the caller's thread.

    Yields:
        tuple of arrays (B, ...) for tuple samples (e.g. images float32 (B, C, H, W) and labels
        int64 (B,)), a single array for array samples.

    Example:
        >>> x = np.zeros((100, 1, 8, 8), np.float32); y = np.arange(100) % 10
        >>> loader = DataLoader(ArrayDataset(x, y), batch_size=32, shuffle=True, seed=0)
        >>> len(loader), [xb.shape[0] for xb, yb in loader]
        (4, [32, 32, 32, 4])
    """

    def __init__(self, dataset, batch_size: int = 32, shuffle: bool = False,
                 drop_last: bool = False, seed: Union[None, int, np.random.Generator] = None,
                 prefetch: int = 2):
        check_dataset(dataset, "DataLoader")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an int >= 0, got {prefetch!r}")
        if not (seed is None or isinstance(seed, np.random.Generator)
                or (isinstance(seed, (int, np.integer)) and seed >= 0)):
            raise TypeError(f"DataLoader: seed must be None, an int >= 0 or a "
                            f"numpy.random.Generator, got {seed!r}")
        self.dataset, self.batch_size, self.prefetch = dataset, int(batch_size), int(prefetch)
        self.shuffle, self.drop_last, self.seed = bool(shuffle), bool(drop_last), seed
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (e.g. to replay it, or when resuming training)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if isinstance(self.seed, np.random.Generator):
            seed = int(self.seed.integers(2**63))
        else:
            seed = None if self.seed is None else int(self.seed)
        n = len(self.dataset)
        if self.shuffle:
            gen = np.random.default_rng() if seed is None else epoch_generator(seed, epoch)
            order = gen.permutation(n)
        else:
            order = np.arange(n)
        stop = len(self) * self.batch_size
        batches = [order[i:min(i + self.batch_size, n)] for i in range(0, stop, self.batch_size)]
        plain = _plain_arrays(self.dataset)
        if plain is not None:
            arrays, index_map = plain
            loads = (tuple(_label_dtype(a[index_map[b]], a.ndim == 1) for a in arrays)
                     for b in batches)
        else:
            loads = (self._load(b, seed, epoch) for b in batches)
        return Prefetcher(loads, self.prefetch) if self.prefetch else loads

    def _load(self, indices: np.ndarray, seed: Optional[int], epoch: int):
        samples = []
        for i in indices.tolist():
            with sample_seed(seed, epoch, i):
                samples.append(self.dataset[i])
        return collate(samples)

    def __repr__(self) -> str:
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed!r}, "
                f"prefetch={self.prefetch})")


class _Raised:
    """Carries an exception from the loading thread to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless ``stop`` is set first; True when the item was queued."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _produce(items: Iterable, q: queue.Queue, stop: threading.Event) -> None:
    """Body of the loading thread. It holds no reference to the `Prefetcher`, so an abandoned
    prefetcher is collected (and stops this thread) as soon as its consumer drops it."""
    try:
        iterator = iter(items)
        while not stop.is_set():         # checked before computing each item
            item = next(iterator, _END)
            if not _put(q, item, stop) or item is _END:
                return
    except BaseException as e:  # handed to the consumer, which re-raises it
        _put(q, _Raised(e), stop)


class Prefetcher:
    """Iterate over ``items`` while one background thread computes the next ``depth`` ones.

    The thread starts at construction. Exceptions from ``items`` are re-raised by ``__next__``
    with their original traceback; ``close()`` (also called on exhaustion, on error, on
    ``with``-exit and on garbage collection) stops the thread and waits for it.

    Args:
        items: an iterable whose items are computed on the background thread.
        depth: the queue size (>= 1).

    Example:
        >>> list(Prefetcher((i * i for i in range(4)), depth=2))
        [0, 1, 4, 9]
    """

    def __init__(self, items: Iterable, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, args=(items, self._queue, self._stop),
                                        name="fastconv-DataLoader-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Raised):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the loading thread (dropping prefetched batches) and wait for it to end."""
        self._stop.set()
        while True:                       # free queue slots so a blocked put returns at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_thread", None) is None:
            return
        if sys.is_finalizing():           # the daemon thread may already be frozen: no join
            self._stop.set()
        else:
            self.close()
