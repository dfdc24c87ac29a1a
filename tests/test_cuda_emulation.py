"""The CUDA emulation (csrc/cuda/emulation.h) itself: its self-test kernels
(csrc/cuda/emulation_selftest.cu, in fastconv._cuda_emu only) give numpy's answer in their correct
versions, and every planted bug (missing or divergent barriers, shared-memory races, shared and
global indices out of range, uninitialised shared memory, wrong shuffle masks) is reported as a
RuntimeError naming the problem, under the default shuffled schedule and the fixed ones."""
import numpy as np
import pytest

emu = pytest.importorskip("fastconv._cuda_emu")
st = emu.selftest

SCHEDULES = ["shuffle", "fwd", "rev"]


@pytest.fixture(params=SCHEDULES)
def schedule(request, monkeypatch):
    """Runs the test under each thread order between barriers (the emulation reads EMU_SCHED at
    every launch)."""
    monkeypatch.setenv("EMU_SCHED", request.param)
    return request.param


def ptr(a):
    return a.ctypes.data


def sgemm(A, B, variant=0):
    M, K = A.shape
    C = np.full((M, B.shape[1]), np.nan, np.float32)
    st.sgemm(ptr(A), ptr(B), ptr(C), M, B.shape[1], K, variant)
    return C


def block_sum(x, variant=0):
    out = np.full(-(-x.size // 256), np.nan, np.float32)
    st.block_sum(ptr(x), ptr(out), x.size, variant)
    return out


def block_sum_ref(x):
    pad = np.zeros(-(-x.size // 256) * 256)
    pad[:x.size] = x
    return pad.reshape(-1, 256).sum(1)


def stencil(x, variant=0):
    y = np.full(x.size, np.nan, np.float32)
    st.stencil(ptr(x), ptr(y), x.size, variant)
    return y


def stencil_ref(x):
    p = np.pad(x.astype(np.float64), 1)
    return p[:-2] + 2 * p[1:-1] + p[2:]


def reverse(x, variant=0):
    y = np.full(x.size, np.nan, np.float32)
    st.reverse(ptr(x), ptr(y), x.size, variant)
    return y


def reverse_ref(x):
    pad = np.zeros(-(-x.size // 32) * 32, np.float32)
    pad[:x.size] = x
    return pad.reshape(-1, 32)[:, ::-1].ravel()[:x.size]


def warp_sum(x, variant=0):
    out = np.full(x.size // 32, np.nan, np.float32)
    st.warp_sum(ptr(x), ptr(out), x.size // 32, variant)
    return out


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


# ---- correct kernels give numpy's answer, under every schedule

@pytest.mark.parametrize("M,N,K", [(64, 64, 64), (17, 33, 5), (1, 1, 1), (40, 16, 47)])
def test_sgemm(rng, schedule, M, N, K):
    A, B = randn(rng, M, K), randn(rng, K, N)
    np.testing.assert_allclose(sgemm(A, B), A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [256, 1000, 5])
def test_block_sum_with_syncwarp_stage(rng, schedule, n):
    # The last warp reduces through shared memory with __syncwarp between its reads and writes:
    # the race detector must accept it.
    x = randn(rng, n)
    np.testing.assert_allclose(block_sum(x), block_sum_ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [64, 100, 1, 200])
def test_stencil(rng, schedule, n):
    x = randn(rng, n)
    np.testing.assert_allclose(stencil(x), stencil_ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [32, 70, 3])
def test_reverse_dynamic_shared(rng, schedule, n):
    x = randn(rng, n)
    np.testing.assert_array_equal(reverse(x), reverse_ref(x))


def test_warp_sum(rng, schedule):
    x = randn(rng, 5 * 32)
    np.testing.assert_allclose(warp_sum(x), x.reshape(5, 32).astype(np.float64).sum(1),
                               rtol=1e-5, atol=1e-5)


def test_max_pool3x3(rng):
    x = randn(rng, 3, 7, 9)
    y = np.full_like(x, np.nan)
    st.max_pool3x3(ptr(x), ptr(y), 3, 7, 9)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(p, (3, 3), axis=(1, 2))
    np.testing.assert_array_equal(y, win.max(axis=(-1, -2)))


def test_proxy_forms(rng, schedule):
    # Assignments between shared elements, compound assignments, increments, a function taking
    # float, an atomic, a shuffle, __half elements and a shared row passed as a global pointer.
    x = randn(rng, 32)
    y, z = np.full(32, np.nan, np.float32), np.full(32, np.nan, np.float32)
    st.proxy_forms(ptr(x), ptr(y), ptr(z))
    ref = (x[::-1] + 2 * x) / 2 + x[0] + 32 + x.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(z, x)


def to_bf16_bits(a):
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("a_col,b_col", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("M,N,K", [(16, 16, 16), (32, 48, 64)])
def test_wmma_gemm(rng, dtype, a_col, b_col, M, N, K):
    A, B = randn(rng, M, K), randn(rng, K, N)
    if dtype == "float16":
        code, A16, B16 = 1, A.astype(np.float16), B.astype(np.float16)
        A64, B64 = A16.astype(np.float64), B16.astype(np.float64)
    else:
        code, A16, B16 = 2, to_bf16_bits(A), to_bf16_bits(B)
        A64, B64 = from_bf16_bits(A16).astype(np.float64), from_bf16_bits(B16).astype(np.float64)
    Am = np.ascontiguousarray(A16.T if a_col else A16)
    Bm = np.ascontiguousarray(B16.T if b_col else B16)
    C = np.full((M, N), np.nan, np.float32)
    st.wmma_gemm(code, ptr(Am), ptr(Bm), ptr(C), M, N, K, a_col, b_col)
    # Products of 16-bit inputs are exact in float32; only the K-term float32 sum rounds.
    np.testing.assert_allclose(C, A64 @ B64, rtol=1e-5, atol=K * 1e-6)


def test_wmma_gemm_rejects_ragged_shapes():
    A = np.zeros((16, 16), np.float16)
    C = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="multiples of 16"):
        st.wmma_gemm(1, ptr(A), ptr(A), ptr(C), 16, 16, 8, False, False)


def tf32(a):
    """float32 -> nearest TF32 value, ties away from zero (cvt.rna.tf32.f32)."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.mark.parametrize("M,N,K", [(16, 16, 8), (32, 48, 24)])
def test_wmma_tf32_gemm(rng, M, N, K):
    """TF32 fragments: rounded after the load, the product is float64's of the rounded inputs up
    to the float32 sum (products of TF32 values are exact in float32); not rounded, mma_sync
    reports the kernel; already TF32 values need no rounding."""
    A, B = randn(rng, M, K).astype(np.float32), randn(rng, K, N).astype(np.float32)
    A[0, 0], B[0, 0] = 1 + 2.0**-11, 1 + 2.0**-11  # a tie: rounds away from zero, to 1 + 2^-10
    C = np.full((M, N), np.nan, np.float32)
    st.wmma_tf32_gemm(ptr(A), ptr(B), ptr(C), M, N, K, True)
    exact = tf32(A).astype(np.float64) @ tf32(B).astype(np.float64)
    mag = np.abs(tf32(A)).astype(np.float64) @ np.abs(tf32(B)).astype(np.float64)
    assert np.all(np.abs(C - exact) <= K * 2.0**-24 * mag)
    assert np.abs(C - A.astype(np.float64) @ B.astype(np.float64)).max() > 2.0**-16
    with pytest.raises(RuntimeError, match="tf32 matrix_a element with low mantissa bits set"):
        st.wmma_tf32_gemm(ptr(A), ptr(B), ptr(C), M, N, K, False)
    At, Bt = tf32(A), tf32(B)
    C2 = np.full((M, N), np.nan, np.float32)
    st.wmma_tf32_gemm(ptr(At), ptr(Bt), ptr(C2), M, N, K, False)
    np.testing.assert_array_equal(C2, C)


# ---- planted bugs are reported, under every schedule

def test_sgemm_missing_second_barrier(rng, schedule):
    A, B = randn(rng, 32, 32), randn(rng, 32, 32)
    with pytest.raises(RuntimeError, match=r"shared memory race on (As|Bs)\[\d+\]\[\d+\]"):
        sgemm(A, B, variant=1)


@pytest.mark.parametrize("variant", [1, 2])
def test_block_sum_races(rng, schedule, variant):
    # 1: no __syncthreads in the tree loop; 2: the warp stage without __syncwarp.
    with pytest.raises(RuntimeError, match=r"shared memory race on buf\[\d+\].*same barrier interval"):
        block_sum(randn(rng, 512), variant)


def test_block_sum_global_race(rng, schedule):
    # 3: 32 threads of a block add into one output without atomics.
    out = np.zeros(2, np.float32)
    with pytest.raises(RuntimeError, match=r"global memory race on global memory element [01] .*"
                                           r"same barrier interval"):
        st.block_sum(ptr(randn(rng, 512)), ptr(out), 512, 3)


def scatter_add(x, idx, m, variant=0):
    y = np.zeros(m, np.float32)
    st.scatter_add(ptr(x), ptr(idx), ptr(y), x.size, m, variant)
    return y


def test_scatter_add_atomic(rng, schedule):
    x, idx = randn(rng, 200), rng.integers(0, 7, 200).astype(np.int32)
    ref = np.zeros(7)
    np.add.at(ref, idx, x.astype(np.float64))
    np.testing.assert_allclose(scatter_add(x, idx, 7), ref, rtol=1e-5, atol=1e-5)


def test_scatter_add_without_atomics(rng, schedule):
    x = randn(rng, 64)
    # Collisions inside a block: a race in one barrier interval.
    with pytest.raises(RuntimeError, match=r"global memory race .* same barrier interval"):
        scatter_add(x, np.zeros(64, np.int32), 1, variant=1)
    # Each block updates each output once, but two blocks update the same outputs.
    with pytest.raises(RuntimeError, match=r"global memory race .* of block \(1,0,0\) writes it "
                                           r".* of block \(0,0,0\) wrote it in the same launch"):
        scatter_add(x, (np.arange(64) % 32).astype(np.int32), 32, variant=1)


@pytest.mark.parametrize("variant,message", [
    (1, r"shared array 't' index 66 out of range \[0, 66\)"),
    (2, r"read of uninitialised shared memory: thread \(63,0,0\) .* reads t\[65\]"),
    (3, r"__syncthreads \(line \d+\): 36 of 64 threads arrived, the rest returned"),
    (4, r"divergent __syncthreads: threads wait at lines \d+ and \d+"),
    (5, r"global memory index 1[0-2][0-9] out of range \[0, 100\)"),
    (6, r"global memory index 1[0-2][0-9] out of range \[0, 100\)"),
])
def test_stencil_bugs(rng, schedule, variant, message):
    # n = 100: the second block has 36 threads in range.
    with pytest.raises(RuntimeError, match=message):
        stencil(randn(rng, 100), variant)


@pytest.mark.parametrize("variant,message", [
    # Without the barrier a thread reads its partner's element either before the write (first
    # in the order: uninitialised) or after it (a race).
    (1, r"(shared memory race on|read of uninitialised shared memory: .*) dynamic shared memory byte"),
    (2, r"dynamic shared memory index 32 out of range \[0, 32\)"),
    (3, r"read of uninitialised shared memory: .* dynamic shared memory byte \d+"),
])
def test_reverse_dynamic_shared_bugs(rng, schedule, variant, message):
    with pytest.raises(RuntimeError, match=message):
        reverse(randn(rng, 40), variant)


@pytest.mark.parametrize("variant,message", [
    (1, r"warp collective called by a lane not in its mask"),
    (2, r"mask 0xffffffff names lanes that have exited \(0x[0-9a-f]{4}0000\)"),
])
def test_warp_sum_wrong_masks(rng, schedule, variant, message):
    with pytest.raises(RuntimeError, match=message):
        warp_sum(randn(rng, 64), variant)


# ---- what each layer of checking catches on its own

def test_missing_barrier_without_the_race_detector(rng, monkeypatch):
    # With the shadow checks off, a fixed thread order can hide a missing __syncthreads (reverse
    # order runs the tree's upper half first, exactly as the barrier would), the default shuffled
    # order shows it as a wrong sum, and the race detector reports it whatever the order.
    x = randn(rng, 256 * 4)
    monkeypatch.setenv("EMU_RACECHECK", "0")
    monkeypatch.setenv("EMU_SCHED", "rev")
    np.testing.assert_allclose(block_sum(x, variant=1), block_sum_ref(x), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("EMU_SCHED", "shuffle")
    assert not np.allclose(block_sum(x, variant=1), block_sum_ref(x), rtol=1e-3, atol=1e-3)
    monkeypatch.setenv("EMU_RACECHECK", "1")
    for order in SCHEDULES:
        monkeypatch.setenv("EMU_SCHED", order)
        with pytest.raises(RuntimeError, match="shared memory race on buf"):
            block_sum(x, variant=1)


def test_shared_memory_is_poisoned_between_blocks(rng, monkeypatch):
    # With the shadow checks off, the uninitialised halo reads the poison: NaN at the last output
    # of every block (static shared memory), and NaN where the dynamic tile was not written.
    monkeypatch.setenv("EMU_RACECHECK", "0")
    x = randn(rng, 3 * 64)
    y = stencil(x, variant=2)
    bad = np.isnan(y)
    assert bad[63::64].all() and not bad[np.arange(y.size) % 64 != 63].any()
    x = randn(rng, 40)
    y = reverse(x, variant=3)
    np.testing.assert_array_equal(np.isnan(y), np.arange(40) >= 32)


def test_parallel_blocks(rng, monkeypatch):
    # EMU_WORKERS=2 runs blocks on two OS threads (static shared arrays and their shadows are per
    # thread): the correct kernels still agree, and shared-memory races are still reported.
    monkeypatch.setenv("EMU_WORKERS", "2")
    A, B = randn(rng, 40, 33), randn(rng, 33, 50)
    np.testing.assert_allclose(sgemm(A, B), A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    x = randn(rng, 1000)
    np.testing.assert_allclose(block_sum(x), block_sum_ref(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stencil(x), stencil_ref(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(reverse(x), reverse_ref(x))
    with pytest.raises(RuntimeError, match="shared memory race on buf"):
        block_sum(x, variant=1)
