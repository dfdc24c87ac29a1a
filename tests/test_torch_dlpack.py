"""Arrays of other libraries in fastconv.nn's array functions (fastconv.nn._array, behind
fastconv.nn.functional, and fastconv.nn.grad): CPU arrays speaking DLPack are imported without a
copy (torch tensors in give torch tensors out, sharing fastconv's output), GPU arrays
(`__cuda_array_interface__`, a non-CPU DLPack device) get the clear TypeError of the GPU hint.
The torch cases skip without torch; the others need numpy only."""
import numpy as np
import pytest

import fastconv.nn._array as A
import fastconv.nn.grad as G
from fastconv import _C
from fastconv.testing import assert_close


class HostArray:
    """A CPU array of some other library: only the DLPack protocol, backed by numpy."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


class DeviceArray:
    """A GPU array seen through DLPack only (device type 2 = kDLCUDA)."""

    def __dlpack__(self, **kwargs):
        raise AssertionError("a GPU array must not be imported")

    def __dlpack_device__(self):
        return (2, 0)


class CudaArrayInterface:
    """A GPU array seen through __cuda_array_interface__ only (numba, older CuPy, ...)."""
    __cuda_array_interface__ = {"shape": (1, 1, 4, 4), "typestr": "<f4", "data": (0, False),
                                "version": 3}


def pointers_seen_by(monkeypatch, kernel):
    """Record the data pointers of the arrays each call of _C.<kernel> receives."""
    seen = []
    real = getattr(_C, kernel)

    def spy(*args):
        seen.append([a.ctypes.data for a in args if isinstance(a, np.ndarray)])
        return real(*args)
    monkeypatch.setattr(_C, kernel, spy)
    return seen


def test_torch_in_torch_out_without_copies(torch, rng, monkeypatch):
    x = torch.from_numpy(rng.standard_normal((2, 3, 9, 9), dtype=np.float32))
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3), dtype=np.float32))
    b = torch.from_numpy(rng.standard_normal(4, dtype=np.float32))
    seen = pointers_seen_by(monkeypatch, "conv2d_forward")
    y = A.conv2d(x, w, b, padding=1)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    (inp, weight, bias, out), = seen
    assert (inp, weight, bias) == (x.data_ptr(), w.data_ptr(), b.data_ptr())  # inputs: no copy
    assert y.data_ptr() == out                                               # output: no copy
    assert_close(y.numpy(), A.conv2d(x.numpy(), w.numpy(), b.numpy(), padding=1), name="conv2d")
    assert_close(y.numpy(), torch.nn.functional.conv2d(x, w, b, padding=1).numpy(),
                 name="conv2d vs torch")


def test_every_entry_point_hands_torch_back(torch, rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)))
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3)))
    dy = torch.from_numpy(rng.standard_normal((2, 4, 6, 6)))
    p, idx = A.max_pool2d(x, 2, return_indices=True)
    results = {
        "max_pool2d": (p, torch.nn.functional.max_pool2d(x, 2)),
        "indices": (idx, torch.nn.functional.max_pool2d(x, 2, return_indices=True)[1]),
        "avg_pool2d": (A.avg_pool2d(x, 3, 2, 1), torch.nn.functional.avg_pool2d(x, 3, 2, 1)),
        "adaptive_avg_pool2d": (A.adaptive_avg_pool2d(x[0], 3),
                                torch.nn.functional.adaptive_avg_pool2d(x[0], 3)),
        "conv2d_input": (G.conv2d_input(x.shape, w, dy),
                         torch.nn.grad.conv2d_input(x.shape, w, dy)),
        "conv2d_weight": (G.conv2d_weight(x, w.shape, dy),
                          torch.nn.grad.conv2d_weight(x, w.shape, dy)),
        "conv2d_bias": (G.conv2d_bias(dy), dy.sum((0, 2, 3))),
        "max_pool2d_input": (G.max_pool2d_input(x.shape, p, idx),
                             G.max_pool2d_input(x.shape, p.numpy(), idx.numpy())),
        "avg_pool2d_input": (G.avg_pool2d_input(x.shape, torch.ones(2, 3, 4, 4), 2),
                             torch.full((2, 3, 8, 8), 0.25, dtype=torch.float32)),
        "adaptive_avg_pool2d_input": (G.adaptive_avg_pool2d_input(x.shape, dy[:, :3, :2, :2]),
                                      G.adaptive_avg_pool2d_input(x.shape,
                                                                  dy[:, :3, :2, :2].numpy())),
    }
    for name, (ours, expected) in results.items():
        assert isinstance(ours, torch.Tensor), name
        assert_close(ours.numpy(), np.asarray(expected), np.float64, name=name)


def test_layouts_and_library_mixes(torch, rng):
    """Strided tensors are copied (correctly); numpy and torch arguments may be mixed, and any
    torch argument makes the result a torch tensor."""
    x = torch.from_numpy(rng.standard_normal((2, 3, 8, 16), dtype=np.float32))[..., ::2]
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    y = A.conv2d(x, w)
    assert isinstance(y, torch.Tensor)
    assert_close(y.numpy(), A.conv2d(np.ascontiguousarray(x.numpy()), w), name="strided")
    assert isinstance(A.conv2d(x.numpy(), torch.from_numpy(w)), torch.Tensor)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert_close(A.avg_pool2d(cl, 2).numpy(), torch.nn.functional.avg_pool2d(x, 2).numpy(),
                 name="channels_last")


def test_torch_errors(torch):
    x = torch.ones(1, 1, 4, 4)
    with pytest.raises(TypeError, match=r"conv2d: input is a torch.Tensor that requires grad, but "
                       r"the array functions record no autograd; use the ops of fastconv.torch"):
        A.conv2d(x.requires_grad_(True), torch.ones(1, 1, 3, 3))
    with pytest.raises(TypeError, match=r"max_pool2d: input is a torch.Tensor \(dtype "
                       r"torch.bfloat16\) that numpy cannot import through DLPack"):
        A.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.bfloat16), 2)
    with pytest.raises(TypeError, match=r"avg_pool2d: input has dtype float16, but the CPU kernels "
                       r"support float32 and float64 only"):
        A.avg_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.float16), 2)


def test_other_libraries_cpu_arrays_give_numpy(rng, monkeypatch):
    x = rng.standard_normal((1, 2, 6, 6))
    seen = pointers_seen_by(monkeypatch, "avg_pool2d_forward")
    y = A.avg_pool2d(HostArray(x), 2)
    assert type(y) is np.ndarray and seen[0][0] == x.ctypes.data
    np.testing.assert_array_equal(y, A.avg_pool2d(x, 2))
    dx = G.avg_pool2d_input(x.shape, HostArray(np.ones((1, 2, 3, 3))), 2)
    assert type(dx) is np.ndarray and dx.max() == 0.25


@pytest.mark.parametrize("gpu", [DeviceArray(), CudaArrayInterface()], ids=["dlpack", "cai"])
def test_gpu_arrays_get_the_gpu_hint(gpu):
    """Without the CUDA extension (TypeError) or without a GPU (RuntimeError) the message names
    the argument and says what to do."""
    hint = (r"(; the GPU kernels need the fastconv._cuda extension, which this fastconv was built "
            r"without|, but the CUDA runtime sees no usable GPU)")
    with pytest.raises((TypeError, RuntimeError), match=r"conv2d: input is a test_torch_dlpack "
                       r"array on the GPU" + hint):
        A.conv2d(gpu, gpu)
    with pytest.raises((TypeError, RuntimeError), match=r"conv2d_bias: grad_output is a .* on the "
                       r"GPU" + hint):
        G.conv2d_bias(gpu)
    with pytest.raises(TypeError, match=r"conv2d: input is a numpy array but weight is a "
                       r"test_torch_dlpack array on the GPU; all arrays must be on the same "
                       r"device"):
        A.conv2d(np.ones((1, 1, 4, 4), np.float32), gpu)


def test_non_arrays_are_still_rejected():
    with pytest.raises(TypeError, match=r"max_pool2d: input must be a numpy.ndarray, got list "
                       r"\(arrays of other libraries are accepted through DLPack"):
        A.max_pool2d([[[1.0]]], 1)
