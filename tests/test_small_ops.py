"""The small-op rules of the CPU thread pool (common/parallel.h, fastconv.backends.cpu):
the plan arithmetic, the switch, and that a rule never changes a result: an op's answer depends
only on its shape and the thread setting, whether the pool's workers are awake or asleep."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastconv
from fastconv import _C, ref
from fastconv.testing import assert_close
from helpers import conv_config, conv_in_threads, poisoned, randn


@pytest.fixture
def threshold():
    """Sets fastconv.backends.cpu.small_op_us for one test (the suite runs with it at 0)."""
    old = fastconv.backends.cpu.small_op_us
    yield lambda us: setattr(fastconv.backends.cpu, "small_op_us", us)
    fastconv.backends.cpu.small_op_us = old


@pytest.fixture
def threads():
    old = fastconv.num_threads()
    yield fastconv.set_num_threads
    fastconv.set_num_threads(old)


def test_plan_arithmetic(threshold, threads):
    threads(4)
    threshold(50)                              # T = 50 us: one thread per T/5 = 10 us of work
    assert _C._op_plan(5e3) == (1, True)       # 5 us
    assert _C._op_plan(25e3) == (2, True)      # 25 us: 2 threads planned, sleepers not woken
    assert _C._op_plan(49e3) == (4, True)
    assert _C._op_plan(50e3) == (4, False)
    assert _C._op_plan(1e9) == (4, False)
    assert _C._op_plan(float("nan")) == (4, False)  # no estimate: the plain setting
    threshold(0)                               # off
    assert _C._op_plan(1.0) == (4, False)
    assert fastconv.num_threads() == 4         # outside an op: the setting


def test_switch_values_and_errors(threshold):
    threshold(12.5)
    assert fastconv.backends.cpu.small_op_us == 12.5
    assert "12.5" in repr(fastconv.backends.cpu)
    for bad in (-1, "50", None, True, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="small_op_us"):
            fastconv.backends.cpu.small_op_us = bad
    with pytest.raises(ValueError, match="ns must be >= 0"):
        _C.set_small_op_ns(-5)


def test_default_and_environment():
    code = "import fastconv; print(fastconv.backends.cpu.small_op_us)"
    for env, want in ((None, "50.0"), ("7.5", "7.5"), ("0", "0.0")):
        e = {k: v for k, v in os.environ.items() if k != "FASTCONV_SMALL_OP_US"}
        if env is not None:
            e["FASTCONV_SMALL_OP_US"] = env
        out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                             cwd=os.path.dirname(__file__), check=True).stdout.split()[-1]
        assert out == want


# A weight gradient whose reduction is split into per-thread partial sums at 2 threads, so that the
# 1-thread and the 2-thread plans round differently (tests/test_conv2d.py: WGRAD_SPLIT_CASES).
WGRAD = ((2, 5, 30, 35), (7, 5, 1, 1), 1, 0, 1, 1)


def wgrad(x, gy, wshape, s, pad, d, groups):
    dw = poisoned(wshape, x.dtype)
    _C.conv2d_backward_weight(gy, x, dw, s, pad, d, groups)
    return dw


def test_result_depends_on_plan_not_on_timing(rng, threshold, threads):
    """For every threshold, 2 threads give either the 1-thread plan's bits or the plain 2-thread
    plan's bits, the same with the workers awake (back to back) and asleep (after a pause)."""
    xshape, wshape, stride, padding, dilation, groups = WGRAD
    x = randn(rng, xshape, np.float32)
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    gy = randn(rng, ref.conv2d(x, randn(rng, wshape, np.float32), None, s, pad, d, groups).shape,
               np.float32)
    threshold(0)
    threads(1)
    one = wgrad(x, gy, wshape, s, pad, d, groups)
    threads(2)
    two = wgrad(x, gy, wshape, s, pad, d, groups)
    assert_close(one, ref.conv2d_weight(gy, x, wshape, s, pad, d, groups), np.float32)
    seen = set()
    for us in (1, 10, 50, 100, 300, 1000, 1e4, 1e6):
        threshold(us)
        results = [wgrad(x, gy, wshape, s, pad, d, groups) for _ in range(3)]
        for _ in range(3):
            time.sleep(0.002)                  # the workers stop spinning after 0.1 ms
            results.append(wgrad(x, gy, wshape, s, pad, d, groups))
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])
        if np.array_equal(results[0], one):
            seen.add("one")
        else:
            np.testing.assert_array_equal(results[0], two)
            seen.add("two")
    assert not np.array_equal(one, two), "the case should round differently on 1 and 2 threads"
    assert seen == {"one", "two"}


@pytest.mark.parametrize("op", ["conv", "max_pool", "avg_pool", "depthwise"])
def test_small_ops_correct_awake_and_asleep(rng, threshold, threads, op):
    """Small ops at the default threshold on 2 threads, against ref.py, poisoned outputs, with the
    workers awake and asleep."""
    threshold(50)
    threads(2)
    x = randn(rng, (1, 8, 13, 11), np.float32)
    if op == "conv":
        w = randn(rng, (6, 8, 3, 3), np.float32)
        want = ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        run = lambda y: _C.conv2d_forward(x, w, None, y, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    elif op == "depthwise":
        w = randn(rng, (8, 1, 3, 3), np.float32)
        want = ref.conv2d(x, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 8)
        run = lambda y: _C.conv2d_forward(x, w, None, y, (2, 2), (1, 1, 1, 1), (1, 1), 8)
    elif op == "max_pool":
        want = ref.max_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False)[0]
        run = lambda y: _C.max_pool2d_forward(x, y, None, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1),
                                              False)
    else:
        want = ref.avg_pool2d(x, (2, 2), (2, 2), (0, 0, 0, 0), False, True, None)
        run = lambda y: _C.avg_pool2d_forward(x, y, (2, 2), (2, 2), (0, 0, 0, 0), False, True, 0)
    for pause in (0, 0, 0.002, 0.002):
        time.sleep(pause)
        y = poisoned(want.shape, np.float32)
        run(y)
        assert_close(y, want, np.float32, name=f"{op} after {pause} s")


def test_scopes_are_per_thread(rng, threshold, threads):
    """Two Python threads running ops at once (kernels release the GIL): each gets its own op
    scope; the results are right."""
    threshold(50)
    threads(2)
    conv_in_threads(rng)
