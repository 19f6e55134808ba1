"""Display objects: a figure's data computed once, drawn on any axes.

The scikit-learn pattern (:class:`sklearn.metrics.RocCurveDisplay`): a
classmethod ``from_estimator`` (or ``from_predictions``, ``from_history``,
``from_images``, ``from_cv_predictions``) computes what the figure shows,
stores it as public attributes and draws it; ``plot(ax=...)`` draws it again,
on a new figure or on given axes, without computing anything. ``plot``
returns the display and sets ``ax_`` (the first axes), ``axes_`` (all of
them), ``figure_`` and the artists. Figures are made without pyplot, so no
global state is kept and nothing is shown.

Composition, not copies: each ROC, precision-recall and reliability curve and
each confusion matrix is drawn by scikit-learn's public display
(:class:`~sklearn.metrics.RocCurveDisplay`,
:class:`~sklearn.metrics.PrecisionRecallDisplay`,
:class:`~sklearn.calibration.CalibrationDisplay`,
:class:`~sklearn.metrics.ConfusionMatrixDisplay`), built from the values
computed here with scikit-learn's public metric functions. The curves then
look like scikit-learn's (legend with the AUC, chance line) and there is no
hand-drawn copy to keep in step with them. What skxray's displays add is what
those lack: several curves on one axes (one-vs-rest classes, or several
models' out-of-fold predictions), string labels with a clinical positive
class (:func:`~skxray.evaluation.default_positive_label`), titles, and
figures made without pyplot (scikit-learn's ``plot(ax=None)`` calls
``pyplot.subplots``; we always pass axes). Their names differ from
scikit-learn's (``RocCurvesDisplay``, ``ReliabilityDisplay``,
``ConfusionMatricesDisplay``: plural, as they hold one or several curves or
matrices) so that the two cannot be confused when both are imported.

This module holds the common part (``_DisplayMixin``) and the displays of
confusion matrices, learning curves, image grids and image sizes; the curve displays are
in :mod:`skxray.evaluation._curves`, the external-validation display in
:mod:`skxray.evaluation._external`.
"""

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

from skxray._utils import check_label_vector, is_int
from skxray._validation import as_images_or_paths

from ._metrics import _predict_with_proba

__all__ = [
    "ConfusionMatricesDisplay",
    "ImageGridDisplay",
    "ImageSizesDisplay",
    "LearningCurvesDisplay",
]


def _new_axes(nrows=1, ncols=1, *, figsize=(5.0, 4.5), sharex=False):
    """A (nrows, ncols) array of axes of a new Figure made outside pyplot."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)


def doc_filler(parts):
    """A decorator that fills the ``{name}`` fields of a docstring from ``parts``.

    One template per shared piece of documentation (as the classifiers'
    ``COMMON_PARAMETERS_DOC``); literal braces are doubled (``{{``).
    """

    def fill(obj):
        if obj.__doc__:  # None under python -OO
            obj.__doc__ = obj.__doc__.format(**parts)
        return obj

    return fill


class _DisplayMixin:
    """Sets ``ax_``, ``axes_`` and ``figure_`` from the axes given to ``plot``."""

    def _set_axes(self, ax, *, nrows=1, ncols=1, figsize=(5.0, 4.5), sharex=False):
        if ax is None:
            axes = _new_axes(nrows, ncols, figsize=figsize, sharex=sharex).ravel()
        else:
            axes = np.ravel(np.asarray(ax, dtype=object))
            if len(axes) < nrows * ncols:
                raise ValueError(
                    f"{type(self).__name__}.plot: ax must hold at least {nrows * ncols} axes; "
                    f"got {len(axes)}."
                )
        self.axes_ = axes
        self.ax_ = axes[0]
        self.figure_ = axes[0].figure
        return axes

    def __repr__(self):
        return f"<{type(self).__name__}>"


def _check_cv_predictions(y_true, predictions, classes):
    """``(classes, {name: (y_true, proba)})``, rows of NaN (in no test fold) left out."""
    if not isinstance(predictions, Mapping) or not predictions:
        raise TypeError("predictions must be a non-empty dict {name: probabilities}.")
    y_true = np.asarray(y_true, dtype=object).reshape(-1)
    classes = np.asarray(sorted(set(y_true.tolist())) if classes is None else classes, dtype=object)
    models = {}
    for name, proba in predictions.items():
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape != (len(y_true), len(classes)):
            raise ValueError(
                f"predictions[{name!r}] has shape {proba.shape}; expected "
                f"({len(y_true)}, {len(classes)})."
            )
        keep = ~np.isnan(proba).any(axis=1)
        models[name] = (y_true[keep], proba[keep])
    return classes, models


# --------------------------------------------------------------------------
# confusion matrices


#: The parameters shared by the confusion-matrix display and plot function.
NORMALIZE_NAME_CMAP_AX_DOC = """normalize : {"true", "pred", "all"} or None, default=None
            Counts (None) or fractions over the true classes (rows), the
            predictions (columns) or all images.
        name : str, default=None
            Model name, appended to the title.
        cmap : str or matplotlib Colormap, default="Blues"
            Colormap of the cells.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure."""
_fill_confusion_doc = doc_filler({"normalize_name_cmap_ax": NORMALIZE_NAME_CMAP_AX_DOC})


class ConfusionMatricesDisplay(_DisplayMixin):
    """Confusion matrices: one model's, or several models' in a row.

    Each matrix is drawn by :class:`sklearn.metrics.ConfusionMatrixDisplay`
    (rows: true class, columns: predicted class).

    Parameters
    ----------
    confusion_matrices : list of ndarray of shape (n_classes, n_classes)
        Counts, or fractions when ``normalize`` is set.
    display_labels : list
        The classes, in the order of the rows and columns.
    names : list of str or None
        Model name of each matrix (None for an unnamed single matrix).
    normalize : {"true", "pred", "all"} or None, default=None
        How the matrices were normalized (cells then show two decimals).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the first matrix.
    axes_ : ndarray of Axes
        One axes per matrix.
    figure_ : matplotlib Figure
        Their figure.
    matrices_ : list of sklearn.metrics.ConfusionMatrixDisplay
        One scikit-learn display per matrix.

    See Also
    --------
    plot_confusion_matrix : The figure of one matrix.
    classification_metrics : The counts as numbers.

    Examples
    --------
    >>> from skxray.evaluation import ConfusionMatricesDisplay
    >>> disp = ConfusionMatricesDisplay.from_predictions(["a", "a", "b"], ["a", "b", "b"])
    >>> disp.confusion_matrices[0].tolist(), disp.ax_.get_title()
    ([[1, 1], [0, 1]], 'Confusion matrix')
    """

    def __init__(self, confusion_matrices, *, display_labels, names=None, normalize=None):
        self.confusion_matrices = confusion_matrices
        self.display_labels = display_labels
        self.names = names
        self.normalize = normalize

    @classmethod
    @_fill_confusion_doc
    def from_estimator(cls, estimator, X, y, *, labels=None, normalize=None, name=None,
                       cmap="Blues", ax=None):
        """Compute the confusion matrix of a fitted classifier on ``X``, ``y`` and draw it.

        Parameters
        ----------
        estimator : fitted classifier
            Predicts ``X``; its ``classes_`` order the rows and columns.
        X : array-like of images or 1-D sequence of file paths
            Test images.
        y : array-like of shape (n_samples,)
            True labels.
        labels : array-like of shape (n_classes,), default=None
            Order of the classes; None means ``estimator.classes_``.
        {normalize_name_cmap_ax}

        Returns
        -------
        display : ConfusionMatricesDisplay
            The display, drawn.
        """
        check_is_fitted(estimator)
        y_true = check_label_vector(y, "y")
        y_pred, _, classes = _predict_with_proba(estimator, X)
        return cls._compute([(name, y_true, y_pred)], classes if labels is None else labels,
                            normalize).plot(ax=ax, cmap=cmap)

    @classmethod
    @_fill_confusion_doc
    def from_predictions(cls, y_true, y_pred, *, labels=None, normalize=None, name=None,
                         cmap="Blues", ax=None):
        """Compute the confusion matrix of given predictions and draw it.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        y_pred : array-like of shape (n_samples,)
            Predicted labels.
        labels : array-like of shape (n_classes,), default=None
            Order of the classes; None sorts the labels found.
        {normalize_name_cmap_ax}

        Returns
        -------
        display : ConfusionMatricesDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If lengths differ.
        """
        y_true = check_label_vector(y_true, "y_true")
        y_pred = check_label_vector(y_pred, "y_pred", len(y_true))
        classes = unique_labels(y_true, y_pred) if labels is None else labels
        return cls._compute([(name, y_true, y_pred)], classes, normalize).plot(ax=ax, cmap=cmap)

    @classmethod
    def from_cv_predictions(cls, y_true, predictions, *, classes=None, cmap="Blues", ax=None):
        """One matrix per model, of its out-of-fold predictions, in a row.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        predictions : dict of str to array-like of shape (n_samples, n_classes)
            Each model's out-of-fold probabilities; the predicted class is
            the column of highest probability. Rows of NaN are left out.
        classes : array-like of shape (n_classes,), default=None
            Labels of the columns; None sorts the labels of ``y_true``.
        cmap : str or matplotlib Colormap, default="Blues"
            Colormap of the cells.
        ax : sequence of matplotlib Axes, default=None
            One axes per model; None creates a new figure.

        Returns
        -------
        display : ConfusionMatricesDisplay
            The display, drawn.
        """
        classes, models = _check_cv_predictions(y_true, predictions, classes)
        triples = [(str(name), y, classes[p.argmax(axis=1)]) for name, (y, p) in models.items()]
        return cls._compute(triples, list(classes), None).plot(ax=ax, cmap=cmap)

    @classmethod
    def _compute(cls, triples, classes, normalize):
        classes = list(classes)
        matrices = [confusion_matrix(t, p, labels=classes, normalize=normalize)
                    for _, t, p in triples]
        names = [name for name, _, _ in triples]
        return cls(matrices, display_labels=classes, names=names, normalize=normalize)

    def plot(self, ax=None, *, cmap="Blues"):
        """Draw the matrices: one, titled "Confusion matrix (: name)", or a row titled by model.

        Parameters
        ----------
        ax : matplotlib Axes or sequence of Axes, default=None
            Axes to draw on, one per matrix; None creates a new figure.
        cmap : str or matplotlib Colormap, default="Blues"
            Colormap of the cells.

        Returns
        -------
        display : ConfusionMatricesDisplay
            ``self``, with ``ax_``, ``axes_``, ``figure_`` and
            ``matrices_`` set.
        """
        n = len(self.confusion_matrices)
        figsize = (5.0, 4.5) if n == 1 else (min(3.0 * n, 11.0), 3.0)
        axes = self._set_axes(ax, ncols=n, figsize=figsize)
        self.matrices_ = []
        for k, (matrix, name) in enumerate(zip(self.confusion_matrices, self.names, strict=True)):
            disp = ConfusionMatrixDisplay(matrix, display_labels=self.display_labels)
            disp.plot(ax=axes[k], values_format=".2f" if self.normalize else "d", cmap=cmap,
                      colorbar=False)
            if n == 1:
                axes[k].set_title("Confusion matrix" + (f": {name}" if name else ""))
            else:
                axes[k].set_title(name, fontsize=10)
                if k:
                    axes[k].set_ylabel("")
            self.matrices_.append(disp)
        return self


# --------------------------------------------------------------------------
# learning curves


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


class LearningCurvesDisplay(_DisplayMixin):
    """Training and validation loss, and validation accuracy, per epoch.

    The best epoch (lowest validation loss, or lowest training loss when no
    validation set was held out) is marked by a dashed vertical line
    labelled ``"best epoch (k)"`` on both axes.

    Parameters
    ----------
    epochs : ndarray
        Epoch numbers.
    train_loss : ndarray
        Training loss of each epoch.
    valid_loss, valid_acc : ndarray or None
        Validation loss and accuracy of each epoch (None without a
        validation set; NaN where an epoch lacks them).
    best_epoch : float
        The epoch marked.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The loss axes.
    axes_ : ndarray of Axes
        The loss and the accuracy axes.
    figure_ : matplotlib Figure
        Their figure.
    best_lines_ : list of matplotlib Line2D
        The dashed best-epoch lines.

    See Also
    --------
    plot_learning_curves : The figure of this display.

    Examples
    --------
    >>> from skxray.evaluation import LearningCurvesDisplay
    >>> history = [{"epoch": 1, "train_loss": 0.9, "valid_loss": 0.8},
    ...            {"epoch": 2, "train_loss": 0.6, "valid_loss": 0.7}]
    >>> disp = LearningCurvesDisplay.from_history(history)
    >>> disp.best_epoch, [ax.get_title() for ax in disp.axes_]
    (2.0, ['Loss', 'Validation accuracy'])
    """

    def __init__(self, *, epochs, train_loss, valid_loss=None, valid_acc=None, best_epoch):
        self.epochs = epochs
        self.train_loss = train_loss
        self.valid_loss = valid_loss
        self.valid_acc = valid_acc
        self.best_epoch = best_epoch

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Draw the ``history_`` of a fitted skxray classifier (or of a Pipeline's last step).

        Parameters
        ----------
        estimator : fitted skxray classifier or Pipeline ending in one
            Its ``history_`` is drawn.
        ax : pair of matplotlib Axes, default=None
            Loss and accuracy axes; None creates a new figure.

        Returns
        -------
        display : LearningCurvesDisplay
            The display, drawn.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        TypeError
            If it has no ``history_``.
        """
        if not hasattr(estimator, "fit"):
            raise TypeError(
                f"estimator must be a fitted skxray classifier; got {type(estimator).__name__}; "
                "use from_history for a list of per-epoch dicts."
            )
        return cls._from_rows(_history_of(estimator), ax)

    @classmethod
    def from_history(cls, history, *, ax=None):
        """Draw a history: one dict per epoch.

        Parameters
        ----------
        history : list of dict
            One dict per epoch with ``train_loss`` and optionally ``epoch``,
            ``valid_loss`` and ``valid_acc`` (None when missing).
        ax : pair of matplotlib Axes, default=None
            Loss and accuracy axes; None creates a new figure.

        Returns
        -------
        display : LearningCurvesDisplay
            The display, drawn.

        Raises
        ------
        TypeError
            If ``history`` is not a list of dicts.
        ValueError
            If it is empty or lacks ``train_loss``.
        """
        if hasattr(history, "fit"):
            raise TypeError("history must be a list of per-epoch dicts; use from_estimator.")
        return cls._from_rows(_history_of(history), ax)

    @classmethod
    def _from_rows(cls, history, ax):
        epochs = _column(history, "epoch")
        if epochs is None or np.isnan(epochs).any():
            epochs = np.arange(1, len(history) + 1, dtype=float)
        train_loss = _column(history, "train_loss")
        valid_loss = _column(history, "valid_loss")
        monitored = valid_loss if valid_loss is not None and not np.isnan(valid_loss).all() else None
        best = int(np.nanargmin(monitored if monitored is not None else train_loss))
        return cls(epochs=epochs, train_loss=train_loss, valid_loss=valid_loss,
                   valid_acc=_column(history, "valid_acc"), best_epoch=float(epochs[best])).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the loss and the accuracy side by side.

        Parameters
        ----------
        ax : pair of matplotlib Axes, default=None
            Loss and accuracy axes; None creates a new figure (10 x 4 in).

        Returns
        -------
        display : LearningCurvesDisplay
            ``self``, with ``ax_``, ``axes_``, ``figure_`` and
            ``best_lines_`` set.
        """
        ax_loss, ax_acc = self._set_axes(ax, ncols=2, figsize=(10.0, 4.0), sharex=True)[:2]
        epochs, best = self.epochs, self.best_epoch
        best_label = f"best epoch ({int(best) if float(best).is_integer() else best})"
        ax_loss.plot(epochs, self.train_loss, marker="o", label="train loss")
        if self.valid_loss is not None:
            ax_loss.plot(epochs, self.valid_loss, marker="o", label="validation loss")
        ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
        if self.valid_acc is not None:
            ax_acc.plot(epochs, self.valid_acc, marker="o", color="C2", label="validation accuracy")
        else:
            ax_acc.text(
                0.5, 0.5, "no validation set", ha="center", va="center", transform=ax_acc.transAxes
            )
        ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02))
        ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.best_lines_ = []
        for axes in (ax_loss, ax_acc):
            self.best_lines_.append(axes.axvline(best, color="gray", linestyle="--", label=best_label))
            axes.legend(loc="best", fontsize=8)
            axes.grid(alpha=0.3)
        return self


# --------------------------------------------------------------------------
# image grid


def _displayable(X, i, paths):
    """Image ``i`` of ``X`` ready for imshow: 2-D gray, or RGB scaled to [0, 1]."""
    if paths:
        from skxray.io import read_image

        img = read_image(X[i], as_gray=True)
    else:
        img = np.asarray(X[i], dtype=np.float64)
        if img.ndim == 3:
            img = np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img.mean(axis=0)
    if img.ndim == 3:  # RGB: min-max scaled to [0, 1] for imshow
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


class ImageGridDisplay(_DisplayMixin):
    """A random sample of images with their labels as titles.

    Parameters
    ----------
    images : list of ndarray
        The images drawn: 2-D (gray) or (height, width, 3) in [0, 1].
    titles : list of str
        Title of each image.
    indices : ndarray of int
        Index of each image in the ``X`` it was drawn from.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The first image's axes.
    axes_ : ndarray of Axes
        One axes per image.
    figure_ : matplotlib Figure
        Their figure.

    See Also
    --------
    plot_image_grid : The figure of this display.

    Examples
    --------
    >>> from skxray import make_phantom_cxr
    >>> from skxray.evaluation import ImageGridDisplay
    >>> X, y = make_phantom_cxr(10, image_size=16, random_state=0)
    >>> disp = ImageGridDisplay.from_images(X, y, n=4, random_state=0)
    >>> len(disp.images), len(disp.figure_.axes)
    (4, 4)
    """

    def __init__(self, images, *, titles, indices):
        self.images = images
        self.titles = titles
        self.indices = indices

    @classmethod
    def from_images(cls, X, y=None, *, n=6, random_state=None, ncols=3, ax=None):
        """Draw ``n`` images of ``X`` at random, titled with their labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width), or 1-D sequence of file paths
            Images; only the drawn paths are read (in gray levels). Gray
            images use the gray colormap scaled to each image's range;
            3-channel images are shown in colour after min-max scaling;
            other channel counts are averaged.
        y : array-like of shape (n_samples,), default=None
            Labels, shown as titles; None titles each image ``"#<index>"``.
        n : int, default=6
            Number of images; all of them (in random order) if ``X`` has fewer.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw.
        ncols : int, default=3
            Number of columns of the grid.
        ax : sequence of matplotlib Axes, default=None
            At least one axes per image; None creates a new figure.

        Returns
        -------
        display : ImageGridDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``n`` or ``ncols`` is not a positive int, ``X`` is not images
            or paths, or ``y`` has another length.
        """
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}.")
        if not is_int(ncols) or ncols < 1:
            raise ValueError(f"ncols must be an int >= 1; got {ncols!r}.")
        X, paths = as_images_or_paths(X)
        if y is not None:
            y = column_or_1d(np.asarray(y, dtype=object))
            if len(y) != len(X):
                raise ValueError(f"y has {len(y)} labels but X has {len(X)} images.")
        rng = check_random_state(random_state)
        idx = rng.choice(len(X), size=min(n, len(X)), replace=False)
        images = [_displayable(X, i, paths) for i in idx]
        titles = [f"#{i}" if y is None else str(y[i]) for i in idx]
        return cls(images, titles=titles, indices=idx).plot(ax=ax, ncols=ncols)

    def plot(self, ax=None, *, ncols=3):
        """Draw the images in a grid.

        Parameters
        ----------
        ax : sequence of matplotlib Axes, default=None
            At least one axes per image (extra axes are left untouched);
            None creates a new figure of ``ncols`` columns (unused cells are
            removed from it).
        ncols : int, default=3
            Number of columns of a new figure.

        Returns
        -------
        display : ImageGridDisplay
            ``self``, with ``ax_``, ``axes_`` and ``figure_`` set.
        """
        n = len(self.images)
        ncols = min(ncols, n)
        nrows = math.ceil(n / ncols)
        new = ax is None
        if new:
            axes = self._set_axes(None, nrows=nrows, ncols=ncols, figsize=(2.2 * ncols, 2.4 * nrows))
        else:
            axes = self._set_axes(ax, ncols=n)
        for cell, img, title in zip(axes[:n], self.images, self.titles, strict=True):
            cell.set_axis_off()
            cell.imshow(img, cmap=None if img.ndim == 3 else "gray")
            cell.set_title(title, fontsize=9)
        if new:  # drop the blank cells so that figure_.axes has one axes per image
            for cell in axes[n:]:
                self.figure_.delaxes(cell)
        self.axes_ = axes[:n]  # extra axes given are left untouched
        return self


# --------------------------------------------------------------------------
# image sizes


class ImageSizesDisplay(_DisplayMixin):
    """Histograms of the images' heights and widths, side by side.

    Parameters
    ----------
    heights, widths : ndarray of int
        Height and width of each image, in pixels.
    bins : int, default=20
        Number of bins of each histogram.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The heights' axes.
    axes_ : ndarray of Axes
        The heights' and the widths' axes.
    figure_ : matplotlib Figure
        Their figure.

    See Also
    --------
    skxray.report.Report.add_dataset_summary : Draws it when the sizes vary.

    Examples
    --------
    >>> from skxray.evaluation import ImageSizesDisplay
    >>> disp = ImageSizesDisplay.from_sizes([512, 1024, 1024], [512, 900, 1024])
    >>> [ax.get_title() for ax in disp.axes_], disp.heights.tolist()
    (['Image heights', 'Image widths'], [512, 1024, 1024])
    """

    def __init__(self, heights, widths, *, bins=20):
        self.heights = heights
        self.widths = widths
        self.bins = bins

    @classmethod
    def from_sizes(cls, heights, widths, *, bins=20, ax=None):
        """Draw the histograms of given image sizes.

        Parameters
        ----------
        heights, widths : array-like of shape (n_samples,)
            Height and width of each image, in pixels (e.g. of the original
            files, before resizing).
        bins : int, default=20
            Number of bins of each histogram.
        ax : pair of matplotlib Axes, default=None
            Axes of the heights and of the widths; None creates a new figure.

        Returns
        -------
        display : ImageSizesDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``heights`` and ``widths`` are empty or differ in length, or
            ``bins`` is not a positive int.
        """
        heights = column_or_1d(np.asarray(heights))
        widths = column_or_1d(np.asarray(widths))
        if len(heights) == 0 or len(heights) != len(widths):
            raise ValueError(
                "heights and widths must hold one size per image, at least one; "
                f"got {len(heights)} heights and {len(widths)} widths."
            )
        if not is_int(bins) or bins < 1:
            raise ValueError(f"bins must be an int >= 1; got {bins!r}.")
        return cls(heights, widths, bins=bins).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the two histograms.

        Parameters
        ----------
        ax : pair of matplotlib Axes, default=None
            Axes of the heights and of the widths; None creates a new figure
            (8 x 3 in).

        Returns
        -------
        display : ImageSizesDisplay
            ``self``, with ``ax_``, ``axes_`` and ``figure_`` set.
        """
        ax_h, ax_w = self._set_axes(ax, ncols=2, figsize=(8.0, 3.0))[:2]
        ax_h.hist(self.heights, bins=self.bins, color="C0")
        ax_h.set(title="Image heights", xlabel="pixels", ylabel="images")
        ax_w.hist(self.widths, bins=self.bins, color="C1")
        ax_w.set(title="Image widths", xlabel="pixels", ylabel="images")
        self.axes_ = self.axes_[:2]
        return self
