"""fastconv.data: datasets, splits, the prefetching DataLoader, ImageFolder and the bundled data.
The transforms are tested in test_data_transforms.py."""
import pathlib
import sys
import threading
import traceback

import numpy as np
import pytest

from fastconv.data import (ArrayDataset, Compose, DataLoader, ImageFolder, Prefetcher,
                           RandomAffine, RandomHorizontalFlip, Subset, ToFloat, collate,
                           load_digits, load_lfw_subset, random_split, sample_generator,
                           stratified_split)


def arrays(n=10):
    x = np.arange(n * 2 * 3 * 3, dtype=np.float32).reshape(n, 2, 3, 3)
    return x, np.arange(n, dtype=np.int32) % 3


def batches(loader):
    return [tuple(a.copy() for a in batch) for batch in loader]


class ListDataset:
    """A dataset that is not an ArrayDataset (so the loader goes sample by sample)."""

    def __init__(self, samples, fail_at=None):
        self.samples, self.fail_at = samples, fail_at

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"cannot load sample {i}")
        return self.samples[i]


# --------------------------------------------------------------------------- datasets and splits

def test_array_dataset_items_and_transforms():
    x, y = arrays()
    ds = ArrayDataset(x, y, transform=lambda a: a * 2, target_transform=lambda t: t + 100)
    xi, yi = ds[4]
    assert len(ds) == 10
    np.testing.assert_array_equal(xi, x[4] * 2)
    assert yi == y[4] + 100


def test_array_dataset_rejects_bad_arrays():
    with pytest.raises(ValueError, match=r"arrays\[1\] has shape \(9,\)"):
        ArrayDataset(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="at least one array"):
        ArrayDataset()
    with pytest.raises(ValueError, match="target_transform needs a second"):
        ArrayDataset(np.zeros(3), target_transform=int)


def test_subset_and_errors():
    ds = ArrayDataset(np.arange(5))
    sub = Subset(ds, [4, -5, 2])
    assert len(sub) == 3 and [int(sub[i][0]) for i in range(3)] == [4, 0, 2]
    with pytest.raises(IndexError, match=r"\[-5, 5\)"):
        Subset(ds, [5])
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        Subset(42, [0])


@pytest.mark.parametrize("lengths, sizes", [([7, 3], [7, 3]), ([0.5, 0.3, 0.2], [5, 3, 2]),
                                            ([1 / 3, 1 / 3, 1 / 3], [4, 3, 3])])
def test_random_split_sizes_partition_and_seed(lengths, sizes):
    ds = ArrayDataset(np.arange(10))
    parts = random_split(ds, lengths, seed=3)
    assert [len(p) for p in parts] == sizes
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(10))
    again = random_split(ds, lengths, seed=3)
    assert all((a.indices == b.indices).all() for a, b in zip(parts, again))


def test_random_split_rejects_bad_lengths():
    with pytest.raises(ValueError, match=r"summing to the dataset's length \(10\)"):
        random_split(ArrayDataset(np.arange(10)), [5, 4])


def test_stratified_split_keeps_class_shares_and_is_deterministic():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = stratified_split(labels, test_size=0.2, seed=1)
    assert np.bincount(labels[test]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again = stratified_split(labels, test_size=0.2, seed=1)
    other = stratified_split(labels, test_size=0.2, seed=2)
    assert (train == again[0]).all() and (test == again[1]).all()
    assert set(test.tolist()) != set(other[1].tolist())
    with pytest.raises(ValueError, match=r"test_size must be in \[0, 1\)"):
        stratified_split(labels, test_size=1.0)


# --------------------------------------------------------------------------------- DataLoader

def test_len_batch_shapes_dtypes_and_drop_last():
    x, y = arrays(10)
    loader = DataLoader(ArrayDataset(x, y), batch_size=4)
    got = batches(loader)
    assert len(loader) == 3 and [b[0].shape for b in got] == [(4, 2, 3, 3)] * 2 + [(2, 2, 3, 3)]
    assert got[0][0].dtype == np.float32 and got[0][1].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
    dropped = DataLoader(ArrayDataset(x, y), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [b[0].shape[0] for b in dropped] == [4, 4]
    assert len(DataLoader(ArrayDataset(x, y), batch_size=20, drop_last=True)) == 0


def test_shuffle_is_deterministic_per_seed_and_varies_per_epoch():
    x, y = arrays(50)
    first = DataLoader(ArrayDataset(x, y), batch_size=50, shuffle=True, seed=7)
    second = DataLoader(ArrayDataset(x, y), batch_size=50, shuffle=True, seed=7)
    epochs = [batches(first)[0][1] for _ in range(3)]
    assert all((a == b).all() for a, b in zip(epochs, (batches(second)[0][1] for _ in range(3))))
    assert not (epochs[0] == epochs[1]).all() and not (epochs[1] == epochs[2]).all()
    assert sorted(epochs[0].tolist()) == sorted(y.tolist())
    first.set_epoch(1)
    assert (batches(first)[0][1] == epochs[1]).all()
    other = DataLoader(ArrayDataset(x, y), batch_size=50, shuffle=True, seed=8)
    assert not (batches(other)[0][1] == epochs[0]).all()


def test_generator_seed_shuffles_reproducibly():
    x, y = arrays(30)
    runs = [DataLoader(ArrayDataset(x, y), 30, shuffle=True, seed=np.random.default_rng(5))
            for _ in range(2)]
    first, second = ([batches(loader)[0][1] for _ in range(2)] for loader in runs)
    assert (first[0] == second[0]).all() and (first[1] == second[1]).all()
    assert not (first[0] == first[1]).all()


def test_fast_path_matches_sample_by_sample_and_skips_getitem(monkeypatch):
    x, y = arrays(10)
    slow = batches(DataLoader(ListDataset(list(zip(x, y))), batch_size=4, shuffle=True, seed=1))
    monkeypatch.setattr(ArrayDataset, "__getitem__", lambda self, i: pytest.fail("per sample"))
    fast = batches(DataLoader(ArrayDataset(x, y), batch_size=4, shuffle=True, seed=1))
    sub = batches(DataLoader(Subset(ArrayDataset(x, y), [9, 8, 7]), batch_size=2))
    assert len(slow) == len(fast) == 3
    for a, b in zip(slow, fast):
        assert all(u.dtype == v.dtype and (u == v).all() for u, v in zip(a, b))
    np.testing.assert_array_equal(sub[0][0], x[[9, 8]])


def test_prefetch_gives_the_same_batches_as_loading_in_the_caller():
    x, y = arrays(20)
    ds = ArrayDataset(x, y, transform=Compose([RandomHorizontalFlip(),
                                               RandomAffine(rotation_range=30)]))
    a = batches(DataLoader(ds, batch_size=6, shuffle=True, seed=3, prefetch=0))
    b = batches(DataLoader(ds, batch_size=6, shuffle=True, seed=3, prefetch=3))
    assert len(a) == len(b) == 4
    assert all((u == v).all() for p, q in zip(a, b) for u, v in zip(p, q))


def test_seeded_loader_augments_each_sample_with_its_documented_generator():
    x, y = arrays(12)
    transform = Compose([RandomHorizontalFlip(), RandomAffine(rotation_range=40, zoom_range=0.2)])
    loader = DataLoader(ArrayDataset(x, y, transform=transform), batch_size=12, seed=11)
    loader.set_epoch(2)
    (xb, _), = batches(loader)
    for i in range(12):
        expected = transform(x[i], rng=sample_generator(11, 2, i))
        np.testing.assert_array_equal(xb[i], expected)
    (xb_next, _), = batches(loader)                      # epoch 3 draws differently
    assert not np.array_equal(xb, xb_next)


def test_collate_structures_and_errors():
    assert collate([1, 2]).dtype == np.int64 and collate([0.5, 1.5]).dtype == np.float32
    xb, yb = collate([[np.zeros(3, np.float64), 1], [np.ones(3, np.float64), 2]])
    assert xb.dtype == np.float64 and yb.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"sample 1 has shape \(4,\) but sample 0 has \(3,\)"):
        collate([(np.zeros(3), 0), (np.zeros(4), 1)])
    with pytest.raises(ValueError, match="all have 2 fields"):
        collate([(np.zeros(3), 0), (np.zeros(3),)])


def test_loader_rejects_bad_arguments():
    ds = ArrayDataset(np.zeros(4))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        DataLoader(ds, prefetch=-1)
    with pytest.raises(TypeError, match="seed must be None"):
        DataLoader(ds, seed="abc")
    with pytest.raises(TypeError, match="dataset must have __len__"):
        DataLoader([1, 2, 3][0])


def test_exception_in_prefetch_thread_reaches_the_consumer_with_its_traceback():
    before = threading.active_count()
    loader = DataLoader(ListDataset([(np.zeros(2), 0)] * 10, fail_at=6), batch_size=2)
    it = iter(loader)
    assert len([next(it) for _ in range(3)]) == 3
    with pytest.raises(RuntimeError, match="cannot load sample 6") as info:
        next(it)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "__getitem__" in frames and "_produce" in frames
    with pytest.raises(StopIteration):
        next(it)
    assert threading.active_count() == before


def test_abandoned_iterators_do_not_leak_threads():
    before = threading.active_count()
    x, y = arrays(40)
    for dataset in (ArrayDataset(x, y), ListDataset(list(zip(x, y)))):
        loader = DataLoader(dataset, batch_size=2, prefetch=2)
        it = iter(loader)
        next(it)
        assert threading.active_count() == before + 1
        del it                                           # abandoned with batches still queued
        assert threading.active_count() == before
        for _ in loader:
            break
        assert threading.active_count() == before
        with iter(loader) as it:
            next(it)
        assert threading.active_count() == before


def test_prefetcher_stops_promptly_when_closed():
    started = threading.Event()

    def slow_items():
        for i in range(1000):
            started.set()
            yield i

    before = threading.active_count()
    p = Prefetcher(slow_items(), depth=1)
    started.wait(1)
    p.close()
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(p)


# -------------------------------------------------------------------------------- ImageFolder

@pytest.fixture
def image_root(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    images = {}
    for name, count in (("dog", 2), ("cat", 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            img = rng.integers(0, 256, (5 + i, 7, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
            images[f"{name}/{i}.png"] = img
    Image.fromarray(images["cat/0.png"][:, :, 0]).save(tmp_path / "cat" / "grey.png")  # mode L
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    return tmp_path, images


def test_image_folder_classes_samples_and_pixels(image_root):
    root, images = image_root
    ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    names = [pathlib.Path(path).relative_to(root).as_posix() for path, _ in ds.samples]
    assert names == ["cat/0.png", "cat/1.png", "cat/2.png", "cat/grey.png", "dog/0.png",
                     "dog/1.png"]
    assert ds.targets == [0, 0, 0, 0, 1, 1]
    img, label = ds[1]
    assert img.dtype == np.uint8 and label == 0
    np.testing.assert_array_equal(img, images["cat/1.png"])
    grey_as_rgb, _ = ds[3]
    assert grey_as_rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(grey_as_rgb[:, :, 2], images["cat/0.png"][:, :, 0])
    grey = ImageFolder(root, grayscale=True)[3][0]
    np.testing.assert_array_equal(grey[:, :, 0], images["cat/0.png"][:, :, 0])


def test_image_folder_through_loader_with_transform(image_root):
    root, _ = image_root
    ds = ImageFolder(root, transform=Compose([ToFloat(), lambda a: a[:, :5, :7]]))
    xb, yb = next(iter(DataLoader(ds, batch_size=6)))
    assert xb.shape == (6, 3, 5, 7) and xb.dtype == np.float32 and yb.dtype == np.int64
    assert 0.0 <= xb.min() and xb.max() <= 1.0


def test_image_folder_errors(image_root, tmp_path_factory):
    root, _ = image_root
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = ImageFolder(root)
    broken = [s[0] for s in ds.samples].index(str(root / "dog" / "broken.png"))
    with pytest.raises(OSError, match=r"cannot read image .*broken\.png"):
        ds[broken]
    with pytest.raises(OSError, match="broken.png"):
        list(DataLoader(ds, batch_size=1))
    with pytest.raises(FileNotFoundError, match="is not an existing folder"):
        ImageFolder(root / "missing")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolder(empty)
    (empty / "bird").mkdir()
    with pytest.raises(FileNotFoundError, match=r"bird' holds no file ending in \.bmp"):
        ImageFolder(empty)


# ------------------------------------------------------------------------------ bundled data

@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return load_digits(test_size=0.2, seed=0)


def test_load_digits_shapes_labels_and_stratification(digits):
    x_train, y_train, x_test, y_test, classes = digits
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert classes == tuple("0123456789")
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    total = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    assert np.abs(np.bincount(y_test) - 0.2 * total).max() <= 0.5
    from sklearn.datasets import load_digits as sk_digits
    raw = sk_digits()
    row = {img.tobytes(): label for img, label in zip((raw.images / 16).astype(np.float32),
                                                      raw.target)}
    assert all(row[img[0].tobytes()] == label for img, label in zip(x_test, y_test))


def test_load_digits_is_deterministic_and_resizes(digits):
    pytest.importorskip("sklearn")
    same = load_digits(seed=0)
    other = load_digits(seed=1)
    assert np.array_equal(same.x_test, digits.x_test) and np.array_equal(same.y_test, digits.y_test)
    assert not np.array_equal(other.y_test, digits.y_test)
    big = load_digits(seed=0, size=32, channels=3)
    assert big.x_train.shape == (1438, 3, 32, 32)
    assert big.y_train.tolist() == digits.y_train.tolist()
    assert (big.x_train[:, 0] == big.x_train[:, 2]).all()
    assert 0.0 <= big.x_train.min() and big.x_train.max() <= 1.0
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_digits(channels=2)


def test_load_lfw_subset_labels_faces_first():
    skdata = pytest.importorskip("skimage.data")
    data = load_lfw_subset(test_size=0.25, seed=0)
    assert data.x_train.shape == (150, 1, 25, 25) and data.x_test.shape == (50, 1, 25, 25)
    assert data.classes == ("non-face", "face")
    assert np.bincount(data.y_train).tolist() == [75, 75]
    assert np.bincount(data.y_test).tolist() == [25, 25]
    raw = np.asarray(skdata.lfw_subset(), np.float32)
    faces = {img.tobytes() for img in raw[:100]}
    for x, y in zip(np.concatenate([data.x_train, data.x_test]),
                    np.concatenate([data.y_train, data.y_test])):
        assert (x[0].tobytes() in faces) == (y == 1)
    again = load_lfw_subset(test_size=0.25, seed=0, size=32, channels=3)
    assert again.x_test.shape == (50, 3, 32, 32) and (again.y_test == data.y_test).all()


def test_missing_package_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)      # import fails
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"load_digits needs scikit-learn.*fastconv\[data\]"):
        load_digits()
    with pytest.raises(ImportError, match=r"load_lfw_subset needs scikit-image"):
        load_lfw_subset()
