"""Mixed precision: fastconv.autocast casts conv2d / linear to float16 on the device path (here:
numpy inside cuda_emulation(), i.e. the CUDA kernels run on the CPU), keeps float32 master weights
with float32 gradients, and GradScaler scales, unscales, skips overflowing steps and adapts."""
import numpy as np
import pytest

import fastconv
import fastconv.nn as nn
import fastconv.nn.functional as F
from fastconv import optim
from fastconv.amp import GradScaler, autocast, autocast_dtype
from fastconv.testing import cuda_emulation


def net(pool=None):
    fastconv.manual_seed(0)
    return nn.Sequential(nn.DepthwiseConv2d(3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                         pool or nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(3, 4))


def test_autocast_runs_conv_and_linear_in_float16_with_float32_master_weights(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3])
    losses, grads = [], []
    for amp_on in (False, True):
        # average pooling: float16 rounding can move a max-pool's argmax near a tie, which moves
        # whole gradient elements (a seed did: 2518728666572903831), not a rounding-size change
        model = net(nn.AvgPool2d(2))
        with cuda_emulation(), autocast("cuda", dtype=np.float16, enabled=amp_on):
            h = model[0](fastconv.tensor(x))
            assert h.dtype == (np.float16 if amp_on else np.float32)
            loss = F.cross_entropy(model(fastconv.tensor(x)), y)
            assert loss.dtype == np.float32
            loss.backward()
        assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32
                   for p in model.parameters())
        losses.append(loss.item())
        grads.append(model[0].weight.grad)
    assert abs(losses[1] - losses[0]) < 2e-2 * max(1.0, abs(losses[0]))
    np.testing.assert_allclose(grads[1], grads[0], rtol=5e-2, atol=5e-3)


def test_autocast_leaves_the_cpu_kernels_alone(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    with autocast("cuda"):
        assert autocast_dtype() == np.float16
        assert F.conv2d(x, w, groups=2).dtype == np.float32   # numpy on the CPU kernels
    assert autocast_dtype() is None


def test_autocast_arguments():
    with pytest.raises(ValueError, match="autocast: device_type must be 'cuda'"):
        with autocast("cpu"):
            pass
    with pytest.raises(TypeError, match="autocast: dtype must be float16 or bfloat16"):
        with autocast("cuda", dtype=np.int8):
            pass
    with pytest.raises(TypeError, match="autocast: enabled must be a bool"):
        with autocast("cuda", enabled="yes"):
            pass


def test_grad_scaler_scales_unscales_and_skips_overflow():
    p = nn.Parameter(np.ones(3, np.float32))
    opt = optim.SGD([p], lr=1.0)
    scaler = GradScaler(init_scale=8.0, growth_interval=2)
    loss = scaler.scale((fastconv.Tensor(np.full(3, 2.0, np.float32)) * p).sum())
    assert loss.item() == pytest.approx(48.0)
    loss.backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.data, -1.0)           # 1 - lr * 2 (unscaled)
    assert scaler.get_scale() == 8.0
    p.grad = np.array([np.inf, 0, 0], np.float32)
    assert scaler.step(opt) is None                      # skipped
    scaler.update()
    np.testing.assert_allclose(p.data, -1.0)
    assert scaler.get_scale() == 4.0
    for _ in range(2):
        p.grad = np.zeros(3, np.float32)
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 8.0                     # grew after 2 clean steps
    state = scaler.state_dict()
    other = GradScaler()
    other.load_state_dict(state)
    assert other.get_scale() == 8.0


def test_grad_scaler_arguments():
    with pytest.raises(ValueError, match="GradScaler: growth_factor must be > 1"):
        GradScaler(growth_factor=0.5)
    with pytest.raises(ValueError, match="GradScaler: growth_interval must be a positive int"):
        GradScaler(growth_interval=0)
    off = GradScaler(enabled=False)
    assert off.get_scale() == 1.0
