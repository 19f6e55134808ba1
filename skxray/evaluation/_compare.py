"""Cross-validated comparison of several classifiers on the same folds."""

import math
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import column_or_1d

from skxray._utils import as_python_scalar, check_label_vector, make_cv
from skxray._validation import as_images_or_paths

from ._metrics import _check_positive_label, _predict_with_proba, classification_metrics

__all__ = ["compare_models"]

#: Metrics of :func:`compare_models`, in column order, before the per-class ones.
_OVERALL_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "brier")
#: Per-class metrics of :func:`compare_models`, one column per class each.
_PER_CLASS_COLUMNS = ("sensitivity", "ppv")


def _fit_and_predict(estimator, X, y, train, test):
    """Fit a clone on ``train``; return the fit/predict times and the test probabilities."""
    start = time.perf_counter()
    estimator.fit(X[train], y[train])
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    y_pred, proba, classes = _predict_with_proba(estimator, X[test])
    predict_time = time.perf_counter() - start
    return fit_time, predict_time, y_pred, proba, classes, _fold_ood_rate(estimator, X[test])


def _fold_ood_rate(estimator, X_test):
    """Share of test images the fitted model's detector flags (NaN without one)."""
    from skxray.ood import ood_rate

    model = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if getattr(model, "ood_", None) is None:
        return math.nan
    if hasattr(estimator, "steps"):
        for _, step in estimator.steps[:-1]:
            X_test = step.transform(X_test)
    return float(ood_rate(model, X_test))


def _check_estimators(estimators):
    if not isinstance(estimators, Mapping) or len(estimators) == 0:
        raise ValueError(
            "estimators must be a non-empty dict {name: classifier}; "
            f"got {type(estimators).__name__} {estimators!r:.80}."
        )
    for model_name, est in estimators.items():
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"estimators: names must be non-empty strings; got {model_name!r}.")
        if not (hasattr(est, "fit") and (is_classifier(est) or hasattr(est, "predict"))):
            raise ValueError(
                f"estimators[{model_name!r}] must be a classifier; got {type(est).__name__}."
            )


def _record_fold(row, result, y_test, classes, class_list, positive):
    """Append one fold's metrics to ``row``; return its probabilities in ``classes`` order."""
    fit_time, predict_time, y_pred, proba, est_classes, ood = result
    if proba is not None:
        # A training fold may miss a class: place the columns by label.
        full = np.zeros((len(y_test), len(classes)))
        full[:, np.searchsorted(classes, est_classes)] = proba
        proba = full
    m = classification_metrics(y_test, y_pred, proba, classes=classes, positive_label=positive)
    for key in _OVERALL_METRICS:
        row[key].append(math.nan if m[key] is None else m[key])
    for key in _PER_CLASS_COLUMNS:
        for c in class_list:
            row[f"{key}_{c}"].append(m["per_class"][c][key])
    row["ood_rate"].append(ood)
    row["fit_time"].append(fit_time)
    row["predict_time"].append(predict_time)
    return proba


def _mean_and_std(per_fold):
    """``mean_<metric>`` and ``std_<metric>`` over the folds, NaN folds left out."""
    record = {}
    for metric, fold_values in per_fold.items():
        values = np.asarray(fold_values, dtype=np.float64)
        values = values[~np.isnan(values)]
        record[f"mean_{metric}"] = float(values.mean()) if values.size else math.nan
        record[f"std_{metric}"] = float(values.std()) if values.size else math.nan
    return record


def compare_models(
    estimators,
    X,
    y,
    *,
    cv=5,
    groups=None,
    n_jobs=None,
    random_state=0,
    positive_label=None,
    return_predictions=False,
):
    """Cross-validate several classifiers on the same folds and tabulate their metrics.

    Each model is cloned and fitted on the training part of each fold, then
    scored on the held-out part with :func:`classification_metrics` (from
    ``predict_proba``: predictions are the class of highest probability,
    which is what ``predict`` returns for skxray classifiers and soft
    voting). Every model sees exactly the same folds. This table is what the
    ``skxray compare`` command prints.

    Parameters
    ----------
    estimators : dict of str to classifier
        The models, by name (the index of the table), e.g.
        ``{"CNN": CNNClassifier(), "FNN": FNNClassifier()}``. Any
        scikit-learn classifier works, including pipelines and
        ``VotingClassifier(voting="soft")`` of skxray models. They are
        cloned, never fitted in place.
    X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
        Images, or paths of image files.
    y : array-like of shape (n_samples,)
        Labels (strings work).
    cv : int or cross-validation splitter, default=5
        Number of folds, or a splitter (e.g. ``GroupKFold(3)``) or an
        iterable of (train, test) index arrays. An int gives
        :class:`~sklearn.model_selection.StratifiedGroupKFold` when ``groups``
        is given (no patient in two folds), else
        :class:`~sklearn.model_selection.StratifiedKFold`, both shuffled with
        ``random_state``.
    groups : array-like of shape (n_samples,), default=None
        Group (patient) of each image, passed to the splitter.
    n_jobs : int, default=None
        Number of (model, fold) fits run in parallel with joblib. None means
        1 unless in a :func:`joblib.parallel_config` context; -1 means all
        processors. Timings are less comparable when fits compete for CPUs.
    random_state : int, RandomState instance or None, default=0
        Seeds the shuffling of the folds when ``cv`` is an int. The models
        keep their own ``random_state``.
    positive_label : object, default=None
        Class of interest for the binary ROC AUC and Brier score; see
        :func:`default_positive_label`.
    return_predictions : bool, default=False
        Also return the out-of-fold probabilities of each model, e.g. to draw
        ROC curves or confusion matrices of the cross-validated predictions.

    Returns
    -------
    table : pandas.DataFrame
        One row per model (index: the names, in the order of
        ``estimators``). For every metric ``m`` two columns,
        ``mean_m`` and ``std_m`` (mean and standard deviation over the
        folds), for ``m`` in: ``accuracy``, ``balanced_accuracy``,
        ``roc_auc``, ``brier`` (see :func:`classification_metrics`),
        ``sensitivity_<class>`` and ``ppv_<class>`` for every class (e.g.
        ``mean_sensitivity_Covid-19``), ``ood_rate`` (share of the test
        fold flagged out of distribution by the fold's model; NaN for
        models without a detector, such as a VotingClassifier), ``fit_time`` and ``predict_time``
        (seconds per fold). The standard deviation is the population one
        (``ddof=0``, as in scikit-learn's ``cv_results_``). Folds where a
        metric is undefined (e.g. the PPV of a class never predicted in that
        fold) are left out of its mean and std, which are NaN only when it
        is undefined in every fold. ``table.attrs`` holds ``classes``,
        ``positive_label``, ``n_splits`` and ``per_fold``: for each model,
        each metric's value in every fold, as lists in the order of the
        folds (NaN where undefined), e.g.
        ``table.attrs["per_fold"]["CNN"]["balanced_accuracy"]``;
        ``pd.DataFrame(table.attrs["per_fold"]["CNN"])`` has one row per
        fold, like the ``split<i>_test_score`` entries of scikit-learn's
        ``cv_results_``.
    predictions : dict of str to ndarray of shape (n_samples, n_classes)
        Only if ``return_predictions``: each model's out-of-fold
        probabilities, columns in the order of ``table.attrs["classes"]``
        (the sorted labels). Images in no test fold have NaN rows.

    Raises
    ------
    ValueError
        If ``estimators`` is empty or not a dict of classifiers, lengths of
        ``X``, ``y`` and ``groups`` differ, or ``cv`` is invalid.

    See Also
    --------
    classification_metrics : The metrics of one set of predictions.
    skxray.report.Report.add_comparison : Put the table in a report.

    Examples
    --------
    >>> from skxray import FNNClassifier, make_phantom_cxr
    >>> from skxray.evaluation import compare_models
    >>> X, y, groups = make_phantom_cxr(24, image_size=16, random_state=0, return_groups=True)
    >>> models = {
    ...     "small": FNNClassifier(hidden_layer_sizes=(4,), max_epochs=1, random_state=0),
    ...     "wide": FNNClassifier(hidden_layer_sizes=(16,), max_epochs=1, random_state=0),
    ... }
    >>> table, oof = compare_models(models, X, y, cv=2, groups=groups, return_predictions=True)
    >>> table.index.tolist()
    ['small', 'wide']
    >>> table.columns[:4].tolist()
    ['mean_accuracy', 'std_accuracy', 'mean_balanced_accuracy', 'std_balanced_accuracy']
    >>> oof["wide"].shape
    (24, 2)
    >>> len(table.attrs["per_fold"]["wide"]["accuracy"])  # one value per fold
    2
    """
    _check_estimators(estimators)
    X, _ = as_images_or_paths(X) if not np.ndim(X) == 2 else (np.asarray(X), False)
    y = check_label_vector(y, "y")
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} labels but X has {len(X)} images.")
    if groups is not None:
        groups = column_or_1d(groups)
        if len(groups) != len(X):
            raise ValueError(f"groups has {len(groups)} entries but X has {len(X)} images.")
    classes = unique_labels(y)
    positive = _check_positive_label(positive_label, classes)

    splitter = make_cv(cv, groups, random_state)
    splits = list(splitter.split(X, y, groups))
    names = list(estimators)
    jobs = [(name, fold) for name in names for fold in range(len(splits))]
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_predict)(clone(estimators[name]), X, y, *splits[fold])
        for name, fold in jobs
    )

    class_list = [as_python_scalar(c) for c in classes]
    metric_names = list(_OVERALL_METRICS)
    for key in _PER_CLASS_COLUMNS:
        metric_names += [f"{key}_{c}" for c in class_list]
    metric_names += ["ood_rate", "fit_time", "predict_time"]

    per_fold = {name: {m: [] for m in metric_names} for name in names}
    oof = {name: np.full((len(y), len(classes)), np.nan) for name in names}
    for (name, fold), result in zip(jobs, results, strict=True):
        test = splits[fold][1]
        proba = _record_fold(per_fold[name], result, y[test], classes, class_list, positive)
        if proba is not None:
            oof[name][test] = proba
    table = pd.DataFrame.from_dict(
        {name: _mean_and_std(per_fold[name]) for name in names}, orient="index"
    )
    table.index.name = "model"
    # Plain lists (not frames) in attrs: pandas compares and deep-copies
    # attrs as the table is transformed, which frames would break.
    table.attrs = {
        "classes": class_list,
        "positive_label": positive,
        "n_splits": len(splits),
        "per_fold": {
            name: {m: [float(v) for v in values] for m, values in per_fold[name].items()}
            for name in names
        },
    }
    if return_predictions:
        return table, oof
    return table
