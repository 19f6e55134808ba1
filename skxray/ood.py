"""Out-of-distribution (OOD) detection: know when not to answer.

A classifier trained on the X-rays of some hospitals answers, with
confidence, about any image it is given: an X-ray from another hospital, a
photograph, a blank frame. Two tools here warn before that happens:

- :func:`shift_test` asks two questions of a whole batch (a folder from a
  new hospital): has the case mix changed (the class proportions,
  estimated with a 95 % interval), and do the images differ beyond that
  change (a kernel two-sample MMD permutation test against held-out
  features stored in the model, subsampled to the batch's class mix).
- :class:`OODDetector` scores how unlike the training images each image is
  and flags those too far away; every skxray classifier fits one in ``fit``
  (``ood=True``) and offers ``predict_with_abstention``, which answers
  ``"uncertain"`` for them.

Three detector methods. ``"mahalanobis"`` (Lee et al., NeurIPS 2018, the
default) fits a Gaussian with a Ledoit-Wolf shrunk covariance, class means
and a shared covariance, to features of the training images: for the CNN and
FNN summary statistics of every hidden layer (``activation_stats``)
together with a cheap image descriptor (``"layers"``); the penultimate
embedding and/or the descriptor otherwise. ``"energy"`` (Liu et al., NeurIPS
2020) and ``"msp"`` (Hendrycks & Gimpel, ICLR 2017) read the fitted
classifier's logits: nothing more is trained, but they only see what moves
the logits, so an image the network maps confidently to a class passes
however strange it is.

What they achieve on real X-rays is measured, not promised: on 243 images
of a hospital in no training set (``benchmarks/new_hospital.py``) the
default CNN's detector, fitted with the patients as ``groups``, flagged about
a quarter, at about 2 % false alarms on new patients of its training
hospitals, and the shift test rejected every batch of 40 of them; the phantom tests only show the code runs. A flagged
image is not a diagnosis, and not necessarily a bad image; an unflagged one
is not a guarantee: a shift the features are blind to passes unflagged, and
a classifier can be wrong on in-distribution images too.
"""

import math
import numbers
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.special import logsumexp, ndtri
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from skxray import _label_shift
from skxray._data import TensorImageDataset
from skxray._label_shift import PREVALENCE_METHODS
from skxray._param_validation import Interval, StrOptions, validate_params
from skxray._utils import check_open_fraction
from skxray._validation import check_image_array, is_path_array
from skxray.segmentation import LAYOUT_SCORE_CAP, lung_layout

__all__ = [
    "OODDetector",
    "ShiftFeatures",
    "ShiftTestResult",
    "adapt_proba",
    "ood_rate",
    "shift_features",
    "shift_test",
]

_METHODS = ("mahalanobis", "energy", "msp")
_FEATURES = ("auto", "layers", "embedding", "image", "both")
#: Feature blocks read from the network, whose calibration needs images it never trained on.
_NETWORK_BLOCKS = ("layers", "embedding")
#: Fewest images :meth:`OODDetector.fit` accepts: with fewer, a covariance and
#: a 99% quantile are guesses. A classifier fitted on fewer has ``ood_ = None``.
MIN_SAMPLES = 10
#: Quantile of the detector a classifier fits (``ood=True``): it aims at
#: flagging 5 % of new images of the training hospitals, the most a user
#: should have to re-read by hand, so that as many unfamiliar images as
#: possible are flagged (see the user guide's page on new hospitals).
CLASSIFIER_QUANTILE = 0.95
#: Fewest validation images with which a classifier's detector uses the
#: hidden layers' statistics (``features="layers"``); with fewer it uses the
#: embedding and the image descriptor (``"both"``).
MIN_LAYER_CALIBRATION = 20
#: Least share of its calibration images that must pass the lung layout
#: check (:func:`skxray.segmentation.lung_layout`) for a detector to use it
#: (``lung_check=True``): 0.4 % of darkcovidnet's X-rays fail it, so images
#: that fail more often than 1 in 20 are not upright frontal chest X-rays
#: as the segmenter knows them, and the check would only add false alarms.
LUNG_CHECK_MIN_PASS = 0.95
#: Quantile of the calibration images' lung ambiguity
#: (:attr:`skxray.segmentation.LungLayout.ambiguity`) above which the lung
#: check also flags an image (``lung_ambiguity_threshold_``): the lungs it
#: found are drawn with less certainty than those of 99 % of the X-rays the
#: detector was calibrated on. Fixed before it was measured, not tuned.
LUNG_AMBIGUITY_QUANTILE = 0.99
_N_BINS = 16
_N_BANDS = 16
_THUMBNAIL = 8
_EDGE_SAMPLE_IMAGES = 256
_EDGE_SAMPLE_PIXELS = 200_000
_BATCH = 64


# --------------------------------------------------------------------------
# Image descriptor


class _ImageDescriptor:
    """A cheap, label-agnostic summary of an image's appearance.

    Per image (channels averaged to gray): the square roots of the fractions
    of pixels in 16 intensity bins spanning the training images' 0.5-99.5%
    pixel range plus one bin below and one above it (the intensity curve,
    black level, saturation); an 8 x 8 block-average thumbnail (layout, field
    of view, burnt-in markers); the logarithms of the mean absolute
    difference between neighbouring pixels along each axis, at full and half
    resolution (noise level and grain); mean and standard deviation.
    The bin edges are the only fitted state.
    """

    def __init__(self, edges=None, thumbnail=None):
        self.edges = edges
        self.thumbnail = thumbnail

    def fit(self, images, rng):
        pixels = images.mean(axis=1).reshape(-1)
        if pixels.size > _EDGE_SAMPLE_PIXELS:
            pixels = pixels[rng.choice(pixels.size, _EDGE_SAMPLE_PIXELS, replace=False)]
        lo, hi = np.quantile(pixels.astype(np.float64), [0.005, 0.995])
        if not hi > lo:  # constant training images: any unit span will do
            hi = lo + 1.0
        self.edges = np.linspace(lo, hi, _N_BINS + 1)
        height, width = images.shape[-2:]
        self.thumbnail = (min(_THUMBNAIL, height), min(_THUMBNAIL, width))
        return self

    def transform(self, images):
        """Descriptors (n, n_features) of float (n, C, H, W) images."""
        gray = images.mean(axis=1, dtype=np.float64)
        n, height, width = gray.shape
        lo, hi = self.edges[0], self.edges[-1]
        span = hi - lo
        # Bin 0 is below the range, bin _N_BINS + 1 above it.
        bins = np.searchsorted(self.edges, gray.reshape(n, -1), side="right")
        bins = np.minimum(bins, _N_BINS + 1)
        bins[gray.reshape(n, -1) == hi] = _N_BINS  # the top edge belongs to the last bin
        offsets = (np.arange(n) * (_N_BINS + 2))[:, None]
        counts = np.bincount((bins + offsets).reshape(-1), minlength=n * (_N_BINS + 2))
        hist = np.sqrt(counts.reshape(n, _N_BINS + 2) / (height * width))
        thumb = F.adaptive_avg_pool2d(torch.from_numpy(gray[:, None]), self.thumbnail)
        thumb = (thumb.reshape(n, -1).numpy() - lo) / span
        texture = []
        for scale in (1, 2):
            g = gray
            if scale == 2 and height >= 2 and width >= 2:
                g = F.avg_pool2d(torch.from_numpy(gray[:, None]), 2).numpy()[:, 0]
            for axis in (1, 2):
                if g.shape[axis] >= 2:
                    diff = np.abs(np.diff(g, axis=axis)).mean(axis=(1, 2)) / span
                else:
                    diff = np.zeros(n)
                texture.append(np.log(diff + 1e-4))
        moments = [(gray.mean(axis=(1, 2)) - lo) / span, gray.std(axis=(1, 2)) / span]
        return np.column_stack(
            [hist, thumb, *texture, *moments, _radial_spectrum(gray / span), _border_strips(gray, lo, span)]
        )

    def state(self):
        return {"thumbnail": list(self.thumbnail)}, {"edges": self.edges}

    @classmethod
    def from_state(cls, config, arrays):
        return cls(np.asarray(arrays["edges"], dtype=np.float64), tuple(config["thumbnail"]))


def _radial_spectrum(gray):
    """Log power of each of :data:`_N_BANDS` rings of the centred 2-D spectrum.

    Sharpening, blur, JPEG blocks, grids and detector noise each move power
    between frequencies in their own way, while anatomy changes it little.
    """
    n, height, width = gray.shape
    power = np.abs(np.fft.fft2(gray - gray.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.hypot(fy, fx) / np.hypot(0.5, 0.5)  # 0 (DC) to 1 (the corner)
    band = np.minimum((radius * _N_BANDS).astype(np.int64), _N_BANDS - 1).reshape(-1)
    sums = np.stack([np.bincount(band, weights=p, minlength=_N_BANDS) for p in power.reshape(n, -1)])
    sizes = np.maximum(np.bincount(band, minlength=_N_BANDS), 1)
    return np.log(sums / sizes / (height * width) + 1e-10)


def _border_strips(gray, lo, span):
    """Mean and std of the four 10 % border strips: collimation, burnt-in text, film edges."""
    height, width = gray.shape[1:]
    k_h, k_w = max(1, height // 10), max(1, width // 10)
    strips = (gray[:, :k_h], gray[:, -k_h:], gray[:, :, :k_w], gray[:, :, -k_w:])
    columns = []
    for strip in strips:
        columns += [(strip.mean(axis=(1, 2)) - lo) / span, strip.std(axis=(1, 2)) / span]
    return np.column_stack(columns)


# --------------------------------------------------------------------------
# Gaussian with class means and a shared shrunk covariance


class _Gaussian:
    """Standardised features, class-conditional means, shared Ledoit-Wolf covariance.

    ``threshold`` is the block's calibrated distance: an image is out of
    distribution for this block when its distance exceeds it.
    """

    def __init__(self, center=None, scale=None, means=None, precision=None, threshold=1.0):
        self.center = center
        self.scale = scale
        self.means = means
        self.precision = precision
        self.threshold = threshold

    def fit(self, Z, y_codes):
        self.center = Z.mean(axis=0)
        std = Z.std(axis=0)
        # Constant features keep their raw scale; the shrinkage gives them a
        # small variance, so an image that moves them is far away.
        self.scale = np.where(std > 1e-12, std, 1.0)
        S = (Z - self.center) / self.scale
        codes = np.unique(y_codes)
        self.means = np.stack([S[y_codes == c].mean(axis=0) for c in codes])
        residuals = S - self.means[np.searchsorted(codes, y_codes)]
        self.precision = LedoitWolf(assume_centered=True).fit(residuals).precision_
        return self

    def distance(self, Z):
        """Mahalanobis distance to the nearest class mean."""
        S = (Z - self.center) / self.scale
        best = np.full(len(S), np.inf)
        for mean in self.means:
            diff = S - mean
            best = np.minimum(best, ((diff @ self.precision) * diff).sum(axis=1))
        return np.sqrt(np.maximum(best, 0.0))

    def state(self):
        return {"threshold": float(self.threshold)}, {
            "center": self.center,
            "scale": self.scale,
            "means": self.means,
            "precision": self.precision,
        }

    @classmethod
    def from_state(cls, config, arrays):
        return cls(
            *(np.asarray(arrays[k], dtype=np.float64) for k in ("center", "scale", "means", "precision")),
            threshold=float(config["threshold"]),
        )


def _folds(n_eligible, y_codes, n_folds, rng, groups=None):
    """Fold number of each eligible image: stratified by class where possible.

    With ``groups`` (one per eligible image), a group's images share a fold,
    so that no image is scored by a Gaussian holding its siblings.
    """
    n_folds = max(2, min(n_folds, n_eligible))
    seed = int(rng.randint(np.iinfo(np.int32).max))
    counts = None if y_codes is None else np.bincount(y_codes)
    stratify = counts is not None and counts[counts > 0].min() >= n_folds
    X = np.zeros(n_eligible)
    if groups is not None and len(np.unique(groups)) >= n_folds:
        if stratify:
            splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(X, y_codes, groups)
        else:
            splits = GroupKFold(n_folds).split(X, groups=groups)
    elif stratify:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, y_codes)
    else:
        splits = KFold(n_folds, shuffle=True, random_state=seed).split(X)
    fold = np.empty(n_eligible, dtype=np.int64)
    for k, (_, test) in enumerate(splits):
        fold[test] = k
    return fold


def _cross_fitted_distances(Z, y_codes, eligible, n_folds, rng, groups=None):
    """Out-of-fold distances of the ``eligible`` images and the Gaussian on all.

    The eligible images are split into folds; each fold is scored by a
    Gaussian fitted on every other image (the other folds and the images
    that are not eligible, e.g. those the network trained on). With
    ``groups`` (one per image), folds hold whole groups and a fold's groups
    are left out of its Gaussian altogether. The returned Gaussian is fitted
    on all images.
    """
    n = len(Z)
    codes = np.zeros(n, dtype=np.int64) if y_codes is None else y_codes
    fold = _folds(
        len(eligible), None if y_codes is None else codes[eligible], n_folds, rng,
        groups=None if groups is None else groups[eligible],
    )
    distances = np.empty(len(eligible))
    for k in np.unique(fold):
        held = eligible[fold == k]
        keep = np.ones(n, dtype=bool)
        keep[held] = False
        if groups is not None:
            keep &= ~np.isin(groups, groups[held])
        distances[fold == k] = _Gaussian().fit(Z[keep], codes[keep]).distance(Z[held])
    return distances, _Gaussian().fit(Z, codes)


# --------------------------------------------------------------------------
# Where images and features come from


def _is_skxray_classifier(estimator):
    """A fitted network that turns images into its own input (``get_dataset``) and owns a skorch net.

    Duck-typed, so that this module needs nothing from skxray.models (which
    imports it): no import cycle.
    """
    return callable(getattr(estimator, "get_dataset", None)) and hasattr(estimator, "batch_size")


class _Source:
    """The images of ``X`` as seen by the estimator: random access and batches.

    For a skxray classifier, ``X`` goes through its own input checks and
    dataset (file paths are read and resized as in ``fit``); otherwise ``X``
    must be an image array, (n, H, W), (n, C, H, W) or 2-D (n, n_features)
    taken as one-row images. Iteration never touches the global torch RNG.
    """

    def __init__(self, dataset, batch_size=_BATCH):
        self.dataset = dataset
        self.batch_size = batch_size

    @classmethod
    def from_X(cls, X, estimator):
        if estimator is not None and _is_skxray_classifier(estimator):
            return cls(estimator.get_dataset(X), estimator.batch_size)
        if is_path_array(X):
            raise ValueError(
                "OODDetector reads file paths only through a fitted skxray classifier "
                "(estimator=...); otherwise pass image arrays, e.g. from "
                "skxray.preprocessing.ImageLoader."
            )
        arr = check_image_array(X, name="X", allow_2d=True, dtype=np.float32)
        arr = arr[:, None, None, :] if arr.ndim == 2 else arr[:, None] if arr.ndim == 3 else arr
        return cls(TensorImageDataset(torch.from_numpy(arr), None))

    def __len__(self):
        return len(self.dataset)

    def take(self, indices):
        X = getattr(self.dataset, "X", None)
        if X is not None:
            return X[torch.as_tensor(indices, dtype=torch.long)].numpy()
        return torch.stack([self.dataset[int(i)][0] for i in indices]).numpy()

    def batches(self):
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=False, generator=torch.Generator()
        )
        for x, _ in loader:
            yield x


def _binary_logits(z):
    """Two symmetric logits ``[-z/2, z/2]`` for one binary logit ``z``.

    Same softmax as ``[0, z]`` (the sigmoid), but the energy
    ``-log(2 cosh(z / 2))`` is symmetric: with ``[0, z]`` an image that is
    confidently ``classes_[0]`` would get the energy of an unsure one.
    """
    z = np.asarray(z, dtype=np.float64).reshape(-1, 1)
    return np.hstack([-z / 2, z / 2])


def _logit_scores(method, logits):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        logits = _binary_logits(logits)
    if method == "energy":
        return -logsumexp(logits, axis=1)
    proba = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    return 1.0 - proba.max(axis=1)


# --------------------------------------------------------------------------
# Threshold


def _threshold(scores, quantile, parametric):
    """An estimate of the ``quantile`` of held-out in-distribution scores.

    The empirical part is the conformal quantile: the ``ceil((n + 1) q)``-th
    smallest of ``n`` held-out scores, which a new exchangeable score exceeds
    with probability at most ``1 - q``; with fewer than ``q / (1 - q)``
    scores (99 at ``q=0.99``) that rank does not exist and the largest score
    is used. For distances (``parametric``) the threshold is the larger of
    that and the ``quantile`` of a log-normal fitted to the scores, so that a
    small calibration set does not give a threshold that is merely the
    largest of a few scores.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    rank = math.ceil((n + 1) * quantile)
    empirical = scores[rank - 1] if rank <= n else scores[-1]
    if not parametric or n < 3:
        return float(empirical)
    logs = np.log(np.maximum(scores, 1e-12))
    lognormal = float(np.exp(logs.mean() + ndtri(quantile) * logs.std(ddof=1)))
    return float(max(empirical, lognormal))


# --------------------------------------------------------------------------
# Batch shift test


#: Most images per side of the shift test: the kernel matrix is (n + m)^2.
_MAX_SHIFT_SAMPLES = 2000
#: Fewest test images shift_test accepts: with fewer, no permutation p-value
#: can be small enough to mean anything.
MIN_SHIFT_TEST_IMAGES = 5


@dataclass(frozen=True)
class ShiftTestResult:
    """Outcome of :func:`shift_test`: has the case mix changed, and do the images differ beyond it?

    Attributes
    ----------
    statistic : float
        The unbiased estimate of the squared maximum mean discrepancy (MMD²)
        between the reference and the test features; near 0 (it can be
        negative) when they come from one distribution.
    pvalue : float
        Permutation p-value of the image test, ``(1 + #{permuted statistic
        >= statistic}) / (1 + n_permutations)``: never 0, at least ``1 / (1 +
        n_permutations)``. With a labelled reference (``reference_matched``)
        the reference's class mix was matched to the batch's estimated one,
        so it tests whether the images differ beyond the case mix.
    shifted : bool
        Something differs: ``images_differ`` or ``case_mix_changed``.
    alpha : float
        Significance level of both tests.
    n_reference : int
        Held-out images in the (matched) reference sample.
    n_test : int
        Images of the tested batch.
    n_permutations : int
        Permutations of the p-value.
    method : str
        What was computed.
    images_differ : bool or None
        ``pvalue < alpha``. None only in results written before this field.
    reference_matched : bool
        True when the reference was matched to the batch's estimated class
        mix, so that ``images_differ`` is about the images alone; False for a
        model saved without the labels of its reference (an earlier
        release), whose test answers only "does anything differ?".
    case_mix_changed : bool or None
        ``case_mix_pvalue < alpha``; None without a labelled reference.
    case_mix_pvalue : float or None
        p-value of the comparison of the predicted-class counts of the batch
        and of the reference (Fisher's exact test for two classes,
        chi-squared otherwise).
    classes : list or None
        The classes of ``prevalence``.
    prevalence : list of float or None
        Estimated share of each class in the batch (valid when the images
        do not differ).
    prevalence_low, prevalence_high : list of float or None
        The 95 % interval of each share.
    training_prevalence : list of float or None
        The share of each class among the training images.
    prevalence_method : str or None
        ``"bbse"`` or ``"em"``.
    n_repeated : int
        Images of the batch that repeat another of its images (the same
        features: the same file sent twice), left out of both tests:
        ``n_test`` counts distinct images. A permutation test takes a
        repeated image for two independent ones, and rejects too often.
    patient_pairs_excluded : bool
        True when the image part's statistic left out the pairs of reference
        images of one patient (``exclude_patient_pairs=True`` with a model
        fitted with ``groups``, and a reference holding a patient twice).
    """

    statistic: float
    pvalue: float
    shifted: bool
    alpha: float
    n_reference: int
    n_test: int
    n_permutations: int
    method: str
    images_differ: bool = None
    reference_matched: bool = False
    case_mix_changed: bool = None
    case_mix_pvalue: float = None
    classes: list = None
    prevalence: list = None
    prevalence_low: list = None
    prevalence_high: list = None
    training_prevalence: list = None
    prevalence_method: str = None
    n_repeated: int = 0
    patient_pairs_excluded: bool = False

    def to_dict(self):
        """The fields as a JSON-able dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def prevalence_text(self):
        """``"Covid-19 about 90 % (95 % CI 78-97 %; training 20 %)"``, or "" without an estimate.

        For two classes, the class rarer in training; for more, every class.
        """
        if self.prevalence is None:
            return ""
        order = range(len(self.classes))
        if len(self.classes) == 2:
            order = [int(np.argmin(self.training_prevalence))]
        return ", ".join(
            f"{self.classes[j]} about {100 * self.prevalence[j]:.0f} % (95 % CI "
            f"{100 * self.prevalence_low[j]:.0f}-{100 * self.prevalence_high[j]:.0f} %; "
            f"training {100 * self.training_prevalence[j]:.0f} %)"
            for j in order
        )

    def severity(self):
        """``"fail"`` when the images differ, ``"warning"`` when only the case mix changed, else ``"ok"``.

        For a model saved without reference labels, any difference is a ``"fail"``.
        """
        images_differ = self.shifted if self.images_differ is None else self.images_differ
        if images_differ:
            return "fail"
        return "warning" if self.case_mix_changed else "ok"

    def verdict(self):
        """What the test found, in sentences a clinician can act on."""
        images_differ = self.shifted if self.images_differ is None else self.images_differ
        p = f"p = {self.pvalue:.2g}"
        if not self.reference_matched:
            sample = f"{self.n_test} images against {self.n_reference} held-out training images"
            head = (
                "This model was saved without the labels of its reference images, so the test "
                "cannot tell a change of case mix from different images; "
            )
            if images_differ:
                return head + (
                    f"this batch differs from the training data ({p}, {sample}): a different case "
                    "mix alone can cause this; predictions are not validated here."
                )
            return head + f"no difference from the training data detected ({p}, {sample})."
        mix = self.prevalence_text()
        if self.case_mix_changed:
            first = f"The case mix differs from training: {mix} (p = {self.case_mix_pvalue:.2g})."
        else:
            first = (
                f"No change of case mix detected: {mix} (p = {self.case_mix_pvalue:.2g})."
            )
        if images_differ:
            return first + (
                f" The images differ beyond the case mix ({p}): a new hospital, scanner or "
                "protocol. Predictions are not validated here, and the case-mix estimate, "
                "which assumes the images do not differ, is not reliable either."
            )
        repeated = f", {self.n_repeated} repeated images counted once" if self.n_repeated else ""
        return first + (
            f" The images do not differ beyond that ({p}, {self.n_test} images{repeated}); "
            "this does not prove that they do not differ."
        )


def _squared_distances(A, B):
    sq_a = (A * A).sum(axis=1)
    sq_b = (B * B).sum(axis=1)
    return np.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * A @ B.T, 0.0)


def _distinct_rows(Z):
    """Indices of the first of each group of identical rows of ``Z``, in order.

    Rows are compared after rounding to a millionth of the largest absolute
    feature, so the same image gives one row whatever batch it was computed
    in.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if len(Z) < 2:
        return np.arange(len(Z))
    scale = float(np.max(np.abs(Z))) or 1.0
    _, first = np.unique(np.round(Z / scale, 6), axis=0, return_index=True)
    return np.sort(first)


def _median_bandwidth(Z):
    """Median heuristic: the median squared distance between distinct rows."""
    d = _squared_distances(Z, Z)[np.triu_indices(len(Z), 1)]
    median = float(np.median(d)) if d.size else 0.0
    return median if median > 0 else 1.0


def _mmd_permutation_test(Z_ref, Z_test, bandwidth, n_permutations, rng):
    """Unbiased MMD² with a Gaussian kernel, and its permutation p-value.

    ``bandwidth`` is fixed before the test (from the reference alone), so
    every permutation sees the same kernel and the p-value is exact up to
    Monte Carlo error. The permutations are done as one matrix product:
    for a 0/1 membership vector ``a`` the within-reference kernel sum is
    ``a' K a``.
    """
    n, m = len(Z_ref), len(Z_test)
    pooled = np.vstack([Z_ref, Z_test])
    K = np.exp(-_squared_distances(pooled, pooled) / bandwidth)
    np.fill_diagonal(K, 0.0)
    members = np.zeros((n_permutations + 1, n + m))
    members[0, :n] = 1.0
    for b in range(1, n_permutations + 1):
        members[b, rng.permutation(n + m)[:n]] = 1.0
    weighted = members @ K
    within_ref = (weighted * members).sum(axis=1)
    between = (weighted * (1.0 - members)).sum(axis=1)
    within_test = K.sum() - within_ref - 2.0 * between
    stats = within_ref / (n * (n - 1)) + within_test / (m * (m - 1)) - 2.0 * between / (n * m)
    pvalue = (1.0 + np.count_nonzero(stats[1:] >= stats[0])) / (1.0 + n_permutations)
    return float(stats[0]), float(pvalue)


def _mmd_permutation_test_across_patients(Z_ref, ref_groups, Z_test, bandwidth, n_permutations, rng):
    """:func:`_mmd_permutation_test` over the pairs of images of different patients.

    ``ref_groups`` gives each reference image its patient; every test image
    is its own. The pairs of images of one patient count in no term of the
    statistic, wherever a permutation puts them: each term (within the
    reference, within the test side, between them) is the mean kernel over
    its counted pairs. So the likeness of a patient's images to one another,
    which an image-level permutation takes for likeness between independent
    images, does not inflate the statistic. The permutations are those of
    images: moving a patient's images together cost more power
    (``benchmarks/shift_reference_probe.py``).
    """
    n, m = len(Z_ref), len(Z_test)
    pooled = np.vstack([Z_ref, Z_test])
    units = np.r_[np.asarray(ref_groups, dtype=np.int64), np.max(ref_groups, initial=-1) + 1 + np.arange(m)]
    counted = (units[:, None] != units[None, :]).astype(np.float64)
    K = np.exp(-_squared_distances(pooled, pooled) / bandwidth) * counted
    members = np.zeros((n_permutations + 1, n + m))
    members[0, :n] = 1.0
    for b in range(1, n_permutations + 1):
        members[b, rng.permutation(n + m)[:n]] = 1.0
    others = 1.0 - members

    def mean_over_pairs(A, B):
        return ((A @ K) * B).sum(axis=1) / np.maximum(((A @ counted) * B).sum(axis=1), 1.0)

    stats = mean_over_pairs(members, members) + mean_over_pairs(others, others) - 2.0 * mean_over_pairs(
        members, others
    )
    pvalue = (1.0 + np.count_nonzero(stats[1:] >= stats[0])) / (1.0 + n_permutations)
    return float(stats[0]), float(pvalue)


# --------------------------------------------------------------------------
# The estimator


@dataclass(frozen=True)
class _ReferenceLabels:
    """What makes a reference labelled: the classes and the classifier's probabilities on its images."""

    classes: np.ndarray
    proba: np.ndarray = None


class OODDetector(OutlierMixin, BaseEstimator):
    """Flag images unlike the training images (out of distribution).

    ``ood_score`` gives a distance per image, higher meaning less like the
    training images; ``predict`` is -1 (an outlier) where it exceeds
    ``threshold_``, set from held-out training images at ``quantile``, so
    that at most about ``1 - quantile`` of new in-distribution images are
    flagged, and +1 otherwise. ``score_samples`` and ``decision_function``
    follow scikit-learn's outlier detectors (``OutlierMixin``): higher means
    more normal.

    Read more in the :doc:`user guide </ood>`.

    Parameters
    ----------
    method : {"mahalanobis", "energy", "msp"}, default="mahalanobis"
        ``"mahalanobis"``: distance to the nearest class mean of a Gaussian
        with a shared Ledoit-Wolf covariance fitted on ``features`` (Lee et
        al., 2018). ``"energy"``: ``-logsumexp`` of the classifier's logits
        (Liu et al., 2020). ``"msp"``: one minus the classifier's maximum
        softmax probability (Hendrycks & Gimpel, 2017). The last two need
        ``estimator`` and no other training; the Mahalanobis distance also
        sees differences the classifier ignores (see the user guide).

    quantile : float in (0, 1), default=0.99
        Share of in-distribution images the threshold should let through;
        ``1 - quantile`` is the false-alarm rate aimed at.

    estimator : fitted classifier or None, default=None
        A fitted skxray classifier (or any classifier with ``embed`` for
        the embedding, ``decision_function`` for ``"energy"``,
        ``predict_proba`` for ``"msp"``). Not cloned or refitted. File paths
        in ``X`` are read through it.

    features : {"auto", "layers", "embedding", "image", "both"}, default="auto"
        Features of the Mahalanobis distance: ``"layers"`` summary
        statistics of every hidden layer of a skxray CNN or FNN
        (``activation_stats``: per-channel mean and standard deviation of the
        CNN's blocks, mean, spread and share of active units of the FNN's
        layers) together with the image descriptor, in one
        Gaussian; ``"embedding"`` the estimator's ``embed`` (penultimate
        layer); ``"image"`` a cheap image descriptor (intensity histogram,
        8 x 8 thumbnail, noise texture, radial power spectrum, border
        strips); ``"both"`` one Gaussian for the embedding and one for the
        descriptor. ``"auto"`` is ``"layers"`` for a skxray CNN or FNN,
        ``"both"`` for another estimator and ``"image"`` without one.
        Ignored by ``"energy"`` and ``"msp"``.

    cv : int, default=5
        Number of folds of the cross-fitting that sets the threshold of the
        Mahalanobis distance: each fold is scored by a Gaussian fitted on
        the other folds, so every image of ``fit`` is a held-out image once
        (see Notes). At least 2.

    random_state : int, RandomState instance or None, default=None
        Seeds the folds and the pixel sample of the histogram range.

    lung_check : bool, default=False
        Also flag the images whose lungs, as skxray's lung segmenter finds
        them, do not look like those of an upright frontal chest X-ray
        (:func:`skxray.segmentation.lung_layout`: two lungs side by side,
        of similar size, 10-70 % of the image): rotated X-rays, faces,
        photographs, which a detector of the classifier's features can
        miss. Their ``ood_score`` is the larger of the distance and the
        layout's ``score`` (above 1 outside the rule). Used only when at
        least :data:`LUNG_CHECK_MIN_PASS` of the images of ``fit`` pass it
        (``lung_check_``); otherwise the images are not chest X-rays as the
        segmenter knows them, and a warning says so. The check also flags
        an image whose lungs the segmenter draws with less certainty than
        :data:`LUNG_AMBIGUITY_QUANTILE` of the images of ``fit`` (of a
        classifier's training images for its own detector)
        (``lung_ambiguity_threshold_``): a picture can pass the layout rule
        with two blurred blobs the segmenter is unsure of. Only with
        ``method="mahalanobis"``. The classifiers' own detector (``ood_``)
        uses it. The layout rule adds about 0.4 % false alarms on X-rays of
        the training hospitals, the ambiguity limit about 1 % (see the user
        guide).

    Attributes
    ----------
    threshold_ : float
        ``ood_score`` above it is out of distribution. 1.0 for the Mahalanobis
        distance, whose scores are in units of the calibrated threshold.

    features_ : tuple of str
        The features used: ``("embedding",)``, ``("image",)``,
        ``("embedding", "image")``, or ``()`` for energy and msp.

    block_thresholds_ : dict of str to float
        Calibrated Mahalanobis distance of each feature block (empty for
        energy and msp).

    calibration_scores_ : ndarray of shape (n_calibration,)
        Held-out scores of the images that set the threshold.

    n_samples_fit_ : int
        Number of images of ``fit``.

    reference_ : ndarray of shape (n_reference, n_features) or None
        Standardised features of held-out images, the reference sample of
        :func:`shift_test`: the images of ``fit`` (at most 2,000) for a
        detector fitted here, the validation images for a classifier's
        ``ood_``; None for ``"energy"`` and ``"msp"`` and for a classifier
        fitted without a validation split.

    reference_bandwidth_ : float or None
        Width of the shift test's Gaussian kernel: the median squared
        distance between reference images.

    reference_groups_ : ndarray of shape (n_reference,) or None
        Which reference images share a patient, as codes 0, 1, ... (not the
        ids): for a classifier fitted with ``groups``, what
        ``shift_test(..., exclude_patient_pairs=True)`` uses; None otherwise.

    lung_check_ : bool
        Whether :meth:`ood_score` uses the lung layout check: ``lung_check``
        and at least :data:`LUNG_CHECK_MIN_PASS` of the calibration images
        passed it.

    lung_check_pass_rate_ : float or None
        Share of the calibration images (the images of ``fit``; a
        classifier's validation images) that passed the lung layout check;
        None without ``lung_check``.

    lung_ambiguity_threshold_ : float or None
        The lung ambiguity of the images of ``fit`` (for a classifier's
        detector, all its training images: the segmenter owes nothing to the
        classifier) at :data:`LUNG_AMBIGUITY_QUANTILE`: an image whose
        ambiguity is above it is flagged by the lung check. None when the
        check is off, and for detectors saved before it existed (their lung
        check is the layout rule alone).

    Notes
    -----
    **The threshold.** The Mahalanobis distance of each feature block is
    calibrated on held-out distances: the images are split into ``cv``
    folds, each scored by a Gaussian fitted without it (the final Gaussian
    is fitted on all images). With two blocks, each gets the level
    ``1 - (1 - quantile) / 2``, so that the union of the two flags still
    aims at ``1 - quantile`` false alarms. A block's threshold is the larger
    of the conformal quantile of its held-out distances (exceeded by a new
    exchangeable in-distribution image with probability at most one minus
    the level; the largest distance when there are too few, fewer than 199
    at 0.995) and the quantile of a log-normal fitted to them, which keeps
    a small calibration set from giving a threshold that is merely the
    largest of a few distances. The score is the largest ratio of a block's
    distance to its threshold, so ``threshold_`` is 1. For ``"energy"`` and
    ``"msp"``, nothing is fitted and the threshold is the conformal
    quantile of the scores of all images of ``fit``.

    The images of ``fit`` must be unseen by whatever produced the features:
    when ``estimator`` was trained on them, their embeddings and logits are
    closer to the training ones than those of new images, so the threshold
    is too low and more than ``1 - quantile`` of new in-distribution images
    get flagged. A classifier fitted with ``ood=True`` avoids this by
    calibrating the embedding on its validation split.

    **scikit-learn's outlier convention.** ``predict`` gives +1 (inlier) or
    -1 (outlier); ``score_samples`` is ``-ood_score`` (higher = more
    normal) and ``decision_function`` is ``score_samples - offset_``
    (negative = outlier). Earlier versions returned the distance from
    ``score_samples`` and True from ``predict`` for outliers; that distance
    is ``ood_score`` now.

    A flagged image is not a diagnosis; an unflagged one is not a guarantee
    that the classifier is right.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.ood import OODDetector
    >>> X, _ = make_phantom_cxr(200, image_size=32, random_state=0)
    >>> X_other, _ = make_phantom_cxr(20, image_size=32, scanner="B", random_state=1)
    >>> detector = OODDetector(random_state=0).fit(X)
    >>> bool((detector.predict(X_other) == -1).all())
    True
    """

    _parameter_constraints: dict = {
        "method": [StrOptions(set(_METHODS))],
        "quantile": [Interval(numbers.Real, 0, 1, closed="neither")],
        "estimator": "no_validation",  # checked below: fitted, and needed or not
        "features": [StrOptions(set(_FEATURES))],
        "cv": [Interval(numbers.Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "lung_check": ["boolean"],
    }

    def __init__(
        self,
        method="mahalanobis",
        quantile=0.99,
        *,
        estimator=None,
        features="auto",
        cv=5,
        random_state=None,
        lung_check=False,
    ):
        self.method = method
        self.quantile = quantile
        self.estimator = estimator
        self.features = features
        self.cv = cv
        self.random_state = random_state
        self.lung_check = lung_check

    # ------------------------------------------------------------ parameters
    def _check_params(self):
        validate_params(self)
        # What follows ties parameters together: the method and features
        # chosen decide whether a fitted classifier is needed.
        if self.lung_check and self.method != "mahalanobis":
            raise ValueError(
                f"OODDetector: lung_check=True needs method='mahalanobis' (its scores are in units "
                f"of the threshold, like the lung layout's); got method={self.method!r}."
            )
        needs = None
        if self.method in ("energy", "msp"):
            needs = f"method={self.method!r} reads the classifier's logits"
        elif self.features in ("embedding", "both"):
            needs = f"features={self.features!r} uses the classifier's embedding"
        elif self.features == "layers":
            needs = "features='layers' reads the network's hidden layers"
        if needs and self.estimator is None:
            raise ValueError(
                f"OODDetector: {needs}; pass a fitted classifier as estimator=..., "
                "or use method='mahalanobis' with features='image'."
            )
        if self.estimator is not None:
            check_is_fitted(self.estimator)
        if self.features == "layers" and self.method == "mahalanobis" and not _has_layer_statistics(self.estimator):
            raise ValueError(
                "OODDetector: features='layers' needs a fitted skxray CNNClassifier or FNNClassifier "
                f"(a network with activation_stats); got {type(self.estimator).__name__}. "
                "Use features='embedding', 'image' or 'both'."
            )

    def _resolve_features(self):
        if self.method != "mahalanobis":
            return ()
        features = self.features
        if features == "auto":
            if _has_layer_statistics(self.estimator):
                features = "layers"
            else:
                features = "both" if self.estimator is not None else "image"
        if features == "both":
            return ("embedding", "image")
        return (features,)

    # ------------------------------------------------------------ features
    def _raw_features(self, source, X, lungs=True):
        """Per-image features by block (and logits), from one pass over the images.

        With ``lungs`` and the lung check in use (``lung_check_``), also
        ``"lungs"``: per image, the lung layout's score and the lung
        ambiguity (two columns, :func:`_lung_columns`).
        """
        features = self.features_
        lungs = lungs and getattr(self, "lung_check_", False)
        est = self.estimator
        need_logits = self.method != "mahalanobis"
        uses_network = need_logits or any(name in features for name in _NETWORK_BLOCKS)
        if est is not None and _is_skxray_classifier(est) and uses_network:
            out = {name: [] for name in (*features, "logits", "lungs")}
            module = est.net_.module_
            module.eval()
            device = est.net_.device
            with torch.no_grad():
                for x in source.batches():
                    if "embedding" in features:
                        out["embedding"].append(module.embed(x.to(device)).cpu().double().numpy())
                    if "layers" in features:
                        stats = module.activation_stats(x.to(device)).cpu().double().numpy()
                        out["layers"].append(np.hstack([stats, self._descriptor.transform(x.numpy())]))
                    if need_logits:
                        out["logits"].append(module(x.to(device)).cpu().double().numpy())
                    if "image" in features:
                        out["image"].append(self._descriptor.transform(x.numpy()))
                    if lungs:
                        out["lungs"].append(_lung_columns(lung_layout(x.numpy())))
            return {k: np.concatenate(v) for k, v in out.items() if v}
        result = {}
        if lungs:
            result["lungs"] = _lung_scores(source)
        if "image" in features:
            result["image"] = np.concatenate(
                [self._descriptor.transform(x.numpy()) for x in source.batches()]
            )
        if "embedding" in features:
            if not hasattr(est, "embed"):
                raise ValueError(
                    "OODDetector: features='embedding' or 'both' needs an estimator with an "
                    f"embed method; {type(est).__name__} has none. Use features='image'."
                )
            result["embedding"] = np.asarray(est.embed(X), dtype=np.float64).reshape(len(source), -1)
        if self.method == "energy":
            result["logits"] = np.asarray(est.decision_function(X), dtype=np.float64)
        elif self.method == "msp":
            # Log-probabilities are logits whose softmax is the probabilities.
            proba = np.asarray(est.predict_proba(X), dtype=np.float64)
            result["logits"] = np.log(np.maximum(proba, 1e-300))
        return result

    def _scores_from_raw(self, raw):
        if self.method != "mahalanobis":
            return _logit_scores(self.method, raw["logits"])
        ratios = [
            self._gaussians[name].distance(raw[name]) / self._gaussians[name].threshold
            for name in self.features_
        ]
        scores = np.max(ratios, axis=0)
        if "lungs" in raw:
            # An image the lung check fails scores at least its lung score
            # (> 1); the others keep their distance, so the check only adds
            # flags and leaves the ranking of passing images as it was.
            lungs = self._lung_check_scores(raw["lungs"])
            outside = lungs > 1.0
            scores = np.where(outside, np.maximum(scores, lungs), scores)
        return scores

    def _lung_check_scores(self, columns):
        """The lung check's score per image: layout score or ambiguity over its limit, the larger."""
        columns = np.asarray(columns, dtype=np.float64).reshape(len(columns), -1)
        scores = columns[:, 0]
        limit = getattr(self, "lung_ambiguity_threshold_", None)
        if limit is not None and columns.shape[1] > 1:
            with np.errstate(invalid="ignore"):
                ambiguity = np.minimum(columns[:, 1] / limit, LAYOUT_SCORE_CAP)
            scores = np.fmax(scores, ambiguity)
        return scores

    def _calibrate_lung_check(self, layout, everyone=None):
        """Set ``lung_check_``, ``lung_check_pass_rate_`` and ``lung_ambiguity_threshold_``.

        ``layout`` holds the calibration images' :func:`_lung_columns`, which
        set the pass rate. The ambiguity limit comes from ``everyone`` (the
        columns of every image of ``fit``; None: ``layout``): the segmenter
        owes nothing to a classifier, so its training images are as new to it
        as the validation images, and a 99 % quantile needs more images than
        a validation split holds (with 50 images it flagged 5.6 % more of the
        new X-rays of ``tests/test_ood.py`` instead of 1 %).
        """
        self.lung_check_ = False
        self.lung_check_pass_rate_ = None
        self.lung_ambiguity_threshold_ = None
        if not self.lung_check:
            return
        layout = np.asarray(layout, dtype=np.float64).reshape(len(layout), -1)
        rate = float(np.mean(layout[:, 0] <= 1.0))
        self.lung_check_pass_rate_ = rate
        self.lung_check_ = rate >= LUNG_CHECK_MIN_PASS
        if everyone is not None:
            layout = np.asarray(everyone, dtype=np.float64).reshape(len(everyone), -1)
        ambiguity = layout[:, 1] if layout.shape[1] > 1 else np.zeros(0)
        ambiguity = ambiguity[np.isfinite(ambiguity)]
        if self.lung_check_ and len(ambiguity):
            # Never 0: an image of certain lungs (no ambiguous pixel) must pass.
            self.lung_ambiguity_threshold_ = max(
                float(np.quantile(ambiguity, LUNG_AMBIGUITY_QUANTILE)), np.finfo(np.float64).tiny
            )
        if not self.lung_check_:
            warnings.warn(
                f"OODDetector: only {rate:.0%} of the calibration images pass the lung layout check "
                "(skxray.segmentation.lung_layout: two lungs side by side, 10-70 % of the image), "
                f"fewer than {LUNG_CHECK_MIN_PASS:.0%}: they do not look like upright frontal chest "
                "X-rays to the lung segmenter, so the check is off (lung_check_ is False).",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit the feature statistics and set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width), (n_samples, n_features) or \
(n_samples,) of file paths
            In-distribution images, at least 10, ideally ones ``estimator``
            did not train on (see Notes). Paths need a skxray classifier as
            ``estimator``.
        y : array-like of shape (n_samples,), default=None
            Labels, optional: class-conditional means for the Mahalanobis
            distance and folds stratified by class.

        Returns
        -------
        self : OODDetector
            The fitted detector.
        """
        self._check_params()
        self.features_ = self._resolve_features()
        # The layout scores come with the features, in the same pass; whether the
        # check stays on is decided at the end, from the images of fit.
        self.lung_check_ = bool(self.lung_check)
        source = _Source.from_X(X, self.estimator)
        n = len(source)
        if n < MIN_SAMPLES:
            raise ValueError(
                f"OODDetector needs at least {MIN_SAMPLES} images to fit and calibrate; got {n}."
            )
        codes = None
        if y is not None:
            y = np.asarray(y)
            if y.shape != (n,):
                raise ValueError(f"y must have shape ({n},) like X; got {y.shape}.")
            codes = np.unique(y, return_inverse=True)[1].astype(np.int64)
        rng = check_random_state(self.random_state)
        if _uses_descriptor(self.features_):
            self._descriptor = _fit_descriptor(source, np.arange(n), rng)
        raw = self._raw_features(source, X)
        layout = raw.pop("lungs", np.zeros((0, 2)))
        everyone = np.arange(n)
        labels = None if y is None else _ReferenceLabels(np.unique(y), self._estimator_proba(X, np.unique(y)))
        # The images of fit are held out by contract, so they are the reference.
        self._fit_from_raw(
            raw, codes, {name: everyone for name in raw}, rng, reference=everyone, labels=labels
        )
        self._calibrate_lung_check(layout)
        return self

    def _estimator_proba(self, X, classes):
        """``estimator.predict_proba(X)`` with columns in the order of ``classes``, or None without one."""
        est = self.estimator
        if est is None or not hasattr(est, "predict_proba") or not hasattr(est, "classes_"):
            return None
        if set(np.asarray(est.classes_).tolist()) != set(np.asarray(classes).tolist()):
            return None
        proba = np.asarray(est.predict_proba(X), dtype=np.float64)
        order = [np.flatnonzero(np.asarray(est.classes_) == c)[0] for c in classes]
        return proba[:, order]

    def _fit_from_raw(self, raw, y_codes, eligible, rng, reference=None, labels=None, groups=None):
        """Fit the Gaussians and calibrate each block on its ``eligible`` images.

        ``eligible[name]`` lists the images whose held-out scores are fair
        for block ``name`` (all images, or only the validation images for a
        classifier's own embedding). ``reference`` lists the held-out images
        whose features :func:`shift_test` compares a batch with (None: no
        reference, the shift test is unavailable). ``labels``, a
        ``_ReferenceLabels``, makes the reference a labelled one (classes,
        the reference images' labels and the classifier's probabilities on
        them, aligned with ``reference``).
        """
        n = len(next(iter(raw.values())))
        self.n_samples_fit_ = n
        self._gaussians = {}
        self.block_thresholds_ = {}
        self.reference_ = None
        self.reference_bandwidth_ = None
        self.reference_groups_ = None
        self.reference_classes_ = self.reference_labels_ = None
        self.reference_proba_ = self.training_prevalence_ = None
        if self.method != "mahalanobis":
            self.calibration_scores_ = _logit_scores(self.method, raw["logits"][eligible["logits"]])
            self.threshold_ = _threshold(self.calibration_scores_, self.quantile, parametric=False)
            return self
        level = 1.0 - (1.0 - self.quantile) / len(self.features_)
        held_out = {}
        for name in self.features_:
            distances, gaussian = _cross_fitted_distances(
                raw[name], y_codes, eligible[name], self.cv, rng, groups=groups
            )
            gaussian.threshold = _threshold(distances, level, parametric=True)
            self._gaussians[name] = gaussian
            self.block_thresholds_[name] = gaussian.threshold
            held_out[name] = dict(zip(eligible[name].tolist(), distances / gaussian.threshold))
        common = sorted(set.intersection(*(set(h) for h in held_out.values())))
        self.calibration_scores_ = np.array(
            [max(held_out[name][i] for name in self.features_) for i in common], dtype=np.float64
        )
        self.threshold_ = 1.0
        if reference is not None and len(reference) >= 2:
            reference = np.asarray(reference, dtype=np.int64)
            keep = np.arange(len(reference))
            if len(reference) > _MAX_SHIFT_SAMPLES:
                keep = np.sort(rng.choice(len(reference), _MAX_SHIFT_SAMPLES, replace=False))
            reference = reference[keep]
            self.reference_ = self._shift_space({name: raw[name][reference] for name in self.features_})
            self.reference_bandwidth_ = _median_bandwidth(self.reference_)
            if groups is not None:
                # Codes, not the ids: which reference images share a patient, nothing more.
                self.reference_groups_ = np.unique(np.asarray(groups)[reference], return_inverse=True)[1]
            if labels is not None:
                self._set_reference_labels(labels, y_codes, reference, keep)
        return self

    def _set_reference_labels(self, labels, y_codes, reference, keep):
        """Keep the classes, the reference images' labels and probabilities, and the training shares."""
        self.reference_classes_ = np.asarray(labels.classes)
        k = len(self.reference_classes_)
        self.reference_labels_ = np.asarray(y_codes, dtype=np.int64)[reference]
        self.training_prevalence_ = np.bincount(y_codes, minlength=k) / len(y_codes)
        if labels.proba is not None:
            self.reference_proba_ = np.asarray(labels.proba, dtype=np.float64)[keep]

    @property
    def has_labelled_reference_(self):
        """Whether :func:`shift_test` can tell a change of case mix from one of the images.

        True when the reference images' labels and the classifier's
        probabilities on them are stored (skxray classifiers fitted with a
        validation split, from this release on).
        """
        return self.has_reference_ and getattr(self, "reference_proba_", None) is not None

    @property
    def has_reference_(self):
        """Whether :func:`shift_test` can use this detector (a held-out reference sample is stored)."""
        return getattr(self, "reference_", None) is not None

    def _shift_space(self, raw):
        """The features the shift test compares: each block standardised, blocks weighted equally."""
        blocks = []
        for name in self.features_:
            gaussian = self._gaussians[name]
            standardised = (raw[name] - gaussian.center) / gaussian.scale
            blocks.append(standardised / np.sqrt(standardised.shape[1]))
        return np.hstack(blocks)

    # ------------------------------------------------------------ prediction
    def ood_score(self, X):
        """Out-of-distribution score of each image; higher = less like training.

        For ``"mahalanobis"``, the Mahalanobis distance to the nearest class
        mean divided by its calibrated threshold (1 is the edge of the
        training distribution); with two feature blocks, the larger of the
        two ratios. For ``"energy"``, ``-logsumexp(logits)``; for ``"msp"``,
        one minus the top probability. An image is out of distribution when
        its score exceeds ``threshold_``. This is the score of the
        classifiers' ``ood_score``; :meth:`score_samples` is its negative.

        Parameters
        ----------
        X : array-like
            Images in the format of ``fit`` (arrays, or file paths).

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Float64 scores.
        """
        check_is_fitted(self, "threshold_")
        source = _Source.from_X(X, self.estimator)
        return self._scores_from_raw(self._raw_features(source, X))

    def score_parts(self, X):
        """Each image's :meth:`ood_score`, with the parts it is made of and which flagged it.

        One pass over the images, as :meth:`ood_score`. An image that is
        flagged may be flagged by its features (its distance to the
        training images is beyond the threshold: another hospital, scanner
        or protocol, or not an X-ray at all) or by the lung check (the lung
        segmenter does not find the two lungs of an upright frontal chest
        X-ray: a rotated film, a photo, a face; see
        :func:`skxray.segmentation.lung_layout`), or by both.

        Parameters
        ----------
        X : array-like
            Images in the format of ``fit`` (arrays, or file paths).

        Returns
        -------
        parts : :class:`sklearn.utils.Bunch`
            ``score``: :meth:`ood_score` (float64); ``distance``: the score
            of the features alone, what :meth:`ood_score` is without the
            lung check; ``lung_layout``: the lung layout's score (above 1
            outside the rule), and ``lung_ambiguity``: the lung ambiguity
            over ``lung_ambiguity_threshold_`` (above 1 beyond it; None for a
            detector without that limit), both None when the check is off
            (``lung_check_`` False); ``flagged_by``: per image, ``""`` (not
            flagged), ``"distance"``, ``"lung check"`` or
            ``"distance, lung check"``.
        """
        check_is_fitted(self, "threshold_")
        source = _Source.from_X(X, self.estimator)
        raw = self._raw_features(source, X)
        lungs = raw.get("lungs")
        layout = ambiguity = None
        if lungs is not None:
            layout = np.asarray(lungs[:, 0], dtype=np.float64)
            limit = getattr(self, "lung_ambiguity_threshold_", None)
            if limit is not None:
                ambiguity = np.asarray(lungs[:, 1], dtype=np.float64) / limit
        distance = self._scores_from_raw({k: v for k, v in raw.items() if k != "lungs"})
        score = self._scores_from_raw(raw)
        flagged = score > self.threshold_
        by_distance = flagged & (distance > self.threshold_)
        by_lungs = (
            flagged & (self._lung_check_scores(lungs) > 1.0)
            if lungs is not None else np.zeros(len(score), dtype=bool)
        )
        flagged_by = np.array(
            [", ".join(name for name, hit in (("distance", d), ("lung check", g)) if hit)
             for d, g in zip(by_distance, by_lungs)],
            dtype=object,
        )
        return Bunch(score=score, distance=distance, lung_layout=layout, lung_ambiguity=ambiguity,
                     flagged_by=flagged_by)

    def score_samples(self, X):
        """Normality of each image, scikit-learn's convention: higher = more like training.

        ``-ood_score(X)``, as in :class:`sklearn.ensemble.IsolationForest`.

        Parameters
        ----------
        X : array-like
            Images in the format of ``fit`` (arrays, or file paths).

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Float64 scores.
        """
        return -self.ood_score(X)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative means out of distribution.

        Parameters
        ----------
        X : array-like
            Images, as for :meth:`score_samples`.

        Returns
        -------
        margin : ndarray of shape (n_samples,)
            Float64 margins; 0 at the threshold.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """-1 for the images that are out of distribution, +1 for the others.

        Parameters
        ----------
        X : array-like
            Images in the format of ``fit``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            ``-1`` (outlier) or ``1`` (inlier), as scikit-learn's outlier
            detectors return.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    @property
    def offset_(self):
        """``-threshold_``: :meth:`decision_function` is ``score_samples - offset_``."""
        check_is_fitted(self, "threshold_")
        return -self.threshold_

    # ------------------------------------------------------------ persistence
    def _get_state(self):
        """``(config, arrays)``: JSON-able settings and float64 arrays, no pickle."""
        check_is_fitted(self, "threshold_")
        random_state = self.random_state
        config = {
            "params": {
                "method": self.method,
                "quantile": float(self.quantile),
                "features": self.features,
                "cv": int(self.cv),
                "random_state": random_state if isinstance(random_state, numbers.Integral) else None,
                "lung_check": bool(self.lung_check),
            },
            "lung_check_": bool(getattr(self, "lung_check_", False)),
            "lung_check_pass_rate_": getattr(self, "lung_check_pass_rate_", None),
            "lung_ambiguity_threshold_": getattr(self, "lung_ambiguity_threshold_", None),
            "features_": list(self.features_),
            "threshold_": float(self.threshold_),
            "n_samples_fit_": int(self.n_samples_fit_),
            "gaussians": {},
            "reference_bandwidth_": self.reference_bandwidth_,
        }
        arrays = {"calibration_scores_": np.asarray(self.calibration_scores_, dtype=np.float64)}
        if self.has_reference_:
            arrays["reference_"] = np.asarray(self.reference_, dtype=np.float64)
        if getattr(self, "reference_groups_", None) is not None:
            arrays["reference_groups_"] = np.asarray(self.reference_groups_, dtype=np.float64)
        if getattr(self, "reference_labels_", None) is not None:
            config["reference_classes_"] = self.reference_classes_.tolist()
            arrays["reference_labels_"] = self.reference_labels_.astype(np.float64)
            arrays["training_prevalence_"] = np.asarray(self.training_prevalence_, dtype=np.float64)
            if self.reference_proba_ is not None:
                arrays["reference_proba_"] = np.asarray(self.reference_proba_, dtype=np.float64)
        for name, gaussian in self._gaussians.items():
            cfg, arr = gaussian.state()
            config["gaussians"][name] = cfg
            arrays.update({f"{name}.{k}": np.asarray(v, dtype=np.float64) for k, v in arr.items()})
        if _uses_descriptor(self.features_):
            cfg, arr = self._descriptor.state()
            config["descriptor"] = cfg
            arrays.update({f"descriptor.{k}": v for k, v in arr.items()})
        return config, arrays

    @classmethod
    def _from_state(cls, config, arrays, estimator=None):
        params = dict(config["params"])
        if params["random_state"] is not None:
            params["random_state"] = int(params["random_state"])
        detector = cls(**params, estimator=estimator)
        detector.features_ = tuple(config["features_"])
        detector.threshold_ = float(config["threshold_"])
        detector.n_samples_fit_ = int(config["n_samples_fit_"])
        # Models saved before the lung check (issue 25) have none: lung_check False.
        detector.lung_check_ = bool(config.get("lung_check_", False))
        rate = config.get("lung_check_pass_rate_")
        detector.lung_check_pass_rate_ = None if rate is None else float(rate)
        # Saved before the lung ambiguity limit: the lung check is the layout rule alone.
        limit = config.get("lung_ambiguity_threshold_")
        detector.lung_ambiguity_threshold_ = None if limit is None else float(limit)
        detector.calibration_scores_ = np.asarray(arrays["calibration_scores_"], dtype=np.float64)
        detector._gaussians = {}
        for name in detector.features_:
            prefix = f"{name}."
            detector._gaussians[name] = _Gaussian.from_state(
                config["gaussians"][name],
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
            )
        detector.block_thresholds_ = {k: g.threshold for k, g in detector._gaussians.items()}
        # Models saved before the shift test (skxray 0.1.0.dev0 before it) have no reference.
        detector.reference_ = arrays.get("reference_")
        # Models saved before exclude_patient_pairs have no groups: every image its own patient.
        groups = arrays.get("reference_groups_")
        detector.reference_groups_ = None if groups is None else np.asarray(groups).astype(np.int64)
        bandwidth = config.get("reference_bandwidth_")
        detector.reference_bandwidth_ = None if bandwidth is None else float(bandwidth)
        # Models saved before the labelled reference (issue 25) have none: their
        # shift test can only say whether something differs, not what.
        classes = config.get("reference_classes_")
        detector.reference_classes_ = None if classes is None else np.asarray(classes)
        labels = arrays.get("reference_labels_")
        detector.reference_labels_ = None if labels is None else np.asarray(labels).astype(np.int64)
        detector.training_prevalence_ = arrays.get("training_prevalence_")
        detector.reference_proba_ = arrays.get("reference_proba_")
        if _uses_descriptor(detector.features_):
            detector._descriptor = _ImageDescriptor.from_state(
                config["descriptor"], {"edges": arrays["descriptor.edges"]}
            )
        return detector


def _uses_descriptor(features):
    return "image" in features or "layers" in features


def _has_layer_statistics(estimator):
    """Whether ``estimator`` is a fitted skxray network that can report its hidden layers' statistics."""
    return (
        estimator is not None
        and _is_skxray_classifier(estimator)
        and hasattr(getattr(estimator, "net_", None), "module_")
        and hasattr(estimator.net_.module_, "activation_stats")
    )


def _lung_columns(layout):
    """``(n, 2)`` float64: each image's lung layout score and lung ambiguity."""
    return np.column_stack([layout.score, layout.ambiguity]).astype(np.float64)


def _lung_scores(source, indices=None):
    """:func:`_lung_columns` of the images of ``source`` (all, or ``indices``), a batch at a time."""
    if indices is None:
        scores = [_lung_columns(lung_layout(x.numpy())) for x in source.batches()]
    else:
        indices = np.asarray(indices, dtype=np.int64)
        scores = [_lung_columns(lung_layout(source.take(indices[i : i + _BATCH])))
                  for i in range(0, len(indices), _BATCH)]
    return np.concatenate(scores) if scores else np.zeros((0, 2))


def _fit_descriptor(source, indices, rng):
    if len(indices) > _EDGE_SAMPLE_IMAGES:
        indices = np.sort(rng.choice(indices, _EDGE_SAMPLE_IMAGES, replace=False))
    return _ImageDescriptor().fit(source.take(indices), rng)


# --------------------------------------------------------------------------
# Classifier integration


def _fit_for_classifier(clf, dataset, y_enc, valid_idx, rng, train_embeddings=None, groups=None):
    """The detector a classifier fits at the end of ``fit`` (``ood=True``).

    For the CNN and the FNN: one Mahalanobis distance on summary statistics
    of every hidden layer's output (``activation_stats``) together
    with the image descriptor (``features="layers"``), with class means
    from ``y_enc``. For the ResNet-50: the embedding and the image
    descriptor, one Gaussian each (``features="both"``). Thresholds are set
    at :data:`CLASSIFIER_QUANTILE`.

    Blocks read from the network are calibrated on ``valid_idx``, the
    validation images it never trained on (cross-fitted among themselves,
    the training images always in the Gaussian), and those images are the
    reference sample of :func:`shift_test`. The image descriptor owes
    nothing to the network, so it is cross-fitted on all the images.
    Without a validation split (``validation_fraction`` None or 0, or too
    few images to stratify) the network blocks are calibrated on the
    training images themselves: the network fitted them, so they look more
    familiar than new images and the threshold is too low, flagging more
    than ``1 - quantile`` of new in-distribution images; and there is no
    reference sample, so :func:`shift_test` refuses.

    ``train_embeddings`` (all images, in order) spares the pass over the
    images when the embeddings are at hand (the ResNet-50's cached
    features). ``groups`` (one per image, e.g. patients; ``fit``'s) keeps a
    group's images in one fold of the cross-fitting, and out of the
    Gaussian that scores them. Returns None, with a warning, below
    :data:`MIN_SAMPLES` images.
    """
    n = len(dataset)
    if n < MIN_SAMPLES:
        warnings.warn(
            f"{type(clf).__name__}: {n} training images are too few to calibrate an "
            f"out-of-distribution detector (at least {MIN_SAMPLES}); ood_ is None and "
            "predict_with_abstention only applies min_confidence.",
            UserWarning,
            stacklevel=3,
        )
        return None
    valid_idx = None if valid_idx is None else np.sort(np.asarray(valid_idx, dtype=np.int64))
    held_out = valid_idx is not None and len(valid_idx) >= 2
    # The layer statistics are a few hundred features whose distances
    # concentrate: their threshold needs enough held-out images to be placed
    # well (with 6, new phantoms were flagged 10-70 % of the time instead of
    # 5 %). Below that, the embedding and the descriptor, which are forgiving.
    few = not held_out or len(valid_idx) < MIN_LAYER_CALIBRATION
    detector = OODDetector(
        quantile=CLASSIFIER_QUANTILE, estimator=clf, features="both" if few else "auto",
        lung_check=True,
    )
    detector.features_ = detector._resolve_features()
    everyone = np.arange(n)
    source = _Source(dataset, clf.batch_size)
    detector._descriptor = _fit_descriptor(source, everyone, rng)
    if train_embeddings is None or "embedding" not in detector.features_:
        detector.lung_check_ = True  # its scores come with the features, in the same pass
        raw = detector._raw_features(source, None)
    else:
        X = getattr(dataset, "X", None)
        images = (
            (X[i : i + _BATCH].numpy() for i in range(0, n, _BATCH))
            if X is not None
            else (x.numpy() for x in source.batches())
        )
        raw = {
            "embedding": np.asarray(train_embeddings, dtype=np.float64),
            "image": np.concatenate([detector._descriptor.transform(x) for x in images]),
        }
    layout = raw.pop("lungs", None)
    eligible = {name: (valid_idx if held_out and name in _NETWORK_BLOCKS else everyone) for name in raw}
    labels = None
    if held_out:
        # The classifier's probabilities on its validation images: with their
        # labels, the confusion matrix of the shift test's case-mix estimate.
        proba = clf._dataset_proba(Subset(dataset, valid_idx.tolist()))
        labels = _ReferenceLabels(np.asarray(clf.classes_), proba)
    detector._fit_from_raw(
        raw, np.asarray(y_enc, dtype=np.int64), eligible, rng,
        reference=valid_idx if held_out else None, labels=labels, groups=groups,
    )
    # The lung layout's pass rate is taken on the images the threshold is (the
    # validation images when there are some); the ambiguity limit on all of them.
    if layout is None:
        layout = _lung_scores(source)
    detector._calibrate_lung_check(layout[valid_idx] if held_out else layout, everyone=layout)
    return detector


def shift_test(estimator, X, *, alpha=0.05, n_permutations=1000, prevalence_method="bbse",
               exclude_patient_pairs=False, random_state=None):
    """Has the case mix changed, and do the images differ beyond it?

    Two questions, two answers:

    1. **The case mix.** The batch's class proportions are estimated from
       the classifier's predictions and its confusion matrix on the held-out
       reference images (black-box shift estimation, BBSE; Lipton, Wang &
       Smola, ICML 2018; or ``prevalence_method="em"``, the EM prior
       adjustment of Saerens et al., Neural Computation 2002), with a 95 %
       interval from a parametric bootstrap. Whether they differ from the
       training proportions is tested on the predicted-class counts of the
       batch and of the reference (black-box shift detection, Rabanser et
       al., NeurIPS 2019).
    2. **The images.** Under a pure change of case mix the images of each
       class look as before. So the batch is compared with a subsample of
       the labelled reference, drawn without replacement, whose class mix
       is the batch's estimated one: a kernel two-sample (MMD) permutation
       test (Gretton et al., JMLR 2012) in the detector's feature space,
       with a Gaussian kernel whose width is fixed from the whole reference
       (median heuristic). A small p-value means a new hospital, scanner or
       protocol.

    The reference is the features of images the network never trained on,
    stored in the detector at ``fit``, with their labels and the
    classifier's probabilities on them: for a classifier fitted with
    ``ood=True``, its validation images. A model saved by an earlier release
    has no labels for them: its test compares the batch with the whole
    reference and can only say that something differs, case mix or images,
    which its ``verdict()`` says. So does an :class:`OODDetector` fitted
    without ``y`` or without a classifier.

    The case-mix estimate is only valid when the images do not differ: at a
    new hospital the predictions are wrong, and so are the proportions
    estimated from them. A large p-value is no proof of sameness: a shift
    the features do not see passes, and a batch of 20 images has little
    power against a small shift.

    Parameters
    ----------
    estimator : fitted skxray classifier or OODDetector
        A classifier uses its ``ood_`` detector.
    X : array-like or ShiftFeatures
        The batch, in the format the estimator was fitted on; at least
        :data:`MIN_SHIFT_TEST_IMAGES` images. Or their features, computed
        once by :func:`shift_features` for a pool of images and indexed
        (``pool[idx]``): testing many batches of one pool then costs no
        further pass of the network.
    alpha : float in (0, 1), default=0.05
        Significance level of both tests.
    n_permutations : int, default=1000
        Permutations of the p-value (at least 19); the smallest p-value
        possible is ``1 / (1 + n_permutations)``.
    prevalence_method : {"bbse", "em"}, default="bbse"
        How the batch's class proportions are estimated (see the user
        guide's page on new hospitals for why BBSE is the default).
    exclude_patient_pairs : bool, default=False
        Leave the pairs of reference images of one patient out of the image
        part's statistic:
        a patient's images are alike, and an image-level permutation test
        takes that for likeness between independent images, so a small
        reference of few patients makes it reject more often than
        ``alpha`` when only the case mix changed. Needs a model fitted with
        ``groups`` (patient ids; the reference then knows which of its
        images share a patient, as codes, not ids); otherwise nothing is
        left out and ``patient_pairs_excluded`` is False. Measured in
        :doc:`/new_hospital`: fewer false alarms on batches of another case
        mix, a little less power on small batches of new images.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations, the bootstrap, the matched subsample, and
        the subsample when a side has more than 2000 images.

    Returns
    -------
    result : ShiftTestResult
        Both answers (``case_mix_changed``, ``prevalence`` and its
        interval; ``images_differ``, ``pvalue``); ``verdict()`` says them
        in sentences.

    Raises
    ------
    ValueError
        If the estimator has no detector or its detector no reference
        sample (fitted without a validation split), or a parameter is
        invalid.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.ood import OODDetector, shift_test
    >>> X, _ = make_phantom_cxr(200, image_size=32, random_state=0)
    >>> detector = OODDetector(random_state=0).fit(X)
    >>> X_b, _ = make_phantom_cxr(30, image_size=32, scanner="B", random_state=1)
    >>> shift_test(detector, X_b, random_state=0).shifted
    True
    """
    detector = _shift_test_detector(estimator)
    alpha = check_open_fraction(alpha, "alpha", "shift_test")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, numbers.Integral) or n_permutations < 19:
        raise ValueError(f"shift_test: n_permutations must be an int >= 19; got {n_permutations!r}.")
    if prevalence_method not in PREVALENCE_METHODS:
        raise ValueError(
            f"shift_test: prevalence_method must be one of {PREVALENCE_METHODS}; got {prevalence_method!r}."
        )
    if not isinstance(exclude_patient_pairs, (bool, np.bool_)):
        raise ValueError(f"shift_test: exclude_patient_pairs must be True or False; got {exclude_patient_pairs!r}.")
    if isinstance(X, ShiftFeatures):
        n, (Z_test, proba) = len(X), _checked_shift_features(detector, X)
    else:
        source = _Source.from_X(X, detector.estimator)
        n = len(source)
    if n < MIN_SHIFT_TEST_IMAGES:
        raise ValueError(f"shift_test needs at least {MIN_SHIFT_TEST_IMAGES} images in X; got {n}.")
    if not isinstance(X, ShiftFeatures):
        Z_test, proba = _batch_features(detector, source, X)
    return _shift_test_features(
        detector, Z_test, proba, alpha=alpha, n_permutations=int(n_permutations),
        prevalence_method=prevalence_method, exclude_patient_pairs=bool(exclude_patient_pairs),
        random_state=random_state,
    )


@dataclass(frozen=True)
class ShiftFeatures:
    """What :func:`shift_test` compares of a set of images, computed once by :func:`shift_features`.

    Index it (``pool[idx]``, any numpy index) to get the features of a
    batch, and pass that to :func:`shift_test` in place of the images: a
    study that tests many batches drawn from one pool of images then runs
    the network over the pool once. The results are those of
    :func:`shift_test` on the batch's images, up to the float32 rounding of
    the network's outputs (which depends on the batch they are computed in).

    Attributes
    ----------
    features : ndarray of shape (n_samples, n_features)
        The images in the detector's shift-test feature space.
    proba : ndarray of shape (n_samples, n_classes) or None
        The classifier's probabilities, columns in the order of the
        detector's ``reference_classes_``, which the case-mix part of the
        test reads; None without a labelled reference. Replaced by None
        (``dataclasses.replace(batch, proba=None)``), the test skips the
        case-mix part and compares the batch with the whole reference.
    """

    features: np.ndarray
    proba: np.ndarray | None = None

    def __len__(self):
        return len(self.features)

    def __getitem__(self, index):
        return ShiftFeatures(self.features[index], None if self.proba is None else self.proba[index])


def shift_features(estimator, X):
    """The features :func:`shift_test` compares, of a pool of images, computed once.

    Parameters
    ----------
    estimator : fitted skxray classifier or OODDetector
        As for :func:`shift_test`; the features are valid for its detector only.
    X : array-like
        Images, in the format the estimator was fitted on.

    Returns
    -------
    features : ShiftFeatures
        Index it to get a batch, and pass that to :func:`shift_test`.

    Raises
    ------
    ValueError
        If the estimator has no detector or its detector no reference sample.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.ood import OODDetector, shift_features, shift_test
    >>> X, _ = make_phantom_cxr(200, image_size=32, random_state=0)
    >>> detector = OODDetector(random_state=0).fit(X)
    >>> X_b, _ = make_phantom_cxr(60, image_size=32, scanner="B", random_state=1)
    >>> pool = shift_features(detector, X_b)       # one pass over the pool
    >>> batch = np.arange(30)
    >>> shift_test(detector, pool[batch], random_state=0).shifted
    True
    """
    detector = _shift_test_detector(estimator)
    return ShiftFeatures(*_batch_features(detector, _Source.from_X(X, detector.estimator), X))


def _checked_shift_features(detector, features):
    """``(Z, proba)`` of a :class:`ShiftFeatures`, checked against the detector's reference."""
    Z, proba = np.asarray(features.features), features.proba
    expected = detector.reference_.shape[1]
    if Z.ndim != 2 or Z.shape[1] != expected:
        raise ValueError(
            f"shift_test: X holds features of shape {Z.shape}, but this detector compares "
            f"{expected} features per image; compute them with shift_features(estimator, X)."
        )
    if proba is not None and detector.has_labelled_reference_:
        proba = np.asarray(proba)
        if proba.shape != (len(Z), len(detector.reference_classes_)):
            raise ValueError(
                f"shift_test: X holds probabilities of shape {proba.shape}; expected "
                f"({len(Z)}, {len(detector.reference_classes_)}), one column per reference class."
            )
    return Z, proba


def _batch_features(detector, source, X):
    """The shift test's features of a batch, and the classifier's probabilities (None without labels)."""
    Z = detector._shift_space(detector._raw_features(source, X, lungs=False))
    proba = None
    if detector.has_labelled_reference_:
        proba = detector._estimator_proba(X, detector.reference_classes_)
    return Z, proba


def _shift_test_detector(estimator):
    """The detector of ``estimator``, checked: fitted, with a reference sample."""
    detector = estimator if isinstance(estimator, OODDetector) else getattr(estimator, "ood_", None)
    if detector is None:
        check_is_fitted(estimator)
        raise ValueError(
            f"shift_test: this {type(estimator).__name__} has no out-of-distribution detector "
            "(ood_ is None): fit it with ood=True on 10 images or more."
        )
    check_is_fitted(detector, "threshold_")
    if not detector.has_reference_:
        raise ValueError(
            "shift_test: the detector has no reference sample of held-out images. A classifier "
            "stores one only when it is fitted with a validation split (validation_fraction > 0); "
            "an OODDetector stores one when fitted with method='mahalanobis'."
        )
    return detector


def _shift_test_features(detector, Z_test, proba, *, alpha=0.05, n_permutations=1000,
                         prevalence_method="bbse", exclude_patient_pairs=False, random_state=None):
    """:func:`shift_test` from the batch's features (``_shift_space``) and probabilities.

    ``proba`` (columns in the order of ``detector.reference_classes_``, or
    None) gives the case-mix part; benchmarks that test many batches of one
    pool compute features and probabilities once and call this.
    """
    rng = check_random_state(random_state)
    Z_ref = detector.reference_
    groups = getattr(detector, "reference_groups_", None)
    if groups is None:
        groups = np.arange(len(Z_ref))
    distinct = _distinct_rows(Z_test)
    n_repeated = len(Z_test) - len(distinct)
    if n_repeated:
        if len(distinct) < MIN_SHIFT_TEST_IMAGES:
            raise ValueError(
                f"shift_test needs at least {MIN_SHIFT_TEST_IMAGES} distinct images in X; got "
                f"{len(Z_test)} images, of which {len(distinct)} distinct (the others repeat them)."
            )
        Z_test = Z_test[distinct]
        proba = None if proba is None else proba[distinct]
    case = {}
    if proba is not None and detector.has_labelled_reference_:
        k = len(detector.reference_classes_)
        ref_pred = np.argmax(detector.reference_proba_, axis=1)
        pred = np.argmax(proba, axis=1)
        q, low, high = _label_shift.estimate(
            prevalence_method, detector.reference_labels_, ref_pred, detector.reference_proba_,
            pred, proba, detector.training_prevalence_, rng,
        )
        case_p = _label_shift.case_mix_pvalue(ref_pred, pred, k)
        matched = _label_shift.matched_subsample(detector.reference_labels_, q, rng)
        if len(matched) >= 2:
            Z_ref, groups = Z_ref[matched], groups[matched]
        case = {
            "reference_matched": len(matched) >= 2,
            "case_mix_changed": bool(case_p < alpha),
            "case_mix_pvalue": case_p,
            "classes": detector.reference_classes_.tolist(),
            "prevalence": q.tolist(),
            "prevalence_low": low.tolist(),
            "prevalence_high": high.tolist(),
            "training_prevalence": np.asarray(detector.training_prevalence_).tolist(),
            "prevalence_method": prevalence_method,
        }
    if len(Z_ref) > _MAX_SHIFT_SAMPLES:
        keep = rng.choice(len(Z_ref), _MAX_SHIFT_SAMPLES, replace=False)
        Z_ref, groups = Z_ref[keep], groups[keep]
    if len(Z_test) > _MAX_SHIFT_SAMPLES:
        Z_test = Z_test[rng.choice(len(Z_test), _MAX_SHIFT_SAMPLES, replace=False)]
    pairs_excluded = exclude_patient_pairs and len(np.unique(groups)) < len(groups)
    if pairs_excluded:
        statistic, pvalue = _mmd_permutation_test_across_patients(
            Z_ref, groups, Z_test, detector.reference_bandwidth_, n_permutations, rng
        )
    else:
        statistic, pvalue = _mmd_permutation_test(
            Z_ref, Z_test, detector.reference_bandwidth_, n_permutations, rng
        )
    images_differ = bool(pvalue < alpha)
    method = "MMD permutation test (Gaussian kernel, median-heuristic width) on " + " + ".join(
        detector.features_
    )
    if case.get("reference_matched"):
        method += f" against a reference matched to the {prevalence_method.upper()} class mix"
    if pairs_excluded:
        method += ", pairs of images of one reference patient left out"
    return ShiftTestResult(
        statistic=statistic, pvalue=pvalue,
        shifted=images_differ or bool(case.get("case_mix_changed")),
        alpha=alpha, n_reference=len(Z_ref), n_test=len(Z_test), n_permutations=n_permutations,
        method=method, images_differ=images_differ, n_repeated=n_repeated,
        patient_pairs_excluded=bool(pairs_excluded), **case,
    )


def adapt_proba(proba, prevalence, training_prevalence):
    """Adapt class probabilities to another prevalence (Bayes' rule for a new prior).

    ``p_new(y | x) = p(y | x) q_y / p_y``, renormalised over the classes
    (Saerens et al., Neural Computation 2002): what the classifier's
    probabilities become when the classes occur with proportions ``q``
    (``prevalence``: known, or estimated by :func:`shift_test`) instead of
    the training proportions ``p`` (``training_prevalence``). Only valid for
    a pure change of case mix: **do not use it when the images differ**
    (``ShiftTestResult.images_differ``: a new hospital, scanner or
    protocol), where the probabilities themselves are not validated and an
    estimated prevalence is wrong too. The gain it brings is measured in
    ``benchmarks/results/new_hospital.json`` (see the user guide).

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Probabilities from ``predict_proba``.
    prevalence : array-like of shape (n_classes,)
        The class proportions at the new site, in the order of the columns.
    training_prevalence : array-like of shape (n_classes,)
        The class proportions of the training images, e.g. a classifier's
        ``ood_.training_prevalence_``.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)
        Float64 probabilities; rows sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.ood import adapt_proba
    >>> adapt_proba(np.array([[0.5, 0.5]]), [0.9, 0.1], [0.5, 0.5]).round(2)
    array([[0.9, 0.1]])
    """
    proba = np.asarray(proba, dtype=np.float64)
    prevalence = np.asarray(prevalence, dtype=np.float64).reshape(-1)
    training_prevalence = np.asarray(training_prevalence, dtype=np.float64).reshape(-1)
    k = proba.shape[1] if proba.ndim == 2 else -1
    for name, value in (("prevalence", prevalence), ("training_prevalence", training_prevalence)):
        if value.shape != (k,) or (value < 0).any() or not np.isclose(value.sum(), 1.0):
            raise ValueError(
                f"adapt_proba: {name} must hold one proportion per column of proba ({k}), "
                f"non-negative and summing to 1; got {value.tolist()}."
            )
    return _label_shift.adapt_proba(proba, prevalence, training_prevalence)


def ood_rate(estimator, X):
    """Share of the images in ``X`` flagged as out of distribution.

    For reports: the OOD rate of an evaluated set.

    Parameters
    ----------
    estimator : fitted skxray classifier or OODDetector
        A classifier uses its ``ood_`` detector.
    X : array-like
        Images in the format the estimator was fitted on.

    Returns
    -------
    rate : float
        Fraction flagged, in [0, 1]; NaN when the classifier has no detector
        (``ood=False``, or fitted on fewer than 10 images).
    """
    detector = estimator if isinstance(estimator, OODDetector) else getattr(estimator, "ood_", None)
    if detector is None:
        check_is_fitted(estimator)
        return float("nan")
    return float(np.mean(detector.predict(X) == -1))
