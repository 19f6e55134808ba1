"""Cross-validation machinery and scores shared by the audit's checks.

``proba_in_order``, ``two_class_scale``, ``lung_masked`` and ``border_masked``
are public, exported by :mod:`skxray.audit`: they define what the audit
measures, so that ``benchmarks/accuracy.py`` and users can measure the same.
"""

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline

# --------------------------------------------------------------------------
# scores


def two_class_scale(score, k):
    """Rescale a balanced accuracy with chance 1/k to the two-class scale.

    Chance maps to 0.5 and a perfect score stays 1, so one threshold serves
    any number of classes: the audit's thresholds (``DEFAULT_THRESHOLDS``)
    are on this scale.

    Parameters
    ----------
    score : float or None
        A balanced accuracy of a ``k``-class problem.
    k : int
        The number of classes (at least 2).

    Returns
    -------
    scaled : float or None
        ``0.5 + 0.5 * (score - 1/k) / (1 - 1/k)``; None when ``score`` is
        None or NaN.

    Examples
    --------
    >>> from skxray.audit import two_class_scale
    >>> two_class_scale(1 / 3, 3), two_class_scale(1.0, 3)
    (0.5, 1.0)
    """
    if score is None or not np.isfinite(score):
        return None
    chance = 1.0 / k
    return 0.5 + 0.5 * (score - chance) / (1.0 - chance)


def scores(y_enc, proba, k):
    """Accuracy, balanced accuracy and ROC AUC of out-of-fold probabilities."""
    pred = np.argmax(proba, axis=1)
    out = {
        "accuracy": float(accuracy_score(y_enc, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_enc, pred)),
        "roc_auc": None,
    }
    try:
        if k == 2:
            out["roc_auc"] = float(roc_auc_score(y_enc == 1, proba[:, 1]))
        else:
            p = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
            out["roc_auc"] = float(roc_auc_score(y_enc, p, multi_class="ovr", labels=range(k)))
    except ValueError:
        pass
    return out


def mean_recall(y_enc, pred, present):
    """Balanced accuracy restricted to the classes present in ``y_enc``."""
    return float(np.mean([np.mean(pred[y_enc == c] == c) for c in present]))


# --------------------------------------------------------------------------
# predictions and masking


def proba_in_order(model, X, classes):
    """``model.predict_proba(X)`` with its columns in the order of ``classes``.

    A model fitted on a fold that lacked a class has no column for it; that
    column is 0, so that the folds' out-of-fold probabilities line up.

    Parameters
    ----------
    model : fitted classifier
        Any estimator with ``predict_proba`` and ``classes_``.
    X : array-like
        Its input.
    classes : sequence
        Every class, in the order wanted; it must hold each of
        ``model.classes_``.

    Returns
    -------
    proba : ndarray of shape (n_samples, len(classes))
        Float64 probabilities.
    """
    classes = list(classes)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    out = np.zeros((len(X), len(classes)))
    for j, c in enumerate(model.classes_):
        out[:, classes.index(c)] = proba[:, j]
    return out


def lung_masked(X, lung_mask):
    """``X`` with the lungs hidden: filled with each image's (channel's) mean outside them.

    What the audit's ``"lungs"`` check predicts on: a model that still
    scores well without the lungs reads something else. The mean of the
    whole image would leak what the lungs hold (an opacity brightens it);
    the mean of the rest of the image carries nothing of them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, height, width) or (n_samples, channels, height, width)
        Images.
    lung_mask : array-like of bool, shape (height, width) or (n_samples, height, width)
        One mask for every image, or one per image (e.g. from
        :func:`skxray.segmentation.lung_masks`).

    Returns
    -------
    X_masked : ndarray
        A copy of ``X``, of its dtype and shape.

    See Also
    --------
    border_masked : hide a band along the edges instead.
    """
    lung_mask = np.asarray(lung_mask, dtype=bool)
    if lung_mask.ndim == 2:
        Xm = X.copy()
        fill = X[..., ~lung_mask].mean(axis=-1)
        Xm[..., lung_mask] = fill[..., None]
        return Xm
    m = lung_mask if X.ndim == 3 else lung_mask[:, None]
    outside = (~m).sum(axis=(-2, -1))
    fill = (X * ~m).sum(axis=(-2, -1)) / np.maximum(outside, 1)
    return np.where(m, fill[..., None, None], X).astype(X.dtype, copy=False)


def masks_at(masks, shape):
    """Boolean ``(N, H, W)`` masks resized (nearest) to ``shape`` = (H, W) when they differ."""
    if masks.shape[1:] == tuple(shape):
        return masks
    import torch

    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="nearest")[:, 0].numpy() > 0.5


def border_band(h, w, fraction):
    """Boolean (h, w) mask of a band of ``fraction`` of each side along the edges."""
    band_h, band_w = int(fraction * h), int(fraction * w)
    keep = np.zeros((h, w), dtype=bool)
    keep[band_h : h - band_h, band_w : w - band_w] = True
    return ~keep


def border_masked(X, fraction):
    """``X`` with a band along the edges set to 0, where markers and text lie.

    The audit's ``"lungs"`` check compares it with :func:`lung_masked`.

    Parameters
    ----------
    X : ndarray of shape (n_samples, height, width) or (n_samples, channels, height, width)
        Images.
    fraction : float in [0, 0.5)
        Width of the band, as a fraction of each side (the audit uses 0.12).

    Returns
    -------
    X_masked : ndarray
        A copy of ``X``.
    """
    Xm = X.copy()
    Xm[..., border_band(*X.shape[-2:], fraction)] = 0.0
    return Xm


def classifier_and_input(model, X):
    """The skxray classifier inside ``model`` and ``X`` as that classifier sees it."""
    if isinstance(model, Pipeline):
        return model[-1], model[:-1].transform(X)
    return model, X


# --------------------------------------------------------------------------
# out-of-fold predictions


class _GradcamSums:
    """Grad-CAM evidence of the test folds: share inside the lungs, summed heatmap."""

    def __init__(self, n):
        self.share = np.full(n, np.nan)
        self.total = None
        self.region = None
        self.error = None

    def add(self, model, X, test, lung):
        if self.error is not None:
            return
        from skxray.explain import gradcam, heatmap_mass_in_region

        try:
            clf, Xt = classifier_and_input(model, X)
            # HiResCAM: faithful for the CNN's flatten head, where plain
            # Grad-CAM's averaged gradients can cancel out; identical to
            # Grad-CAM after the ResNet's global pooling.
            heat = gradcam(clf, Xt, method="hirescam")
        except (TypeError, ValueError, AttributeError) as exc:
            # No Grad-CAM for this model (e.g. no convolutional layer):
            # report it as unavailable rather than from some folds only.
            self.error = f"{type(exc).__name__}: {exc}"
            self.share[:] = np.nan
            self.total = self.region = None
            return
        region = masks_at(lung, heat.shape[1:])
        self.share[test] = heatmap_mass_in_region(heat, region)
        inside = region.sum(axis=0).astype(np.float64)
        self.region = inside if self.region is None else self.region + inside
        total = heat.sum(axis=0)
        self.total = total if self.total is None else self.total + total

    def results(self):
        out = {"gradcam_share": self.share, "gradcam_sum": self.total, "gradcam_error": self.error}
        if self.region is not None:
            # Per pixel: the share of images whose lungs cover it.
            out["gradcam_region"] = self.region / np.isfinite(self.share).sum()
        return out


def run_cv(
    estimator,
    X,
    y,
    classes,
    splits,
    *,
    masks=False,
    gradcam=False,
    border_fraction=0.12,
    lung=None,
    verbose=0,
    label="",
):
    """Fit a clone per fold; out-of-fold probabilities (and masked ones, Grad-CAM).

    Returns a dict with ``proba`` (N, k), ``n_fits`` and ``ood_flags`` (NaN
    where the model has no detector); with ``masks`` also ``proba_lungs`` and
    ``proba_borders``; with ``gradcam`` also ``gradcam_share`` (per image),
    ``gradcam_sum`` (summed heatmap), ``gradcam_region`` (per pixel, the share
    of images whose lungs cover it) and ``gradcam_error``. ``lung`` holds the
    lung masks, ``(N, H, W)`` (one per image) or ``(H, W)``; None uses the
    ellipse prior :func:`skxray.explain.central_lung_mask`.
    """
    n, k = len(X), len(classes)
    out = {"proba": np.zeros((n, k)), "n_fits": 0, "ood_flags": np.full(n, np.nan)}
    if (masks or gradcam) and lung is None:
        from skxray.explain import central_lung_mask

        lung = central_lung_mask(*X.shape[-2:])
    if lung is not None:
        lung = np.asarray(lung, dtype=bool)
        lung = np.broadcast_to(lung, (n, *lung.shape)) if lung.ndim == 2 else lung
    if masks:
        out["proba_lungs"] = np.zeros((n, k))
        out["proba_borders"] = np.zeros((n, k))
    cams = _GradcamSums(n) if gradcam else None
    for i, (train, test) in enumerate(splits):
        if verbose:
            print(f"[audit] {label} fold {i + 1}/{len(splits)}: fitting on {len(train)} images")
        model = clone(estimator).fit(X[train], y[train])
        out["n_fits"] += 1
        out["proba"][test] = proba_in_order(model, X[test], classes)
        clf, X_seen = classifier_and_input(model, X[test])
        if getattr(clf, "ood_", None) is not None:
            out["ood_flags"][test] = clf.ood_.predict(X_seen) == -1
        if masks:
            Xt = X[test]
            out["proba_lungs"][test] = proba_in_order(
                model, lung_masked(Xt, lung[test]), classes
            )
            out["proba_borders"][test] = proba_in_order(
                model, border_masked(Xt, border_fraction), classes
            )
        if cams is not None:
            cams.add(model, X[test], test, lung[test])
    if cams is not None:
        out.update(cams.results())
    return out
