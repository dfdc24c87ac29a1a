"""The `fastconv` command line, in-process through fastconv.cli.main on tiny inputs: argparse
errors for bad numbers, help lines that say what an option does and its default, and the
progress and summary of every finetune phase."""
import argparse

import numpy as np
import pytest

from fastconv import models, transfer
from fastconv.cli import build_parser, main


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _options(subparser):
    return [a for a in subparser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_subcommand_has_a_description():
    for name, subparser in _subparsers().items():
        assert subparser.description and len(subparser.description) > 40, name


def test_every_option_says_what_it_does_and_its_default():
    for name, subparser in _subparsers().items():
        for action in _options(subparser):
            text = action.help or ""
            assert len(text) > 20 and "default" in text, (name, action.option_strings, text)


# (subcommand and arguments, the option, a fragment of the message); every numeric option of
# every subcommand is here (test_every_numeric_option_is_checked).
BAD_NUMBERS = [
    (["finetune", "--epochs", "-1"], "--epochs", "must be an integer >= 0, got -1"),
    (["finetune", "--epochs", "two"], "--epochs", "must be an integer >= 0, got 'two'"),
    (["finetune", "--head-epochs", "0"], "--head-epochs", "must be an integer >= 1, got 0"),
    (["finetune", "--unfreeze", "-2"], "--unfreeze", "must be an integer >= 0, got -2"),
    (["finetune", "--batch-size", "0"], "--batch-size", "must be an integer >= 1, got 0"),
    (["finetune", "--image-size", "31"], "--image-size", "must be an integer >= 32, got 31"),
    (["finetune", "--seed", "-1"], "--seed", "must be an integer >= 0, got -1"),
    (["finetune", "--lr", "0"], "--lr", "must be a positive number, got 0"),
    (["finetune", "--lr", "nan"], "--lr", "must be a positive number, got nan"),
    (["finetune", "--head-lr", "-0.001"], "--head-lr", "must be a positive number, got -0.001"),
    (["finetune", "--test-size", "0"], "--test-size", "must be a number between 0 and 1 (exclusive), got 0"),
    (["finetune", "--test-size", "1.5"], "--test-size", "must be a number between 0 and 1 (exclusive), got 1.5"),
    (["finetune", "--verbose", "3"], "--verbose", "invalid choice: '3'"),
    (["predict", "--top", "0"], "--top", "must be an integer >= 1, got 0"),
    (["summary", "resnet18", "--input-size", "0"], "--input-size",
     "must be an integer >= 1, got 0"),
    (["summary", "resnet18", "--num-classes", "0"], "--num-classes",
     "must be an integer >= 1, got 0"),
    (["bench", "--repeat", "0"], "--repeat", "must be an integer >= 1, got 0"),
    (["bench", "--warmup", "-1"], "--warmup", "must be an integer >= 0, got -1"),
    (["bench", "--seed", "x"], "--seed", "must be an integer >= 0, got 'x'"),
    (["bench", "--threads", "0"], "--threads", "expected a positive int or a comma-separated list"),
    (["bench", "--ops", "convs"], "--ops", "expected a comma-separated list of"),
    (["bench", "--dtype", "int8"], "--dtype", "expected a comma-separated list of"),
]


@pytest.mark.parametrize("argv,option,message", BAD_NUMBERS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_numbers_are_argparse_errors(capsys, argv, option, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"fastconv {argv[0]}: error: argument {option}: {message}" in err, err


def test_every_numeric_option_is_checked():
    checked = {(argv[0], option) for argv, option, _ in BAD_NUMBERS}
    for name, subparser in _subparsers().items():
        for action in _options(subparser):
            if action.type is not None:
                assert (name, action.option_strings[-1]) in checked, (name, action.option_strings)


def _image_folder(root, classes, n=6, size=36):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for j in range(n):
            colour = (40 + 160 * i, 60, 200 - 160 * i)
            img = np.clip(rng.normal(colour, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{j}.png")
    return root


def test_finetune_with_one_class_says_it_needs_two(tmp_path, capsys):
    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data", ["cats"])
    code = main(["finetune", "--data", str(data), "--model", "resnet18", "--weights", "none",
                 "--image-size", "32", "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "has 1 class folder ['cats']; fine-tuning a classifier needs at least two classes" in err


@pytest.mark.parametrize("verbose", [1, 2])
def test_finetune_phases_show_progress_and_a_summary(tmp_path, capsys, verbose):
    """verbose=1 (what a terminal gets): a tqdm bar for feature extraction, one bar over the head
    epochs, a bar per fine-tuning epoch, and every phase's summary line; verbose=2: the lines."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3, 32, 32)).astype(np.float32)
    y = np.arange(12) % 2
    model = models.resnet18()
    transfer.finetune(model, (x[:8], y[:8]), (x[8:], y[8:]), num_classes=2, head_epochs=3,
                      finetune_epochs=1, unfreeze=1, batch_size=4, verbose=verbose)
    out, err = capsys.readouterr()
    assert "features: 8 inputs -> (512, 1, 1) each" in out
    assert "features: 4 inputs -> (512, 1, 1) each" in out
    assert "head on cached features: 3 epochs, " in out and "val_accuracy: " in out
    assert "fine-tuning layer4.1: 1 epoch, " in out
    bars = ("features: 100%", "head: 100%", "Epoch 1/1: 100%")
    if verbose == 1:
        assert all(bar in err for bar in bars), err
    else:
        assert not any(bar in err for bar in bars), err
        assert "Epoch 1/1 - " in out


def test_finetune_command_writes_into_runs_by_default(tmp_path, capsys, monkeypatch):
    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data", ["blue", "red"])
    monkeypatch.chdir(tmp_path)
    code = main(["finetune", "--data", "data", "--model", "resnet18", "--weights", "none",
                 "--image-size", "32", "--epochs", "1", "--head-epochs", "2", "--unfreeze", "1",
                 "--test-size", "0.34", "--verbose", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("finetuned_resnet18.")]
    assert len(saved) == 1
    assert f"to {saved[0].relative_to(tmp_path)};" in out
    for line in ("model: resnet18", "data: image folder data", "features: ",
                 "head on cached features: 2 epochs", "fine-tuning layer4.1: 1 epoch"):
        assert line in out, out
    assert "reading data: 100%" in err and "head: 100%" in err
    assert "data" in {p.name for p in tmp_path.iterdir()}
