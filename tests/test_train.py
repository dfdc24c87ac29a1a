"""fastconv.train: fit / evaluate / predict, metrics, callbacks, History, and the digits example
(the end-to-end proof that the stack learns on real data)."""
import importlib.util
import os

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn
from fastconv import optim, train
from fastconv.data import ArrayDataset, DataLoader

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "train_digits.py")


def blobs(n=120, seed=0):
    """Two well-separated Gaussian classes in 4-D: any working loop reaches ~100%."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 4)).astype(np.float32) + 3.0 * y[:, None].astype(np.float32)
    return x, y.astype(np.int64)


def mlp(seed=0):
    fc.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def test_fit_learns_and_logs_history():
    x, y = blobs()
    model = mlp()
    hist = train.fit(model, (x, y), epochs=5, optimizer=optim.SGD(model.parameters(), lr=0.1),
                     val_data=(x, y), verbose=0, seed=0)
    h = hist.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 5 for v in h.values()) and hist.epoch == list(range(5))
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.9
    assert not model.training  # fit leaves the model in eval mode


def test_evaluate_matches_manual_computation():
    x, y = blobs()
    model = mlp()
    res = train.evaluate(model, (x, y), batch_size=7)
    out = train.predict(model, x, batch_size=11)
    assert out.shape == (len(x), 2)
    with fc.no_grad():
        manual = nn.functional.cross_entropy(model(fc.tensor(x)), y).item()
    assert res["loss"] == pytest.approx(manual, rel=1e-5)
    assert res["accuracy"] == pytest.approx(float((out.argmax(1) == y).mean()))


def test_fit_is_deterministic_under_seeds():
    x, y = blobs()
    runs = []
    for _ in range(2):
        model = mlp(seed=3)
        train.fit(model, (x, y), epochs=2, optimizer=optim.Adam(model.parameters(), 1e-2),
                  verbose=0, seed=5, batch_size=16)
        runs.append(np.concatenate([p.data.ravel() for p in model.parameters()]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_early_stopping_restores_best_weights():
    x, y = blobs()
    model = mlp()
    stopper = train.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    # a learning rate this large makes the loss blow around, so early stopping must trigger
    hist = train.fit(model, (x, y), epochs=30, optimizer=optim.SGD(model.parameters(), lr=5.0),
                     val_data=(x, y), verbose=0, callbacks=[stopper], seed=0)
    n = len(hist.epoch)
    assert n < 30 and stopper.stopped_epoch == n - 1
    best = min(hist.history["val_loss"])
    assert train.evaluate(model, (x, y))["loss"] == pytest.approx(best, rel=1e-4)


def test_model_checkpoint_saves_best_only(tmp_path):
    x, y = blobs()
    model = mlp()
    ckpt = train.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.npz"), monitor="val_accuracy",
                                 save_best_only=True)
    train.fit(model, (x, y), epochs=4, optimizer=optim.SGD(model.parameters(), lr=0.1),
              val_data=(x, y), verbose=0, callbacks=[ckpt], seed=0)
    assert ckpt.saved and all(os.path.exists(p) for p in ckpt.saved)
    state = fc.load(ckpt.saved[-1])
    assert set(state) == set(model.state_dict())


def test_learning_rate_scheduler_callback():
    x, y = blobs()
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = train.fit(model, (x, y), epochs=3, optimizer=opt, verbose=0,
                     callbacks=[train.LearningRateScheduler(sched)])
    assert hist.history["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = blobs(40)
    model = mlp()
    train.fit(model, (x, y), epochs=3, optimizer=optim.SGD(model.parameters(), lr=0.1),
              verbose=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Epoch")]
    assert len(lines) == 3 and "loss:" in lines[0] and "accuracy:" in lines[0]


def test_verbose_1_uses_a_progress_bar(capsys):
    pytest.importorskip("tqdm")
    x, y = blobs(40)
    model = mlp()
    train.fit(model, (x, y), epochs=1, optimizer=optim.SGD(model.parameters(), lr=0.1),
              verbose=1, batch_size=8)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err and "5/5" in err


def test_history_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = blobs(40)
    model = mlp()
    hist = train.fit(model, (x, y), epochs=2, optimizer=optim.SGD(model.parameters(), lr=0.1),
                     val_data=(x, y), verbose=0)
    path = hist.plot(str(tmp_path / "h.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_metrics_and_losses_by_name():
    x, y = blobs(40)
    model = mlp()
    hist = train.fit(model, DataLoader(ArrayDataset(x, y), batch_size=8), epochs=1,
                     optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=0,
                     metrics=["accuracy", "top1_accuracy", lambda o, t: 0.25])
    h = hist.history
    assert h["accuracy"] == pytest.approx(h["top1_accuracy"]) and h["<lambda>"] == [0.25]
    reg = nn.Sequential(nn.Linear(4, 1))
    hist = train.fit(reg, (x, y[:, None].astype(np.float32)), epochs=1, loss="mse", metrics=[],
                     optimizer=optim.SGD(reg.parameters(), lr=0.01), verbose=0)
    assert "loss" in hist.history


@pytest.mark.parametrize("kwargs, error, match", [
    ({"loss": "nope"}, ValueError, "unknown loss"),
    ({"metrics": ["f7"]}, ValueError, "unknown metric"),
    ({"verbose": 5}, ValueError, "verbose"),
    ({"epochs": -1}, ValueError, "epochs"),
])
def test_fit_rejects_bad_arguments(kwargs, error, match):
    x, y = blobs(16)
    model = mlp()
    args = dict(epochs=1, optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        train.fit(model, (x, y), **args)


def test_fit_rejects_mismatched_arrays_and_diverging_loss():
    x, y = blobs(16)
    model = mlp()
    with pytest.raises(ValueError, match="different lengths"):
        train.fit(model, (x, y[:5]), verbose=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train.fit(model, (bad, y), verbose=0, optimizer=optim.SGD(model.parameters(), lr=0.1))


def _load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_cnn_has_227026_parameters():
    example = _load_example()
    text = example.build_cnn().summary((3, 32, 32), print_fn=None)
    assert "Total params: 227,026" in text


def test_digits_example_reaches_97_percent():
    """The issue's end-to-end proof: the curriculum CNN trained from scratch on scikit-learn's
    digits reaches >= 97% on the held-out 20% (99.4% for this seed; about 10 s on 2 cores)."""
    pytest.importorskip("sklearn")
    result = _load_example().main(["--verbose", "0"])
    assert result["accuracy"] >= 0.97, result["history"]["val_accuracy"]
