"""A self-contained HTML report of an experiment.

:class:`Report` collects sections (data set summary, learning curves, model
comparison, confusion matrices, ROC and calibration curves, Grad-CAM maps,
metrics, parameters, free text, tables and figures) and writes them to one
HTML file that opens in a browser without network access: figures are
embedded as base64 PNG images, styles are inline, and nothing refers to an
external URL. The metrics added go to ``metrics.json`` beside it, and a
"Software versions" section is appended automatically.
"""

import base64
import datetime
import html
import importlib.metadata
import io
import json
import math
import numbers
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Report"]

_VERSIONS_ID = "software-versions"
_VERSIONS_TITLE = "Software versions"
#: (label, distribution name) of the packages listed under "Software versions".
_PACKAGES = (
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("skorch", "skorch"),
    ("scikit-learn", "scikit-learn"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("matplotlib", "matplotlib"),
    ("Pillow", "pillow"),
    ("pydicom", "pydicom"),
    ("grad-cam", "grad-cam"),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #fff; line-height: 1.45; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 1.5rem; }
header { padding-top: 1.5rem; border-bottom: 1px solid #d0d7de; }
h1 { margin: 0 0 .3rem 0; font-size: 1.7rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
h3 { margin-bottom: .4rem; }
.meta { color: #57606a; font-size: .9rem; margin: 0 0 .8rem 0; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
        padding: .6rem .9rem; margin: .8rem 0; }
.skipped { background: #f6f8fa; border-left: 4px solid #8c959f; padding: .5rem .9rem; }
nav ol { columns: 2; font-size: .92rem; padding-left: 1.4rem; }
nav a { color: #0969da; text-decoration: none; }
table { border-collapse: collapse; margin: .5rem 0 1rem 0; font-size: .88rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
figure { margin: .5rem 0 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .88rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: .85rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
.table-wrap { overflow-x: auto; }
"""


def _esc(value):
    return html.escape(str(value), quote=True)


def _slug(title):
    slug = re.sub(r"[^a-z0-9]+", "-", str(title).lower()).strip("-")
    return slug or "section"


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(obj, where="metrics"):
    """``obj`` with numpy types, tuples and paths converted; NaN/inf become None."""
    obj = _py(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {
            (k if isinstance(k, str) else str(_py(k))): _jsonable(v, f"{where}[{k!r}]")
            for k, v in obj.items()
        }
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict(orient="index"), where)
    if isinstance(obj, pd.Series):
        return _jsonable(obj.to_dict(), where)
    if isinstance(obj, np.ndarray):
        return [_jsonable(v, where) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which cannot be written to metrics.json; "
        "use numbers, strings, lists and dicts."
    )


def _figure_html(fig, alt, caption=None):
    """``fig`` as an embedded PNG ``<figure>``; the figure is closed afterwards."""
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}.")
    buf = io.BytesIO()
    try:
        # metadata={"Software": None}: no URL of matplotlib inside the PNG either.
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    finally:
        _close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>'


def _close(fig):
    """Free a figure: pyplot figures are closed, plain Figures just dropped."""
    manager = getattr(fig.canvas, "manager", None)
    if manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def _format_value(value):
    value = _py(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return value


def _table_html(df, *, index=True):
    """A DataFrame as an escaped HTML table with floats shown with 4 significant digits."""
    shown = df.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]) or shown[column].dtype == object:
            shown[column] = shown[column].map(_format_value)
    body = shown.to_html(escape=True, index=index, border=0, na_rep="n/a", classes="data")
    return f'<div class="table-wrap">{body}</div>'


def _mean_std_frame(table):
    """Pairs of ``mean_m`` / ``std_m`` columns shown as one ``m`` column, "mean ± std"."""
    columns = list(table.columns)
    metrics = [
        c[len("mean_") :]
        for c in columns
        if isinstance(c, str) and c.startswith("mean_") and f"std_{c[len('mean_') :]}" in columns
    ]
    if not metrics or 2 * len(metrics) != len(columns):
        return table
    shown = pd.DataFrame(index=table.index)
    for m in metrics:
        shown[m] = [
            f"{_format_value(float(a))} ± {_format_value(float(b))}"
            for a, b in zip(table[f"mean_{m}"], table[f"std_{m}"], strict=True)
        ]
    return shown


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
    from skxray._validation import is_path_array

    if is_path_array(X):
        from PIL import Image

        from skxray.io import read_image

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


def _round_robin_by_class(y, n):
    """Indices of ``n`` samples: the first of each class in turn (classes sorted)."""
    per_class = [np.flatnonzero(y == c).tolist() for c in pd.unique(pd.Series(y)).tolist()]
    per_class.sort(key=lambda rows: str(y[rows[0]]))
    order = []
    for k in range(max(len(rows) for rows in per_class)):
        order += [rows[k] for rows in per_class if k < len(rows)]
    return np.asarray(order[:n], dtype=np.int64)


def _software_versions():
    import skxray

    versions = {"python": platform.python_version(), "skxray": skxray.__version__}
    for label, dist in _PACKAGES:
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = "not installed"
    versions["platform"] = platform.platform()
    return versions


class Report:
    """Collect the results of an experiment into one self-contained HTML file.

    Add sections with the ``add_*`` methods (each returns the report, so
    calls can be chained), then :meth:`save` it. Every section is a
    ``<section id="...">`` with an ``<h2>`` title; a table of contents, the
    ``note`` and a final "Software versions" section (Python, skxray, torch,
    torchvision, skorch, scikit-learn, numpy, ... and the platform) are added
    automatically. Figures are rendered to PNG when added, embedded as
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

    def __init__(self, title="skxray report", note=None):
        self.title = title
        self.note = note
        self._sections = []  # (id, title, body html)
        self._ids = {_VERSIONS_ID}
        self._metrics = {}

    def __repr__(self):
        return f"Report(title={self.title!r}, n_sections={len(self._sections)})"

    # ------------------------------------------------------------ plumbing
    @property
    def sections(self):
        """The ``(id, title)`` pair of each section, in page order.

        A list of tuples of str, ending with the automatic
        ``("software-versions", "Software versions")``.
        """
        return [(sid, title) for sid, title, _ in self._sections] + [
            (_VERSIONS_ID, _VERSIONS_TITLE)
        ]

    @property
    def metrics(self):
        """The metrics added with :meth:`add_metrics`, by name.

        A JSON-ready copy (dict), as written to ``metrics.json``.
        """
        return json.loads(json.dumps(self._metrics))

    def _add(self, title, body):
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title must be a non-empty string; got {title!r}.")
        base = _slug(title)
        sid, k = base, 2
        while sid in self._ids:
            sid, k = f"{base}-{k}", k + 1
        self._ids.add(sid)
        self._sections.append((sid, title, body))
        return self

    @staticmethod
    def _check_name(name):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string; got {name!r}.")
        return name

    # ------------------------------------------------------------ generic sections
    def add_text(self, title, text):
        """Add a section of plain text.

        Parameters
        ----------
        title : str
            Section title.
        text : str
            The text; blank lines separate paragraphs. It is escaped, so
            markup shows as typed.

        Returns
        -------
        self : Report
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_text("Aim", "Compare <b>models</b> & more.")
        >>> "Compare &lt;b&gt;models&lt;/b&gt; &amp; more." in report.to_html()
        True
        >>> report.sections[0]
        ('aim', 'Aim')
        """
        return self._add(title, _paragraphs(text))

    def add_figure(self, title, fig, *, caption=None):
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

        Returns
        -------
        self : Report
            The report.

        Examples
        --------
        >>> from matplotlib.figure import Figure
        >>> from skxray.report import Report
        >>> fig = Figure()
        >>> _ = fig.subplots().plot([0, 1], [1, 0])
        >>> Report().add_figure("A line", fig, caption="Decreasing.").sections[0]
        ('a-line', 'A line')
        """
        return self._add(title, _figure_html(fig, title, caption))

    def add_table(self, title, table, *, index=True):
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

        Returns
        -------
        self : Report
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_table("Split", {"train": 80, "test": 20})
        >>> "<td>80</td>" in report.to_html()
        True
        """
        return self._add(title, _table_html(_as_frame(table, "table"), index=index))

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
            The report.

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
        from skxray.evaluation import plot_image_grid

        y = np.asarray(y, dtype=object).reshape(-1)
        n = len(X)
        if len(y) != n:
            raise ValueError(f"y has {len(y)} labels but X has {n} images.")
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
        if groups is not None:
            table["patients"] = table["patients"].astype(int)

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
            from matplotlib.figure import Figure

            fig = Figure(figsize=(8.0, 3.0), layout="constrained")
            ax_h, ax_w = fig.subplots(1, 2)
            ax_h.hist(sizes[:, 0], bins=20, color="C0")
            ax_h.set(title="Image heights", xlabel="pixels", ylabel="images")
            ax_w.hist(sizes[:, 1], bins=20, color="C1")
            ax_w.set(title="Image widths", xlabel="pixels", ylabel="images")
            parts.append(_figure_html(fig, "Histogram of image sizes"))
        if n_images:
            parts.append("<h3>Sample images</h3>")
            fig = plot_image_grid(X, y, n=n_images, random_state=random_state)
            parts.append(_figure_html(fig, "Sample images with their labels"))
        return self._add(title, "".join(parts))

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
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> history = [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5}]
        >>> Report().add_learning_curves("CNN", history).sections[0]
        ('learning-curves-cnn', 'Learning curves: CNN')
        """
        from skxray.evaluation import plot_learning_curves

        self._check_name(name)
        fig = plot_learning_curves(estimator)
        caption = "The dashed line marks the best epoch (lowest validation loss, else train loss)."
        return self._add(f"Learning curves: {name}", _figure_html(fig, name, caption))

    def add_comparison(self, table, *, title="Model comparison"):
        """Add the table of :func:`skxray.evaluation.compare_models`.

        Parameters
        ----------
        table : pandas.DataFrame
            One row per model; the number of folds and the positive class
            are read from ``table.attrs`` when present. Pairs of columns
            ``mean_<m>`` and ``std_<m>`` are shown as one column ``<m>``
            holding "mean ± std"; other tables are shown as they are.
        title : str, default="Model comparison"
            Section title.

        Returns
        -------
        self : Report
            The report.

        Examples
        --------
        >>> import pandas as pd
        >>> from skxray.report import Report
        >>> table = pd.DataFrame({"mean_accuracy": [0.9], "std_accuracy": [0.05]}, index=["CNN"])
        >>> "0.9 ± 0.05" in Report().add_comparison(table).to_html()
        True
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame; got {type(table).__name__}.")
        attrs = table.attrs or {}
        intro = "Mean and standard deviation of each metric over the cross-validation folds"
        if "n_splits" in attrs:
            intro += f" ({attrs['n_splits']} folds)"
        if "positive_label" in attrs:
            intro += f"; positive class for ROC AUC and Brier score: {attrs['positive_label']}"
        intro += ". Times are seconds per fold."
        return self._add(title, f"<p>{_esc(intro)}</p>" + _table_html(_mean_std_frame(table)))

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
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> report = Report().add_confusion_matrix("CNN", ["a", "a", "b"], ["a", "b", "b"])
        >>> report.sections[0]
        ('confusion-matrix-cnn', 'Confusion matrix: CNN')
        """
        from skxray.evaluation import plot_confusion_matrix

        self._check_name(name)
        fig = plot_confusion_matrix(
            y_true=y_true, y_pred=y_pred, labels=labels, normalize=normalize, name=name
        )
        caption = "Rows: true class; columns: predicted class."
        return self._add(f"Confusion matrix: {name}", _figure_html(fig, name, caption))

    def add_roc(self, name, y_true, y_proba, classes=None, *, positive_label=None):
        """Add ROC curves (positive class, or one-vs-rest for 3+ classes).

        Parameters
        ----------
        name : str
            Model name; the section is titled "ROC curve: <name>".
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
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
        >>> report = Report().add_roc("CNN", ["Covid-19", "Normal"] * 2, proba)
        >>> report.sections[0]
        ('roc-curve-cnn', 'ROC curve: CNN')
        """
        from skxray.evaluation import plot_roc

        self._check_name(name)
        fig = plot_roc(
            y_true=y_true,
            y_proba=y_proba,
            classes=classes,
            positive_label=positive_label,
            name=name,
        )
        return self._add(f"ROC curve: {name}", _figure_html(fig, name))

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
            True labels.
        y_proba : array-like of shape (n_samples, n_classes)
            Probabilities.
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
            The report.

        Examples
        --------
        >>> from skxray.report import Report
        >>> proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
        >>> report = Report().add_calibration("CNN", ["Covid-19", "Normal"] * 2, proba, n_bins=2)
        >>> report.sections[0]
        ('calibration-cnn', 'Calibration: CNN')
        """
        from skxray.evaluation import plot_calibration

        self._check_name(name)
        fig = plot_calibration(
            y_true=y_true,
            y_proba=y_proba,
            classes=classes,
            positive_label=positive_label,
            n_bins=n_bins,
            strategy=strategy,
            name=name,
        )
        return self._add(f"Calibration: {name}", _figure_html(fig, name))

    def add_gradcam(self, name, estimator, X, y=None, *, n=6, target=None, method="gradcam"):
        """Add Grad-CAM heatmaps of a convolutional classifier over a few images.

        Uses :func:`skxray.explain.plot_gradcam`. Models it cannot explain
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
            The report.

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
        try:
            from skxray.explain import plot_gradcam
        except ImportError as exc:
            return self._add(title, f'<p class="skipped">Grad-CAM is unavailable: {_esc(exc)}</p>')
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}.")
        if y is not None:
            from skxray.evaluation import _as_images_or_paths

            X, _ = _as_images_or_paths(X)
            y = np.asarray(y, dtype=object).reshape(-1)
            if len(y) != len(X):
                raise ValueError(f"y has {len(y)} labels but X has {len(X)} images.")
            idx = _round_robin_by_class(y, n)
            X, y = X[idx], y[idx]
        try:
            fig = plot_gradcam(estimator, X, target, y=y, n=n, method=method)
        except TypeError as exc:  # no convolutional layer, or not a skxray classifier
            return self._add(title, f'<p class="skipped">Skipped: {_esc(exc)}</p>')
        caption = "Warm colours: regions that raised the score of the class shown."
        return self._add(title, _figure_html(fig, name, caption))

    def add_audit(self, result, *, title=None):
        """Add the findings of a shortcut-learning and leakage audit.

        Embeds :meth:`skxray.audit.AuditReport.to_html` (verdicts,
        explanations, key figures, plots and tables) as one section.

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
            The report.

        Raises
        ------
        TypeError
            If ``result`` has no ``to_html`` method.

        Examples
        --------
        >>> from skxray.audit import AuditReport, Finding
        >>> from skxray.report import Report
        >>> result = AuditReport([Finding("leakage", "ok", "No patient leakage found.")])
        >>> Report().add_audit(result).sections[0]
        ('shortcut-and-leakage-audit', 'Shortcut and leakage audit')
        """
        if not callable(getattr(result, "to_html", None)):
            raise TypeError(
                "result must be a skxray.audit.AuditReport (with to_html()); "
                f"got {type(result).__name__}."
            )
        fragment = result.to_html()
        heading = "Shortcut and leakage audit"
        # The fragment is a <section> with its own <h2>: unwrap it into ours.
        match = re.match(r"\s*<section[^>]*>\s*<h2>(.*?)</h2>(.*)</section>\s*$", fragment, re.S)
        if match:
            heading, fragment = html.unescape(match.group(1)), match.group(2)
        return self._add(title or heading, fragment)

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
            The report.

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
        clean = _jsonable(metrics, f"metrics of {name!r}")
        scalars = {
            k: v for k, v in metrics.items() if np.ndim(v) == 0 and not isinstance(v, Mapping)
        }
        parts = []
        if scalars:
            frame = pd.DataFrame(
                {"value": [_format_value(v) for v in scalars.values()]},
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
            text = json.dumps(clean[key if isinstance(key, str) else str(_py(key))], indent=1)
            parts.append(f"<h3>{_esc(key)}</h3><pre>{_esc(text)}</pre>")
        self._metrics[name] = clean
        return self._add(f"Metrics: {name}", "".join(parts))

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
            The report.

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
        return self._add(f"Parameters: {name}", body)

    # ------------------------------------------------------------ output
    def to_html(self):
        """Return the report as one HTML document.

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
        sections = self._sections + [
            (
                _VERSIONS_ID,
                _VERSIONS_TITLE,
                f'<table class="data"><tbody>{version_rows}</tbody></table>',
            )
        ]
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        toc = "".join(f'<li><a href="#{_esc(sid)}">{_esc(t)}</a></li>' for sid, t, _ in sections)
        note = f'<p class="note">{_esc(self.note)}</p>' if self.note else ""
        body = "\n".join(
            f'<section id="{_esc(sid)}">\n<h2>{_esc(t)}</h2>\n{content}\n</section>'
            for sid, t, content in sections
        )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<header>\n<h1>{_esc(self.title)}</h1>\n"
            f'<p class="meta">Created {_esc(created)} with skxray {_esc(versions["skxray"])}.</p>\n'
            f"{note}\n<nav><ol>{toc}</ol></nav>\n</header>\n"
            f"<main>\n{body}\n</main>\n</body>\n</html>\n"
        )

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
            ``{name: metrics}`` for every :meth:`add_metrics` call (``{}``
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
        from skxray._atomic import atomic_write_many

        path = Path(os.fspath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        html_text = self.to_html()
        metrics = json.dumps(self._metrics, indent=2, allow_nan=False) + "\n"
        # Both files or neither: a full disk must not leave a half report, or
        # a new report beside the previous run's metrics.
        atomic_write_many(
            [
                (path, lambda tmp: Path(tmp).write_text(html_text, encoding="utf-8")),
                (path.parent / "metrics.json", lambda tmp: Path(tmp).write_text(metrics, encoding="utf-8")),
            ]
        )
        return path
