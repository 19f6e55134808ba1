"""Metrics of a classifier's predictions, and the checks of their inputs.

:func:`classification_metrics` and :func:`evaluate` (one dict of the
usual figures), the positive-label convention (:func:`default_positive_label`)
and the input checks that the displays and the comparison share.
"""

import math
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

from skxray._utils import as_python_scalar, check_label_vector

__all__ = ["classification_metrics", "default_positive_label", "evaluate"]


def default_positive_label(classes):
    """Return the class taken as positive ("disease") when none is given.

    The first class whose name contains "covid" (case-insensitive) if there
    is one, else ``classes[1]`` (the positive class of scikit-learn's binary
    conventions, e.g. ``True`` or ``1``).

    Parameters
    ----------
    classes : array-like of shape (n_classes,)
        The class labels, e.g. ``estimator.classes_``; at least two.

    Returns
    -------
    label : object
        One of ``classes``, as a Python scalar.

    Raises
    ------
    ValueError
        If ``classes`` has fewer than two labels.

    See Also
    --------
    classification_metrics : Where the positive label is used.

    Examples
    --------
    >>> from skxray.evaluation import default_positive_label
    >>> default_positive_label(["Normal", "Pneumonia", "covid-19"])
    'covid-19'
    >>> default_positive_label([0, 1])
    1
    """
    classes = list(np.asarray(classes, dtype=object).ravel())
    if len(classes) < 2:
        raise ValueError(f"classes must hold at least two labels; got {classes!r}.")
    for label in classes:
        if "covid" in str(label).lower():
            return as_python_scalar(label)
    return as_python_scalar(classes[1])


def _check_positive_label(positive_label, classes):
    if positive_label is None:
        return default_positive_label(classes)
    if positive_label not in list(classes):
        raise ValueError(
            f"positive_label={positive_label!r} is not one of the classes {list(classes)!r}."
        )
    return as_python_scalar(positive_label)


def _check_proba(y_proba, n_samples, classes, name="y_proba"):
    """``y_proba`` as a float (n_samples, n_classes) array; 1-D means P(classes[1])."""
    proba = np.asarray(y_proba, dtype=np.float64)
    if proba.ndim == 1:
        if len(classes) != 2:
            raise ValueError(
                f"{name} is 1-D, which is only accepted for two classes (the probability "
                f"of classes[1]); there are {len(classes)} classes {list(classes)!r}."
            )
        proba = np.column_stack([1.0 - proba, proba])
    if proba.ndim != 2 or proba.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have shape (n_samples, n_classes) = ({n_samples}, {len(classes)}); "
            f"got {proba.shape}."
        )
    if proba.shape[1] != len(classes):
        raise ValueError(
            f"{name} has {proba.shape[1]} columns but there are {len(classes)} classes "
            f"{list(classes)!r}; pass classes= in the order of the columns "
            "(e.g. estimator.classes_)."
        )
    if not np.isfinite(proba).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return proba


def _resolve_classes(classes, y_true, y_pred, y_proba):
    if classes is None:
        labels = [y_true] if y_pred is None else [y_true, y_pred]
        classes = unique_labels(*labels)
        if y_proba is not None and np.ndim(y_proba) == 2 and np.shape(y_proba)[1] != len(classes):
            raise ValueError(
                f"y_proba has {np.shape(y_proba)[1]} columns but y_true and y_pred hold "
                f"{len(classes)} classes {list(classes)!r}; pass classes= in the order of "
                "the columns (e.g. estimator.classes_)."
            )
        return np.asarray(classes)
    classes = column_or_1d(np.asarray(classes))
    if len(classes) < 2:
        raise ValueError(f"classes must hold at least two labels; got {list(classes)!r}.")
    if len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {list(classes)!r}.")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y is None:
            continue
        unknown = np.setdiff1d(np.unique(y), classes)
        if unknown.size:
            raise ValueError(
                f"{name} holds label(s) {unknown.tolist()!r} that are not in classes "
                f"{list(classes)!r}."
            )
    return classes


def _safe_ratio(num, den):
    return float(num / den) if den else math.nan


# --------------------------------------------------------------------------
# metrics


def classification_metrics(y_true, y_pred=None, y_proba=None, *, classes=None, positive_label=None):
    """Compute the usual metrics of a chest X-ray classifier in one dict.

    Overall: accuracy, balanced accuracy (mean sensitivity over the classes),
    ROC AUC and Brier score. Per class, one-vs-rest: sensitivity (recall),
    specificity, positive predictive value (precision), negative predictive
    value, F1 score and support. All come from scikit-learn's metrics.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,), default=None
        Predicted labels. If None, the class of highest probability in
        ``y_proba``.
    y_proba : array-like of shape (n_samples, n_classes) or (n_samples,), default=None
        Predicted probabilities, columns in the order of ``classes`` (as
        returned by ``predict_proba``). A 1-D array is the probability of
        ``classes[1]`` (two classes only). Needed for ``roc_auc`` and
        ``brier``, which are None without it.
    classes : array-like of shape (n_classes,), default=None
        The labels in the order of the columns of ``y_proba``, typically
        ``estimator.classes_``. None means the sorted labels found in
        ``y_true`` and ``y_pred`` (the order of ``classes_`` of a classifier
        fitted on them).
    positive_label : object, default=None
        The class of interest for the binary ROC AUC and Brier score. None
        takes the class whose name contains "covid" (case-insensitive), else
        ``classes[1]``; see :func:`default_positive_label`.

    Returns
    -------
    metrics : dict
        JSON-friendly (Python scalars, lists and dicts) with the keys:

        - ``n_samples`` (int), ``classes`` (list), ``positive_label``;
        - ``accuracy``, ``balanced_accuracy`` (float);
        - ``roc_auc`` (float or None): for two classes the AUC of the
          positive class; for three or more the one-vs-rest macro average;
        - ``brier`` (float or None): for two classes the Brier score of the
          positive class, ``mean((p_pos - [y == pos]) ** 2)``; for three or
          more the mean squared difference between the probability vectors
          and the one-hot labels, averaged over samples *and* classes
          (equal to the binary score for two classes; in [0, 1]; lower is
          better);
        - ``per_class``: ``{label: {"sensitivity", "specificity", "ppv",
          "npv", "f1", "support"}}``, each class against all others;
        - ``confusion_matrix``: list of rows (true classes) of counts per
          predicted class, both in the order of ``classes``.

        A ratio whose denominator is zero (e.g. the PPV of a class never
        predicted) and an AUC with a single class in ``y_true`` are NaN.

    Raises
    ------
    ValueError
        If neither ``y_pred`` nor ``y_proba`` is given, lengths differ,
        labels are not in ``classes``, ``y_proba`` has the wrong shape, or
        ``positive_label`` is not a class.

    See Also
    --------
    evaluate : The same metrics from a fitted estimator.
    compare_models : Cross-validated metrics of several models.

    Examples
    --------
    >>> from skxray.evaluation import classification_metrics
    >>> y_true = ["Covid-19", "Covid-19", "Covid-19", "Normal", "Normal"]
    >>> y_pred = ["Covid-19", "Covid-19", "Normal", "Normal", "Normal"]
    >>> m = classification_metrics(y_true, y_pred)
    >>> m["positive_label"], m["accuracy"]
    ('Covid-19', 0.8)
    >>> round(m["per_class"]["Covid-19"]["sensitivity"], 3)
    0.667
    >>> m["per_class"]["Covid-19"]["specificity"]
    1.0
    >>> m["roc_auc"] is None
    True
    """
    if y_pred is None and y_proba is None:
        raise ValueError("Pass y_pred, y_proba or both; both are None.")
    y_true = check_label_vector(y_true, "y_true")
    n = len(y_true)
    if y_pred is not None:
        y_pred = check_label_vector(y_pred, "y_pred", n)
    classes = _resolve_classes(classes, y_true, y_pred, y_proba)
    proba = None if y_proba is None else _check_proba(y_proba, n, classes)
    if y_pred is None:
        y_pred = classes[np.argmax(proba, axis=1)]
    positive = _check_positive_label(positive_label, classes)
    class_list = [as_python_scalar(c) for c in classes]

    ppv, sens, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=np.nan
    )
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=classes)
    per_class = {}
    for i, label in enumerate(class_list):
        (tn, fp), (fn, tp) = mcm[i]
        per_class[label] = {
            "sensitivity": float(sens[i]),
            "specificity": _safe_ratio(tn, tn + fp),
            "ppv": float(ppv[i]),
            "npv": _safe_ratio(tn, tn + fn),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
    confusion = confusion_matrix(y_true, y_pred, labels=classes).tolist()

    roc_auc = brier = None
    if proba is not None:
        if len(classes) == 2:
            pos_idx = class_list.index(positive)
            is_pos = y_true == classes[pos_idx]
            brier = float(brier_score_loss(is_pos, proba[:, pos_idx]))
            try:
                roc_auc = float(roc_auc_score(is_pos, proba[:, pos_idx]))
            except ValueError:  # a single class in y_true
                roc_auc = math.nan
        else:
            one_hot = (y_true[:, None] == classes[None, :]).astype(np.float64)
            # Mean over samples and classes: brier_score_loss of the flattened one-hot.
            brier = float(brier_score_loss(one_hot.ravel(), proba.ravel()))
            try:
                roc_auc = float(
                    roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
                )
            except ValueError:  # a class missing from y_true, or rows not summing to 1
                roc_auc = math.nan

    return {
        "n_samples": int(n),
        "classes": class_list,
        "positive_label": positive,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(_balanced_accuracy(y_true, y_pred)),
        "roc_auc": roc_auc,
        "brier": brier,
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def _balanced_accuracy(y_true, y_pred):
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true" is expected on small folds.
        warnings.simplefilter("ignore", UserWarning)
        return balanced_accuracy_score(y_true, y_pred)


def _predict_with_proba(estimator, X):
    """(y_pred, y_proba or None, classes) of a fitted classifier."""
    classes = np.asarray(estimator.classes_)
    proba = None
    try:
        proba = estimator.predict_proba(X)
    except AttributeError:  # e.g. VotingClassifier(voting="hard")
        pass
    if proba is not None:
        y_pred = classes[np.argmax(proba, axis=1)]
    else:
        y_pred = estimator.predict(X)
    return y_pred, proba, classes


def evaluate(estimator, X, y, *, positive_label=None):
    """Compute :func:`classification_metrics` of a fitted classifier on ``X``, ``y``.

    Parameters
    ----------
    estimator : fitted classifier
        Any classifier with ``classes_``; ``predict_proba`` is used when
        available (predictions are then the class of highest probability,
        which is what ``predict`` returns for skxray classifiers and soft
        voting), ``predict`` otherwise (``roc_auc`` and ``brier`` are then
        None).
    X : array-like of images or 1-D sequence of file paths
        Test images, in the format the estimator was fitted on.
    y : array-like of shape (n_samples,)
        True labels.
    positive_label : object, default=None
        See :func:`classification_metrics`.

    Returns
    -------
    metrics : dict
        As returned by :func:`classification_metrics`.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.

    See Also
    --------
    classification_metrics : The metrics of given predictions.
    compare_models : Cross-validated metrics of several models.

    Examples
    --------
    >>> from skxray import FNNClassifier, make_phantom_cxr
    >>> from skxray.evaluation import evaluate
    >>> X, y = make_phantom_cxr(20, image_size=16, random_state=0)
    >>> clf = FNNClassifier(hidden_layer_sizes=(8,), max_epochs=1, random_state=0).fit(X, y)
    >>> m = evaluate(clf, X, y)
    >>> sorted(m["per_class"]), m["n_samples"]
    (['Covid-19', 'Normal'], 20)
    """
    check_is_fitted(estimator)
    y = check_label_vector(y, "y")
    y_pred, proba, classes = _predict_with_proba(estimator, X)
    return classification_metrics(y, y_pred, proba, classes=classes, positive_label=positive_label)
