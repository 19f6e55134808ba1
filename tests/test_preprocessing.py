"""Tests for skxray.preprocessing."""

import doctest
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.base import clone
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import skxray.preprocessing
from skxray.io import ImageReadError
from skxray.preprocessing import (
    BorderMask,
    CenterCrop,
    HistogramEqualization,
    ImageLoader,
    LungCrop,
    LungFieldMask,
    Normalize,
    Rescale,
    Resize,
    ToGrayscale,
    ToRGB,
    XRayNormalize,
    resize_image,
    resize_images,
)

FAST = settings(max_examples=30, deadline=None)

# ---------------------------------------------------------------------------
# Strategies


VALUE_KINDS = ["unit", "uint8", "int16", "normal", "huge", "tiny", "constant", "binary"]


def _values(rng, kind, shape):
    if kind == "unit":
        return rng.random(shape, dtype=np.float32)
    if kind == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "int16":
        return rng.integers(-32768, 32768, shape, dtype=np.int16)
    if kind == "normal":
        return rng.normal(-5.0, 3.0, shape)
    if kind == "huge":
        # Near the float32 limit, where max - min overflows in float32.
        return rng.uniform(-3e38, 3e38, shape)
    if kind == "tiny":
        return rng.uniform(0, 1e-30, shape).astype(np.float32)
    if kind == "constant":
        return np.full(shape, rng.uniform(-1e3, 1e3))
    return rng.integers(0, 2, shape).astype(np.float64)


@st.composite
def image_arrays(draw, kinds=tuple(VALUE_KINDS), channels=(None, 1, 3), min_side=4):
    """Valid image batches: (N, H, W) or (N, C, H, W) of various dtypes and ranges."""
    n = draw(st.integers(1, 4))
    c = draw(st.sampled_from(channels))
    h = draw(st.integers(min_side, 40))
    w = draw(st.integers(min_side, 40))
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, h, w) if c is None else (n, c, h, w)
    return _values(rng, kind, shape)


def _unit_images(shape=(3, 1, 12, 10), seed=0):
    return np.random.default_rng(seed).random(shape)


def _per_image(X):
    return np.asarray(X, dtype=np.float64).reshape(len(X), -1)


# ---------------------------------------------------------------------------
# Properties of each transformer


def _unit_range_output(transformer, X):
    """``transformer.fit_transform(X)``, checked to be float32 in [0, 1], shaped as X."""
    out = transformer.fit_transform(X)
    assert out.shape == X.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    return out


@FAST
@given(X=image_arrays())
def test_rescale_maps_each_image_to_unit_range(X):
    out = _unit_range_output(Rescale(), X)
    flat_in = _per_image(np.asarray(X, dtype=np.float32))
    for image_in, image_out in zip(flat_in, _per_image(out)):
        if image_in.max() > image_in.min():
            assert image_out.min() == 0 and image_out.max() == 1
            assert image_out[image_in.argmax()] == 1
        else:
            assert (image_out == 0).all()


@FAST
@given(X=image_arrays(kinds=("unit", "uint8", "int16", "normal", "tiny", "constant", "binary")))
def test_xray_normalize_range(X):
    X = np.abs(np.asarray(X, dtype=np.float64)).astype(np.float32)
    max_value = float(X.max()) if X.max() > 0 else 1.0
    out = XRayNormalize(max_value=max_value).fit_transform(X)
    assert out.shape == X.shape and out.dtype == np.float32
    assert out.min() >= -1024 and out.max() <= 1024
    if X.max() > 0:
        assert out.max() == 1024
    np.testing.assert_allclose(out, (2 * X / max_value - 1) * 1024, rtol=1e-5, atol=1e-3)


@FAST
@given(X=image_arrays())
def test_to_rgb_replicates_channels(X):
    out = ToRGB().fit_transform(X)
    assert out.dtype == np.float32
    assert out.shape == (X.shape[0], 3, *X.shape[-2:])
    X32 = np.asarray(X, dtype=np.float32)
    if X.ndim == 4 and X.shape[1] == 3:
        np.testing.assert_array_equal(out, X32)
    else:
        for channel in range(3):
            np.testing.assert_array_equal(out[:, channel], X32.reshape(out[:, 0].shape))


@FAST
@given(X=image_arrays(kinds=("unit", "uint8", "int16", "normal", "constant", "binary")))
def test_to_grayscale(X):
    out = ToGrayscale().fit_transform(X)
    assert out.dtype == np.float32
    assert out.shape == (X.shape[0], *X.shape[-2:])
    X32 = np.asarray(X, dtype=np.float32)
    if X.ndim == 4 and X.shape[1] == 3:
        expected = 0.299 * X32[:, 0] + 0.587 * X32[:, 1] + 0.114 * X32[:, 2]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    else:
        np.testing.assert_array_equal(out, X32.reshape(out.shape))
        # Gray -> RGB -> gray is lossless up to rounding: the weights sum to 1.
        np.testing.assert_allclose(
            ToGrayscale().transform(ToRGB().transform(X)), out, rtol=1e-5, atol=1e-3
        )


@FAST
@given(
    X=image_arrays(kinds=("unit", "uint8", "normal", "constant", "binary")),
    size=st.one_of(st.integers(1, 48), st.tuples(st.integers(1, 48), st.integers(1, 48))),
    keep_aspect=st.sampled_from([False, True, "pad", "crop"]),
)
def test_resize_output_size_and_range(X, size, keep_aspect):
    out = Resize(size=size, keep_aspect=keep_aspect).fit_transform(X)
    height, width = (size, size) if isinstance(size, int) else size
    assert out.shape == (*X.shape[:-2], height, width)
    assert out.dtype == np.float32
    X32 = np.asarray(X, dtype=np.float32)
    for image_in, image_out in zip(_per_image(X32), _per_image(out)):
        low, high = image_in.min(), image_in.max()
        if keep_aspect in (True, "pad"):
            # Letterbox padding adds zeros.
            low, high = min(low, 0), max(high, 0)
        assert low <= image_out.min() and image_out.max() <= high


@FAST
@given(X=image_arrays(), data=st.data())
def test_center_crop_size_and_content(X, data):
    h, w = X.shape[-2:]
    size = data.draw(
        st.one_of(st.integers(1, min(h, w)), st.tuples(st.integers(1, h), st.integers(1, w)))
    )
    out = CenterCrop(size=size).fit_transform(X)
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    assert out.shape == (*X.shape[:-2], crop_h, crop_w)
    assert out.dtype == np.float32
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    expected = np.asarray(X, dtype=np.float32)[..., top : top + crop_h, left : left + crop_w]
    np.testing.assert_array_equal(out, expected)


def test_center_crop_is_central():
    X = np.zeros((1, 5, 5))
    X[0, 2, 2] = 1
    np.testing.assert_array_equal(CenterCrop(size=1).transform(X), [[[1.0]]])
    np.testing.assert_array_equal(CenterCrop(size=3).transform(X)[0, 1, 1], 1.0)


@FAST
@given(X=image_arrays())
def test_histogram_equalization_range_and_monotonicity(X):
    out = _unit_range_output(HistogramEqualization(), X)
    for image_in, image_out in zip(_per_image(np.asarray(X, dtype=np.float32)), _per_image(out)):
        order = np.argsort(image_in, kind="stable")
        assert (np.diff(image_out[order]) >= 0).all(), "equalisation must keep the intensity order"
        if image_in.max() > image_in.min():
            assert image_out.min() == 0 and image_out.max() == 1
        else:
            assert (image_out == 0).all()


def test_histogram_equalization_flattens_histogram():
    # A dark, low-contrast image gets spread over the whole range.
    X = np.random.default_rng(0).uniform(0.1, 0.2, size=(1, 64, 64)) ** 3
    out = HistogramEqualization().transform(X)
    counts, _ = np.histogram(out, bins=4, range=(0, 1))
    assert counts.min() > 0.2 * out.size


@FAST
@given(X=image_arrays(), fraction=st.floats(0, 0.499))
def test_border_mask(X, fraction):
    out = BorderMask(fraction=fraction).fit_transform(X)
    assert out.shape == X.shape and out.dtype == np.float32
    h, w = X.shape[-2:]
    band_h, band_w = int(fraction * h), int(fraction * w)
    assert band_h < h - band_h and band_w < w - band_w, "the centre must survive"
    X32 = np.asarray(X, dtype=np.float32)
    inner = (..., slice(band_h, h - band_h), slice(band_w, w - band_w))
    np.testing.assert_array_equal(out[inner], X32[inner])
    masked = np.ones(X.shape, dtype=bool)
    masked[inner] = False
    assert (out[masked] == 0).all()


@FAST
@given(X=image_arrays(kinds=("unit", "uint8", "int16", "normal", "constant", "binary")))
def test_normalize_scalar(X):
    out = Normalize(mean=0.5, std=0.25).fit_transform(X)
    assert out.shape == X.shape and out.dtype == np.float32
    X64 = np.asarray(X, dtype=np.float32).astype(np.float64)
    np.testing.assert_allclose(out, (X64 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_normalize_per_channel():
    X = _unit_images((2, 3, 4, 5)).astype(np.float32)
    mean, std = [0.1, 0.2, 0.3], [1.0, 2.0, 4.0]
    out = Normalize(mean=mean, std=std).transform(X)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (X[:, c] - mean[c]) / std[c], rtol=1e-6, atol=1e-7)
    # One value per channel also fits one-channel and channel-less images.
    np.testing.assert_allclose(
        Normalize(mean=[0.5], std=(2.0,)).transform(X[:, 0]),
        (X[:, 0] - 0.5) / 2,
        rtol=1e-6,
        atol=1e-7,
    )


@pytest.mark.parametrize(
    "image_shape, size, content_shape",
    [
        ((20, 10), 8, (8, 4)),
        ((20, 10), (8, 12), (8, 4)),
        ((10, 20), (12, 8), (4, 8)),
        ((10, 20), (12, 30), (12, 24)),
        ((16, 16), (4, 8), (4, 4)),
    ],
)
def test_resize_keep_aspect_letterboxes(image_shape, size, content_shape):
    X = np.ones((2, 1, *image_shape))
    out = Resize(size=size, keep_aspect=True).transform(X)
    target = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, 1, *target)
    rows = np.flatnonzero(out[0, 0].max(axis=1) > 0)
    columns = np.flatnonzero(out[0, 0].max(axis=0) > 0)
    assert (len(rows), len(columns)) == content_shape
    # Centred: the padding on opposite sides differs by at most one pixel.
    for kept, total in ((rows, target[0]), (columns, target[1])):
        assert abs(kept[0] - (total - 1 - kept[-1])) <= 1
    np.testing.assert_array_equal(out[0, 0][np.ix_(rows, columns)], 1.0)
    assert (out > 0).sum() == 2 * len(rows) * len(columns)


@pytest.mark.parametrize(
    "image_shape, size, kept_rows, kept_columns",
    [
        ((20, 10), 10, (5, 15), (0, 10)),  # tall: the middle rows
        ((10, 20), 10, (0, 10), (5, 15)),  # wide: the middle columns
        ((10, 20), (10, 10), (0, 10), (5, 15)),
        ((20, 20), (10, 20), (5, 15), (0, 20)),  # square into a wide target
        ((16, 16), 8, (0, 16), (0, 16)),  # same aspect: nothing cut
    ],
)
def test_resize_keep_aspect_crop_takes_the_centre(image_shape, size, kept_rows, kept_columns):
    h, w = image_shape
    X = np.arange(h * w, dtype=np.float32).reshape(1, h, w)
    out = resize_images(X, size, keep_aspect="crop")
    target = (size, size) if isinstance(size, int) else size
    crop = X[:, slice(*kept_rows), slice(*kept_columns)]
    np.testing.assert_allclose(out, resize_images(crop, target), rtol=1e-6)


def test_resize_keep_aspect_crop_does_not_distort():
    # A disc in a wide and in a tall frame stays a disc: the stretch makes
    # ellipses, a shape cue that tells the two frames apart.
    def disc(h, w):
        yy, xx = np.mgrid[:h, :w]
        return ((yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < 30**2).astype(np.float32)[None]

    for frame in ((80, 120), (120, 80)):
        cropped = resize_images(disc(*frame), 40, keep_aspect="crop")[0]
        stretched = resize_images(disc(*frame), 40)[0]
        rows, columns = (cropped > 0.5).sum(axis=0).max(), (cropped > 0.5).sum(axis=1).max()
        assert abs(rows - columns) <= 1
        rows, columns = (stretched > 0.5).sum(axis=0).max(), (stretched > 0.5).sum(axis=1).max()
        assert abs(rows - columns) >= 8


@pytest.mark.parametrize("shape", [(2, 20, 16), (2, 3, 20, 16)])
def test_lung_field_mask_keeps_lungs_only(shape):
    from skxray.explain import central_lung_mask

    X = np.random.default_rng(0).random(shape).astype(np.float32) + 1
    out = LungFieldMask(fill=-1.0, region="ellipse").fit_transform(X)
    mask = central_lung_mask(20, 16)
    np.testing.assert_array_equal(out[..., mask], X[..., mask])
    assert np.all(out[..., ~mask] == -1.0)
    assert 0.2 < mask.mean() < 0.5  # two lungs, not the whole image


def test_resize_is_antialiased():
    # A fine checkerboard averages to grey instead of aliasing to black/white.
    X = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[None]
    out = Resize(size=8).transform(X)
    np.testing.assert_allclose(out, 0.5, atol=0.05)


def test_resize_same_size_is_identity_and_copies():
    X = _unit_images((2, 3, 16, 16)).astype(np.float32)
    out = Resize(size=16).transform(X)
    np.testing.assert_array_equal(out, X)
    assert not np.shares_memory(out, X)


def test_resize_image_single_image():
    img = np.random.default_rng(0).random((3, 30, 20))
    out = resize_image(img, (10, 12))
    assert out.shape == (3, 10, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, resize_images(img[None], (10, 12))[0])
    assert resize_image(img[0], 7, keep_aspect=True).shape == (7, 7)


# ---------------------------------------------------------------------------
# Behaviour shared by all array transformers


def _transformers(crop=4, max_value=1.0, fill=0.0):
    """One of each array transformer; the arguments suit other inputs."""
    return [
        Resize(size=8),
        Resize(size=(6, 10), keep_aspect=True),
        CenterCrop(size=crop),
        ToGrayscale(),
        ToRGB(),
        Rescale(),
        Normalize(),
        XRayNormalize(max_value=max_value),
        HistogramEqualization(),
        BorderMask(),
        LungFieldMask(fill=fill),
        LungFieldMask(region="ellipse", output="mask"),
        LungCrop(region="ellipse"),
    ]


TRANSFORMERS = _transformers()
IDS = [repr(t) for t in TRANSFORMERS]


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
@pytest.mark.parametrize("shape", [(3, 12, 10), (3, 1, 12, 10), (2, 3, 9, 9)])
def test_layout_and_dtype(transformer, shape):
    X = _unit_images(shape)
    out = transformer.fit_transform(X)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous or out.flags.f_contiguous
    if isinstance(transformer, ToGrayscale) or getattr(transformer, "output", None) == "mask":
        assert out.ndim == 3 and out.shape == (shape[0], *shape[-2:])
    elif isinstance(transformer, ToRGB):
        assert out.shape[:2] == (shape[0], 3)
    else:
        assert out.ndim == len(shape) and out.shape[: len(shape) - 2] == shape[:-2]


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_stateless_fit_transform_consistency(transformer):
    X = _unit_images()
    assert transformer.fit(X) is transformer
    # Stateless: transform works on an unfitted clone and matches fit_transform.
    np.testing.assert_array_equal(clone(transformer).transform(X), transformer.fit_transform(X))
    assert transformer.__sklearn_tags__().requires_fit is False
    assert transformer.__sklearn_tags__().input_tags.two_d_array is False


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_input_not_modified_and_readonly_ok(transformer):
    X = _unit_images().astype(np.float32)
    before = X.copy()
    out = transformer.transform(X)
    np.testing.assert_array_equal(X, before)
    assert not np.shares_memory(out, X)
    X.setflags(write=False)
    np.testing.assert_array_equal(transformer.transform(X), out)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_sample_order_and_subset_invariance(transformer):
    X = _unit_images((5, 1, 12, 10))
    out = transformer.transform(X)
    order = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(transformer.transform(X[order]), out[order], rtol=1e-6)
    for i in range(len(X)):
        np.testing.assert_allclose(transformer.transform(X[i : i + 1]), out[i : i + 1], rtol=1e-6)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_clone_get_params_pickle(transformer):
    params = transformer.get_params()
    cloned = clone(transformer)
    assert cloned is not transformer
    assert cloned.get_params() == params
    restored = pickle.loads(pickle.dumps(transformer))
    assert restored.get_params() == params
    X = _unit_images()
    np.testing.assert_array_equal(restored.transform(X), transformer.transform(X))


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
def test_in_pipeline(transformer):
    pipe = Pipeline([("rescale", Rescale()), ("step", transformer), ("rgb", ToRGB())])
    X = _unit_images()
    out = pipe.fit_transform(X)
    assert out.dtype == np.float32 and out.shape[1] == 3
    np.testing.assert_array_equal(
        out, ToRGB().transform(transformer.transform(Rescale().transform(X)))
    )
    assert pipe.set_params(step=clone(transformer)).get_params()["step"] is not transformer


def test_pipeline_for_imagenet_models():
    pipe = make_pipeline(
        Resize(size=16),
        ToRGB(),
        Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    )
    out = pipe.fit_transform(_unit_images((2, 30, 20)))
    assert out.shape == (2, 3, 16, 16) and out.dtype == np.float32
    assert pipe.get_params()["resize__size"] == 16


def test_init_stores_parameters_unchanged():
    size = [8, 9]
    mean = [0.1, 0.2, 0.3]
    assert Resize(size=size).size is size
    assert Normalize(mean=mean).mean is mean
    # Invalid values are stored too; they are rejected by fit / transform.
    assert Resize(size=-3).size == -3
    assert clone(BorderMask(fraction=0.7)).fraction == 0.7


# ---------------------------------------------------------------------------
# Errors


def _names(cls, param, value):
    """The declared-constraint error: class, parameter and value named."""
    return rf"The '{param}' parameter of {cls} must be .*Got {re.escape(repr(value))} instead"


@pytest.mark.parametrize(
    "transformer, match",
    [
        (
            Resize(size=-3),
            r"'size' parameter of Resize must be an int in the range \[1, inf\) or a "
            r"\(height, width\) pair, each an int in the range \[1, inf\). Got -3 instead",
        ),
        (Resize(size=2.5), _names("Resize", "size", 2.5)),
        (Resize(size=True), _names("Resize", "size", True)),
        (Resize(size=(4,)), _names("Resize", "size", (4,))),
        (Resize(size=(4, 0)), _names("Resize", "size", (4, 0))),
        (Resize(size=None), _names("Resize", "size", None)),
        (Resize(keep_aspect="yes"), _names("Resize", "keep_aspect", "yes")),
        (CenterCrop(size=0), _names("CenterCrop", "size", 0)),
        (
            CenterCrop(size=50),
            r"CenterCrop: size 50 is larger than the images \(X has shape \(3, 1, 12, 10\)\)",
        ),
        (CenterCrop(size=(11, 11)), "CenterCrop: size .* is larger than the images"),
        (Normalize(std=0), _names("Normalize", "std", 0)),
        (Normalize(std=[0.2, -0.1, 0.3]), "Normalize: std must be positive"),
        (Normalize(mean=np.nan), _names("Normalize", "mean", np.nan)),
        (Normalize(mean="a"), _names("Normalize", "mean", "a")),
        (Normalize(mean=[]), "Normalize: mean must be"),
        (Normalize(mean=[[0.1]]), "Normalize: mean must be"),
        (Normalize(mean=[0.1, 0.2, 0.3]), r"Normalize: mean has 3 values but X has 1 channel\(s\)"),
        (Normalize(std=[1.0, 2.0]), r"Normalize: std has 2 values but X has 1 channel\(s\)"),
        (XRayNormalize(max_value=0.5), r"XRayNormalize: X has values up to .*above max_value=0.5"),
        (XRayNormalize(max_value=0), _names("XRayNormalize", "max_value", 0)),
        (XRayNormalize(max_value=np.inf), _names("XRayNormalize", "max_value", np.inf)),
        (XRayNormalize(max_value="1"), _names("XRayNormalize", "max_value", "1")),
        (HistogramEqualization(n_bins=1), _names("HistogramEqualization", "n_bins", 1)),
        (HistogramEqualization(n_bins=2.0), _names("HistogramEqualization", "n_bins", 2.0)),
        (BorderMask(fraction=0.5), r"'fraction' .* BorderMask must be a float in the range \[0.0, 0.5\)"),
        (BorderMask(fraction=-0.1), _names("BorderMask", "fraction", -0.1)),
        (BorderMask(fraction=None), _names("BorderMask", "fraction", None)),
        (LungFieldMask(fill=np.nan), _names("LungFieldMask", "fill", np.nan)),
        (LungFieldMask(fill=np.inf), _names("LungFieldMask", "fill", np.inf)),
        (LungFieldMask(fill="0"), _names("LungFieldMask", "fill", "0")),
        (LungFieldMask(region="hull"), _names("LungFieldMask", "region", "hull")),
        (LungFieldMask(output="masks"), _names("LungFieldMask", "output", "masks")),
        (LungCrop(margin=0.6), _names("LungCrop", "margin", 0.6)),
        (LungCrop(region=None), _names("LungCrop", "region", None)),
    ],
    ids=repr,
)
@pytest.mark.parametrize("method", ["fit", "transform", "fit_transform"])
def test_invalid_parameters(transformer, match, method):
    X = _unit_images()
    with pytest.raises(ValueError, match=match):
        getattr(transformer, method)(X)


@pytest.mark.parametrize("transformer", [*TRANSFORMERS, ImageLoader()], ids=[*IDS, "ImageLoader"])
def test_every_parameter_is_declared(transformer):
    # A parameter missing from _parameter_constraints would go unchecked.
    assert set(type(transformer)._parameter_constraints) == set(transformer.get_params())


def test_xray_normalize_rejects_negative_values():
    with pytest.raises(ValueError, match="XRayNormalize: Negative values in data"):
        XRayNormalize().transform(_unit_images() - 0.5)


def test_xray_normalize_error_suggests_8_bit():
    X = np.full((1, 4, 4), 255, dtype=np.uint8)
    with pytest.raises(ValueError, match="255 for 8-bit"):
        XRayNormalize().fit(X)
    np.testing.assert_array_equal(XRayNormalize(max_value=255).transform(X), 1024)


@pytest.mark.parametrize("transformer", [ToGrayscale(), ToRGB()], ids=repr)
@pytest.mark.parametrize("n_channels", [2, 4])
def test_channel_conversion_rejects_other_counts(transformer, n_channels):
    X = _unit_images((2, n_channels, 5, 5))
    name = type(transformer).__name__
    with pytest.raises(
        ValueError, match=f"{name}: expected 1 or 3 channels, got {n_channels} channels"
    ):
        transformer.fit_transform(X)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=IDS)
@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((4, 4)), r"X must have shape .* got an array with shape \(4, 4\)"),
        (np.zeros(4), "X must have shape"),
        (np.zeros((1, 1, 1, 4, 4)), "X must have shape"),
        (np.zeros((0, 4, 4)), "X is empty"),
        (np.zeros((2, 0, 4)), "X is empty"),
        (np.full((1, 4, 4), np.nan), "NaN or infinite"),
        (np.full((1, 4, 4), np.inf), "NaN or infinite"),
        (np.full((1, 4, 4), "a"), "cannot be read as numbers"),
        (np.zeros((1, 4, 4), dtype=complex), "complex dtype"),
    ],
    ids=["2d", "1d", "5d", "empty", "empty-height", "nan", "inf", "strings", "complex"],
)
def test_invalid_input(transformer, X, match):
    for method in (transformer.fit, transformer.transform):
        with pytest.raises(ValueError, match=match):
            method(X)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_overflow_in_float32_rejected():
    with pytest.raises(ValueError, match="NaN or infinite"):
        Rescale().transform(np.full((1, 4, 4), 1e300))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: resize_image(np.zeros(5), 3), r"resize_image: img must have shape .* \(5,\)"),
        (lambda: resize_image(np.zeros((1, 2, 3, 4)), 3), "resize_image: img must have shape"),
        (lambda: resize_image(np.zeros((4, 4)), 0), _names("resize_image", "size", 0)),
        (lambda: resize_image(np.full((4, 4), np.nan), 2), "NaN or infinite"),
        (lambda: resize_images(np.zeros((2, 4, 4)), (2, -1)), _names("resize_images", "size", (2, -1))),
        (lambda: resize_images(np.zeros((4, 4)), 2), "X must have shape"),
    ],
)
def test_resize_function_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------
# ImageLoader


def _write_png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def png_files(tmp_path):
    """Five grayscale PNGs of different sizes, with distinct constant values.

    The paths are deliberately not in sorted order, so that a loader which
    sorted or otherwise reordered them would be caught.
    """
    names = ["d", "img1", "b", "e", "a"]
    sizes = [(20, 30), (32, 32), (17, 40), (25, 25), (40, 10)]
    values = [10, 200, 60, 250, 120]
    return [
        _write_png(tmp_path / f"{name}.png", np.full(size, value, dtype=np.uint8))
        for name, size, value in zip(names, sizes, values)
    ], values


def test_image_loader_resizes_and_keeps_order(png_files):
    paths, values = png_files
    X = ImageLoader(image_size=16).fit_transform([str(p) for p in paths])
    assert X.shape == (5, 16, 16) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=(1, 2)), np.array(values) / 255, atol=1e-6)
    assert X.min() >= 0 and X.max() <= 1


@pytest.mark.parametrize("as_gray", [True, False])
def test_image_loader_keep_aspect_crop(tmp_path, as_gray):
    # Left third dark, right two thirds bright: a centre square crop of the
    # 30x60 file keeps columns 15-45, half dark half bright -> mean 0.5.
    img = np.zeros((30, 60), dtype=np.uint8)
    img[:, 30:] = 255
    path = _write_png(tmp_path / "wide.png", img)
    X = ImageLoader(image_size=10, as_gray=as_gray, keep_aspect="crop").transform([path])
    np.testing.assert_allclose(X.mean(), 0.5, atol=1e-6)
    expected = resize_images(img[None, :, 15:45].astype(np.float32) / 255, 10)[0]
    np.testing.assert_allclose(X[0] if as_gray else X[0, 0], expected, atol=1e-6)
    stretched = ImageLoader(image_size=10, as_gray=as_gray, keep_aspect=False).transform([path])
    np.testing.assert_allclose(stretched.mean(), 0.5, atol=1e-6)
    assert not np.allclose(stretched, X)


def test_image_loader_rgb_and_rectangular_size(png_files):
    paths, values = png_files
    X = ImageLoader(image_size=(12, 20), as_gray=False).transform(paths)
    assert X.shape == (5, 3, 12, 20) and X.dtype == np.float32
    np.testing.assert_allclose(X[:, 1].mean(axis=(1, 2)), np.array(values) / 255, atol=1e-6)


def test_image_loader_color_file(tmp_path):
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    path = _write_png(tmp_path / "red.png", rgb)
    np.testing.assert_allclose(ImageLoader(as_gray=False).transform([path])[0, :, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(ImageLoader().transform([path])[0], 0.299, atol=1e-6)


@pytest.mark.parametrize(
    "wrap",
    [list, tuple, np.array, pd.Series, lambda ps: [Path(p) for p in ps]],
    ids=["list", "tuple", "ndarray", "Series", "Path"],
)
def test_image_loader_accepts_path_containers(png_files, wrap):
    paths, values = png_files
    X = ImageLoader(image_size=8).transform(wrap([str(p) for p in paths]))
    np.testing.assert_allclose(X[:, 0, 0], np.array(values) / 255, atol=1e-6)


def test_image_loader_parallel_equals_serial(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        _write_png(tmp_path / f"{i}.png", rng.integers(0, 256, (20 + i, 30 - i), dtype=np.uint8))
        for i in range(8)
    ]
    serial = ImageLoader(image_size=16, n_jobs=1).transform(paths)
    parallel = ImageLoader(image_size=16, n_jobs=2).transform(paths)
    np.testing.assert_array_equal(parallel, serial)
    assert ImageLoader(image_size=16, n_jobs=-1).transform(paths[:3]).shape == (3, 16, 16)


def test_image_loader_without_size(tmp_path, png_files):
    same = [
        _write_png(tmp_path / f"same{i}.png", np.full((9, 7), i, dtype=np.uint8)) for i in range(3)
    ]
    assert ImageLoader().transform(same).shape == (3, 9, 7)
    paths, _ = png_files
    with pytest.raises(ValueError, match=r"images differ in size .*img1\.png.* set image_size"):
        ImageLoader().transform(paths)


def test_image_loader_missing_file(tmp_path, png_files):
    paths, _ = png_files
    missing = tmp_path / "does_not_exist.png"
    for n_jobs in (1, 2):
        with pytest.raises(ImageReadError, match="does_not_exist.png"):
            ImageLoader(image_size=8, n_jobs=n_jobs).transform([*paths, missing])


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 4, 4)), r"ImageLoader expects .*file paths.* ndarray of shape \(2, 4, 4\)"),
        ([1, 2], "ImageLoader expects .*file paths"),
        ([], "ImageLoader expects a non-empty"),
        ("a.png", "a single path; wrap it in a list"),
        (np.array([["a.png"]]), "ImageLoader expects"),
        (pd.DataFrame({"path": ["a.png"]}), "ImageLoader expects"),
    ],
    ids=["images", "ints", "empty", "string", "2d", "dataframe"],
)
def test_image_loader_rejects_non_paths(X, match):
    loader = ImageLoader()
    for method in (loader.fit, loader.transform):
        with pytest.raises(ValueError, match=match):
            method(X)


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"image_size": 0},
            _names("ImageLoader", "image_size", 0),
        ),
        ({"image_size": "224"}, _names("ImageLoader", "image_size", "224")),
        ({"as_gray": "yes"}, _names("ImageLoader", "as_gray", "yes")),
        ({"keep_aspect": "stretch"}, _names("ImageLoader", "keep_aspect", "stretch")),
        ({"n_jobs": 0}, _names("ImageLoader", "n_jobs", 0)),
        ({"n_jobs": 1.5}, _names("ImageLoader", "n_jobs", 1.5)),
    ],
)
def test_image_loader_invalid_parameters(png_files, params, match):
    paths, _ = png_files
    loader = ImageLoader(**params)
    for method in (loader.fit, loader.transform):
        with pytest.raises(ValueError, match=match):
            method(paths)


def test_image_loader_is_stateless_clonable_and_small(png_files):
    paths, _ = png_files
    loader = ImageLoader(image_size=8, n_jobs=2)
    assert loader.fit(paths) is loader
    assert clone(loader).get_params() == {"image_size": 8, "as_gray": True, "keep_aspect": "crop", "n_jobs": 2}
    blob = pickle.dumps(loader)
    assert len(blob) < 1000
    np.testing.assert_array_equal(pickle.loads(blob).transform(paths), loader.transform(paths))
    assert loader.__sklearn_tags__().input_tags.string is True


def test_image_loader_in_pipeline(png_files):
    paths, values = png_files
    pipe = make_pipeline(ImageLoader(image_size=8), ToRGB(), XRayNormalize())
    out = pipe.fit_transform(paths)
    assert out.shape == (5, 3, 8, 8)
    np.testing.assert_allclose(out[:, 0, 0, 0], (2 * np.array(values) / 255 - 1) * 1024, rtol=1e-5)


# ---------------------------------------------------------------------------
# Documentation examples


def test_docstring_examples():
    result = doctest.testmod(skxray.preprocessing, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------
# scikit-learn's common estimator checks
#
# The transformers truthfully declare ``input_tags.two_d_array = False``, and
# scikit-learn then skips all of its common checks, since nearly all of them
# feed 2-D tabular data. To run them anyway, each estimator is checked through
# a test-only subclass whose tags claim 2-D support. For the array
# transformers, that subclass also reads every row of a 2-D table as a
# one-pixel-high grayscale image (``(n, f) -> (n, 1, f)``) and flattens the
# output back to 2-D; everything else (validation, the transform itself) is
# the real code. ImageLoader takes file paths, so its subclass changes nothing
# but the tag, and every check that feeds it numbers is an expected failure.
# Expected failures are listed with their reasons under ``xfail_strict=True``,
# so the lists cannot go stale.


def _rows_as_images(X):
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        return X  # left to check_image_array, which rejects sparse input
    arr = np.asarray(X)
    return arr[:, None, :] if arr.ndim == 2 else arr


class _TabularViews:
    """Namespace of the test-only subclasses, so that pickle can find them."""


def _tabular_view(estimator):
    cls = type(estimator)
    name = cls.__name__

    def fit(self, X, y=None):
        cls.fit(self, _rows_as_images(X), y)
        return self

    def transform(self, X):
        out = cls.transform(self, _rows_as_images(X))
        return out.reshape(len(out), -1)

    def __sklearn_tags__(self):
        tags = cls.__sklearn_tags__(self)
        tags.input_tags.two_d_array = True
        return tags

    view = getattr(_TabularViews, name, None)
    if view is None:
        namespace = {
            "__sklearn_tags__": __sklearn_tags__,
            "__doc__": cls.__doc__,
            "__qualname__": f"_TabularViews.{name}",
        }
        if not isinstance(estimator, ImageLoader):
            namespace.update(fit=fit, transform=transform)
        # Same name as the real class, so that the check ids read naturally.
        view = type(name, (cls,), namespace)
        setattr(_TabularViews, name, view)
    return view(**estimator.get_params())


# Rows are one pixel high (crop 1); max_value is above the largest value
# the checks feed (iris, shifted to be >= 0).
_CHECKED_TRANSFORMERS = _transformers(crop=1, max_value=1000.0, fill=0.5)

_ARRAY_EXPECTED_FAILURES = {
    "check_n_features_in": "stateless image transformers set no n_features_in_: images have "
    "no fixed feature count, and a transformer that resizes or crops accepts any size",
    "check_n_features_in_after_fitting": "stateless image transformers set no n_features_in_ "
    "(see check_n_features_in)",
    "check_estimators_empty_data_messages": "expects scikit-learn's '0 feature(s)' wording for "
    "an (n, 0) array; skxray's check_image_array says 'X is empty' (tested in this file)",
    "check_complex_data": "expects the wording 'Complex data not supported'; skxray's "
    "check_image_array raises a ValueError saying 'complex dtype ... images must be "
    "real-valued' (tested in this file)",
    "check_dtype_object": "expects a TypeError for an object array holding a dict; skxray's "
    "check_image_array turns it into a ValueError ('cannot be read as numbers', tested in "
    "this file); the numeric object arrays of the same check are accepted",
    "check_fit2d_predict1d": "expects scikit-learn's 'Reshape your data' wording for 1-D input; "
    "skxray's check_image_array raises a ValueError saying 'X must have shape ...' (tested in "
    "this file)",
}

_LOADER_NUMERIC = "feeds numeric arrays; ImageLoader only takes file paths (tested in this file)"
_LOADER_EXPECTED_FAILURES = {
    **dict.fromkeys(
        [
            "check_complex_data",
            "check_dict_unchanged",
            "check_dont_overwrite_parameters",
            "check_dtype_object",
            "check_estimators_dtypes",
            "check_estimators_empty_data_messages",
            "check_estimators_fit_returns_self",
            "check_estimators_nan_inf",
            "check_estimators_overwrite_params",
            "check_estimators_pickle",
            "check_f_contiguous_array_estimator",
            "check_fit2d_1feature",
            "check_fit2d_1sample",
            "check_fit2d_predict1d",
            "check_fit_check_is_fitted",
            "check_fit_idempotent",
            "check_fit_score_takes_y",
            "check_methods_sample_order_invariance",
            "check_methods_subset_invariance",
            "check_n_features_in",
            "check_n_features_in_after_fitting",
            "check_pipeline_consistency",
            "check_positive_only_tag_during_fit",
            "check_readonly_memmap_input",
            "check_transformer_data_not_an_array",
            "check_transformer_general",
            "check_transformer_preserve_dtypes",
            "check_transformers_unfitted_stateless",
        ],
        _LOADER_NUMERIC,
    ),
    **dict.fromkeys(
        [
            "check_estimator_sparse_array",
            "check_estimator_sparse_matrix",
            "check_estimator_sparse_tag",
        ],
        "ImageLoader takes file paths; a sparse matrix gets its 'expects file paths' error, "
        "which does not contain the word 'sparse' the check looks for",
    ),
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, ImageLoader):
        return _LOADER_EXPECTED_FAILURES
    return _ARRAY_EXPECTED_FAILURES


def _check_name(check):
    while hasattr(check, "func"):
        check = check.func
    return check.__name__


@parametrize_with_checks(
    [_tabular_view(t) for t in [*_CHECKED_TRANSFORMERS, ImageLoader()]],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    if _check_name(check) not in _expected_failed_checks(estimator):
        check(estimator)
        return
    try:
        check(estimator)
    except Exception as exc:
        # pytest renders the traceback of every expected failure, re-parsing
        # scikit-learn's large estimator_checks.py for each frame (about 0.4 s
        # per failure); re-raising from here keeps the rendering to one frame.
        raise AssertionError(f"expected failure: {type(exc).__name__}: {exc}") from None


def test_tabular_view_is_the_real_transform():
    X = np.random.default_rng(0).random((4, 6))
    view = _tabular_view(Rescale())
    np.testing.assert_array_equal(
        view.fit_transform(X), Rescale().transform(X[:, None, :]).reshape(4, -1)
    )
    assert pickle.loads(pickle.dumps(view)).get_params() == view.get_params()
    with pytest.raises(ValueError, match="X must have shape"):
        Rescale().fit(X)


@pytest.mark.parametrize("estimator", [*_transformers(), ImageLoader()], ids=repr)
def test_real_tags(estimator):
    tags = estimator.__sklearn_tags__()
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.three_d_array is not isinstance(estimator, ImageLoader)
    assert tags.requires_fit is False
    assert tags.transformer_tags.preserves_dtype == ["float32"]
