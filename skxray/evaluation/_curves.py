"""The curve displays: ROC, precision-recall and reliability curves.

Each curve is drawn by scikit-learn's public display
(:class:`~sklearn.metrics.RocCurveDisplay`,
:class:`~sklearn.metrics.PrecisionRecallDisplay`,
:class:`~sklearn.calibration.CalibrationDisplay`), built from values computed
here once with scikit-learn's public metric functions; see
:mod:`skxray.evaluation._displays` for why the displays compose scikit-learn's
rather than draw by hand.
"""

import numpy as np
from sklearn.calibration import CalibrationDisplay, calibration_curve
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_curve,
)
from sklearn.utils.validation import check_is_fitted

from skxray._utils import as_python_scalar, check_label_vector, is_int

from ._displays import _check_cv_predictions, _DisplayMixin, doc_filler
from ._metrics import _check_positive_label, _check_proba, _predict_with_proba, _resolve_classes

__all__ = ["PrecisionRecallCurvesDisplay", "ReliabilityDisplay", "RocCurvesDisplay"]


# --------------------------------------------------------------------------
# inputs


def _proba_of_estimator(estimator, X, y, where):
    """``(y_true, proba, classes)`` with ``predict_proba`` called once."""
    check_is_fitted(estimator)
    y_true = check_label_vector(y, "y")
    _, proba, classes = _predict_with_proba(estimator, X)
    if proba is None:
        raise ValueError(f"{where}: estimator {type(estimator).__name__} has no predict_proba.")
    return y_true, proba, classes


def _proba_of_predictions(y_true, y_proba, classes):
    y_true = check_label_vector(y_true, "y_true")
    classes = _resolve_classes(classes, y_true, None, y_proba)
    return y_true, _check_proba(y_proba, len(y_true), classes, "y_proba"), classes


def _one_vs_rest(y_true, proba, classes, positive_label, name, where):
    """``([(curve name, is_positive, score)], positive)``: the positive class's
    curve for two classes, one per class (``positive`` None) for three or more.
    Classes all or none of ``y_true`` are left out (no curve without both outcomes)."""
    classes = list(classes)
    if len(classes) == 2:
        pos = _check_positive_label(positive_label, classes)
        col = [as_python_scalar(c) for c in classes].index(pos)
        targets = [(col, name or str(pos))]
    else:
        pos = None
        if positive_label is not None:
            _check_positive_label(positive_label, classes)
        prefix = f"{name}: " if name else ""
        targets = [(i, f"{prefix}{c} vs rest") for i, c in enumerate(classes)]
    curves = []
    for col, label in targets:
        is_pos = np.asarray(y_true == classes[col])
        if is_pos.all() or not is_pos.any():
            continue
        curves.append((label, is_pos, proba[:, col]))
    if not curves:
        raise ValueError(f"{where}: y_true must hold at least two classes to draw a curve.")
    return curves, pos


def _cv_positive_curves(y_true, predictions, classes, positive_label):
    """One ``(model name, is_positive, score)`` per model whose kept rows hold both outcomes."""
    classes, models = _check_cv_predictions(y_true, predictions, classes)
    positive = _check_positive_label(positive_label, list(classes))
    col = list(classes).index(positive)
    curves = []
    for name, (y, proba) in models.items():
        is_pos = np.asarray(y == positive)
        if 0 < is_pos.sum() < len(is_pos):
            curves.append((str(name), is_pos, proba[:, col]))
    return curves, positive


def _nth(kwargs, i):
    """The ``i``-th curve's keyword arguments: ``kwargs[i]`` of a list, else ``kwargs``."""
    if kwargs is None:
        return {}
    return dict(kwargs[i] if isinstance(kwargs, (list, tuple)) else kwargs)


# Docstring parts shared by the curve displays, filled in by @_fill_doc.
_DOC = {
    "from_estimator": """Compute the curves of a fitted classifier on ``X``, ``y`` and draw them.

        ``predict_proba`` is called once; :meth:`plot` draws again without it.

        Parameters
        ----------
        estimator : fitted classifier with predict_proba
            Scores ``X``; its ``classes_`` name the probability columns.
        X : array-like of images or 1-D sequence of file paths
            Test images.
        y : array-like of shape (n_samples,)
            True labels.""",
    "from_predictions": """Compute the curves of given probabilities and draw them.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        y_proba : array-like of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes`` (e.g.
            out-of-fold ones from :func:`compare_models`); 1-D means the
            probability of ``classes[1]``.
        classes : array-like of shape (n_classes,), default=None
            Labels of the columns of ``y_proba``; None means the sorted
            labels of ``y_true``.""",
    "from_cv_predictions": """One curve per model: its out-of-fold probabilities of the positive class.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        predictions : dict of str to array-like of shape (n_samples, n_classes)
            Each model's out-of-fold probabilities, e.g. the second value of
            ``compare_models(..., return_predictions=True)``. Rows of NaN
            (images in no test fold) are left out; a model whose kept rows
            hold one outcome only gets no curve.
        classes : array-like of shape (n_classes,), default=None
            Labels of the columns; None sorts the labels of ``y_true``.""",
    "curve_parameters_and_attributes": """curve_names : list of str
        Legend name of each curve.
    positive_label : object, default=None
        The positive class; None for one-vs-rest curves of 3+ classes.
    name : str, default=None
        Model name.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    axes_ : ndarray of Axes
        The same axes, as an array (as in every skxray display).
    figure_ : matplotlib Figure
        Its figure.
    curves_ : list of scikit-learn displays
        One scikit-learn display per curve (the class named above).
    lines_ : list of matplotlib Line2D
        The curves.""",
    "positive_name_ax": """positive_label : object, default=None
            Class of the binary curve; see :func:`default_positive_label`.
        name : str, default=None
            Model name used in the legend.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.""",
    "returns_raises": """Returns
        -------
        display : object
            The display (of the class this method is called on), drawn.

        Raises
        ------
        ValueError
            If shapes disagree, ``positive_label`` is not a class or
            ``y_true`` holds a single class.""",
}


_fill_doc = doc_filler(_DOC)


class _CurvesDisplay(_DisplayMixin):
    """One-vs-rest curves drawn by one scikit-learn display per curve."""

    #: Title with the positive class, and title of one-vs-rest curves.
    _titles = ("{}", "{}")
    _figsize = (5.0, 4.5)

    @classmethod
    @_fill_doc
    def from_estimator(cls, estimator, X, y, *, positive_label=None, name=None, ax=None):
        """{from_estimator}
        {positive_name_ax}

        {returns_raises}
        """
        return cls._from_estimator(estimator, X, y, positive_label, name, ax)

    @classmethod
    @_fill_doc
    def from_predictions(cls, y_true, y_proba, *, classes=None, positive_label=None, name=None,
                         ax=None):
        """{from_predictions}
        {positive_name_ax}

        {returns_raises}
        """
        return cls._from_predictions(y_true, y_proba, classes, positive_label, name, ax)

    @classmethod
    def _from_curves(cls, curves, positive, name, ax, **params):
        return cls._compute(curves, positive, name, **params).plot(ax=ax)

    @classmethod
    def _from_estimator(cls, estimator, X, y, positive_label, name, ax, **params):
        where = f"{cls.__name__}.from_estimator"
        y_true, proba, classes = _proba_of_estimator(estimator, X, y, where)
        curves, pos = _one_vs_rest(y_true, proba, classes, positive_label, name, where)
        return cls._from_curves(curves, pos, name, ax, **params)

    @classmethod
    def _from_predictions(cls, y_true, y_proba, classes, positive_label, name, ax, **params):
        where = f"{cls.__name__}.from_predictions"
        y_true, proba, classes = _proba_of_predictions(y_true, y_proba, classes)
        curves, pos = _one_vs_rest(y_true, proba, classes, positive_label, name, where)
        return cls._from_curves(curves, pos, name, ax, **params)

    @classmethod
    def _from_cv_predictions(cls, y_true, predictions, classes, positive_label, ax, **params):
        curves, pos = _cv_positive_curves(y_true, predictions, classes, positive_label)
        return cls._from_curves(curves, pos, None, ax, **params)

    def plot(self, ax=None, *, curve_kwargs=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure (outside pyplot).
        curve_kwargs : dict or list of dict, default=None
            Matplotlib line properties of every curve, or of each in turn.

        Returns
        -------
        display : object
            ``self``, with ``ax_``, ``figure_``, ``curves_`` and ``lines_``
            set.
        """
        return self._plot(ax, curve_kwargs)

    def _plot(self, ax, curve_kwargs, **options):
        ax = self._set_axes(ax, figsize=self._figsize)[0]
        self._draw(ax, curve_kwargs, **options)
        ax.set(**self._axis_labels(self.positive_label))
        return self

    def _draw(self, ax, curve_kwargs, **options):
        """Draw every curve with its scikit-learn display; ``self.curves_`` holds them."""
        self.curves_ = []
        for i, display in enumerate(self._sklearn_displays()):
            self._plot_one(display, ax, i, _nth(curve_kwargs, i), **options)
            self.curves_.append(display)
        self.lines_ = [d.line_ for d in self.curves_]
        if self.positive_label is None:
            ax.set_title(self._titles[1])
        else:
            ax.set_title(self._titles[0].format(self.positive_label))


@_fill_doc
class RocCurvesDisplay(_CurvesDisplay):
    """ROC curves: the positive class's, one per class (one-vs-rest), or one per model.

    Create it with :meth:`from_estimator`, :meth:`from_predictions` or
    :meth:`from_cv_predictions`; each curve is drawn by
    :class:`sklearn.metrics.RocCurveDisplay`, whose legend gives its AUC.

    Parameters
    ----------
    fpr, tpr : list of ndarray
        False and true positive rates of each curve.
    roc_auc : list of float
        Area under each curve.
    {curve_parameters_and_attributes}

    See Also
    --------
    plot_roc : The figure of this display.
    sklearn.metrics.RocCurveDisplay : The display of one curve.

    Examples
    --------
    >>> from skxray.evaluation import RocCurvesDisplay
    >>> y_true = ["Covid-19", "Normal", "Covid-19", "Normal"]
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> disp = RocCurvesDisplay.from_predictions(y_true, proba, name="CNN")
    >>> disp.ax_.get_title(), disp.roc_auc
    ('ROC curve (positive: Covid-19)', [1.0])
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> disp.plot(ax=ax).ax_ is ax  # drawn again, nothing recomputed
    True
    """

    _titles = ("ROC curve (positive: {})", "ROC curves (one-vs-rest)")

    def __init__(self, *, fpr, tpr, roc_auc, curve_names, positive_label=None, name=None):
        self.fpr = fpr
        self.tpr = tpr
        self.roc_auc = roc_auc
        self.curve_names = curve_names
        self.positive_label = positive_label
        self.name = name

    @classmethod
    def _compute(cls, curves, positive, name):
        fpr, tpr, aucs = [], [], []
        for _, is_pos, score in curves:
            f, t, _ = roc_curve(is_pos, score, pos_label=True, drop_intermediate=True)
            fpr.append(f)
            tpr.append(t)
            aucs.append(float(auc(f, t)))
        names = [c[0] for c in curves]
        return cls(fpr=fpr, tpr=tpr, roc_auc=aucs, curve_names=names, positive_label=positive,
                   name=name)

    @classmethod
    @_fill_doc
    def from_cv_predictions(cls, y_true, predictions, *, classes=None, positive_label=None,
                            ax=None):
        """{from_cv_predictions}
        positive_label : object, default=None
            Class whose curve (vs the rest) is drawn; see
            :func:`default_positive_label`.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.

        {returns_raises}
        """
        return cls._from_cv_predictions(y_true, predictions, classes, positive_label, ax)

    def _sklearn_displays(self):
        for f, t, a, label in zip(self.fpr, self.tpr, self.roc_auc, self.curve_names, strict=True):
            yield RocCurveDisplay(fpr=f, tpr=t, roc_auc=a, name=label, pos_label=True)

    @staticmethod
    def _plot_one(display, ax, i, kwargs, *, plot_chance_level):
        display.plot(ax=ax, curve_kwargs=kwargs or None, plot_chance_level=plot_chance_level and i == 0)

    def plot(self, ax=None, *, curve_kwargs=None, plot_chance_level=True):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure (outside pyplot).
        curve_kwargs : dict or list of dict, default=None
            Matplotlib line properties of every curve, or of each in turn.
        plot_chance_level : bool, default=True
            Draw the diagonal of a classifier that guesses.

        Returns
        -------
        display : RocCurvesDisplay
            ``self``, with ``ax_``, ``figure_``, ``curves_`` and ``lines_``
            set.
        """
        return self._plot(ax, curve_kwargs, plot_chance_level=plot_chance_level)

    @staticmethod
    def _axis_labels(positive):
        return {"xlabel": "1 - specificity (false positive rate)",
                "ylabel": "sensitivity (true positive rate)"}


@_fill_doc
class PrecisionRecallCurvesDisplay(_CurvesDisplay):
    """Precision-recall curves: the positive class's, or one per class (one-vs-rest).

    More telling than ROC curves when the positive class is rare. Each curve
    is drawn by :class:`sklearn.metrics.PrecisionRecallDisplay`, whose legend
    gives its average precision (AP).

    Parameters
    ----------
    precision, recall : list of ndarray
        Precision and recall of each curve.
    average_precision : list of float
        Average precision of each curve.
    prevalence : list of float
        Share of positives of each curve (its chance level).
    {curve_parameters_and_attributes}

    See Also
    --------
    plot_precision_recall : The figure of this display.

    Examples
    --------
    >>> from skxray.evaluation import PrecisionRecallCurvesDisplay
    >>> y_true = ["Covid-19", "Normal", "Covid-19", "Normal"]
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> disp = PrecisionRecallCurvesDisplay.from_predictions(y_true, proba)
    >>> disp.ax_.get_title(), disp.prevalence
    ('Precision-recall curve (positive: Covid-19)', [0.5])
    """

    _titles = ("Precision-recall curve (positive: {})", "Precision-recall curves (one-vs-rest)")

    def __init__(self, *, precision, recall, average_precision, prevalence, curve_names,
                 positive_label=None, name=None):
        self.precision = precision
        self.recall = recall
        self.average_precision = average_precision
        self.prevalence = prevalence
        self.curve_names = curve_names
        self.positive_label = positive_label
        self.name = name

    @classmethod
    def _compute(cls, curves, positive, name):
        precision, recall, ap, prevalence = [], [], [], []
        for _, is_pos, score in curves:
            p, r, _ = precision_recall_curve(is_pos, score, pos_label=True, drop_intermediate=False)
            precision.append(p)
            recall.append(r)
            ap.append(float(average_precision_score(is_pos, score, pos_label=True)))
            prevalence.append(float(is_pos.mean()))
        return cls(precision=precision, recall=recall, average_precision=ap, prevalence=prevalence,
                   curve_names=[c[0] for c in curves], positive_label=positive, name=name)

    def _sklearn_displays(self):
        for p, r, ap, prev, label in zip(self.precision, self.recall, self.average_precision,
                                          self.prevalence, self.curve_names, strict=True):
            yield PrecisionRecallDisplay(precision=p, recall=r, average_precision=ap, name=label,
                                         pos_label=True, prevalence_pos_label=prev)

    @staticmethod
    def _plot_one(display, ax, i, kwargs):
        display.plot(ax=ax, curve_kwargs=kwargs or None)

    @staticmethod
    def _axis_labels(positive):
        return {"xlabel": "sensitivity (recall)", "ylabel": "positive predictive value (precision)"}


def _check_n_bins(n_bins):
    if not is_int(n_bins) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2; got {n_bins!r}.")
    return n_bins


@_fill_doc
class ReliabilityDisplay(_CurvesDisplay):
    """Reliability (calibration) curves: predicted probability against observed frequency.

    Two classes: the positive class's curve; three or more: one
    one-vs-rest curve per class; from cross-validated predictions: one curve
    per model. A well-calibrated model follows the diagonal. Each curve is
    drawn by :class:`sklearn.calibration.CalibrationDisplay` (named
    ``Reliability...`` here so that the two cannot be confused).

    Parameters
    ----------
    prob_true, prob_pred : list of ndarray
        Observed frequency and mean predicted probability per bin, of each
        curve (:func:`sklearn.calibration.calibration_curve`).
    y_prob : list of ndarray
        The probabilities binned, of each curve.
    {curve_parameters_and_attributes}

    See Also
    --------
    plot_calibration : The figure of this display.
    sklearn.calibration.CalibratedClassifierCV : Recalibrate a model.

    Examples
    --------
    >>> from skxray.evaluation import ReliabilityDisplay
    >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    >>> disp = ReliabilityDisplay.from_predictions(["Covid-19", "Normal"] * 2, proba, n_bins=2)
    >>> disp.ax_.get_title(), disp.prob_true[0].tolist()
    ('Calibration (positive: Covid-19)', [0.0, 1.0])
    """

    _titles = ("Calibration (positive: {})", "Calibration (one-vs-rest)")

    def __init__(self, *, prob_true, prob_pred, y_prob, curve_names, positive_label=None,
                 name=None):
        self.prob_true = prob_true
        self.prob_pred = prob_pred
        self.y_prob = y_prob
        self.curve_names = curve_names
        self.positive_label = positive_label
        self.name = name

    @classmethod
    def _compute(cls, curves, positive, name, *, n_bins, strategy):
        _check_n_bins(n_bins)
        prob_true, prob_pred = [], []
        for _, is_pos, score in curves:
            t, p = calibration_curve(is_pos, score, n_bins=n_bins, strategy=strategy, pos_label=True)
            prob_true.append(t)
            prob_pred.append(p)
        return cls(prob_true=prob_true, prob_pred=prob_pred, y_prob=[c[2] for c in curves],
                   curve_names=[c[0] for c in curves], positive_label=positive, name=name)

    @classmethod
    @_fill_doc
    def from_estimator(cls, estimator, X, y, *, positive_label=None, n_bins=5, strategy="uniform",
                       name=None, ax=None):
        """{from_estimator}
        n_bins : int, default=5
            Number of probability bins.
        strategy : {{"uniform", "quantile"}}, default="uniform"
            Bins of equal width or of equal counts.
        {positive_name_ax}

        {returns_raises}
        """
        _check_n_bins(n_bins)
        return cls._from_estimator(estimator, X, y, positive_label, name, ax, n_bins=n_bins,
                                   strategy=strategy)

    @classmethod
    @_fill_doc
    def from_predictions(cls, y_true, y_proba, *, classes=None, positive_label=None, n_bins=5,
                         strategy="uniform", name=None, ax=None):
        """{from_predictions}
        n_bins : int, default=5
            Number of probability bins.
        strategy : {{"uniform", "quantile"}}, default="uniform"
            Bins of equal width or of equal counts.
        {positive_name_ax}

        {returns_raises}
        """
        _check_n_bins(n_bins)
        return cls._from_predictions(y_true, y_proba, classes, positive_label, name, ax,
                                     n_bins=n_bins, strategy=strategy)

    @classmethod
    @_fill_doc
    def from_cv_predictions(cls, y_true, predictions, *, classes=None, positive_label=None,
                            n_bins=5, strategy="uniform", ax=None):
        """{from_cv_predictions}
        positive_label : object, default=None
            Class whose curve (vs the rest) is drawn; see
            :func:`default_positive_label`.
        n_bins : int, default=5
            Number of probability bins.
        strategy : {{"uniform", "quantile"}}, default="uniform"
            Bins of equal width or of equal counts.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.

        {returns_raises}
        """
        _check_n_bins(n_bins)
        return cls._from_cv_predictions(y_true, predictions, classes, positive_label, ax,
                                        n_bins=n_bins, strategy=strategy)

    def _sklearn_displays(self):
        for t, p, y_prob, label in zip(self.prob_true, self.prob_pred, self.y_prob,
                                       self.curve_names, strict=True):
            yield CalibrationDisplay(t, p, y_prob, estimator_name=label, pos_label=True)

    @staticmethod
    def _plot_one(display, ax, i, kwargs):
        display.plot(ax=ax, ref_line=i == 0, **kwargs)

    @staticmethod
    def _axis_labels(positive):
        if positive is None:
            return {"xlabel": "mean predicted probability", "ylabel": "fraction of the class"}
        return {"xlabel": f"mean predicted probability of {positive}",
                "ylabel": f"fraction of {positive}"}
