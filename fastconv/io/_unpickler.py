"""A pure-Python allow-list pickle interpreter for torch checkpoints.

torch writes the object part of a checkpoint (``data.pkl`` in the zip format, the pickle streams
of the legacy format) as a protocol-2 pickle. Python's own ``pickle.Unpickler`` imports and calls
whatever the stream names, so it is never used here. This module interprets the opcodes itself,
following the rules of torch's ``weights_only`` unpickler (torch/_weights_only_unpickler.py), with
two differences that make it stricter:

* GLOBAL never imports anything. An allow-listed name becomes an inert sentinel (``Global`` and
  its subclasses); every other name raises UnsafeFileError at once. REDUCE only "calls" the
  sentinels that carry an implementation written here (OrderedDict, set, the tensor-rebuild
  functions, ...), and those build plain Python values: a tensor becomes a ``TensorRef`` (storage,
  dtype, offset, size, stride) for the container reader to turn into a numpy array.
* Every resource the stream can ask for is bounded: MARK nesting, memo entries, string lengths
  (and every length against the bytes that remain), the work done by the allow-listed callables,
  and dict keys are restricted to scalars (and flat tuples of scalars) so hashing stays cheap.

Opcodes (protocol 2 subset, as torch allows): PROTO STOP GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS
SETITEM SETITEMS MARK TUPLE TUPLE1-3 NONE NEWFALSE NEWTRUE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT
EMPTY_SET BININT BININT1 BININT2 BINFLOAT BINUNICODE SHORT_BINSTRING LONG1 BINPERSID BINGET
LONG_BINGET BINPUT LONG_BINPUT. Any other pickle opcode (INST, OBJ, STACK_GLOBAL, FRAME, ...) is
refused with UnsafeFileError; a byte that is no opcode at all with CorruptFileError.
"""
from __future__ import annotations

import pickletools
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional

from fastconv.io._dtypes import STORAGE_TO_TORCH, TORCH_TO_NUMPY, TORCH_UNSUPPORTED_DTYPES
from fastconv.io.errors import CorruptFileError, FileFormatError, UnsafeFileError

MAX_MARK_DEPTH = 1_000          # nested MARKs (a state dict needs 3)
MAX_MEMO = 1 << 24              # memo entries
MAX_STRING = 1 << 28            # bytes in one string
MAX_GLOBAL_LINE = 256           # bytes in a GLOBAL module or name line
MAX_NDIM = 64                   # tensor dimensions (numpy's limit)
WORK_PER_BYTE = 4               # work budget of the allow-listed callables per pickle byte
MIN_WORK = 1 << 16              # ... and for any pickle (building an item costs 1 unit)


# ---- what a pickle can produce besides plain Python values --------------------------------------

class Global:
    """An allow-listed GLOBAL: an inert name, never the Python object it names."""
    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __repr__(self):
        return self.path


class Function(Global):
    """A global that REDUCE may call: `impl(interpreter, args)` is our own implementation.
    `makes_tensor` marks the tensor-rebuild functions."""
    __slots__ = ("impl", "makes_tensor")

    def __init__(self, path: str, impl, makes_tensor: bool = False):
        super().__init__(path)
        self.impl, self.makes_tensor = impl, makes_tensor


class StorageType(Global):
    """A storage class (torch.FloatStorage, torch.UntypedStorage, ...) and its torch dtype name."""
    __slots__ = ("dtype",)

    def __init__(self, path: str, dtype: str):
        super().__init__(path)
        self.dtype = dtype


class DType(Global):
    """A torch dtype global (torch.float32, ...) by its torch name."""
    __slots__ = ("dtype",)

    def __init__(self, path: str, dtype: str):
        super().__init__(path)
        self.dtype = dtype


@dataclass(eq=False)
class StorageRef:
    """What a persistent id resolves to: `numel` elements of torch dtype `dtype`, starting
    `offset` elements into the container's record `key`."""
    key: str
    dtype: str
    numel: int
    offset: int = 0


@dataclass(eq=False)
class TensorRef:
    """A tensor as torch rebuilds it: `size`/`stride` (elements) over `storage`, starting
    `offset` elements in, with elements of torch dtype `dtype`."""
    storage: StorageRef
    dtype: str
    offset: int
    size: tuple
    stride: tuple


# ---- the allow-listed callables ------------------------------------------------------------------

MAX_KEY_INT = 1 << 60           # int dict keys below this never share a hash (hash(i) == i)


def _is_scalar_key(value) -> bool:
    return (type(value) in (str, bytes, float, bool, type(None)) or
            (type(value) is int and -MAX_KEY_INT < value < MAX_KEY_INT))


def _check_key(it, key):
    """Dict keys and set items: scalars or flat tuples of scalars, with ints small enough that no
    two share a hash, so that neither hashing nor hash collisions can take more than linear time
    (tuples do not cache their hash: each use is charged to the work budget)."""
    if _is_scalar_key(key):
        return key
    if type(key) is tuple and all(_is_scalar_key(k) for k in key):
        it.spend(len(key))
        return key
    raise UnsafeFileError(f"a dict key or set item of type {_describe(key)} is not allowed (only "
                          f"str, bytes, float, bool, None, ints below 2**60 and flat tuples of "
                          "them)")


def _nargs(args, lo: int, hi: int, what: str):
    if not lo <= len(args) <= hi:
        expected = str(lo) if lo == hi else f"{lo} to {hi}"
        raise CorruptFileError(f"{what} takes {expected} arguments, the pickle gives {len(args)}")


def _ints(value, what: str) -> tuple:
    if type(value) is not tuple or not all(type(v) is int for v in value):
        raise CorruptFileError(f"{what} must be a tuple of ints, got {_describe(value)}")
    return value


def _ordered_dict(it, args):
    _nargs(args, 0, 1, "collections.OrderedDict")
    if args and type(args[0]) not in (list, tuple):
        raise CorruptFileError(f"collections.OrderedDict takes a list of (key, value) pairs, got "
                               f"{_describe(args[0])}")
    out = {}
    for pair in (args[0] if args else ()):
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise CorruptFileError("collections.OrderedDict items must be (key, value) pairs")
        it.spend(1)
        out[_check_key(it, pair[0])] = pair[1]
    return out


def _counter(it, args):
    _nargs(args, 0, 1, "collections.Counter")
    if args and type(args[0]) is not dict:
        raise CorruptFileError(f"collections.Counter takes a dict, got {_describe(args[0])}")
    it.spend(len(args[0]) if args else 0)
    return dict(args[0]) if args else {}


def _set(it, args):
    _nargs(args, 0, 1, "builtins.set")
    if args and type(args[0]) not in (list, tuple, set):
        raise CorruptFileError(f"builtins.set takes a list, got {_describe(args[0])}")
    items = args[0] if args else ()
    it.spend(len(items))
    return {_check_key(it, i) for i in items}


def _latin1(it, text, encoding, what: str) -> bytes:
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise CorruptFileError(f"{what} takes (str, 'latin1')")
    it.spend(len(text))
    return text.encode("latin-1")


def _codecs_encode(it, args):
    _nargs(args, 2, 2, "_codecs.encode")
    return _latin1(it, args[0], args[1], "_codecs.encode")


def _bytearray(it, args):
    _nargs(args, 0, 2, "builtins.bytearray")
    if len(args) == 2:
        return bytearray(_latin1(it, args[0], args[1], "builtins.bytearray"))
    if args and type(args[0]) is not bytes:
        raise CorruptFileError(f"builtins.bytearray takes bytes, got {_describe(args[0])}")
    it.spend(len(args[0]) if args else 0)
    return bytearray(args[0] if args else b"")


def _complex(it, args):
    _nargs(args, 1, 2, "builtins.complex")
    if not all(type(a) in (int, float) for a in args):
        raise CorruptFileError("builtins.complex takes real numbers")
    return complex(*args)


def _torch_size(it, args):
    _nargs(args, 1, 1, "torch.Size")
    return _ints(tuple(args[0]) if type(args[0]) is list else args[0], "torch.Size")


def _torch_device(it, args):
    _nargs(args, 1, 2, "torch.device")
    if type(args[0]) is not str:
        raise CorruptFileError(f"torch.device takes a str, got {_describe(args[0])}")
    return args[0] if len(args) == 1 else f"{args[0]}:{args[1]}"


def _get_layout(it, args):
    _nargs(args, 1, 1, "torch.serialization._get_layout")
    if type(args[0]) is not str:
        raise CorruptFileError("torch.serialization._get_layout takes a str")
    return args[0]


def _tensor(storage, offset, size, stride, dtype: Optional[str], what: str) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise CorruptFileError(f"{what}: the storage argument is a {_describe(storage)}, "
                               "not a persistent-id storage")
    size, stride = _ints(size, f"{what} size"), _ints(stride, f"{what} stride")
    if len(size) > MAX_NDIM:
        raise CorruptFileError(f"{what}: a tensor of {len(size)} dimensions (at most {MAX_NDIM})")
    if type(offset) is not int or offset < 0 or len(size) != len(stride) or \
            any(v < 0 for v in size + stride):
        raise CorruptFileError(f"{what}: bad storage offset ({_describe(offset)}), size {size} or "
                               f"stride {stride} (non-negative ints, one stride per dimension)")
    return TensorRef(storage, dtype or storage.dtype, offset, size, stride)


def _rebuild_tensor(it, args):
    _nargs(args, 4, 4, "torch._utils._rebuild_tensor")
    return _tensor(*args, None, "torch._utils._rebuild_tensor")


def _rebuild_tensor_v2(it, args):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    _nargs(args, 6, 7, "torch._utils._rebuild_tensor_v2")
    return _tensor(*args[:4], None, "torch._utils._rebuild_tensor_v2")


def _rebuild_tensor_v3(it, args):
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata]):
    # the storage is untyped bytes and the offset counts elements of `dtype`.
    _nargs(args, 7, 8, "torch._utils._rebuild_tensor_v3")
    if not isinstance(args[6], DType):
        raise CorruptFileError("torch._utils._rebuild_tensor_v3: dtype argument is a "
                               f"{_describe(args[6])}, not a torch dtype")
    return _tensor(*args[:4], args[6].dtype, "torch._utils._rebuild_tensor_v3")


def _rebuild_parameter(it, args):
    # (data, requires_grad, backward_hooks[, state]): a Parameter is its data for us.
    _nargs(args, 3, 4, "torch._utils._rebuild_parameter")
    if not isinstance(args[0], TensorRef):
        raise CorruptFileError(f"a Parameter wraps a {_describe(args[0])}, not a tensor")
    return args[0]


def _rebuild_from_type_v2(it, args):
    # (func, new_type, args, state): func(*args), re-typed as new_type (Tensor or Parameter).
    _nargs(args, 4, 4, "torch._tensor._rebuild_from_type_v2")
    func, new_type, func_args = args[:3]
    if not (isinstance(func, Function) and func.makes_tensor) or \
            new_type not in (_TENSOR, _PARAMETER) or type(func_args) is not tuple:
        raise UnsafeFileError(f"torch._tensor._rebuild_from_type_v2 is only allowed to rebuild "
                              f"tensors, got ({_describe(func)}, {_describe(new_type)}, ...)")
    return func.impl(it, func_args)


def _unsupported(kind: str):
    def impl(it, args):
        raise FileFormatError(f"{kind} tensors are not supported")
    return impl


_TENSOR = Global("torch.Tensor")
_PARAMETER = Global("torch.nn.parameter.Parameter")
_ORDERED_DICT = Function("collections.OrderedDict", _ordered_dict)
_COUNTER = Function("collections.Counter", _counter)


def _allow_list() -> dict:
    """GLOBAL module.name -> sentinel, mirroring torch's weights_only allow-list."""
    table = {g.path: g for g in (_TENSOR, _PARAMETER, _ORDERED_DICT, _COUNTER)}
    for path, impl in (("builtins.set", _set), ("builtins.bytearray", _bytearray),
                       ("builtins.complex", _complex), ("_codecs.encode", _codecs_encode),
                       ("torch.Size", _torch_size), ("torch.device", _torch_device),
                       ("torch.serialization._get_layout", _get_layout)):
        table[path] = Function(path, impl)
    for name, impl in (("_rebuild_tensor", _rebuild_tensor),
                       ("_rebuild_tensor_v2", _rebuild_tensor_v2),
                       ("_rebuild_tensor_v3", _rebuild_tensor_v3),
                       ("_rebuild_parameter", _rebuild_parameter),
                       ("_rebuild_parameter_with_state", _rebuild_parameter),
                       ("_rebuild_qtensor", _unsupported("quantized")),
                       ("_rebuild_sparse_tensor", _unsupported("sparse")),
                       ("_rebuild_nested_tensor", _unsupported("nested")),
                       ("_rebuild_meta_tensor_no_storage", _unsupported("meta")),
                       ("_rebuild_wrapper_subclass", _unsupported("wrapper-subclass")),
                       ("_rebuild_device_tensor_from_numpy", _unsupported("numpy-backed")),
                       ("_rebuild_device_tensor_from_cpu_tensor", _unsupported("device"))):
        path = f"torch._utils.{name}"
        table[path] = Function(path, impl, makes_tensor=True)
    path = "torch._tensor._rebuild_from_type_v2"          # not makes_tensor: it cannot nest
    table[path] = Function(path, _rebuild_from_type_v2)
    for name, dtype in STORAGE_TO_TORCH.items():
        untyped = name == "UntypedStorage"
        for module in ("torch", "torch.storage" if untyped else "torch.cuda"):
            table[f"{module}.{name}"] = StorageType(f"{module}.{name}", dtype)
    for name in ("QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage",
                 "QUInt2x4Storage"):
        table[f"torch.{name}"] = StorageType(f"torch.{name}", name[:-7].lower())
    for name in (*TORCH_TO_NUMPY, *TORCH_UNSUPPORTED_DTYPES):
        table[f"torch.{name}"] = DType(f"torch.{name}", name)
    for name in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                 "per_channel_symmetric", "per_channel_affine_float_qparams"):
        table[f"torch.{name}"] = Global(f"torch.{name}")
    return table


ALLOWED_GLOBALS = _allow_list()


def _describe(obj) -> str:
    """A short description of a pickle value for error messages: its type, never its repr (which
    could recurse, or take exponential time on a structure shared through the memo)."""
    if type(obj) is int:
        return f"int {obj}" if abs(obj) < 1 << 64 else "int"
    return obj.path if isinstance(obj, Global) else type(obj).__name__


# ---- the interpreter ----------------------------------------------------------------------------

class _Interpreter:
    """One pickle stream in `data` from `pos`; see load_pickle."""

    def __init__(self, data: bytes, pos: int, persistent_load):
        self.data, self.pos, self.persistent_load = data, pos, persistent_load
        self.stack: list = []
        self.metastack: list = []
        self.memo: dict = {}
        self.work_left = WORK_PER_BYTE * (len(data) - pos) + MIN_WORK

    def spend(self, units: int):
        """Charge the work budget (called by the allow-listed callables)."""
        self.work_left -= units
        if self.work_left < 0:
            raise UnsafeFileError("the pickle asks for more work than its size justifies")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise CorruptFileError(f"needs {n} more bytes but only {len(self.data) - self.pos} "
                                   "remain (truncated file?)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + MAX_GLOBAL_LINE)
        if end < 0:
            raise CorruptFileError(f"GLOBAL name longer than {MAX_GLOBAL_LINE} bytes or "
                                   "truncated")
        text = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return text

    def pop_mark(self) -> list:
        if not self.metastack:
            raise CorruptFileError("an opcode pops to a MARK that was never set")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def run(self) -> Any:
        data = self.data
        while True:
            if self.pos >= len(data):
                raise CorruptFileError("the pickle ends without STOP (truncated file?)")
            start, code = self.pos, data[self.pos]
            self.pos += 1
            try:
                if code == _STOP:
                    return self.stop()
                handler = _DISPATCH.get(code)
                if handler is None:
                    op = pickletools.code2op.get(chr(code))
                    if op is None:
                        raise CorruptFileError(f"byte 0x{code:02x} is not a pickle opcode")
                    raise UnsafeFileError(f"pickle opcode {op.name} is not allowed "
                                          "(only torch's protocol-2 subset is)")
                handler(self)
            except IndexError:
                raise CorruptFileError(f"pickle opcode {pickletools.code2op[chr(code)].name} at "
                                       f"byte {start} finds too few items on the stack") from None
            except (struct.error, UnicodeError, OverflowError) as e:
                raise CorruptFileError(f"pickle byte {start}: {e}") from None
            except FileFormatError as e:
                raise type(e)(f"{e} (pickle byte {start})") from None

    # -- opcodes, in the order of the module docstring --
    def proto(self):
        if self.take(1)[0] > 5:
            raise CorruptFileError("unknown pickle protocol")

    def stop(self):
        if self.metastack or len(self.stack) != 1:
            raise CorruptFileError("STOP with an open MARK or not exactly one object on the stack")
        return self.stack.pop()

    def global_(self):
        module, name = self.line(), self.line()
        module = "builtins" if module == "__builtin__" else module   # Python 2 files
        sentinel = ALLOWED_GLOBALS.get(f"{module}.{name}")
        if sentinel is None:
            raise UnsafeFileError(f"GLOBAL {module}.{name} is not allowed (only tensor-rebuild "
                                  "functions, storage and dtype types and plain containers are)")
        self.stack.append(sentinel)

    def newobj(self):
        args, cls = self.stack.pop(), self.stack.pop()
        if cls is _PARAMETER and type(args) is tuple and args and \
                isinstance(args[0], TensorRef):
            self.stack.append(args[0])
        elif cls in (_ORDERED_DICT, _COUNTER):
            self.stack.append({})
        else:
            raise UnsafeFileError(f"NEWOBJ of {_describe(cls)} is not allowed (only Parameter "
                                  "and OrderedDict are)")

    def reduce(self):
        args, func = self.stack.pop(), self.stack[-1]
        if not isinstance(func, Function):
            raise UnsafeFileError(f"REDUCE calls {_describe(func)}, which is not an allow-listed "
                                  "callable")
        if type(args) is not tuple:
            raise CorruptFileError(f"REDUCE arguments are a {_describe(args)}, not a tuple")
        self.stack[-1] = func.impl(self, args)

    def build(self):
        self.stack.pop()                 # the state: Python attributes, nothing we keep
        if type(self.stack[-1]) not in (dict, TensorRef):
            raise UnsafeFileError(f"BUILD on a {_describe(self.stack[-1])} is not allowed (only "
                                  "on tensors and OrderedDicts)")

    def append(self):
        item = self.stack.pop()
        self._list_target("APPEND").append(item)

    def appends(self):
        items = self.pop_mark()
        self._list_target("APPENDS").extend(items)

    def _list_target(self, op: str) -> list:
        if type(self.stack[-1]) is not list:
            raise UnsafeFileError(f"{op} on a {_describe(self.stack[-1])} is not allowed "
                                  "(only on lists)")
        return self.stack[-1]

    def setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._dict_target("SETITEM")[_check_key(self, key)] = value

    def setitems(self):
        items = self.pop_mark()
        target = self._dict_target("SETITEMS")
        if len(items) % 2:
            raise CorruptFileError("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            target[_check_key(self, items[i])] = items[i + 1]

    def _dict_target(self, op: str) -> dict:
        if type(self.stack[-1]) is not dict:
            raise UnsafeFileError(f"{op} on a {_describe(self.stack[-1])} is not allowed "
                                  "(only on dicts)")
        return self.stack[-1]

    def mark(self):
        if len(self.metastack) >= MAX_MARK_DEPTH:
            raise UnsafeFileError(f"the pickle nests MARKs deeper than {MAX_MARK_DEPTH}")
        self.metastack.append(self.stack)
        self.stack = []

    def tuple_(self):
        items = tuple(self.pop_mark())       # pop_mark swaps self.stack: append afterwards
        self.stack.append(items)

    def tuple1(self):
        self.stack[-1] = (self.stack[-1],)

    def tuple2(self):
        self.stack[-2:] = [(self.stack[-2], self.stack[-1])]

    def tuple3(self):
        self.stack[-3:] = [(self.stack[-3], self.stack[-2], self.stack[-1])]

    def binint(self):
        self.stack.append(self.unpack("<i"))

    def binint1(self):
        self.stack.append(self.take(1)[0])

    def binint2(self):
        self.stack.append(self.unpack("<H"))

    def binfloat(self):
        self.stack.append(self.unpack(">d"))

    def binunicode(self):
        n = self.unpack("<I")
        if n > MAX_STRING:
            raise CorruptFileError(f"a string of {n} bytes (more than {MAX_STRING})")
        self.stack.append(self.take(n).decode("utf-8", "surrogatepass"))

    def short_binstring(self):
        # Python 2 str: the notes say ASCII; latin-1 agrees on ASCII and never fails.
        self.stack.append(self.take(self.take(1)[0]).decode("latin-1"))

    def long1(self):
        self.stack.append(int.from_bytes(self.take(self.take(1)[0]), "little", signed=True))

    def binpersid(self):
        pid = self.stack.pop()
        if type(pid) is not tuple or not pid or pid[0] not in ("storage", b"storage"):
            raise UnsafeFileError("BINPERSID only loads ('storage', ...) ids, got a "
                                  f"{_describe(pid)}")
        if self.persistent_load is None:
            raise CorruptFileError("a storage reference where none is expected")
        self.stack.append(self.persistent_load(pid))

    def get(self, index: int):
        try:
            self.stack.append(self.memo[index])
        except KeyError:
            raise CorruptFileError(f"memo entry {index} is read before it is written") from None

    def put(self, index: int):
        if index not in self.memo and len(self.memo) >= MAX_MEMO:
            raise UnsafeFileError(f"the pickle memoizes more than {MAX_MEMO} objects")
        self.memo[index] = self.stack[-1]


def _push(value):
    return lambda self: self.stack.append(value)


def _push_new(factory):
    return lambda self: self.stack.append(factory())


_STOP = ord(".")
_DISPATCH: dict = {
    0x80: _Interpreter.proto, ord("c"): _Interpreter.global_,
    0x81: _Interpreter.newobj, ord("R"): _Interpreter.reduce, ord("b"): _Interpreter.build,
    ord("a"): _Interpreter.append, ord("e"): _Interpreter.appends,
    ord("s"): _Interpreter.setitem, ord("u"): _Interpreter.setitems,
    ord("("): _Interpreter.mark, ord("t"): _Interpreter.tuple_, 0x85: _Interpreter.tuple1,
    0x86: _Interpreter.tuple2, 0x87: _Interpreter.tuple3,
    ord("N"): _push(None), 0x89: _push(False),
    0x88: _push(True), ord(")"): _push(()),
    ord("]"): _push_new(list), ord("}"): _push_new(dict),
    0x8f: _push_new(set),
    ord("J"): _Interpreter.binint, ord("K"): _Interpreter.binint1,
    ord("M"): _Interpreter.binint2, ord("G"): _Interpreter.binfloat,
    ord("X"): _Interpreter.binunicode, ord("U"): _Interpreter.short_binstring,
    0x8a: _Interpreter.long1, ord("Q"): _Interpreter.binpersid,
    ord("h"): lambda self: self.get(self.take(1)[0]),
    ord("j"): lambda self: self.get(self.unpack("<I")),
    ord("q"): lambda self: self.put(self.take(1)[0]),
    ord("r"): lambda self: self.put(self.unpack("<I")),
}


def load_pickle(data: bytes, pos: int = 0, *, source: str,
                persistent_load: Optional[Callable[[tuple], StorageRef]] = None):
    """Interpret the pickle stream that starts at byte `pos` of `data`.

    Args:
        data: the bytes holding the stream (other data may follow it).
        pos: where the stream starts.
        source: names the stream in error messages, e.g. "model.pth (data.pkl)".
        persistent_load: called with each ('storage', ...) persistent id tuple; returns the
            StorageRef it stands for. None: persistent ids are an error.

    Returns:
        (object, end): the unpickled object (dicts, lists, tuples, scalars, TensorRefs,
        inert Globals) and the position just after STOP.

    Raises:
        UnsafeFileError: the stream uses a global, opcode or call outside the allow-list.
        CorruptFileError: the stream is truncated or inconsistent.
        FileFormatError: the stream holds tensors of an unsupported kind.
    """
    interpreter = _Interpreter(data, pos, persistent_load)
    try:
        return interpreter.run(), interpreter.pos
    except FileFormatError as e:
        raise type(e)(f"{source}: {e}") from None
