"""Schedule tracing (common/parallel.h, `_C.set_schedule_trace`) and bench/run_schedule.py, which
replays the traced chunks on T ideal threads to show how far a decomposition could scale.

Traced, an op runs every chunk on the calling thread; the result must be the one a parallel run
gives, bit for bit, and the record must show the regions the op was cut into for the thread count
set, including the ranges parallel_claim hands out (GEMM tasks, depthwise units)."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C
from helpers import load_bench_script, switched


@pytest.fixture
def threads4():
    before = fastconv.num_threads()
    fastconv.set_num_threads(4)
    with switched(_C.small_op_ns, _C.set_small_op_ns, 0):  # every split, even on small inputs
        yield
    fastconv.set_num_threads(before)


def traced(fn):
    _C.set_schedule_trace(True)
    try:
        out = fn()
    finally:
        regions = _C.take_schedule_trace()
        _C.set_schedule_trace(False)
    return out, regions


def ops(rng):
    x = rng.standard_normal((2, 24, 17, 19), dtype=np.float32)
    w = rng.standard_normal((32, 24, 3, 3), dtype=np.float32)
    dy = rng.standard_normal((2, 32, 9, 10), dtype=np.float32)
    wd = rng.standard_normal((24, 1, 3, 3), dtype=np.float32)
    dyd = rng.standard_normal((2, 24, 17, 19), dtype=np.float32)
    return {
        "conv fwd (GEMM tasks)": lambda: F.conv2d(x, w, None, 2, 1),
        "conv dgrad": lambda: G.conv2d_input(x.shape, w, dy, 2, 1),
        "conv wgrad": lambda: G.conv2d_weight(x, w.shape, dy, 2, 1),
        "winograd fwd": lambda: F.conv2d(x, w, None, 1, 1),
        "depthwise fwd": lambda: F.conv2d(x, wd, None, 1, 1, 1, 24),
        "depthwise wgrad": lambda: G.conv2d_weight(x, wd.shape, dyd, 1, 1, 1, 24),
        "max pool": lambda: F.max_pool2d(x, 3, 2, 1),
    }


@pytest.mark.parametrize("name", list(ops(np.random.default_rng(0))))
def test_traced_op_gives_the_parallel_result_and_records_its_chunks(threads4, name):
    fn = ops(np.random.default_rng(3))[name]
    want = fn()
    got, regions = traced(fn)
    np.testing.assert_array_equal(got, want)
    assert regions, f"{name}: no region recorded"
    for threads, start, end, setup, chunks in regions:
        assert 1 <= threads <= 4
        assert chunks and all(c >= 0 for c in chunks) and setup >= 0
        assert end - start >= sum(chunks)
    assert max(t for t, *_ in regions) > 1, f"{name}: never cut for more than one thread"
    # nothing is recorded once tracing is off
    fn()
    assert _C.take_schedule_trace() == []


def test_trace_plans_for_the_thread_count_set(threads4):
    x = np.random.default_rng(1).standard_normal((4, 8, 64, 64), dtype=np.float32)
    counts = {}
    for t in (1, 2, 4):
        fastconv.set_num_threads(t)
        _, regions = traced(lambda: F.max_pool2d(x, 2, 2))
        counts[t] = max(len(r[4]) for r in regions)
        assert max(r[0] for r in regions) == t
    assert counts[1] == 1 and counts[2] <= counts[4]


def test_makespan_replays_in_order_claiming():
    sched = load_bench_script("run_schedule")
    assert sched.makespan([5, 5, 5, 5], 2) == 10
    assert sched.makespan([8, 1, 1, 1, 1], 2) == 8      # the long chunk first, the rest beside it
    assert sched.makespan([1, 1, 1, 1, 8], 2) == 10     # the long chunk last: a tail
    assert sched.makespan([3, 3], 16) == 3               # idle threads cost nothing
    assert sched.makespan([3, 3], 2, setup_ns=2) == 5


def test_run_schedule_smoke(capsys, tmp_path):
    sched = load_bench_script("run_schedule")
    out = tmp_path / "s.json"
    before = fastconv.num_threads()
    assert sched.main(["--threads", "1,2", "--cases", "mbv2_dw_960_7", "--repeat", "1",
                       "--json", str(out)]) == 0
    assert fastconv.num_threads() == before
    text = capsys.readouterr().out
    assert "| mbv2_dw_960_7 | fwd |" in text and "| mbv2_dw_960_7 | bwd_weight |" in text
    rows = __import__("json").loads(out.read_text())
    assert len(rows) == 3 and all(r["efficiency"]["1"] == pytest.approx(1.0) for r in rows)


def test_run_schedule_rejects_bad_thread_lists(capsys):
    sched = load_bench_script("run_schedule")
    for bad in ("2,4", "1,x", "1,0"):
        with pytest.raises(SystemExit):
            sched.main(["--threads", bad])
        assert "--threads" in capsys.readouterr().err


def test_run_schedule_model_step(capsys):
    sched = load_bench_script("run_schedule")
    before = fastconv.num_threads()
    assert sched.main(["--threads", "1,4", "--models", "resnet18", "--batch", "2", "--size", "32",
                       "--repeat", "1"]) == 0
    assert fastconv.num_threads() == before
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| resnet18 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 6 and cells[2].endswith("%") and cells[5].endswith("%")
