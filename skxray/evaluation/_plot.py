"""The plot functions: thin wrappers that return the figure of a display.

Each ``plot_*`` function builds the matching display of
displays (from an estimator or from predictions)
and returns its ``figure_``; keep the figure-drawing code in the displays.
"""

from ._curves import PrecisionRecallCurvesDisplay, ReliabilityDisplay, RocCurvesDisplay
from ._displays import (
    ConfusionMatricesDisplay,
    ImageGridDisplay,
    LearningCurvesDisplay,
    doc_filler,
)

__all__ = [
    "plot_calibration",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_learning_curves",
    "plot_precision_recall",
    "plot_roc",
]


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
    ImageGridDisplay : The display behind this figure.
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
    return ImageGridDisplay.from_images(
        X, y, n=n, random_state=random_state, ncols=ncols
    ).figure_


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
    LearningCurvesDisplay : The display behind this figure.
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
    if hasattr(estimator_or_history, "fit"):
        return LearningCurvesDisplay.from_estimator(estimator_or_history).figure_
    return LearningCurvesDisplay.from_history(estimator_or_history).figure_


def _from_either(func, display, estimator, X, y, y_true, y_other, other_name, *, classes, **kwargs):
    """``display`` from ``estimator``, ``X``, ``y`` or from ``y_true`` and ``y_other``.

    Exactly one form must be given; ``classes`` goes to ``from_predictions``
    only (an estimator names its own classes).
    """
    if estimator is not None:
        if y_true is not None or y_other is not None:
            raise ValueError(
                f"{func}: pass either estimator, X and y, or y_true and {other_name}; not both."
            )
        if X is None or y is None:
            raise ValueError(f"{func}: X and y are required with estimator.")
        return display.from_estimator(estimator, X, y, **kwargs)
    if y_true is None or y_other is None:
        raise ValueError(
            f"{func}: pass estimator, X and y, or y_true and {other_name}; "
            f"got y_true={'None' if y_true is None else '...'} and "
            f"{other_name}={'None' if y_other is None else '...'}."
        )
    return display.from_predictions(y_true, y_other, **classes, **kwargs)


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


_fill_plot_doc = doc_filler(_PLOT_DOC)


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
    ConfusionMatricesDisplay : The display behind this figure (compute once, draw anywhere).
    sklearn.metrics.ConfusionMatrixDisplay : The display drawn.
    classification_metrics : The counts as numbers.

    Examples
    --------
    >>> from skxray.evaluation import plot_confusion_matrix
    >>> fig = plot_confusion_matrix(y_true=["a", "a", "b"], y_pred=["a", "b", "b"], name="demo")
    >>> fig.axes[0].get_title()
    'Confusion matrix: demo'
    """
    return _from_either(
        "plot_confusion_matrix", ConfusionMatricesDisplay, estimator, X, y, y_true, y_pred,
        "y_pred", classes={}, labels=labels, normalize=normalize, name=name, cmap=cmap, ax=ax,
    ).figure_


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
    RocCurvesDisplay : The display behind this figure (compute once, draw anywhere).
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
    return _from_either(
        "plot_roc", RocCurvesDisplay, estimator, X, y, y_true, y_proba, "y_proba",
        classes={"classes": classes}, positive_label=positive_label, name=name, ax=ax,
    ).figure_


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
    PrecisionRecallCurvesDisplay : The display behind this figure.
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
    return _from_either(
        "plot_precision_recall", PrecisionRecallCurvesDisplay, estimator, X, y, y_true, y_proba,
        "y_proba", classes={"classes": classes}, positive_label=positive_label, name=name, ax=ax,
    ).figure_


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
    ReliabilityDisplay : The display behind this figure (compute once, draw anywhere).
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
    return _from_either(
        "plot_calibration", ReliabilityDisplay, estimator, X, y, y_true, y_proba, "y_proba",
        classes={"classes": classes}, positive_label=positive_label, n_bins=n_bins,
        strategy=strategy, name=name, ax=ax,
    ).figure_
