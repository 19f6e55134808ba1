"""Tests for skxray.augmentation."""

import doctest
import pickle
import random
import re
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

import skxray.augmentation
from skxray.augmentation import (
    Compose,
    RandomBorderMask,
    RandomBrightnessContrast,
    RandomErasing,
    RandomFlip,
    RandomGamma,
    RandomResizedCrop,
    RandomRotation,
    xray_augmentation,
)


def _augmentations():
    return [
        RandomFlip(),
        RandomFlip(p=1.0, horizontal=False, vertical=True),
        RandomRotation(),
        RandomResizedCrop(),
        RandomBrightnessContrast(),
        RandomGamma(),
        RandomErasing(p=1.0),
        RandomBorderMask(p=1.0),
        xray_augmentation("light"),
        xray_augmentation("strong"),
        xray_augmentation("fastai"),
    ]


def _id(value):
    if isinstance(value, str):
        return None
    return repr(value).replace("\n", "").replace(" ", "")


AUGMENTATIONS = _augmentations()
AUG_IDS = [_id(a) for a in AUGMENTATIONS]
# Transforms whose output depends on the random draw for a typical image.
RANDOM_AUGMENTATIONS = [
    RandomFlip(),
    RandomRotation(),
    RandomResizedCrop(),
    RandomBrightnessContrast(),
    RandomGamma(),
    RandomErasing(),
    RandomBorderMask(),
    xray_augmentation("light"),
    xray_augmentation("strong"),
    xray_augmentation("fastai"),
]


def _image(channels=1, height=24, width=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((channels, height, width), generator=generator)


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 13), (1, 33, 20), (3, 64, 64)])
def test_shape_and_dtype_preserved(augment, shape):
    torch.manual_seed(0)
    img = _image(*shape)
    before = img.clone()
    out = augment(img)
    assert isinstance(out, torch.Tensor)
    assert out.shape == img.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(img, before), "the input image was modified in place"


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(8, 48),
    width=st.integers(8, 48),
    seed=st.integers(0, 2**16),
    strength=st.sampled_from(["light", "strong", "fastai"]),
)
def test_presets_keep_shape_for_any_size(channels, height, width, seed, strength):
    torch.manual_seed(seed)
    img = _image(channels, height, width, seed)
    out = xray_augmentation(strength)(img)
    assert out.shape == img.shape
    assert out.dtype == img.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_same_seed_same_output(augment):
    img = _image(3)
    torch.manual_seed(123)
    first = augment(img)
    torch.manual_seed(123)
    second = augment(img)
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "augment", RANDOM_AUGMENTATIONS, ids=[_id(a) for a in RANDOM_AUGMENTATIONS]
)
def test_different_seeds_different_outputs(augment):
    img = _image(1, 32, 32)
    outputs = []
    for seed in range(8):
        torch.manual_seed(seed)
        outputs.append(augment(img))
    assert any(not torch.equal(outputs[0], out) for out in outputs[1:])


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_randomness_comes_from_torch_only(augment):
    img = _image(1, 32, 32)
    outputs = []
    for other_seed in (1, 2):
        # Reseeding NumPy and `random` must not change anything ...
        np.random.seed(other_seed)  # noqa: NPY002 - the legacy global RNG is the one to rule out
        random.seed(other_seed)
        torch.manual_seed(7)
        outputs.append(augment(img))
    assert torch.equal(outputs[0], outputs[1])


def test_torch_rng_is_consumed():
    # ... while torch's global generator is what drives the draws.
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    RandomRotation()(_image())
    assert not torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize(
    "augment",
    [
        RandomFlip(p=0.0, vertical=True),
        RandomRotation(p=0.0),
        RandomResizedCrop(p=0.0),
        RandomBrightnessContrast(p=0.0),
        RandomGamma(p=0.0),
        RandomErasing(p=0.0),
        RandomBorderMask(p=0.0),
    ],
    ids=lambda a: type(a).__name__,
)
def test_p_zero_is_identity(augment):
    for seed in range(5):
        torch.manual_seed(seed)
        img = _image(3, seed=seed)
        assert torch.equal(augment(img), img)


@pytest.mark.parametrize(
    "horizontal, vertical, dims",
    [(True, False, [-1]), (False, True, [-2]), (True, True, [-2, -1]), (False, False, [])],
)
def test_flip_p1_equals_torch_flip(horizontal, vertical, dims):
    img = _image(3, 9, 11)
    out = RandomFlip(p=1.0, horizontal=horizontal, vertical=vertical)(img)
    assert torch.equal(out, torch.flip(img, dims=dims))


def test_flip_p_half_flips_about_half_the_time():
    img = _image(1, 8, 8)
    torch.manual_seed(0)
    flipped = sum(torch.equal(RandomFlip(p=0.5)(img), img.flip(-1)) for _ in range(400))
    assert 140 < flipped < 260


def test_rotation_zero_degrees_is_identity():
    img = _image(3, 16, 16)
    torch.manual_seed(0)
    torch.testing.assert_close(RandomRotation(degrees=0.0)(img), img)


def test_rotation_fills_corners_with_zero():
    img = torch.ones(1, 32, 32)
    torch.manual_seed(0)
    out = RandomRotation(degrees=(45.0, 45.0))(img)
    assert out[0, 0, 0] == 0 and out[0, -1, -1] == 0
    assert out[0, 16, 16] == pytest.approx(1.0)


def test_resized_crop_full_scale_is_identity():
    img = _image(1, 16, 16)
    torch.manual_seed(0)
    out = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(img)
    torch.testing.assert_close(out, img)


def test_brightness_contrast_zero_is_identity_and_no_clamping():
    img = _image(1, 16, 16)
    torch.manual_seed(0)
    torch.testing.assert_close(RandomBrightnessContrast(brightness=0.0, contrast=0.0)(img), img)
    standardised = (img - 0.5) * 4
    out = RandomBrightnessContrast(brightness=0.5, contrast=0.5)(standardised)
    assert out.min() < 0 and not torch.equal(out, standardised)


@pytest.mark.parametrize("shift", [0.0, -2.0])
def test_gamma_preserves_range_and_order(shift):
    img = _image(1, 16, 16) + shift
    img[0, 0, 0] = 0.0 if shift == 0 else shift
    torch.manual_seed(3)
    out = RandomGamma(gamma=(0.5, 2.0))(img)
    torch.testing.assert_close(out.min(), img.min())
    torch.testing.assert_close(out.max(), img.max())
    order = img.flatten().argsort()
    assert (out.flatten()[order].diff() >= -1e-6).all()


def test_gamma_fixed_value():
    img = torch.tensor([[[0.0, 0.5, 1.0]]])
    out = RandomGamma(gamma=(2.0, 2.0))(img)
    torch.testing.assert_close(out, img**2)


def test_erasing_zeroes_a_rectangle_of_the_requested_area():
    img = torch.ones(1, 40, 40)
    for seed in range(10):
        torch.manual_seed(seed)
        zeros = int((RandomErasing(p=1.0, scale=(0.05, 0.1))(img) == 0).sum())
        assert 0.04 * 1600 <= zeros <= 0.11 * 1600


def test_border_mask_keeps_centre_and_limits_band():
    img = torch.ones(3, 40, 40)
    zeroed_any = False
    for seed in range(20):
        torch.manual_seed(seed)
        out = RandomBorderMask(max_fraction=0.2, p=1.0)(img)
        # Bands are at most 20 % of 40 = 8 pixels wide.
        assert (out[:, 8:32, 8:32] == 1).all()
        zeroed_any |= bool((out == 0).any())
    assert zeroed_any


def _names(cls, param, value):
    """The declared-constraint error: class, parameter and value named."""
    return rf"The '{param}' parameter of {cls} must be .*Got {re.escape(repr(value))} instead"


@pytest.mark.parametrize(
    "augment, match",
    [
        (RandomFlip(p=1.5), r"'p' parameter of RandomFlip must be a float in the range \[0.0, 1.0\]"),
        (RandomFlip(p="0.5"), _names("RandomFlip", "p", "0.5")),
        (RandomFlip(horizontal=1), _names("RandomFlip", "horizontal", 1)),
        (RandomFlip(vertical=None), _names("RandomFlip", "vertical", None)),
        (RandomRotation(degrees=-5), r"'degrees' .* in the range \[0.0, 180.0\] or a \(min, max\)"),
        (RandomRotation(degrees=(10, -10)), _names("RandomRotation", "degrees", (10, -10))),
        (RandomRotation(degrees="10"), _names("RandomRotation", "degrees", "10")),
        (RandomRotation(degrees=True), _names("RandomRotation", "degrees", True)),
        (RandomRotation(p=-0.1), _names("RandomRotation", "p", -0.1)),
        (RandomResizedCrop(scale=(0.5, 1.2)), _names("RandomResizedCrop", "scale", (0.5, 1.2))),
        (RandomResizedCrop(scale=(0.0, 1.0)), _names("RandomResizedCrop", "scale", (0.0, 1.0))),
        (RandomResizedCrop(ratio=(1.2, 0.8)), _names("RandomResizedCrop", "ratio", (1.2, 0.8))),
        (RandomResizedCrop(scale=0.9), _names("RandomResizedCrop", "scale", 0.9)),
        (RandomResizedCrop(scale=(0.5, 0.7, 1.0)), _names("RandomResizedCrop", "scale", (0.5, 0.7, 1.0))),
        (RandomBrightnessContrast(brightness=1.0), _names("RandomBrightnessContrast", "brightness", 1.0)),
        (RandomBrightnessContrast(contrast=-0.1), _names("RandomBrightnessContrast", "contrast", -0.1)),
        (RandomGamma(gamma=(0.0, 1.0)), _names("RandomGamma", "gamma", (0.0, 1.0))),
        (RandomGamma(gamma=(1.5, 0.5)), _names("RandomGamma", "gamma", (1.5, 0.5))),
        (RandomGamma(gamma=(True, 2.0)), _names("RandomGamma", "gamma", (True, 2.0))),
        (RandomErasing(scale=(0.1, 2.0)), _names("RandomErasing", "scale", (0.1, 2.0))),
        (RandomErasing(ratio=(-1, 2)), _names("RandomErasing", "ratio", (-1, 2))),
        (RandomErasing(p=2), _names("RandomErasing", "p", 2)),
        (
            RandomBorderMask(max_fraction=0.5),
            r"'max_fraction' parameter of RandomBorderMask must be a float in the range \[0.0, 0.5\)",
        ),
        (RandomBorderMask(p=None), _names("RandomBorderMask", "p", None)),
        (Compose(transforms=RandomFlip()), "'transforms' parameter of Compose must be an instance of 'list'"),
        (Compose(transforms=[RandomFlip(), 3]), r"Compose: transforms\[1\] is not callable"),
    ],
    ids=_id,
)
def test_invalid_parameters_raise_on_call(augment, match):
    # __init__ only stores, so constructing and cloning must not fail.
    clone(augment)
    with pytest.raises(ValueError, match=match):
        augment(_image())


_AUGMENTATIONS = [
    RandomFlip,
    RandomRotation,
    RandomResizedCrop,
    RandomBrightnessContrast,
    RandomGamma,
    RandomErasing,
    RandomBorderMask,
    Compose,
]


@pytest.mark.parametrize("cls", _AUGMENTATIONS, ids=lambda c: c.__name__)
def test_every_parameter_is_declared(cls):
    # A parameter missing from _parameter_constraints would go unchecked.
    assert set(cls._parameter_constraints) == set(cls().get_params() if cls is not Compose else ["transforms"])


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((1, 8, 8), dtype=np.float32),
        torch.zeros(8, 8),
        torch.zeros(1, 8, 8, dtype=torch.uint8),
    ],
)
def test_invalid_image_raises(img):
    with pytest.raises(ValueError, match="RandomRotation: expects one image"):
        RandomRotation()(img)


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_clone_get_params_pickle(augment):
    params = augment.get_params(deep=False)
    cloned = clone(augment)
    assert type(cloned) is type(augment)
    assert cloned is not augment
    assert repr(cloned) == repr(augment)
    assert set(cloned.get_params(deep=False)) == set(params)
    restored = pickle.loads(pickle.dumps(augment))
    assert repr(restored) == repr(augment)
    img = _image(1, 16, 16)
    torch.manual_seed(5)
    expected = augment(img)
    for other in (cloned, restored):
        torch.manual_seed(5)
        assert torch.equal(other(img), expected)


def test_set_params_for_grid_search():
    augment = RandomRotation()
    assert augment.set_params(degrees=3.0) is augment
    assert augment.get_params() == {"degrees": 3.0, "p": 1.0}
    compose = Compose([RandomRotation()])
    assert "transforms" in compose.get_params()


def test_compose_applies_in_order():
    manager = mock.Mock()
    manager.first.side_effect = lambda x: x * 2
    manager.second.side_effect = lambda x: x + 1
    img = torch.ones(1, 8, 8)
    out = Compose([manager.first, manager.second])(img)
    assert [c[0] for c in manager.mock_calls] == ["first", "second"]
    manager.first.assert_called_once_with(img)
    assert torch.equal(out, torch.full((1, 8, 8), 3.0))


def test_compose_empty_is_identity():
    img = _image()
    assert torch.equal(Compose([])(img), img)


def test_compose_clone_clones_steps():
    compose = Compose([RandomRotation(degrees=3.0)])
    cloned = clone(compose)
    assert cloned.transforms[0] is not compose.transforms[0]
    assert cloned.transforms[0].degrees == 3.0


def test_presets():
    light = xray_augmentation()
    assert isinstance(light, Compose)
    assert [type(t) for t in light.transforms] == [
        RandomRotation,
        RandomResizedCrop,
        RandomBrightnessContrast,
    ]
    assert 5 <= light.transforms[0].degrees <= 7
    assert light.transforms[1].scale == (0.9, 1.0)
    strong = xray_augmentation("strong")
    types = {type(t) for t in strong.transforms}
    assert {RandomGamma, RandomErasing, RandomBorderMask} <= types
    rotation = next(t for t in strong.transforms if isinstance(t, RandomRotation))
    assert rotation.degrees == 10.0
    assert xray_augmentation("light") is not light


def test_fastai_preset_is_fastais_default_augmentation():
    # fastai v1 get_transforms() defaults: do_flip (p=0.5), max_rotate=10,
    # max_zoom=1.1, max_lighting=0.2 (brightness and contrast, each on its
    # own), p_affine=p_lighting=0.75; max_warp=0.2 has no counterpart.
    flip, rotation, zoom, brightness, contrast = xray_augmentation("fastai").transforms
    assert (type(flip), flip.p, flip.horizontal, flip.vertical) == (RandomFlip, 0.5, True, False)
    assert (type(rotation), rotation.degrees, rotation.p) == (RandomRotation, 10.0, 0.75)
    assert type(zoom) is RandomResizedCrop and zoom.p == 0.75 and zoom.ratio == (1.0, 1.0)
    assert zoom.scale == pytest.approx((1 / 1.1**2, 1.0))
    assert (brightness.brightness, brightness.contrast, brightness.p) == (0.2, 0.0, 0.75)
    assert (contrast.brightness, contrast.contrast, contrast.p) == (0.0, 0.2, 0.75)


@pytest.mark.parametrize("strength", ["medium", None, "Light"])
def test_preset_invalid_strength(strength):
    with pytest.raises(ValueError, match=r"strength must be one of \('light', 'strong', 'fastai'\)"):
        xray_augmentation(strength)


def test_strong_preset_tolerates_standardised_images():
    img = (_image(1, 32, 32) - 0.5) / 0.25
    torch.manual_seed(0)
    out = xray_augmentation("strong")(img)
    assert torch.isfinite(out).all()


def test_docstring_examples():
    result = doctest.testmod(skxray.augmentation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_pair_constraint():
    from numbers import Integral, Real

    from skxray._param_validation import Pair

    pair = Pair(Real, 0, 1, closed="right")
    for good in [(0.5, 1.0), [0.1, 0.1], np.array([0.2, 0.3]), (np.float32(0.2), 1)]:
        assert pair.is_satisfied_by(good), good
    bad_values = [(0.0, 0.5), (0.6, 0.5), (0.5,), (0.1, 0.2, 0.3), (True, 0.5), ("a", 0.5)]
    bad_values += [(np.nan, 0.5), 0.5, "ab", None]
    for bad in bad_values:
        assert not pair.is_satisfied_by(bad), bad
    assert str(pair) == "a (min, max) pair with min <= max, each a float in the range (0.0, 1.0]"
    size = Pair(Integral, 1, None, closed="left", ordered=False, what="(height, width) pair")
    assert size.is_satisfied_by((10, 4)) and size.is_satisfied_by((4, 10))
    assert not size.is_satisfied_by((10.0, 4)) and not size.is_satisfied_by((0, 4))
