"""Lung fields of frontal chest X-rays: a small segmentation network shipped with skxray.

:func:`segment_lungs` returns a boolean lung mask for each image (arrays or
file paths); :class:`skxray.preprocessing.LungFieldMask` (``output="mask"``
or ``"masked"``) is the same as a stateless scikit-learn transformer, and
:class:`skxray.preprocessing.LungCrop` crops each image to its lungs.

The network is a U-Net of about 0.45 M weights that reads the images at
64 x 64 pixels; its weights ship inside the package
(``skxray/_weights/lung_segmenter.safetensors``, about 1.8 MB) and load
without network access. ``benchmarks/train_lung_segmenter.py`` trains it from
the ``lungmasks`` folder of the shared data (350 X-rays of 216 patients of the
COVID-19 image data collection with V7 Labs' lung outlines) and 120
synthetic phantoms; the docs page "Lung segmentation" is its model card: what
it was trained on, how well it does, what it was not checked on, and the
licences (the weights are for research use: many of the training images are
licensed non-commercial).

The fixed two-ellipse prior :func:`skxray.explain.central_lung_mask` stays
available as the fallback region (``region="ellipse"`` wherever a region is
chosen).
"""

import hashlib
import os
import threading
from dataclasses import dataclass
from importlib import resources
from numbers import Real

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from skxray._geometry import central_lung_mask
from skxray._validation import check_image_array, is_path_array, to_nchw

__all__ = [
    "AMBIGUOUS_PROBABILITY",
    "LUNG_LAYOUT_RULE",
    "LungLayout",
    "LungWeightsError",
    "REGIONS",
    "lung_layout",
    "lung_masks",
    "load_lung_segmenter",
    "region_description",
    "segment_lungs",
]

#: Side of the square images the network reads, in pixels.
INPUT_SIZE = 64
#: Channels of the U-Net's levels, from the finest to the bottleneck.
CHANNELS = (8, 16, 32, 64, 128)
#: The packaged weights: file name inside ``skxray/_weights``.
WEIGHTS_NAME = "lung_segmenter.safetensors"
#: sha256 of the packaged weights file, checked when it loads: a file damaged
#: in place (even one whose tensors still parse) is refused. Retraining with
#: ``benchmarks/train_lung_segmenter.py`` prints the new value to put here.
PACKAGED_SHA256 = "b1d3f251a1cd147634fd05644e0f884e5bf49fc8c1afd370544b9e164ffc694f"
#: Names accepted wherever a lung region is chosen.
REGIONS = ("segmenter", "ellipse")
#: What the lungs of an upright frontal chest X-ray look like to the
#: segmenter (:func:`lung_layout`): at least two parts, a lung share of the
#: image between 10 % and 70 %, the larger of the two largest parts at most
#: 3 times the smaller, and those two side by side (their centroids further
#: apart across the image than down it). Fixed before it was first measured
#: (``benchmarks/gross_errors_segmenter.py``), not tuned.
LUNG_LAYOUT_RULE = {"min_parts": 2, "lung_share": (0.10, 0.70), "largest_to_second_max": 3.0}
#: :attr:`LungLayout.score` of an image with fewer than two lung parts, or
#: whose two parts lie exactly one above the other: the cap of every term.
LAYOUT_SCORE_CAP = 10.0
#: Lung probabilities in this open interval count as ambiguous in
#: :attr:`LungLayout.ambiguity`: the pixels the segmenter cannot call lung or
#: not lung. Fixed before it was first measured, not tuned.
AMBIGUOUS_PROBABILITY = (0.1, 0.9)

_DESCRIPTIONS = {
    "segmenter": "lungs found by skxray's lung segmenter (skxray.segmentation)",
    "ellipse": "the fixed two-ellipse lung prior (skxray.explain.central_lung_mask, fallback)",
}


class LungWeightsError(ValueError):
    """The lung segmenter's weights file is missing, damaged or of another network."""


def _block(n_in, n_out):
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(n_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(n_out, n_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(n_out),
        nn.ReLU(inplace=True),
    )


class LungUNet(nn.Module):
    """A small U-Net: one grayscale channel in, one lung logit per pixel out.

    Parameters
    ----------
    channels : tuple of int, default=CHANNELS
        Channels of each level, finest first; each level halves the size, so
        the input's sides must be divisible by ``2 ** (len(channels) - 1)``.
    """

    def __init__(self, channels=CHANNELS):
        super().__init__()
        self.encoders = nn.ModuleList()
        n_in = 1
        for n_out in channels:
            self.encoders.append(_block(n_in, n_out))
            n_in = n_out
        self.reducers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n_out in reversed(channels[:-1]):
            self.reducers.append(nn.Conv2d(n_in, n_out, 1))
            self.decoders.append(_block(2 * n_out, n_out))
            n_in = n_out
        self.head = nn.Conv2d(n_in, 1, 1)

    def forward(self, x):
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        for reducer, decoder, skip in zip(self.reducers, self.decoders, reversed(skips[:-1])):
            x = F.interpolate(reducer(x), scale_factor=2, mode="nearest")
            x = decoder(torch.cat([x, skip], dim=1))
        return self.head(x)


def standardize(x):
    """Per-image zero mean and unit variance of a ``(n, 1, h, w)`` tensor.

    The network sees contrast, not the absolute grey levels, so images
    scaled to [0, 1], [0, 255] or normalised by
    :class:`~skxray.preprocessing.XRayNormalize` give the same masks.
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + 1e-6)


def packaged_weights_path():
    """Path of the weights file that ships inside the package."""
    return resources.files("skxray").joinpath("_weights", WEIGHTS_NAME)


_CACHE = {}
_CACHE_LOCK = threading.Lock()


def load_lung_segmenter(path=None):
    """Load the lung segmentation network, in eval mode, from a safetensors file.

    Reads only the local file: nothing is downloaded.

    Parameters
    ----------
    path : str or os.PathLike, default=None
        A weights file written by ``benchmarks/train_lung_segmenter.py``;
        None loads the one shipped in the package (once per process: later
        calls return the cached network).

    Returns
    -------
    net : LungUNet
        The network, in eval mode, on the CPU.

    Raises
    ------
    LungWeightsError
        If the file is missing, is not a readable safetensors file, or holds
        the tensors of another network; the message names the file.
    """
    key = None if path is None else os.fspath(path)
    with _CACHE_LOCK:
        if key is None and key in _CACHE:
            return _CACHE[key]
        if key is None:
            net = _read_weights(packaged_weights_path(), PACKAGED_SHA256)
        else:
            net = _read_weights(key)
        if key is None:
            _CACHE[key] = net
        return net


def _read_weights(path, expected_sha256=None):
    from safetensors import SafetensorError
    from safetensors.torch import load

    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LungWeightsError(f"Lung segmenter weights file {name!r} cannot be read: {exc}") from exc
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise LungWeightsError(
            f"Lung segmenter weights file {name!r} does not match the sha256 that skxray "
            "recorded for it (skxray.segmentation.PACKAGED_SHA256): the file is damaged or "
            "was replaced. Reinstall skxray, or pass the file you trained as weights=."
        )
    try:
        state = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise LungWeightsError(
            f"Lung segmenter weights file {name!r} is not a valid safetensors file "
            f"(damaged or truncated?): {exc}"
        ) from exc
    # The initial weights are overwritten at once: draw them from a forked
    # generator, so that loading the segmenter (now inside every classifier's
    # predict_with_abstention) leaves the user's global torch RNG alone.
    with torch.random.fork_rng(devices=[]):
        net = LungUNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LungWeightsError(
            f"Lung segmenter weights file {name!r} does not hold the weights of "
            f"skxray's lung U-Net: {exc}"
        ) from exc
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise LungWeightsError(f"Lung segmenter weights file {name!r} holds NaN or inf values.")
    return net.eval()


def file_sha256(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gray_batch(X):
    """Images as a float32 ``(n, 1, h, w)`` tensor (channels averaged)."""
    if is_path_array(X):
        from skxray.io import read_image

        images = [read_image(p) for p in X]
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise ValueError(
                "segment_lungs: the images at the given paths have different sizes "
                f"({sorted(shapes)[:3]}...); pass paths of one size or call it per image."
            )
        X = np.stack(images)
    X = to_nchw(check_image_array(X, name="X"))
    return torch.from_numpy(np.ascontiguousarray(X)).mean(dim=1, keepdim=True)


def lung_probabilities(X, *, weights=None, batch_size=64):
    """Per-pixel lung probability of each image, at the images' own size.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width), or sequence of paths
        The images (channels are averaged), or paths of images of one size.
    weights : str or os.PathLike, default=None
        Weights file; None uses the packaged one.
    batch_size : int, default=64
        Images per forward pass.

    Returns
    -------
    proba : ndarray of shape (n_samples, height, width)
        float32 in [0, 1].
    """
    x = _gray_batch(X)
    net = load_lung_segmenter(weights)
    h, w = x.shape[-2:]
    out = np.empty((x.shape[0], h, w), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            if (h, w) != (INPUT_SIZE, INPUT_SIZE):
                xb = F.interpolate(
                    xb, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True
                )
            logits = net(standardize(xb))
            if (h, w) != (INPUT_SIZE, INPUT_SIZE):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear")
            out[start : start + batch_size] = torch.sigmoid(logits)[:, 0].numpy()
    return out


def keep_two_largest(mask):
    """Keep the two largest 8-connected parts of a 2-D mask and fill their holes.

    A hole is a 4-connected part of the background that does not touch the
    image border (one labelling pass: much faster than iterated dilation).
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n > 2:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.argsort(sizes)[::-1][:2] + 1
        mask = np.isin(labels, keep)
    background, _ = ndimage.label(~mask)
    edge = np.unique(np.concatenate([background[0], background[-1], background[:, 0],
                                     background[:, -1]]))
    return mask | ((background > 0) & ~np.isin(background, edge))


def segment_lungs(X, *, threshold=0.5, clean=True, weights=None):
    """Lung masks of frontal chest X-rays, found by skxray's lung segmenter.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width), or sequence of paths
        The images (any size and value range; channels are averaged), or
        paths of image files of one size (:func:`skxray.io.read_image`).
    threshold : float, default=0.5
        Lung probability above which a pixel is lung, in (0, 1).
    clean : bool, default=True
        Keep the two largest connected parts of each mask (the two lungs)
        and fill their holes.
    weights : str or os.PathLike, default=None
        Weights file; None uses the one shipped in the package.

    Returns
    -------
    masks : ndarray of shape (n_samples, height, width)
        Boolean; True on lung. Same height and width as the images.

    Raises
    ------
    ValueError
        If ``X`` is not a valid image array or list of paths, or
        ``threshold`` is outside (0, 1).
    LungWeightsError
        If the weights file is missing or damaged (the message names it).

    See Also
    --------
    skxray.preprocessing.LungFieldMask : The same as a transformer.
    skxray.explain.central_lung_mask : The fixed ellipse prior (fallback).

    Notes
    -----
    The network reads the images at 64 x 64 pixels (stretched when they are
    not square) and its probabilities are resized back to the images' size.
    It was trained on frontal radiographs, mostly of COVID-19 patients; it
    was not checked on lateral views, children, CT, or images that are not
    chest X-rays, and always returns some mask.

    Examples
    --------
    >>> from skxray import make_phantom_cxr
    >>> from skxray.segmentation import segment_lungs
    >>> X, _ = make_phantom_cxr(n_samples=2, image_size=64, random_state=0)
    >>> segment_lungs(X).shape
    (2, 64, 64)
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold < 1:
        raise ValueError(f"segment_lungs: threshold must be a float in (0, 1); got {threshold!r}.")
    return _masks_from_proba(lung_probabilities(X, weights=weights), threshold, clean)


def _masks_from_proba(proba, threshold=0.5, clean=True):
    """Boolean masks from lung probabilities, as :func:`segment_lungs` returns them."""
    masks = proba > threshold
    if clean and len(masks):
        masks = np.stack([keep_two_largest(m) for m in masks])
    return masks


def lung_masks(X, region="segmenter"):
    """The lung masks of images for a named region: the segmenter's or the ellipse prior.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width)
        The images.
    region : {"segmenter", "ellipse"}, default="segmenter"
        ``"segmenter"``: :func:`segment_lungs`; ``"ellipse"``: the same
        fixed prior (:func:`skxray.explain.central_lung_mask`) for every image.

    Returns
    -------
    masks : ndarray of shape (n_samples, height, width)
        Boolean; True on lung.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {list(REGIONS)}; got {region!r}.")
    X = check_image_array(X, name="X")
    if X.ndim not in (3, 4):
        raise ValueError(f"X must be 3-D or 4-D images; got shape {X.shape}.")
    if region == "ellipse":
        mask = central_lung_mask(*X.shape[-2:])
        return np.broadcast_to(mask, (X.shape[0], *mask.shape)).copy()
    return segment_lungs(X)


def region_description(region):
    """One line naming a lung region, for reports and results."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {list(REGIONS)}; got {region!r}.")
    return _DESCRIPTIONS[region]


@dataclass(frozen=True)
class LungLayout:
    """What :func:`lung_layout` found in each image: the segmenter's lungs, measured against a fixed rule.

    Attributes
    ----------
    n_parts : ndarray of shape (n_samples,)
        Connected parts (8-connectivity) of the mask, at most 2 after the
        clean-up of :func:`segment_lungs`.
    lung_share : ndarray of shape (n_samples,)
        Share of the image that is lung.
    area_ratio : ndarray of shape (n_samples,)
        Area of the largest part over that of the second; ``inf`` with
        fewer than two parts.
    side_by_side : ndarray of shape (n_samples,)
        Whether the two largest parts lie side by side: their centroids
        further apart across the image than down it.
    score : ndarray of shape (n_samples,)
        How far the layout lies outside :data:`LUNG_LAYOUT_RULE`, 1 at its
        edge: the largest of ``0.10 / lung_share``, ``lung_share / 0.70``,
        ``area_ratio / 3`` and the centroids' distance down the image over
        their distance across it, each capped at :data:`LAYOUT_SCORE_CAP`
        (also the score of an image with fewer than two parts).
    ambiguity : ndarray of shape (n_samples,)
        How unsure the segmenter is of the lungs it found: the pixels whose
        lung probability lies in :data:`AMBIGUOUS_PROBABILITY` over the
        pixels of the mask (``inf`` for an empty mask). Not part of the rule
        (``score`` and ``passes`` ignore it): a detector sets its own limit
        from its calibration images (:class:`skxray.ood.OODDetector`,
        ``lung_ambiguity_threshold_``). NaN when the layout was computed from
        masks alone (``lung_layout(masks=...)``), which carry no probabilities.
    """

    n_parts: np.ndarray
    lung_share: np.ndarray
    area_ratio: np.ndarray
    side_by_side: np.ndarray
    score: np.ndarray
    ambiguity: np.ndarray

    @property
    def passes(self):
        """Boolean per image: the layout satisfies :data:`LUNG_LAYOUT_RULE` (``score <= 1``)."""
        return self.score <= 1.0


def _layout_terms(mask):
    """``(n_parts, share, ratio, side_by_side, score)`` of one boolean 2-D mask."""
    from scipy import ndimage

    lo, hi = LUNG_LAYOUT_RULE["lung_share"]
    share = float(mask.mean())
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    share_term = max(lo / share if share > 0 else np.inf, share / hi)
    if n < LUNG_LAYOUT_RULE["min_parts"]:
        return n, share, np.inf, False, LAYOUT_SCORE_CAP
    sizes = np.bincount(labels.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    ratio = sizes[first - 1] / sizes[second - 1]
    (r1, c1), (r2, c2) = ndimage.center_of_mass(mask, labels, [first, second])
    across, down = abs(c1 - c2), abs(r1 - r2)
    upright = down / across if across > 0 else np.inf
    terms = (share_term, ratio / LUNG_LAYOUT_RULE["largest_to_second_max"], upright)
    score = min(max(terms), LAYOUT_SCORE_CAP)
    return n, share, float(ratio), bool(across > down), float(score)


def lung_layout(X=None, *, masks=None):
    """Whether each image's lungs, as the segmenter finds them, look like those of an upright frontal chest X-ray.

    A check that owes nothing to a classifier: :func:`segment_lungs` finds
    the lungs, and :data:`LUNG_LAYOUT_RULE` asks for two of them, side by
    side, of similar size, covering 10-70 % of the image. A rotated X-ray,
    a face or a photograph mostly fails it; an upright one mostly passes.
    The out-of-distribution detector of every skxray classifier uses it
    (:class:`skxray.ood.OODDetector`, ``lung_check``) to flag images that
    are not upright frontal chest X-rays.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width), or sequence of paths, default=None
        The images, as for :func:`segment_lungs`.
    masks : array-like of bool of shape (n_samples, height, width), default=None
        Lung masks already found (``segment_lungs(X)``); give either ``X``
        or ``masks``.

    Returns
    -------
    layout : LungLayout
        Per image: parts, lung share, area ratio, side by side, ``score``
        (above 1 = outside the rule) and ``passes``.

    Notes
    -----
    Measured at 128 px (``benchmarks/results/gross_errors_segmenter.json``):
    it fails 0.4 % of the 1,124 darkcovidnet X-rays, and 97 % and 95 % of
    them rotated by 90 and 270 degrees, but only 4 % of them upside down
    and about two thirds of inverted X-rays, faces and photographs. It is a
    complement to a detector, not a detector on its own.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray import make_phantom_cxr
    >>> from skxray.segmentation import lung_layout
    >>> X, _ = make_phantom_cxr(n_samples=4, image_size=64, random_state=0)
    >>> bool(lung_layout(X).passes.all())
    True
    >>> lung_layout(masks=np.zeros((1, 64, 64), dtype=bool)).score  # no lungs found
    array([10.])
    """
    if (X is None) == (masks is None):
        raise ValueError("lung_layout: give either X (images) or masks (lung masks), not both or neither.")
    ambiguity = None
    if masks is None:
        proba = lung_probabilities(X)
        masks = _masks_from_proba(proba)
        ambiguity = _ambiguity(proba, masks)
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(
            f"lung_layout: masks must be a boolean array of shape (n_samples, height, width); "
            f"got dtype {masks.dtype} and shape {masks.shape}."
        )
    rows = [_layout_terms(m) for m in masks]
    columns = list(zip(*rows)) if rows else [(), (), (), (), ()]
    return LungLayout(
        n_parts=np.asarray(columns[0], dtype=np.int64),
        lung_share=np.asarray(columns[1], dtype=np.float64),
        area_ratio=np.asarray(columns[2], dtype=np.float64),
        side_by_side=np.asarray(columns[3], dtype=bool),
        score=np.asarray(columns[4], dtype=np.float64),
        ambiguity=np.full(len(masks), np.nan) if ambiguity is None else ambiguity,
    )


def _ambiguity(proba, masks):
    """Per image: pixels of ``proba`` in :data:`AMBIGUOUS_PROBABILITY` over the pixels of ``masks``."""
    lo, hi = AMBIGUOUS_PROBABILITY
    unsure = ((proba > lo) & (proba < hi)).sum(axis=(1, 2)).astype(np.float64)
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, unsure / np.maximum(area, 1.0), np.inf)
