"""The entry point :func:`audit`: check the inputs, run the cross-validations, run the checks."""

import time

import numpy as np
import pandas as pd

from skxray._utils import check_per_image, is_int, make_cv
from skxray.audit._calibration import check_calibration
from skxray.audit._context import AuditData
from skxray.audit._cv import run_cv
from skxray.audit._duplicates import check_duplicates
from skxray.audit._labels import check_labels
from skxray.audit._leakage import check_leakage
from skxray.audit._lungs import check_lungs
from skxray.audit._params import (
    check_checks,
    check_settings,
    check_thresholds,
    estimator_name,
    load_images,
)
from skxray.audit._report import AuditReport
from skxray.audit._sources import check_sources
from skxray.segmentation import lung_masks

#: The checks that need the patient-grouped cross-validation's predictions.
_NEED_GROUPED_CV = ("leakage", "lungs", "calibration", "labels")


def audit(
    estimator,
    X,
    y,
    *,
    groups=None,
    sources=None,
    cv=5,
    random_state=None,
    checks=None,
    image_size=None,
    duplicate_distance=20,
    hash_size=16,
    border_fraction=0.12,
    source_model="descriptors",
    n_bins=10,
    thresholds=None,
    lung_region="segmenter",
    verbose=0,
):
    """Audit a classifier and a data set for shortcut learning and data leakage.

    Models that read the hospital instead of the disease look accurate inside
    one data set and fail elsewhere [1]_, and duplicated images, patients
    shared between training and test sets and source confounding make
    published scores unusable [2]_. This function looks for each of these.
    It runs the checks below with cross-validation and returns an
    :class:`AuditReport` with one :class:`Finding` per check: its figures, a
    verdict ("ok", "warning" or "fail") and a one-line explanation.

    1. ``"leakage"`` (patient leakage): out-of-fold scores of image-level
       :class:`~sklearn.model_selection.StratifiedKFold` vs patient-grouped
       :class:`~sklearn.model_selection.StratifiedGroupKFold`. A gap in
       balanced accuracy above ``leakage_gap_warning`` (0.05) is a warning,
       above ``leakage_gap_fail`` (0.10) a fail. Without ``groups``: a
       warning, as leakage cannot be checked.
    2. ``"duplicates"`` (near-duplicates): 256-bit perceptual hashes
       (``imagehash.phash`` and ``dhash`` of the 8-bit image) of every image
       and of copies shifted by about 3% of the side in each direction; a
       pair whose best alignment differs by at most ``duplicate_distance``
       bits in *both* hashes is a near-duplicate. Each pair is reported with
       its classes, patients and folds of the grouped CV. Fail when a pair
       spans training and test folds or two classes; warning when pairs only
       sit within one fold and class (e.g. one patient); ok when none.
    3. ``"sources"`` (source confounding, needs ``sources``): the class x
       source contingency table; how well the label follows from the source
       alone (each source voting its majority class, balanced accuracy); how
       well the source is recognised from the images (out-of-fold balanced
       accuracy of ``source_model``); and, when a class spans several
       sources, leave-one-source-out scores (mean recall over the classes of
       the held-out source) against the grouped-CV scores of the same
       images. Fail when the label follows from the source (>=
       ``confounding_fail``, 0.90) and the source is recognisable (>=
       ``source_recognisable``, 0.80) or a held-out source drops by >=
       ``loso_drop_fail`` (0.20); warning from ``confounding_warning`` (0.70)
       or ``loso_drop_warning`` (0.10). Without ``sources``: a warning.
    4. ``"lungs"`` (where the model looks): the grouped-CV models score their
       test folds unmasked, with the lungs filled with the mean of the rest
       of the image (each image's lungs as skxray's lung segmenter finds them,
       :func:`skxray.segmentation.segment_lungs`; ``lung_region="ellipse"``
       uses the fixed prior :func:`skxray.explain.central_lung_mask`
       instead), and with a band of ``border_fraction`` of each side set to 0
       (corners and edges, where markers and text sit; the lungs kept).
       Grad-CAM (:func:`skxray.explain.gradcam`, predicted class) on each
       test fold gives the share of evidence inside the same lungs. The
       finding names the region it used (``figures["lung_region"]``). Fail
       when the lungs-masked balanced accuracy is >= ``lungs_masked_fail``
       (0.65) or masking the borders drops it by >= ``border_drop_fail``
       (0.20); warning from ``lungs_masked_warning`` (0.58),
       ``border_drop_warning`` (0.10), or when the Grad-CAM share in the
       lungs is below the lungs' share of the image area
       (``gradcam_enrichment_warning``, 1.0). Inconclusive (warning) when the
       unmasked score is below ``min_score`` (0.60). Grad-CAM is skipped
       (reported as unavailable) for models without convolutional layers.
    5. ``"calibration"`` (class balance and calibration): class proportions
       of each test fold, Brier score (and that of always predicting the
       class proportions), the calibration curve
       (:func:`sklearn.calibration.calibration_curve`, ``n_bins`` uniform
       bins; the probability of the second class (``classes_[1]``) for two classes, the
       top-class confidence otherwise) and the expected calibration error of
       those bins, all from the grouped-CV out-of-fold probabilities. Fail
       when ECE >= ``ece_fail`` (0.25); warning from ``ece_warning`` (0.10),
       when a fold's class proportions deviate by more than
       ``fold_balance_warning`` (0.10), or when the Brier score is no better
       than the class-proportions baseline.
    6. ``"labels"`` (label issues): confident learning (Northcutt et al.
       [3]_, ``cleanlab.filter.find_label_issues`` with cleanlab's default
       ``filter_by="prune_by_noise_rate"``) on the grouped-CV out-of-fold
       probabilities flags the images whose given label the models
       confidently doubt; they are ranked by label quality (the out-of-fold
       probability of the given label, lowest first) and counted per (given,
       suggested) class pair, and the top ones are drawn, with their file
       names, in the HTML report. Warning when more than
       ``label_issues_warning`` (0.05) of the images are suspect, or when
       the models are too weak (balanced accuracy below ``min_score``) for
       their doubts to mean anything. A suspect is a doubt to review, not a
       proven error: the models' own mistakes are flagged too.

    Balanced accuracies are compared with the thresholds on the two-class
    scale: with k classes (or sources) they are rescaled first so that
    chance is 0.5 and perfect 1; see :data:`DEFAULT_THRESHOLDS`.

    **Cost.** One patient-grouped cross-validation (``cv`` fits) serves
    checks 1, 3, 4, 5 and 6: checks 4, 5 and 6 reuse its out-of-fold predictions,
    masked and unmasked, and Grad-CAM runs on its test folds. Check 1 adds
    one image-level cross-validation (``cv`` more fits, only when ``groups``
    is given). Check 3 adds a logistic regression on cheap image
    descriptors (seconds; ``source_model="estimator"`` instead costs ``cv``
    more fits) and one fit per source when a class spans several sources.
    Check 2 fits nothing: about 20 hashes per image and a vectorised
    comparison of all pairs. So the whole audit costs about two
    cross-validations of the estimator.

    Parameters
    ----------
    estimator : classifier
        An unfitted skxray classifier (or a :class:`~sklearn.pipeline.Pipeline`
        ending in one) with ``fit``, ``predict_proba`` and ``classes_``. It is
        cloned and fitted once per fold; it is not modified.
    X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
        Images with values in [0, 1]. Paths are read once with
        :class:`~skxray.preprocessing.ImageLoader` at ``image_size``.
    y : array-like of shape (n_samples,)
        Class labels, at least two classes.
    groups : array-like of shape (n_samples,), default=None
        Patient id of each image. Without it, check 1 is a warning, the
        "grouped" CV is image-level and duplicates always count as separate
        patients.
    sources : array-like of shape (n_samples,), default=None
        Source (hospital, device, data set) of each image, for check 3.
    cv : int, default=5
        Number of folds; every class needs at least ``cv`` patients (images
        without ``groups``).
    random_state : int or None, default=None
        Seeds the fold shuffling (the estimator's own ``random_state`` seeds
        its training).
    checks : list of str or None, default=None
        Subset of :data:`CHECKS` to run; None runs all six.
    image_size : int or None, default=None
        Side of the square images when ``X`` holds paths; None takes the
        estimator's ``image_size`` parameter (128 if it has none).
    duplicate_distance : int, default=20
        Largest Hamming distance, in bits of each ``hash_size**2``-bit hash,
        of a near-duplicate pair. Tuned on phantoms: exact copies, light
        noise, 1-2 px shifts, JPEG re-encoding and 5% brightness changes stay
        within 20 of 256 bits, while distinct phantoms (far more alike than
        real radiographs) are 30 or more apart.
    hash_size : int, default=16
        Side of the perceptual hashes (``hash_size**2`` bits), >= 4.
    border_fraction : float, default=0.12
        Width of the masked border band, as a fraction of each side, in
        (0, 0.5).
    source_model : "descriptors", "estimator" or classifier, default="descriptors"
        Model that predicts the source in check 3: ``"descriptors"`` is a
        logistic regression on global descriptors (thumbnail, intensity
        histogram and percentiles, border and corner statistics), cheap and a
        *lower bound* of what a network can recognise, so a high score is
        conclusive; ``"estimator"`` clones the audited estimator (``cv``
        more fits); or any classifier accepting the images.
    n_bins : int, default=10
        Number of bins of the calibration curve.
    thresholds : dict or None, default=None
        Overrides of :data:`DEFAULT_THRESHOLDS`.
    lung_region : {"segmenter", "ellipse"}, default="segmenter"
        The lungs of check 4: each image's, found by
        :func:`skxray.segmentation.segment_lungs`, or the fixed two-ellipse
        prior :func:`skxray.explain.central_lung_mask` (the fallback; it
        misses about two fifths of real lungs).
    verbose : int, default=0
        1 prints one line per fit.

    Returns
    -------
    AuditReport
        The findings; ``report.verdict`` is the worst one.

    Raises
    ------
    ValueError
        If a parameter is invalid, ``y``, ``groups`` or ``sources`` do not
        have one entry per image or have missing values, ``y`` has fewer
        than two classes, or a class has fewer than ``cv`` patients (images).

    See Also
    --------
    skxray.explain.gradcam : The heatmaps of check 4.
    skxray.preprocessing.BorderMask : Hide the borders when training.

    References
    ----------
    .. [1] A. J. DeGrave, J. D. Janizek and S.-I. Lee, "AI for radiographic
       COVID-19 detection selects shortcuts over signal", *Nature Machine
       Intelligence* 3:610-619, 2021.
    .. [2] M. Roberts et al., "Common pitfalls and recommendations for using
       machine learning to detect and prognosticate for COVID-19 using chest
       radiographs and CT scans", *Nature Machine Intelligence* 3:199-217,
       2021.
    .. [3] C. G. Northcutt, L. Jiang and I. L. Chuang, "Confident learning:
       estimating uncertainty in dataset labels", *Journal of Artificial
       Intelligence Research* 70:1373-1411, 2021.

    Examples
    --------
    >>> from skxray.audit import audit
    >>> from skxray.datasets import make_phantom_cxr
    >>> X, y, groups = make_phantom_cxr(40, image_size=32, random_state=0,
    ...                                 return_groups=True)
    >>> report = audit(None, X, y, groups=groups, checks=["duplicates"], cv=3,
    ...                random_state=0)
    >>> report["duplicates"].figures["n_pairs"] >= 0
    True
    """
    t0 = time.perf_counter()
    checks = check_checks(checks)
    thresholds = check_thresholds(thresholds)
    settings = check_settings(
        cv=cv,
        duplicate_distance=duplicate_distance,
        hash_size=hash_size,
        border_fraction=border_fraction,
        n_bins=n_bins,
        source_model=source_model,
        lung_region=lung_region,
    )
    needs_fit = any(c in checks for c in _NEED_GROUPED_CV) or (
        "sources" in checks and sources is not None
    )
    if needs_fit and (estimator is None or not hasattr(estimator, "fit")):
        raise ValueError(
            f"estimator must be an unfitted classifier with fit and predict_proba for the "
            f"checks {[c for c in checks if c != 'duplicates']}; got {estimator!r}."
        )
    data = _prepare_data(
        estimator, X, y, groups, sources, image_size, random_state, thresholds, verbose, settings
    )
    findings, n_fits = _run_checks(data, checks)
    info = _audit_info(data, checks, n_fits)
    info["elapsed_s"] = round(time.perf_counter() - t0, 1)
    info["thresholds"] = thresholds
    return AuditReport(findings, info)


def _prepare_data(
    estimator, X, y, groups, sources, image_size, random_state, thresholds, verbose, settings
):
    """The checked inputs as one :class:`AuditData`."""
    X, paths = load_images(X, image_size, estimator)
    n = len(X)
    y_arr = np.asarray(y, dtype=object)
    if y_arr.ndim != 1 or len(y_arr) != n:
        raise ValueError(
            f"y must have one label per image: got shape {y_arr.shape} for {n} images."
        )
    check_per_image(y_arr, n, "y")
    groups = check_per_image(groups, n, "groups")
    sources = check_per_image(sources, n, "sources")
    y = np.asarray(y)
    try:
        classes = np.unique(y).tolist()  # the order of the estimators' classes_
    except TypeError:  # mixed types
        classes = sorted(pd.unique(y_arr).tolist(), key=str)
    if len(classes) < 2:
        raise ValueError(f"y needs at least two classes; got {classes}.")
    y_enc = np.array([classes.index(v) for v in y])
    cv = settings["cv"]
    per_class = (
        pd.Series(groups).groupby(y_enc).nunique()
        if groups is not None
        else pd.Series(y_enc).value_counts()
    )
    if per_class.min() < cv:
        unit = "patients" if groups is not None else "images"
        raise ValueError(
            f"Every class needs at least cv={cv} {unit} for {cv}-fold cross-validation; "
            f"the smallest class has {int(per_class.min())}. Lower cv."
        )
    return AuditData(
        X=X,
        y=y,
        y_enc=y_enc,
        classes=classes,
        groups=groups,
        sources=sources,
        paths=paths,
        estimator=estimator,
        random_state=random_state,
        thresholds=thresholds,
        verbose=verbose,
        **settings,
    )


def _run_checks(data, checks):
    """The findings, in report order, and the number of fits they cost.

    One patient-grouped cross-validation serves every check that needs
    predictions; the leakage check adds an image-level one.
    """
    splits = list(
        make_cv(data.cv, data.groups, data.random_state).split(data.X, data.y_enc, data.groups)
    )
    fold_of = np.empty(len(data.X), dtype=int)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f
    # Check 3 needs the grouped CV only to compare leave-one-source-out scores.
    spans = data.sources is not None and bool(
        (pd.crosstab(data.y_enc, data.sources) > 0).sum(axis=1).max() > 1
    )
    n_fits = 0
    grouped = image_level = None
    if any(c in checks for c in _NEED_GROUPED_CV) or ("sources" in checks and spans):
        grouped = run_cv(
            data.estimator,
            data.X,
            data.y,
            data.classes,
            splits,
            masks="lungs" in checks,
            gradcam="lungs" in checks,
            lung=lung_masks(data.X, data.lung_region) if "lungs" in checks else None,
            border_fraction=data.border_fraction,
            verbose=data.verbose,
            label="grouped CV" if data.groups is not None else "image-level CV",
        )
        n_fits += grouped["n_fits"]
    if "leakage" in checks and data.groups is not None:
        image_splits = list(make_cv(data.cv, None, data.random_state).split(data.X, data.y_enc))
        image_level = run_cv(
            data.estimator,
            data.X,
            data.y,
            data.classes,
            image_splits,
            verbose=data.verbose,
            label="image-level CV",
        )
        n_fits += image_level["n_fits"]
    findings = []
    for name in checks:
        if name == "leakage":
            findings.append(check_leakage(data, grouped, image_level))
        elif name == "duplicates":
            findings.append(check_duplicates(data, fold_of))
        elif name == "sources":
            finding, extra = check_sources(data, grouped)
            n_fits += extra
            findings.append(finding)
        elif name == "lungs":
            findings.append(check_lungs(data, grouped))
        elif name == "calibration":
            findings.append(check_calibration(data, grouped, splits))
        elif name == "labels":
            findings.append(check_labels(data, grouped))
    return findings, n_fits


def _audit_info(data, checks, n_fits):
    """What was audited, for ``AuditReport.info``."""
    counts = pd.Series(np.asarray(data.y, dtype=object)).value_counts()
    random_state = data.random_state
    return {
        "estimator": estimator_name(data.estimator),
        "n_samples": len(data.X),
        "image_shape": list(data.X.shape[1:]),
        "classes": [str(c) for c in data.classes],
        "class_counts": {str(c): int(counts.get(c, 0)) for c in data.classes},
        "n_patients": int(len(pd.unique(data.groups))) if data.groups is not None else None,
        "n_sources": int(len(pd.unique(data.sources))) if data.sources is not None else None,
        "cv": data.cv,
        "grouped": data.groups is not None,
        "random_state": random_state
        if is_int(random_state) or random_state is None
        else str(random_state),
        "checks": list(checks),
        "lung_region": data.lung_region,
        "n_fits": n_fits,
    }
