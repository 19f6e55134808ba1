"""Check 1: patient leakage, image-level vs patient-grouped cross-validation."""

import pandas as pd

from skxray._utils import round_or_none
from skxray.audit._context import fmt_score, make_finding
from skxray.audit._cv import scores


def check_leakage(data, grouped, image_level):
    """The ``"leakage"`` finding from the grouped and the image-level out-of-fold scores."""
    if data.groups is None:
        return _no_patient_ids(data, grouped)
    k, groups = data.k, data.groups
    s_img = scores(data.y_enc, image_level["proba"], k)
    s_grp = scores(data.y_enc, grouped["proba"], k)
    counts = pd.Series(groups).value_counts()
    labels_per_patient = pd.Series(data.y_enc).groupby(groups).nunique()
    a, b = s_img["balanced_accuracy"], s_grp["balanced_accuracy"]
    gap = a - b
    figures = {
        "image_level_accuracy": round_or_none(s_img["accuracy"]),
        "image_level_balanced_accuracy": round_or_none(a),
        "image_level_roc_auc": round_or_none(s_img["roc_auc"]),
        "grouped_accuracy": round_or_none(s_grp["accuracy"]),
        "grouped_balanced_accuracy": round_or_none(b),
        "grouped_roc_auc": round_or_none(s_grp["roc_auc"]),
        "gap": round_or_none(gap),
        "n_patients": int(len(counts)),
        "images_per_patient_mean": round_or_none(float(counts.mean()), 2),
        "images_per_patient_max": int(counts.max()),
        "patients_with_several_images": int((counts > 1).sum()),
        "patients_with_several_labels": int((labels_per_patient > 1).sum()),
    }
    details = {
        "scores": pd.DataFrame(
            [{"cv": "image-level", **s_img}, {"cv": "patient-grouped", **s_grp}]
        ),
        "images_per_patient": counts.value_counts()
        .sort_index()
        .rename_axis("images")
        .reset_index(name="patients"),
    }
    verdict, text = _verdict(a, b, gap * 0.5 / (1.0 - 1.0 / k), data.thresholds)
    summary = f"BA by image {fmt_score(a)}, by patient {fmt_score(b)}, gap {gap:+.2f}"
    return make_finding("leakage", verdict, text, figures, details, summary)


def _no_patient_ids(data, grouped):
    s = scores(data.y_enc, grouped["proba"], data.k)
    figures = {
        "image_level_balanced_accuracy": round_or_none(s["balanced_accuracy"]),
        "grouped_balanced_accuracy": None,
        "gap": None,
        "n_patients": None,
    }
    return make_finding(
        "leakage",
        "warning",
        "No patient ids were given, so patient leakage cannot be checked: if patients "
        "have several images, the image-level score "
        f"({s['balanced_accuracy']:.2f} balanced accuracy) may be inflated.",
        figures,
        {"scores": pd.DataFrame([{"cv": "image-level", **s}])},
        summary=f"image-level BA {fmt_score(s['balanced_accuracy'])}; no patient ids",
    )


def _verdict(a, b, gap_scaled, th):
    """Verdict and explanation from the two balanced accuracies and their scaled gap."""
    if gap_scaled > th["leakage_gap_fail"]:
        return "fail", (
            f"Splitting by image scores {a:.2f} but splitting by patient only {b:.2f} "
            "(balanced accuracy): images of the same patient in training and test "
            "inflated the image-level score."
        )
    if gap_scaled > th["leakage_gap_warning"]:
        return "warning", (
            f"Splitting by image scores {a:.2f} and by patient {b:.2f} (balanced accuracy): "
            "a small part of the image-level score may come from patients seen in training."
        )
    return "ok", (
        f"The score barely changes when each patient's images stay on one side of the split "
        f"({a:.2f} by image vs {b:.2f} by patient): no sign of patient leakage."
    )
