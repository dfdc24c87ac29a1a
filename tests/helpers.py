"""Checks shared by the kernel tests: run one configuration through fastconv (the public functions
and, with poisoned outputs, fastconv._C directly), the float64 reference and torch, forward and
every gradient. Arguments are given as a user would (ints, tuples, 'same'); they are resolved
with fastconv._shape for the reference and the raw kernels."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C, _shape, ref
from fastconv.nn._common import pool_args
from fastconv.testing import assert_close, assert_no_worse_than

DTYPES = (np.float32, np.float64)


def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def poisoned(shape, dtype):
    """An output array full of NaN: any element the kernel fails to write shows up."""
    return np.full(shape, np.nan, dtype=dtype)


LAYOUTS = ("strided", "negative_strides", "fortran", "swapped_axes", "read_only", "big_endian",
           "misaligned")


def layouts(a):
    """The values of a in odd memory layouts (none of them native C-contiguous and writeable)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    ro = a.copy()
    ro.setflags(write=False)
    buf = np.empty(a.nbytes + 1, np.uint8)
    mis = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
    mis[...] = a
    assert not mis.flags.aligned
    swapped = (np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2) if a.ndim >= 2
               else a[::-1].copy()[::-1])
    out = {
        "strided": big[..., ::2],
        "negative_strides": a[..., ::-1].copy()[..., ::-1],
        "fortran": np.asfortranarray(a),
        "swapped_axes": swapped,
        "read_only": ro,
        "big_endian": a.astype(a.dtype.newbyteorder(">")),
        "misaligned": mis,
    }
    for v in out.values():
        np.testing.assert_array_equal(v, a)
    return out


# ---- convolution ------------------------------------------------------------------------------

def conv_config(xshape, wshape, stride, padding, dilation):
    stride = _shape.pair("t", "stride", stride)
    dilation = _shape.pair("t", "dilation", dilation)
    pad = _shape.resolve_padding("t", padding, xshape[2:], wshape[2:], stride, dilation)
    return stride, pad, dilation


def check_conv2d(rng, xshape, wshape, bias, stride, padding, dilation, groups, dtype):
    """fastconv vs ref.py: forward, input / weight / bias gradients, through F / G and through _C
    with poisoned outputs."""
    x, w = randn(rng, xshape, dtype), randn(rng, wshape, dtype)
    b = randn(rng, (wshape[0],), dtype) if bias else None
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    y_ref = ref.conv2d(x, w, b, s, pad, d, groups)
    gy = randn(rng, y_ref.shape, dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    y = F.conv2d(x, w, b, **args)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, name="conv2d")
    dx_ref = ref.conv2d_input(gy, w, xshape, s, pad, d, groups)
    dw_ref = ref.conv2d_weight(gy, x, wshape, s, pad, d, groups)
    assert_close(G.conv2d_input(xshape, w, gy, **args), dx_ref, dtype, name="conv2d_input")
    assert_close(G.conv2d_weight(x, wshape, gy, **args), dw_ref, dtype, name="conv2d_weight")
    assert_close(G.conv2d_bias(gy), ref.conv2d_bias(gy), dtype, name="conv2d_bias")

    out = poisoned(y_ref.shape, dtype)
    _C.conv2d_forward(x, w, b, out, s, pad, d, groups)
    assert_close(out, y_ref, dtype, name="conv2d (poisoned out)")
    dx = poisoned(xshape, dtype)
    _C.conv2d_backward_input(gy, w, dx, s, pad, d, groups)
    assert_close(dx, dx_ref, dtype, name="conv2d_backward_input (poisoned out)")
    dw = poisoned(wshape, dtype)
    _C.conv2d_backward_weight(gy, x, dw, s, pad, d, groups)
    assert_close(dw, dw_ref, dtype, name="conv2d_backward_weight (poisoned out)")
    db = poisoned((wshape[0],), dtype)
    _C.conv2d_backward_bias(gy, db)
    assert_close(db, ref.conv2d_bias(gy), dtype, name="conv2d_backward_bias (poisoned out)")


def torch_conv2d(torch, x, w, b, gy, stride, padding, dilation, groups):
    """torch's forward and autograd gradients. Padding torch cannot express (4-tuples, 'same' with
    stride > 1) is applied with an explicit zero pad and a 'valid' convolution."""
    import torch.nn.functional as TF
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    s, pad, d = conv_config(x.shape, w.shape, stride, padding, dilation)
    native = (padding == "same" and s == (1, 1)) or padding == "valid" or not (
        isinstance(padding, str) or (isinstance(padding, (tuple, list)) and len(padding) == 4))
    if native:
        yt = TF.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    else:
        yt = TF.conv2d(TF.pad(xt, (pad[2], pad[3], pad[0], pad[1])), wt, bt, s, 0, d, groups)
    yt.backward(torch.tensor(gy))
    return (yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if b is None else bt.grad.numpy())


def check_conv2d_torch(torch, rng, xshape, wshape, bias, stride, padding, dilation, groups):
    """fastconv vs torch: float64 tightly (forward and autograd gradients); float32 no worse than
    twice torch's float32 error against the float64 reference (STYLE 7)."""
    x, w = randn(rng, xshape), randn(rng, wshape)
    b = randn(rng, (wshape[0],)) if bias else None
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, w, b, **args)
    gy = randn(rng, y.shape)
    y64, dx64, dw64, db64 = torch_conv2d(torch, x, w, b, gy, **args)
    ours = (y, G.conv2d_input(x.shape, w, gy, **args), G.conv2d_weight(x, w.shape, gy, **args),
            G.conv2d_bias(gy) if bias else None)
    names = ("conv2d", "conv2d_input", "conv2d_weight", "conv2d_bias")
    for name, a, e in zip(names, ours, (y64, dx64, dw64, db64)):
        if e is not None:
            assert_close(a, e, np.float64, name=name + " vs torch float64")

    f32 = lambda a: None if a is None else a.astype(np.float32)  # noqa: E731
    x32, w32, b32, gy32 = f32(x), f32(w), f32(b), f32(gy)
    t32 = torch_conv2d(torch, x32, w32, b32, gy32, **args)
    s, pad, d = conv_config(x.shape, w.shape, stride, padding, dilation)
    refs = (ref.conv2d(x32, w32, b32, s, pad, d, groups),
            ref.conv2d_input(gy32, w32, x.shape, s, pad, d, groups),
            ref.conv2d_weight(gy32, x32, w.shape, s, pad, d, groups),
            ref.conv2d_bias(gy32))
    ours32 = (F.conv2d(x32, w32, b32, **args), G.conv2d_input(x.shape, w32, gy32, **args),
              G.conv2d_weight(x32, w.shape, gy32, **args), G.conv2d_bias(gy32))
    for name, a, t, r in zip(names, ours32, t32, refs):
        if t is not None:
            assert a.dtype == np.float32
            assert_no_worse_than(a, t, r, name=name + " float32 vs torch")


# ---- pooling ----------------------------------------------------------------------------------

def pool_config(xshape, kernel, stride, padding, dilation=1):
    kernel, stride, dilation = pool_args("t", kernel, stride, dilation)
    pad = _shape.resolve_padding("t", padding, xshape[2:], kernel, stride, dilation)
    return kernel, stride, pad, dilation


def torch_can_pool(kernel, pad):
    """Whether torch's pooling accepts this (resolved) padding: symmetric and at most half the
    undilated kernel (fastconv allows asymmetric padding up to half the dilated kernel)."""
    return (pad[0] == pad[1] and pad[2] == pad[3] and pad[0] <= kernel[0] // 2
            and pad[2] <= kernel[1] // 2)


def check_max_pool2d(rng, xshape, kernel, stride, padding, dilation, ceil_mode, dtype, x=None):
    """fastconv vs ref.py: values and indices exactly, the input gradient closely, through F / G
    and through _C with poisoned outputs."""
    if x is None:
        x = randn(rng, xshape, dtype)
    k, s, pad, d = pool_config(xshape, kernel, stride, padding, dilation)
    y_ref, idx_ref = ref.max_pool2d(x, k, s, pad, d, ceil_mode)
    args = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    y, idx = F.max_pool2d(x, kernel, return_indices=True, **args)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref.astype(dtype), err_msg="max_pool2d values")
    np.testing.assert_array_equal(idx, idx_ref, err_msg="max_pool2d indices")
    np.testing.assert_array_equal(F.max_pool2d(x, kernel, **args), y)
    gy = randn(rng, y.shape, dtype)
    dx_ref = ref.max_pool2d_input(gy, idx_ref, xshape)
    assert_close(G.max_pool2d_input(xshape, gy, idx), dx_ref, dtype, name="max_pool2d_input")

    out, ind = poisoned(y.shape, dtype), np.full(y.shape, -12345, np.int64)
    _C.max_pool2d_forward(x, out, ind, k, s, pad, d, ceil_mode)
    np.testing.assert_array_equal(out, y_ref.astype(dtype), err_msg="poisoned out")
    np.testing.assert_array_equal(ind, idx_ref, err_msg="poisoned indices")
    out = poisoned(y.shape, dtype)
    _C.max_pool2d_forward(x, out, None, k, s, pad, d, ceil_mode)
    np.testing.assert_array_equal(out, y_ref.astype(dtype), err_msg="poisoned out, no indices")
    dx = poisoned(xshape, dtype)
    _C.max_pool2d_backward(gy, idx_ref, dx)
    assert_close(dx, dx_ref, dtype, name="max_pool2d_backward (poisoned out)")
    return y, idx


def check_max_pool2d_torch(torch, x, kernel, stride, padding, dilation, ceil_mode, gy=None):
    """Values, indices and the autograd input gradient equal torch's (torch-expressible padding)."""
    import torch.nn.functional as TF
    k, s, pad, d = pool_config(x.shape, kernel, stride, padding, dilation)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = TF.max_pool2d(xt, k, s, (pad[0], pad[2]), d, ceil_mode, return_indices=True)
    y, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg="max_pool2d vs torch")
    np.testing.assert_array_equal(idx, it.numpy(), err_msg="max_pool2d indices vs torch")
    if gy is None:
        gy = np.random.default_rng(0).standard_normal(y.shape).astype(x.dtype)
    yt.backward(torch.tensor(gy))
    assert_close(G.max_pool2d_input(x.shape, gy, idx), xt.grad.numpy(), x.dtype,
                 name="max_pool2d_input vs torch")


def check_avg_pool2d(rng, xshape, kernel, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, dtype):
    x = randn(rng, xshape, dtype)
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    flags = (ceil_mode, count_include_pad, divisor_override)
    y_ref = ref.avg_pool2d(x, k, s, pad, *flags)
    args = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad, divisor_override=divisor_override)
    y = F.avg_pool2d(x, kernel, **args)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, name="avg_pool2d")
    gy = randn(rng, y.shape, dtype)
    dx_ref = ref.avg_pool2d_input(gy, xshape, k, s, pad, *flags)
    assert_close(G.avg_pool2d_input(xshape, gy, kernel, **args), dx_ref, dtype,
                 name="avg_pool2d_input")
    cflags = (ceil_mode, count_include_pad, divisor_override or 0)
    out = poisoned(y.shape, dtype)
    _C.avg_pool2d_forward(x, out, k, s, pad, *cflags)
    assert_close(out, y_ref, dtype, name="avg_pool2d (poisoned out)")
    dx = poisoned(xshape, dtype)
    _C.avg_pool2d_backward(gy, dx, k, s, pad, *cflags)
    assert_close(dx, dx_ref, dtype, name="avg_pool2d_backward (poisoned out)")


def check_avg_pool2d_torch(torch, rng, xshape, kernel, stride, padding, ceil_mode,
                           count_include_pad, divisor_override, dtype=np.float64):
    import torch.nn.functional as TF
    x = randn(rng, xshape, dtype)
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.avg_pool2d(xt, k, s, (pad[0], pad[2]), ceil_mode, count_include_pad, divisor_override)
    args = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad, divisor_override=divisor_override)
    y = F.avg_pool2d(x, kernel, **args)
    assert_close(y, yt.detach().numpy(), dtype, name="avg_pool2d vs torch")
    gy = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(gy))
    assert_close(G.avg_pool2d_input(xshape, gy, kernel, **args), xt.grad.numpy(), dtype,
                 name="avg_pool2d_input vs torch")


def load_bench_script(name: str):
    """bench/<name>.py as a module (the scripts are not a package; they import harness)."""
    import importlib.util
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))  # for its `import harness`
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    return mod


@contextlib.contextmanager
def switched(get, set_, value):
    """Runs the block with a _C setting (get() / set_(value), e.g. _C.conv_algo / _C.set_conv_algo)
    at `value`, restoring the previous value afterwards."""
    old = get()
    set_(value)
    try:
        yield
    finally:
        set_(old)


def conv_in_threads(rng, nthreads=3, on_main=False):
    """Python threads running the same convolution 20 times each at once (kernels release the GIL),
    into poisoned outputs, each result against ref.py; with on_main, the calling thread too.
    Raises the first failure."""
    x = randn(rng, (2, 16, 20, 20), np.float32)
    w = randn(rng, (16, 16, 3, 3), np.float32)
    want = ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    errors = []

    def work():
        try:
            for _ in range(20):
                y = poisoned(want.shape, np.float32)
                _C.conv2d_forward(x, w, None, y, (1, 1), (1, 1, 1, 1), (1, 1), 1)
                assert_close(y, want, np.float32)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(nthreads)]
    for t in ts:
        t.start()
    if on_main:
        work()
    for t in ts:
        t.join()
    assert not errors, errors[0]
