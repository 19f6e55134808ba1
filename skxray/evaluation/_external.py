"""External validation: what can be measured on another hospital's images."""

import math

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skxray._utils import as_python_scalar, check_label_vector, fold_mean_interval

from ._displays import _DisplayMixin, doc_filler
from ._metrics import _predict_with_proba, classification_metrics

__all__ = [
    "ExternalValidationDisplay",
    "external_validation",
    "external_validation_figures",
    "external_validation_from_predictions",
    "proportion_ci",
]


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


def external_validation(estimator, X, y, *, alpha=0.05, n_permutations=1000, random_state=0,
                        exclude_patient_pairs=False):
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
    exclude_patient_pairs : bool, default=False
        Of the shift test, as in :func:`skxray.ood.shift_test`: leave the
        pairs of reference images of one patient out of its image part.

    Returns
    -------
    result : dict
        JSON-friendly: ``n_samples``, ``classes_present``,
        ``classes_missing``, ``per_class`` (``{class: {"support",
        "sensitivity": {"value", "ci95", "count", "n"}}}``), ``accuracy``
        (same form), ``abstention`` (same form, None without a detector),
        ``abstention_reasons`` (how many images each part made
        ``"uncertain"``: ``{"lung check", "distance", "low confidence"}``,
        an image counting under each part that flagged it; None without a
        detector, or when ``answers`` came without reasons), ``shift_test`` (:meth:`skxray.ood.ShiftTestResult.to_dict`, or None
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
        answers, reasons = estimator.predict_with_abstention(X, return_reasons=True)

        def run_shift_test():
            return shift_test(
                estimator, X, alpha=alpha, n_permutations=n_permutations, random_state=random_state,
                exclude_patient_pairs=exclude_patient_pairs,
            )

    return external_validation_from_predictions(
        y, y_pred, proba, classes=classes, answers=answers, shift_test=run_shift_test,
        reasons=None if answers is None else reasons,
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
                                         shift_test=None, reasons=None):
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
    reasons : array-like of shape (n_samples,) or None, default=None
        Why each image is ``"uncertain"``, as
        ``predict_with_abstention(X, return_reasons=True)`` gives it:
        counted into ``abstention_reasons``.

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
        "abstention_reasons": None,
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
    if reasons is not None:
        parts = [str(r).split(", ") for r in reasons]
        result["abstention_reasons"] = {
            name: int(sum(name in p for p in parts)) for name in ("lung check", "distance", "low confidence")
        }
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


_INTERNAL_DOC = """internal : pandas.Series, dict or None, default=None
            A row of :func:`compare_models` of the same model, or None.
        n_splits : int, default=5
            Number of folds behind ``internal``."""
_EXTERNAL_DOC = {
    "internal": _INTERNAL_DOC,
    "internal_ax": _INTERNAL_DOC + """
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.""",
}
_fill_external_doc = doc_filler(_EXTERNAL_DOC)


class ExternalValidationDisplay(_DisplayMixin):
    """Internal and external figures side by side, each with its 95 % interval.

    One row per metric (accuracy and each present class's sensitivity, as
    :func:`external_validation_figures` gives them): the internal
    (cross-validated) value with its t interval over the folds, and the
    external value with its Wilson interval.

    Parameters
    ----------
    metrics : list of str
        Metric keys, e.g. ``"accuracy"``, ``"sensitivity_Covid-19"``.
    internal, external : list of (float, float, float)
        ``(value, low, high)`` of each metric; NaN where not measured.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    axes_ : ndarray of Axes
        The same axes, as an array.
    figure_ : matplotlib Figure
        Its figure.
    errorbars_ : dict of str to matplotlib ErrorbarContainer
        The ``"internal"`` and ``"external"`` points with their intervals.

    See Also
    --------
    external_validation : The external figures.
    skxray.report.Report.add_external_validation : Their table in a report.

    Examples
    --------
    >>> from skxray.evaluation import ExternalValidationDisplay
    >>> external = {"per_class": {"Covid-19": {"support": 10, "sensitivity":
    ...     {"value": 0.8, "ci95": [0.49, 0.94], "count": 8, "n": 10}}},
    ...     "accuracy": {"value": 0.8, "ci95": [0.49, 0.94], "count": 8, "n": 10}}
    >>> disp = ExternalValidationDisplay.from_result(external)
    >>> disp.metrics, disp.external[1]
    (['accuracy', 'sensitivity_Covid-19'], (0.8, 0.49, 0.94))
    """

    def __init__(self, *, metrics, internal, external):
        self.metrics = metrics
        self.internal = internal
        self.external = external

    @classmethod
    @_fill_external_doc
    def from_result(cls, external, internal=None, *, n_splits=5, ax=None):
        """Draw what :func:`external_validation` returned, beside the internal figures.

        Parameters
        ----------
        external : dict
            As returned by :func:`external_validation`.
        {internal_ax}

        Returns
        -------
        display : ExternalValidationDisplay
            The display, drawn.
        """
        inside, outside = external_validation_figures(external, internal, n_splits=n_splits)
        keys = list(outside)
        return cls(metrics=keys, internal=[inside[k] for k in keys],
                   external=[outside[k] for k in keys]).plot(ax=ax)

    @classmethod
    @_fill_external_doc
    def from_estimator(cls, estimator, X, y, *, internal=None, n_splits=5, ax=None, **kwargs):
        """Run :func:`external_validation` of a fitted classifier and draw it.

        Parameters
        ----------
        estimator : fitted skxray classifier
            The model.
        X : array-like
            External images.
        y : array-like of shape (n_samples,)
            Their true labels.
        {internal_ax}
        **kwargs
            ``alpha``, ``n_permutations``, ``random_state`` of
            :func:`external_validation`.

        Returns
        -------
        display : ExternalValidationDisplay
            The display, drawn; the full result is in ``result_``.
        """
        result = external_validation(estimator, X, y, **kwargs)
        display = cls.from_result(result, internal, n_splits=n_splits, ax=ax)
        display.result_ = result
        return display

    @classmethod
    @_fill_external_doc
    def from_predictions(cls, y, y_pred, *, classes, internal=None, n_splits=5, ax=None):
        """Draw the external figures of predictions made elsewhere.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            True labels; each must be one of ``classes``.
        y_pred : array-like of shape (n_samples,)
            Predicted labels.
        classes : array-like of shape (n_classes,)
            The model's classes.
        {internal_ax}

        Returns
        -------
        display : ExternalValidationDisplay
            The display, drawn.
        """
        result = external_validation_from_predictions(y, y_pred, classes=classes)
        return cls.from_result(result, internal, n_splits=n_splits, ax=ax)

    def plot(self, ax=None):
        """Draw one row per metric: internal and external value (%) with their intervals.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure (outside pyplot).

        Returns
        -------
        display : ExternalValidationDisplay
            ``self``, with ``ax_``, ``figure_`` and ``errorbars_`` set.
        """
        n = len(self.metrics)
        ax = self._set_axes(ax, figsize=(5.4, 1.2 + 0.5 * n))[0]
        rows = np.arange(n)[::-1].astype(float)
        self.errorbars_ = {}
        for offset, (kind, values) in zip((0.15, -0.15), (("internal", self.internal),
                                                          ("external", self.external)), strict=True):
            v = 100 * np.asarray(values, dtype=np.float64).reshape(n, 3)
            spread = np.abs(np.vstack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]]))
            self.errorbars_[kind] = ax.errorbar(v[:, 0], rows + offset, xerr=spread, fmt="o",
                                                capsize=3, label=kind)
        ax.set_yticks(rows, [m.replace("_", ": ", 1) for m in self.metrics])
        ax.set(xlim=(0, 100), ylim=(-0.6, n - 0.4), xlabel="% (95 % interval)",
               title="Internal vs external")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        return self
