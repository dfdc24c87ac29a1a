"""`fastconv bench`: a --quick run on a tiny suite writes a well-formed table, CSV, JSON and PNG; a
wrong kernel fails the run loudly; --device cuda without a GPU prints the targets and exits 0; bad
arguments are refused; the CUDA runner's checks and callables, run on the CPU. No timing is
asserted."""
import csv
import json

import numpy as np
import pytest

from fastconv.bench import cuda, harness
from fastconv.cli import main

pytest.importorskip("torch")

TINY = {"cases": [
    {"name": "tiny_conv", "op": "conv2d", "n": 2, "n_cpu": 1, "c": 4, "h": 9, "w": 11, "k": 6,
     "r": 3, "s": 3, "stride": 1, "pad": 1, "groups": 2},
    {"name": "tiny_dw", "op": "conv2d", "n": 2, "n_cpu": 2, "c": 5, "h": 10, "w": 7, "k": 5,
     "r": 3, "s": 3, "stride": 2, "pad": 1, "groups": 5},
    {"name": "tiny_maxpool", "op": "max_pool2d", "n": 2, "n_cpu": 1, "c": 3, "h": 9, "w": 8,
     "r": 3, "s": 3, "stride": 2, "pad": 1},
    {"name": "tiny_avgpool", "op": "avg_pool2d", "n": 2, "n_cpu": 2, "c": 3, "h": 7, "w": 7,
     "r": 2, "s": 2, "stride": 2, "pad": 0}]}
EXPECTED = [("tiny_conv", "fwd"), ("tiny_conv", "bwd_input"), ("tiny_conv", "bwd_weight"),
            ("tiny_dw", "fwd"), ("tiny_dw", "bwd_input"), ("tiny_dw", "bwd_weight"),
            ("tiny_maxpool", "fwd"), ("tiny_maxpool", "fwd+bwd"),
            ("tiny_avgpool", "fwd"), ("tiny_avgpool", "fwd+bwd")]
FAST = ["--quick", "--repeat", "2", "--warmup", "0"]


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_quick_run_writes_table_csv_json_png(tiny, tmp_path, capsys):
    from PIL import Image

    from fastconv import _C
    out = {k: tmp_path / f"r.{k}" for k in ("csv", "json", "png")}
    rc = main(["bench", "--suite", tiny, *FAST, "--threads", "1,2", "--csv", str(out["csv"]),
               "--json", str(out["json"]), "--plot", str(out["png"])])
    text, err = capsys.readouterr()
    assert rc == 0, err
    # the markdown: a section per thread count, each with both tables, a row per direction
    assert "## 1 thread" in text and "## 2 threads" in text and "## Thread scaling" in text
    table = [line for line in text.splitlines() if line.startswith("| tiny_")]
    assert len(table) == 3 * len(EXPECTED)  # 1 and 2 threads, then the scaling table
    # conv table 12 columns, pooling 13, scaling 10 (case, dir, fastconv and torch at 1 and 2
    # threads, their parallel efficiencies, the gap, the ratio at 2)
    assert [line.count("|") - 1 for line in table] == ([12] * 6 + [13] * 4) * 2 + [10] * 10
    assert not any("| nan |" in line for line in table)
    assert f"ISA path {_C.isa()}" in text
    # CSV: every row checked ("ok"), timed, with the machine facts
    with open(out["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["direction"]) for r in rows] == EXPECTED * 2
    assert [int(r["threads"]) for r in rows] == [1] * 10 + [2] * 10
    for r in rows:
        assert r["status"] == "ok" and r["device"] == "cpu" and r["isa"] == _C.isa()
        assert float(r["ratio"]) > 0 and float(r["fastconv_rate"]) > 0 and r["cpu"]
        assert float(r["fastconv_pct_peak"]) > 0
        assert float(r["err_fastconv"]) < 1e-3
        assert r["unit"] == ("GFLOP/s" if r["op"] == "conv2d" else "GB/s")
    # JSON: the machine facts, settings, ceilings per thread count, the same rows, the targets
    data = json.loads(out["json"].read_text())
    m = data["meta"]["machine"]
    assert m["isa"] == _C.isa() and m["torch_version"] and m["cpu"] and m["cores"] >= 1
    assert data["meta"]["settings"]["threads"] == [1, 2]
    assert set(data["meta"]["ceilings"]) == {"1", "2"}
    assert [(r["case"], r["direction"]) for r in data["rows"]] == EXPECTED * 2
    assert "cpu" not in data["rows"][0]  # facts once, in meta
    assert {s["threads"] for s in data["summary"]} == {1, 2}
    # PNG: a real image of a sensible size
    with Image.open(out["png"]) as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 300


def test_from_json_merges_runs_into_one_report_with_the_scaling_table(tiny, tmp_path, capsys):
    """One run per thread count (as on a lent machine, under a time budget), then --from-json:
    one report, the scaling table with both libraries' efficiencies, nothing timed again."""
    paths = []
    for t in (1, 2):
        paths.append(str(tmp_path / f"t{t}.json"))
        assert main(["bench", "--suite", tiny, *FAST, "--ops", "pool", "--threads", str(t),
                     "--json", paths[-1]]) == 0
    capsys.readouterr()
    merged = tmp_path / "merged.csv"
    assert main(["bench", "--from-json", *paths, "--csv", str(merged)]) == 0
    text, _ = capsys.readouterr()
    assert "## 1 thread" in text and "## 2 threads" in text
    assert "## Thread scaling (us; efficiency 1->2 threads in %)" in text
    scaling = text.split("## Thread scaling")[1].splitlines()
    rows = [line.split("|")[1:-1] for line in scaling if line.startswith("| tiny_")]
    assert [r[0].strip() for r in rows] == ["tiny_maxpool", "tiny_maxpool", "tiny_avgpool",
                                            "tiny_avgpool"]
    for r in rows:  # fastconv and torch times at 1 and 2 threads, efficiencies, gap, ratio
        assert all(float(v) > 0 for v in r[2:8]) and float(r[9]) > 0
    with open(merged) as f:
        assert sorted(int(r["threads"]) for r in csv.DictReader(f)) == [1] * 4 + [2] * 4
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["bench", "--from-json", str(bad)]) != 0
    assert "is not a fastconv bench --json file" in capsys.readouterr().err


def test_wrong_kernel_fails_loudly(tiny, tmp_path, capsys, monkeypatch):
    import fastconv.nn.functional as F
    real = F.avg_pool2d
    monkeypatch.setattr(F, "avg_pool2d", lambda *a, **k: real(*a, **k) * np.float32(1.001))
    out = tmp_path / "r.csv"
    rc = main(["bench", "--suite", tiny, *FAST, "--ops", "pool", "--csv", str(out)])
    _, err = capsys.readouterr()
    assert rc == 1
    assert "CHECK FAILED: tiny_avgpool" in err and "fastconv bench: FAILED" in err
    with open(out) as f:
        status = {(r["case"], r["direction"]): (r["status"], r["fastconv_us"])
                  for r in csv.DictReader(f)}
    assert status[("tiny_avgpool", "fwd")] == ("CHECK FAILED", "")  # not timed
    assert status[("tiny_maxpool", "fwd")][0] == "ok"


def test_cuda_without_gpu_prints_the_targets(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the projection is for machines without one")
    out = tmp_path / "gpu.json"
    rc = main(["bench", "--device", "cuda", "--dtype", "float32,bfloat16", "--json", str(out)])
    text, err = capsys.readouterr()
    assert rc == 0
    assert "no GPU" in err and "85% H100 us" in text and "70% H100 us" in text
    cases = harness.load_suite()  # the default ops with --device cuda: all three groups
    assert cuda.default_ops() == ["conv", "depthwise", "pool"]
    assert sum(harness.group_of(c) != harness.DENSE for c in cases) == 12
    for c in cases:
        assert f"| {c['name']} |" in text
    h200 = json.load(open(cuda.BASELINE_JSON))["results"]
    h200 = {(r["case"], r["mode"]): r for r in h200}
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == sum(len(cuda.directions(c)) for c in cases) * 2
    by = {(r["case"], r["direction"], r["dtype"]): r for r in rows}
    # the figures, recomputed by hand: r50 max pool 3x3/2 forward in float32 moves x and y
    r = by[("r50_maxpool_3x3s2", "fwd", "float32")]
    x, y = 32 * 64 * 112 * 112, 32 * 64 * 56 * 56
    assert r["bytes"] == 4 * (x + y) == h200[("r50_maxpool_3x3s2", "fp32")]["bytes_fwd"]
    assert r["h100_85_us"] == pytest.approx(4 * (x + y) / (0.85 * 2436e9) * 1e6)
    assert r["h200_cudnn_nchw_us"] == h200[("r50_maxpool_3x3s2", "fp32")]["fwd"]
    assert r["h200_cudnn_cl_us"] == h200[("r50_maxpool_3x3s2", "fp32_cl")]["fwd"]
    assert r["target_2x_us"] == pytest.approx(min(r["h200_cudnn_nchw_us"],
                                                  r["h200_cudnn_cl_us"]) / 2)
    r = by[("mbv2_dw_32_112", "bwd_weight", "bfloat16")]
    assert r["bytes"] == h200[("mbv2_dw_32_112", "bf16_cl")]["bytes_fwd"]
    assert r["h200_cudnn_nchw_us"] is None
    assert r["h200_cudnn_cl_us"] == h200[("mbv2_dw_32_112", "bf16_cl")]["bwd_weight"]
    for r in rows:
        assert r["bytes"] > 0 and r["h100_85_us"] > r["h200_85_us"] > 0
    # dense conv: FLOPs and the time at 70% of the H100 datasheet peak (TF32 494 TFLOP/s for
    # float32, BF16 989), recomputed by hand for the ResNet-50 stem (batch 32, 3->64, 7x7/2,
    # 224 -> 112); cuDNN's H200 times beside it, float32's target that of TF32 on
    stem = next(c for c in cases if c["name"] == "r50_conv1_7x7s2")
    assert (stem["n"], stem["c"], stem["h"], stem["k"], stem["r"], stem["stride"]) == \
        (32, 3, 224, 64, 7, 2)
    flops = 2 * 32 * 64 * 112 * 112 * 3 * 7 * 7
    assert flops == h200[("r50_conv1_7x7s2", "fp32")]["flops"]
    for dtype, peak in (("float32", 494e12), ("bfloat16", 989e12)):
        for direction in ("fwd", "bwd_input", "bwd_weight"):
            r = by[("r50_conv1_7x7s2", direction, dtype)]
            assert r["flops"] == flops and r["h100_peak_tflops"] * 1e12 == peak
            assert r["h100_70_us"] == pytest.approx(flops / (0.70 * peak) * 1e6)
    r = by[("r50_conv1_7x7s2", "bwd_weight", "float32")]
    assert r["h200_cudnn_nchw_us"] == h200[("r50_conv1_7x7s2", "fp32")]["bwd_weight"]
    assert r["h200_cudnn_tf32_us"] == h200[("r50_conv1_7x7s2", "tf32")]["bwd_weight"]
    assert r["target_us"] == r["h200_cudnn_tf32_us"]
    r = by[("r50_conv1_7x7s2", "fwd", "bfloat16")]
    assert r["h200_cudnn_tf32_us"] is None and r["h200_cudnn_nchw_us"] is None
    assert r["target_us"] == pytest.approx(1.3 * h200[("r50_conv1_7x7s2", "bf16_cl")]["fwd"])
    # the markdown row: case, dtype, shape, dir, GFLOP, peak, 70% H100 us, H200 cuDNN (nchw, cl,
    # tf32), target
    line = next(line for line in text.splitlines()
                if line.startswith("| r50_conv1_7x7s2 | bfloat16 |") and "| fwd |" in line)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == 11
    assert float(cells[4]) == pytest.approx(flops / 1e9, rel=2e-3)
    assert float(cells[5]) == 989
    assert float(cells[6]) == pytest.approx(flops / (0.70 * 989e12) * 1e6, rel=2e-3)
    assert cells[7] == "" and cells[9] == ""


def test_cuda_projection_on_a_tiny_suite(tiny, tmp_path, capsys):
    """The CLI with --device cuda on the tiny suite: a conv projection row per dense direction
    and dtype (the tiny cases have no H200 figures), the other groups in the bytes table."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the projection is for machines without one")
    out = tmp_path / "p.csv"
    rc = main(["bench", "--suite", tiny, "--device", "cuda", "--csv", str(out)])  # both dtypes
    text, _ = capsys.readouterr()
    assert rc == 0
    conv = [line for line in text.splitlines() if line.startswith("| tiny_conv |")]
    assert len(conv) == 6 and all(line.count("|") - 1 == 11 for line in conv)
    others = [line for line in text.splitlines() if line.startswith("| tiny_")
              and not line.startswith("| tiny_conv |")]
    assert len(others) == 2 * (3 + 2 + 2) and all(line.count("|") - 1 == 10 for line in others)
    with open(out) as f:
        rows = [r for r in csv.DictReader(f) if r["case"] == "tiny_conv"]
    # tiny_conv: N 2, C 4, K 6, 9x11 -> 9x11 (3x3, pad 1), groups 2
    flops = 2 * 2 * 6 * 9 * 11 * (4 // 2) * 3 * 3
    assert [(r["direction"], r["dtype"]) for r in rows] == \
        [(d, t) for t in ("float32", "bfloat16") for d in ("fwd", "bwd_input", "bwd_weight")]
    for r in rows:
        peak = 494e12 if r["dtype"] == "float32" else 989e12
        assert float(r["flops"]) == flops
        assert float(r["h100_70_us"]) == pytest.approx(flops / (0.7 * peak) * 1e6)
        assert r["h200_cudnn_nchw_us"] == r["target_us"] == ""


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "argument --threads"),
    (["--threads", "2,x"], "argument --threads"),
    (["--ops", "conv,fft"], "argument --ops"),
    (["--dtype", "float64"], "argument --dtype"),
    (["--repeat", "0"], "argument --repeat"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_suites_and_dtypes_are_clear_errors(tiny, tmp_path, capsys):
    assert main(["bench", "--suite", str(tmp_path / "none.json")]) == 1
    assert "cannot read it" in capsys.readouterr().err
    bad = dict(TINY)
    bad["cases"] = [dict(TINY["cases"][0], groups=3)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["bench", "--suite", str(tmp_path / "bad.json")]) == 1
    assert "'tiny_conv': 'groups' (3) must divide c (4)" in capsys.readouterr().err
    bad["cases"] = [dict(TINY["cases"][2], stride=0)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["bench", "--suite", str(tmp_path / "bad.json")]) == 1
    assert "'stride' must be an int >= 1, got 0" in capsys.readouterr().err
    assert main(["bench", "--suite", tiny, "--dtype", "float16"]) == 1
    assert "CPU kernels are float32 only" in capsys.readouterr().err
    assert main(["bench", "--device", "cuda", "--threads", "4"]) == 1
    assert "no effect with --device cuda" in capsys.readouterr().err
    assert main(["bench", "--suite", tiny, "--ops", "conv", "--cases", "pool"]) == 1
    assert "matches no case" in capsys.readouterr().err


def test_cuda_runner_checks_on_the_cpu(torch, monkeypatch):
    """The GPU runner's inputs, checks and timed callables, run with numpy and the CPU kernels:
    right results pass, a wrong value or a wrong argmax is caught."""
    import fastconv.nn.functional as F
    cases = {c["name"]: c for c in TINY["cases"]}
    for case in TINY["cases"]:
        ctx = cuda.Ctx(torch, None, "float32", 0, device="cpu")
        make = cuda.conv_impls if case["op"] == "conv2d" else cuda.pool_impls
        impls = make(ctx, case, harness.case_dims(case, "n"))
        assert list(impls) == list(cuda.directions(case))
        for check, timed in impls.values():
            err_fc, err_torch = check()
            assert err_fc < 1e-4 and err_torch < 1e-4
            dense = harness.group_of(case) == harness.DENSE  # float32: also cuDNN with TF32
            assert set(timed) == {"fastconv", "torch_nchw", "torch_cl"} | (
                {"torch_tf32"} if dense else set())
            outs = [np.asarray(ctx.torch_of(fn())) for fn in timed.values()]
            for o in outs[1:]:
                np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=1e-4)

    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: real(*a, **k) * np.float32(1.001))
    ctx = cuda.Ctx(torch, None, "float32", 0, device="cpu")
    dims = harness.case_dims(cases["tiny_dw"], "n")
    check, _ = cuda.conv_impls(ctx, cases["tiny_dw"], dims)["fwd"]
    with pytest.raises(cuda.CheckFailed, match="tiny_dw fwd float32: max error"):
        check()

    real_max = F.max_pool2d

    def shifted(*a, **k):  # indices one to the right: no longer the window's maximum
        y, idx = real_max(*a, **k)
        return y, np.minimum(idx + 1, 9 * 8 - 1)
    monkeypatch.setattr(F, "max_pool2d", shifted)
    ctx = cuda.Ctx(torch, None, "float32", 0, device="cpu")
    check, _ = cuda.pool_impls(ctx, cases["tiny_maxpool"],
                               harness.case_dims(cases["tiny_maxpool"], "n"))["fwd+bwd"]
    with pytest.raises(cuda.CheckFailed, match="indices do not point at the window's maximum"):
        check()


def test_device_check_reports_the_worst_elements(torch):
    ref = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    base = ref.float()
    bad = base.clone()
    bad[1, 2, 3, 4] += 0.5
    assert cuda.check_on_device(torch, "x", base, base, ref, 2e-5)[0] < 1e-6
    with pytest.raises(cuda.CheckFailed, match=r"at \(1, 2, 3, 4\)"):
        cuda.check_on_device(torch, "x", bad, base, ref, 2e-5)
    nan = base.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(cuda.CheckFailed, match="NaNs differ"):
        cuda.check_on_device(torch, "x", nan, base, ref, 2e-5)


class CpuTimer:
    """The GPU runner's timer interface, timed on the CPU with the harness loop."""

    def measure(self, impls, warmup, repeat):
        cfg = harness.TimingConfig(warmup=warmup, repeat=repeat, min_sample_s=0.0)
        return harness.measure({k: (fn, [()]) for k, fn in impls.items()}, cfg)


def test_cuda_rows_and_reports_on_the_cpu(torch, tmp_path):
    """cuda.run_case and the GPU report (table, CSV, JSON, chart) end to end, with numpy, the CPU
    kernels and a CPU timer standing in for the device."""
    from PIL import Image

    from fastconv.bench import report
    facts = dict(cpu="test cpu", gpu="Test GPU", gpu_l2_bytes=50 << 20, driver="580.0",
                 cudnn_version=91900)
    cfg = harness.TimingConfig(warmup=0, repeat=2)
    h200 = cuda.load_h200()
    rows = []
    for case in TINY["cases"]:
        ctx = cuda.Ctx(torch, None, "float32", 0, device="cpu")
        rows += cuda.run_case(ctx, CpuTimer(), case, cfg, facts, 2000.0, h200, None)
    rows += cuda.run_case(cuda.Ctx(torch, None, "float32", 0, device="cpu"), CpuTimer(),
                          TINY["cases"][2], cfg, facts, 2000.0, h200, "skipped: no fastconv")
    assert [(r["case"], r["direction"]) for r in rows[:10]] == EXPECTED
    for r in rows[:10]:
        assert r["status"] == "ok" and r["ratio"] > 0 and r["gpu"] == "Test GPU"
        assert r["fastconv_pct_peak"] == pytest.approx(100 * r["fastconv_rate"] / 2000.0)
        assert r["bytes"] == harness.bytes_of(TINY["cases"][[c["name"] for c in TINY["cases"]]
                                                         .index(r["case"])], r["direction"])
    assert rows[-1]["status"] == "skipped: no fastconv" and rows[-1]["fastconv_us"] is None
    for r in rows[:3]:  # tiny_conv: dense, TFLOP/s and % of the H100's TF32 peak
        flops = harness.conv_flops(harness.case_dims(TINY["cases"][0], "n"))
        assert r["flops"] == flops and r["h100_peak_tflops"] == 494.0
        assert r["fastconv_tflops"] == pytest.approx(flops / r["fastconv_us"] / 1e6)
        assert r["baseline_pct_h100_peak"] == pytest.approx(
            100 * flops / r["baseline_us"] / 1e6 / 494.0)
        assert r["ratio_tf32"] == pytest.approx(r["fastconv_us"] / r["torch_tf32_us"])
        assert r["torch_tf32_pct_h100_peak"] == pytest.approx(
            100 * flops / r["torch_tf32_us"] / 1e6 / 494.0)
    assert "fastconv_tflops" not in rows[3]  # depthwise: bandwidth only
    assert "torch_tf32_us" not in rows[3]
    # issue 12's float32 target, by hand: the geometric mean of fastconv / cuDNN with TF32 on
    (t,) = cuda.dense_targets(rows)
    ratios = [r["fastconv_us"] / r["torch_tf32_us"] for r in rows[:3]]
    assert t["dtype"] == "float32" and t["layers"] == 3 and t["target"] == 1.0
    assert t["geomean"] == pytest.approx((ratios[0] * ratios[1] * ratios[2]) ** (1 / 3))
    assert t["verdict"] == ("met" if t["geomean"] <= 1.0 else "not met")
    fake = [dict(rows[0], dtype="bfloat16", ratio=v) for v in (1.2, 1.5)]
    (t,) = cuda.dense_targets(fake)
    assert t["geomean"] == pytest.approx(1.8 ** 0.5) and t["verdict"] == "not met"
    meta = dict(device="cuda", machine=facts, settings=dict(repeat=2, warmup=0),
                copy_gbps=2000.0, flush_mib=100.0, elapsed_s=1.0)
    text = report.render(rows, meta)
    assert "GPU: Test GPU" in text and "2000 GB/s" in text and "Not timed for fastconv" in text
    assert sum(line.startswith("| tiny_") for line in text.splitlines()) == len(rows)
    assert "% H100 peak" in text and "fastconv TFLOP/s" in text and "vs tf32" in text
    assert "| float32 | cuDNN TF32 on | 3 |" in text
    report.write_csv(str(tmp_path / "g.csv"), rows)
    report.write_json(str(tmp_path / "g.json"), rows, meta)
    assert len(json.loads((tmp_path / "g.json").read_text())["rows"]) == len(rows)
    assert report.plot(str(tmp_path / "g.png"), rows, meta)
    with Image.open(tmp_path / "g.png") as im:
        assert im.format == "PNG"
