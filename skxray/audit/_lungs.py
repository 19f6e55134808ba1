"""Check 4: where the model looks, by masking the lungs or the borders and by Grad-CAM."""

import numpy as np
import pandas as pd

from skxray._utils import round_or_none
from skxray.audit._context import fmt_score, make_finding
from skxray.audit._cv import scores, two_class_scale
from skxray.segmentation import region_description


def check_lungs(data, grouped):
    """The ``"lungs"`` finding from the grouped CV's unmasked, masked and Grad-CAM results."""
    k, y_enc = data.k, data.y_enc
    s0 = scores(y_enc, grouped["proba"], k)
    s_l = scores(y_enc, grouped["proba_lungs"], k)
    s_b = scores(y_enc, grouped["proba_borders"], k)
    share = grouped.get("gradcam_share")
    mean_share = (
        float(np.nanmean(share)) if share is not None and np.isfinite(share).any() else None
    )
    region = grouped.get("gradcam_region")
    area = float(region.mean()) if region is not None else None
    where = region_description(data.lung_region)
    enrichment = mean_share / area if mean_share is not None and area else None
    figures = {
        "chance": round_or_none(1.0 / k),
        "balanced_accuracy": round_or_none(s0["balanced_accuracy"]),
        "accuracy": round_or_none(s0["accuracy"]),
        "lungs_masked_balanced_accuracy": round_or_none(s_l["balanced_accuracy"]),
        "lungs_masked_accuracy": round_or_none(s_l["accuracy"]),
        "borders_masked_balanced_accuracy": round_or_none(s_b["balanced_accuracy"]),
        "borders_masked_accuracy": round_or_none(s_b["accuracy"]),
        "border_drop": round_or_none(s0["balanced_accuracy"] - s_b["balanced_accuracy"]),
        "border_fraction": data.border_fraction,
        "gradcam_lung_share": round_or_none(mean_share),
        "lung_area_share": round_or_none(area),
        "gradcam_enrichment": round_or_none(enrichment),
        "lung_region": data.lung_region,
        "lung_region_description": where,
    }
    if grouped.get("gradcam_error"):
        figures["gradcam_unavailable"] = grouped["gradcam_error"]
    masking = pd.DataFrame(
        [
            {"images": "unmasked", **s0},
            {"images": "lungs masked", **s_l},
            {"images": "borders masked", **s_b},
        ]
    )
    a0, al, ab = s0["balanced_accuracy"], s_l["balanced_accuracy"], s_b["balanced_accuracy"]
    verdict, text = _verdict(
        data.thresholds, k, a0, al, ab, mean_share=mean_share, area=area, enrichment=enrichment
    )
    text += f" Lungs: {where}."
    summary = (
        f"BA {fmt_score(a0)}; lungs masked {fmt_score(al)}; borders masked {fmt_score(ab)}"
        + (f"; Grad-CAM in lungs {mean_share:.0%}" if mean_share is not None else "")
    )
    arrays = _mean_heatmap(data.X, grouped, region)
    return make_finding("lungs", verdict, text, figures, {"masking": masking}, summary, arrays)


def _mean_heatmap(X, grouped, region):
    """The mean Grad-CAM heatmap, the lung field and the mean image, for the plot."""
    if grouped.get("gradcam_sum") is None:
        return {}
    heat = grouped["gradcam_sum"] / len(X)
    # Pixels that are lung in at least half of the images (one outline to draw).
    arrays = {"mean_gradcam": heat, "lung_mask": region >= 0.5}
    mean_img = X.mean(axis=0)
    mean_img = mean_img.mean(axis=0) if mean_img.ndim == 3 else mean_img
    if mean_img.shape == heat.shape:
        arrays["mean_image"] = mean_img
    return arrays


def _verdict(th, k, a0, al, ab, *, mean_share, area, enrichment):
    """Verdict and explanation from the unmasked, lungs-masked and borders-masked scores."""
    e0, el, eb = (two_class_scale(a, k) for a in (a0, al, ab))
    if e0 < th["min_score"]:
        return "warning", (
            f"The model barely beats chance ({a0:.2f} balanced accuracy, chance {1 / k:.2f}), "
            "so masking cannot tell where it looks; the check is inconclusive."
        )
    reasons_fail, reasons_warn = [], []
    # (measure, threshold name, reason at the fail level, reason at the warning level)
    graded = [
        (
            el,
            "lungs_masked",
            f"The model still scores {al:.2f} (balanced accuracy, chance {1 / k:.2f}) with "
            "the lungs hidden: it relies on something outside the lungs.",
            f"With the lungs hidden the model still scores {al:.2f} (chance {1 / k:.2f}): "
            "part of its evidence lies outside the lungs.",
        ),
        (
            e0 - eb,
            "border_drop",
            f"Hiding only the image borders drops the score from {a0:.2f} to {ab:.2f}: the "
            "model relies on markers or text at the edges.",
            f"Hiding only the image borders lowers the score from {a0:.2f} to {ab:.2f}: "
            "the edges carry part of its evidence.",
        ),
    ]
    for value, name, fail_reason, warning_reason in graded:
        if value >= th[f"{name}_fail"]:
            reasons_fail.append(fail_reason)
        elif value >= th[f"{name}_warning"]:
            reasons_warn.append(warning_reason)
    if enrichment is not None and enrichment < th["gradcam_enrichment_warning"]:
        reasons_warn.append(
            f"Only {mean_share:.0%} of the Grad-CAM evidence lies in the lung fields, which "
            f"cover {area:.0%} of the image: its attention is mostly elsewhere."
        )
    if reasons_fail:
        return "fail", " ".join(reasons_fail + reasons_warn)
    if reasons_warn:
        return "warning", " ".join(reasons_warn)
    text = (
        f"With the lungs hidden the model falls to {al:.2f} (chance {1 / k:.2f}) while "
        f"hiding the borders keeps {ab:.2f} of {a0:.2f}: no sign that it relies on what lies "
        "outside the lungs"
    )
    if mean_share is not None:
        text += f" ({mean_share:.0%} of Grad-CAM evidence inside them)"
    # What the check can and cannot show: a model can still learn the source
    # from inside the lungs (LungFieldMask's model: ROC AUC 0.19 elsewhere).
    return "ok", text + ". That is not evidence that it looks at the disease."
