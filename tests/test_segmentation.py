"""The lung segmenter shipped with skxray: loading, shapes, phantoms, bad weights files.

How well it segments real X-rays is measured by the benchmarks
(``benchmarks/train_lung_segmenter.py --cv`` and ``lung_segmenter_eval.py``),
not here: a phantom only proves that the code runs and the network sees lungs.
"""

import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from skxray import make_phantom_cxr, segmentation
from skxray.explain import central_lung_mask
from skxray.preprocessing import LungCrop, LungFieldMask
from skxray.segmentation import (
    LAYOUT_SCORE_CAP,
    LungWeightsError,
    file_sha256,
    load_lung_segmenter,
    lung_layout,
    lung_masks,
    packaged_weights_path,
    region_description,
    segment_lungs,
)


def _phantom_lungs(n_samples, image_size, random_state):
    """Phantoms of make_phantom_cxr and their own lung ellipses (the same draws)."""
    X, _, lungs = make_phantom_cxr(n_samples, image_size=image_size, random_state=random_state, return_lungs=True)
    return X, lungs


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantoms():
    return _phantom_lungs(8, 64, random_state=0)


def test_weights_load_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the lung segmenter tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    path = packaged_weights_path()
    net = load_lung_segmenter(path)  # read from the file, not the cache
    assert not net.training
    assert sum(p.numel() for p in net.parameters()) < 1_000_000
    assert path.stat().st_size < 4 * 2**20  # a few MB at most, inside the package
    X, _ = make_phantom_cxr(2, image_size=32, random_state=0)
    assert segment_lungs(X, weights=path).any()


@pytest.mark.parametrize("shape", [(2, 40, 56), (1, 64, 64), (2, 3, 48, 32), (1, 1, 17, 23)])
def test_masks_have_the_input_shape(shape):
    X = np.random.default_rng(0).random(shape).astype(np.float32)
    masks = segment_lungs(X)
    assert masks.dtype == bool
    assert masks.shape == (shape[0], *shape[-2:])
    out = LungFieldMask(fill=-1.0).fit_transform(X)
    assert out.shape == X.shape
    keep = masks if X.ndim == 3 else masks[:, None]
    np.testing.assert_array_equal(out[np.broadcast_to(keep, X.shape)], X[np.broadcast_to(keep, X.shape)])
    assert np.all(out[~np.broadcast_to(keep, X.shape)] == -1.0)
    assert LungCrop().fit_transform(X).shape == X.shape


def test_paths_give_the_same_masks_as_arrays(tmp_path, phantoms):
    X = phantoms[0][:3]
    paths = []
    for i, img in enumerate(X):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    from_arrays = segment_lungs(np.round(X * 255) / 255)
    from_paths = segment_lungs(paths)
    assert from_paths.shape == X.shape
    assert np.mean(from_paths == from_arrays) > 0.99


def test_a_phantoms_lungs_are_found(phantoms):
    X, truth = phantoms
    masks = segment_lungs(X)
    dice = [_dice(m, t) for m, t in zip(masks, truth)]
    assert min(dice) >= 0.9, dice
    # ... far from the whole image, and the same lungs at another value range.
    assert 0.15 < masks.mean() < 0.6
    assert np.mean(segment_lungs(X * 200 + 10) == masks) > 0.99


def test_the_ellipse_prior_stays_available(phantoms):
    X = phantoms[0]
    np.testing.assert_array_equal(lung_masks(X, "ellipse")[3], central_lung_mask(64, 64))
    out = LungFieldMask(region="ellipse", output="mask").fit_transform(X)
    np.testing.assert_array_equal(out[0], central_lung_mask(64, 64))
    assert "ellipse" in region_description("ellipse")
    assert "segmenter" in region_description("segmenter")
    with pytest.raises(ValueError, match="region must be one of"):
        lung_masks(X, "hull")


def test_lung_crop_zooms_on_the_lungs(phantoms):
    X, truth = phantoms
    out = LungCrop(margin=0.0).fit_transform(X)
    # The lungs fill more of the cropped image than of the original.
    lungs_after = segment_lungs(out).mean()
    assert lungs_after > truth.mean() + 0.1


def _corrupt(tmp_path, how):
    src = packaged_weights_path()
    path = tmp_path / f"{how}.safetensors"
    data = src.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a safetensors file at all" * 10)
    elif how == "flipped":
        # Damage the JSON header's length: the file no longer parses.
        path.write_bytes(b"\xff" * 8 + data[8:])
    elif how == "other_network":
        import torch
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(3, 3)}, str(path))
    elif how == "nan":
        from safetensors.torch import load_file, save_file

        state = load_file(str(src))
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key] * float("nan")
        save_file(state, str(path))
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage", "flipped", "other_network", "nan"])
def test_a_corrupted_weights_file_is_refused(tmp_path, how):
    path = _corrupt(tmp_path, how)
    with pytest.raises(LungWeightsError, match=str(path.name)):
        load_lung_segmenter(path)
    with pytest.raises(LungWeightsError, match="Lung segmenter weights file"):
        segment_lungs(np.zeros((1, 32, 32), dtype=np.float32), weights=path)


def test_the_packaged_file_matches_its_recorded_hash():
    assert file_sha256(packaged_weights_path()) == segmentation.PACKAGED_SHA256


def test_a_packaged_file_damaged_in_place_is_refused(tmp_path, monkeypatch):
    # One byte changed in the tensor data: the file still parses, the hash does not match.
    data = bytearray(packaged_weights_path().read_bytes())
    data[-100] ^= 0xFF
    damaged = tmp_path / "lung_segmenter.safetensors"
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(segmentation, "packaged_weights_path", lambda: damaged)
    monkeypatch.setattr(segmentation, "_CACHE", {})
    with pytest.raises(LungWeightsError, match="lung_segmenter.safetensors.*does not match the sha256"):
        segment_lungs(np.zeros((1, 32, 32), dtype=np.float32))
    load_lung_segmenter(damaged)  # an explicit file is the caller's: parsed, not hashed


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(LungWeightsError, match="missing.safetensors"):
        load_lung_segmenter(tmp_path / "missing.safetensors")


def test_a_copy_of_the_weights_loads_and_agrees(tmp_path, phantoms):
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(packaged_weights_path(), copy)
    assert file_sha256(copy) == file_sha256(packaged_weights_path())
    np.testing.assert_array_equal(segment_lungs(phantoms[0], weights=copy), segment_lungs(phantoms[0]))


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.1, True, "0.5"])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be a float in"):
        segment_lungs(np.zeros((1, 8, 8)), threshold=threshold)


# ------------------------------------------------------------ lung layout (issue 25)
def _two_lungs(share=0.3, ratio=1.0, upright=True, size=64):
    """A mask of two rectangles side by side (or one above the other), of a given total share and area ratio."""
    mask = np.zeros((size, size), dtype=bool)
    total = share * size * size
    small = total / (1 + ratio)
    big = total - small
    h = size // 2
    for area, lo in ((big, 2), (small, size // 2 + 2)):
        w = max(1, int(round(area / h)))
        if upright:
            mask[size // 4 : size // 4 + h, lo : lo + w] = True
        else:
            mask[lo : lo + w, size // 4 : size // 4 + h] = True
    return mask


def test_lung_layout_passes_two_lungs_side_by_side():
    layout = lung_layout(masks=np.stack([_two_lungs(), _two_lungs(share=0.12, ratio=2.5)]))
    assert layout.passes.all() and (layout.n_parts == 2).all() and layout.side_by_side.all()
    np.testing.assert_allclose(layout.lung_share, [0.3, 0.12], atol=0.01)
    assert (layout.score < 1).all()


@pytest.mark.parametrize(
    "mask, term",
    [
        (_two_lungs(upright=False), "one above the other"),
        (_two_lungs(share=0.05), "too small a share"),
        (_two_lungs(share=0.85), "too large a share"),
        (_two_lungs(ratio=5.0), "one lung 5 times the other"),
    ],
)
def test_lung_layout_fails_what_is_not_two_lungs_side_by_side(mask, term):
    layout = lung_layout(masks=mask[None])
    assert not layout.passes[0] and layout.score[0] > 1, term


def test_lung_layout_without_two_parts_scores_the_cap():
    one = np.zeros((1, 64, 64), dtype=bool)
    one[0, 10:40, 10:30] = True
    for masks in (one, np.zeros((1, 64, 64), dtype=bool)):
        layout = lung_layout(masks=masks)
        assert layout.score[0] == LAYOUT_SCORE_CAP and not layout.passes[0]


def test_lung_layout_of_phantoms_from_their_images(phantoms):
    X, _ = phantoms
    layout = lung_layout(X)
    assert layout.passes.all()
    np.testing.assert_array_equal(layout.score, lung_layout(masks=segment_lungs(X)).score)


def test_lung_ambiguity_counts_the_pixels_the_segmenter_is_unsure_of(monkeypatch):
    lungs = _two_lungs().astype(np.float32)
    maps = np.stack([
        lungs,  # certain: 0 or 1 everywhere
        np.where(lungs > 0, 0.95, 0.5),  # certain lungs, the rest of the image unsure
        np.full_like(lungs, 0.05),  # no lung at all
    ])
    monkeypatch.setattr(segmentation, "lung_probabilities", lambda X, **kw: maps)
    layout = lung_layout(np.zeros((3, 64, 64), dtype=np.float32))
    unsure_outside = (lungs == 0).sum() / lungs.sum()
    np.testing.assert_allclose(layout.ambiguity, [0.0, unsure_outside, np.inf])
    assert layout.passes[0] and layout.score[2] == LAYOUT_SCORE_CAP
    # The rule does not read it: the first two images have the same layout.
    assert layout.score[0] == layout.score[1]
    # Masks alone carry no probabilities.
    assert np.isnan(lung_layout(masks=lungs[None] > 0).ambiguity).all()


def test_lung_layout_arguments_are_checked():
    with pytest.raises(ValueError, match="either X"):
        lung_layout()
    with pytest.raises(ValueError, match="either X"):
        lung_layout(np.zeros((1, 8, 8)), masks=np.zeros((1, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="masks must be a boolean"):
        lung_layout(masks=np.zeros((1, 8, 8)))


def test_loading_the_segmenter_leaves_the_global_torch_rng_alone(monkeypatch, phantoms):
    import torch

    monkeypatch.setattr(segmentation, "_CACHE", {})
    before = torch.get_rng_state().clone()
    lung_layout(phantoms[0][:2])
    assert torch.equal(torch.get_rng_state(), before)
