"""Tests of skxray.explain: Grad-CAM, saliency, plots and heatmap statistics."""

import copy
import doctest
import io

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.exceptions import NotFittedError
from torch import nn

import skxray.explain
from skxray.datasets import make_phantom_cxr
from skxray.explain import (
    central_lung_mask,
    gradcam,
    heatmap_mass_in_region,
    plot_gradcam,
    saliency,
)
from skxray.io import read_image
from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier

matplotlib.use("Agg")

THREE = ("Covid-19", "Normal", "Pneumonia")
# ResNet-50 divides by 32: at 48 px its last block is 2x2, so its heatmaps
# can show a place (at 32 px they would be 1x1, hence all zeros).
SIZES = {"cnn": 32, "resnet": 48, "fnn": 32}


def _make(kind):
    if kind == "cnn":
        return CNNClassifier(filters=(4, 8), dense_units=8, max_epochs=2, random_state=0)
    if kind == "resnet":
        return ResNet50Classifier(weights=None, head_units=16, max_epochs=2, random_state=0)
    return FNNClassifier(hidden_layer_sizes=(16,), max_epochs=2, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    """fitted(kind, n_classes) -> (classifier, X, y), each fitted once per module."""
    cache = {}

    def get(kind, n_classes=2):
        key = (kind, n_classes)
        if key not in cache:
            classes = THREE if n_classes == 3 else THREE[:2]
            n = 12 if kind == "resnet" else 30
            X, y = make_phantom_cxr(n, classes=classes, image_size=SIZES[kind], random_state=0)
            cache[key] = (_make(kind).fit(X, y), X, y)
        return cache[key]

    return get


def _module_state(module):
    return {
        "weights": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "training": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in module.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in module.modules()
        ],
    }


def _assert_same_state(before, after):
    assert before["weights"].keys() == after["weights"].keys()
    for key, value in before["weights"].items():
        assert torch.equal(value, after["weights"][key]), key
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    for g0, g1 in zip(before["grad"], after["grad"], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    assert before["hooks"] == after["hooks"]


# ------------------------------------------------------------------ gradcam


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("use_label", [False, True])
def test_gradcam_shape_dtype_range(fitted, kind, n_classes, use_label):
    clf, X, _ = fitted(kind, n_classes)
    target = clf.classes_[-1] if use_label else None
    heatmaps = gradcam(clf, X[:3], target=target)
    size = SIZES[kind]
    assert heatmaps.shape == (3, size, size)
    assert heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_gradcam_none_is_predicted_class(fitted, kind, n_classes):
    clf, X, _ = fitted(kind, n_classes)
    X = X[:3]
    pred = clf.predict(X)
    auto = gradcam(clf, X)
    for i, label in enumerate(pred):
        np.testing.assert_allclose(gradcam(clf, X[i : i + 1], target=label)[0], auto[i], atol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_gradcam_target_selects_class(fitted, n_classes):
    clf, X, _ = fitted("cnn", n_classes)
    maps = [gradcam(clf, X[:4], target=label) for label in clf.classes_]
    for a in range(len(maps)):
        for b in range(a + 1, len(maps)):
            assert not np.allclose(maps[a], maps[b], atol=1e-3)


class _TwoLogits(nn.Module):
    """A one-logit model seen as two logits (-z, z), the form ClassifierOutputTarget reads."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        z = self.module(x)
        return torch.cat([-z, z], dim=1)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("target_index", [None, 0, 1])
def test_gradcam_matches_direct_package_use(fitted, n_classes, target_index):
    # The reference: pytorch_grad_cam used as its README shows, on a copy.
    clf, X, _ = fitted("cnn", n_classes)
    X = X[:6]
    model = copy.deepcopy(clf.module_).eval()
    layer = model.gradcam_layer
    if n_classes == 2:
        model = _TwoLogits(model)
    targets = None if target_index is None else [ClassifierOutputTarget(target_index)] * len(X)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        expected = cam(input_tensor=torch.from_numpy(X[:, None]), targets=targets)
    target = None if target_index is None else clf.classes_[target_index]
    np.testing.assert_allclose(gradcam(clf, X, target=target), expected, atol=1e-5)


def test_hirescam_equals_gradcam_after_global_pooling(fitted):
    # The ResNet-50 pools globally, so each channel's gradient is the same at
    # every place and the two methods must agree.
    clf, X, _ = fitted("resnet", 3)
    np.testing.assert_allclose(
        gradcam(clf, X[:3], method="hirescam"), gradcam(clf, X[:3]), atol=1e-4
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"])
def test_gradcam_methods(fitted, method):
    clf, X, _ = fitted("cnn", 2)
    heatmaps = gradcam(clf, X[:3], method=method)
    assert heatmaps.shape == (3, 32, 32) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def test_gradcam_input_formats_and_batching(fitted, tmp_path):
    clf, X, _ = fitted("cnn", 2)
    X = X[:5]
    reference = gradcam(clf, X)
    np.testing.assert_allclose(gradcam(clf, X[:, None]), reference, atol=1e-6)
    np.testing.assert_allclose(gradcam(clf, X, batch_size=2), reference, atol=1e-5)
    np.testing.assert_allclose(gradcam(clf, list(X)), reference, atol=1e-6)
    paths = []
    for i, img in enumerate(X):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    from_files = np.stack([read_image(p) for p in paths]).astype(np.float32)
    np.testing.assert_allclose(gradcam(clf, paths), gradcam(clf, from_files), atol=1e-5)


def test_gradcam_wrong_image_shape(fitted):
    clf, _, _ = fitted("cnn", 2)
    with pytest.raises(ValueError, match="fitted on images"):
        gradcam(clf, np.zeros((2, 20, 20), dtype=np.float32))


@pytest.mark.parametrize("target", ["Pneumonia", 1, "covid-19", None])
@pytest.mark.parametrize("func", [gradcam, saliency])
def test_bad_target(fitted, func, target):
    clf, X, _ = fitted("cnn", 2)
    if target is None:  # an array of labels is not one label
        target = np.array(["Normal", "Normal"], dtype=object)
    with pytest.raises(ValueError, match=r"target must be None .*'Covid-19', 'Normal'"):
        func(clf, X[:2], target=target)


def test_bad_method_and_batch_size(fitted):
    clf, X, _ = fitted("cnn", 2)
    with pytest.raises(ValueError, match=r"method must be one of .*'gradcam\+\+'.*'scorecam'"):
        gradcam(clf, X[:2], method="scorecam")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            gradcam(clf, X[:2], batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            saliency(clf, X[:2], batch_size=bad)


def test_fnn_has_no_gradcam(fitted):
    clf, X, _ = fitted("fnn", 2)
    with pytest.raises(TypeError, match=r"Grad-CAM needs convolutional layers.*saliency\(\)"):
        gradcam(clf, X[:2])
    with pytest.raises(TypeError, match=r"saliency\(\)"):
        plot_gradcam(clf, X[:2])


@pytest.mark.parametrize("func", [gradcam, saliency, plot_gradcam])
def test_unfitted_and_non_estimator(func):
    X = np.zeros((2, 32, 32), dtype=np.float32)
    with pytest.raises(NotFittedError):
        func(CNNClassifier(), X)
    with pytest.raises(TypeError, match="estimator must be a skxray classifier"):
        func(object(), X)


@pytest.mark.parametrize("kind", ["cnn", "resnet", "fnn"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_model_state_rng_and_hooks_restored(fitted, kind, train_mode):
    clf, X, _ = fitted(kind, 2)
    module = clf.module_
    module.train(train_mode)
    # A leftover .grad must survive (explaining must not zero or add to it).
    first = next(p for p in module.parameters() if p.requires_grad)
    first.grad = torch.full_like(first, 0.5)
    before = _module_state(module)
    rng = torch.get_rng_state()
    try:
        if kind != "fnn":
            gradcam(clf, X[:3])
            gradcam(clf, X[:3], target=clf.classes_[0], method="gradcam++")
        saliency(clf, X[:3])
        after = _module_state(module)
        assert torch.equal(rng, torch.get_rng_state())
    finally:
        first.grad = None
        module.eval()
    _assert_same_state(before, after)
    if kind != "fnn":
        layer = module.gradcam_layer
        assert not layer._forward_hooks and not layer._backward_hooks
        assert not layer._forward_pre_hooks


def test_hooks_released_after_error(fitted, tmp_path):
    clf, _, _ = fitted("cnn", 2)
    module = clf.module_
    module.train()
    before = _module_state(module)
    try:
        with pytest.raises((OSError, ValueError)):
            gradcam(clf, [str(tmp_path / "missing.png")])
        after = _module_state(module)
    finally:
        module.eval()
    _assert_same_state(before, after)
    assert not module.gradcam_layer._forward_hooks


# ------------------------------------------------------------------ saliency


@pytest.mark.parametrize("kind", ["cnn", "resnet", "fnn"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_saliency_all_models(fitted, kind, n_classes):
    clf, X, _ = fitted(kind, n_classes)
    for target in (None, clf.classes_[0]):
        maps = saliency(clf, X[:4], target=target)
        size = SIZES[kind]
        assert maps.shape == (4, size, size) and maps.dtype == np.float32
        assert maps.min() >= 0.0
        np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, rtol=1e-6)


def test_saliency_binary_targets_share_the_gradient(fitted):
    # |d(-z)/dx| == |dz/dx|: both classes of a one-logit model give one map.
    clf, X, _ = fitted("fnn", 2)
    a = saliency(clf, X[:3], target=clf.classes_[0])
    b = saliency(clf, X[:3], target=clf.classes_[1])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_saliency_matches_fnn_weights_without_hidden_layers():
    # Without hidden layers the binary score is w . x + b: its input
    # gradient is the weight vector itself, a closed-form answer.
    rng = np.random.default_rng(0)
    X = rng.random((20, 6, 8), dtype=np.float32)
    y = np.array(["a", "b"] * 10)
    clf = FNNClassifier(hidden_layer_sizes=(), max_epochs=1, random_state=0).fit(X, y)
    weights = np.abs(clf.module_.output.weight.detach().numpy().reshape(6, 8))
    np.testing.assert_allclose(saliency(clf, X[:2])[1], weights / weights.max(), rtol=1e-5)


# ------------------------------------------------------------------ known answer

H, W = 32, 40
BLOB = (8, 30)  # row, column: upper right, so a transposed or flipped map fails


def _blob_phantoms(n, seed):
    """Noise images; class "A" has a bright blob at BLOB, class "B" has none."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.5, 0.15, (n, H, W)).astype(np.float32)
    y = np.array(["A", "B"] * (n // 2), dtype=object)
    rows, cols = np.mgrid[:H, :W]
    blob = np.exp(-((rows - BLOB[0]) ** 2 + (cols - BLOB[1]) ** 2) / (2 * 2.0**2))
    X[y == "A"] += blob.astype(np.float32)
    return np.clip(X, 0, 1), y


@pytest.fixture(scope="module")
def blob_model():
    X, y = _blob_phantoms(80, seed=0)
    clf = CNNClassifier(
        filters=(8, 16),
        dense_units=16,
        batch_size=16,
        max_epochs=20,
        lr=3e-3,
        validation_fraction=None,
        random_state=0,
    ).fit(X, y)
    X_test, y_test = _blob_phantoms(24, seed=1000)
    return clf, X_test, y_test


@pytest.mark.parametrize(
    "method, min_share, check_other_class",
    [
        ("gradcam", 0.5, True),
        ("hirescam", 0.5, True),
        ("layercam", 0.5, True),
        # Grad-CAM++ is more diffuse here (0.34-0.53 over five seeds), and
        # its map of "B" lands near the blob as well, so only a lower bound.
        ("gradcam++", 0.29, False),
    ],
)
def test_known_answer_heatmap_at_blob(blob_model, method, min_share, check_other_class):
    clf, X_test, y_test = blob_model
    assert (clf.predict(X_test) == y_test).mean() >= 0.95  # the model did learn the blob
    rows, cols = np.mgrid[:H, :W]
    disc = (rows - BLOB[0]) ** 2 + (cols - BLOB[1]) ** 2 <= 7**2
    area_share = disc.mean()  # what a uniform heatmap would score: 0.12
    is_a = y_test == "A"
    # An all-zero map points nowhere: count it as no mass at the blob.
    share = np.nan_to_num(heatmap_mass_in_region(gradcam(clf, X_test[is_a], "A", method=method), disc))
    assert share.mean() > min_share
    assert share.mean() > 2.5 * area_share
    if check_other_class:
        # The map of "B" (the negated logit) must look elsewhere.
        maps_b = gradcam(clf, X_test[is_a], "B", method=method)
        share_b = np.nan_to_num(heatmap_mass_in_region(maps_b, disc))
        assert share_b.mean() < 0.5 * share.mean()


def test_known_answer_saliency_at_blob(blob_model):
    clf, X_test, y_test = blob_model
    rows, cols = np.mgrid[:H, :W]
    disc = (rows - BLOB[0]) ** 2 + (cols - BLOB[1]) ** 2 <= 7**2
    share = heatmap_mass_in_region(saliency(clf, X_test[y_test == "A"], "A"), disc)
    assert share.mean() > 2 * disc.mean()


# ------------------------------------------------------------------ plot


def test_plot_gradcam_grid_and_titles(fitted):
    clf, X, y = fitted("cnn", 2)
    rng = torch.get_rng_state()
    fig = plot_gradcam(clf, X[:5], y=y[:5])
    assert torch.equal(rng, torch.get_rng_state())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    proba = clf.predict_proba(X[:5])
    pred = clf.predict(X[:5])
    for axis, label, p, truth in zip(fig.axes, pred, proba.max(axis=1), y[:5]):
        assert axis.get_title() == f"pred: {label} (p={p:.2f})\ntrue: {truth}"
        assert len(axis.get_images()) == 2  # image and heatmap
    fig.savefig(io.BytesIO(), format="png")


def test_plot_gradcam_n_target_and_rgb():
    X, y = make_phantom_cxr(12, classes=THREE, image_size=32, random_state=0)
    X = np.repeat(X[:, None], 3, axis=1)
    clf = CNNClassifier(filters=(4,), dense_units=8, max_epochs=1, random_state=0).fit(X, y)
    fig = plot_gradcam(clf, X, target="Normal", n=3)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title().startswith("pred: ")
    assert "true" not in fig.axes[0].get_title()
    assert fig.axes[0].get_images()[0].get_array().shape == (32, 32, 3)
    fig = plot_gradcam(clf, X[:2], n=10)  # n larger than X: every image
    assert len(fig.axes) == 2


def test_plot_gradcam_into_given_axes(fitted):
    clf, X, _ = fitted("cnn", 2)
    fig = Figure()
    axes = fig.subplots(2, 2)
    assert plot_gradcam(clf, X[:4], ax=axes) is fig
    assert all(len(a.get_images()) == 2 for a in axes.ravel())
    with pytest.raises(ValueError, match="ax has 4 axes but 5 images"):
        plot_gradcam(clf, X[:5], ax=axes)
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        plot_gradcam(clf, X[:1], ax="left")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be None or an int >= 1"),
        ({"alpha": 1.5}, r"alpha must be a float in \[0, 1\]"),
        ({"cmap": "no-such-map"}, "cmap 'no-such-map' is not a matplotlib colormap"),
        ({"y": ["Normal"]}, "y must have one label per image; got 1 labels for 3 images"),
        ({"target": "Pneumonia"}, "target must be None"),
    ],
)
def test_plot_gradcam_bad_parameters(fitted, kwargs, match):
    clf, X, _ = fitted("cnn", 2)
    with pytest.raises(ValueError, match=match):
        plot_gradcam(clf, X[:3], **kwargs)


# ------------------------------------------------------------------ heatmap statistics


def test_heatmap_mass_in_region_hand_made():
    heatmaps = np.zeros((4, 4, 6))
    heatmaps[0, :2, :3] = 2.0  # all in the region
    heatmaps[1] = 1.0  # uniform: the region's area share
    heatmaps[2, 3, 5] = 1.0  # all outside
    heatmaps[3, 0, 0], heatmaps[3, 3, 5] = 3.0, 1.0  # 3/4 inside
    mask = np.zeros((4, 6), dtype=bool)
    mask[:2, :3] = True
    share = heatmap_mass_in_region(heatmaps, mask)
    assert share.dtype == np.float64
    np.testing.assert_allclose(share, [1.0, 0.25, 0.0, 0.75])
    np.testing.assert_allclose(heatmap_mass_in_region(heatmaps[3], mask.astype(int)), [0.75])
    per_image = np.stack([mask, ~mask, mask, ~mask])
    np.testing.assert_allclose(heatmap_mass_in_region(heatmaps, per_image), [1.0, 0.75, 0.0, 0.25])


def test_heatmap_mass_in_region_zero_heatmap_is_nan():
    share = heatmap_mass_in_region(np.zeros((2, 3, 3)), np.eye(3, dtype=bool))
    assert np.isnan(share).all()


@pytest.mark.parametrize(
    "heatmaps, mask, match",
    [
        (np.ones((2, 3, 3)), np.ones((3, 4), dtype=bool), r"mask must have shape \(3, 3\)"),
        (-np.ones((1, 3, 3)), np.ones((3, 3), dtype=bool), "heatmaps must be non-negative"),
        (np.full((1, 3, 3), np.nan), np.ones((3, 3), dtype=bool), "heatmaps must be finite"),
        (np.ones(3), np.ones(3, dtype=bool), "heatmaps must have shape"),
        (np.ones((1, 3, 3)), np.full((3, 3), 0.5), "mask must be boolean"),
    ],
)
def test_heatmap_mass_in_region_errors(heatmaps, mask, match):
    with pytest.raises(ValueError, match=match):
        heatmap_mass_in_region(heatmaps, mask)


@pytest.mark.parametrize("height, width", [(32, 32), (48, 40), (224, 224)])
def test_central_lung_mask(height, width):
    mask = central_lung_mask(height, width)
    assert mask.shape == (height, width) and mask.dtype == bool
    # Borders and corners (markers, burnt-in text) are outside.
    assert not mask[0].any() and not mask[-1].any()
    assert not mask[:, 0].any() and not mask[:, -1].any()
    corner_h, corner_w = height // 5, width // 5
    for corner in (
        mask[:corner_h, :corner_w],
        mask[:corner_h, -corner_w:],
        mask[-corner_h:, :corner_w],
        mask[-corner_h:, -corner_w:],
    ):
        assert not corner.any()
    # Two lung fields, mirror images, the midline (mediastinum) between them.
    np.testing.assert_array_equal(mask, mask[:, ::-1])
    assert not mask[:, width // 2].any()
    assert mask[height // 2, int(width * 0.3)] and mask[height // 2, int(width * 0.7)]
    assert 0.2 < mask.mean() < 0.4
    rows, cols = np.nonzero(mask)
    assert 0.55 < (cols.max() - cols.min() + 1) / width < 0.75
    assert 0.6 < (rows.max() - rows.min() + 1) / height < 0.75


def test_central_lung_mask_covers_phantom_lungs():
    # The phantom's lungs are its darkest large region inside the body.
    X, _ = make_phantom_cxr(10, image_size=64, noise=0.0, random_state=0)
    mask = central_lung_mask(64, 64)
    body = X.mean(axis=0) > 0.2
    assert X[:, mask].mean() < X[:, body & ~mask].mean() - 0.1


@pytest.mark.parametrize("height, width", [(0, 5), (5, -1), (2.5, 4), (True, 4)])
def test_central_lung_mask_bad_size(height, width):
    with pytest.raises(ValueError, match="(height|width) must be an int >= 1"):
        central_lung_mask(height, width)


def test_docstring_examples():
    result = doctest.testmod(skxray.explain, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_gradcam_display_draws_again_without_the_model(fitted, monkeypatch):
    from skxray.explain import GradCAMDisplay

    clf, X, y = fitted("cnn", 2)
    disp = GradCAMDisplay.from_estimator(clf, X[:3], y=y[:3])
    assert disp.heatmaps.shape[0] == 3 and len(disp.titles) == 3
    monkeypatch.setattr(skxray.explain, "_gradcam_with_logits",
                        lambda *a, **k: pytest.fail("recomputed"))
    fig = Figure()
    axes = fig.subplots(2, 2)
    assert disp.plot(ax=axes, alpha=0.5).figure_ is fig
    assert [a.get_title() for a in axes.ravel()[:3]] == disp.titles
    assert len(axes[1, 1].get_images()) == 0 and disp.ax_ is axes[0, 0]
