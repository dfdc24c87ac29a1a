"""fastconv.io on hostile and damaged files: pickles that try to run code are refused with
UnsafeFileError before anything runs (checked by a side-effect file that must never appear),
inconsistent tensor metadata is refused with CorruptFileError, and files cut or with bytes
changed at many places raise only fastconv.io's errors (never a crash, hang, MemoryError or a
stray IndexError / struct.error / KeyError / UnicodeDecodeError)."""
import importlib.util
import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

import fastconv.io as fio
from fastconv.io.torch_format import LEGACY_MAGIC


# ---- building pickles and containers by hand ----------------------------------------------------

def glob(module, name):
    return f"c{module}\n{name}\n".encode()                            # GLOBAL


def text(s):
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw                   # BINUNICODE


def num(v):
    raw = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw                          # LONG1, any size


def ints(values):
    return b"(" + b"".join(num(v) for v in values) + b"t"            # MARK ... TUPLE


def protocol2(*parts):
    return b"\x80\x02" + b"".join(parts) + b"."


def rebuild(storage="FloatStorage", key="0", numel=4, offset=0, size=(4,), stride=(1,),
            legacy=False):
    """torch._utils._rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel[, None]),
    offset, size, stride, False, OrderedDict()), written as torch does (legacy: the persistent id
    of the legacy format, with view metadata None)."""
    pid = (b"(" + text("storage") + glob("torch", storage) + text(key) + text("cpu") + num(numel) +
           (b"N" if legacy else b""))
    return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"tQ" + num(offset) +
            ints(size) + ints(stride) + b"\x89" + glob("collections", "OrderedDict") + b")RtR")


def state_pickle(**tensors):
    """A dict {name: tensor} from rebuild() calls."""
    return protocol2(b"}(", *(text(name) + call for name, call in tensors.items()), b"u")


def tensor_pickle(**kwargs):
    return state_pickle(w=rebuild(**kwargs))


def in_zip(path, pickle_bytes, records=None, byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ck/data.pkl", pickle_bytes)
        zf.writestr("ck/byteorder", byteorder)
        for name, data in (records or {}).items():
            zf.writestr(f"ck/data/{name}", data)
        zf.writestr("ck/version", b"3\n")
    return path


def in_legacy(path, pickle_bytes, storages=()):
    """A legacy file: magic, protocol, system info, the object, the key list, raw storages
    ((key, element count, bytes) each)."""
    keys = [k for k, _, _ in storages]
    raw = b"".join(struct.pack("<q", n) + data for _, n, data in storages)
    path.write_bytes(LEGACY_MAGIC + pickle.dumps(1001, protocol=2) +
                     pickle.dumps({"little_endian": True}, protocol=2) + pickle_bytes +
                     pickle.dumps(keys, protocol=2) + raw)
    return path


CONTAINERS = {"zip": in_zip, "legacy": in_legacy}


# ---- pickles that try to run code ---------------------------------------------------------------

class Reduces:
    """Pickles as a call of `func(*args)`: what an attacker's pickle.dumps produces."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def nested_tuple_key(levels=64):
    """A dict key whose hash would take 2**levels steps: t[i] = (t[i-1], t[i-1]) via the memo."""
    chain = b")q\x00" + b"".join(b"h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86q" +
                                 bytes([i]) for i in range(1, levels + 1))
    return protocol2(chain, b"}h" + bytes([levels]) + b"Ns")


def set_flood(items=2000, calls=1000):
    """builtins.set over one memoized list, again and again: quadratic work from a small file."""
    return protocol2(glob("builtins", "set"), b"q\x00](", b"K\x01" * items, b"eq\x01",
                     b"h\x00h\x01\x85R" * calls)


def tuple_key_flood(size=20000, uses=2000):
    """One memoized tuple of `size` ints used as a dict key `uses` times: tuples do not cache
    their hash, so each use hashes it again."""
    return protocol2(b"(", b"K\x01" * size, b"tq\x00}(", b"h\x00N" * uses, b"u")


def hostile_pickles(marker):
    command = f"touch {marker}"
    return {
        "os.system": (pickle.dumps({"w": Reduces(os.system, (command,))}, protocol=2),
                      "GLOBAL (posix|nt|os).system"),
        "builtins.eval": (protocol2(glob("builtins", "eval"),
                                    text(f"__import__('os').system({command!r})"), b"\x85R"),
                          "GLOBAL builtins.eval"),
        "python2 __builtin__.exec": (protocol2(glob("__builtin__", "exec"),
                                               text(f"import os; os.system({command!r})"),
                                               b"\x85R"), "GLOBAL builtins.exec"),
        "subprocess.Popen": (pickle.dumps(Reduces(subprocess.Popen, (["touch", str(marker)],)),
                                          protocol=2, fix_imports=False),
                             "GLOBAL subprocess.Popen"),
        "REDUCE on an allowed non-callable": (protocol2(glob("torch", "FloatStorage"), b")R"),
                                              "REDUCE calls torch.FloatStorage"),
        "REDUCE on a dict": (protocol2(b"})R"), "REDUCE calls dict"),
        "SETITEM on a list": (protocol2(b"]", text("k"), b"K\x01s"), "SETITEM on a list"),
        "SETITEMS on a list": (protocol2(b"](", text("k"), b"K\x01u"), "SETITEMS on a list"),
        "APPEND on a dict": (protocol2(b"}K\x01a"), "APPEND on a dict"),
        "INST opcode": (b"\x80\x02(" + text(command) + b"ios\nsystem\n.", "opcode INST"),
        "OBJ opcode": (protocol2(b"(", glob("collections", "OrderedDict"), b"o"), "opcode OBJ"),
        "protocol 4 (FRAME)": (pickle.dumps(Reduces(os.system, (command,)), protocol=4),
                               "opcode FRAME"),
        "STACK_GLOBAL, refused at its first protocol-4 opcode": (
            protocol2(b"\x8c\x02os\x8c\x06system\x93"), "opcode SHORT_BINUNICODE"),
        "BUILD on a global": (protocol2(glob("collections", "OrderedDict"), b"}b"),
                              "BUILD on a collections.OrderedDict"),
        "NEWOBJ of set": (protocol2(glob("builtins", "set"), b")\x81"),
                          "NEWOBJ of builtins.set"),
        "non-storage persistent id": (protocol2(text("module"), b"\x85Q"), "BINPERSID"),
        "rebuild_from_type_v2 of a set": (
            protocol2(glob("torch._tensor", "_rebuild_from_type_v2"), b"(",
                      glob("builtins", "set"), glob("torch", "Tensor"), b")}tR"),
            "only allowed to rebuild tensors"),
        "nested rebuild_from_type_v2": (
            protocol2(glob("torch._tensor", "_rebuild_from_type_v2"), b"q\x00(h\x00",
                      glob("torch", "Tensor"), b")}tR"), "only allowed to rebuild tensors"),
        "deep MARK nesting": (b"\x80\x02" + b"(" * 5000, "nests MARKs deeper"),
        "colliding int keys": (protocol2(b"}", num(2**61 + 4), b"Ns"), "ints below 2\\*\\*60"),
        "tuple key hashed again and again": (tuple_key_flood(), "more work"),
        "exponential hash key": (nested_tuple_key(), "dict key .* tuple is not allowed"),
        "quadratic set() calls": (set_flood(), "more work"),
    }


@pytest.mark.parametrize("case", list(hostile_pickles("unused")))
@pytest.mark.parametrize("container", CONTAINERS)
def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path, container, case):
    marker = tmp_path / "pwned"
    payload, message = hostile_pickles(marker)[case]
    path = CONTAINERS[container](tmp_path / "evil.pth", payload)
    with pytest.raises(fio.UnsafeFileError, match=message) as error:
        fio.load(path)
    assert "evil.pth" in str(error.value)
    assert not marker.exists()


def test_pickled_objects_are_refused(tmp_path, torch):
    """A whole pickled nn.Module (torch.save(model)) names a class that is not allow-listed."""
    torch.save(torch.nn.Linear(2, 3), tmp_path / "model.pth")
    with pytest.raises(fio.UnsafeFileError, match="GLOBAL torch.nn.modules.linear.Linear"):
        fio.load(tmp_path / "model.pth")
    marker = tmp_path / "pwned"
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(Reduces(os.system, (f"touch {marker}",))))
    with pytest.raises(fio.FileFormatError, match="not a torch checkpoint"):
        fio.load(tmp_path / "plain.pkl")
    assert not marker.exists()


# ---- inconsistent tensor metadata ---------------------------------------------------------------

FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()


@pytest.mark.parametrize("case, payload, records, message", [
    ("short record", tensor_pickle(), {"0": FOUR_FLOATS[:12]}, "declares 4 float32 elements"),
    ("missing record", tensor_pickle(key="1"), {"0": FOUR_FLOATS}, "has no record"),
    ("offset past the end", tensor_pickle(offset=4, size=(1,)), {"0": FOUR_FLOATS},
     "reach element 4 of a storage of 4"),
    ("stride past the end", tensor_pickle(stride=(2,)), {"0": FOUR_FLOATS}, "reach element 6"),
    ("huge declared size", tensor_pickle(size=(10**9, 10**9), stride=(0, 0)),
     {"0": FOUR_FLOATS}, "refusing to expand"),
    ("giant int size", tensor_pickle(size=(2**2000,)), {"0": FOUR_FLOATS}, "reach element"),
    ("giant empty tensor", tensor_pickle(size=(0, 2**62), stride=(1, 1)), {"0": FOUR_FLOATS},
     "spans more elements"),
    ("huge numel", tensor_pickle(numel=2**62), {"0": FOUR_FLOATS}, "declares"),
    ("negative stride", tensor_pickle(stride=(-1,)), {"0": FOUR_FLOATS}, "non-negative"),
    ("size and stride ranks differ", tensor_pickle(size=(2, 2)), {"0": FOUR_FLOATS},
     "one stride per dimension"),
    ("too many dimensions", tensor_pickle(size=(1,) * 100, stride=(1,) * 100),
     {"0": FOUR_FLOATS}, "100 dimensions"),
    ("one storage, two dtypes", state_pickle(w=rebuild(), v=rebuild(storage="IntStorage")),
     {"0": FOUR_FLOATS}, "declared with two types"),
])
def test_inconsistent_zip_metadata(tmp_path, case, payload, records, message):
    with pytest.raises(fio.CorruptFileError, match=message):
        fio.load(in_zip(tmp_path / "bad.pth", payload, records))


def test_stride_of_a_size_one_dimension_is_never_used(tmp_path):
    path = in_zip(tmp_path / "ok.pth", tensor_pickle(size=(1, 4), stride=(2**100, 1)),
                  {"0": FOUR_FLOATS})
    np.testing.assert_array_equal(fio.load(path)["w"], [np.arange(4, dtype=np.float32)])


def test_inconsistent_zip_records(tmp_path):
    with pytest.raises(fio.CorruptFileError, match="byteorder record is b'middle'"):
        fio.load(in_zip(tmp_path / "bo.pth", tensor_pickle(), {"0": FOUR_FLOATS}, b"middle"))
    with zipfile.ZipFile(tmp_path / "flat.pth", "w") as zf:
        zf.writestr("data.pkl", tensor_pickle())
    with pytest.raises(fio.CorruptFileError, match="not in a top-level folder"):
        fio.load(tmp_path / "flat.pth")
    with pytest.raises(fio.FileFormatError, match="float8_e4m3fn are not supported"):
        fio.load(in_zip(tmp_path / "f8.pth", protocol2(b"}(", text("w"),
                        glob("torch._utils", "_rebuild_tensor_v3"), b"((", text("storage"),
                        glob("torch.storage", "UntypedStorage"), text("0"), text("cpu"),
                        num(4), b"tQ", num(0), ints((4,)), ints((1,)), b"\x89}",
                        glob("torch", "float8_e4m3fn"), b"tRu"), {"0": bytes(4)}))


@pytest.mark.parametrize("storages, message", [
    ([("0", 3, FOUR_FLOATS[:12])], "declares 4 elements, its record 3"),
    ([("0", 4, FOUR_FLOATS[:8])], "bytes left"),
    ([("0", 4, FOUR_FLOATS + b"junk")], "4 bytes follow the last storage"),
    ([("9", 4, FOUR_FLOATS)], "storage '9' is not referenced"),
    ([], "does not hold"),
])
def test_inconsistent_legacy_storages(tmp_path, storages, message):
    payload = tensor_pickle(legacy=True)
    with pytest.raises(fio.CorruptFileError, match=message):
        fio.load(in_legacy(tmp_path / "bad.pth", payload, storages))


# ---- cut and changed bytes ----------------------------------------------------------------------

def assert_only_our_errors(path, cases):
    for case in cases:
        path.write_bytes(case)
        try:
            fio.load(path)
        except fio.FileFormatError as e:
            assert path.name in str(e)


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    """One small checkpoint in every format that can be damaged (torch files need torch)."""
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("samples")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Linear(4, 5))
    state = model.state_dict()
    checkpoint = {"state_dict": state, "epoch": 3, "views": [torch.arange(8.0)[2:6]]}
    torch.save(checkpoint, root / "zip.pth")
    torch.save(checkpoint, root / "legacy.pth", _use_new_zipfile_serialization=False)
    fio.save(fio.load(root / "zip.pth"), root / "w.npz")
    if importlib.util.find_spec("safetensors") is not None:
        fio.save(fio.load(root / "zip.pth"), root / "w.safetensors")
    return {p.name: p.read_bytes() for p in root.iterdir()}


@pytest.mark.parametrize("name", ["zip.pth", "legacy.pth", "w.safetensors", "w.npz"])
def test_cut_and_flipped_files_raise_only_our_errors(tmp_path, sample_files, name):
    if name not in sample_files:
        pytest.skip("the safetensors package is not installed")
    data = sample_files[name]
    rng = np.random.default_rng(1234)                   # fixed: the same cases on every run
    cases = [data[:cut] for cut in range(0, len(data), 37)]
    for _ in range(100):
        changed = bytearray(data)
        for i in rng.integers(len(data), size=rng.integers(1, 4)):
            changed[i] = rng.integers(256)
        cases.append(bytes(changed))
    assert_only_our_errors(tmp_path / f"damaged_{name}", cases)


def test_changed_pickle_inside_a_valid_zip(tmp_path, sample_files):
    """Changes in data.pkl behind a valid CRC reach the interpreter itself."""
    with zipfile.ZipFile(io.BytesIO(sample_files["zip.pth"])) as zf:
        records = {i.filename: zf.read(i) for i in zf.infolist()}
    pkl_name = next(n for n in records if n.endswith("/data.pkl"))
    rng = np.random.default_rng(99)
    cases = []
    for _ in range(150):
        changed = bytearray(records[pkl_name])
        for i in rng.integers(len(changed), size=rng.integers(1, 4)):
            changed[i] = rng.integers(256)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for record, data in records.items():
                zf.writestr(record, bytes(changed) if record == pkl_name else data)
        cases.append(buffer.getvalue())
    assert_only_our_errors(tmp_path / "changed.pth", cases)


# ---- decompression caps -------------------------------------------------------------------------

def deflated_copy(src, dst):
    """The zip archive src rewritten with every member deflated."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    return dst


ZEROS = np.zeros(1 << 18, np.float32)          # 1 MiB that deflates to about 1 kB


@pytest.mark.parametrize("kind,member", [("npz", "w.npy"), ("pth", "data/0")])
def test_zip_member_inflation_is_capped(tmp_path, monkeypatch, kind, member):
    fio.save({"w": ZEROS}, tmp_path / f"plain.{kind}")
    path = deflated_copy(tmp_path / f"plain.{kind}", tmp_path / f"bomb.{kind}")
    assert path.stat().st_size < 100_000
    np.testing.assert_array_equal(fio.load(path)["w"], ZEROS)
    with pytest.raises(fio.UnsafeFileError, match=rf"bomb.{kind}: zip member \S*{member} "
                                                  r"inflates to 1,048,\d+ bytes.*cap of "
                                                  r"100,000 bytes.*max_bytes=N"):
        fio.load(path, max_bytes=100_000)
    monkeypatch.setenv("FASTCONV_LOAD_MAX_BYTES", "100000")
    with pytest.raises(fio.UnsafeFileError, match="FASTCONV_LOAD_MAX_BYTES environment variable"):
        fio.load(path)
    np.testing.assert_array_equal(fio.load(path, max_bytes=2 << 20)["w"], ZEROS)   # wins


def test_default_inflation_cap_scales_with_the_file(tmp_path, monkeypatch):
    """Default: max(floor, 100 x the file's size); a stored (uncompressed) member never counts."""
    from fastconv.io import _limits
    monkeypatch.setattr(_limits, "DEFAULT_FLOOR", 1 << 19)
    fio.save({"w": ZEROS}, tmp_path / "plain.npz")
    np.testing.assert_array_equal(fio.load(tmp_path / "plain.npz")["w"], ZEROS)
    path = deflated_copy(tmp_path / "plain.npz", tmp_path / "bomb.npz")
    cap = max(1 << 19, 100 * path.stat().st_size)
    with pytest.raises(fio.UnsafeFileError, match=f"cap of {cap:,} bytes"):
        fio.load(path)


def test_max_bytes_argument_errors(tmp_path):
    fio.save({"w": ZEROS[:4]}, tmp_path / "w.npz")
    with pytest.raises(TypeError, match="load: max_bytes must be an int or None, got 1.5"):
        fio.load(tmp_path / "w.npz", max_bytes=1.5)
    with pytest.raises(ValueError, match="load: max_bytes must be >= 0, got -1"):
        fio.load(tmp_path / "w.npz", max_bytes=-1)


def test_ordered_dict_of_a_non_list_is_corrupt(tmp_path):
    """OrderedDict(5) in a pickle: CorruptFileError, not Python's TypeError."""
    payload = protocol2(glob("collections", "OrderedDict"), b"(", num(5), b"tR")
    for container in CONTAINERS.values():
        with pytest.raises(fio.CorruptFileError, match=r"OrderedDict takes a list of \(key, value\) "
                                                       r"pairs, got .*int"):
            fio.load(container(tmp_path / "od.pth", payload))
