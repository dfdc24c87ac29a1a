"""The device path end to end: CuPy arrays through the functional API, Tensor.to('cuda'),
Module.to('cuda'), the optimizers and train.fit on the GPU against the CPU path, and
fastconv.torch on torch CUDA tensors against cuDNN. Marked gpu (skipped without a GPU and
fastconv._cuda); the errors a machine without a GPU gives are checked everywhere."""
import numpy as np
import pytest

import fastconv
import fastconv.nn as nn
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import optim, train
from fastconv.testing import assert_close
from helpers import randn

cupy = pytest.importorskip("cupy")
needs_gpu = pytest.mark.skipif(not fastconv.cuda_available(),
                               reason="needs a CUDA GPU and fastconv._cuda")


def test_to_cuda_without_a_gpu_says_so():
    if cupy.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"to\('cuda'\): CuPy sees no usable GPU"):
        fastconv.tensor(np.ones(3, np.float32)).to("cuda")
    with pytest.raises(RuntimeError, match=r"to\('cuda'\): CuPy sees no usable GPU"):
        nn.Linear(2, 2).to("cuda")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_functional_ops_take_and_return_cupy(rng, dtype):
    x = randn(rng, (2, 6, 17, 15), dtype)
    w = randn(rng, (12, 1, 3, 3), dtype)
    for f in (lambda a: F.max_pool2d(a, 3, 2, 1), lambda a: F.avg_pool2d(a, 2, ceil_mode=True),
              lambda a: F.adaptive_avg_pool2d(a, (3, 4)),
              lambda a: F.conv2d(a, w.astype(a.dtype) if isinstance(a, np.ndarray)
                                 else cupy.asarray(w), padding="same", groups=6)):
        y_gpu = f(cupy.asarray(x))
        assert isinstance(y_gpu, cupy.ndarray) and y_gpu.dtype == dtype
        y_cpu = f(x.astype(np.float32) if dtype == np.float16 else x)
        tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float16 else {"dtype": np.float32}
        assert_close(cupy.asnumpy(y_gpu).astype(np.float32), y_cpu, **tol)


@pytest.mark.gpu
@needs_gpu
def test_gradients_on_the_gpu_match_the_cpu(rng):
    x, w = randn(rng, (2, 4, 11, 9), np.float32), randn(rng, (8, 1, 5, 5), np.float32)
    kw = dict(stride=2, padding="same", groups=4)
    g = randn(rng, F.conv2d(x, w, **kw).shape, np.float32)
    xg, wg, gg = cupy.asarray(x), cupy.asarray(w), cupy.asarray(g)
    assert_close(cupy.asnumpy(G.conv2d_input(x.shape, wg, gg, **kw)),
                 G.conv2d_input(x.shape, w, g, **kw), dtype=np.float32)
    assert_close(cupy.asnumpy(G.conv2d_weight(xg, w.shape, gg, **kw)),
                 G.conv2d_weight(x, w.shape, g, **kw), dtype=np.float32)
    assert_close(cupy.asnumpy(G.conv2d_bias(gg)), G.conv2d_bias(g), dtype=np.float32)


@pytest.mark.gpu
@needs_gpu
def test_arrays_on_two_devices_are_refused():
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU")
    a = cupy.ones((1, 1, 4, 4), cupy.float32)
    with cupy.cuda.Device(1):
        b = cupy.ones((1, 1, 3, 3), cupy.float32)
    with pytest.raises(TypeError, match="input is on GPU 0 but weight is on GPU 1"):
        F.conv2d(a, b, groups=1)


def test_every_launch_runs_with_the_arrays_device_current():
    """OnDevice (what the CuPy and torch backends wrap fastconv._cuda in) enters the device
    context around every call of the module, and only around calls."""
    import contextlib
    from fastconv._gpu.backend import OnDevice
    log = []

    @contextlib.contextmanager
    def device():
        log.append("enter")
        yield
        log.append("exit")

    class Module:
        version = 3

        @staticmethod
        def launch(a, b=0):
            log.append(("launch", a, b))
            return a + b

    mod = OnDevice(Module, device)
    assert mod.version == 3 and log == []
    assert mod.launch(1, b=2) == 3
    assert log == ["enter", ("launch", 1, 2), "exit"]


@pytest.mark.gpu
@needs_gpu
def test_arrays_on_another_device_than_the_current_one(rng):
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU")
    x, w = randn(rng, (2, 4, 9, 9), np.float32), randn(rng, (8, 4, 3, 3), np.float32)
    with cupy.cuda.Device(1):
        xg, wg = cupy.asarray(x), cupy.asarray(w)
    with cupy.cuda.Device(0):
        y = F.conv2d(xg, wg, padding=1)
        p = F.max_pool2d(xg, 2)
    assert y.device.id == 1 and p.device.id == 1
    assert_close(cupy.asnumpy(y), F.conv2d(x, w, padding=1), dtype=np.float32)
    assert_close(cupy.asnumpy(p), F.max_pool2d(x, 2), dtype=np.float32)


def depthwise_net():
    fastconv.manual_seed(0)
    return nn.Sequential(
        nn.DepthwiseConv2d(3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU6(), nn.MaxPool2d(2),
        nn.DepthwiseConv2d(3, 5, stride=2, padding="same", depth_multiplier=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


@pytest.mark.gpu
@needs_gpu
def test_training_on_the_gpu_matches_the_cpu(rng):
    """Module.to('cuda') + SGD + train.fit: parameters stay CuPy arrays, the losses follow the
    CPU run's."""
    x = randn(rng, (32, 3, 16, 16), np.float32)
    y = rng.integers(0, 4, 32)
    histories, nets = [], []
    for device in ("cpu", "cuda"):
        net = depthwise_net().to(device)
        opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        histories.append(train.fit(net, (x, y), epochs=2, optimizer=opt, batch_size=8,
                                   verbose=0, device=device, seed=0).history["loss"])
        nets.append(net)
    assert all(isinstance(p.data, cupy.ndarray) for p in nets[1].parameters())
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-3)


@pytest.mark.gpu
@needs_gpu
def test_fastconv_torch_on_cuda_tensors_matches_cudnn(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    import fastconv.torch as fct
    x = torch.randn(2, 8, 15, 13, device="cuda", requires_grad=True)
    w = torch.randn(16, 1, 3, 3, device="cuda", requires_grad=True)
    y = fct.max_pool2d(fct.conv2d(x, w, None, 1, 1, 1, 8), 3, 2, 1)
    y.sum().backward()
    gx, gw = x.grad, w.grad
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    y2 = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x2, w2, None, 1, 1, 1, 8),
                                        3, 2, 1)
    y2.sum().backward()
    torch.testing.assert_close(y, y2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, w2.grad, rtol=1e-4, atol=1e-3)
