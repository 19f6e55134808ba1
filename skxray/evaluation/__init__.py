"""Metrics, figures and cross-validated comparison of chest X-ray classifiers.

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
- Displays, the scikit-learn way: :class:`RocCurvesDisplay`,
  :class:`PrecisionRecallCurvesDisplay`, :class:`ReliabilityDisplay`,
  :class:`ConfusionMatricesDisplay`, :class:`LearningCurvesDisplay`,
  :class:`ImageGridDisplay`, :class:`ImageSizesDisplay` and
  :class:`ExternalValidationDisplay` compute
  a figure's data once (``from_estimator``, ``from_predictions``, ...) and
  draw it on any axes (``plot(ax=...)``).
- :func:`plot_image_grid`, :func:`plot_learning_curves`,
  :func:`plot_confusion_matrix`, :func:`plot_roc`,
  :func:`plot_precision_recall` and :func:`plot_calibration`: the figures
  of those displays, in one call.
- :func:`external_validation`: what can be measured on another hospital's
  images, with intervals.

Figures are :class:`matplotlib.figure.Figure` objects created without
pyplot, so no global figure state is kept and nothing is shown; save one
with ``fig.savefig(...)`` or add it to a :class:`skxray.report.Report`.

The package's modules: ``_metrics`` (metrics and the positive-label
convention), ``_displays`` (the displays' common part, confusion matrices,
learning curves, image grid, image sizes), ``_curves`` (ROC, precision-recall and
reliability curves), ``_plot`` (the plot functions),
``_compare`` (:func:`compare_models`) and ``_external`` (external
validation and its display).
"""

from ._compare import compare_models
from ._curves import PrecisionRecallCurvesDisplay, ReliabilityDisplay, RocCurvesDisplay
from ._displays import (
    ConfusionMatricesDisplay,
    ImageGridDisplay,
    ImageSizesDisplay,
    LearningCurvesDisplay,
)
from ._external import (
    ExternalValidationDisplay,
    external_validation,
    external_validation_figures,
    external_validation_from_predictions,
    proportion_ci,
)
from ._metrics import classification_metrics, default_positive_label, evaluate
from ._plot import (
    plot_calibration,
    plot_confusion_matrix,
    plot_image_grid,
    plot_learning_curves,
    plot_precision_recall,
    plot_roc,
)

__all__ = [
    "ConfusionMatricesDisplay",
    "ExternalValidationDisplay",
    "ImageGridDisplay",
    "ImageSizesDisplay",
    "LearningCurvesDisplay",
    "PrecisionRecallCurvesDisplay",
    "ReliabilityDisplay",
    "RocCurvesDisplay",
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
