"""Metrics, plots and cross-validated comparison of chest X-ray classifiers.

Everything here works on any scikit-learn classifier with ``predict_proba``
(the skxray networks, a soft :class:`~sklearn.ensemble.VotingClassifier` of
them, a :class:`~sklearn.pipeline.Pipeline`, ...) and on string labels such
as ``"Covid-19"``.

- :func:`classification_metrics` and :func:`evaluate`: accuracy, balanced
  accuracy, ROC AUC, Brier score and the clinical per-class figures
  (sensitivity, specificity, PPV, NPV, F1, support) as one JSON-friendly
  dict.
- :func:`compare_models`: the same metrics cross-validated (grouped by
  patient when ``groups`` is given) for several models on the same folds, as
  a :class:`pandas.DataFrame`.
- :func:`plot_image_grid`, :func:`plot_learning_curves`,
  :func:`plot_confusion_matrix`, :func:`plot_roc`,
  :func:`plot_precision_recall` and :func:`plot_calibration`: figures built
  on scikit-learn's displays.

Plots return a :class:`matplotlib.figure.Figure` created without pyplot, so
no global figure state is kept and nothing is shown; save it with
``fig.savefig(...)`` or add it to a :class:`skxray.report.Report`.
"""

import math
import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, column_or_1d

from skxray._utils import as_python_scalar, check_label_vector, fold_mean_interval, is_int, make_cv
from skxray._validation import is_path_array

__all__ = [
    "classification_metrics",
    "compare_models",
    "default_positive_label",
    "evaluate",
    "external_validation",
    "external_validation_figures",
    "external_validation_from_predictions",
    "plot_calibration",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_learning_curves",
    "plot_precision_recall",
    "plot_roc",
    "proportion_ci",
]

#: Metrics of :func:`compare_models`, in column order, before the per-class ones.
_OVERALL_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "brier")
#: Per-class metrics of :func:`compare_models`, one column per class each.
_PER_CLASS_COLUMNS = ("sensitivity", "ppv")


# --------------------------------------------------------------------------
# helpers


def _as_images_or_paths(X, name="X"):
    """``X`` as an object array of paths, or as a numeric ndarray of images."""
    if is_path_array(X):
        return np.asarray([str(p) for p in X], dtype=object), True
    arr = np.asarray(X)
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be images of shape (n_samples, height, width) or "
            f"(n_samples, channels, height, width), or a 1-D sequence of file paths; "
            f"got an array of shape {arr.shape}."
        )
    return arr, False


def _new_figure(nrows=1, ncols=1, *, figsize=(5.0, 4.5), sharex=False):
    """A Figure outside pyplot (no global state) and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    return fig, axes


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


# --------------------------------------------------------------------------
# plots


def plot_image_grid(X, y=None, n=6, *, random_state=None, ncols=3):
    """Plot a random sample of images with their labels as titles.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width), or 1-D sequence of file paths
        Images; only the drawn paths are read (with
        :func:`skxray.io.read_image`, in gray levels). Gray images use the
        gray colormap scaled to each image's range; 3-channel images are
        shown in colour after min-max scaling; other channel counts are
        averaged.
    y : array-like of shape (n_samples,), default=None
        Labels, shown as titles. None titles each image with its index
        (``"#12"``).
    n : int, default=6
        Number of images; all of them (in random order) if ``X`` has fewer.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.
    ncols : int, default=3
        Number of columns of the grid.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes per image (axis lines hidden).

    Raises
    ------
    ValueError
        If ``n`` or ``ncols`` is not a positive int, ``X`` is not images or
        paths, or ``y`` has another length.

    See Also
    --------
    skxray.report.Report.add_dataset_summary : Class counts, sizes and this grid.

    Examples
    --------
    >>> from skxray import make_phantom_cxr
    >>> from skxray.evaluation import plot_image_grid
    >>> X, y = make_phantom_cxr(10, image_size=16, random_state=0)
    >>> fig = plot_image_grid(X, y, n=4, random_state=0, ncols=2)
    >>> len(fig.axes), sorted({ax.get_title() for ax in fig.axes})
    (4, ['Covid-19', 'Normal'])
    """
    from sklearn.utils import check_random_state

    if not is_int(n) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}.")
    if not is_int(ncols) or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1; got {ncols!r}.")
    X, paths = _as_images_or_paths(X)
    if y is not None:
        y = column_or_1d(np.asarray(y, dtype=object))
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} labels but X has {len(X)} images.")
    n = min(n, len(X))
    rng = check_random_state(random_state)
    idx = rng.choice(len(X), size=n, replace=False)

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _new_figure(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows))
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), idx, strict=False):
        if paths:
            from skxray.io import read_image

            img = read_image(X[i], as_gray=True)
        else:
            img = np.asarray(X[i], dtype=np.float64)
            if img.ndim == 3:
                img = np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img.mean(axis=0)
        if img.ndim == 3:  # RGB: min-max scaled to [0, 1] for imshow
            lo, hi = img.min(), img.max()
            ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
        else:
            ax.imshow(img, cmap="gray")
        ax.set_title(f"#{i}" if y is None else str(y[i]), fontsize=9)
    # Unused cells stay in the figure but are blank; drop them so fig.axes has n entries.
    for ax in axes.ravel()[n:]:
        fig.delaxes(ax)
    return fig


def _history_of(estimator_or_history):
    """The list of per-epoch dicts, from an estimator, a Pipeline or a list."""
    obj = estimator_or_history
    if hasattr(obj, "fit"):
        if hasattr(obj, "steps"):  # Pipeline: the final classifier
            obj = obj[-1]
        check_is_fitted(obj)
        if not hasattr(obj, "history_"):
            raise TypeError(
                f"estimator_or_history: {type(obj).__name__} has no history_; pass a fitted "
                "skxray classifier or its history_ (a list of per-epoch dicts)."
            )
        history = obj.history_
    else:
        history = obj
    if not isinstance(history, (list, tuple)) or not all(
        isinstance(row, Mapping) for row in history
    ):
        raise TypeError(
            "estimator_or_history must be a fitted skxray classifier or a list of per-epoch "
            f"dicts; got {type(estimator_or_history).__name__}."
        )
    if len(history) == 0:
        raise ValueError("estimator_or_history: the history is empty (no epoch recorded).")
    if any(row.get("train_loss") is None for row in history):
        raise ValueError("estimator_or_history: every epoch needs a 'train_loss'.")
    return history


def _column(history, key):
    values = [row.get(key) for row in history]
    if all(v is None for v in values):
        return None
    return np.array([math.nan if v is None else float(v) for v in values])


def plot_learning_curves(estimator_or_history):
    """Plot training and validation loss and validation accuracy per epoch.

    The best epoch (lowest validation loss, or lowest training loss when no
    validation set was held out) is marked by a dashed vertical line labelled
    ``"best epoch (k)"`` on both axes.

    Parameters
    ----------
    estimator_or_history : fitted skxray classifier, Pipeline ending in one, \
or list of dict
        The classifier, whose ``history_`` is drawn, or such a history: one
        dict per epoch with ``train_loss`` and optionally ``epoch``,
        ``valid_loss`` and ``valid_acc`` (None when missing).

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two axes: "Loss" (train and validation) and "Validation accuracy"
        (empty, with a note, without a validation set).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    TypeError
        If the estimator has no ``history_`` or the history is not a list
        of dicts.
    ValueError
        If the history is empty or lacks ``train_loss``.

    See Also
    --------
    skxray.report.Report.add_learning_curves : Put the figure in a report.

    Examples
    --------
    >>> from skxray.evaluation import plot_learning_curves
    >>> history = [
    ...     {"epoch": 1, "train_loss": 0.9, "valid_loss": 0.8, "valid_acc": 0.6},
    ...     {"epoch": 2, "train_loss": 0.6, "valid_loss": 0.5, "valid_acc": 0.8},
    ...     {"epoch": 3, "train_loss": 0.4, "valid_loss": 0.7, "valid_acc": 0.7},
    ... ]
    >>> fig = plot_learning_curves(history)
    >>> [ax.get_title() for ax in fig.axes]
    ['Loss', 'Validation accuracy']
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['train loss', 'validation loss', 'best epoch (2)']
    """
    history = _history_of(estimator_or_history)
    epochs = _column(history, "epoch")
    if epochs is None or np.isnan(epochs).any():
        epochs = np.arange(1, len(history) + 1, dtype=float)
    train_loss = _column(history, "train_loss")
    valid_loss = _column(history, "valid_loss")
    valid_acc = _column(history, "valid_acc")
    monitored = valid_loss if valid_loss is not None and not np.isnan(valid_loss).all() else None
    best = int(np.nanargmin(monitored if monitored is not None else train_loss))
    best_epoch = epochs[best]
    best_label = f"best epoch ({int(best_epoch) if best_epoch.is_integer() else best_epoch})"

    fig, axes = _new_figure(1, 2, figsize=(10.0, 4.0), sharex=True)
    ax_loss, ax_acc = axes[0]
    ax_loss.plot(epochs, train_loss, marker="o", label="train loss")
    if valid_loss is not None:
        ax_loss.plot(epochs, valid_loss, marker="o", label="validation loss")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    if valid_acc is not None:
        ax_acc.plot(epochs, valid_acc, marker="o", color="C2", label="validation accuracy")
    else:
        ax_acc.text(
            0.5, 0.5, "no validation set", ha="center", va="center", transform=ax_acc.transAxes
        )
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):
        ax.axvline(best_epoch, color="gray", linestyle="--", label=best_label)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def _resolve_inputs(func, estimator, X, y, y_true, y_other, other_name, classes, *, proba):
    """Predictions for the plots: from ``estimator``, ``X``, ``y`` or given directly.

    Returns ``(y_true, y_other, classes)`` where ``y_other`` is the predicted
    labels (``proba=False``) or the probability matrix (``proba=True``).
    """
    if estimator is not None:
        if y_true is not None or y_other is not None:
            raise ValueError(
                f"{func}: pass either estimator, X and y, or y_true and {other_name}; not both."
            )
        if X is None or y is None:
            raise ValueError(f"{func}: X and y are required with estimator.")
        check_is_fitted(estimator)
        y_true = check_label_vector(y, "y")
        y_pred, y_proba, est_classes = _predict_with_proba(estimator, X)
        if proba:
            if y_proba is None:
                raise ValueError(
                    f"{func}: estimator {type(estimator).__name__} has no predict_proba."
                )
            return y_true, y_proba, est_classes
        return y_true, y_pred, est_classes if classes is None else classes
    if y_true is None or y_other is None:
        raise ValueError(
            f"{func}: pass estimator, X and y, or y_true and {other_name}; "
            f"got y_true={'None' if y_true is None else '...'} and "
            f"{other_name}={'None' if y_other is None else '...'}."
        )
    y_true = check_label_vector(y_true, "y_true")
    if proba:
        classes = _resolve_classes(classes, y_true, None, y_other)
        return y_true, _check_proba(y_other, len(y_true), classes, other_name), classes
    y_other = check_label_vector(y_other, other_name, len(y_true))
    return y_true, y_other, classes


def _axes_for(ax, figsize=(5.0, 4.5)):
    if ax is None:
        fig, axes = _new_figure(figsize=figsize)
        return fig, axes[0, 0]
    return ax.figure, ax


# Docstring parts shared by the plots of predictions (one template, like the
# classifiers' COMMON_PARAMETERS_DOC), filled in by @_fill_plot_doc.
_X_Y_DOC = """X : array-like of images or 1-D sequence of file paths, default=None
        Test images, with ``estimator``.
    y : array-like of shape (n_samples,), default=None
        True labels, with ``estimator``."""
_PLOT_DOC = {
    "X_y": _X_Y_DOC,
    "proba_parameters": """Parameters
    ----------
    estimator : fitted classifier with predict_proba, default=None
        Scores ``X``; its ``classes_`` name the probability columns.
    """ + _X_Y_DOC + """
    y_true : array-like of shape (n_samples,), default=None
        True labels, with ``y_proba``.
    y_proba : array-like of shape (n_samples, n_classes), default=None
        Probabilities (e.g. out-of-fold ones from :func:`compare_models`),
        with ``y_true``.
    classes : array-like of shape (n_classes,), default=None
        Labels of the columns of ``y_proba``; None means the sorted labels
        of ``y_true``.
    positive_label : object, default=None
        Class of the binary curve; see :func:`default_positive_label`.""",
    "name_ax": """name : str, default=None
        Model name used in the legend.
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a new figure.""",
    "raises": """Raises
    ------
    ValueError
        If neither or both input forms are given, shapes disagree, or
        ``y_true`` holds a single class.""",
}


def _fill_plot_doc(func):
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.format(**_PLOT_DOC)
    return func


@_fill_plot_doc
def plot_confusion_matrix(estimator=None, X=None, y=None, *, y_true=None, y_pred=None, labels=None,
                          normalize=None, name=None, cmap="Blues", ax=None):
    """Plot a confusion matrix with :class:`~sklearn.metrics.ConfusionMatrixDisplay`.

    Pass either a fitted ``estimator`` with ``X`` and ``y``, or ``y_true``
    and ``y_pred``.

    Parameters
    ----------
    estimator : fitted classifier, default=None
        Predicts ``X``; its ``classes_`` order the rows and columns.
    {X_y}
    y_true : array-like of shape (n_samples,), default=None
        True labels, with ``y_pred``.
    y_pred : array-like of shape (n_samples,), default=None
        Predicted labels, with ``y_true``.
    labels : array-like of shape (n_classes,), default=None
        Order of the classes; None means ``estimator.classes_`` or the
        sorted labels found.
    normalize : {{"true", "pred", "all"}} or None, default=None
        Show counts (None) or fractions over the true classes (rows), the
        predictions (columns) or all images.
    name : str, default=None
        Model name, appended to the title.
    cmap : str or matplotlib Colormap, default="Blues"
        Colormap of the cells.
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a new figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the matrix (rows: true class, columns: predicted
        class), titled "Confusion matrix" (": name").

    Raises
    ------
    ValueError
        If neither or both input forms are given.

    See Also
    --------
    sklearn.metrics.ConfusionMatrixDisplay : The display drawn.
    classification_metrics : The counts as numbers.

    Examples
    --------
    >>> from skxray.evaluation import plot_confusion_matrix
    >>> fig = plot_confusion_matrix(y_true=["a", "a", "b"], y_pred=["a", "b", "b"], name="demo")
    >>> fig.axes[0].get_title()
    'Confusion matrix: demo'
    """
    y_true, y_pred, classes = _resolve_inputs(
        "plot_confusion_matrix", estimator, X, y, y_true, y_pred, "y_pred", labels, proba=False
    )
    fig, ax = _axes_for(ax)
    disp = ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=classes,
        normalize=normalize,
        values_format=".2f" if normalize else "d",
        cmap=cmap,
        colorbar=False,
        ax=ax,
    )
    disp.ax_.set_title("Confusion matrix" + (f": {name}" if name else ""))
    return fig


def _draw_one_vs_rest(
    func, display, kw, estimator, X, y, y_true, y_proba, classes, positive_label, name, ax
):
    """Draw the positive class's curve (binary) or one curve per class (3+).

    The common part of the probability plots: check the inputs of ``func``
    (either form), then draw with ``display.from_predictions``; ``kw(i)``
    gives extra keyword arguments of the ``i``-th curve drawn. Returns the
    figure, the axes and the positive class (None for 3+ classes).
    """
    y_true, proba, classes = _resolve_inputs(
        func, estimator, X, y, y_true, y_proba, "y_proba", classes, proba=True
    )
    fig, ax = _axes_for(ax)
    classes = list(classes)
    pos = None
    if len(classes) == 2:
        pos = _check_positive_label(positive_label, classes)
        col = [as_python_scalar(c) for c in classes].index(pos)
        targets = [(col, name or str(pos))]
    else:
        if positive_label is not None:
            _check_positive_label(positive_label, classes)
        prefix = f"{name}: " if name else ""
        targets = [(i, f"{prefix}{c} vs rest") for i, c in enumerate(classes)]
    drawn = 0
    for col, label in targets:
        is_pos = y_true == classes[col]
        if is_pos.all() or not is_pos.any():  # no curve without both outcomes
            continue
        display.from_predictions(
            is_pos, proba[:, col], pos_label=True, name=label, ax=ax, **kw(drawn)
        )
        drawn += 1
    if drawn == 0:
        raise ValueError(f"{func}: y_true must hold at least two classes to draw a curve.")
    return fig, ax, pos


@_fill_plot_doc
def plot_roc(estimator=None, X=None, y=None, *, y_true=None, y_proba=None, classes=None,
             positive_label=None, name=None, ax=None):
    """Plot ROC curves with :class:`~sklearn.metrics.RocCurveDisplay`.

    Two classes: the curve of the positive class. Three or more: one
    one-vs-rest curve per class. The legend gives each curve's AUC.

    {proba_parameters}
    {name_ax}

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, titled "ROC curve (positive: <label>)" or "ROC curves
        (one-vs-rest)".

    {raises}

    See Also
    --------
    sklearn.metrics.RocCurveDisplay : The display drawn.
    plot_precision_recall : Better suited to rare positives.

    Examples
    --------
    >>> from skxray.evaluation import plot_roc
    >>> y_true = ["Covid-19", "Normal", "Covid-19", "Normal"]
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> fig = plot_roc(y_true=y_true, y_proba=proba, name="CNN")
    >>> fig.axes[0].get_title()
    'ROC curve (positive: Covid-19)'
    """
    fig, ax, pos = _draw_one_vs_rest(
        "plot_roc", RocCurveDisplay, lambda i: {"plot_chance_level": i == 0},
        estimator, X, y, y_true, y_proba, classes, positive_label, name, ax,
    )
    ax.set_title("ROC curves (one-vs-rest)" if pos is None else f"ROC curve (positive: {pos})")
    ax.set(
        xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)"
    )
    return fig


@_fill_plot_doc
def plot_precision_recall(estimator=None, X=None, y=None, *, y_true=None, y_proba=None,
                          classes=None, positive_label=None, name=None, ax=None):
    """Plot precision-recall curves with :class:`~sklearn.metrics.PrecisionRecallDisplay`.

    More telling than ROC curves when the positive class is rare (e.g. few
    COVID-19 images among many normals). Two classes: the curve of the
    positive class; three or more: one one-vs-rest curve per class. The
    legend gives each curve's average precision.

    {proba_parameters}
    {name_ax}

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure. Its title names the positive class ("Precision-recall
        curve (positive: <label>)"), or reads "Precision-recall curves
        (one-vs-rest)" for three or more classes.

    {raises}

    See Also
    --------
    sklearn.metrics.PrecisionRecallDisplay : The display drawn.
    plot_roc : ROC curves of the same scores.

    Examples
    --------
    >>> from skxray.evaluation import plot_precision_recall
    >>> y_true = ["Covid-19", "Normal", "Covid-19", "Normal"]
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> fig = plot_precision_recall(y_true=y_true, y_proba=proba)
    >>> fig.axes[0].get_title()
    'Precision-recall curve (positive: Covid-19)'
    """
    fig, ax, pos = _draw_one_vs_rest(
        "plot_precision_recall", PrecisionRecallDisplay, lambda i: {},
        estimator, X, y, y_true, y_proba, classes, positive_label, name, ax,
    )
    if pos is None:
        ax.set_title("Precision-recall curves (one-vs-rest)")
    else:
        ax.set_title(f"Precision-recall curve (positive: {pos})")
    ax.set(xlabel="sensitivity (recall)", ylabel="positive predictive value (precision)")
    return fig


@_fill_plot_doc
def plot_calibration(estimator=None, X=None, y=None, *, y_true=None, y_proba=None, classes=None,
                     positive_label=None, n_bins=5, strategy="uniform", name=None, ax=None):
    """Plot reliability curves with :class:`~sklearn.calibration.CalibrationDisplay`.

    Two classes: the predicted probability of the positive class against the
    observed frequency of that class, per bin. Three or more: one
    one-vs-rest curve per class. A well-calibrated model follows the
    diagonal.

    {proba_parameters}
    n_bins : int, default=5
        Number of probability bins.
    strategy : {{"uniform", "quantile"}}, default="uniform"
        Bins of equal width or of equal counts.
    {name_ax}

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, titled "Calibration (positive: <label>)" or
        "Calibration (one-vs-rest)".

    {raises}

    See Also
    --------
    sklearn.calibration.CalibrationDisplay : The display drawn.
    sklearn.calibration.CalibratedClassifierCV : Recalibrate a model.

    Examples
    --------
    >>> from skxray.evaluation import plot_calibration
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> fig = plot_calibration(y_true=["Covid-19", "Normal"] * 2, y_proba=proba, n_bins=2)
    >>> fig.axes[0].get_title()
    'Calibration (positive: Covid-19)'
    """
    if not is_int(n_bins) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2; got {n_bins!r}.")
    fig, ax, pos = _draw_one_vs_rest(
        "plot_calibration", CalibrationDisplay,
        lambda i: {"n_bins": n_bins, "strategy": strategy, "ref_line": i == 0},
        estimator, X, y, y_true, y_proba, classes, positive_label, name, ax,
    )
    if pos is not None:
        ax.set_title(f"Calibration (positive: {pos})")
        ax.set(xlabel=f"mean predicted probability of {pos}", ylabel=f"fraction of {pos}")
    else:
        ax.set_title("Calibration (one-vs-rest)")
        ax.set(xlabel="mean predicted probability", ylabel="fraction of the class")
    return fig


# --------------------------------------------------------------------------
# model comparison


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
    X, _ = _as_images_or_paths(X) if not np.ndim(X) == 2 else (np.asarray(X), False)
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


# --------------------------------------------------------------------------
# external validation


def proportion_ci(successes, n, *, confidence=0.95):
    """Wilson score interval of a proportion ``successes / n``.

    The Wilson interval (Wilson, 1927) stays inside [0, 1] and keeps close
    to its nominal coverage for small ``n`` and proportions near 0 or 1,
    where the normal approximation fails (a sensitivity of 240/243). It is
    computed by :meth:`scipy.stats.binomtest`.

    Parameters
    ----------
    successes : int
        Count of successes, in ``[0, n]``.
    n : int
        Number of trials.
    confidence : float, default=0.95
        Confidence level, in (0, 1).

    Returns
    -------
    (low, high) : tuple of float
        The interval; ``(nan, nan)`` when ``n`` is 0.

    Examples
    --------
    >>> from skxray.evaluation import proportion_ci
    >>> low, high = proportion_ci(26, 243)
    >>> round(low, 3), round(high, 3)
    (0.074, 0.152)
    """
    from scipy.stats import binomtest

    n = int(n)
    successes = int(successes)
    if not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be in [0, n]; got {successes} of {n}.")
    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def _rate(count, n):
    low, high = proportion_ci(count, n)
    return {"value": count / n if n else math.nan, "ci95": [low, high], "count": int(count), "n": int(n)}


def external_validation(estimator, X, y, *, alpha=0.05, n_permutations=1000, random_state=0):
    """What can be measured of a fitted skxray classifier on an external folder.

    An external set (another hospital's X-rays) often holds some of the
    model's classes only: a folder of COVID-19 images has no negatives, so
    specificity, ROC AUC and balanced accuracy cannot be computed. This
    function reports what can: each present class's sensitivity (recall of
    ``predict``) with its 95 % Wilson interval, the abstention rate of
    ``predict_with_abstention`` with its interval, the batch
    :func:`skxray.ood.shift_test` verdict, and the full
    :func:`classification_metrics` when every class is present. It says
    what could not be computed, and why.

    Parameters
    ----------
    estimator : fitted skxray classifier
        With ``predict_proba`` and, for abstention and the shift test, an
        out-of-distribution detector (``ood=True``).
    X : array-like
        External images in the format the model was fitted on.
    y : array-like of shape (n_samples,)
        Their true labels; each must be one of ``estimator.classes_``.
    alpha : float, default=0.05
        Significance level of the shift test.
    n_permutations : int, default=1000
        Permutations of the shift test.
    random_state : int, RandomState instance or None, default=0
        Seeds the shift test's permutations.

    Returns
    -------
    result : dict
        JSON-friendly: ``n_samples``, ``classes_present``,
        ``classes_missing``, ``per_class`` (``{class: {"support",
        "sensitivity": {"value", "ci95", "count", "n"}}}``), ``accuracy``
        (same form), ``abstention`` (same form, None without a detector),
        ``shift_test`` (:meth:`skxray.ood.ShiftTestResult.to_dict`, or None
        with the reason in ``notes``), ``metrics`` (all of
        :func:`classification_metrics`, None unless every class is present)
        and ``notes``, the sentences saying what could not be computed.

    Raises
    ------
    ValueError
        If a label of ``y`` is not one of the model's classes.

    See Also
    --------
    skxray.ood.shift_test : The batch test alone.
    evaluate : Metrics when every class is present.
    external_validation_from_predictions : The same from predictions made elsewhere.
    """
    from skxray.ood import shift_test

    check_is_fitted(estimator)
    _check_external_labels(y, estimator.classes_)  # before predicting a whole folder
    y_pred, proba, classes = _predict_with_proba(estimator, X)
    if getattr(estimator, "ood_", None) is None:
        answers = run_shift_test = None
    else:
        answers = estimator.predict_with_abstention(X)

        def run_shift_test():
            return shift_test(
                estimator, X, alpha=alpha, n_permutations=n_permutations, random_state=random_state
            )

    return external_validation_from_predictions(
        y, y_pred, proba, classes=classes, answers=answers, shift_test=run_shift_test
    )


def _check_external_labels(y, classes):
    """``y`` as a label vector, every label one of ``classes`` (a ValueError naming the others)."""
    y = check_label_vector(y, "y")
    classes = np.asarray(classes)
    unknown = sorted(set(map(str, np.unique(y))) - set(map(str, classes)))
    if unknown:
        raise ValueError(
            f"y has label(s) {unknown} that the model does not know; its classes are {classes.tolist()}."
        )
    return y


def external_validation_from_predictions(y, y_pred, y_proba=None, *, classes, answers=None,
                                         shift_test=None):
    """:func:`external_validation` from predictions already made.

    For predictions made elsewhere (on a Dask cluster, by
    :class:`skxray.dask.DaskPredictor`): the same result, the same checks,
    the same notes, from the predicted labels, probabilities and
    abstentions.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        True labels; each must be one of ``classes``.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    y_proba : ndarray of shape (n_samples, n_classes) or None, default=None
        Class probabilities, columns in the order of ``classes`` (for ROC
        AUC when every class is present).
    classes : array-like of shape (n_classes,)
        The model's classes.
    answers : array-like of shape (n_samples,) or None, default=None
        ``predict_with_abstention`` of each image (``"uncertain"`` where the
        model abstained); None for a model without out-of-distribution
        detector: then there is no abstention and no shift test.
    shift_test : callable or None, default=None
        Called without arguments, only when ``answers`` is given and the set
        is large enough (:data:`skxray.ood.MIN_SHIFT_TEST_IMAGES`); returns
        the :class:`skxray.ood.ShiftTestResult` of these images.

    Returns
    -------
    result : dict
        As :func:`external_validation`.

    Raises
    ------
    ValueError
        If a label of ``y`` is not one of ``classes``.
    """
    from skxray.ood import MIN_SHIFT_TEST_IMAGES

    classes = np.asarray(classes)
    y = _check_external_labels(y, classes)
    y_pred = np.asarray(y_pred)
    present = [c for c in classes if np.any(y == c)]
    missing = [c for c in classes if not np.any(y == c)]
    n = len(y)
    result = {
        "n_samples": int(n),
        "classes_present": [as_python_scalar(c) for c in present],
        "classes_missing": [as_python_scalar(c) for c in missing],
        "per_class": {
            str(c): {
                "support": int(np.sum(y == c)),
                "sensitivity": _rate(np.sum((y == c) & (y_pred == c)), np.sum(y == c)),
            }
            for c in present
        },
        "accuracy": _rate(np.sum(y_pred == y), n),
        "abstention": None,
        "shift_test": None,
        "metrics": None,
        "notes": [],
    }
    if missing:
        result["notes"].append(
            f"Specificity, PPV, ROC AUC and balanced accuracy need images of every class; "
            f"this set has no {', '.join(map(str, missing))}."
        )
    else:
        result["metrics"] = classification_metrics(y, y_pred, y_proba, classes=classes)
    if answers is None:
        result["notes"].append("No out-of-distribution detector (ood=False): no abstention, no shift test.")
        return result
    result["abstention"] = _rate(np.sum(np.asarray(answers) == "uncertain"), n)
    if n < MIN_SHIFT_TEST_IMAGES:
        result["notes"].append(
            f"Shift test skipped: it needs at least {MIN_SHIFT_TEST_IMAGES} images; got {n}."
        )
    elif shift_test is not None:
        result["shift_test"] = shift_test().to_dict()
    return result


def external_validation_figures(external, internal=None, *, n_splits=5):
    """Internal and external figures by metric, as :meth:`skxray.report.Report.add_external_validation` takes them.

    Parameters
    ----------
    external : dict
        As returned by :func:`external_validation`.
    internal : pandas.Series, dict or None, default=None
        The same model's internal figures: a row of :func:`compare_models`
        (``mean_accuracy``, ``std_accuracy``, ``mean_sensitivity_<class>``,
        ..., ``mean_ood_rate``) or None.
    n_splits : int, default=5
        Number of folds behind ``internal`` (``table.attrs["n_splits"]`` of
        :func:`compare_models`), for the t interval.

    Returns
    -------
    internal_figures, external_figures : dict of str to (float, float, float)
        ``{metric: (value, low, high)}`` for ``accuracy`` and each present
        class's ``sensitivity_<class>``: the external value with its 95 %
        Wilson interval; the internal mean over folds with a 95 % Student t
        interval over the ``n_splits`` folds, clipped to [0, 1] as in the
        report's comparison table (``(nan, nan, nan)`` without ``internal``).

    Examples
    --------
    >>> from skxray.evaluation import external_validation_figures
    >>> external = {"per_class": {"Covid-19": {"support": 10, "sensitivity":
    ...     {"value": 0.8, "ci95": [0.49, 0.94], "count": 8, "n": 10}}},
    ...     "accuracy": {"value": 0.8, "ci95": [0.49, 0.94], "count": 8, "n": 10}}
    >>> inside, outside = external_validation_figures(external)
    >>> outside["sensitivity_Covid-19"]
    (0.8, 0.49, 0.94)
    """
    rates = {"accuracy": external["accuracy"]}
    rates.update({f"sensitivity_{name}": e["sensitivity"] for name, e in external["per_class"].items()})
    outside = {key: (r["value"], *r["ci95"]) for key, r in rates.items()}
    inside = {key: (math.nan, math.nan, math.nan) for key in rates}
    if internal is not None:
        internal = dict(internal)
        for key in rates:
            mean, std = internal.get(f"mean_{key}", math.nan), internal.get(f"std_{key}", math.nan)
            # The same interval as the report's comparison table, clipped to [0, 1].
            inside[key] = (mean, *fold_mean_interval(mean, std, n_splits))
    return inside, outside
