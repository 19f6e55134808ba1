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


# --------------------------------------------------------------------------
# Batches: augment_batch draws per image and applies on the batch's device.

import torchvision.transforms.v2 as T  # noqa: E402
import torchvision.transforms.v2.functional as TF  # noqa: E402

from skxray.augmentation import supports_batches  # noqa: E402


def _batch(n=6, channels=1, height=24, width=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, channels, height, width), generator=generator)


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (4, 3, 8, 13), (3, 1, 33, 20), (2, 3, 64, 64)])
def test_batch_shape_dtype_and_input_kept(augment, shape):
    torch.manual_seed(0)
    x = _batch(*shape)
    before = x.clone()
    out = augment.augment_batch(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.equal(x, before)  # never in place
    out64 = augment.augment_batch(x.double())
    assert out64.dtype == torch.float64


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_batch_runs_on_the_batchs_device(augment):
    """'meta' stands in for a GPU (CUDA is not available here): the whole batch path runs there."""
    torch.manual_seed(0)
    out = augment.augment_batch(_batch().to("meta"))
    assert out.device.type == "meta" and out.shape == (6, 1, 24, 20)


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_batch_draws_do_not_depend_on_the_device(augment):
    """The parameters are drawn on the CPU: a batch on 'meta' consumes the global RNG as on the CPU."""
    states = []
    for device in ("cpu", "meta"):
        torch.manual_seed(3)
        augment.augment_batch(_batch().to(device))
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=AUG_IDS)
def test_batch_same_seed_same_output(augment):
    x = _batch(channels=3)
    torch.manual_seed(123)
    first = augment.augment_batch(x)
    torch.manual_seed(123)
    assert torch.equal(first, augment.augment_batch(x))


@pytest.mark.parametrize(
    "augment",
    [
        RandomFlip(p=0.5),
        RandomRotation(),
        RandomResizedCrop(),
        RandomBrightnessContrast(),
        RandomGamma(),
        RandomErasing(p=1.0),
        RandomBorderMask(p=1.0, max_fraction=0.3),
        xray_augmentation("light"),
        xray_augmentation("strong"),
        xray_augmentation("fastai"),
    ],
    ids=_id,
)
def test_batch_draws_differ_within_a_batch(augment):
    """Sixteen copies of one image: each gets its own draw, so the outputs are not all alike."""
    x = _image(1, 32, 32).expand(16, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = augment.augment_batch(x)
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) > 1 if isinstance(augment, RandomFlip) else len(distinct) >= 12


_P_ONE = [
    RandomFlip(p=1.0),
    RandomRotation(degrees=(5.0, 20.0)),
    RandomResizedCrop(scale=(0.5, 0.8)),
    RandomBrightnessContrast(brightness=0.2, contrast=0.0),
    RandomGamma(gamma=(1.2, 2.0)),
    RandomErasing(p=1.0),
    RandomBorderMask(p=1.0, max_fraction=0.4),
]


@pytest.mark.parametrize("augment", _P_ONE, ids=lambda a: type(a).__name__)
def test_batch_p_semantics(augment):
    """p=1 changes every image; p=0 returns the batch itself; 0 < p < 1 changes about that share."""
    x = _batch(200, 1, 16, 16) + 0.1  # no zero pixel: erasing and masking always show
    torch.manual_seed(0)
    changed = (augment.augment_batch(x) != x).flatten(1).any(1)
    assert changed.all()
    assert clone(augment).set_params(p=0.0).augment_batch(x) is x
    torch.manual_seed(0)
    changed = (clone(augment).set_params(p=0.3).augment_batch(x) != x).flatten(1).any(1)
    assert 0.2 < changed.float().mean().item() < 0.4  # 200 Bernoulli(0.3) draws, seeded


def test_batch_p_one_draws_nothing_for_the_choice():
    """As on one image, an always-on step does not draw whether to apply."""
    x = _batch()
    torch.manual_seed(0)
    RandomRotation(p=1.0).augment_batch(x)
    after_step = torch.get_rng_state()
    torch.manual_seed(0)
    RandomRotation()._draw(len(x), 24, 20)
    assert torch.equal(after_step, torch.get_rng_state())


def _per_image_reference(augment, img, params):
    """What the per-image path computes for one image's drawn ``params`` (its kernels, its code)."""
    height, width = img.shape[-2:]
    value = {k: v.item() for k, v in params.items()}
    if isinstance(augment, RandomRotation):
        return RandomRotation(degrees=(value["angle"], value["angle"]))(img)
    if isinstance(augment, RandomResizedCrop):  # the kernel T.RandomResizedCrop calls
        box = [int(value[k]) for k in ("top", "left", "height", "width")]
        return TF.resized_crop(img, *box, size=[height, width], antialias=True)
    if isinstance(augment, RandomErasing):  # the kernel T.RandomErasing calls
        box = [int(value[k]) for k in ("top", "left", "height", "width")]
        return TF.erase(img, *box, v=torch.tensor(0.0))
    if isinstance(augment, RandomGamma):
        return RandomGamma(gamma=(value["gamma"], value["gamma"]))(img)
    if isinstance(augment, RandomBrightnessContrast):
        draws = iter([value["contrast"], value["brightness"]])
        with mock.patch.object(skxray.augmentation, "_uniform", lambda low, high: next(draws)):
            return augment(img)
    top, bottom, left, right = (int(value[k]) for k in ("top", "bottom", "left", "right"))
    out = torch.zeros_like(img)
    out[:, top : height - bottom, left : width - right] = img[:, top : height - bottom, left : width - right]
    return out


@pytest.mark.parametrize(
    "augment",
    [
        RandomRotation(degrees=30.0),
        RandomResizedCrop(scale=(0.4, 1.0), ratio=(0.6, 1.6)),
        RandomBrightnessContrast(brightness=0.3, contrast=0.3),
        RandomGamma(),
        RandomErasing(p=1.0, scale=(0.05, 0.3)),
        RandomBorderMask(p=1.0, max_fraction=0.3),
    ],
    ids=lambda a: type(a).__name__,
)
@pytest.mark.parametrize("shape", [(8, 1, 32, 32), (8, 3, 64, 48), (8, 1, 23, 41)])
def test_batch_equals_the_per_image_transform_for_the_same_parameters(augment, shape):
    """The batched output for drawn parameters is the per-image transform's for those parameters.

    Tolerance: 1e-5 absolute on [0, 1] images (at most 64 px); rotation and
    resized crop resample with ``grid_sample`` on a grid of their own, which
    differs from torchvision's by float32 rounding only (on real X-rays up
    to 256 px, at most 2 machine epsilons: benchmarks/results/augment.json,
    "pixels"); the others are exact.
    """
    x = _batch(*shape, seed=1)
    torch.manual_seed(0)
    params = augment._draw(len(x), *shape[-2:])
    out = augment._apply_batch(x, params)
    reference = torch.stack([_per_image_reference(augment, x[i], {k: v[i] for k, v in params.items()})
                             for i in range(len(x))])
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    assert len({tuple(v.tolist()) for v in params.values()}) > 0 and all(len(v) == len(x) for v in params.values())


@pytest.mark.parametrize(
    "augment, torchvision_transform, keys",
    [
        (
            RandomResizedCrop(scale=(0.3, 1.0), ratio=(0.5, 1.0)),
            T.RandomResizedCrop(size=(24, 40), scale=(0.3, 1.0), ratio=(0.5, 1.0)),
            {"top": "top", "left": "left", "height": "height", "width": "width"},
        ),
        (
            RandomErasing(p=1.0, scale=(0.05, 0.5), ratio=(0.3, 3.3)),
            T.RandomErasing(p=1.0, scale=(0.05, 0.5), ratio=(0.3, 3.3), value=0.0),
            {"top": "i", "left": "j", "height": "h", "width": "w"},
        ),
    ],
    ids=["RandomResizedCrop", "RandomErasing"],
)
def test_batch_boxes_have_torchvisions_law(augment, torchvision_transform, keys):
    """The vectorised box draws follow torchvision's (ten tries, fallback): two-sample KS, fixed seeds.

    A non-square image, asymmetric ratios and large areas make the tries
    fail often, so a wrong fallback or swapped sides would show.
    """
    from scipy.stats import ks_2samp

    n = 2000
    torch.manual_seed(0)
    ours = augment._draw(n, 24, 40)
    torch.manual_seed(1)
    theirs = [torchvision_transform.make_params([torch.zeros(1, 24, 40)]) for _ in range(n)]
    for key, their_key in keys.items():
        assert ks_2samp(ours[key].numpy(), [t[their_key] for t in theirs]).pvalue > 0.001, key


def test_batch_invalid_parameters_and_batches_raise():
    with pytest.raises(ValueError, match="'degrees' parameter of RandomRotation"):
        RandomRotation(degrees=500).augment_batch(_batch())
    with pytest.raises(ValueError, match=r"Compose: transforms\[1\] is not callable"):
        Compose([RandomFlip(), 3]).augment_batch(_batch())
    for bad in (_image(), _batch().long(), np.zeros((2, 1, 8, 8), dtype=np.float32)):
        with pytest.raises(ValueError, match="RandomGamma: augment_batch expects a batch"):
            RandomGamma().augment_batch(bad)


def _flip_some(img):
    return img.flip(-1) if torch.rand(()).item() < 0.5 else img


def test_supports_batches_only_for_skxray_augmentations():
    assert all(supports_batches(a) for a in AUGMENTATIONS)
    assert supports_batches(Compose([]))
    assert not supports_batches(_flip_some)
    assert not supports_batches(Compose([RandomFlip(), _flip_some]))
    assert not supports_batches(Compose([Compose([_flip_some])]))
    assert not supports_batches(None)


def test_compose_batch_applies_a_custom_step_per_image():
    x = _batch(channels=3)
    torch.manual_seed(4)
    out = Compose([RandomGamma(), _flip_some]).augment_batch(x)
    torch.manual_seed(4)
    gamma = RandomGamma().augment_batch(x)
    expected = torch.stack([_flip_some(image) for image in gamma])
    assert torch.equal(out, expected)


def test_batch_constant_and_standardised_images():
    flat = torch.full((4, 1, 16, 16), 0.3)
    torch.manual_seed(0)
    assert torch.equal(RandomGamma().augment_batch(flat), flat)  # span 0: unchanged, as on one image
    standardised = (_batch(8, 1, 32, 32) - 0.5) / 0.25
    torch.manual_seed(0)
    assert torch.isfinite(xray_augmentation("strong").augment_batch(standardised)).all()


@pytest.mark.parametrize(
    "augment",
    [xray_augmentation("strong"), xray_augmentation("fastai"), Compose([xray_augmentation("light"), RandomFlip()])],
    ids=["strong", "fastai", "nested"],
)
def test_batch_grouping_on_the_cpu_does_not_change_the_result(augment, monkeypatch):
    """The CPU augments a batch a few images at a time; the draws are made for the whole batch first."""
    x = _batch(10, 1, 16, 16)
    results = []
    for group_bytes in (10**9, 3 * x[0].numel() * x.element_size()):  # one group; groups of 3 images
        monkeypatch.setattr(skxray.augmentation, "CPU_CHUNK_BYTES", group_bytes)
        torch.manual_seed(2)
        results.append(augment.augment_batch(x))
        results.append(torch.get_rng_state())
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[3])
    assert not torch.equal(results[0], x)
