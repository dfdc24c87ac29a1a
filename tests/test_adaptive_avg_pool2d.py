"""adaptive_avg_pool2d: forward and input gradient against ref.py under every kernel variant and
against torch, for output sizes that divide the input, that do not (overlapping windows), that
are larger than the input, None entries, unbatched and empty inputs, and random shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C, ref
from fastconv.testing import assert_close, gradcheck
from helpers import DTYPES, LAYOUTS, layouts, poisoned, randn

# (input (N, C, H, W), output_size)
CASES = {
    "global": ((2, 4, 7, 6), 1),
    "divides": ((2, 3, 8, 12), (4, 3)),
    "overlapping": ((2, 3, 7, 10), (3, 4)),
    "larger_than_input": ((1, 2, 3, 4), (5, 7)),
    "none_height": ((1, 3, 6, 9), (None, 4)),
    "none_width": ((1, 3, 6, 9), [4, None]),
    "identity": ((1, 2, 5, 5), 5),
    "7x7_from_odd": ((1, 3, 13, 15), 7),  # VGG / AlexNet head
    "wide": ((1, 2, 4, 45), (2, 6)),
    "many_planes": ((3, 17, 6, 6), 2),
    # more planes than one CUDA block of the small-plane global kernel takes (128; 64 in float64)
    "global_many_planes": ((3, 70, 8, 8), 1),
}


def _resolved(xshape, output_size):
    P, Q = (output_size, output_size) if isinstance(output_size, int) else output_size
    return (xshape[2] if P is None else P, xshape[3] if Q is None else Q)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_adaptive_avg_pool2d_vs_ref(isa, rng, case, dtype):
    xshape, output_size = case
    PQ = _resolved(xshape, output_size)
    x = randn(rng, xshape, dtype)
    y_ref = ref.adaptive_avg_pool2d(x, PQ)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, name="adaptive_avg_pool2d")
    gy = randn(rng, y.shape, dtype)
    dx_ref = ref.adaptive_avg_pool2d_input(gy, xshape)
    assert_close(G.adaptive_avg_pool2d_input(xshape, gy), dx_ref, dtype, name="adaptive_avg_pool2d_input")
    out = poisoned(y.shape, dtype)
    _C.adaptive_avg_pool2d_forward(x, out)
    assert_close(out, y_ref, dtype, name="adaptive_avg_pool2d (poisoned out)")
    dx = poisoned(xshape, dtype)
    _C.adaptive_avg_pool2d_backward(gy, dx)
    assert_close(dx, dx_ref, dtype, name="adaptive_avg_pool2d_backward (poisoned out)")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_adaptive_avg_pool2d_vs_torch(torch, rng, case, dtype):
    import torch.nn.functional as TF
    xshape, output_size = case
    x = randn(rng, xshape, dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.adaptive_avg_pool2d(xt, output_size)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert_close(y, yt.detach().numpy(), dtype)
    gy = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(gy))
    assert_close(G.adaptive_avg_pool2d_input(xshape, gy), xt.grad.numpy(), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adaptive_avg_pool2d_layouts(rng, layout):
    x = randn(rng, (2, 3, 9, 10), np.float32)
    y = F.adaptive_avg_pool2d(x, (4, 3))
    assert_close(F.adaptive_avg_pool2d(layouts(x)[layout], (4, 3)), y)
    gy = randn(rng, y.shape, np.float32)
    assert_close(G.adaptive_avg_pool2d_input(x.shape, layouts(gy)[layout]),
                 G.adaptive_avg_pool2d_input(x.shape, gy))


def test_adaptive_avg_pool2d_unbatched_and_empty(rng):
    x = randn(rng, (3, 7, 8))
    y = F.adaptive_avg_pool2d(x, (3, None))
    assert y.shape == (3, 3, 8)
    assert_close(y, F.adaptive_avg_pool2d(x[None], (3, None))[0])
    gy = randn(rng, y.shape)
    assert_close(G.adaptive_avg_pool2d_input(x.shape, gy),
                 G.adaptive_avg_pool2d_input((1,) + x.shape, gy[None])[0])
    e = np.zeros((0, 3, 7, 8), np.float32)
    assert F.adaptive_avg_pool2d(e, 2).shape == (0, 3, 2, 2)
    assert G.adaptive_avg_pool2d_input(e.shape, np.zeros((0, 3, 2, 2), np.float32)).shape == e.shape


def test_adaptive_avg_pool2d_numerical_gradient(rng):
    x = randn(rng, (2, 2, 7, 5))
    gy = randn(rng, (2, 2, 3, 4))
    gradcheck(lambda x_: F.adaptive_avg_pool2d(x_, (3, 4)), [x],
              [G.adaptive_avg_pool2d_input(x.shape, gy)], gy)


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 16), st.integers(1, 24),
       st.integers(1, 10), st.integers(1, 10), st.integers(0, 2**32 - 1), st.sampled_from(DTYPES))
def test_adaptive_avg_pool2d_random_shapes_vs_ref(N, C, H, W, P, Q, seed, dtype):
    rng = np.random.default_rng(seed)
    x = randn(rng, (N, C, H, W), dtype)
    y = F.adaptive_avg_pool2d(x, (P, Q))
    assert_close(y, ref.adaptive_avg_pool2d(x, (P, Q)), dtype)
    gy = randn(rng, y.shape, dtype)
    assert_close(G.adaptive_avg_pool2d_input(x.shape, gy), ref.adaptive_avg_pool2d_input(gy, x.shape), dtype)
