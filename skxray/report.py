"""A self-contained HTML report of an experiment: the answer first, the detail one click away.

:class:`Report` collects sections and writes them to one HTML file that opens
in a browser without network access (figures embedded as PNG, inline styles,
no external URL). Every report has the same structure:

1. a **summary** that fits one screen: what was run, on which data and how
   (:meth:`Report.describe`), the best model and its lead with 95 % intervals
   (from :meth:`Report.add_comparison`), verdict badges of the audit and the
   shift test (:meth:`Report.add_verdict`), and what the numbers do not show;
2. **results**: one comparison table with readable headers and percentages,
   the external validation (:meth:`Report.add_external_validation`), the
   audit (:meth:`Report.add_audit`);
3. **figures** side by side: overlaid ROC and calibration curves, confusion
   matrices in a row (:meth:`Report.add_cv_figures`), learning curves in a
   grid, a Grad-CAM gallery;
4. the **data** (:meth:`Report.add_dataset_summary`);
5. an **appendix** of folded ``<details>`` blocks: per-model metrics (also
   written to ``metrics.json`` beside the page), parameters, software
   versions.
"""

import datetime
import importlib.metadata
import json
import math
import numbers
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from skxray._atomic import atomic_write_many
from skxray._html import BADGE_COLOURS, page
from skxray._html import badge as _badge
from skxray._html import esc as _esc
from skxray._html import figure_html as _figure_html
from skxray._html import table_html as _table_html
from skxray._utils import as_python_scalar, fold_mean_interval, format_value, jsonable
from skxray._validation import as_images_or_paths, is_path_array
from skxray._version import __version__
from skxray.evaluation import (
    ConfusionMatricesDisplay,
    ImageGridDisplay,
    ImageSizesDisplay,
    LearningCurvesDisplay,
    ReliabilityDisplay,
    RocCurvesDisplay,
)
from skxray.io import read_image

__all__ = [
    "Report",
    "class_label",
    "comparison_frame",
    "format_comparison",
    "format_percent",
    "mean_interval",
    "metric_label",
]

_VERSIONS_ID = "software-versions"
_VERSIONS_TITLE = "Software versions"
_SUMMARY_ID = "summary"
_SUMMARY_TITLE = "Summary"
#: Distributions listed under "Software versions" (importlib.metadata
#: matches their names regardless of case).
_PACKAGES = ("torch", "torchvision", "skorch", "scikit-learn", "numpy", "pandas", "matplotlib",
             "Pillow", "pydicom", "grad-cam")

def _slug(title):
    slug = re.sub(r"[^a-z0-9]+", "-", str(title).lower()).strip("-")
    return slug or "section"


def _class_counts(y, groups):
    """``(table, counts, total)``: images, share and patients per class, with a total row."""
    n = len(y)
    counts = pd.Series(y).value_counts().sort_index()
    table = pd.DataFrame({"images": counts, "share": counts / n})
    if groups is not None:
        groups = np.asarray(groups, dtype=object).reshape(-1)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries but X has {n} images.")
        table["patients"] = pd.Series(groups).groupby(pd.Series(y)).nunique()
    table.index.name = "class"
    total = {"images": n, "share": 1.0}
    if groups is not None:
        total["patients"] = len(pd.unique(pd.Series(groups)))
    table.loc["total"] = pd.Series(total)
    table["images"] = table["images"].astype(int)
    table["share"] = [f"{100 * v:.1f} %" for v in table["share"]]
    if groups is not None:
        table["patients"] = table["patients"].astype(int)
    return table, counts, total


def _as_frame(table, name):
    if isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, pd.Series):
        return table.to_frame()
    if isinstance(table, Mapping):
        values = list(table.values())
        if values and all(np.ndim(v) == 0 and not isinstance(v, Mapping) for v in values):
            return pd.DataFrame({"value": values}, index=pd.Index(list(table), name="name"))
        try:
            return pd.DataFrame(table)
        except ValueError:
            return pd.DataFrame.from_dict(table, orient="index")
    raise TypeError(
        f"{name} must be a pandas DataFrame, Series or a dict; got {type(table).__name__}."
    )


def _paragraphs(text):
    blocks = [b.strip() for b in re.split(r"\n\s*\n", str(text)) if b.strip()]
    return "".join(f"<p>{_esc(b)}</p>".replace("\n", "<br>\n") for b in blocks)


def _image_sizes_of(X):
    """(height, width) of each image: from the array shape or the file headers."""
    if is_path_array(X):
        sizes = []
        for path in X:
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except Exception:  # DICOM and the like: decode it
                height, width = read_image(path).shape[:2]
            sizes.append((height, width))
        return np.asarray(sizes, dtype=np.int64)
    arr = np.asarray(X)
    if arr.ndim not in (3, 4):
        raise ValueError(
            "X must be images of shape (n_samples, height, width) or "
            "(n_samples, channels, height, width), or a 1-D sequence of file paths; "
            f"got an array of shape {arr.shape}."
        )
    return np.tile(np.asarray(arr.shape[-2:], dtype=np.int64), (len(arr), 1))


def _gradcam_sample(X, y, n):
    """``n`` images (and labels) taken in turn from each class, for a Grad-CAM figure."""
    X, _ = as_images_or_paths(X)
    y = np.asarray(y, dtype=object).reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} labels but X has {len(X)} images.")
    idx = _round_robin_by_class(y, n)
    return X[idx], y[idx]


def _learning_curves(estimator_or_history):
    """The :class:`~skxray.evaluation.LearningCurvesDisplay` of a fitted model or of its history."""
    if hasattr(estimator_or_history, "fit"):
        return LearningCurvesDisplay.from_estimator(estimator_or_history)
    return LearningCurvesDisplay.from_history(estimator_or_history)


def _round_robin_by_class(y, n):
    """Indices of ``n`` samples: the first of each class in turn (classes sorted)."""
    per_class = [np.flatnonzero(y == c).tolist() for c in pd.unique(pd.Series(y)).tolist()]
    per_class.sort(key=lambda rows: str(y[rows[0]]))
    order = []
    for k in range(max(len(rows) for rows in per_class)):
        order += [rows[k] for rows in per_class if k < len(rows)]
    return np.asarray(order[:n], dtype=np.int64)


def _software_versions():
    versions = {"python": platform.python_version(), "skxray": __version__}
    for dist in _PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    versions["platform"] = platform.platform()
    return versions


# ----------------------------------------------------------------------------- formatting
#: Readable names of the metrics of :func:`skxray.evaluation.compare_models`.
_METRIC_LABELS = {
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "roc_auc": "ROC AUC",
    "brier": "Brier score", "ood_rate": "Flagged OOD",
    "fit_time": "Fit time (s)", "predict_time": "Predict time (s)",
    # per class, after the class name: "COVID-19 sensitivity"
    "sensitivity": "sensitivity", "specificity": "specificity",
    "ppv": "PPV", "npv": "NPV", "f1": "F1",
}
#: Metrics shown as percentages (proportions in [0, 1]).
_PERCENT_METRICS = {"accuracy", "balanced_accuracy", "roc_auc", "ood_rate", "sensitivity",
                    "specificity", "ppv", "npv", "f1"}
#: Metrics where a lower value is better.
_LOWER_IS_BETTER = {"brier", "fit_time", "predict_time"}
#: Columns of the comparison table in the page and the terminal, in this order.
_MAIN_METRICS = ("balanced_accuracy", "accuracy", "roc_auc", "sensitivity", "ppv", "brier",
                 "ood_rate")
_PER_CLASS_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def class_label(label):
    """How a class is named in headers: "Covid-19" and "covid" become "COVID-19".

    Examples
    --------
    >>> from skxray.report import class_label
    >>> class_label("Covid-19"), class_label("covid"), class_label("Viral Pneumonia")
    ('COVID-19', 'COVID-19', 'Viral Pneumonia')
    """
    text = str(label)
    if re.fullmatch(r"(?i)covid[-_ ]?(19)?", text):
        return "COVID-19"
    return text


def _split_metric(key, classes=None):
    """``(base, class)`` of a metric key: ``"sensitivity_Covid-19"`` -> ``("sensitivity", "Covid-19")``."""
    for base in _PER_CLASS_KEYS:
        prefix = base + "_"
        if str(key).startswith(prefix):
            rest = str(key)[len(prefix):]
            if classes is None or rest in [str(c) for c in classes]:
                return base, rest
    return str(key), None


def metric_label(key, classes=None):
    """The readable header of a metric key of :func:`skxray.evaluation.compare_models`.

    Parameters
    ----------
    key : str
        E.g. ``"balanced_accuracy"`` or ``"sensitivity_Covid-19"`` (with or
        without a ``mean_`` prefix).
    classes : list or None, default=None
        The class labels, to tell ``ppv_<class>`` apart from other keys.

    Returns
    -------
    str
        E.g. "Balanced accuracy" or "COVID-19 sensitivity"; unknown keys
        with underscores replaced by spaces.

    Examples
    --------
    >>> from skxray.report import metric_label
    >>> metric_label("mean_balanced_accuracy"), metric_label("sensitivity_Covid-19")
    ('Balanced accuracy', 'COVID-19 sensitivity')
    >>> metric_label("ppv_Normal"), metric_label("roc_auc"), metric_label("my_score")
    ('Normal PPV', 'ROC AUC', 'my score')
    """
    key = str(key)
    if key.startswith(("mean_", "std_")):
        key = key.split("_", 1)[1]
    base, cls = _split_metric(key, classes)
    if cls is not None:
        return f"{class_label(cls)} {_METRIC_LABELS[base]}"
    if base in _METRIC_LABELS:
        return _METRIC_LABELS[base]
    return base.replace("_", " ")


def _is_missing(value):
    value = as_python_scalar(value)
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_percent(value, spread=None, *, low=None, high=None):
    """A proportion as a percentage with one decimal, with ± spread or an interval.

    Parameters
    ----------
    value : float
        A proportion in [0, 1] (NaN or None: "n/a").
    spread : float or None, default=None
        A standard deviation (proportion), shown as "± x".
    low, high : float or None, default=None
        Bounds of an interval (proportions), shown as "(low–high)".

    Returns
    -------
    str

    Examples
    --------
    >>> from skxray.report import format_percent
    >>> format_percent(0.99178, 0.011644), format_percent(1.0, 0.0)
    ('99.2 ± 1.2', '100.0 ± 0.0')
    >>> format_percent(0.9, low=0.851, high=0.95), format_percent(float("nan"))
    ('90.0 (85.1–95.0)', 'n/a')
    """
    if _is_missing(value):
        return "n/a"
    text = f"{100 * float(value):.1f}"
    if not _is_missing(spread):
        text += f" ± {100 * float(spread):.1f}"
    if not _is_missing(low) and not _is_missing(high):
        text += f" ({100 * float(low):.1f}–{100 * float(high):.1f})"
    return text


def _format_metric(base, mean, std=None):
    """One cell of the comparison table: percentages, Brier score or seconds."""
    if base in _PERCENT_METRICS:
        return format_percent(mean, std)
    if _is_missing(mean):
        return "n/a"
    digits = 3 if base == "brier" else (2 if float(mean) < 10 else 0)
    text = f"{float(mean):.{digits}f}"
    if not _is_missing(std):
        text += f" ± {float(std):.{digits}f}"
    return text


def mean_interval(mean, std, n_splits, level=0.95):
    """A t interval of the mean of ``n_splits`` fold values, clipped to [0, 1].

    ``std`` is the population standard deviation over the folds (``ddof=0``,
    as in :func:`skxray.evaluation.compare_models`), so the standard error is
    ``std / sqrt(n_splits - 1)``.

    Returns
    -------
    (low, high) : tuple of float
        NaN when fewer than two folds or a value is missing.

    Examples
    --------
    >>> from skxray.report import mean_interval
    >>> low, high = mean_interval(0.9, 0.02, 5)
    >>> round(low, 4), round(high, 4)
    (0.8722, 0.9278)
    >>> mean_interval(0.99, 0.02, 3)[1]
    1.0
    """
    return fold_mean_interval(mean, std, n_splits, level)


def _comparison_metrics(table):
    """The metric names of a compare_models table (``mean_<m>`` with a ``std_<m>``)."""
    columns = [str(c) for c in table.columns]
    return [c[5:] for c in columns if c.startswith("mean_") and f"std_{c[5:]}" in columns]


def _main_columns(table):
    """The metrics of the comparison table shown up front, in display order."""
    available = _comparison_metrics(table)
    classes = table.attrs.get("classes")
    chosen = []
    for base in _MAIN_METRICS:
        if base in _PER_CLASS_KEYS:
            chosen += [m for m in available if _split_metric(m, classes) [0] == base
                       and _split_metric(m, classes)[1] is not None]
        elif base in available:
            if base == "ood_rate" and table[f"mean_{base}"].isna().all():
                continue
            chosen.append(base)
    return chosen


def _best_rows(table, metric):
    """Index labels holding the best mean of ``metric`` (ties all count)."""
    values = pd.to_numeric(table[f"mean_{metric}"], errors="coerce")
    if values.isna().all() or metric == "ood_rate":
        return set()
    best = values.min() if metric in _LOWER_IS_BETTER else values.max()
    return set(values.index[np.isclose(values, best, rtol=0, atol=1e-12)])


def comparison_frame(table, *, columns=None, mark_best=False):
    """The comparison table as strings, with readable headers.

    Parameters
    ----------
    table : pandas.DataFrame
        What :func:`skxray.evaluation.compare_models` returned.
    columns : list of str or None, default=None
        Metrics to show (without ``mean_``); None: the main ones (balanced
        accuracy, accuracy, ROC AUC, sensitivity and PPV of each class,
        Brier score, share flagged out of distribution).
    mark_best : bool, default=False
        Append ``" *"`` to the best value of each column.

    Returns
    -------
    pandas.DataFrame
        One row per model; percentages with one decimal "mean ± std".

    Examples
    --------
    >>> import pandas as pd
    >>> from skxray.report import comparison_frame
    >>> table = pd.DataFrame({"mean_balanced_accuracy": [0.99178, 0.9], "std_balanced_accuracy":
    ...     [0.011644, 0.05]}, index=pd.Index(["cnn", "fnn"], name="model"))
    >>> frame = comparison_frame(table, mark_best=True)
    >>> frame.columns.tolist(), frame["Balanced accuracy"].tolist()
    (['Balanced accuracy'], ['99.2 ± 1.2 *', '90.0 ± 5.0'])
    """
    columns = _main_columns(table) if columns is None else list(columns)
    classes = table.attrs.get("classes")
    shown = pd.DataFrame(index=table.index)
    for metric in columns:
        best = _best_rows(table, metric) if mark_best else set()
        base = _split_metric(metric, classes)[0]
        shown[metric_label(metric, classes)] = [
            _format_metric(base, table.at[row, f"mean_{metric}"], table.at[row, f"std_{metric}"])
            + (" *" if row in best else "")
            for row in table.index
        ]
    return shown


def _per_fold_frame(per_fold, metrics, classes):
    """One row per (model, fold): each metric's value in that fold, formatted."""
    rows = []
    for model, values in per_fold.items():
        n_folds = max((len(v) for v in values.values()), default=0)
        for fold in range(n_folds):
            row = {"model": model, "fold": str(fold + 1)}
            for metric in metrics:
                folds = values.get(metric, [])
                value = folds[fold] if fold < len(folds) else None
                row[metric_label(metric, classes)] = _format_metric(
                    _split_metric(metric, classes)[0], value
                )
            rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(table, width=100):
    """The comparison table as plain text no wider than ``width`` characters.

    Columns are dropped from the right (least important first) until the
    table fits; the header of each column is wrapped over two lines.

    Examples
    --------
    >>> import pandas as pd
    >>> from skxray.report import format_comparison
    >>> folds = {"cnn": [0.98, 1.0, 0.995], "fnn": [0.85, 0.95, 0.9]}
    >>> table = pd.DataFrame(
    ...     {"mean_balanced_accuracy": {k: sum(v) / 3 for k, v in folds.items()},
    ...      "std_balanced_accuracy": {k: pd.Series(v).std(ddof=0) for k, v in folds.items()}})
    >>> table.index.name = "model"
    >>> print(format_comparison(table))
    model  Balanced
           accuracy (%)
    -----  ------------
    cnn    99.2 ± 0.8 *
    fnn    90.0 ± 4.1
    * best per column; mean ± std over the folds.
    """
    classes = table.attrs.get("classes")
    columns = _main_columns(table)
    while True:
        frame = comparison_frame(table, columns=columns, mark_best=True)
        heads = []
        for metric, label in zip(columns, frame.columns, strict=True):
            base = _split_metric(metric, classes)[0]
            label = label + (" (%)" if base in _PERCENT_METRICS else "")
            first, _, second = label.partition(" ") if " " in label else (label, "", "")
            heads.append((first, second))
        name = str(table.index.name or "model")
        rows = [[str(i) for i in frame.index]] + [frame[c].tolist() for c in frame.columns]
        head_rows = [(name, "")] + heads
        widths = [
            max(len(h[0]), len(h[1]), *(len(v) for v in col))
            for h, col in zip(head_rows, rows, strict=True)
        ]
        total = sum(widths) + 2 * (len(widths) - 1)
        if total <= width or len(columns) <= 1:
            break
        columns = columns[:-1]
    lines = [
        "  ".join(h[0].ljust(w) for h, w in zip(head_rows, widths, strict=True)),
        "  ".join(h[1].ljust(w) for h, w in zip(head_rows, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r in range(len(frame)):
        lines.append("  ".join(col[r].ljust(w) for col, w in zip(rows, widths, strict=True)))
    lines.append("* best per column; mean ± std over the folds.")
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class Section:
    """One section of a :class:`Report`, as :meth:`Report._add` stores it.

    Attributes
    ----------
    anchor : str
        The ``id`` of its ``<section>``, unique in the page (the link target).
    title : str
        Its ``<h2>`` heading, as plain text.
    body : str
        Its content, as HTML (escaped when it was made).
    rank : int
        Where its kind goes in the page: a value of :attr:`Report.ORDER`.
    index : int
        The order of the calls, which places sections of the same rank.
    fold : bool
        Whether it is a folded ``<details>`` block of the appendix.
    """

    anchor: str
    title: str
    body: str
    rank: int
    index: int
    fold: bool = False

    def to_html(self):
        """The ``<section>``, with its heading in a ``<summary>`` when folded."""
        heading = f"<h2>{_esc(self.title)}</h2>"
        if self.fold:
            inner = f"<details><summary>{heading}</summary>\n{self.body}\n</details>"
        else:
            inner = f"{heading}\n{self.body}"
        return f'<section id="{_esc(self.anchor)}">\n{inner}\n</section>'


@dataclass(frozen=True)
class Verdict:
    """A verdict badge of the summary, as :meth:`Report.add_verdict` stores it.

    Attributes
    ----------
    label : str
        What was checked, e.g. "Audit".
    verdict : {"ok", "warning", "fail", "info"}
        The badge's colour.
    text : str
        The line after the badge.
    anchor : str or None
        Id of the section with the detail, linked from the line.
    """

    label: str
    verdict: str
    text: str = ""
    anchor: str | None = None

    def to_html(self):
        """The ``<dt>``/``<dd>`` pair of the summary's list."""
        link = f' <a href="#{_esc(self.anchor)}">details</a>' if self.anchor else ""
        return (
            f"<dt>{_esc(self.label)}</dt><dd>{_badge(self.verdict)} {_esc(self.text)}{link}</dd>"
        )


class Report:
    """Collect the results of an experiment into one self-contained HTML file.

    Add sections with the ``add_*`` methods (each returns the report, so
    calls can be chained), then :meth:`save` it. Every section is a
    ``<section id="...">`` with an ``<h2>`` title, placed by kind whatever
    the order of the calls: the summary (when there is something to
    summarise), results, figures (in the order added), data, then the
    folded appendix (metrics, parameters, ``fold=True`` sections and a final
    "Software versions": Python, skxray, torch, torchvision, skorch,
    scikit-learn, numpy, ... and the platform). A short navigation bar and
    the ``note`` are added automatically. Figures are rendered to PNG when added, embedded as
    base64 ``data:`` URIs, and closed; all text is HTML-escaped; no
    external CSS, script, font or URL is used, so the file opens in a
    browser without network access.

    Parameters
    ----------
    title : str, default="skxray report"
        Title of the page.
    note : str or None, default=None
        A highlighted remark under the title, e.g. "Run on synthetic
        phantoms, not real X-rays".

    Attributes
    ----------
    title : str
        Title of the page.
    note : str or None
        The remark under the title.

    See Also
    --------
    skxray.evaluation.compare_models : The table of :meth:`add_comparison`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skxray.report import Report
    >>> report = Report("Demo", note="Synthetic data.")
    >>> report = report.add_text("Aim", "Compare a CNN with an FNN.")
    >>> report = report.add_metrics("CNN", {"accuracy": 0.9, "roc_auc": 0.95})
    >>> report.sections
    [('aim', 'Aim'), ('metrics-cnn', 'Metrics: CNN'), ('software-versions', 'Software versions')]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = report.save(pathlib.Path(tmp) / "out" / "report.html")
    ...     print(path.name, sorted(p.name for p in path.parent.iterdir()))
    report.html ['metrics.json', 'report.html']
    """

    #: Where each kind of section goes: the page reads summary, results,
    #: figures, data, then the folded appendix (see :meth:`to_html`).
    ORDER = {"results": 10, "external": 15, "audit": 20, "figures": 30, "data": 40,
             "appendix": 90}

    def __init__(self, title="skxray report", note=None):
        self.title = title
        self.note = note
        self._sections = []  # Section, in the order added
        self._ids = {_VERSIONS_ID, _SUMMARY_ID, "appendix-title"}
        self._metrics = {}
        self._context = {}  # label -> text, shown in the summary
        self._caveats = []
        self._verdicts = []  # Verdict, in the order added
        self._comparison = None  # the compare_models table
        self._per_fold = {}  # its attrs["per_fold"], JSON-ready: model -> metric -> folds
        self._dataset = None  # facts of add_dataset_summary
        self._extra_summary = []  # html lines added by add_external_validation & co.

    def __repr__(self):
        return f"Report(title={self.title!r}, n_sections={len(self._sections)})"

    # ------------------------------------------------------------ plumbing
    def _ordered(self):
        return sorted(self._sections, key=lambda s: (s.rank, s.index))

    def _has_summary(self):
        return bool(self._context or self._comparison is not None or self._verdicts
                    or self._dataset or self._extra_summary)

    @property
    def sections(self):
        """The ``(id, title)`` pair of each section, in page order.

        A list of tuples of str: ``("summary", "Summary")`` first when there
        is something to summarise, then the results, figures and data
        sections, then the folded appendix (metrics, parameters), ending
        with the automatic ``("software-versions", "Software versions")``.
        """
        head = [(_SUMMARY_ID, _SUMMARY_TITLE)] if self._has_summary() else []
        body = [(s.anchor, s.title) for s in self._ordered()]
        return head + body + [(_VERSIONS_ID, _VERSIONS_TITLE)]

    @property
    def metrics(self):
        """The metrics added with :meth:`add_metrics`, by name.

        A JSON-ready copy (dict), as written to ``metrics.json``. Each model
        of :meth:`add_comparison` whose table carries per-fold values gets
        them under ``[name]["per_fold"]`` (``{metric: [value per fold]}``,
        null where undefined), beside what :meth:`add_metrics` stored.
        """
        merged = json.loads(json.dumps(self._metrics))
        for name, values in self._per_fold.items():
            merged.setdefault(name, {})["per_fold"] = json.loads(json.dumps(values))
        return merged

    def _add(self, title, body, *, order="figures", fold=False):
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title must be a non-empty string; got {title!r}.")
        base = _slug(title)
        sid, k = base, 2
        while sid in self._ids:
            sid, k = f"{base}-{k}", k + 1
        self._ids.add(sid)
        rank = self.ORDER["appendix"] if fold else self.ORDER[order]
        self._sections.append(
            Section(sid, title, body, rank, len(self._sections), fold=rank >= self.ORDER["appendix"])
        )
        return self

    def _add_plot(self, kind, name, display, kwargs, caption=None):
        """Add ``display.from_predictions(**kwargs, name=name)`` as section "<kind>: <name>"."""
        self._check_name(name)
        fig = display.from_predictions(**kwargs, name=name).figure_
        return self._add(f"{kind}: {name}", _figure_html(fig, name, caption))

    @staticmethod
    def _check_name(name):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string; got {name!r}.")
        return name

    # ------------------------------------------------------------ summary
    def describe(self, *, data=None, protocol=None, models=None, caveats=None, **facts):
        """Say what was run, on which data and how: the first lines of the summary.

        Parameters
        ----------
        data : str or None, default=None
            The data, e.g. "240 synthetic phantoms (skxray.make_phantom_cxr)"
            or a folder name. Counts of images, classes and patients and the
            image size come from :meth:`add_dataset_summary` when it is used.
        protocol : str or None, default=None
            How the figures were obtained, e.g. "3-fold cross-validation
            grouped by patient".
        models : str or None, default=None
            The models compared, e.g. "CNN, FNN, ResNet-50 and their soft vote".
        caveats : str or list of str or None, default=None
            What the numbers do not show (phantoms, random initialisation,
            source confounding, ...). One sentence each; they close the
            summary. Without any, a generic sentence about cross-validation
            within one data set is shown.
        **facts : str
            Further lines of the summary, by label (underscores become
            spaces), e.g. ``image_size="64 × 64 px"``.

        Returns
        -------
        self : Report
            The report; the summary opens with these lines.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().describe(data="phantoms", protocol="3-fold CV",
        ...                            caveats="Phantoms are not X-rays.")
        >>> page = report.to_html()
        >>> report.sections[0], "Phantoms are not X-rays." in page
        (('summary', 'Summary'), True)
        """
        for label, value in (("Data", data), ("Protocol", protocol), ("Models", models),
                             *((k.replace("_", " ").capitalize(), v) for k, v in facts.items())):
            if value is not None:
                self._context[label] = str(value)
        if caveats is not None:
            self._caveats += [caveats] if isinstance(caveats, str) else [str(c) for c in caveats]
        return self

    def add_verdict(self, label, verdict, text="", *, anchor=None):
        """Show a coloured verdict badge in the summary.

        :meth:`add_audit` and :meth:`add_external_validation` call it; use it
        for any other check with a verdict.

        Parameters
        ----------
        label : str
            What was checked, e.g. "Audit" or "Shift test".
        verdict : {"ok", "warning", "fail", "info"}
            Green, amber, red or grey.
        text : str, default=""
            One line after the badge.
        anchor : str or None, default=None
            Id of the section with the detail, linked from the badge line.

        Returns
        -------
        self : Report
            The report, with a badge for the verdict in its summary.

        Examples
        --------
        >>> from skxray.report import Report
        >>> page = Report().add_verdict("Shift test", "warning", "Sources differ.").to_html()
        >>> 'class="badge badge-warning"' in page
        True
        """
        verdict = str(verdict).lower()
        if verdict not in BADGE_COLOURS:
            raise ValueError(f"verdict must be one of {sorted(BADGE_COLOURS)}; got {verdict!r}.")
        self._verdicts.append(Verdict(self._check_name(label), verdict, str(text), anchor))
        return self

    def _summary_html(self):
        rows = dict(self._context)
        if self._dataset:
            d = self._dataset
            facts = f"{d['n']} images in {d['n_classes']} classes ({d['counts']})"
            if d.get("patients"):
                facts += f", {d['patients']} patients"
            facts += f"; {d['size']}"
            rows["Data"] = f"{rows['Data']}: {facts}" if "Data" in rows else facts
        parts = [f'<section id="{_SUMMARY_ID}">', f"<h2>{_SUMMARY_TITLE}</h2>"]
        headline = self._headline()
        if headline:
            parts.append(f'<p class="headline">{headline}</p>')
        parts += self._extra_summary
        if rows or self._verdicts:
            parts.append("<dl>")
            order = ["Data", "Protocol", "Models"]
            for label in sorted(rows, key=lambda k: order.index(k) if k in order else 9):
                parts.append(f"<dt>{_esc(label)}</dt><dd>{_esc(rows[label])}</dd>")
            parts += [v.to_html() for v in self._verdicts]
            parts.append("</dl>")
        caveats = self._caveats or [
            "Cross-validation estimates how the models do on more images like these; it says "
            "nothing about other hospitals, scanners or populations."
        ]
        parts.append(
            f'<p class="caveat"><strong>Not shown by these numbers:</strong> '
            f"{_esc(' '.join(caveats))}</p>"
        )
        parts.append("</section>")
        return "\n".join(parts)

    def _headline(self):
        """"Best: CNN, balanced accuracy 99.2 % (95 % CI ...), ahead of ... by ..." or ""."""
        table = self._comparison
        if table is None or len(table) == 0:
            return ""
        metric = "balanced_accuracy" if "mean_balanced_accuracy" in table else None
        if metric is None:
            metrics = _comparison_metrics(table)
            if not metrics:
                return ""
            metric = metrics[0]
        n_splits = table.attrs.get("n_splits")
        means = pd.to_numeric(table[f"mean_{metric}"], errors="coerce")
        if means.isna().all():
            return ""
        ranked = means.sort_values(ascending=metric in _LOWER_IS_BETTER, kind="stable").dropna()
        label = metric_label(metric).lower()

        def with_ci(name):
            mean, std = table.at[name, f"mean_{metric}"], table.at[name, f"std_{metric}"]
            low, high = mean_interval(mean, std, n_splits)
            if math.isnan(low):
                return f"{format_percent(mean)} %"
            return f"{format_percent(mean)} % (95 % CI {format_percent(low)}–{format_percent(high)})"

        best = ranked.index[0]
        text = f"Best: <strong>{_esc(best)}</strong>, {_esc(label)} {_esc(with_ci(best))}"
        if len(ranked) > 1:
            second = ranked.index[1]
            gap = 100 * abs(ranked.iloc[0] - ranked.iloc[1])
            text += f"; {gap:.1f} points ahead of {_esc(second)}, {_esc(with_ci(second))}"
            lo1 = mean_interval(table.at[best, f"mean_{metric}"], table.at[best, f"std_{metric}"],
                                n_splits)[0]
            hi2 = mean_interval(table.at[second, f"mean_{metric}"],
                                table.at[second, f"std_{metric}"], n_splits)[1]
            if not math.isnan(lo1) and lo1 <= hi2:
                text += ", within the uncertainty (the intervals overlap)"
        return text + "."

    # ------------------------------------------------------------ generic sections
    def add_text(self, title, text, *, fold=False):
        """Add a section of plain text.

        Parameters
        ----------
        title : str
            Section title.
        text : str
            The text; blank lines separate paragraphs. It is escaped, so
            markup shows as typed.
        fold : bool, default=False
            If True, the text goes to the folded appendix.

        Returns
        -------
        self : Report
            The report, with the text added.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_text("Aim", "Compare <b>models</b> & more.")
        >>> "Compare &lt;b&gt;models&lt;/b&gt; &amp; more." in report.to_html()
        True
        >>> report.sections[0]
        ('aim', 'Aim')
        """
        return self._add(title, _paragraphs(text), fold=fold)

    def add_figure(self, title, fig, *, caption=None, fold=False):
        """Add a matplotlib figure, embedded as a PNG image.

        Parameters
        ----------
        title : str
            Section title.
        fig : matplotlib.figure.Figure
            The figure. It is rendered now and closed (when pyplot manages it)
            to free memory; do not draw on it afterwards.
        caption : str or None, default=None
            Text under the image.
        fold : bool, default=False
            Put the figure in the folded appendix instead of the body.

        Returns
        -------
        self : Report
            The report, with ``fig`` embedded as a PNG image.

        Examples
        --------
        >>> from matplotlib.figure import Figure
        >>> from skxray.report import Report
        >>> fig = Figure()
        >>> _ = fig.subplots().plot([0, 1], [1, 0])
        >>> Report().add_figure("A line", fig, caption="Decreasing.").sections[0]
        ('a-line', 'A line')
        """
        return self._add(title, _figure_html(fig, title, caption), fold=fold)

    def add_table(self, title, table, *, index=True, fold=False):
        """Add a table.

        Parameters
        ----------
        title : str
            Section title.
        table : pandas.DataFrame, pandas.Series or dict
            The table. A dict of scalars becomes a two-column table
            (name, value); another dict is read by :class:`pandas.DataFrame`.
        index : bool, default=True
            Whether to show the index (row labels).
        fold : bool, default=False
            Put the table in the folded appendix (e.g. raw values).

        Returns
        -------
        self : Report
            The report, with the table added (as HTML, escaped).

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_table("Split", {"train": 80, "test": 20})
        >>> "<td>80</td>" in report.to_html()
        True
        """
        return self._add(title, _table_html(_as_frame(table, "table"), index=index), fold=fold)

    # ------------------------------------------------------------ data
    def add_dataset_summary(
        self,
        X,
        y,
        *,
        groups=None,
        image_sizes=None,
        n_images=6,
        random_state=0,
        title="Dataset summary",
    ):
        """Add a summary of the images: class counts, image sizes and a sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            The images, or their files (sizes are then read from the file
            headers, and only the sampled images are decoded).
        y : array-like of shape (n_samples,)
            Labels.
        groups : array-like of shape (n_samples,) or None, default=None
            Patient of each image; the number of patients per class is
            added to the table.
        image_sizes : array-like of shape (n_samples, 2) or None, default=None
            (height, width) of each original image, e.g. before resizing; by
            default the sizes of ``X``. A histogram is drawn when sizes vary.
        n_images : int, default=6
            Number of images in the sample grid (see
            :func:`skxray.evaluation.plot_image_grid`); 0 for none.
        random_state : int, RandomState instance or None, default=0
            Seeds the sample.
        title : str, default="Dataset summary"
            Section title.

        Returns
        -------
        self : Report
            The report, with counts per class and a grid of sample images.

        Raises
        ------
        ValueError
            If ``y``, ``groups`` or ``image_sizes`` do not have one entry per
            image.

        Examples
        --------
        >>> from skxray.datasets import make_phantom_cxr
        >>> from skxray.report import Report
        >>> X, y, groups = make_phantom_cxr(12, image_size=16, random_state=0, return_groups=True)
        >>> report = Report().add_dataset_summary(X, y, groups=groups, n_images=3)
        >>> "12 images in 2 classes" in report.to_html()
        True
        """
        y = np.asarray(y, dtype=object).reshape(-1)
        n = len(X)
        if len(y) != n:
            raise ValueError(f"y has {len(y)} labels but X has {n} images.")
        table, counts, total = _class_counts(y, groups)

        if image_sizes is None:
            sizes = _image_sizes_of(X)
        else:
            sizes = np.asarray(image_sizes)
            if sizes.ndim != 2 or sizes.shape != (n, 2):
                raise ValueError(
                    f"image_sizes must have shape (n_samples, 2) = ({n}, 2) of (height, width); "
                    f"got {sizes.shape}."
                )
        size_table = pd.DataFrame(
            {
                "min": sizes.min(axis=0),
                "median": np.median(sizes, axis=0),
                "max": sizes.max(axis=0),
            },
            index=pd.Index(["height (px)", "width (px)"], name="image size"),
        )
        n_distinct = len({tuple(s) for s in sizes.tolist()})
        intro = f"{n} images in {len(counts)} classes"
        if groups is not None:
            intro += f" from {total['patients']} patients"
        if n_distinct == 1:
            intro += f"; all images are {sizes[0][0]} x {sizes[0][1]} pixels (height x width)."
        else:
            intro += f"; {n_distinct} distinct image sizes."
        parts = [f"<p>{_esc(intro)}</p>", "<h3>Class counts</h3>", _table_html(table)]
        parts += ["<h3>Image sizes</h3>", _table_html(size_table)]
        if n_distinct > 1:
            fig = ImageSizesDisplay.from_sizes(sizes[:, 0], sizes[:, 1]).figure_
            parts.append(_figure_html(fig, "Histogram of image sizes"))
        if n_images:
            parts.append("<h3>Sample images</h3>")
            fig = ImageGridDisplay.from_images(X, y, n=n_images, random_state=random_state).figure_
            parts.append(_figure_html(fig, "Sample images with their labels", width=420))
        if n_distinct == 1:
            size_text = f"{sizes[0][0]} × {sizes[0][1]} px"
        else:
            size_text = f"{n_distinct} image sizes, median {int(np.median(sizes[:, 0]))} × " \
                        f"{int(np.median(sizes[:, 1]))} px"
        self._dataset = {
            "n": n,
            "n_classes": len(counts),
            "counts": ", ".join(f"{c} {k}" for c, k in counts.items()),
            "patients": total.get("patients"),
            "size": size_text,
        }
        return self._add(title, "".join(parts), order="data")

    # ------------------------------------------------------------ models
    def add_learning_curves(self, name, estimator):
        """Add the loss and accuracy curves of a fitted skxray classifier.

        Parameters
        ----------
        name : str
            Model name; the section is titled "Learning curves: <name>".
        estimator : fitted skxray classifier or list of dict
            The classifier (or its ``history_``); see
            :func:`skxray.evaluation.plot_learning_curves`.

        Returns
        -------
        self : Report
            The report, with the loss (and score) of each epoch plotted.

        Examples
        --------
        >>> from skxray.report import Report
        >>> history = [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5}]
        >>> Report().add_learning_curves("CNN", history).sections[0]
        ('learning-curves-cnn', 'Learning curves: CNN')
        """
        self._check_name(name)
        fig = _learning_curves(estimator).figure_
        caption = "The dashed line marks the best epoch (lowest validation loss, else train loss)."
        return self._add(f"Learning curves: {name}", _figure_html(fig, name, caption))

    def add_comparison(self, table, *, title="Model comparison"):
        """Add the table of :func:`skxray.evaluation.compare_models`.

        One table with readable headers ("Balanced accuracy", "COVID-19
        sensitivity"), percentages with one decimal as "mean ± std" over the
        folds and the best value of each column in bold. The best model, with
        95 % intervals, heads the summary. Times, specificity, NPV and F1
        (when present) go to a folded table of the appendix, and the raw
        values stay in the DataFrame. The value of each fold, when
        ``table.attrs["per_fold"]`` holds them (as from ``compare_models``),
        goes to a folded "Per-fold values" section of the appendix and to
        ``metrics.json`` (see :attr:`metrics`). Tables without
        ``mean_``/``std_`` pairs are shown as they are.

        Parameters
        ----------
        table : pandas.DataFrame
            One row per model; the number of folds, the classes and the
            positive class are read from ``table.attrs`` when present.
        title : str, default="Model comparison"
            Section title.

        Returns
        -------
        self : Report
            The report, with the comparison table (and its folded per-fold values).

        Examples
        --------
        >>> import pandas as pd
        >>> from skxray.report import Report
        >>> table = pd.DataFrame({"mean_accuracy": [0.9], "std_accuracy": [0.05]}, index=["CNN"])
        >>> "90.0 ± 5.0" in Report().add_comparison(table).to_html()
        True
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame; got {type(table).__name__}.")
        attrs = table.attrs or {}
        metrics = _comparison_metrics(table)
        if not metrics:
            return self._add(title, _table_html(table), order="results")
        self._comparison = table
        classes = attrs.get("classes")
        main = _main_columns(table)
        head = "".join(
            f'<th>{_esc(metric_label(m, classes))}'
            f'{" (%)" if _split_metric(m, classes)[0] in _PERCENT_METRICS else ""}</th>'
            for m in main
        )
        rows = []
        for name in table.index:
            cells = []
            for m in main:
                best = name in _best_rows(table, m) and len(table) > 1
                text = _format_metric(
                    _split_metric(m, classes)[0], table.at[name, f"mean_{m}"],
                    table.at[name, f"std_{m}"],
                )
                cells.append(f'<td{" class=best" if best else ""}>{_esc(text)}</td>')
            rows.append(f'<tr><th class="text">{_esc(name)}</th>{"".join(cells)}</tr>')
        legend = "Mean ± standard deviation over the"
        legend += f" {attrs['n_splits']} cross-validation folds" if "n_splits" in attrs else " folds"
        legend += "; bold: best per column (lowest for the Brier score)"
        if "positive_label" in attrs:
            legend += f"; ROC AUC and Brier score for {class_label(attrs['positive_label'])} vs rest"
        if "ood_rate" in main:
            legend += "; Flagged OOD: share of test images the model's detector flagged"
        legend += "."
        body = (
            f'<div class="table-wrap"><table class="data comparison"><thead><tr>'
            f'<th class="text">{_esc(table.index.name or "model")}</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div><p class="legend">{_esc(legend)}</p>'
        )
        rest = [m for m in metrics if m not in main]
        if rest:
            extra = comparison_frame(table, columns=rest)
            body += (
                "<details><summary>Other metrics and times per fold</summary>"
                + _table_html(extra)
                + "</details>"
            )
        self._add(title, body, order="results")
        per_fold = attrs.get("per_fold")
        if isinstance(per_fold, Mapping) and per_fold:
            self._per_fold = jsonable(per_fold, where="table.attrs['per_fold']")
            frame = _per_fold_frame(self._per_fold, main, classes)
            self._add(
                "Per-fold values",
                _table_html(frame, index=False)
                + '<p class="legend">The value of each metric in each cross-validation fold, '
                "from which the comparison's mean ± standard deviation is computed; also in "
                "metrics.json under each model's \"per_fold\".</p>",
                fold=True,
            )
        return self

    def add_confusion_matrix(self, name, y_true, y_pred, *, labels=None, normalize=None):
        """Add a confusion matrix.

        Parameters
        ----------
        name : str
            Model name; the section is titled "Confusion matrix: <name>".
        y_true : array-like of shape (n_samples,)
            True labels.
        y_pred : array-like of shape (n_samples,)
            Predicted labels (e.g. out-of-fold predictions).
        labels : array-like or None, default=None
            Order of the classes; None sorts the labels found.
        normalize : {"true", "pred", "all"} or None, default=None
            As in :func:`skxray.evaluation.plot_confusion_matrix`.

        Returns
        -------
        self : Report
            The report, with the matrix of counts (or fractions) drawn.

        Examples
        --------
        >>> from skxray.report import Report
        >>> Report().add_confusion_matrix("CNN", ["a", "a", "b"], ["a", "b", "b"]).sections[:1]
        [('confusion-matrix-cnn', 'Confusion matrix: CNN')]
        """
        return self._add_plot(
            "Confusion matrix", name, ConfusionMatricesDisplay,
            dict(y_true=y_true, y_pred=y_pred, labels=labels, normalize=normalize),
            caption="Rows: true class; columns: predicted class.",
        )

    def add_roc(self, name, y_true, y_proba, classes=None, *, positive_label=None):
        """Add ROC curves (positive class, or one-vs-rest for 3+ classes).

        Parameters
        ----------
        name : str
            Model name, in the section title "ROC curve: <name>" and the legend.
        y_true : array-like of shape (n_samples,)
            True labels.
        y_proba : array-like of shape (n_samples, n_classes)
            Probabilities (e.g. out-of-fold ones from ``compare_models``).
        classes : array-like of shape (n_classes,) or None, default=None
            Labels of the columns; None sorts the labels of ``y_true``.
        positive_label : object, default=None
            See :func:`skxray.evaluation.plot_roc`.

        Returns
        -------
        self : Report
            The report, with the ROC curves drawn.

        Examples
        --------
        >>> from skxray.report import Report
        >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
        >>> report = Report().add_roc("CNN", ["Covid-19", "Normal"] * 2, proba)
        >>> report.sections[0]
        ('roc-curve-cnn', 'ROC curve: CNN')
        """
        return self._add_plot(
            "ROC curve", name, RocCurvesDisplay,
            dict(y_true=y_true, y_proba=y_proba, classes=classes, positive_label=positive_label),
        )

    def add_calibration(
        self,
        name,
        y_true,
        y_proba,
        classes=None,
        *,
        positive_label=None,
        n_bins=5,
        strategy="uniform",
    ):
        """Add reliability (calibration) curves.

        Parameters
        ----------
        name : str
            Model name; the section is titled "Calibration: <name>".
        y_true : array-like of shape (n_samples,)
            True labels, whose frequency per bin is plotted.
        y_proba : array-like of shape (n_samples, n_classes)
            Predicted probabilities, one column per class.
        classes : array-like of shape (n_classes,) or None, default=None
            Labels of the columns; None sorts the labels of ``y_true``.
        positive_label : object, default=None
            See :func:`skxray.evaluation.plot_calibration`.
        n_bins : int, default=5
            Number of probability bins.
        strategy : {"uniform", "quantile"}, default="uniform"
            Bins of equal width or of equal counts.

        Returns
        -------
        self : Report
            The report, with the observed frequency of each bin plotted.

        Examples
        --------
        >>> from skxray.report import Report
        >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
        >>> report = Report().add_calibration("CNN", ["Covid-19", "Normal"] * 2, proba, n_bins=2)
        >>> report.sections[0]
        ('calibration-cnn', 'Calibration: CNN')
        """
        kwargs = dict(y_true=y_true, y_proba=y_proba, classes=classes)
        kwargs.update(positive_label=positive_label, n_bins=n_bins, strategy=strategy)
        return self._add_plot("Calibration", name, ReliabilityDisplay, kwargs)

    def add_gradcam(self, name, estimator, X, y=None, *, n=6, target=None, method="gradcam"):
        """Add Grad-CAM heatmaps of a convolutional classifier over a few images.

        Drawn by :class:`skxray.explain.GradCAMDisplay`. Models it cannot explain
        (the FNNClassifier, which has no convolution; ensembles) get a note
        in place of the figure, so one loop can cover every model.

        Parameters
        ----------
        name : str
            Model name; the section is titled "Grad-CAM: <name>".
        estimator : fitted CNNClassifier or ResNet50Classifier
            The model to explain.
        X : array-like of images or 1-D sequence of file paths
            Images, in the format the estimator was fitted on.
        y : array-like of shape (n_samples,) or None, default=None
            True labels, shown in the titles; the images shown are then
            taken from each class in turn.
        n : int, default=6
            Number of images shown: without ``y`` the first ``n`` of ``X``;
            with ``y`` the first images of each class in turn (so that every
            class appears).
        target : label or None, default=None
            Class whose evidence is mapped; None maps the predicted class.
        method : str, default="gradcam"
            CAM variant, as in :func:`skxray.explain.gradcam`.

        Returns
        -------
        self : Report
            The report, with the heatmaps (or a note of why there are none).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If ``estimator`` is not fitted.
        ValueError
            If ``n`` is not a positive int or ``y`` has another length than
            ``X``.

        Examples
        --------
        >>> from skxray.datasets import make_phantom_cxr
        >>> from skxray.models import CNNClassifier, FNNClassifier
        >>> from skxray.report import Report
        >>> X, y = make_phantom_cxr(10, image_size=16, random_state=0)
        >>> cnn = CNNClassifier(filters=(4,), dense_units=8, max_epochs=1, random_state=0).fit(X, y)
        >>> fnn = FNNClassifier(hidden_layer_sizes=(8,), max_epochs=1, random_state=0).fit(X, y)
        >>> report = Report().add_gradcam("CNN", cnn, X, y, n=2).add_gradcam("FNN", fnn, X)
        >>> html = report.to_html()
        >>> html.count("<img "), "Skipped: " in html
        (1, True)
        """
        self._check_name(name)
        title = f"Grad-CAM: {name}"
        try:  # imported here: without a working Grad-CAM the report shows a note instead
            from skxray.explain import GradCAMDisplay
        except ImportError as exc:
            return self._add(title, f'<p class="skipped">Grad-CAM is unavailable: {_esc(exc)}</p>')
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}.")
        if y is not None:
            X, y = _gradcam_sample(X, y, n)
        try:
            fig = GradCAMDisplay.from_estimator(estimator, X, target, y=y, n=n,
                                                method=method).figure_
        except TypeError as exc:  # no convolutional layer, or not a skxray classifier
            return self._add(title, f'<p class="skipped">Skipped: {_esc(exc)}</p>')
        caption = "Warm colours: regions that raised the score of the class shown."
        return self._add(title, _figure_html(fig, name, caption))

    # ------------------------------------------------------------ grouped figures
    def add_cv_figures(self, y_true, predictions, classes=None, *, positive_label=None,
                       n_bins=5, title="Cross-validated predictions"):
        """Add ROC and calibration curves of every model overlaid, and confusion matrices in a row.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        predictions : dict of str to array-like of shape (n_samples, n_classes)
            Out-of-fold probabilities of each model, e.g. the second value of
            ``compare_models(..., return_predictions=True)``. Rows of NaN
            (images in no test fold) are left out.
        classes : array-like or None, default=None
            Labels of the columns; None sorts the labels of ``y_true``.
        positive_label : object, default=None
            Class whose ROC and calibration curves are drawn (vs the rest);
            see :func:`skxray.evaluation.default_positive_label`.
        n_bins : int, default=5
            Probability bins of the calibration curves.
        title : str, default="Cross-validated predictions"
            Section title.

        Returns
        -------
        self : Report
            The report, with ROC, calibration and confusion figures of all models.

        Examples
        --------
        >>> from skxray.report import Report
        >>> y = ["Covid-19", "Normal"] * 4
        >>> proba = {"CNN": [[0.9, 0.1], [0.3, 0.7]] * 4, "FNN": [[0.6, 0.4], [0.5, 0.5]] * 4}
        >>> html = Report().add_cv_figures(y, proba, n_bins=2).to_html()
        >>> html.count("<img ")
        3
        """
        # One curve per model, in the colour cycle's order (C0, C1, ...).
        roc = RocCurvesDisplay.from_cv_predictions(
            y_true, predictions, classes=classes, positive_label=positive_label
        )
        cal = ReliabilityDisplay.from_cv_predictions(
            y_true, predictions, classes=classes, positive_label=positive_label, n_bins=n_bins
        )
        cms = ConfusionMatricesDisplay.from_cv_predictions(y_true, predictions, classes=classes)
        pos_name = class_label(roc.positive_label)
        roc.ax_.set(title=f"ROC: {pos_name} vs rest", xlabel="1 - specificity",
                    ylabel="sensitivity")
        cal.ax_.set(title=f"Calibration: {pos_name}", xlabel=f"predicted probability of {pos_name}",
                    ylabel=f"observed share of {pos_name}")
        for display in (roc, cal):
            if display.lines_:
                display.ax_.legend(fontsize=8, loc="lower right")
            display.ax_.grid(alpha=0.3)
        body = (
            '<div class="row">'
            + _figure_html(roc.figure_, f"ROC curves of every model, {pos_name} vs rest", width=460)
            + _figure_html(cal.figure_, f"Calibration curves of every model for {pos_name}",
                           width=460)
            + "</div>"
            + _figure_html(
                cms.figure_, "Confusion matrices of every model",
                "Confusion matrices of the out-of-fold predictions: rows true class, "
                "columns predicted class.",
            )
        )
        return self._add(title, body)

    def add_learning_curves_grid(self, estimators, *, title="Learning curves"):
        """Add the learning curves of several fitted models as a grid of small plots.

        Parameters
        ----------
        estimators : dict of str to fitted skxray classifier (or history)
            The models, by name; see
            :func:`skxray.evaluation.plot_learning_curves`.
        title : str, default="Learning curves"
            Section title.

        Returns
        -------
        self : Report
            The report, with every model's curves in one grid.

        Examples
        --------
        >>> from skxray.report import Report
        >>> history = [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5}]
        >>> Report().add_learning_curves_grid({"CNN": history}).to_html().count("<img ")
        1
        """
        figures = []
        for name, estimator in estimators.items():
            fig = _learning_curves(estimator).figure_
            fig.set_size_inches(6.4, 2.6)
            fig.suptitle(name, fontsize=11)
            figures.append(_figure_html(fig, f"Learning curves of {name}", width=560))
        caption = (
            "Loss and validation accuracy per epoch of the final fit on all images; the dashed "
            "line marks the best epoch."
        )
        body = (
            f'<div class="row wide">{"".join(figures)}</div><p class="legend">{_esc(caption)}</p>'
        )
        return self._add(title, body)

    def add_gradcam_gallery(self, estimators, X, y=None, *, n=4, method="gradcam",
                            title="Grad-CAM"):
        """Add Grad-CAM heatmaps of several models as a gallery, titled with predicted and true labels.

        Models without convolutional layers (the FNN, ensembles) are listed
        in one line instead.

        Parameters
        ----------
        estimators : dict of str to fitted classifier
            The models, by name.
        X : array-like of images or 1-D sequence of file paths
            Images, in the format the models were fitted on.
        y : array-like of shape (n_samples,) or None, default=None
            True labels; the images are then taken from each class in turn.
        n : int, default=4
            Images per model.
        method : str, default="gradcam"
            CAM variant, as in :func:`skxray.explain.gradcam`.
        title : str, default="Grad-CAM"
            Section title.

        Returns
        -------
        self : Report
            The report, with one gallery of every model's heatmaps.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}.")
        try:  # imported here: without a working Grad-CAM the report shows a note instead
            from skxray.explain import GradCAMDisplay
        except ImportError as exc:
            return self._add(title, f'<p class="skipped">Grad-CAM is unavailable: {_esc(exc)}</p>')
        if y is not None:
            X, y = _gradcam_sample(X, y, n)
        figures, skipped = [], []
        for name, estimator in estimators.items():
            try:
                fig = GradCAMDisplay.from_estimator(estimator, X, None, y=y, n=min(n, len(X)),
                                                    method=method).figure_
            except TypeError:
                skipped.append(name)
                continue
            fig.set_size_inches(2.1 * min(n, len(X), 4), 2.5 * math.ceil(min(n, len(X)) / 4))
            fig.suptitle(name, fontsize=11)
            figures.append(_figure_html(fig, f"Grad-CAM of {name}", width=540))
        body = f'<div class="row">{"".join(figures)}</div>' if figures else ""
        body += (
            '<p class="legend">Warm colours: regions that raised the score of the predicted '
            'class; each panel gives the prediction and, under it, the true class.'
        )
        if skipped:
            body += f" No map for {_esc(', '.join(skipped))}: no convolutional layer."
        body += "</p>"
        return self._add(title, body)

    def add_external_validation(self, internal, external, *, shift_verdict=None, shift_text="",
                                abstention_rate=None, abstention_reasons=None, figures=(),
                                title="External validation"):
        """Add internal vs external figures side by side, with the shift test's verdict.

        The hook for evaluating a model on a folder from another hospital:
        one table (metric, internal, external, difference), the shift test's
        verdict as a badge in the summary and the abstention rate.

        Parameters
        ----------
        internal, external : dict of str to float or (float, float, float)
            Metrics (proportions) by key, e.g. ``{"balanced_accuracy": 0.95}``
            or ``{"balanced_accuracy": (0.95, 0.91, 0.98)}`` with a 95 %
            interval. Keys of ``internal`` give the rows.
        shift_verdict : {"ok", "warning", "fail"} or None, default=None
            Verdict of the distribution-shift test, shown as a badge.
        shift_text : str, default=""
            One line on the shift test, after the badge.
        abstention_rate : float or None, default=None
            Share of external images the model declined to classify.
        abstention_reasons : dict of str to int or None, default=None
            How many images each part made ``"uncertain"``
            (``external_validation``'s ``abstention_reasons``: ``"lung
            check"``, ``"distance"``, ``"low confidence"``), said after the
            rate.
        figures : sequence of matplotlib Figure or display, default=()
            Shown side by side under the table (e.g. internal and external
            ROC curves). A display of :mod:`skxray.evaluation` (such as
            :class:`~skxray.evaluation.ExternalValidationDisplay`) shows its
            ``figure_``.
        title : str, default="External validation"
            Section title.

        Returns
        -------
        self : Report
            The report, with both evaluations side by side.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_external_validation(
        ...     {"balanced_accuracy": (0.95, 0.91, 0.98)}, {"balanced_accuracy": (0.81, 0.74, 0.87)},
        ...     shift_verdict="fail", shift_text="The new images differ.", abstention_rate=0.12)
        >>> page = report.to_html()
        >>> "95.0 (91.0–98.0)" in page, "badge-fail" in page, "12.0 %" in page
        (True, True, True)
        """

        def split(value):
            if isinstance(value, (tuple, list)):
                return (list(value) + [None, None])[:3]
            return [value, None, None]

        rows = []
        for key, value in internal.items():
            mean_i, lo_i, hi_i = split(value)
            mean_e, lo_e, hi_e = split(external.get(key))
            diff = "n/a" if _is_missing(mean_i) or _is_missing(mean_e) else (
                f"{100 * (float(mean_e) - float(mean_i)):+.1f}")
            rows.append(
                f'<tr><th class="text">{_esc(metric_label(key))}</th>'
                f"<td>{_esc(format_percent(mean_i, low=lo_i, high=hi_i))}</td>"
                f"<td>{_esc(format_percent(mean_e, low=lo_e, high=hi_e))}</td>"
                f"<td>{_esc(diff)}</td></tr>"
            )
        body = (
            '<div class="table-wrap"><table class="data comparison"><thead><tr>'
            '<th class="text">metric (%)</th><th>internal (95 % CI)</th>'
            '<th>external (95 % CI)</th><th>difference (points)</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
        )
        anchor = _slug(title)
        if shift_verdict is not None:
            body += f"<p>Shift test: {_badge(shift_verdict)} {_esc(shift_text)}</p>"
            self.add_verdict("Shift test", shift_verdict, shift_text, anchor=anchor)
        if abstention_rate is not None:
            line = f"{format_percent(abstention_rate)} % of the external images were not classified (abstention)."
            if abstention_reasons:
                line = line[:-1] + (
                    f": {abstention_reasons.get('lung check', 0)} failed the lung check (not an upright "
                    f"frontal chest X-ray to the lung segmenter, or lungs it is unsure of), {abstention_reasons.get('distance', 0)} "
                    f"are unlike the training images (distance), {abstention_reasons.get('low confidence', 0)} "
                    "below min_confidence (an image may have several reasons)."
                )
            body += f"<p>{_esc(line)}</p>"
            self._context["Abstention"] = line
        if figures:
            body += '<div class="row">' + "".join(
                _figure_html(getattr(f, "figure_", f), f"{title} figure {i + 1}", width=540)
                for i, f in enumerate(figures)
            ) + "</div>"
        return self._add(title, body, order="external")

    def add_audit(self, result, *, title=None):
        """Add the findings of a shortcut-learning and leakage audit.

        Lays out the pieces of :meth:`skxray.audit.AuditReport.html_sections`
        as one section: the overview (verdicts, explanations) in view, the
        detail of each check (key figures, plots and tables) folded.

        Parameters
        ----------
        result : skxray.audit.AuditReport
            What :func:`skxray.audit.audit` returned.
        title : str or None, default=None
            Section title; None keeps the audit's own heading ("Shortcut and
            leakage audit").

        Returns
        -------
        self : Report
            The report, with the audit's table and its folded detail.

        Raises
        ------
        TypeError
            If ``result`` has no ``html_sections`` method.

        Examples
        --------
        >>> from skxray.audit import AuditReport, Finding
        >>> from skxray.report import Report
        >>> result = AuditReport([Finding("leakage", "ok", "No patient leakage found.")])
        >>> Report().add_audit(result).sections[:2]  # the verdict also heads the summary
        [('summary', 'Summary'), ('shortcut-and-leakage-audit', 'Shortcut and leakage audit')]
        """
        if not callable(getattr(result, "html_sections", None)):
            raise TypeError(
                "result must be a skxray.audit.AuditReport (with html_sections()); "
                f"got {type(result).__name__}."
            )
        heading = getattr(result, "title", "Shortcut and leakage audit")
        # The overview (facts, verdict, one row per check) stays in view; the
        # per-check detail (figures, plots, tables) folds away.
        pieces = result.html_sections()
        fragment = "\n".join(p.html for p in pieces if not p.detail)
        detail = [p.html for p in pieces if p.detail]
        if detail:
            fragment += (
                "\n<details><summary>Detail of each check</summary>"
                + "\n".join(detail)
                + "</details>"
            )
        title = title or heading
        verdict = str(getattr(result, "verdict", "")).lower()
        if verdict in BADGE_COLOURS:
            findings = list(getattr(result, "findings", []))
            flagged = [str(getattr(f, "title", getattr(f, "name", "?")))
                       for f in findings if getattr(f, "verdict", "ok") != "ok"]
            text = f"{len(findings)} checks"
            text += f"; flagged: {', '.join(flagged)}" if flagged else ", none flagged"
            self.add_verdict("Audit", verdict, text + ".", anchor=_slug(title))
        return self._add(title, fragment, order="audit")

    def add_metrics(self, name, metrics):
        """Add metrics as tables; they are also written to ``metrics.json``.

        Parameters
        ----------
        name : str
            Model (or experiment) name: the section is titled
            "Metrics: <name>" and the metrics are stored under this key of
            ``metrics.json``.
        metrics : dict
            E.g. from :func:`skxray.evaluation.classification_metrics`:
            scalars are shown in one table, ``per_class`` (dict of dicts) as a
            table of classes, ``confusion_matrix`` with ``classes`` as a
            matrix; other nested values as JSON. Numpy types are converted and
            NaN is written as null.

        Returns
        -------
        self : Report
            The report, with folded tables of the metrics.

        Raises
        ------
        ValueError
            If metrics were already added under ``name``.
        TypeError
            If ``metrics`` is not a dict or holds values JSON cannot represent.

        Examples
        --------
        >>> from skxray.evaluation import classification_metrics
        >>> from skxray.report import Report
        >>> m = classification_metrics(["Covid-19", "Normal"], ["Covid-19", "Covid-19"])
        >>> report = Report().add_metrics("CNN", m)
        >>> report.metrics["CNN"]["accuracy"], report.metrics["CNN"]["per_class"]["Normal"]["ppv"]
        (0.5, None)
        """
        self._check_name(name)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict; got {type(metrics).__name__}.")
        if name in self._metrics:
            raise ValueError(f"name: metrics were already added under {name!r}.")
        clean = jsonable(metrics, where=f"metrics of {name!r}")
        scalars = {
            k: v for k, v in metrics.items() if np.ndim(v) == 0 and not isinstance(v, Mapping)
        }
        parts = []
        if scalars:
            frame = pd.DataFrame(
                {"value": [format_value(v) for v in scalars.values()]},
                index=pd.Index(list(scalars), name="metric"),
            )
            parts.append(_table_html(frame))
        rest = [k for k in metrics if k not in scalars]
        if "per_class" in rest and isinstance(metrics["per_class"], Mapping):
            per_class = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
            per_class.index.name = "class"
            parts += ["<h3>Per class (one-vs-rest)</h3>", _table_html(per_class)]
            rest.remove("per_class")
        classes = metrics.get("classes")
        if "confusion_matrix" in rest and classes is not None:
            cm = np.asarray(metrics["confusion_matrix"])
            if cm.shape == (len(classes), len(classes)):
                frame = pd.DataFrame(
                    cm,
                    index=pd.Index([f"true {c}" for c in classes]),
                    columns=[f"predicted {c}" for c in classes],
                )
                parts += ["<h3>Confusion matrix</h3>", _table_html(frame)]
                rest.remove("confusion_matrix")
        if len(rest) < len(metrics) - len(scalars) and "classes" in rest:
            rest.remove("classes")  # already the rows of the tables above
        for key in rest:
            text = json.dumps(clean[key if isinstance(key, str) else str(as_python_scalar(key))], indent=1)
            parts.append(f"<h3>{_esc(key)}</h3><pre>{_esc(text)}</pre>")
        self._metrics[name] = clean
        return self._add(f"Metrics: {name}", "".join(parts), fold=True)

    def add_parameters(self, name, estimator):
        """Add the parameters of an estimator, exactly as ``get_params()`` returns them.

        Parameters
        ----------
        name : str
            Model name; the section is titled "Parameters: <name>".
        estimator : estimator
            Any scikit-learn estimator (fitted or not). Nested estimators'
            parameters appear as ``step__param`` (``deep=True``).

        Returns
        -------
        self : Report
            The report, with a folded table of the parameters.

        Examples
        --------
        >>> from skxray.models import CNNClassifier
        >>> from skxray.report import Report
        >>> report = Report().add_parameters("CNN", CNNClassifier(filters=(8, 16)))
        >>> "<code>(8, 16)</code>" in report.to_html()
        True
        """
        self._check_name(name)
        if not hasattr(estimator, "get_params"):
            raise TypeError(
                f"estimator must have get_params() (a scikit-learn estimator); "
                f"got {type(estimator).__name__}."
            )
        params = estimator.get_params()
        cls = type(estimator)
        rows = "".join(
            f'<tr><th class="text">{_esc(k)}</th>'
            f'<td class="text"><code>{_esc(repr(v))}</code></td></tr>'
            for k, v in params.items()
        )
        body = (
            f"<p>Class <code>{_esc(cls.__module__ + '.' + cls.__qualname__)}</code>.</p>"
            '<div class="table-wrap"><table class="data"><thead><tr><th class="text">parameter</th>'
            f'<th class="text">value</th></tr></thead><tbody>{rows}</tbody></table></div>'
        )
        return self._add(f"Parameters: {name}", body, fold=True)

    # ------------------------------------------------------------ output
    def to_html(self):
        """Return the report as one HTML document.

        The page reads: title and note; the summary (what was run, the best
        model with 95 % intervals, verdict badges, what the numbers do not
        show); the results (comparison table, external validation, audit);
        figures; the data; then an appendix of folded ``<details>`` blocks
        (per-model metrics, parameters, software versions).

        Returns
        -------
        html : str
            A complete, self-contained HTML5 page.

        Examples
        --------
        >>> from skxray.report import Report
        >>> page = Report("Demo").to_html()
        >>> page.startswith("<!DOCTYPE html>"), '<section id="software-versions">' in page
        (True, True)
        """
        versions = _software_versions()
        version_rows = "".join(
            f'<tr><th class="text">{_esc(k)}</th><td class="text">{_esc(v)}</td></tr>'
            for k, v in versions.items()
        )
        ordered = self._ordered()
        main = [s for s in ordered if not s.fold]
        folded = [s for s in ordered if s.fold]
        folded.append(
            Section(_VERSIONS_ID, _VERSIONS_TITLE,
                    f'<table class="data"><tbody>{version_rows}</tbody></table>',
                    rank=self.ORDER["appendix"], index=len(ordered), fold=True)
        )
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        links = [(_SUMMARY_ID, _SUMMARY_TITLE)] if self._has_summary() else []
        links += [(s.anchor, s.title) for s in main] + [("appendix-title", "Appendix")]
        nav = "".join(f'<a href="#{_esc(sid)}">{_esc(t)}</a>' for sid, t in links)
        note = f'<p class="note">{_esc(self.note)}</p>' if self.note else ""
        body = [self._summary_html()] if self._has_summary() else []
        body += [s.to_html() for s in main]
        body.append(
            '<p id="appendix-title" class="appendix-head">Appendix</p>\n<p class="legend">'
            "Per-model and per-fold metrics, parameters and software versions; the metrics are also in "
            "metrics.json, beside this page.</p>"
        )
        body += [s.to_html() for s in folded]
        header = (
            f"<h1>{_esc(self.title)}</h1>\n"
            f'<p class="meta">Created {_esc(created)} with skxray {_esc(versions["skxray"])}.</p>\n'
            f"{note}\n<nav>{nav}</nav>"
        )
        return page(self.title, header, "\n".join(body))

    def _repr_html_(self):
        return self.to_html()

    def save(self, path):
        """Write the HTML file and ``metrics.json`` beside it.

        Parameters
        ----------
        path : str or path-like
            The HTML file to write; missing parent folders are created.

        Returns
        -------
        path : pathlib.Path
            The HTML file written. ``path.parent / "metrics.json"`` holds
            :attr:`metrics`: ``{name: metrics}`` for every :meth:`add_metrics`
            call and the per-fold values of :meth:`add_comparison` (``{}``
            if none).

        Examples
        --------
        >>> import json, pathlib, tempfile
        >>> from skxray.report import Report
        >>> report = Report().add_metrics("CNN", {"accuracy": 0.75})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = report.save(pathlib.Path(tmp) / "runs" / "report.html")
        ...     json.loads((path.parent / "metrics.json").read_text())
        {'CNN': {'accuracy': 0.75}}
        """
        path = Path(os.fspath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        html_text = self.to_html()
        metrics = json.dumps(self.metrics, indent=2, allow_nan=False) + "\n"
        # Both files or neither: a full disk must not leave a half report, or
        # a new report beside the previous run's metrics.
        atomic_write_many(
            [
                (path, lambda tmp: Path(tmp).write_text(html_text, encoding="utf-8")),
                (path.parent / "metrics.json", lambda tmp: Path(tmp).write_text(metrics, encoding="utf-8")),
            ]
        )
        return path
