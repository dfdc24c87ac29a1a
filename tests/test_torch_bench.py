"""bench/run_torch_step.py: a smoke run on the smallest ResNet-18 step (batch 2 at 64x64, one
timed step each; no timing is asserted): the check passes and the reports are written."""
import csv

import pytest

from helpers import load_bench_script

pytest.importorskip("torch")


def load_runner():
    return load_bench_script("run_torch_step")


def test_run_torch_step_smoke(tmp_path, capsys):
    runner = load_runner()
    out = tmp_path / "step.md"
    rc = runner.main(["--batch", "2", "--size", "64", "--classes", "10", "--repeat", "1",
                      "--warmup", "0", "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert "ResNet-18" in text and "**ok**" in text and "| fastconv |" in text
    with open(tmp_path / "step.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["impl"] for r in rows] == ["torch", "fastconv"]
    assert rows[1]["check"] == "ok" and float(rows[1]["median_ms"]) > 0
    assert float(rows[0]["ratio"]) == 1.0
    assert "fastconv / torch time per training step" in capsys.readouterr().err


def test_run_torch_step_rejects_bad_arguments(capsys):
    runner = load_runner()
    with pytest.raises(SystemExit):
        runner.main(["--size", "16"])
    assert "--size must be at least 32" in capsys.readouterr().err
