"""The audit's parameters: default thresholds and the checks of what ``audit`` is given."""

import numpy as np
from sklearn.pipeline import Pipeline

from skxray._utils import check_border_fraction, is_int, is_real
from skxray._validation import check_image_array, is_path_array
from skxray.audit._report import CHECKS
from skxray.segmentation import REGIONS

#: Default verdict thresholds of :func:`audit` (override some with ``thresholds=``).
#: Scores are balanced accuracies on the two-class scale (chance 0.5, perfect
#: 1); with k classes they are first rescaled as ``0.5 + 0.5 * (score - 1/k) /
#: (1 - 1/k)`` and gaps are scaled the same way, so one set of thresholds
#: serves any number of classes (or sources).
DEFAULT_THRESHOLDS = {
    # 1. image-level minus patient-grouped balanced accuracy
    "leakage_gap_warning": 0.05,
    "leakage_gap_fail": 0.10,
    # 3. source confounding
    "source_recognisable": 0.80,  # source predicted from the images at least this well
    "confounding_warning": 0.70,  # label predicted from the source alone at least this well
    "confounding_fail": 0.90,
    "loso_drop_warning": 0.10,  # in-source minus held-out-source score
    "loso_drop_fail": 0.20,
    # 4. balanced accuracy with the lungs hidden; drop when the borders are hidden
    "lungs_masked_warning": 0.58,
    "lungs_masked_fail": 0.65,
    "border_drop_warning": 0.10,
    "border_drop_fail": 0.20,
    "gradcam_enrichment_warning": 1.0,  # Grad-CAM share in lungs / lung area share
    "min_score": 0.60,  # below this unmasked score, check 4 is inconclusive
    # 5. expected calibration error; deviation of a fold's class proportions
    "ece_warning": 0.10,
    "ece_fail": 0.25,
    "fold_balance_warning": 0.10,
    # 6. share of images whose label the out-of-fold models doubt. Northcutt,
    # Athalye and Mueller (NeurIPS 2021 Datasets and Benchmarks) found 3.3% of
    # the labels of ten curated benchmark test sets wrong on average (at least
    # 6% of ImageNet's validation set), with the same confident learning and human review; more
    # than 5% suspects is more than curated data usually hold. Chosen from that
    # study, not tuned on any skxray data set.
    "label_issues_warning": 0.05,
}


#: Pairs of thresholds where the first (warning) must not exceed the second (fail).
_ORDERED_THRESHOLDS = (
    ("leakage_gap_warning", "leakage_gap_fail"),
    ("confounding_warning", "confounding_fail"),
    ("loso_drop_warning", "loso_drop_fail"),
    ("lungs_masked_warning", "lungs_masked_fail"),
    ("border_drop_warning", "border_drop_fail"),
    ("ece_warning", "ece_fail"),
)


def estimator_name(estimator):
    """The class name of ``estimator`` (its steps for a Pipeline), for the report."""
    if estimator is None:
        return None
    if isinstance(estimator, Pipeline):
        return f"Pipeline({', '.join(type(step).__name__ for _, step in estimator.steps)})"
    return type(estimator).__name__


def check_int_at_least(value, name, minimum):
    """``value`` as an int >= ``minimum``; ``ValueError`` naming it otherwise."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def check_settings(
    *, cv, duplicate_distance, hash_size, border_fraction, n_bins, source_model, lung_region
):
    """Check the numeric and named settings of ``audit``; returns them converted."""
    settings = {
        "cv": check_int_at_least(cv, "cv", 2),
        "duplicate_distance": check_int_at_least(duplicate_distance, "duplicate_distance", 0),
        "hash_size": check_int_at_least(hash_size, "hash_size", 4),
        "border_fraction": check_border_fraction(
            border_fraction, "border_fraction", allow_zero=False
        ),
        "n_bins": check_int_at_least(n_bins, "n_bins", 2),
        "source_model": source_model,
        "lung_region": lung_region,
    }
    if lung_region not in REGIONS:
        raise ValueError(f"lung_region must be one of {list(REGIONS)}; got {lung_region!r}.")
    if isinstance(source_model, str) and source_model not in ("descriptors", "estimator"):
        raise ValueError(
            f"source_model must be 'descriptors', 'estimator' or a classifier; got {source_model!r}."
        )
    return settings


def check_checks(checks):
    """The checks to run, in report order."""
    if checks is None:
        return CHECKS
    if isinstance(checks, str):
        checks = [checks]
    try:
        checks = list(checks)
    except TypeError:
        raise ValueError(
            f"checks must be None or a list of names from {CHECKS}; got {checks!r}."
        ) from None
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(
            f"checks must be a non-empty subset of {CHECKS}; got {checks!r}"
            + (f" (unknown: {unknown})." if unknown else ".")
        )
    return tuple(c for c in CHECKS if c in checks)


def check_thresholds(thresholds):
    """The default thresholds updated with ``thresholds``, checked."""
    merged = dict(DEFAULT_THRESHOLDS)
    if thresholds is None:
        return merged
    if not isinstance(thresholds, dict):
        raise ValueError(f"thresholds must be a dict or None; got {type(thresholds).__name__}.")
    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"Unknown threshold(s) {unknown}; valid keys are {sorted(DEFAULT_THRESHOLDS)}."
        )
    for key, value in thresholds.items():
        if not is_real(value) or not np.isfinite(value):
            raise ValueError(f"Threshold {key!r} must be a finite number; got {value!r}.")
        merged[key] = float(value)
    for low, high in _ORDERED_THRESHOLDS:
        if merged[low] > merged[high]:
            raise ValueError(
                f"Threshold {low}={merged[low]} must not exceed {high}={merged[high]}."
            )
    return merged


def load_images(X, image_size, estimator):
    """(N, H, W) or (N, C, H, W) float32 images; paths are loaded once."""
    if is_path_array(X):
        from skxray.preprocessing import ImageLoader

        size = image_size
        if size is None:
            params = estimator.get_params() if hasattr(estimator, "get_params") else {}
            size = params.get("image_size", 128)
        paths = list(X.to_numpy() if hasattr(X, "to_numpy") else X)
        return ImageLoader(image_size=size).fit_transform(paths), [str(p) for p in paths]
    return check_image_array(X, name="X"), None
