"""A small reverse-mode autograd over numpy (CPU) and CuPy (GPU) arrays.

    x = fc.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()            # x.grad == [[2., 4.]]

`Tensor` wraps an array (`.data`) and remembers the `Function` node that made it. A Function's
`forward` works on plain arrays and saves on `self` only what its `backward` needs; `backward`
gets the output gradient and returns one gradient (or None) per Tensor input. `Tensor.backward`
visits the graph in a deterministic reverse topological order (depth-first over inputs in argument
order) and accumulates gradients into leaves that require them; broadcasting is undone by summing
over the broadcast axes. Under `no_grad()` nothing is recorded. Gradients of non-leaf tensors are
not kept (as in PyTorch). The graph is freed after `backward()` unless `retain_graph=True` (a
second backward through a freed graph raises).
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "tensor", "zeros",
           "ones", "concat", "cat", "stack", "where", "maximum", "minimum", "array_module"]

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad", True)


class _GradMode:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.grad = self.enabled

    def __exit__(self, *exc):
        _state.grad = self.prev

    def __call__(self, fn):  # also usable as a decorator
        def wrapped(*args, **kwargs):
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped


def no_grad() -> _GradMode:
    """Context manager (or decorator) under which no graph is recorded."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    return _GradMode(True)


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """numpy for CPU arrays, cupy for GPU arrays."""
    if _is_cupy(a):
        import cupy
        return cupy
    return np


def _as_array(data, dtype=None):
    """An ndarray from data: arrays kept (cast if dtype is given), Python floats become float32,
    ints int64, bools bool (PyTorch's defaults)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic):  # numpy scalars (e.g. a full reduction) keep their dtype
        data = np.asarray(data)
    if isinstance(data, np.ndarray) or _is_cupy(data):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        return arr
    raise TypeError(f"tensor: cannot make a tensor from data of dtype {arr.dtype} "
                    f"(expected numbers, booleans or a numpy/cupy array)")


class _Freed:
    """Stands in for a Function whose saved arrays were released by backward(): the tensor stays
    a non-leaf, and a second backward through it raises instead of treating it as a leaf."""
    parents = ()


_FREED = _Freed()


# Below this size one numpy pass on the calling thread costs about what handing it to the
# threads does (the call, the checks, waking workers).
_THREADED_MIN_BYTES = 1 << 20


def _on_threads(a, b=None) -> bool:
    """Whether fastconv._C's element-wise helpers take a (and b) as they are: numpy arrays of at
    least _THREADED_MIN_BYTES, one native float32/float64 dtype and one shape, C-contiguous and
    aligned, outside the CUDA emulation."""
    if type(a) is not np.ndarray or a.nbytes < _THREADED_MIN_BYTES:
        return False
    from fastconv import _gpu
    if _gpu.emulating() or a.dtype not in (np.float32, np.float64) or not a.dtype.isnative:
        return False
    for x in (a,) if b is None else (a, b):
        if (type(x) is not np.ndarray or x.dtype != a.dtype or x.shape != a.shape
                or not (x.flags.c_contiguous and x.flags.aligned)):
            return False
    return True


def _add(a, b):
    """a + b; on the CPU kernels' threads for large numpy arrays of one shape and dtype (the
    same bits as numpy's add)."""
    if _on_threads(a, b):
        from fastconv import _C
        out = np.empty_like(a)
        _C.add(a, b, out)
        return out
    return a + b


def _copy(a):
    """A copy of a (an array of its own); on the threads for large numpy arrays."""
    if _on_threads(a):
        from fastconv import _C
        out = np.empty_like(a)
        _C.copy(a, out)
        return out
    return array_module(a).array(a)


def _unbroadcast(grad, shape: Tuple[int, ...]):
    """Sum grad over the axes along which an operand of `shape` was broadcast."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and grad.shape[i + lead] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Function:
    """A node of the graph. Subclasses implement forward(*arrays, **options) -> array and
    backward(grad) -> gradient or tuple of gradients, one per Tensor argument of apply()."""

    def __init__(self, *tensors: "Tensor"):
        self.parents = tensors
        self.needs_grad = tuple(t.requires_grad for t in tensors)
        self.tracking = False  # set by apply(): will this node be recorded?

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *tensors: "Tensor", **kwargs) -> "Tensor":
        """Run forward on the tensors' arrays; record the node when any input needs a gradient."""
        ctx = cls(*tensors)
        # forward may skip saving what only backward needs when nothing will be recorded
        ctx.tracking = any(ctx.needs_grad) and is_grad_enabled()
        out = ctx.forward(*[t.data for t in tensors], **kwargs)
        result = Tensor(out)
        if ctx.tracking and result.dtype.kind == "f":
            result.requires_grad, result._ctx = True, ctx
        return result


class Tensor:
    """An n-dimensional array with an optional gradient.

    Args:
        data: a numpy or cupy array, a Tensor, or nested Python numbers (floats become float32).
        requires_grad: record operations on it so that backward() fills `.grad`.
        dtype: cast to this dtype.
    """
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Optional[Function] = None
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got dtype "
                            f"{self.data.dtype}")

    # ----------------------------------------------------------------- properties and conversion
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: "cuda" if _is_cupy(self.data) else "cpu")
    is_leaf = property(lambda self: self._ctx is None)
    T = property(lambda self: self.transpose(-1, -2) if self.ndim >= 2 else self)

    def size(self, dim: Optional[int] = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"bool: the truth value of a tensor with {self.data.size} elements "
                             f"(shape {self.shape}) is ambiguous; use .numpy().any() or .all()")
        return bool(self.data.reshape(()).item())

    def numpy(self) -> np.ndarray:
        """The data as a numpy array (copied from the GPU when needed); detached."""
        return self.data.get() if _is_cupy(self.data) else self.data

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, "
                             f"this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        self.requires_grad = bool(flag)
        return self

    def to(self, target) -> "Tensor":
        """Move to 'cpu' / 'cuda' (differentiably), or cast to a dtype (np.float32 ...)."""
        if isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda"):
            if target.split(":")[0] == self.device:
                return self
            return _ToDevice.apply(self, device=target.split(":")[0])
        return self.astype(target)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def astype(self, dtype) -> "Tensor":
        dtype = np.dtype(dtype)
        return self if dtype == self.dtype else _Cast.apply(self, dtype=dtype)

    float = lambda self: self.astype(np.float32)  # noqa: E731
    double = lambda self: self.astype(np.float64)  # noqa: E731

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # ----------------------------------------------------------------------------- backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires grad. `grad`
        defaults to 1 for a one-element tensor."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input of the "
                               "computation that made it had requires_grad=True, or it was made "
                               "under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element tensor "
                                   f"(a loss), this one has shape {self.shape}")
            grad = array_module(self.data).ones_like(self.data)
        else:
            grad = _as_array(grad, self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the tensor "
                                 f"has shape {self.shape}")
        order = self._topological_order()
        grads = {id(self): grad}
        for node in order:
            g = grads.pop(id(node), None)
            if node._ctx is None:
                if g is not None and node.requires_grad:
                    xp = array_module(g)  # 0-d gradients stay arrays, not numpy scalars
                    node.grad = _copy(g) if node.grad is None else xp.asarray(_add(node.grad, g))
                continue
            if g is None:
                continue
            ctx = node._ctx
            parent_grads = ctx.backward(g)
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            for parent, need, pg in zip(ctx.parents, ctx.needs_grad, parent_grads):
                if not need or pg is None:
                    continue
                pg = _unbroadcast(pg, parent.data.shape)
                if pg.dtype != parent.data.dtype:
                    pg = pg.astype(parent.data.dtype)
                prev = grads.get(id(parent))
                grads[id(parent)] = pg if prev is None else _add(prev, pg)
            if not retain_graph:
                node._ctx = _FREED

    def _topological_order(self):
        """Nodes from self down to the leaves, each after every node that uses it."""
        seen, post, stack = set(), [], [(self, False)]
        while stack:
            node, done = stack.pop()
            if done:
                post.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node._ctx is _FREED:
                raise RuntimeError("backward: trying to backward through the graph a second time "
                                   "(its saved arrays were freed by the first backward); pass "
                                   "retain_graph=True to the first backward() to keep them")
            if node._ctx is not None:
                for p in reversed(node._ctx.parents):
                    if p.requires_grad and id(p) not in seen:
                        stack.append((p, False))
        return reversed(post)

    # ----------------------------------------------------------------------------- operators
    def _wrap(self, other) -> "Tensor":
        """An operand as a Tensor; Python numbers take this tensor's float dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.ndarray) or _is_cupy(other):
            return Tensor(other)
        arr = np.asarray(other)
        if self.dtype.kind == "f" and arr.dtype.kind in "fiub":
            arr = arr.astype(self.dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        return Tensor(array_module(self.data).asarray(arr))

    def __add__(self, o): return _Add.apply(self, self._wrap(o))
    def __radd__(self, o): return _Add.apply(self._wrap(o), self)
    def __sub__(self, o): return _Sub.apply(self, self._wrap(o))
    def __rsub__(self, o): return _Sub.apply(self._wrap(o), self)
    def __mul__(self, o): return _Mul.apply(self, self._wrap(o))
    def __rmul__(self, o): return _Mul.apply(self._wrap(o), self)
    def __truediv__(self, o): return _Div.apply(self, self._wrap(o))
    def __rtruediv__(self, o): return _Div.apply(self._wrap(o), self)
    def __matmul__(self, o): return _MatMul.apply(self, self._wrap(o))
    def __rmatmul__(self, o): return _MatMul.apply(self._wrap(o), self)
    def __neg__(self): return _Neg.apply(self)
    def __pos__(self): return self

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return (exponent * self.log()).exp()
        return _Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base):
        return self._wrap(base) ** self

    def _compare(self, o, op) -> "Tensor":
        return Tensor(op(self.data, o.data if isinstance(o, Tensor) else o))

    def __lt__(self, o): return self._compare(o, lambda a, b: a < b)
    def __le__(self, o): return self._compare(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._compare(o, lambda a, b: a > b)
    def __ge__(self, o): return self._compare(o, lambda a, b: a >= b)
    def __eq__(self, o): return self._compare(o, lambda a, b: a == b)  # elementwise, as in torch
    def __ne__(self, o): return self._compare(o, lambda a, b: a != b)
    __hash__ = object.__hash__  # hashed by identity
    eq, ne = __eq__, __ne__

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return _Index.apply(self, index=index)

    def neg(self): return -self
    def exp(self): return _Exp.apply(self)
    def log(self): return _Log.apply(self)
    def sqrt(self): return _Pow.apply(self, exponent=0.5)
    def abs(self): return _Abs.apply(self)
    def clamp(self, min=None, max=None): return _Clamp.apply(self, lo=min, hi=max)  # noqa: A002
    clip = clamp

    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _Sum.apply(self, axis=_axes("sum", axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        axes = _axes("mean", axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        return self.sum(axes, keepdims) * (1.0 / max(count, 1))

    def var(self, axis=None, keepdims: bool = False, unbiased: bool = False) -> "Tensor":
        axes = _axes("var", axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        d = self - self.mean(axes, keepdims=True)
        return (d * d).sum(axes, keepdims) * (1.0 / max(count - (1 if unbiased else 0), 1))

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _Max.apply(self, axis=_axes("max", axis, self.ndim), keepdims=keepdims)

    def argmax(self, axis=None) -> "Tensor":
        return Tensor(self.data.argmax(axis=axis))

    def reshape(self, *shape) -> "Tensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _dim("flatten", start_dim, self.ndim), _dim("flatten", end_dim, self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def permute(self, *dims) -> "Tensor":
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        dims = tuple(_dim("permute", d, self.ndim) for d in dims)
        if sorted(dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims must be a permutation of the {self.ndim} dimensions, "
                             f"got {dims}")
        return _Permute.apply(self, dims=dims)

    def transpose(self, dim0: int = -2, dim1: int = -1) -> "Tensor":
        dims = list(range(self.ndim))
        dim0, dim1 = _dim("transpose", dim0, self.ndim), _dim("transpose", dim1, self.ndim)
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    def unsqueeze(self, dim: int) -> "Tensor":
        dim = _dim("unsqueeze", dim, self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim: Optional[int] = None) -> "Tensor":
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dim = _dim("squeeze", dim, self.ndim)
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def relu(self) -> "Tensor":
        return _ReLU.apply(self)

    def sigmoid(self) -> "Tensor":
        return _Sigmoid.apply(self)

    def tanh(self) -> "Tensor":
        return _Tanh.apply(self)


def _dim(op: str, dim: int, ndim: int) -> int:
    """dim in [-ndim, ndim) as a non-negative index (ValueError naming op otherwise)."""
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(valid: {-ndim}..{ndim - 1})")
    return dim % ndim


def _axes(op: str, axis, ndim: int) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted({_dim(op, a, ndim) for a in axis})) if ndim else ()


# ------------------------------------------------------------------------------- Functions
class _Add(Function):
    def forward(self, a, b): return _add(a, b)
    def backward(self, g): return g, g


class _Sub(Function):
    def forward(self, a, b): return a - b
    def backward(self, g): return g, -g


class _Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return (g * self.b if self.needs_grad[0] else None,
                g * self.a if self.needs_grad[1] else None)


class _Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = g / self.b if self.needs_grad[0] else None
        gb = -g * self.a / (self.b * self.b) if self.needs_grad[1] else None
        return ga, gb


class _Neg(Function):
    def forward(self, a): return -a
    def backward(self, g): return -g


class _Pow(Function):
    def forward(self, a, exponent):
        self.a, self.e = a, exponent
        return a ** exponent

    def backward(self, g):
        return g * self.e * self.a ** (self.e - 1)


class _Exp(Function):
    def forward(self, a):
        self.out = array_module(a).exp(a)
        return self.out

    def backward(self, g): return g * self.out


class _Log(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).log(a)

    def backward(self, g): return g / self.a


class _Abs(Function):
    def forward(self, a):
        self.sign = array_module(a).sign(a)
        return abs(a)

    def backward(self, g): return g * self.sign


class _Clamp(Function):
    def forward(self, a, lo, hi):
        xp = array_module(a)
        self.mask = xp.ones(a.shape, dtype=bool)
        if lo is not None:
            self.mask &= a >= lo
        if hi is not None:
            self.mask &= a <= hi
        return xp.clip(a, lo, hi)

    def backward(self, g): return g * self.mask


class _ReLU(Function):
    def forward(self, a):
        from fastconv.nn._functions import clamp_activation  # the nn layer imports this module
        out = clamp_activation(a, "relu")
        if self.tracking:
            self.out = out
        return out

    def backward(self, g):
        from fastconv.nn._functions import clamp_gradient
        return clamp_gradient(g, self.out, "relu")


class _Sigmoid(Function):
    def forward(self, a):
        xp = array_module(a)
        self.out = 0.5 * (xp.tanh(0.5 * a) + 1)  # overflow-free logistic
        return self.out

    def backward(self, g): return g * self.out * (1 - self.out)


class _Tanh(Function):
    def forward(self, a):
        self.out = array_module(a).tanh(a)
        return self.out

    def backward(self, g): return g * (1 - self.out * self.out)


class _Maximum(Function):
    """Elementwise max; a tie sends half the gradient to each side (as PyTorch does)."""
    def forward(self, a, b):
        self.wa = (a > b) + 0.5 * (a == b)
        return array_module(a).maximum(a, b)

    def backward(self, g):
        return g * self.wa.astype(g.dtype), g * (1 - self.wa).astype(g.dtype)


class _Where(Function):
    def forward(self, a, b, cond):
        self.cond = cond
        return array_module(a).where(cond, a, b)

    def backward(self, g):
        zero = g.dtype.type(0)
        xp = array_module(g)
        return xp.where(self.cond, g, zero), xp.where(self.cond, zero, g)


class _MatMul(Function):
    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands must have at least 2 dimensions here, got "
                             f"shapes {tuple(a.shape)} and {tuple(b.shape)} (reshape 1-D vectors)")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        ga = g @ self.b.swapaxes(-1, -2) if self.needs_grad[0] else None
        gb = self.a.swapaxes(-1, -2) @ g if self.needs_grad[1] else None
        return ga, gb


class _Sum(Function):
    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims:
            g = g.reshape([1 if i in self.axis else s for i, s in enumerate(self.shape)])
        return array_module(g).broadcast_to(g, self.shape)


class _Max(Function):
    """max over axes; ties share the gradient equally."""
    def forward(self, a, axis, keepdims):
        out = a.max(axis=axis, keepdims=True)
        self.mask = (a == out)
        self.mask = self.mask / self.mask.sum(axis=axis, keepdims=True)
        self.shape, self.axis = out.shape, axis
        return out if keepdims else out.reshape([s for i, s in enumerate(out.shape) if i not in axis])

    def backward(self, g):
        return g.reshape(self.shape) * self.mask.astype(g.dtype)


class _Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g): return g.reshape(self.shape)


class _Permute(Function):
    def forward(self, a, dims):
        self.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    def backward(self, g): return g.transpose(self.inverse)


class _Index(Function):
    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return a[index]

    def backward(self, g):
        xp = array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic_index(self.index):
            out[self.index] = g
        elif xp is np:  # fancy indices may repeat: accumulate
            np.add.at(out, self.index, g)
        else:
            import cupyx
            cupyx.scatter_add(out, self.index, g)
        return out


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class _Concat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(array_module(g).split(g, self.splits, axis=self.axis))


class _Cast(Function):
    def forward(self, a, dtype):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g): return g.astype(self.dtype)


class _ToDevice(Function):
    def forward(self, a, device):
        self.source = "cuda" if _is_cupy(a) else "cpu"
        return _move(a, device)

    def backward(self, g): return _move(g, self.source)


def _move(a, device: str):
    if device == "cpu":
        return a.get() if _is_cupy(a) else a
    try:
        import cupy
    except ImportError:
        raise RuntimeError("to('cuda'): CuPy is not installed; pip install \"fastconv[cuda]\" on a "
                           "machine with an NVIDIA GPU") from None
    if _is_cupy(a):
        return a
    if not cupy.cuda.is_available():
        raise RuntimeError("to('cuda'): CuPy sees no usable GPU (no device, or the NVIDIA driver is "
                           "missing or too old); keep the data on the CPU")
    return cupy.asarray(a)


# ------------------------------------------------------------------------ module-level helpers
def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new leaf tensor (floats default to float32)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (torch.cat)."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concat: need at least one tensor")
    return _Concat.apply(*tensors, axis=axis % tensors[0].ndim)


cat = concat


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along a new axis."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: need at least one tensor")
    return concat([t.unsqueeze(axis) for t in tensors], axis=axis)


def where(condition, a, b) -> Tensor:
    """Elementwise condition ? a : b, differentiable in a and b."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    a = a if isinstance(a, Tensor) else Tensor(a)
    b = b if isinstance(b, Tensor) else a._wrap(b)
    return _Where.apply(a, b, cond=cond)


def maximum(a, b) -> Tensor:
    a = a if isinstance(a, Tensor) else Tensor(a)
    return _Maximum.apply(a, a._wrap(b))


def minimum(a, b) -> Tensor:
    a = a if isinstance(a, Tensor) else Tensor(a)
    return -_Maximum.apply(-a, -a._wrap(b))
