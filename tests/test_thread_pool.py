"""fastconv.backends.cpu.thread_pool: the CPU kernels' parallel loops on a loaded OpenMP runtime
(PyTorch's) or on fastconv's own pool (common/openmp_runtime.h, common/parallel.cpp). The switch,
the "auto" rule, that both give the same bits, that the OpenMP path really runs on the OpenMP
threads, and that it survives fork and concurrent Python threads."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _C, ref
from fastconv.testing import assert_close
from helpers import conv_config, conv_in_threads, poisoned, randn

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def pool():
    old = fastconv.backends.cpu.thread_pool
    yield lambda name: setattr(fastconv.backends.cpu, "thread_pool", name)
    fastconv.backends.cpu.thread_pool = old


@pytest.fixture
def threads():
    old = fastconv.num_threads()
    yield fastconv.set_num_threads
    fastconv.set_num_threads(old)


def run_python(code, **env_changes):
    """Runs code in a fresh interpreter (tests/ as its folder) with the environment changed (None
    removes a variable); returns its stdout, raising with its stderr when it fails."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_switch_values_and_errors(pool):
    for name in ("fastconv", "openmp", "auto"):
        pool(name)
        assert fastconv.backends.cpu.thread_pool == name
        assert repr(name) in repr(fastconv.backends.cpu)
    pool("fastconv")
    assert fastconv.backends.cpu.thread_pool_in_use == "fastconv"
    for bad in ("OpenMP", "", None, 1, "torch"):
        with pytest.raises(ValueError, match="thread_pool must be one of"):
            fastconv.backends.cpu.thread_pool = bad
    with pytest.raises(ValueError, match="expected 'auto', 'fastconv' or 'openmp'"):
        _C.set_thread_pool("omp")


def test_default_and_environment():
    code = "import fastconv; print(fastconv.backends.cpu.thread_pool)"
    for env, want in ((None, "auto"), ("fastconv", "fastconv"), ("openmp", "openmp"),
                      ("bogus", "auto")):
        assert run_python(code, FASTCONV_THREAD_POOL=env).split()[-1] == want


def test_auto_rule_follows_torch_and_its_wait_policy():
    """auto: fastconv's pool until an OpenMP runtime is loaded (importing torch loads one), then
    that runtime while its idle threads spin (OMP_WAIT_POLICY unset or ACTIVE); with PASSIVE,
    fastconv's pool, unless "openmp" is asked for."""
    pytest.importorskip("torch")
    code = """
        import fastconv
        cpu = fastconv.backends.cpu
        print(cpu.thread_pool_in_use)
        import torch
        print(cpu.thread_pool_in_use)
        cpu.thread_pool = "openmp"
        print(cpu.thread_pool_in_use)
        cpu.thread_pool = "fastconv"
        print(cpu.thread_pool_in_use)
    """
    for policy, want_auto in ((None, True), ("ACTIVE", True), ("passive", False)):
        before, auto, openmp, own = run_python(code, OMP_WAIT_POLICY=policy,
                                               FASTCONV_THREAD_POOL=None).split()
        assert before == "fastconv" and own == "fastconv"
        assert "omp" in os.path.basename(openmp), openmp
        assert auto == (openmp if want_auto else "fastconv"), (policy, auto)


def test_regions_run_on_the_openmp_threads():
    """With torch's OpenMP team started, a 2-thread fastconv op in "openmp" mode starts no thread
    of its own (it runs on the team's); in "fastconv" mode it starts its pool's worker."""
    pytest.importorskip("torch")
    code = """
        import os, numpy as np, torch, fastconv
        from fastconv import _C
        torch.set_num_threads(2)
        fastconv.set_num_threads(2)
        fastconv.backends.cpu.small_op_us = 0
        torch.ones(1 << 20).add_(1)                      # starts torch's OpenMP team
        x = np.ones((2, 8, 40, 40), np.float32); w = np.ones((8, 8, 3, 3), np.float32)
        y = np.empty((2, 8, 38, 38), np.float32)
        count = lambda: len(os.listdir("/proc/self/task"))
        fastconv.backends.cpu.thread_pool = "{mode}"
        before = count()
        for _ in range(3):
            _C.conv2d_forward(x, w, None, y, (1, 1), (0, 0, 0, 0), (1, 1), 1)
        print(count() - before, float(y[0, 0, 0, 0]))
    """
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux's /proc/self/task to count threads")
    for mode, new_threads in (("openmp", 0), ("fastconv", 1)):
        out = run_python(code.replace("{mode}", mode), OMP_WAIT_POLICY=None).split()
        assert out == [str(new_threads), "72.0"], (mode, out)


# Ops whose work splits differ between 1, 2 and 3 threads (the weight gradient's partial sums
# round differently per thread count): each mode must give the same bits at every count.
def _cases(rng):
    x = randn(rng, (2, 5, 30, 35), np.float32)
    w = randn(rng, (7, 5, 3, 3), np.float32)
    s, pad, d = conv_config(x.shape, w.shape, (2, 1), (1, 2), (1, 1))
    y_shape = ref.conv2d(x, w, None, s, pad, d, 1).shape
    gy = randn(rng, y_shape, np.float32)
    w1 = randn(rng, (7, 5, 1, 1), np.float32)
    gy1 = randn(rng, (2, 7, 30, 35), np.float32)
    wd = randn(rng, (5, 1, 3, 3), np.float32)
    gyd = randn(rng, (2, 5, 30, 35), np.float32)

    def conv(out):
        _C.conv2d_forward(x, w, None, out, s, pad, d, 1)

    def dgrad(out):
        _C.conv2d_backward_input(gy, w, out, s, pad, d, 1)

    def wgrad(out):
        _C.conv2d_backward_weight(gy1, x, out, (1, 1), (0, 0, 0, 0), (1, 1), 1)

    def depthwise(out):
        _C.conv2d_forward(x, wd, None, out, (1, 1), (1, 1, 1, 1), (1, 1), 5)

    def depthwise_wgrad(out):
        _C.conv2d_backward_weight(gyd, x, out, (1, 1), (1, 1, 1, 1), (1, 1), 5)

    def max_pool(out):
        _C.max_pool2d_forward(x, out, None, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False)

    return {
        "conv": (conv, y_shape, lambda: ref.conv2d(x, w, None, s, pad, d, 1)),
        "dgrad": (dgrad, x.shape, lambda: ref.conv2d_input(gy, w, x.shape, s, pad, d, 1)),
        "wgrad": (wgrad, w1.shape, lambda: ref.conv2d_weight(gy1, x, w1.shape, (1, 1),
                                                             (0, 0, 0, 0), (1, 1), 1)),
        "depthwise": (depthwise, x.shape,
                      lambda: ref.conv2d(x, wd, None, (1, 1), (1, 1, 1, 1), (1, 1), 5)),
        "depthwise_wgrad": (depthwise_wgrad, wd.shape,
                            lambda: ref.conv2d_weight(gyd, x, wd.shape, (1, 1), (1, 1, 1, 1),
                                                      (1, 1), 5)),
        "max_pool": (max_pool, (2, 5, 15, 18),
                     lambda: ref.max_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False)[0]),
    }


@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_openmp_and_own_pool_give_the_same_bits(rng, pool, threads, nthreads):
    torch = pytest.importorskip("torch")
    torch.ones(1 << 16).add_(1)  # torch's OpenMP runtime is loaded and its team started
    threads(nthreads)
    for name, (run, shape, want) in _cases(rng).items():
        results = {}
        for mode in ("fastconv", "openmp", "fastconv", "openmp"):
            pool(mode)
            if mode == "openmp":
                assert "omp" in os.path.basename(fastconv.backends.cpu.thread_pool_in_use)
            out = poisoned(shape, np.float32)
            run(out)
            if mode in results:
                np.testing.assert_array_equal(out, results[mode], err_msg=f"{name} {mode}")
            results[mode] = out
        np.testing.assert_array_equal(results["openmp"], results["fastconv"], err_msg=name)
        assert_close(results["openmp"], want(), np.float32, name=name)


def test_concurrent_python_threads_on_openmp(rng, pool, threads):
    """Python threads running ops at once (kernels release the GIL) beside the main thread's
    regions on the OpenMP runtime: the other threads keep to fastconv's own pool (no OpenMP team
    per thread), every result right."""
    pytest.importorskip("torch")
    pool("openmp")
    threads(2)
    assert "omp" in os.path.basename(fastconv.backends.cpu.thread_pool_in_use)
    seen = []
    t = threading.Thread(target=lambda: seen.append(fastconv.backends.cpu.thread_pool_in_use))
    t.start()
    t.join()
    assert seen == ["fastconv"]
    conv_in_threads(rng, on_main=True)     # the main thread on the OpenMP runtime, 3 beside it


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_uses_its_own_pool():
    """libgomp's threads do not survive fork: a forked child of a process that ran regions on
    them runs its regions on fastconv's pool, with the same result (and does not hang)."""
    pytest.importorskip("torch")
    code = """
        import os, numpy as np, torch, fastconv
        from fastconv import _C
        fastconv.set_num_threads(2)
        fastconv.backends.cpu.small_op_us = 0
        fastconv.backends.cpu.thread_pool = "openmp"
        torch.ones(1 << 20).add_(1)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 8, 40, 40), dtype=np.float32)
        w = rng.standard_normal((8, 8, 3, 3), dtype=np.float32)
        def conv():
            y = np.full((2, 8, 38, 38), np.nan, np.float32)
            _C.conv2d_forward(x, w, None, y, (1, 1), (0, 0, 0, 0), (1, 1), 1)
            return y
        parent = conv()
        assert "omp" in fastconv.backends.cpu.thread_pool_in_use
        pid = os.fork()
        if pid == 0:
            ok = fastconv.backends.cpu.thread_pool_in_use == "fastconv"
            ok = ok and np.array_equal(conv(), parent)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.WEXITSTATUS(status))
    """
    assert run_python(code).split() == ["0"]


def test_prefers_torchs_runtime_loaded_after_another():
    """scikit-learn vendors a libgomp of its own; loaded first, it is used until torch's is loaded,
    then torch's (whose threads are the ones spinning beside fastconv's ops)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    code = """
        import fastconv
        import sklearn.utils._openmp_helpers
        print(fastconv.backends.cpu.thread_pool_in_use)
        import torch
        print(fastconv.backends.cpu.thread_pool_in_use)
    """
    first, then = run_python(code, OMP_WAIT_POLICY=None, FASTCONV_THREAD_POOL=None).split()
    assert "/torch/" in then and "omp" in os.path.basename(then), then
    assert first == "fastconv" or "/torch/" not in first, first
