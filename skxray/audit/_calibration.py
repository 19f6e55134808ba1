"""Check 5: class balance of the folds and calibration of the out-of-fold probabilities."""

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from skxray._utils import round_or_none
from skxray.audit._context import make_finding
from skxray.audit._report import worst_verdict


def check_calibration(data, grouped, splits):
    """The ``"calibration"`` finding from the grouped CV's out-of-fold probabilities."""
    y_enc, classes, n_bins = data.y_enc, data.classes, data.n_bins
    brier, brier_ref, target, prob, curve_of = _brier_scores(grouped["proba"], y_enc, classes)
    curve, ece = _calibration_table(target, prob, n_bins)
    proportions, overall = _fold_proportions(y_enc, classes, splits)
    per_fold = proportions.iloc[:-1][[str(c) for c in classes]].to_numpy()
    deviation = float(np.max(np.abs(per_fold - overall)))
    missing = bool((per_fold == 0).any())
    ood_flags = grouped.get("ood_flags", np.array([np.nan]))
    figures = {
        "brier_score": round_or_none(brier),
        "brier_score_prevalence_only": round_or_none(brier_ref),
        "brier_skill_score": round_or_none(1.0 - brier / brier_ref) if brier_ref > 0 else None,
        "expected_calibration_error": round_or_none(ece),
        "n_bins": n_bins,
        "curve_of": curve_of,
        "class_proportions": {str(c): round_or_none(p) for c, p in zip(classes, overall)},
        "max_fold_proportion_deviation": round_or_none(deviation),
        "fold_missing_a_class": missing,
        # Share of held-out images the fold models' detectors call out of
        # distribution (None when the model has no detector).
        "ood_rate": (
            None if np.isnan(ood_flags).all() else round_or_none(float(np.nanmean(ood_flags)))
        ),
    }
    details = {"calibration_curve": curve, "class_proportions": proportions}
    verdict, reasons = _verdict(data.thresholds, ece, brier, brier_ref, deviation, missing)
    summary = f"Brier {brier:.3f}; ECE {ece:.3f}; fold deviation {deviation:.2f}"
    return make_finding("calibration", verdict, " ".join(reasons), figures, details, summary)


def _brier_scores(proba, y_enc, classes):
    """Brier score, that of the class proportions, and the curve's targets and probabilities.

    Two classes: the probability of ``classes[1]``; more: the top-class
    confidence against whether the top class is right.
    """
    k = len(classes)
    if k == 2:
        target = (y_enc == 1).astype(int)
        prob = proba[:, 1]
        brier = float(brier_score_loss(target, prob))
        brier_ref = float(np.mean((target.mean() - target) ** 2))
        return brier, brier_ref, target, prob, f"predicted probability of {classes[1]}"
    onehot = np.eye(k)[y_enc]
    brier = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    brier_ref = float(np.mean(np.sum((onehot.mean(axis=0) - onehot) ** 2, axis=1)))
    prob = proba.max(axis=1)
    target = (proba.argmax(axis=1) == y_enc).astype(int)
    return brier, brier_ref, target, prob, "confidence of the predicted class"


def _calibration_table(target, prob, n_bins):
    """The calibration curve (non-empty uniform bins) and its expected calibration error."""
    frac_pos, mean_pred = calibration_curve(target, prob, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    binids = np.searchsorted(edges[1:-1], prob)  # the binning of calibration_curve
    counts = np.bincount(binids, minlength=n_bins)
    nonzero = counts > 0
    ece = float(np.sum(counts[nonzero] / len(prob) * np.abs(frac_pos - mean_pred)))
    curve = pd.DataFrame(
        {
            "bin_low": edges[:-1][nonzero],
            "bin_high": edges[1:][nonzero],
            "mean_predicted": mean_pred,
            "fraction_positive": frac_pos,
            "count": counts[nonzero],
        }
    )
    return curve, ece


def _fold_proportions(y_enc, classes, splits):
    """Class proportions of each test fold and overall (last row "all")."""
    k = len(classes)
    overall = np.bincount(y_enc, minlength=k) / len(y_enc)
    rows = []
    for f, (_, test) in enumerate(splits):
        props = np.bincount(y_enc[test], minlength=k) / len(test)
        rows.append({"fold": f, "n_test": len(test), **{str(c): p for c, p in zip(classes, props)}})
    rows.append(
        {"fold": "all", "n_test": len(y_enc), **{str(c): p for c, p in zip(classes, overall)}}
    )
    return pd.DataFrame(rows), overall


def _verdict(th, ece, brier, brier_ref, deviation, missing):
    reasons = []
    verdict = "ok"
    if ece >= th["ece_fail"]:
        verdict = "fail"
        reasons.append(
            f"Predicted probabilities are far from observed frequencies (expected calibration "
            f"error {ece:.2f}): they cannot be read as risks."
        )
    elif ece >= th["ece_warning"]:
        verdict = "warning"
        reasons.append(
            f"Predicted probabilities are somewhat off (expected calibration error {ece:.2f}); "
            "recalibrate before reading them as risks."
        )
    if missing or deviation > th["fold_balance_warning"]:
        verdict = worst_verdict(verdict, "warning")
        reasons.append(
            "A test fold lacks a class entirely."
            if missing
            else (
                f"Class proportions differ between folds by up to {deviation:.2f}, so fold "
                "scores are not comparable."
            )
        )
    if brier_ref > 0 and brier >= brier_ref:
        verdict = worst_verdict(verdict, "warning")
        reasons.append(
            f"The Brier score ({brier:.3f}) is no better than always predicting the class "
            f"proportions ({brier_ref:.3f})."
        )
    if not reasons:
        reasons.append(
            f"Predicted probabilities match observed frequencies (expected calibration error "
            f"{ece:.2f}, Brier score {brier:.3f}) and classes are balanced across folds."
        )
    return verdict, reasons
