"""Shortcut-learning and data-leakage audit: does the model look at the lungs or at the hospital?

Published COVID-19 chest X-ray models reach about 0.99 AUC inside one data
set and fall to about 0.70-0.76 on other hospitals, because they learn the
hospital (text markers, devices, positioning) instead of the disease
(DeGrave, Janizek and Lee, *Nature Machine Intelligence* 3:610-619, 2021);
a review of 62 studies found none of clinical use, because of duplicated
images, patients shared between training and test sets and source
confounding (Roberts et al., *Nature Machine Intelligence* 3:199-217, 2021).

:func:`audit` runs five checks on an unfitted classifier and a data set and
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
   curve and expected calibration error.
"""

import base64
import html
import io
import json
import math
import numbers
import textwrap
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skxray._validation import check_image_array, is_path_array

__all__ = ["CHECKS", "DEFAULT_THRESHOLDS", "AuditReport", "Finding", "audit"]

#: The checks, in report order. Pass a subset as ``checks=`` to :func:`audit`.
CHECKS = ("leakage", "duplicates", "sources", "lungs", "calibration")

_TITLES = {
    "leakage": "1. Patient leakage",
    "duplicates": "2. Near-duplicates",
    "sources": "3. Source confounding",
    "lungs": "4. Where the model looks",
    "calibration": "5. Class balance and calibration",
}

_VERDICTS = ("ok", "warning", "fail")

#: Default verdict thresholds of :func:`audit` (override some with ``thresholds=``).
#: Scores are balanced accuracies on the two-class scale (chance 0.5, perfect
#: 1); with k classes they are first rescaled as ``0.5 + 0.5 * (score - 1/k) /
#: (1 - 1/k)`` and gaps are scaled the same way, so one set of thresholds
#: serves any number of classes (or sources).
DEFAULT_THRESHOLDS = {
    # 1. image-level minus patient-grouped balanced accuracy
    "leakage_gap_warning": 0.05,
    "leakage_gap_fail": 0.10,
    # 3. source confounding
    "source_recognisable": 0.80,  # source predicted from the images at least this well
    "confounding_warning": 0.70,  # label predicted from the source alone at least this well
    "confounding_fail": 0.90,
    "loso_drop_warning": 0.10,  # in-source minus held-out-source score
    "loso_drop_fail": 0.20,
    # 4. balanced accuracy with the lungs hidden; drop when the borders are hidden
    "lungs_masked_warning": 0.58,
    "lungs_masked_fail": 0.65,
    "border_drop_warning": 0.10,
    "border_drop_fail": 0.20,
    "gradcam_enrichment_warning": 1.0,  # Grad-CAM share in lungs / lung area share
    "min_score": 0.60,  # below this unmasked score, check 4 is inconclusive
    # 5. expected calibration error; deviation of a fold's class proportions
    "ece_warning": 0.10,
    "ece_fail": 0.25,
    "fold_balance_warning": 0.10,
}


# --------------------------------------------------------------------------
# report objects


@dataclass
class Finding:
    """The result of one audit check.

    Attributes
    ----------
    name : str
        Key of the check, one of :data:`CHECKS`.
    verdict : {"ok", "warning", "fail"}
        "fail" when the check found a problem that invalidates the reported
        score, "warning" when something needs a look (or could not be
        checked), "ok" otherwise.
    explanation : str
        One plain sentence for a clinician-researcher.
    figures : dict
        Named numbers (floats, ints, None when not computable) and short
        lists; JSON-serialisable.
    details : dict of str to pandas.DataFrame
        Tables: e.g. ``"pairs"`` (the near-duplicate pairs),
        ``"contingency"`` (class x source counts), ``"masking"``,
        ``"calibration_curve"``.
    title : str
        Human-readable name with its number, e.g. "3. Source confounding".
    summary : str
        The key figures in one short line (the table's middle column).
    arrays : dict of str to ndarray
        Images used by :meth:`AuditReport.to_html` (e.g. the mean Grad-CAM
        heatmap); not exported by ``to_dict``.
    """

    name: str
    verdict: str
    explanation: str
    figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    title: str = ""
    summary: str = ""
    arrays: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.verdict not in _VERDICTS:
            raise ValueError(f"verdict must be one of {_VERDICTS}; got {self.verdict!r}.")
        if not self.title:
            self.title = _TITLES.get(self.name, str(self.name))

    def to_dict(self):
        """The finding as JSON-serialisable dict (tables as lists of records)."""
        return {
            "name": self.name,
            "title": self.title,
            "verdict": self.verdict,
            "explanation": self.explanation,
            "summary": self.summary,
            "figures": _jsonable(self.figures),
            "details": {k: _frame_records(v) for k, v in self.details.items()},
        }


class AuditReport:
    """The findings of :func:`audit`, one per check.

    Print it for a text table, call :meth:`to_dict` / :meth:`to_json` to
    export it, or :meth:`to_html` for a section of an HTML report (also shown
    by Jupyter). ``report["lungs"]`` returns one :class:`Finding`.

    Attributes
    ----------
    findings : list of Finding
        One per check run, in the order of :data:`CHECKS`.
    verdict : {"ok", "warning", "fail"}
        The worst verdict of the findings.
    info : dict
        What was audited: estimator, number of images, classes and their
        counts, patients, sources, folds, fits, elapsed seconds, thresholds.
    """

    def __init__(self, findings, info=None):
        self.findings = list(findings)
        self.info = dict(info or {})

    @property
    def verdict(self):
        """The worst verdict of the findings ("ok" when there are none)."""
        if not self.findings:
            return "ok"
        return max((f.verdict for f in self.findings), key=_VERDICTS.index)

    def __getitem__(self, name):
        for finding in self.findings:
            if finding.name == name:
                return finding
        raise KeyError(f"No finding {name!r}; this report has {[f.name for f in self.findings]}.")

    def __iter__(self):
        return iter(self.findings)

    def __len__(self):
        return len(self.findings)

    def __repr__(self):
        verdicts = ", ".join(f"{f.name}={f.verdict}" for f in self.findings)
        return f"AuditReport(verdict={self.verdict!r}, {verdicts})"

    # ------------------------------------------------------------- exports
    def to_dict(self):
        """The report as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"verdict", "info", "findings": [finding.to_dict(), ...]}``;
            NaN and infinite numbers become None.
        """
        return {
            "verdict": self.verdict,
            "info": _jsonable(self.info),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, path=None, *, indent=2):
        """The report as JSON text, optionally written to ``path``.

        Parameters
        ----------
        path : str, path-like or None, default=None
            File to write (UTF-8); None only returns the text.
        indent : int or None, default=2
            Indentation of the JSON text.

        Returns
        -------
        str
            The JSON text (strict JSON: no NaN).
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    def __str__(self):
        info = self.info
        lines = []
        head = "Shortcut and leakage audit"
        if info.get("estimator"):
            head += f" of {info['estimator']}"
        lines.append(head)
        facts = []
        if info.get("n_samples") is not None:
            counts = info.get("class_counts") or {}
            classes = ", ".join(f"{c} ({n})" for c, n in counts.items())
            facts.append(f"{info['n_samples']} images" + (f": {classes}" if classes else ""))
        if info.get("n_patients"):
            facts.append(f"{info['n_patients']} patients")
        if info.get("n_sources"):
            facts.append(f"{info['n_sources']} sources")
        if info.get("cv"):
            facts.append(f"{info['cv']}-fold CV, {info.get('n_fits', 0)} fits")
        if info.get("elapsed_s") is not None:
            facts.append(f"{info['elapsed_s']:.0f} s")
        if facts:
            lines.extend(textwrap.wrap("; ".join(facts), 100))
        lines.append(f"Overall verdict: {self.verdict.upper()}")
        lines.append("")
        w_check = max([len("Check")] + [len(f.title) for f in self.findings])
        w_verdict = len("WARNING")
        header = f"{'Check':<{w_check}}  {'Verdict':<{w_verdict}}  Key figures"
        lines.append(header)
        lines.append("-" * max(len(header), 100))
        for f in self.findings:
            lines.append(f"{f.title:<{w_check}}  {f.verdict.upper():<{w_verdict}}  {f.summary}")
            indent = " " * (w_check + 2)
            lines.extend(
                textwrap.wrap(f.explanation, 100, initial_indent=indent, subsequent_indent=indent)
            )
        return "\n".join(lines)

    def to_html(self):
        """The report as an HTML fragment (a ``<section>``).

        Self-contained: text is escaped, plots are embedded as base64 PNG
        ``data:`` URIs and styles are inline, so the fragment can be pasted
        into any page and opened offline. No external URL is referenced.

        Returns
        -------
        str
            The HTML fragment.
        """
        esc = html.escape
        colours = {"ok": "#1a7f37", "warning": "#9a6700", "fail": "#cf222e"}

        def badge(verdict):
            return (
                f'<span style="color:#fff;background:{colours[verdict]};padding:1px 6px;'
                f'border-radius:3px;font-weight:bold">{esc(verdict.upper())}</span>'
            )

        cell = 'style="border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left"'
        parts = ['<section class="skxray-audit">', "<h2>Shortcut and leakage audit</h2>"]
        info = self.info
        facts = []
        for key, label in (
            ("estimator", "Model"),
            ("n_samples", "Images"),
            ("n_patients", "Patients"),
            ("n_sources", "Sources"),
            ("cv", "Folds"),
            ("n_fits", "Fits"),
        ):
            if info.get(key) is not None:
                facts.append(f"{label}: {esc(str(info[key]))}")
        if info.get("class_counts"):
            counts = ", ".join(f"{esc(str(c))} ({n})" for c, n in info["class_counts"].items())
            facts.append(f"Classes: {counts}")
        parts.append(f"<p>{'; '.join(facts)}</p>")
        parts.append(f"<p>Overall verdict: {badge(self.verdict)}</p>")
        parts.append('<table style="border-collapse:collapse">')
        parts.append(
            f"<thead><tr><th {cell}>Check</th><th {cell}>Verdict</th>"
            f"<th {cell}>Explanation</th><th {cell}>Key figures</th></tr></thead><tbody>"
        )
        for f in self.findings:
            parts.append(
                f"<tr><td {cell}>{esc(f.title)}</td><td {cell}>{badge(f.verdict)}</td>"
                f"<td {cell}>{esc(f.explanation)}</td><td {cell}>{esc(f.summary)}</td></tr>"
            )
        parts.append("</tbody></table>")
        for f in self.findings:
            parts.append(f"<h3>{esc(f.title)} {badge(f.verdict)}</h3>")
            parts.append(f"<p>{esc(f.explanation)}</p>")
            rows = "".join(
                f"<tr><td {cell}>{esc(str(k))}</td><td {cell}>{esc(_format_value(v))}</td></tr>"
                for k, v in f.figures.items()
            )
            if rows:
                parts.append(f'<table style="border-collapse:collapse">{rows}</table>')
            for png, alt in _finding_plots(f):
                parts.append(
                    f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{png}" '
                    'style="max-width:100%"></p>'
                )
            for key, frame in f.details.items():
                if frame is None or len(frame) == 0:
                    continue
                shown = frame.head(50)
                more = f" (first 50 of {len(frame)} rows)" if len(frame) > 50 else ""
                parts.append(f"<h4>{esc(key.replace('_', ' '))}{esc(more)}</h4>")
                parts.append(shown.to_html(escape=True, border=0, float_format=_fmt_float))
        parts.append("</section>")
        return "\n".join(parts)

    def _repr_html_(self):
        return self.to_html()


# --------------------------------------------------------------------------
# helpers: formatting and serialisation


def _fmt_float(x):
    return f"{x:.3f}"


def _format_value(v):
    if v is None:
        return "n/a"
    if isinstance(v, float | np.floating):
        return "n/a" if not np.isfinite(v) else f"{float(v):.3f}"
    return str(v)


def _jsonable(obj):
    """Recursively convert numpy types, NaN and tuples to strict-JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    return str(obj)


def _frame_records(frame):
    if frame is None:
        return []
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return _jsonable(frame.to_dict(orient="records"))


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finding_plots(finding):
    """Base64 PNGs (with alt text) drawn for a finding; none when nothing to draw."""
    from matplotlib.figure import Figure

    plots = []
    if finding.name == "lungs":
        masking = finding.details.get("masking")
        if masking is not None and len(masking):
            fig = Figure(figsize=(4.2, 2.6), layout="constrained")
            ax = fig.add_subplot()
            ax.bar(masking["images"], masking["balanced_accuracy"], color="#4c72b0")
            ax.axhline(finding.figures.get("chance", 0.5), color="k", ls="--", lw=1)
            ax.set_ylim(0, 1)
            ax.set_ylabel("balanced accuracy")
            ax.set_title("Out-of-fold score by masking", fontsize=9)
            plots.append((_png(fig), "Balanced accuracy with lungs or borders masked"))
        heat = finding.arrays.get("mean_gradcam")
        if heat is not None:
            fig = Figure(figsize=(5.6, 2.8), layout="constrained")
            ax1, ax2 = fig.subplots(1, 2)
            ax1.imshow(finding.arrays.get("mean_image", np.zeros_like(heat)), cmap="gray")
            ax1.contour(finding.arrays["lung_mask"].astype(float), levels=[0.5], colors="c")
            ax1.set_title("mean image, lung field", fontsize=9)
            ax2.imshow(heat, cmap="jet", vmin=0)
            ax2.contour(finding.arrays["lung_mask"].astype(float), levels=[0.5], colors="w")
            ax2.set_title("mean Grad-CAM (out of fold)", fontsize=9)
            for ax in (ax1, ax2):
                ax.set_axis_off()
            plots.append((_png(fig), "Mean Grad-CAM heatmap with the lung field outlined"))
    elif finding.name == "calibration":
        curve = finding.details.get("calibration_curve")
        if curve is not None and len(curve):
            fig = Figure(figsize=(3.4, 3.2), layout="constrained")
            ax = fig.add_subplot()
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.plot(curve["mean_predicted"], curve["fraction_positive"], "o-", color="#4c72b0")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel(finding.figures.get("curve_of", "predicted probability"), fontsize=8)
            ax.set_ylabel("observed frequency")
            ax.set_title("Calibration curve (out of fold)", fontsize=9)
            plots.append((_png(fig), "Calibration curve"))
    return plots


# --------------------------------------------------------------------------
# helpers: validation


def _estimator_name(estimator):
    if estimator is None:
        return None
    if isinstance(estimator, Pipeline):
        return f"Pipeline({', '.join(type(step).__name__ for _, step in estimator.steps)})"
    return type(estimator).__name__


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_checks(checks):
    if checks is None:
        return CHECKS
    if isinstance(checks, str):
        checks = [checks]
    try:
        checks = list(checks)
    except TypeError:
        raise ValueError(
            f"checks must be None or a list of names from {CHECKS}; got {checks!r}."
        ) from None
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(
            f"checks must be a non-empty subset of {CHECKS}; got {checks!r}"
            + (f" (unknown: {unknown})." if unknown else ".")
        )
    return tuple(c for c in CHECKS if c in checks)


def _check_thresholds(thresholds):
    merged = dict(DEFAULT_THRESHOLDS)
    if thresholds is None:
        return merged
    if not isinstance(thresholds, dict):
        raise ValueError(f"thresholds must be a dict or None; got {type(thresholds).__name__}.")
    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"Unknown threshold(s) {unknown}; valid keys are {sorted(DEFAULT_THRESHOLDS)}."
        )
    for key, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ValueError(f"Threshold {key!r} must be a finite number; got {value!r}.")
        merged[key] = float(value)
    for low, high in (
        ("leakage_gap_warning", "leakage_gap_fail"),
        ("confounding_warning", "confounding_fail"),
        ("loso_drop_warning", "loso_drop_fail"),
        ("lungs_masked_warning", "lungs_masked_fail"),
        ("border_drop_warning", "border_drop_fail"),
        ("ece_warning", "ece_fail"),
    ):
        if merged[low] > merged[high]:
            raise ValueError(
                f"Threshold {low}={merged[low]} must not exceed {high}={merged[high]}."
            )
    return merged


def _check_labels(values, n, name):
    if values is None:
        return None
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"{name} must have one entry per image: got shape {arr.shape} for {n} images."
        )
    missing = [i for i, v in enumerate(arr) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise ValueError(f"{name} has missing values (e.g. at position {missing[0]}).")
    return arr


def _load_images(X, image_size, estimator):
    """(N, H, W) or (N, C, H, W) float32 images; paths are loaded once."""
    if is_path_array(X):
        from skxray.preprocessing import ImageLoader

        size = image_size
        if size is None:
            params = estimator.get_params() if hasattr(estimator, "get_params") else {}
            size = params.get("image_size", 128)
        paths = list(X.to_numpy() if hasattr(X, "to_numpy") else X)
        return ImageLoader(image_size=size).fit_transform(paths), [str(p) for p in paths]
    return check_image_array(X, name="X"), None


# --------------------------------------------------------------------------
# helpers: metrics


def _binary_scale(score, k):
    """Rescale a balanced accuracy with chance 1/k to the two-class scale."""
    if score is None or not np.isfinite(score):
        return None
    chance = 1.0 / k
    return 0.5 + 0.5 * (score - chance) / (1.0 - chance)


def _scores(y_enc, proba, k):
    """Accuracy, balanced accuracy and ROC AUC of out-of-fold probabilities."""
    pred = np.argmax(proba, axis=1)
    out = {
        "accuracy": float(accuracy_score(y_enc, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_enc, pred)),
        "roc_auc": None,
    }
    try:
        if k == 2:
            out["roc_auc"] = float(roc_auc_score(y_enc == 1, proba[:, 1]))
        else:
            p = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
            out["roc_auc"] = float(roc_auc_score(y_enc, p, multi_class="ovr", labels=range(k)))
    except ValueError:
        pass
    return out


def _mean_recall(y_enc, pred, present):
    """Balanced accuracy restricted to the classes present in ``y_enc``."""
    return float(np.mean([np.mean(pred[y_enc == c] == c) for c in present]))


def _r(x, nd=3):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _f(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


# --------------------------------------------------------------------------
# cross-validation machinery


def _splitter(cv, groups, random_state):
    if groups is None:
        return StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    return StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=random_state)


def _proba_in_order(model, X, classes):
    """predict_proba with columns in the order of ``classes`` (0 for unseen ones)."""
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    model_classes = list(model.classes_)
    out = np.zeros((len(X), len(classes)))
    for j, c in enumerate(model_classes):
        out[:, classes.index(c)] = proba[:, j]
    return out


def _mask_lungs(X, lung_mask):
    """Fill the lung fields with each image's (channel's) mean outside them.

    The mean of the whole image would leak what the lungs hold (an opacity
    brightens it); the mean of the rest of the image carries nothing of them.
    """
    Xm = X.copy()
    fill = X[..., ~lung_mask].mean(axis=-1)
    Xm[..., lung_mask] = fill[..., None]
    return Xm


def _border_mask(h, w, fraction):
    band_h, band_w = int(fraction * h), int(fraction * w)
    keep = np.zeros((h, w), dtype=bool)
    keep[band_h : h - band_h, band_w : w - band_w] = True
    return ~keep


def _mask_borders(X, border):
    Xm = X.copy()
    Xm[..., border] = 0.0
    return Xm


def _gradcam_parts(model, X):
    """The skxray classifier inside ``model`` and ``X`` as that classifier sees it."""
    if isinstance(model, Pipeline):
        return model[-1], model[:-1].transform(X)
    return model, X


def _run_cv(
    estimator,
    X,
    y,
    classes,
    splits,
    *,
    masks=False,
    gradcam=False,
    border_fraction=0.12,
    verbose=0,
    label="",
):
    """Fit a clone per fold; out-of-fold probabilities (and masked ones, Grad-CAM)."""
    n, k = len(X), len(classes)
    out = {"proba": np.zeros((n, k)), "n_fits": 0}
    h, w = X.shape[-2:]
    if masks:
        from skxray.explain import central_lung_mask

        lung = central_lung_mask(h, w)
        border = _border_mask(h, w, border_fraction)
        out["proba_lungs"] = np.zeros((n, k))
        out["proba_borders"] = np.zeros((n, k))
    if gradcam:
        out["gradcam_share"] = np.full(n, np.nan)
        out["gradcam_sum"] = None
        out["gradcam_error"] = None
    for i, (train, test) in enumerate(splits):
        if verbose:
            print(f"[audit] {label} fold {i + 1}/{len(splits)}: fitting on {len(train)} images")
        model = clone(estimator).fit(X[train], y[train])
        out["n_fits"] += 1
        out["proba"][test] = _proba_in_order(model, X[test], classes)
        out.setdefault("ood_flags", np.full(n, np.nan))
        clf, X_seen = _gradcam_parts(model, X[test])
        if getattr(clf, "ood_", None) is not None:
            out["ood_flags"][test] = clf.ood_.predict(X_seen)
        if masks:
            out["proba_lungs"][test] = _proba_in_order(model, _mask_lungs(X[test], lung), classes)
            out["proba_borders"][test] = _proba_in_order(
                model, _mask_borders(X[test], border), classes
            )
        if gradcam and out["gradcam_error"] is None:
            from skxray.explain import central_lung_mask, heatmap_mass_in_region
            from skxray.explain import gradcam as _gradcam

            try:
                clf, Xt = _gradcam_parts(model, X[test])
                # HiResCAM: faithful for the CNN's flatten head, where plain
                # Grad-CAM's averaged gradients can cancel out; identical to
                # Grad-CAM after the ResNet's global pooling.
                heat = _gradcam(clf, Xt, method="hirescam")
            except (TypeError, ValueError, AttributeError) as exc:
                # No Grad-CAM for this model (e.g. no convolutional layer):
                # report it as unavailable rather than from some folds only.
                out["gradcam_error"] = f"{type(exc).__name__}: {exc}"
                out["gradcam_share"][:] = np.nan
                out["gradcam_sum"] = None
                out.pop("gradcam_region", None)
                continue
            region = central_lung_mask(*heat.shape[1:])
            out["gradcam_share"][test] = heatmap_mass_in_region(heat, region)
            out["gradcam_region"] = region
            total = heat.sum(axis=0)
            out["gradcam_sum"] = total if out["gradcam_sum"] is None else out["gradcam_sum"] + total
    return out


# --------------------------------------------------------------------------
# perceptual hashing


def _to_gray8(img):
    img = img.mean(axis=0) if img.ndim == 3 else img
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _shifted(img, dy, dx):
    """``img`` moved by (dy, dx) pixels, edges replicated."""
    if dy == 0 and dx == 0:
        return img
    h, w = img.shape
    pad = np.pad(img, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    return pad[top : top + h, left : left + w]


def _hash_words(bits):
    """Pack boolean hash bits (n, n_bits) into uint64 words (n, n_words)."""
    packed = np.packbits(bits, axis=-1)
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _perceptual_hashes(X, hash_size, shift):
    """phash and dhash words of each image and of its shifted copies.

    Returns ``base`` of shape (2, n, n_words) and ``variants`` of shape
    (2, n, n_shifts, n_words), hash 0 being phash and hash 1 dhash.
    """
    import imagehash
    from PIL import Image

    offsets = [(dy, dx) for dy in (-shift, 0, shift) for dx in (-shift, 0, shift)]
    n = len(X)
    n_bits = hash_size * hash_size
    bits = np.zeros((2, n, len(offsets), n_bits), dtype=bool)
    for i in range(n):
        gray = _to_gray8(X[i])
        for v, (dy, dx) in enumerate(offsets):
            pil = Image.fromarray(_shifted(gray, dy, dx))
            bits[0, i, v] = imagehash.phash(pil, hash_size=hash_size).hash.ravel()
            bits[1, i, v] = imagehash.dhash(pil, hash_size=hash_size).hash.ravel()
    words = _hash_words(bits)
    base = words[:, :, offsets.index((0, 0))]
    return base, words


def _near_duplicate_pairs(base, variants, max_distance, block_bytes=2**26):
    """Pairs (i < j) whose best-aligned phash and dhash both differ by <= max_distance bits.

    The distance of i to j is, over the shifted copies of i, the smallest
    ``max(phash distance, dhash distance)`` to the unshifted j; the pair's
    distance is the smaller of both directions. Vectorised XOR + popcount in
    row blocks, so memory stays bounded for thousands of images.
    """
    _, n, n_var, n_words = variants.shape
    block = max(1, int(block_bytes // max(1, n * n_var * n_words * 8)))
    found = {}
    for start in range(0, n, block):
        stop = min(n, start + block)
        # (2, b, n_var, 1, W) ^ (2, 1, 1, n, W) -> popcount summed over words.
        d = np.bitwise_count(variants[:, start:stop, :, None, :] ^ base[:, None, None, :, :])
        d = d.sum(axis=-1, dtype=np.int32)  # (2, b, n_var, n)
        combined = d.max(axis=0).min(axis=1)  # (b, n)
        p_min = d[0].min(axis=1)
        d_min = d[1].min(axis=1)
        rows, cols = np.nonzero(combined <= max_distance)
        for r, j in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i == j:
                continue
            key = (min(i, j), max(i, j))
            dist = (int(combined[r, j]), int(p_min[r, j]), int(d_min[r, j]))
            found[key] = min(found.get(key, dist), dist)
    return found


# --------------------------------------------------------------------------
# source descriptors


def _descriptors(X):
    """Cheap global image descriptors for the source model.

    An 8x8 thumbnail (layout, field of view), a 16-bin intensity histogram and
    percentiles (exposure, intensity curve), and mean/std of the four border
    bands and four corners (text, markers, collimation): what differs between
    hospitals and devices, with nothing specific to a disease.
    """
    G = X.mean(axis=1) if X.ndim == 4 else X
    n, h, w = G.shape
    rows = np.linspace(0, h, 9).astype(int)
    cols = np.linspace(0, w, 9).astype(int)
    thumb = np.add.reduceat(np.add.reduceat(G, rows[:-1], axis=1), cols[:-1], axis=2)
    thumb /= np.outer(np.diff(rows), np.diff(cols))[None]
    flat = G.reshape(n, -1)
    hist = np.stack([np.histogram(g, bins=16, range=(0.0, 1.0))[0] for g in flat]) / flat.shape[1]
    pct = np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1).T
    bh, bw = max(1, int(0.12 * h)), max(1, int(0.12 * w))
    regions = [
        G[:, :bh, :],
        G[:, -bh:, :],
        G[:, :, :bw],
        G[:, :, -bw:],
        G[:, :bh, :bw],
        G[:, :bh, -bw:],
        G[:, -bh:, :bw],
        G[:, -bh:, -bw:],
    ]
    band = np.concatenate(
        [np.stack([r.reshape(n, -1).mean(1), r.reshape(n, -1).std(1)], axis=1) for r in regions],
        axis=1,
    )
    stats = np.stack([flat.mean(1), flat.std(1)], axis=1)
    return np.concatenate([thumb.reshape(n, -1), hist, pct, band, stats], axis=1)


def _descriptor_model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


# --------------------------------------------------------------------------
# the checks


def _finding(name, verdict, explanation, figures, details=None, summary="", arrays=None):
    return Finding(
        name=name,
        verdict=verdict,
        explanation=explanation,
        figures=figures,
        details=details or {},
        title=_TITLES[name],
        summary=summary,
        arrays=arrays or {},
    )


def _check_leakage(ctx, grouped, image_level):
    th, k = ctx["thresholds"], ctx["k"]
    groups = ctx["groups"]
    if groups is None:
        s = _scores(ctx["y_enc"], grouped["proba"], k)
        figures = {
            "image_level_balanced_accuracy": _r(s["balanced_accuracy"]),
            "grouped_balanced_accuracy": None,
            "gap": None,
            "n_patients": None,
        }
        return _finding(
            "leakage",
            "warning",
            "No patient ids were given, so patient leakage cannot be checked: if patients "
            "have several images, the image-level score "
            f"({s['balanced_accuracy']:.2f} balanced accuracy) may be inflated.",
            figures,
            {"scores": pd.DataFrame([{"cv": "image-level", **s}])},
            summary=f"image-level BA {_f(s['balanced_accuracy'])}; no patient ids",
        )
    s_img = _scores(ctx["y_enc"], image_level["proba"], k)
    s_grp = _scores(ctx["y_enc"], grouped["proba"], k)
    counts = pd.Series(groups).value_counts()
    labels_per_patient = pd.Series(ctx["y_enc"]).groupby(groups).nunique()
    gap = s_img["balanced_accuracy"] - s_grp["balanced_accuracy"]
    gap_scaled = gap * 0.5 / (1.0 - 1.0 / k)
    figures = {
        "image_level_accuracy": _r(s_img["accuracy"]),
        "image_level_balanced_accuracy": _r(s_img["balanced_accuracy"]),
        "image_level_roc_auc": _r(s_img["roc_auc"]),
        "grouped_accuracy": _r(s_grp["accuracy"]),
        "grouped_balanced_accuracy": _r(s_grp["balanced_accuracy"]),
        "grouped_roc_auc": _r(s_grp["roc_auc"]),
        "gap": _r(gap),
        "n_patients": int(len(counts)),
        "images_per_patient_mean": _r(float(counts.mean()), 2),
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
    a, b = s_img["balanced_accuracy"], s_grp["balanced_accuracy"]
    if gap_scaled > th["leakage_gap_fail"]:
        verdict = "fail"
        text = (
            f"Splitting by image scores {a:.2f} but splitting by patient only {b:.2f} "
            "(balanced accuracy): images of the same patient in training and test "
            "inflated the image-level score."
        )
    elif gap_scaled > th["leakage_gap_warning"]:
        verdict = "warning"
        text = (
            f"Splitting by image scores {a:.2f} and by patient {b:.2f} (balanced accuracy): "
            "a small part of the image-level score may come from patients seen in training."
        )
    else:
        verdict = "ok"
        text = (
            f"The score barely changes when each patient's images stay on one side of the split "
            f"({a:.2f} by image vs {b:.2f} by patient): no sign of patient leakage."
        )
    summary = f"BA by image {_f(a)}, by patient {_f(b)}, gap {gap:+.2f}"
    return _finding("leakage", verdict, text, figures, details, summary)


def _check_duplicates(ctx, fold_of):
    X, y = ctx["X"], ctx["y"]
    groups, sources = ctx["groups"], ctx["sources"]
    t0 = time.perf_counter()
    base, variants = _perceptual_hashes(X, ctx["hash_size"], ctx["shift"])
    found = _near_duplicate_pairs(base, variants, ctx["duplicate_distance"])
    rows = []
    for (i, j), (dist, dp, dd) in sorted(found.items()):
        same_patient = groups is not None and groups[i] == groups[j]
        row = {
            "i": i,
            "j": j,
            "label_i": y[i],
            "label_j": y[j],
            "distance": dist,
            "phash_distance": dp,
            "dhash_distance": dd,
            "same_class": bool(y[i] == y[j]),
            "same_patient": bool(same_patient),
            "fold_i": int(fold_of[i]),
            "fold_j": int(fold_of[j]),
            "across_folds": bool(fold_of[i] != fold_of[j]),
        }
        if groups is not None:
            row["patient_i"], row["patient_j"] = groups[i], groups[j]
        if sources is not None:
            row["source_i"], row["source_j"] = sources[i], sources[j]
        if ctx["paths"] is not None:
            row["path_i"], row["path_j"] = ctx["paths"][i], ctx["paths"][j]
        rows.append(row)
    columns = [
        "i",
        "j",
        "label_i",
        "label_j",
        "distance",
        "phash_distance",
        "dhash_distance",
        "same_class",
        "same_patient",
        "fold_i",
        "fold_j",
        "across_folds",
    ]
    pairs = pd.DataFrame(rows, columns=columns if not rows else None)
    n_pairs = len(pairs)
    n_across_classes = int((~pairs["same_class"]).sum()) if n_pairs else 0
    n_across_folds = int(pairs["across_folds"].sum()) if n_pairs else 0
    n_other_patients = int((~pairs["same_patient"]).sum()) if n_pairs else 0
    involved = len(set(pairs["i"]).union(pairs["j"])) if n_pairs else 0
    figures = {
        "n_pairs": n_pairs,
        "n_images_involved": involved,
        "n_within_class": n_pairs - n_across_classes,
        "n_across_classes": n_across_classes,
        "n_across_folds": n_across_folds,
        "n_between_patients": n_other_patients if groups is not None else None,
        "max_distance_bits": ctx["duplicate_distance"],
        "hash_bits": ctx["hash_size"] ** 2,
        "hash_seconds": _r(time.perf_counter() - t0, 2),
    }
    rule = (
        f"perceptual-hash distance <= {ctx['duplicate_distance']} of {ctx['hash_size'] ** 2} bits"
    )
    if n_pairs == 0:
        verdict = "ok"
        text = f"No near-duplicate images were found ({rule})."
    elif n_across_folds or n_across_classes:
        verdict = "fail"
        bits = []
        if n_across_folds:
            bits.append(f"{n_across_folds} across training and test folds")
        if n_across_classes:
            bits.append(f"{n_across_classes} between different classes")
        text = (
            f"{n_pairs} pair(s) of near-identical images were found, {' and '.join(bits)}: "
            "the test folds partly repeat the training images"
            + (" and some copies carry conflicting labels." if n_across_classes else ".")
        )
    else:
        verdict = "warning"
        text = (
            f"{n_pairs} pair(s) of near-identical images were found, all within one class and "
            "one fold (e.g. the same patient): harmless for this grouped split, but they "
            "inflate any image-level split; consider removing them."
        )
    summary = f"{n_pairs} pairs ({n_across_folds} across folds, {n_across_classes} across classes)"
    return _finding("duplicates", verdict, text, figures, {"pairs": pairs}, summary)


def _source_predictor_score(ctx, source_model, n_fits):
    """Out-of-fold balanced accuracy of predicting the source from the images."""
    X, sources, groups = ctx["X"], ctx["sources"], ctx["groups"]
    src_classes = sorted(pd.unique(sources).tolist(), key=str)
    per_source = pd.Series(sources).value_counts()
    if groups is not None:
        per_source = pd.Series(groups).groupby(sources).nunique()
    n_splits = int(min(ctx["cv"], per_source.min()))
    if n_splits < 2:
        return None, None, n_fits, "a source has fewer than 2 patients (images)"
    splitter = _splitter(n_splits, groups, ctx["random_state"])
    splits = list(splitter.split(X, sources, groups))
    s_enc = np.array([src_classes.index(s) for s in sources])
    if isinstance(source_model, str) and source_model == "descriptors":
        feats = _descriptors(X)
        pred = np.zeros(len(X), dtype=int)
        for train, test in splits:
            m = _descriptor_model().fit(feats[train], s_enc[train])
            pred[test] = m.predict(feats[test])
        kind = "logistic regression on image descriptors"
    else:
        est = ctx["estimator"] if source_model == "estimator" else source_model
        res = _run_cv(
            est,
            X,
            s_enc,
            list(range(len(src_classes))),
            splits,
            verbose=ctx["verbose"],
            label="source model",
        )
        n_fits += res["n_fits"]
        pred = res["proba"].argmax(axis=1)
        kind = type(est).__name__ if source_model != "estimator" else "the audited estimator"
    confusion = pd.crosstab(
        pd.Series(sources, name="source"),
        pd.Series(np.array(src_classes, object)[pred], name="predicted"),
    )
    return float(balanced_accuracy_score(s_enc, pred)), confusion, n_fits, kind


def _check_sources(ctx, grouped, source_model):
    th = ctx["thresholds"]
    sources, y, y_enc, k = ctx["sources"], ctx["y"], ctx["y_enc"], ctx["k"]
    n_fits = 0
    if sources is None:
        return _finding(
            "sources",
            "warning",
            "No source labels (hospital, device or data set) were given, so source "
            "confounding cannot be checked; a model may recognise where an image comes "
            "from rather than the disease.",
            {"n_sources": None},
            summary="no source labels",
        ), 0
    table = pd.crosstab(pd.Series(y, name="class"), pd.Series(sources, name="source"))
    n_sources = table.shape[1]
    sources_per_class = (table > 0).sum(axis=1)
    figures = {
        "n_sources": int(n_sources),
        "sources_per_class": {str(c): int(v) for c, v in sources_per_class.items()},
    }
    details = {"contingency": table}
    if n_sources == 1:
        figures["label_from_source_balanced_accuracy"] = None
        return _finding(
            "sources",
            "ok",
            "All images come from one source, so the source cannot give the label away; "
            "but the model has not been tested on another hospital either.",
            figures,
            details,
            summary="1 source",
        ), 0
    # Label predicted from the source alone: each source votes its majority class.
    majority = table.idxmax(axis=0)
    from_source = np.array([list(ctx["classes"]).index(majority[s]) for s in sources])
    label_from_source = float(balanced_accuracy_score(y_enc, from_source))
    conf = _binary_scale(label_from_source, k)
    single_source = bool((sources_per_class == 1).all())
    src_ba, confusion, n_fits, kind = _source_predictor_score(ctx, ctx["source_model"], n_fits)
    recog = _binary_scale(src_ba, n_sources) if src_ba is not None else None
    figures.update(
        {
            "each_class_single_source": single_source,
            "label_from_source_balanced_accuracy": _r(label_from_source),
            "source_predictor": kind if src_ba is not None else None,
            "source_predictor_balanced_accuracy": _r(src_ba),
        }
    )
    if confusion is not None:
        details["source_predictions"] = confusion

    # Leave-one-source-out, when a class spans several sources.
    loso_rows = []
    if (sources_per_class > 1).any() and grouped is not None:
        for s in table.columns:
            test = np.flatnonzero(sources == s)
            train = np.flatnonzero(sources != s)
            present = np.unique(y_enc[test])
            if len(np.unique(y_enc[train])) < 2 or not set(present) <= set(y_enc[train]):
                continue
            if ctx["verbose"]:
                print(f"[audit] leave-one-source-out: holding out {s!r}")
            model = clone(ctx["estimator"]).fit(ctx["X"][train], y[train])
            n_fits += 1
            pred = _proba_in_order(model, ctx["X"][test], list(ctx["classes"])).argmax(axis=1)
            in_pred = grouped["proba"][test].argmax(axis=1)
            held = _mean_recall(y_enc[test], pred, present)
            inside = _mean_recall(y_enc[test], in_pred, present)
            loso_rows.append(
                {
                    "held_out_source": s,
                    "n_images": len(test),
                    "classes": ", ".join(str(ctx["classes"][c]) for c in present),
                    "in_source_score": inside,
                    "held_out_score": held,
                    "drop": inside - held,
                }
            )
    loso = pd.DataFrame(loso_rows)
    if len(loso):
        details["leave_one_source_out"] = loso
    max_drop = float(loso["drop"].max()) if len(loso) else None
    figures["loso_max_drop"] = _r(max_drop)
    figures["loso_sources_tested"] = len(loso)

    recognisable = recog is not None and recog >= th["source_recognisable"]
    reasons = []
    verdict = "ok"
    if conf >= th["confounding_fail"] and recognisable:
        verdict = "fail"
        what = (
            "Each class comes from its own source"
            if single_source
            else ("The source almost determines the class")
        )
        reasons.append(
            f"{what} (label from source alone: {label_from_source:.2f}) and a simple model "
            f"recognises the source from the images (balanced accuracy {src_ba:.2f}): the model "
            "can score well by recognising the hospital, not the disease."
        )
    elif conf >= th["confounding_warning"]:
        verdict = "warning"
        if recognisable:
            reasons.append(
                f"The source largely predicts the class (label from source alone: "
                f"{label_from_source:.2f}) and is recognisable from the images (balanced "
                f"accuracy {src_ba:.2f}): part of the score may come from the hospital."
            )
        else:
            reasons.append(
                f"The source largely predicts the class (label from source alone: "
                f"{label_from_source:.2f}); a simple model did not recognise the sources "
                f"({_f(src_ba)}), but a network may."
            )
    if max_drop is not None and max_drop >= th["loso_drop_warning"] * 2 * (1 - 1 / k):
        worst = loso.loc[loso["drop"].idxmax()]
        level = "fail" if max_drop >= th["loso_drop_fail"] * 2 * (1 - 1 / k) else "warning"
        verdict = max(verdict, level, key=_VERDICTS.index)
        reasons.append(
            f"Tested on a source it never saw ({worst['held_out_source']}), the model falls "
            f"from {worst['in_source_score']:.2f} to {worst['held_out_score']:.2f}: it does not "
            "transfer between sources."
        )
    if not reasons:
        bits = f"the label does not follow the source (label from source alone: {label_from_source:.2f})"
        if len(loso):
            bits += f" and scores hold on held-out sources (largest drop {max_drop:+.2f})"
        reasons.append(f"{n_sources} sources: {bits}.")
    summary = (
        f"{n_sources} sources; label-from-source {_f(label_from_source)}; "
        f"source predicted {_f(src_ba)}"
        + (f"; LOSO max drop {max_drop:+.2f}" if max_drop is not None else "")
    )
    return _finding("sources", verdict, " ".join(reasons), figures, details, summary), n_fits


def _check_lungs(ctx, grouped):
    th, k, y_enc = ctx["thresholds"], ctx["k"], ctx["y_enc"]
    s0 = _scores(y_enc, grouped["proba"], k)
    s_l = _scores(y_enc, grouped["proba_lungs"], k)
    s_b = _scores(y_enc, grouped["proba_borders"], k)
    e0 = _binary_scale(s0["balanced_accuracy"], k)
    el = _binary_scale(s_l["balanced_accuracy"], k)
    eb = _binary_scale(s_b["balanced_accuracy"], k)
    drop = e0 - eb
    share = grouped.get("gradcam_share")
    mean_share = (
        float(np.nanmean(share)) if share is not None and np.isfinite(share).any() else None
    )
    region = grouped.get("gradcam_region")
    area = float(region.mean()) if region is not None else None
    enrichment = mean_share / area if mean_share is not None and area else None
    figures = {
        "chance": _r(1.0 / k),
        "balanced_accuracy": _r(s0["balanced_accuracy"]),
        "accuracy": _r(s0["accuracy"]),
        "lungs_masked_balanced_accuracy": _r(s_l["balanced_accuracy"]),
        "lungs_masked_accuracy": _r(s_l["accuracy"]),
        "borders_masked_balanced_accuracy": _r(s_b["balanced_accuracy"]),
        "borders_masked_accuracy": _r(s_b["accuracy"]),
        "border_drop": _r(s0["balanced_accuracy"] - s_b["balanced_accuracy"]),
        "border_fraction": ctx["border_fraction"],
        "gradcam_lung_share": _r(mean_share),
        "lung_area_share": _r(area),
        "gradcam_enrichment": _r(enrichment),
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
    details = {"masking": masking}
    arrays = {}
    if grouped.get("gradcam_sum") is not None:
        heat = grouped["gradcam_sum"] / len(y_enc)
        arrays["mean_gradcam"] = heat
        arrays["lung_mask"] = region
        X = ctx["X"]
        mean_img = X.mean(axis=0)
        arrays["mean_image"] = mean_img.mean(axis=0) if mean_img.ndim == 3 else mean_img
        if arrays["mean_image"].shape != heat.shape:
            arrays.pop("mean_image")

    a0, al, ab = s0["balanced_accuracy"], s_l["balanced_accuracy"], s_b["balanced_accuracy"]
    reasons_fail, reasons_warn = [], []
    if e0 < th["min_score"]:
        verdict = "warning"
        text = (
            f"The model barely beats chance ({a0:.2f} balanced accuracy, chance {1 / k:.2f}), "
            "so masking cannot tell where it looks; the check is inconclusive."
        )
    else:
        if el >= th["lungs_masked_fail"]:
            reasons_fail.append(
                f"The model still scores {al:.2f} (balanced accuracy, chance {1 / k:.2f}) with "
                "the lungs hidden: it relies on something outside the lungs."
            )
        elif el >= th["lungs_masked_warning"]:
            reasons_warn.append(
                f"With the lungs hidden the model still scores {al:.2f} (chance {1 / k:.2f}): "
                "part of its evidence lies outside the lungs."
            )
        if drop >= th["border_drop_fail"]:
            reasons_fail.append(
                f"Hiding only the image borders drops the score from {a0:.2f} to {ab:.2f}: the "
                "model relies on markers or text at the edges."
            )
        elif drop >= th["border_drop_warning"]:
            reasons_warn.append(
                f"Hiding only the image borders lowers the score from {a0:.2f} to {ab:.2f}: "
                "the edges carry part of its evidence."
            )
        if enrichment is not None and enrichment < th["gradcam_enrichment_warning"]:
            reasons_warn.append(
                f"Only {mean_share:.0%} of the Grad-CAM evidence lies in the lung fields, which "
                f"cover {area:.0%} of the image: its attention is mostly elsewhere."
            )
        if reasons_fail:
            verdict, text = "fail", " ".join(reasons_fail + reasons_warn)
        elif reasons_warn:
            verdict, text = "warning", " ".join(reasons_warn)
        else:
            verdict = "ok"
            text = (
                f"With the lungs hidden the model falls to {al:.2f} (chance {1 / k:.2f}) while "
                f"hiding the borders keeps {ab:.2f} of {a0:.2f}: it looks at the lungs."
            )
            if mean_share is not None:
                text = text[:-1] + f" ({mean_share:.0%} of Grad-CAM evidence inside them)."
    summary = f"BA {_f(a0)}; lungs masked {_f(al)}; borders masked {_f(ab)}" + (
        f"; Grad-CAM in lungs {mean_share:.0%}" if mean_share is not None else ""
    )
    return _finding("lungs", verdict, text, figures, details, summary, arrays)


def _check_calibration(ctx, grouped, splits):
    th, k, y_enc, classes = ctx["thresholds"], ctx["k"], ctx["y_enc"], ctx["classes"]
    proba = grouped["proba"]
    n_bins = ctx["n_bins"]
    if k == 2:
        target = (y_enc == 1).astype(int)
        prob = proba[:, 1]
        brier = float(brier_score_loss(target, prob))
        prevalence = target.mean()
        brier_ref = float(np.mean((prevalence - target) ** 2))
        curve_of = f"predicted probability of {classes[1]}"
    else:
        onehot = np.eye(k)[y_enc]
        brier = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
        brier_ref = float(np.mean(np.sum((onehot.mean(axis=0) - onehot) ** 2, axis=1)))
        prob = proba.max(axis=1)
        target = (proba.argmax(axis=1) == y_enc).astype(int)
        curve_of = "confidence of the predicted class"
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
    overall = np.bincount(y_enc, minlength=k) / len(y_enc)
    rows = []
    for f, (_, test) in enumerate(splits):
        props = np.bincount(y_enc[test], minlength=k) / len(test)
        rows.append({"fold": f, "n_test": len(test), **{str(c): p for c, p in zip(classes, props)}})
    rows.append(
        {"fold": "all", "n_test": len(y_enc), **{str(c): p for c, p in zip(classes, overall)}}
    )
    proportions = pd.DataFrame(rows)
    deviation = float(
        np.max(np.abs(proportions.iloc[:-1][[str(c) for c in classes]].to_numpy() - overall))
    )
    missing = bool((proportions.iloc[:-1][[str(c) for c in classes]].to_numpy() == 0).any())
    figures = {
        "brier_score": _r(brier),
        "brier_score_prevalence_only": _r(brier_ref),
        "brier_skill_score": _r(1.0 - brier / brier_ref) if brier_ref > 0 else None,
        "expected_calibration_error": _r(ece),
        "n_bins": n_bins,
        "curve_of": curve_of,
        "class_proportions": {str(c): _r(p) for c, p in zip(classes, overall)},
        "max_fold_proportion_deviation": _r(deviation),
        "fold_missing_a_class": missing,
        # Share of held-out images the fold models' detectors call out of
        # distribution (None when the model has no detector).
        "ood_rate": (
            None
            if np.isnan(grouped.get("ood_flags", np.array([np.nan]))).all()
            else _r(float(np.nanmean(grouped["ood_flags"])))
        ),
    }
    details = {"calibration_curve": curve, "class_proportions": proportions}
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
        verdict = max(verdict, "warning", key=_VERDICTS.index)
        reasons.append(
            "A test fold lacks a class entirely."
            if missing
            else (
                f"Class proportions differ between folds by up to {deviation:.2f}, so fold "
                "scores are not comparable."
            )
        )
    if brier_ref > 0 and brier >= brier_ref:
        verdict = max(verdict, "warning", key=_VERDICTS.index)
        reasons.append(
            f"The Brier score ({brier:.3f}) is no better than always predicting the class "
            f"proportions ({brier_ref:.3f})."
        )
    if not reasons:
        reasons.append(
            f"Predicted probabilities match observed frequencies (expected calibration error "
            f"{ece:.2f}, Brier score {brier:.3f}) and classes are balanced across folds."
        )
    summary = f"Brier {brier:.3f}; ECE {ece:.3f}; fold deviation {deviation:.2f}"
    return _finding("calibration", verdict, " ".join(reasons), figures, details, summary)


# --------------------------------------------------------------------------
# public entry point


def audit(
    estimator,
    X,
    y,
    *,
    groups=None,
    sources=None,
    cv=5,
    random_state=None,
    checks=None,
    image_size=None,
    duplicate_distance=20,
    hash_size=16,
    border_fraction=0.12,
    source_model="descriptors",
    n_bins=10,
    thresholds=None,
    verbose=0,
):
    """Audit a classifier and a data set for shortcut learning and data leakage.

    Models that read the hospital instead of the disease look accurate inside
    one data set and fail elsewhere [1]_, and duplicated images, patients
    shared between training and test sets and source confounding make
    published scores unusable [2]_. This function looks for each of these.
    It runs the checks below with cross-validation and returns an
    :class:`AuditReport` with one :class:`Finding` per check: its figures, a
    verdict ("ok", "warning" or "fail") and a one-line explanation.

    1. ``"leakage"`` (patient leakage): out-of-fold scores of image-level
       :class:`~sklearn.model_selection.StratifiedKFold` vs patient-grouped
       :class:`~sklearn.model_selection.StratifiedGroupKFold`. A gap in
       balanced accuracy above ``leakage_gap_warning`` (0.05) is a warning,
       above ``leakage_gap_fail`` (0.10) a fail. Without ``groups``: a
       warning, as leakage cannot be checked.
    2. ``"duplicates"`` (near-duplicates): 256-bit perceptual hashes
       (``imagehash.phash`` and ``dhash`` of the 8-bit image) of every image
       and of copies shifted by about 3% of the side in each direction; a
       pair whose best alignment differs by at most ``duplicate_distance``
       bits in *both* hashes is a near-duplicate. Each pair is reported with
       its classes, patients and folds of the grouped CV. Fail when a pair
       spans training and test folds or two classes; warning when pairs only
       sit within one fold and class (e.g. one patient); ok when none.
    3. ``"sources"`` (source confounding, needs ``sources``): the class x
       source contingency table; how well the label follows from the source
       alone (each source voting its majority class, balanced accuracy); how
       well the source is recognised from the images (out-of-fold balanced
       accuracy of ``source_model``); and, when a class spans several
       sources, leave-one-source-out scores (mean recall over the classes of
       the held-out source) against the grouped-CV scores of the same
       images. Fail when the label follows from the source (>=
       ``confounding_fail``, 0.90) and the source is recognisable (>=
       ``source_recognisable``, 0.80) or a held-out source drops by >=
       ``loso_drop_fail`` (0.20); warning from ``confounding_warning`` (0.70)
       or ``loso_drop_warning`` (0.10). Without ``sources``: a warning.
    4. ``"lungs"`` (where the model looks): the grouped-CV models score their
       test folds unmasked, with the central lung fields
       (:func:`skxray.explain.central_lung_mask`) filled with the mean of
       the rest of the image, and with a band of ``border_fraction`` of each side set to 0
       (corners and edges, where markers and text sit; the lungs kept).
       Grad-CAM (:func:`skxray.explain.gradcam`, predicted class) on each
       test fold gives the share of evidence inside the lung fields. Fail
       when the lungs-masked balanced accuracy is >= ``lungs_masked_fail``
       (0.65) or masking the borders drops it by >= ``border_drop_fail``
       (0.20); warning from ``lungs_masked_warning`` (0.58),
       ``border_drop_warning`` (0.10), or when the Grad-CAM share in the
       lungs is below the lungs' share of the image area
       (``gradcam_enrichment_warning``, 1.0). Inconclusive (warning) when the
       unmasked score is below ``min_score`` (0.60). Grad-CAM is skipped
       (reported as unavailable) for models without convolutional layers.
    5. ``"calibration"`` (class balance and calibration): class proportions
       of each test fold, Brier score (and that of always predicting the
       class proportions), the calibration curve
       (:func:`sklearn.calibration.calibration_curve`, ``n_bins`` uniform
       bins; the probability of the second class (``classes_[1]``) for two classes, the
       top-class confidence otherwise) and the expected calibration error of
       those bins, all from the grouped-CV out-of-fold probabilities. Fail
       when ECE >= ``ece_fail`` (0.25); warning from ``ece_warning`` (0.10),
       when a fold's class proportions deviate by more than
       ``fold_balance_warning`` (0.10), or when the Brier score is no better
       than the class-proportions baseline.

    Balanced accuracies are compared with the thresholds on the two-class
    scale: with k classes (or sources) they are rescaled first so that
    chance is 0.5 and perfect 1; see :data:`DEFAULT_THRESHOLDS`.

    **Cost.** One patient-grouped cross-validation (``cv`` fits) serves
    checks 1, 3, 4 and 5: checks 4 and 5 reuse its out-of-fold predictions,
    masked and unmasked, and Grad-CAM runs on its test folds. Check 1 adds
    one image-level cross-validation (``cv`` more fits, only when ``groups``
    is given). Check 3 adds a logistic regression on cheap image
    descriptors (seconds; ``source_model="estimator"`` instead costs ``cv``
    more fits) and one fit per source when a class spans several sources.
    Check 2 fits nothing: about 20 hashes per image and a vectorised
    comparison of all pairs. So the whole audit costs about two
    cross-validations of the estimator.

    Parameters
    ----------
    estimator : classifier
        An unfitted skxray classifier (or a :class:`~sklearn.pipeline.Pipeline`
        ending in one) with ``fit``, ``predict_proba`` and ``classes_``. It is
        cloned and fitted once per fold; it is not modified.
    X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
        Images with values in [0, 1]. Paths are read once with
        :class:`~skxray.preprocessing.ImageLoader` at ``image_size``.
    y : array-like of shape (n_samples,)
        Class labels, at least two classes.
    groups : array-like of shape (n_samples,), default=None
        Patient id of each image. Without it, check 1 is a warning, the
        "grouped" CV is image-level and duplicates always count as separate
        patients.
    sources : array-like of shape (n_samples,), default=None
        Source (hospital, device, data set) of each image, for check 3.
    cv : int, default=5
        Number of folds; every class needs at least ``cv`` patients (images
        without ``groups``).
    random_state : int or None, default=None
        Seeds the fold shuffling (the estimator's own ``random_state`` seeds
        its training).
    checks : list of str or None, default=None
        Subset of :data:`CHECKS` to run; None runs all five.
    image_size : int or None, default=None
        Side of the square images when ``X`` holds paths; None takes the
        estimator's ``image_size`` parameter (128 if it has none).
    duplicate_distance : int, default=20
        Largest Hamming distance, in bits of each ``hash_size**2``-bit hash,
        of a near-duplicate pair. Tuned on phantoms: exact copies, light
        noise, 1-2 px shifts, JPEG re-encoding and 5% brightness changes stay
        within 20 of 256 bits, while distinct phantoms (far more alike than
        real radiographs) are 30 or more apart.
    hash_size : int, default=16
        Side of the perceptual hashes (``hash_size**2`` bits), >= 4.
    border_fraction : float, default=0.12
        Width of the masked border band, as a fraction of each side, in
        (0, 0.5).
    source_model : "descriptors", "estimator" or classifier, default="descriptors"
        Model that predicts the source in check 3: ``"descriptors"`` is a
        logistic regression on global descriptors (thumbnail, intensity
        histogram and percentiles, border and corner statistics), cheap and a
        *lower bound* of what a network can recognise, so a high score is
        conclusive; ``"estimator"`` clones the audited estimator (``cv``
        more fits); or any classifier accepting the images.
    n_bins : int, default=10
        Number of bins of the calibration curve.
    thresholds : dict or None, default=None
        Overrides of :data:`DEFAULT_THRESHOLDS`.
    verbose : int, default=0
        1 prints one line per fit.

    Returns
    -------
    AuditReport
        The findings; ``report.verdict`` is the worst one.

    Raises
    ------
    ValueError
        If a parameter is invalid, ``y``, ``groups`` or ``sources`` do not
        have one entry per image or have missing values, ``y`` has fewer
        than two classes, or a class has fewer than ``cv`` patients (images).

    See Also
    --------
    skxray.explain.gradcam : The heatmaps of check 4.
    skxray.preprocessing.BorderMask : Hide the borders when training.

    References
    ----------
    .. [1] A. J. DeGrave, J. D. Janizek and S.-I. Lee, "AI for radiographic
       COVID-19 detection selects shortcuts over signal", *Nature Machine
       Intelligence* 3:610-619, 2021.
    .. [2] M. Roberts et al., "Common pitfalls and recommendations for using
       machine learning to detect and prognosticate for COVID-19 using chest
       radiographs and CT scans", *Nature Machine Intelligence* 3:199-217,
       2021.

    Examples
    --------
    >>> from skxray.audit import audit
    >>> from skxray.datasets import make_phantom_cxr
    >>> X, y, groups = make_phantom_cxr(40, image_size=32, random_state=0,
    ...                                 return_groups=True)
    >>> report = audit(None, X, y, groups=groups, checks=["duplicates"], cv=3,
    ...                random_state=0)
    >>> report["duplicates"].figures["n_pairs"] >= 0
    True
    """
    t0 = time.perf_counter()
    checks = _check_checks(checks)
    thresholds = _check_thresholds(thresholds)
    if not _is_int(cv) or cv < 2:
        raise ValueError(f"cv must be an int >= 2; got {cv!r}.")
    if not _is_int(duplicate_distance) or duplicate_distance < 0:
        raise ValueError(f"duplicate_distance must be an int >= 0; got {duplicate_distance!r}.")
    if not _is_int(hash_size) or hash_size < 4:
        raise ValueError(f"hash_size must be an int >= 4; got {hash_size!r}.")
    if (
        isinstance(border_fraction, bool)
        or not isinstance(border_fraction, numbers.Real)
        or not 0 < border_fraction < 0.5
    ):
        raise ValueError(f"border_fraction must be a float in (0, 0.5); got {border_fraction!r}.")
    if not _is_int(n_bins) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2; got {n_bins!r}.")
    if isinstance(source_model, str) and source_model not in ("descriptors", "estimator"):
        raise ValueError(
            f"source_model must be 'descriptors', 'estimator' or a classifier; got {source_model!r}."
        )
    needs_fit = any(c in checks for c in ("leakage", "lungs", "calibration")) or (
        "sources" in checks and sources is not None
    )
    if needs_fit and (estimator is None or not hasattr(estimator, "fit")):
        raise ValueError(
            f"estimator must be an unfitted classifier with fit and predict_proba for the "
            f"checks {[c for c in checks if c != 'duplicates']}; got {estimator!r}."
        )

    X, paths = _load_images(X, image_size, estimator)
    n = len(X)
    y_arr = np.asarray(y, dtype=object)
    if y_arr.ndim != 1 or len(y_arr) != n:
        raise ValueError(
            f"y must have one label per image: got shape {y_arr.shape} for {n} images."
        )
    y_arr = _check_labels(y_arr, n, "y")
    groups = _check_labels(groups, n, "groups")
    sources = _check_labels(sources, n, "sources")
    y = np.asarray(y)
    try:
        classes = np.unique(y).tolist()  # the order of the estimators' classes_
    except TypeError:  # mixed types
        classes = sorted(pd.unique(y_arr).tolist(), key=str)
    k = len(classes)
    if k < 2:
        raise ValueError(f"y needs at least two classes; got {classes}.")
    y_enc = np.array([classes.index(v) for v in y])
    per_class = (
        pd.Series(groups).groupby(y_enc).nunique()
        if groups is not None
        else pd.Series(y_enc).value_counts()
    )
    if per_class.min() < cv:
        unit = "patients" if groups is not None else "images"
        raise ValueError(
            f"Every class needs at least cv={cv} {unit} for {cv}-fold cross-validation; "
            f"the smallest class has {int(per_class.min())}. Lower cv."
        )

    ctx = {
        "X": X,
        "y": y,
        "y_enc": y_enc,
        "classes": classes,
        "k": k,
        "groups": groups,
        "sources": sources,
        "paths": paths,
        "cv": cv,
        "random_state": random_state,
        "thresholds": thresholds,
        "estimator": estimator,
        "duplicate_distance": int(duplicate_distance),
        "hash_size": int(hash_size),
        "shift": max(1, round(min(X.shape[-2:]) / 32)),
        "border_fraction": float(border_fraction),
        "source_model": source_model,
        "n_bins": int(n_bins),
        "verbose": verbose,
    }

    splits = list(_splitter(cv, groups, random_state).split(X, y_enc, groups))
    fold_of = np.empty(n, dtype=int)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f

    # Check 3 needs the grouped CV only to compare leave-one-source-out scores.
    spans = sources is not None and bool((pd.crosstab(y_enc, sources) > 0).sum(axis=1).max() > 1)
    run_grouped = any(c in checks for c in ("leakage", "lungs", "calibration")) or (
        "sources" in checks and spans
    )
    n_fits = 0
    grouped = image_level = None
    if run_grouped:
        grouped = _run_cv(
            estimator,
            X,
            y,
            classes,
            splits,
            masks="lungs" in checks,
            gradcam="lungs" in checks,
            border_fraction=float(border_fraction),
            verbose=verbose,
            label="grouped CV" if groups is not None else "image-level CV",
        )
        n_fits += grouped["n_fits"]
    if "leakage" in checks and groups is not None:
        image_splits = list(_splitter(cv, None, random_state).split(X, y_enc))
        image_level = _run_cv(
            estimator, X, y, classes, image_splits, verbose=verbose, label="image-level CV"
        )
        n_fits += image_level["n_fits"]

    findings = []
    for name in checks:
        if name == "leakage":
            findings.append(_check_leakage(ctx, grouped, image_level))
        elif name == "duplicates":
            findings.append(_check_duplicates(ctx, fold_of))
        elif name == "sources":
            finding, extra = _check_sources(ctx, grouped, source_model)
            n_fits += extra
            findings.append(finding)
        elif name == "lungs":
            findings.append(_check_lungs(ctx, grouped))
        elif name == "calibration":
            findings.append(_check_calibration(ctx, grouped, splits))

    counts = pd.Series(y_arr).value_counts()
    info = {
        "estimator": _estimator_name(estimator),
        "n_samples": n,
        "image_shape": list(X.shape[1:]),
        "classes": [str(c) for c in classes],
        "class_counts": {str(c): int(counts.get(c, 0)) for c in classes},
        "n_patients": int(len(pd.unique(groups))) if groups is not None else None,
        "n_sources": int(len(pd.unique(sources))) if sources is not None else None,
        "cv": cv,
        "grouped": groups is not None,
        "random_state": random_state
        if _is_int(random_state) or random_state is None
        else str(random_state),
        "checks": list(checks),
        "n_fits": n_fits,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "thresholds": thresholds,
    }
    return AuditReport(findings, info)
