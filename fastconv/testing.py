"""Test helpers: the tolerance table, assert_close (prints the worst elements on failure), a
float64 central-difference gradient checker (of plain functions and of fastconv's autograd), and
the instruction sets of fastconv._C, and the switch that runs the CUDA kernels on the CPU
(cuda_emulation).

Tolerances (STYLE 7) are per dtype of the array under test, compared with a float64 reference on
inputs of order 1 (standard normal) and reductions of up to a few thousand terms:

    dtype      rtol      atol      why
    float64    1e-10     1e-10     ~1e3 roundings of 1.1e-16 on sums of order 10, with headroom
    float32    2e-5      1e-4      relative: a few ulps (6e-8) per term kept; absolute: a sum of
                                   ~1e3 order-1 products has partial sums of order 30 (ulp 2e-6),
                                   and ~30 such roundings reach ~1e-4 where the result cancels
    float16    2e-3      2e-3      for the GPU (float32 accumulation): about twice float16's own
                                   rounding error (4.9e-4 ulp/2) on an order-1 result

A result passes where |actual - expected| <= atol + rtol * |expected| (NaN matching NaN and
infinities matching exactly). assert_no_worse_than checks STYLE 7's rule directly: the error of
fastconv against a float64 reference is at most `factor` times a baseline's (e.g. torch in the same
dtype), plus a floor: the table's tolerance at the largest reference element (atol + rtol * max|ref|).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

TOLERANCES: Dict[np.dtype, Tuple[float, float]] = {
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.float32): (2e-5, 1e-4),
    np.dtype(np.float16): (2e-3, 2e-3),
}


def tolerance(dtype) -> Tuple[float, float]:
    """(rtol, atol) of the table for dtype."""
    dt = np.dtype(dtype)
    dt = np.dtype(dt.type)  # byte order does not matter
    if dt not in TOLERANCES:
        raise ValueError(f"tolerance: no tolerance for dtype {dt.name}; known: "
                         f"{[d.name for d in TOLERANCES]}")
    return TOLERANCES[dt]


def _worst(actual: np.ndarray, expected: np.ndarray, excess: np.ndarray, k: int = 8) -> str:
    k = min(k, max(1, int(np.count_nonzero(excess > 0))))
    flat = np.argsort(excess, axis=None, kind="stable")[::-1][:k]
    lines = []
    for f in flat:
        i = np.unravel_index(f, excess.shape)
        a, e = float(actual[i]), float(expected[i])
        lines.append(f"    at {tuple(int(v) for v in i)}: actual {a!r}, expected {e!r}, "
                     f"|diff| {abs(a - e):.3g}")
    return "\n".join(lines)


def assert_close(actual, expected, dtype=None, rtol: Optional[float] = None,
                 atol: Optional[float] = None, name: str = "result") -> None:
    """Assert |actual - expected| <= atol + rtol * |expected| elementwise (NaNs in the same places,
    infinities equal). rtol/atol default to the table entry of `dtype` (default: actual's dtype).
    On failure the message gives the count of bad elements and the worst ones."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    table_rtol, table_atol = tolerance(dtype if dtype is not None else actual.dtype)
    rtol = table_rtol if rtol is None else rtol
    atol = table_atol if atol is None else atol
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    inf_mismatch = (np.isinf(a) | np.isinf(e)) & ~(a == e) & ~nan_a & ~nan_e
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - e)
        excess = diff - (atol + rtol * np.abs(e))
    excess = np.where(nan_a | nan_e, 0.0, np.nan_to_num(excess, nan=0.0))
    excess = np.where(nan_a != nan_e, np.inf, excess)
    excess = np.where(inf_mismatch, np.inf, excess)
    bad = excess > 0
    if bad.any():
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements differ beyond rtol={rtol:g}, "
            f"atol={atol:g} (shape {actual.shape}, dtype {actual.dtype}); worst:\n"
            + _worst(actual, expected, excess))


def max_error(actual, reference) -> float:
    """max |actual - reference| over finite entries (in float64)."""
    a, r = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    ok = np.isfinite(a) & np.isfinite(r)
    return float(np.max(np.abs(a - r)[ok], initial=0.0))


def assert_no_worse_than(actual, baseline, reference, factor: float = 2.0,
                         floor: Optional[float] = None, name: str = "result") -> None:
    """STYLE 7: actual's largest error against a float64 reference is at most `factor` times the
    baseline's (same dtype, e.g. torch), plus `floor` (default: the table's atol for actual's
    dtype plus its rtol times max |reference|, i.e. the table's tolerance at the largest element).
    Also checks the shapes and that NaNs sit in the same places as in the reference."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    if actual.shape != reference.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {reference.shape}")
    if not np.array_equal(np.isnan(actual), np.isnan(reference)):
        raise AssertionError(f"{name}: NaNs differ from the reference")
    if floor is None:
        finite = np.abs(reference[np.isfinite(reference)])
        rtol, atol = tolerance(actual.dtype)
        floor = atol + rtol * float(finite.max(initial=0.0))
    ea, eb = max_error(actual, reference), max_error(baseline, reference)
    if ea > factor * eb + floor:
        e = reference.astype(np.float64)
        excess = np.abs(actual.astype(np.float64) - e)
        excess = np.where(np.isfinite(excess), excess, 0.0)
        raise AssertionError(
            f"{name}: max error {ea:.3g} vs the float64 reference exceeds {factor:g} x the "
            f"baseline's {eb:.3g} + {floor:g}; worst:\n" + _worst(actual, e, excess))


# ---- gradients --------------------------------------------------------------------------------

def numerical_grad(f: Callable[..., np.ndarray], inputs: Sequence[np.ndarray],
                   grad_output: np.ndarray, eps: float = 1e-6,
                   wrt: Optional[Sequence[int]] = None) -> List[Optional[np.ndarray]]:
    """Central differences in float64 of L(inputs) = sum(f(*inputs) * grad_output) with respect to
    each input in `wrt` (default: all), i.e. the vector-Jacobian product that backward functions
    compute. Inputs are copied; entries not in `wrt` come back as None."""
    xs = [np.array(x, dtype=np.float64, copy=True) for x in inputs]
    gy = np.asarray(grad_output, dtype=np.float64)
    wrt = range(len(xs)) if wrt is None else wrt
    grads: List[Optional[np.ndarray]] = [None] * len(xs)
    for i in wrt:
        x = xs[i]
        g = np.zeros_like(x)
        flat, gflat = x.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            hi = float(np.sum(np.asarray(f(*xs), dtype=np.float64) * gy))
            flat[j] = old - eps
            lo = float(np.sum(np.asarray(f(*xs), dtype=np.float64) * gy))
            flat[j] = old
            gflat[j] = (hi - lo) / (2 * eps)
        grads[i] = g
    return grads


def gradcheck(f: Callable[..., np.ndarray], inputs: Sequence[np.ndarray],
              analytic: Sequence[Optional[np.ndarray]], grad_output: np.ndarray,
              eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-6, name: str = "grad") -> None:
    """Compare analytic vector-Jacobian products (one per input, None to skip) with central
    differences of f in float64 (f must be smooth around inputs: for max pooling, keep the values
    of each window apart by much more than eps)."""
    wrt = [i for i, a in enumerate(analytic) if a is not None]
    numeric = numerical_grad(f, inputs, grad_output, eps=eps, wrt=wrt)
    for i in wrt:
        assert_close(analytic[i], numeric[i], rtol=rtol, atol=atol, name=f"{name}[{i}]")


def gradcheck_autograd(fn: Callable, inputs: Sequence[np.ndarray], rng: np.random.Generator,
                       eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-6,
                       name: str = "grad") -> List[np.ndarray]:
    """Check fastconv's autograd for fn (Tensors in, one Tensor out) in float64: run fn on leaf
    Tensors that require grad, backpropagate a random output gradient, and compare every input's
    .grad with central differences of fn (evaluated without recording). An input the backward
    pass never reaches counts as a zero gradient, so a missing path fails. Returns the analytic
    gradients."""
    from fastconv.autograd import Tensor, no_grad
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    leaves = [Tensor(x.copy(), requires_grad=True) for x in xs]
    out = fn(*leaves)
    if out.dtype != np.float64:
        raise AssertionError(f"{name}: float64 inputs gave a {out.dtype} output")
    gy = rng.standard_normal(out.shape)
    out.backward(gy)
    analytic = []
    for i, (x, t) in enumerate(zip(xs, leaves)):
        g = np.zeros_like(x) if t.grad is None else np.asarray(t.grad)
        if g.shape != x.shape or g.dtype != np.float64:
            raise AssertionError(f"{name}[{i}]: gradient has shape {g.shape} and dtype {g.dtype}, "
                                 f"expected {x.shape} and float64")
        analytic.append(g)

    def f(*arrays):
        with no_grad():
            return fn(*[Tensor(a) for a in arrays]).data

    gradcheck(f, xs, analytic, gy, eps=eps, rtol=rtol, atol=atol, name=name)
    return analytic


# ---- instruction sets -------------------------------------------------------------------------

ISAS = ("baseline", "avx2", "avx512")


def supported_isas() -> List[str]:
    """The kernel variants fastconv._C can run on this CPU, from 'baseline' up to best_isa()."""
    from fastconv import _C
    best = _C.best_isa()
    return list(ISAS[:ISAS.index(best) + 1]) if best in ISAS else [best]


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run the block with fastconv._C's kernels of instruction set `name`, restoring the previous
    choice afterwards."""
    from fastconv import _C
    old = _C.isa()
    _C.set_isa(name)
    try:
        yield
    finally:
        _C.set_isa(old)


# ---- CUDA emulation ---------------------------------------------------------------------------

@contextlib.contextmanager
def cuda_emulation() -> Iterator[None]:
    """Inside the block, every op that the CPU path serves from a fastconv._C kernel (conv2d and
    its gradients, the poolings and their gradients, channel_affine, so BatchNorm and ReLU
    inference too) runs the CUDA kernels of csrc/cuda/ instead, on the CPU, through the emulation
    build fastconv._cuda_emu: numpy in, numpy out, float16 accepted and returned as float16. Array
    code stays numpy. An op whose CUDA kernel does not exist yet raises NotImplementedError; it
    never falls back to the CPU kernels. Per thread; nests.

        with fastconv.testing.cuda_emulation():
            y = F.max_pool2d(x, 3, stride=2)        # the CUDA kernel, run on the CPU
    """
    from fastconv import _gpu
    previous = _gpu.set_emulation(True)
    try:
        yield
    finally:
        _gpu.set_emulation(previous)
