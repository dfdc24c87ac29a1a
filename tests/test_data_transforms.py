"""fastconv.data transforms: geometry checked numerically (numpy equivalents, hand-computed fill
modes, Pillow's bilinear resize), determinism under a seed, and argument errors."""
import numpy as np
import pytest

from fastconv.data import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, Grayscale,
                           Normalize, RandomAffine, RandomBrightness, RandomHorizontalFlip,
                           RandomResizedCrop, RandomVerticalFlip, Rescale, Resize, ToArray,
                           ToFloat, affine_transform, augment, resize)


def image(c=3, h=6, w=6, seed=0):
    return np.random.default_rng(seed).random((c, h, w), dtype=np.float32)


# ------------------------------------------------------------------- conversions and Normalize

def test_to_float_converts_hwc_uint8_to_chw_unit_range():
    hwc = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = ToFloat()(hwc)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, hwc.transpose(2, 0, 1).astype(np.float32) / 255)
    assert ToArray()(hwc[:, :, 0]).shape == (1, 4, 5)
    np.testing.assert_array_equal(ToFloat()(np.full((2, 2, 1), 0.25)), np.full((1, 2, 2), 0.25))
    with pytest.raises(TypeError, match="uint8 or floating-point image, got dtype int32"):
        ToFloat()(np.zeros((2, 2, 3), np.int32))
    with pytest.raises(ValueError, match="HWC or HW image"):
        ToFloat()(np.zeros((1, 2, 2, 3), np.uint8))


def test_normalize_is_exact_and_checks_channels():
    img = image()
    out = Normalize(IMAGENET_MEAN, IMAGENET_STD)(img)
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (img - mean) / std)
    np.testing.assert_array_equal(Normalize(0.5, 0.25)(img), (img - 0.5) / np.float32(0.25))
    with pytest.raises(ValueError, match="mean has 3 values but the image has 1 channels"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(img[:1])
    with pytest.raises(ValueError, match="std must be non-zero"):
        Normalize([0, 0, 0], [1, 0, 1])


def test_grayscale_uses_pillow_luma_and_repeats_channels():
    img = image()
    grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    three = Grayscale(3)(img)
    assert three.shape == (3, 6, 6)
    np.testing.assert_allclose(three, np.stack([grey] * 3), rtol=1e-6)
    np.testing.assert_array_equal(Grayscale(3)(img[:1]), np.repeat(img[:1], 3, axis=0))
    assert Grayscale(1)(img).shape == (1, 6, 6)
    with pytest.raises(ValueError, match="expected 1 or 3 channels, got 2"):
        Grayscale()(img[:2])


def test_rescale_and_chw_check():
    np.testing.assert_array_equal(Rescale(1 / 255)(np.full((1, 1, 2), 255.0)), [[[1.0, 1.0]]])
    with pytest.raises(ValueError, match=r"Resize: expected a CHW image.*got shape \(4, 4\)"):
        Resize(2)(np.zeros((4, 4)))


# ------------------------------------------------------------------------ resize and crops

@pytest.mark.parametrize("in_size, out_size", [((37, 53), (16, 23)), ((10, 12), (25, 31)),
                                               ((9, 9), (9, 4))])
def test_resize_matches_pillow_bilinear(in_size, out_size):
    from PIL import Image
    img = image(2, *in_size)
    ours = Resize(out_size)(img)
    for c in range(2):   # Pillow 'F' mode: float pixels, the same antialiased filter
        ref = np.asarray(Image.fromarray(img[c]).resize(out_size[::-1], Image.BILINEAR))
        np.testing.assert_allclose(ours[c], ref, atol=1e-6)
    rgb = np.random.default_rng(1).integers(0, 256, (*in_size, 3), dtype=np.uint8)
    ref8 = np.asarray(Image.fromarray(rgb).resize(out_size[::-1], Image.BILINEAR))
    ours8 = Resize(out_size)(ToFloat()(rgb)) * 255
    assert np.abs(ours8 - ToFloat()(ref8) * 255).max() <= 1.001   # Pillow rounds between passes


def test_resize_int_matches_shorter_side_and_identity():
    assert Resize(4)(np.zeros((1, 8, 12), np.float32)).shape == (1, 4, 6)
    assert Resize(4)(np.zeros((1, 12, 8), np.float32)).shape == (1, 6, 4)
    img = image()
    np.testing.assert_array_equal(resize(img, (6, 6)), img)
    with pytest.raises(ValueError, match="size must be a positive int"):
        Resize((0, 3))


def test_center_crop_matches_slicing_with_torchvision_rounding():
    img = np.arange(5 * 8, dtype=np.float32).reshape(1, 5, 8)
    # top = round(1.5) = 2, left = round(2.5) = 2 (Python rounds half to even, as torchvision)
    np.testing.assert_array_equal(CenterCrop((2, 3))(img), img[:, 2:4, 2:5])
    np.testing.assert_array_equal(CenterCrop(5)(img), img[:, :, 2:7])
    with pytest.raises(ValueError, match=r"crop size \(6, 6\) is larger than the image \(5, 8\)"):
        CenterCrop(6)(img)


def test_random_resized_crop_size_determinism_and_full_crop():
    img = image(3, 20, 30)
    t = RandomResizedCrop((7, 9))
    outs = [t(img, rng=np.random.default_rng(4)) for _ in range(2)]
    assert outs[0].shape == (3, 7, 9) and outs[0].dtype == np.float32
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], t(img, rng=np.random.default_rng(5)))
    seeded = [RandomResizedCrop(8, seed=2)(img) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    top, left, h, w = t.get_params(np.random.default_rng(0), 20, 30)
    assert 0 <= top <= 20 - h and 0 <= left <= 30 - w
    assert 0.08 * 600 - 30 <= h * w <= 600 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    whole = RandomResizedCrop(10, scale=(1, 1), ratio=(1.5, 1.5))
    np.testing.assert_allclose(whole(img, rng=0), resize(img, (10, 10)), atol=1e-6)


def test_random_resized_crop_falls_back_to_a_centre_crop():
    img = image(1, 4, 40)                  # aspect 10: no crop within ratio fits ten tries
    t = RandomResizedCrop(4, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    assert t.get_params(np.random.default_rng(0), 4, 40) == (0, 18, 4, 4)
    np.testing.assert_allclose(t(img, rng=0), img[:, :, 18:22], atol=1e-6)


# ------------------------------------------------------------------------------------ flips

def test_flips_equal_numpy_flips():
    img = image(2, 3, 4)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1)(img), img[:, :, ::-1])
    np.testing.assert_array_equal(RandomVerticalFlip(p=1)(img), img[:, ::-1, :])
    assert RandomHorizontalFlip(p=0)(img) is img
    flips = [np.array_equal(RandomHorizontalFlip()(img, rng=s), img) for s in range(40)]
    assert 5 < sum(flips) < 35
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        RandomVerticalFlip(p=1.5)


# ------------------------------------------------------------------------- affine transform

@pytest.mark.parametrize("size", [5, 6])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_rotation_by_90_and_180_equals_rot90(size, interpolation):
    img = image(2, size, size)
    np.testing.assert_allclose(affine_transform(img, angle=90, interpolation=interpolation),
                               np.rot90(img, 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(affine_transform(img, angle=-90, interpolation=interpolation),
                               np.rot90(img, -1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(affine_transform(img, angle=180, interpolation=interpolation),
                               img[:, ::-1, ::-1], atol=1e-6)


def test_integer_shift_with_wrap_equals_roll_and_identity_is_exact():
    img = image(3, 5, 7)
    np.testing.assert_allclose(affine_transform(img, shift_y=2, shift_x=-3, fill_mode="wrap"),
                               np.roll(img, (2, -3), axis=(1, 2)), atol=1e-6)
    np.testing.assert_array_equal(affine_transform(img), img)


@pytest.mark.parametrize("fill_mode, expected", [("constant", [9, 9, 1, 2]),
                                                 ("nearest", [1, 1, 1, 2]),
                                                 ("reflect", [2, 1, 1, 2]),
                                                 ("wrap", [3, 4, 1, 2])])
def test_fill_modes_on_a_hand_computed_row(fill_mode, expected):
    # [a b c d] = [1 2 3 4] shifted right by 2: output column c reads input column c - 2
    row = np.array([[[1, 2, 3, 4]]], np.float32)
    for interpolation in ("bilinear", "nearest"):
        out = affine_transform(row, shift_x=2, fill_mode=fill_mode, cval=9,
                               interpolation=interpolation)
        assert out[0, 0].tolist() == expected


def test_fractional_shift_interpolates_bilinearly():
    row = np.array([[[1, 2, 3, 4]]], np.float32)
    assert affine_transform(row, shift_x=0.5)[0, 0].tolist() == [1, 1.5, 2.5, 3.5]
    assert affine_transform(row, shift_x=0.5, fill_mode="constant", cval=0)[0, 0].tolist() == \
        [0.5, 1.5, 2.5, 3.5]
    assert affine_transform(row, shift_x=-1.5, fill_mode="reflect")[0, 0].tolist() == \
        [2.5, 3.5, 4, 3.5]


def test_shear_and_zoom_move_pixels_where_documented():
    img = np.zeros((1, 5, 5), np.float32)
    img[0, 4, 2] = 1                                    # two rows below the centre
    sheared = affine_transform(img, shear=45, fill_mode="constant", interpolation="nearest")
    assert np.argwhere(sheared[0]).tolist() == [[4, 4]]    # pushed right by tan(45°) * 2
    zoomed_in = affine_transform(img, zoom_y=0.5, zoom_x=0.5, fill_mode="constant",
                                 interpolation="nearest")
    assert zoomed_in[0, :, 2].tolist() == [0, 0, 0, 0, 0]     # (4, 2) moves off the image
    img[0, 3, 2] = 2                                     # one row below the centre
    zoomed_in = affine_transform(img, zoom_y=0.5, zoom_x=0.5, fill_mode="constant",
                                 interpolation="nearest")
    assert zoomed_in[0, 4, 2] == 2


def test_random_affine_applies_its_drawn_parameters():
    img = image(2, 8, 10)
    t = RandomAffine(rotation_range=30, width_shift_range=0.2, height_shift_range=3,
                     shear_range=10, zoom_range=(0.8, 1.1), fill_mode="reflect")
    params = t.get_params(np.random.default_rng(3), 8, 10)
    assert abs(params["angle"]) <= 30 and abs(params["shift_x"]) <= 2
    assert abs(params["shift_y"]) <= 3 and abs(params["shear"]) <= 10
    assert 0.8 <= params["zoom_y"] <= 1.1 and 0.8 <= params["zoom_x"] <= 1.1
    np.testing.assert_array_equal(t(img, rng=np.random.default_rng(3)),
                                  affine_transform(img, **params, fill_mode="reflect"))
    assert not np.array_equal(t(img, rng=3), t(img, rng=4))
    a, b = RandomAffine(rotation_range=30, seed=1), RandomAffine(rotation_range=30, seed=1)
    np.testing.assert_array_equal(a(img), b(img))


def test_random_affine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fill_mode must be one of"):
        RandomAffine(fill_mode="mirror")
    with pytest.raises(ValueError, match="zoom factors must be > 0"):
        RandomAffine(zoom_range=1.0)
    with pytest.raises(ValueError, match="rotation_range must be a number >= 0"):
        RandomAffine(rotation_range=-5)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        affine_transform(image(), interpolation="bicubic")
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        RandomAffine()(image(), rng="seed")


# ------------------------------------------------------------------ brightness, Compose, augment

def test_random_brightness_scales_within_range_and_clips():
    img = np.full((1, 2, 2), 0.5, np.float32)
    factors = [RandomBrightness((0.5, 1.5))(img, rng=s)[0, 0, 0] / 0.5 for s in range(20)]
    assert 0.5 <= min(factors) and max(factors) <= 1.5 and len(set(factors)) > 1
    assert RandomBrightness((3, 3))(img).max() == 1.0
    assert RandomBrightness((3, 3), max_value=None)(img).max() == 1.5
    with pytest.raises(ValueError, match="brightness_range must be a"):
        RandomBrightness(0.2)


def test_compose_passes_one_generator_through_its_transforms():
    img = image()
    t = Compose([RandomHorizontalFlip(), lambda a: a + 1, RandomAffine(rotation_range=45)])
    np.testing.assert_array_equal(t(img, rng=np.random.default_rng(8)),
                                  t(img, rng=np.random.default_rng(8)))
    rng = np.random.default_rng(8)
    by_hand = t.transforms[2](t.transforms[0](img, rng) + 1, rng)
    np.testing.assert_array_equal(t(img, rng=np.random.default_rng(8)), by_hand)
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        Compose([ToFloat(), 3])


def test_augment_builds_the_keras_pipeline_deterministically():
    t = augment(rotation_range=20, zoom_range=0.1, horizontal_flip=True,
                brightness_range=(0.9, 1.1), rescale=0.5, seed=0)
    kinds = [type(s).__name__ for s in t.transforms]
    assert kinds == ["RandomAffine", "RandomHorizontalFlip", "RandomBrightness", "Rescale"]
    assert t.transforms[0].fill_mode == "nearest"
    img = image()
    again = augment(rotation_range=20, zoom_range=0.1, horizontal_flip=True,
                    brightness_range=(0.9, 1.1), rescale=0.5, seed=0)
    np.testing.assert_array_equal(t(img), again(img))
    assert augment(vertical_flip=True).transforms[0].__class__ is RandomVerticalFlip
    assert augment().transforms == []


@pytest.mark.parametrize("make, message", [
    (lambda: RandomAffine(rotation_range=(-10, 30)), "rotation_range must be a number >= 0"),
    (lambda: RandomAffine(zoom_range=(1.2, 0.8)), r"zoom_range must be a \(low, high\) pair"),
    (lambda: RandomResizedCrop(8, scale=0.5), r"scale must be a \(low, high\) pair"),
    (lambda: RandomBrightness((-0.5, 1)), "brightness factors must be >= 0"),
])
def test_ranges_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()
