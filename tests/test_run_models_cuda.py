"""bench/run_models_cuda.py, what runs without a GPU: argument handling, the no-GPU line and exit
status 2, the model pairs, and the whole step-check-time-report path on CPU tensors with tiny
inputs (--device cpu). No timing is asserted."""
import csv

import pytest

from helpers import load_bench_script

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def runner():
    return load_bench_script("run_models_cuda")


def test_defaults_are_the_issue_settings(runner):
    args = runner.parse_args([])
    assert args.device == "cuda" and args.batch == 64 and args.size == 224
    assert args.models == ["resnet18", "efficientnet_lite0"]
    assert args.dtype == ["bfloat16", "float32"]
    assert runner.parse_args(["--device", "cpu"]).dtype == ["float32"]


@pytest.mark.parametrize("argv, message", [
    (["--models", "resnet50"], "argument --models"),
    (["--dtype", "float16"], "argument --dtype"),
    (["--batch", "0"], "argument --batch"),
    (["--size", "16"], "argument --size"),
    (["--repeat", "x"], "argument --repeat"),
    (["--warmup", "-1"], "argument --warmup"),
    (["--device", "tpu"], "argument --device"),
    (["--device", "cpu", "--dtype", "bfloat16"], "--device cpu runs float32 only"),
])
def test_bad_arguments(runner, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        runner.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_without_a_gpu_one_line_and_exit_2(runner, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert runner.main(["--out", str(tmp_path / "r.md")]) == 2
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "no GPU usable here" in out and not err
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_pairs_share_weights_and_convert_every_layer(runner, name):
    import fastconv.torch as fct
    model, ours, converted = runner.build_pair(torch, name, 10, "cpu", 0)
    assert model.training and ours.training
    done, total = (int(v) for v in converted.split(" of "))
    assert done == total > 0
    assert not any(isinstance(m, fct.Conv2d) for m in model.modules())  # a copy was converted
    for (n, p), (n2, q) in zip(model.state_dict().items(), ours.state_dict().items()):
        assert n == n2 and torch.equal(p, q)


def test_efficientnet_same_padding_through_fastconv_matches_torch(runner):
    """The converted Conv2dSamePadding layers (fastconv's TensorFlow 'same', odd pixel at the
    bottom/right, stride 2 included) give torch's outputs."""
    model, ours, _ = runner.build_pair(torch, "efficientnet_lite0", 10, "cpu", 0)
    x = torch.randn(2, 3, 33, 35)
    assert runner.check(torch, model, ours, x, "float32", "cpu")[0] == "ok"


def test_step_trains_and_check_catches_a_wrong_model(runner):
    model, ours, _ = runner.build_pair(torch, "resnet18", 10, "cpu", 0)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 10, (2,))
    assert runner.check(torch, model, ours, x, "float32", "cpu")[0] == "ok"
    before = [p.detach().clone() for p in ours.parameters()]
    step = runner.make_step(torch, ours, x, y, "float32", "cpu")
    loss = step()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, ours.parameters())
               if a.dim() == 4)  # every conv weight moved
    model, ours, _ = runner.build_pair(torch, "resnet18", 10, "cpu", 0)
    with torch.no_grad():  # the stem's weight, perturbed (a scale would be undone by BatchNorm)
        w = next(ours.parameters())
        w.add_(0.1 * w.std() * torch.randn_like(w))
    status, err_f, err_t = runner.check(torch, model, ours, x, "float32", "cpu")
    assert status == "CHECK FAILED" and err_f > 2 * err_t + 1e-3


def test_cpu_run_end_to_end(runner, tmp_path, capsys):
    out = tmp_path / "m.md"
    rc = runner.main(["--device", "cpu", "--batch", "2", "--size", "32", "--classes", "10",
                      "--repeat", "2", "--warmup", "1", "--out", str(out)])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "| resnet18 | float32 | fastconv |" in text
    assert "| efficientnet_lite0 | float32 | torch |" in text
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["impl"]) for r in rows] == [
        ("resnet18", "torch"), ("resnet18", "fastconv"),
        ("efficientnet_lite0", "torch"), ("efficientnet_lite0", "fastconv")]
    for r in rows:
        assert float(r["median_ms"]) > 0 and int(r["samples"]) == 2 and r["device"] == "cpu"
    # ResNet-18's logits are close to float64's; EfficientNet-Lite0 at 32x32 and batch 2 has
    # BatchNorm over 2 values at its 1x1 stages, so float32 itself errs by ~20% there
    assert float(rows[0]["err_logits"]) < 1e-2 and float(rows[1]["err_logits"]) < 1e-2
    assert float(rows[3]["err_logits"]) <= 2 * float(rows[2]["err_logits"]) + 1e-3
    assert rows[0]["ratio"] == "1.0" or float(rows[0]["ratio"]) == 1.0
    assert rows[1]["check"] == "ok" and rows[1]["target"] == ""


def test_a_layer_falling_back_to_torch_is_an_error(runner, tmp_path, monkeypatch, capsys):
    """A fastconv layer that would run torch's implementation would time torch against itself:
    the run reports it, times torch alone and exits 1."""
    import fastconv.torch.modules as modules
    monkeypatch.setattr(modules, "unsupported",
                        lambda op, **t: ValueError("test: no kernel") if op == "conv2d" else None)
    rc = runner.main(["--device", "cpu", "--models", "resnet18", "--batch", "2", "--size", "32",
                      "--classes", "10", "--repeat", "1", "--warmup", "0",
                      "--out", str(tmp_path / "m.csv")])
    _, err = capsys.readouterr()
    assert rc == 1 and "runs torch's implementation" in err
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["impl"] for r in rows] == ["torch", "fastconv"]
    assert rows[1]["check"].startswith("error: RuntimeWarning") and rows[1]["median_ms"] == ""


def test_a_failing_backward_is_reported(runner, tmp_path, monkeypatch, capsys):
    """The check runs forward only; a fastconv backward that raises is reported in the row and
    the exit status, torch is still timed."""
    import fastconv.torch._kernels as ops

    def broken(*a, **k):
        raise RuntimeError("test: broken weight gradient")
    monkeypatch.setattr(ops, "conv2d_backward_weight", broken)
    rc = runner.main(["--device", "cpu", "--models", "resnet18", "--batch", "2", "--size", "32",
                      "--classes", "10", "--repeat", "1", "--warmup", "0",
                      "--out", str(tmp_path / "m.csv")])
    _, err = capsys.readouterr()
    assert rc == 1 and "broken weight gradient" in err
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["impl"] == "torch" and float(rows[0]["median_ms"]) > 0
    assert rows[1]["check"] == "error: RuntimeError: test: broken weight gradient"
