"""bench/: the suite file, the work formulas of harness.py and a smoke run of run_cpu.py on the
smallest cases (one sample each; no timing is asserted)."""
import csv

import pytest

from helpers import load_bench_script


@pytest.fixture(scope="module")
def harness():
    return load_bench_script("harness")


def test_suite_groups(harness):
    cases = harness.load_suite()
    counts = {g: sum(harness.group_of(c) == g for c in cases) for g in harness.GROUPS}
    assert counts == {harness.DENSE: 12, harness.DEPTHWISE: 8, harness.POOLING: 4}
    assert len({c["name"] for c in cases}) == len(cases)


def test_work_formulas(harness):
    cases = {c["name"]: c for c in harness.load_suite()}
    d = harness.case_dims(cases["r50_conv1_7x7s2"])
    assert (d["P"], d["Q"]) == (112, 112)
    flops, unit = harness.work_of(cases["r50_conv1_7x7s2"], "fwd")
    assert unit == "GFLOP/s" and flops == 2 * 1 * 64 * 112 * 112 * 3 * 7 * 7
    flops, _ = harness.work_of(cases["mbv2_dw_32_112"], "bwd_weight")
    assert flops == 2 * 2 * 32 * 112 * 112 * 1 * 3 * 3
    # max pooling forward+backward: x, y (fwd) + indices written and read + dy, dx (bwd)
    nbytes, unit = harness.work_of(cases["r50_maxpool_3x3s2"], "fwd+bwd")
    x, y = 2 * 64 * 112 * 112, 2 * 64 * 56 * 56
    assert unit == "GB/s" and nbytes == 4 * (x + y) + 16 * y + 4 * (y + x)
    assert harness.work_of(cases["r50_global_avgpool"], "fwd")[0] == 4 * (8 * 2048 * 49 + 8 * 2048)


def test_select_and_geomean(harness):
    cases = harness.load_suite()
    assert [c["name"] for c in harness.select_cases(cases, "r50_res2_3x3")] == ["r50_res2_3x3"]
    assert len(harness.select_cases(cases, "depthwise")) == 8
    assert len(harness.select_cases(cases, "vgg,pooling")) == 5
    with pytest.raises(ValueError, match="matches no case"):
        harness.select_cases(cases, "nope")
    assert abs(harness.geomean([0.5, 2.0]) - 1.0) < 1e-12


def test_run_cpu_smoke(tmp_path, torch):
    run_cpu = load_bench_script("run_cpu")
    out = tmp_path / "r.csv"
    rc = run_cpu.main(["--cases", "r50_global_avgpool,mbv2_dw_960_7", "--repeat", "1",
                       "--warmup", "0", "--min-sample-ms", "0.01", "--out", str(out)])
    rows = list(csv.DictReader(open(out)))
    assert rc == 0, [r["status"] for r in rows]
    assert [(r["case"], r["direction"]) for r in rows] == [
        ("mbv2_dw_960_7", "fwd"), ("mbv2_dw_960_7", "bwd_input"), ("mbv2_dw_960_7", "bwd_weight"),
        ("r50_global_avgpool", "fwd"), ("r50_global_avgpool", "fwd+bwd")]
    assert all(r["status"] == "ok" and float(r["ratio"]) > 0 for r in rows)
    md = (tmp_path / "r.md").read_text()
    assert "## Targets" in md and "torch" in md
