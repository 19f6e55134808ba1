"""Shortcut-learning and data-leakage audit: does the model look at the lungs or at the hospital?

Published COVID-19 chest X-ray models reach about 0.99 AUC inside one data
set and fall to about 0.70-0.76 on other hospitals, because they learn the
hospital (text markers, devices, positioning) instead of the disease
(DeGrave, Janizek and Lee, *Nature Machine Intelligence* 3:610-619, 2021);
a review of 62 studies found none of clinical use, because of duplicated
images, patients shared between training and test sets and source
confounding (Roberts et al., *Nature Machine Intelligence* 3:199-217, 2021).

:func:`audit` runs six checks on an unfitted classifier and a data set and
returns an :class:`AuditReport` with one :class:`Finding` per check, each
with its figures, a verdict ("ok", "warning" or "fail") and a one-line
explanation:

1. ``"leakage"``: image-level vs patient-grouped cross-validation;
2. ``"duplicates"``: near-duplicate images found by perceptual hashing;
3. ``"sources"``: whether the source (hospital, data set) is recognisable
   from the images and confounded with the label, and leave-one-source-out
   scores;
4. ``"lungs"``: scores with the lungs hidden vs with the borders hidden, and
   the share of Grad-CAM evidence inside the lung fields;
5. ``"calibration"``: class proportions per fold, Brier score, calibration
   curve and expected calibration error;
6. ``"labels"``: images whose given label the out-of-fold models doubt
   (confident learning with cleanlab), counted per (given, suggested) class
   pair and shown in a gallery.

The package holds one module per check (``_leakage``, ``_duplicates``,
``_sources``, ``_lungs``, ``_calibration``, ``_labels``), the shared cross-validation
machinery (``_cv``), the perceptual hashes (``_hashing``), the report objects
and their rendering (``_report``), the parameters (``_params``) and the entry
point (``_audit``). The checks read one frozen ``AuditData``
(``_context``) built by :func:`audit`.

What the checks measure is public, so that a benchmark or a user can measure
the same: :func:`lung_masked` and :func:`border_masked` (the images the
``"lungs"`` check predicts on), :func:`two_class_scale` (the scale of the
thresholds) and :func:`proba_in_order` (out-of-fold probabilities whose
columns line up across folds).

The audit's figures are displays, as in :mod:`skxray.evaluation`:
:class:`LungMaskingDisplay`, :class:`LungGradCAMDisplay`,
:class:`AuditCalibrationDisplay` and :class:`LabelIssuesDisplay` take a
finding's data once (``from_finding``) and draw it on any axes
(``plot(ax=...)``); :meth:`Finding.displays` returns them and the audit's
page draws its plots through them. They live in ``_displays``.
"""

from skxray.audit._audit import audit
from skxray.audit._cv import border_masked, lung_masked, proba_in_order, two_class_scale
from skxray.audit._displays import (
    AuditCalibrationDisplay,
    LabelIssuesDisplay,
    LungGradCAMDisplay,
    LungMaskingDisplay,
)
from skxray.audit._params import DEFAULT_THRESHOLDS
from skxray.audit._report import CHECKS, AuditReport, AuditSection, Finding

__all__ = [
    "CHECKS",
    "DEFAULT_THRESHOLDS",
    "AuditCalibrationDisplay",
    "AuditReport",
    "AuditSection",
    "Finding",
    "LabelIssuesDisplay",
    "LungGradCAMDisplay",
    "LungMaskingDisplay",
    "audit",
    "border_masked",
    "lung_masked",
    "proba_in_order",
    "two_class_scale",
]
