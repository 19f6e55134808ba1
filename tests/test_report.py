"""Tests of skxray.report: a self-contained HTML report and its metrics.json."""

import base64
import doctest
import html
import io
import json
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
from _helpers import tiny_cnn, tiny_fnn
from matplotlib.figure import Figure
from PIL import Image
from sklearn.ensemble import VotingClassifier

import skxray.evaluation
import skxray.explain
import skxray.report
from skxray.datasets import make_phantom_cxr
from skxray.evaluation import classification_metrics, compare_models
from skxray.models import FNNClassifier
from skxray.report import Report

C, N = "Covid-19", "Normal"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    """Collect what the tests check: sections, headings, images, links, scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections = []  # (id, h2 text)
        self.images = []  # src of each <img>
        self.urls = []  # every href / src value
        self.tags = []
        self.title = ""
        self._in = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append([attrs.get("id"), None])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag in ("h2", "title"):
            self._in, self._text = tag, []

    def handle_data(self, data):
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == self._in:
            text = "".join(self._text)
            if tag == "h2":
                self.sections[-1][1] = text
            else:
                self.title = text
            self._in = None


def parse(html_text):
    parser = PageParser()
    parser.feed(html_text)
    parser.close()
    return parser


def decode_png(src):
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    raw = base64.b64decode(src[len(prefix) :], validate=True)
    assert raw.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        assert im.format == "PNG"
        return im.size



@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(40, image_size=32, random_state=0, return_groups=True)


@pytest.fixture(scope="module")
def models(phantoms):
    """A fitted CNN (Grad-CAM works) and FNN (Grad-CAM is skipped)."""
    X_y = phantoms[:2]
    return tiny_cnn().fit(*X_y), tiny_fnn().fit(*X_y)


@pytest.fixture(scope="module")
def full_report(phantoms, models, tmp_path_factory):
    """A report with every kind of section, saved once for the tests below."""
    X, y, groups = phantoms
    cnn, fnn = models
    table, oof = compare_models(
        {"FNN": FNNClassifier(hidden_layer_sizes=(8,), max_epochs=1, random_state=0)},
        X,
        y,
        cv=2,
        groups=groups,
        return_predictions=True,
    )
    classes = table.attrs["classes"]
    y_oof = np.asarray(classes)[oof["FNN"].argmax(axis=1)]
    metrics = classification_metrics(y, y_proba=oof["FNN"], classes=classes)
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])

    report = Report("Phantom study", note="Run on synthetic phantoms, not real X-rays.")
    report.add_dataset_summary(X, y, groups=groups)
    report.add_learning_curves("CNN", cnn)
    report.add_comparison(table)
    report.add_confusion_matrix("FNN", y, y_oof)
    report.add_roc("FNN", y, oof["FNN"], classes)
    report.add_calibration("FNN", y, oof["FNN"], classes, n_bins=3)
    report.add_gradcam("CNN", cnn, X[:3], y[:3], n=3)
    report.add_gradcam("FNN", fnn, X[:3], y[:3])
    report.add_text("Notes", "First paragraph.\n\nSecond <b>paragraph</b> & more.")
    report.add_figure("A line", fig, caption="A decreasing line.")
    report.add_table(
        "Hyper-parameters tried", pd.DataFrame({"lr": [1e-3, 1e-2], "acc": [0.5, 0.6]})
    )
    report.add_table("Counts", {"train": 30, "test": np.int64(10)})
    report.add_metrics("FNN (cross-validated)", metrics)
    report.add_parameters("CNN", cnn)
    path = report.save(tmp_path_factory.mktemp("out") / "nested" / "folder" / "report.html")
    return SimpleNamespace(report=report, path=path, metrics=metrics, cnn=cnn, table=table)


EXPECTED_SECTIONS = [
    # The summary first, then results, figures (in the order added), the data,
    # and the folded appendix.
    ("summary", "Summary"),
    ("model-comparison", "Model comparison"),
    ("learning-curves-cnn", "Learning curves: CNN"),
    ("confusion-matrix-fnn", "Confusion matrix: FNN"),
    ("roc-curve-fnn", "ROC curve: FNN"),
    ("calibration-fnn", "Calibration: FNN"),
    ("grad-cam-cnn", "Grad-CAM: CNN"),
    ("grad-cam-fnn", "Grad-CAM: FNN"),
    ("notes", "Notes"),
    ("a-line", "A line"),
    ("hyper-parameters-tried", "Hyper-parameters tried"),
    ("counts", "Counts"),
    ("dataset-summary", "Dataset summary"),
    ("per-fold-values", "Per-fold values"),
    ("metrics-fnn-cross-validated", "Metrics: FNN (cross-validated)"),
    ("parameters-cnn", "Parameters: CNN"),
    ("software-versions", "Software versions"),
]


def section_html(html_text, section_id):
    start = html_text.index(f'<section id="{section_id}">')
    return html_text[start : html_text.index("</section>", start)]


def test_every_section_is_present(full_report):
    report, path = full_report.report, full_report.path
    assert path.name == "report.html" and path.is_file()
    page = parse(path.read_text(encoding="utf-8"))
    assert [tuple(s) for s in page.sections] == EXPECTED_SECTIONS
    assert report.sections == EXPECTED_SECTIONS
    assert page.title == "Phantom study"


def test_images_are_embedded_pngs(full_report):
    path = full_report.path
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    # dataset grid, learning curves, confusion, ROC, calibration, Grad-CAM CNN, the figure
    assert len(page.images) == 7
    for src in page.images:
        width, height = decode_png(src)
        assert width > 50 and height > 50
    # Sections with figures hold exactly their image(s).
    for sid in ("learning-curves-cnn", "roc-curve-fnn", "grad-cam-cnn", "a-line"):
        assert section_html(text, sid).count("<img ") == 1, sid


def test_page_is_self_contained(full_report):
    path = full_report.path
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    page = parse(text)
    assert "script" not in page.tags and "link" not in page.tags
    for url in page.urls:
        assert url.startswith(("data:image/png;base64,", "#")), url[:60]
    assert "@import" not in text and "url(" not in text


def test_metrics_json(full_report):
    report, path, metrics = full_report.report, full_report.path, full_report.metrics
    saved = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8"))
    # add_metrics' entry, and the compared model's per-fold values.
    assert list(saved) == ["FNN (cross-validated)", "FNN"]
    assert list(saved["FNN"]) == ["per_fold"]
    got = saved["FNN (cross-validated)"]
    assert got["accuracy"] == pytest.approx(metrics["accuracy"])
    assert got["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert got["per_class"][C]["support"] == 20
    assert got["classes"] == [C, N]
    assert report.metrics == saved


def test_per_fold_values_in_appendix_and_json(full_report):
    path, table = full_report.path, full_report.table
    text = path.read_text(encoding="utf-8")
    section = section_html(text, "per-fold-values")
    # Folded: inside the section's <details>, closed by default.
    assert section.count("<details>") == 1 and "<details open" not in section
    folds = table.attrs["per_fold"]["FNN"]
    assert len(folds["balanced_accuracy"]) == table.attrs["n_splits"] == 2
    for value in folds["balanced_accuracy"]:
        assert f"<td>{100 * value:.1f}</td>" in section
    assert "<th>Balanced accuracy</th>" in section and "<th>fold</th>" in section
    saved = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8"))
    np.testing.assert_allclose(
        saved["FNN"]["per_fold"]["balanced_accuracy"], folds["balanced_accuracy"]
    )
    assert saved["FNN"]["per_fold"]["fit_time"] == pytest.approx(folds["fit_time"])


def test_per_fold_undefined_values_are_null_and_na(tmp_path):
    table = pd.DataFrame(
        {"mean_ppv_a": [0.5], "std_ppv_a": [0.0]}, index=pd.Index(["m"], name="model")
    )
    table.attrs = {"classes": ["a", "b"], "n_splits": 2,
                   "per_fold": {"m": {"ppv_a": [0.5, float("nan")]}}}
    report = Report().add_comparison(table)
    report.add_metrics("m", {"accuracy": 0.5})
    assert report.metrics == {"m": {"accuracy": 0.5, "per_fold": {"ppv_a": [0.5, None]}}}
    section = section_html(report.to_html(), "per-fold-values")
    assert "<td>50.0</td>" in section and "<td>n/a</td>" in section
    report.save(tmp_path / "r.html")  # strict JSON: NaN would fail here
    assert json.loads((tmp_path / "metrics.json").read_text())["m"]["per_fold"]["ppv_a"][1] is None


def test_no_per_fold_section_without_per_fold_values():
    table = pd.DataFrame({"mean_accuracy": [0.9], "std_accuracy": [0.05]}, index=["CNN"])
    report = Report().add_comparison(table)
    assert "per-fold-values" not in dict(report.sections)
    assert report.metrics == {}


def test_section_contents(full_report):
    path, metrics, cnn = full_report.path, full_report.metrics, full_report.cnn
    text = path.read_text(encoding="utf-8")
    summary = section_html(text, "dataset-summary")
    assert "40 images in 2 classes from" in summary
    assert "all images are 32 x 32 pixels" in summary
    assert "<th>Covid-19</th>" in summary and "<th>total</th>" in summary
    assert "Run on synthetic phantoms, not real X-rays." in text
    comparison = section_html(text, "model-comparison")
    assert "<th>COVID-19 sensitivity (%)</th>" in comparison and "2 cross-validation folds" in comparison
    table = full_report.table
    acc = f"{100 * table.loc['FNN', 'mean_accuracy']:.1f} ± {100 * table.loc['FNN', 'std_accuracy']:.1f}"
    assert f"<td>{acc}</td>" in comparison
    assert "mean_accuracy" not in comparison
    assert "Skipped" in section_html(text, "grad-cam-fnn")
    assert "<img" not in section_html(text, "grad-cam-fnn")
    params = section_html(text, "parameters-cnn")
    for key, value in cnn.get_params().items():
        assert f'<th class="text">{key}</th>' in params
        assert f"<code>{html.escape(repr(value))}</code>" in params
    versions = section_html(text, "software-versions")
    for name in ("python", "skxray", "torch", "torchvision", "skorch", "scikit-learn", "numpy"):
        assert f">{name}</th>" in versions
    assert "platform" in versions
    metric_section = section_html(text, "metrics-fnn-cross-validated")
    assert f"{metrics['accuracy']:.4g}" in metric_section
    assert "Per class (one-vs-rest)" in metric_section
    notes = section_html(text, "notes")
    assert notes.count("<p>") == 2
    assert "Second &lt;b&gt;paragraph&lt;/b&gt; &amp; more." in notes


def test_html_is_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    report = Report(title=f"Title {evil}", note=f"Note {evil}")
    report.add_text(f"Section {evil}", f"Body {evil}")
    report.add_table("Table", pd.DataFrame({evil: [evil]}, index=[evil]))
    report.add_metrics(evil, {"accuracy": 1.0, evil: evil})
    report.add_parameters(evil, FNNClassifier(hidden_layer_sizes=(3,)))
    text = report.save(tmp_path / "r.html").read_text(encoding="utf-8")
    page = parse(text)
    assert "script" not in page.tags
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert page.title == f"Title {evil}"
    assert ("section-script-alert-x-script", f"Section {evil}") in [tuple(s) for s in page.sections]
    assert json.loads((tmp_path / "metrics.json").read_text())[evil][evil] == evil


def test_numpy_and_nan_metrics_are_json(tmp_path):
    report = Report()
    report.add_metrics(
        "m",
        {
            "acc": np.float32(0.5),
            "n": np.int64(3),
            "auc": float("nan"),
            "by_class": {np.str_("a"): np.array([1, 2])},
            "ok": np.bool_(True),
        },
    )
    report.save(tmp_path / "r.html")
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text
    assert json.loads(text) == {
        "m": {"acc": 0.5, "n": 3, "auc": None, "by_class": {"a": [1, 2]}, "ok": True}
    }


def test_empty_report_writes_versions_and_empty_metrics(tmp_path):
    path = Report().save(tmp_path / "report.html")
    page = parse(path.read_text(encoding="utf-8"))
    assert [tuple(s) for s in page.sections] == [("software-versions", "Software versions")]
    assert page.title == "skxray report"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {}


def test_duplicate_titles_get_unique_ids():
    report = Report()
    for _ in range(3):
        report.add_text("Software versions", "x")
    report.add_text("Überblick", "non-ASCII titles still get an id")
    ids = [sid for sid, _ in report.sections]
    assert ids == [
        "software-versions-2",
        "software-versions-3",
        "software-versions-4",
        "berblick",
        "software-versions",
    ]
    assert len(set(ids)) == len(ids)


def test_add_figure_closes_pyplot_figures():
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([0, 1])
    assert plt.fignum_exists(fig.number)
    Report().add_figure("Plot", fig)
    assert not plt.fignum_exists(fig.number)


def test_dataset_summary_of_paths_with_varying_sizes(tmp_path):
    X, y = make_phantom_cxr(6, image_size=16, random_state=0)
    paths = []
    for i, img in enumerate(X):
        size = 16 + 4 * i
        pil = Image.fromarray((img * 255).round().astype(np.uint8)).resize((size + 2, size))
        paths.append(str(tmp_path / f"{i}.png"))
        pil.save(paths[-1])
    report = Report().add_dataset_summary(paths, y, n_images=4)
    text = report.to_html()
    summary = section_html(text, "dataset-summary")
    assert "6 distinct image sizes" in summary
    assert summary.count("<img ") == 2  # the size histogram and the sample grid
    assert "<td>16</td>" in summary and "<td>36</td>" in summary  # min / max height


def test_dataset_summary_given_sizes_without_grid(phantoms):
    X, y, _ = phantoms
    sizes = np.column_stack([np.arange(40) + 100, np.full(40, 200)])
    text = Report().add_dataset_summary(X, y, image_sizes=sizes, n_images=0).to_html()
    assert "40 distinct image sizes" in text
    assert section_html(text, "dataset-summary").count("<img ") == 1  # histogram only


def test_dataset_summary_tables_have_one_header_row(phantoms):
    X, y, groups = phantoms
    summary = section_html(Report().add_dataset_summary(X, y, groups=groups, n_images=0).to_html(),
                           "dataset-summary")
    heads = summary.split("<thead>")[1:]
    assert len(heads) == 2  # class counts, image sizes
    for head in heads:
        head = head.split("</thead>")[0]
        assert head.count("<tr") == 1  # no second row holding only the index's name
        assert "<th></th>" not in head
    assert "<th>class</th>" in heads[0] and "<th>images</th>" in heads[0]
    assert "<th>image size</th>" in heads[1] and "<th>median</th>" in heads[1]


def test_gradcam_skips_without_explain_module(monkeypatch, models, phantoms):
    X, y, _ = phantoms
    monkeypatch.setitem(sys.modules, "skxray.explain", None)  # import fails
    report = Report().add_gradcam("CNN", models[0], X[:2])
    assert "Grad-CAM is unavailable" in section_html(report.to_html(), "grad-cam-cnn")


def test_gradcam_images_alternate_between_classes(models, phantoms, monkeypatch):
    X, y, _ = phantoms
    picked = skxray.report._round_robin_by_class(np.array([N, N, N, C, C]), 4)
    assert picked.tolist() == [3, 0, 4, 1]
    seen = {}

    def fake_from_estimator(cls, estimator, X, target=None, *, y=None, n=None, method="gradcam"):
        seen.update(X=X, y=y, n=n)
        return cls(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), titles=["fake"]).plot()

    # The report draws through the display: patch its computing step.
    monkeypatch.setattr(skxray.explain.GradCAMDisplay, "from_estimator",
                        classmethod(fake_from_estimator))
    order = np.argsort(y != C, kind="stable")  # every Covid-19 image first
    report = Report().add_gradcam("CNN", models[0], X[order], y[order], n=4)
    assert section_html(report.to_html(), "grad-cam-cnn").count("<img ") == 1  # the display's figure
    assert seen["y"].tolist() == [C, N, C, N]
    assert seen["n"] == 4 and len(seen["X"]) == 4
    with pytest.raises(ValueError, match="y has 3 labels but X has 40"):
        Report().add_gradcam("CNN", models[0], X, y[:3])
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        Report().add_gradcam("CNN", models[0], X, n=0)


def test_add_audit_unwraps_the_audit_section():
    from skxray.audit import AuditReport, Finding

    finding = Finding(
        "leakage",
        "warning",
        "No patient ids <groups>: leakage cannot be checked.",
        figures={"gap": 0.1},
        title="1. Patient leakage",
        summary="gap 0.10",
        details={"pairs": pd.DataFrame({"a": [1, 2]})},
    )
    result = AuditReport([finding], info={"estimator": "CNN", "n_samples": 10})
    report = Report().add_audit(result).add_audit(result, title="Audit again")
    assert report.sections[:3] == [
        ("summary", "Summary"),  # with the audit's verdict as a badge
        ("shortcut-and-leakage-audit", "Shortcut and leakage audit"),
        ("audit-again", "Audit again"),
    ]
    text = report.to_html()
    page = parse(text)
    assert [s[0] for s in page.sections] == [sid for sid, _ in report.sections]  # not nested
    assert page.tags.count("h2") == 4  # the summary, two audits, software versions
    body = section_html(text, "shortcut-and-leakage-audit")
    assert "WARNING" in body and "No patient ids &lt;groups&gt;" in body
    assert "<details><summary>Detail of each check</summary>" in body
    overview, _, detail = body.partition("<details><summary>Detail of each check</summary>")
    # The audit's overview stays in view, the check's heading and tables fold away.
    assert "Overall verdict" in overview and "<h3>" not in overview
    assert "<h3>1. Patient leakage" in detail and "<h4>pairs</h4>" in detail
    summary = section_html(text, "summary")
    assert summary.count('class="badge badge-warning"') == 2  # one per audit added
    assert "flagged: 1. Patient leakage" in summary
    assert "http://" not in text and "https://" not in text
    with pytest.raises(TypeError, match="result must be a skxray.audit.AuditReport"):
        Report().add_audit({"verdict": "ok"})


def test_gradcam_skips_ensembles(phantoms):
    X, y, _ = phantoms
    voting = VotingClassifier(
        [("fnn", FNNClassifier(hidden_layer_sizes=(4,), max_epochs=1, random_state=0))],
        voting="soft",
    ).fit(X, y)
    text = Report().add_gradcam("Vote", voting, X[:2]).to_html()
    assert "Skipped: " in section_html(text, "grad-cam-vote")


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda r: r.add_text("", "x"), ValueError, "title must be a non-empty string"),
        (lambda r: r.add_metrics("m", [1, 2]), TypeError, "metrics must be a dict"),
        (lambda r: r.add_metrics("m", {"f": object()}), TypeError, r"metrics of 'm'\['f'\]"),
        (lambda r: r.add_table("t", [1, 2]), TypeError, "table must be a pandas DataFrame"),
        (lambda r: r.add_figure("f", "not a figure"), TypeError, "fig must be a matplotlib"),
        (lambda r: r.add_comparison({"a": 1}), TypeError, "table must be a pandas DataFrame"),
        (lambda r: r.add_parameters("p", object()), TypeError, "estimator must have get_params"),
        (lambda r: r.add_roc("", [C, N], [[1, 0], [0, 1]]), ValueError, "name must be"),
        (
            lambda r: r.add_dataset_summary(np.zeros((3, 8, 8)), ["a", "b"]),
            ValueError,
            "y has 2 labels but X has 3",
        ),
        (
            lambda r: r.add_dataset_summary(np.zeros((3, 8, 8)), ["a"] * 3, image_sizes=[[1, 2]]),
            ValueError,
            "image_sizes must have shape",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(Report())


def test_duplicate_metrics_name_is_refused():
    report = Report().add_metrics("CNN", {"accuracy": 0.5})
    with pytest.raises(ValueError, match="already added under 'CNN'"):
        report.add_metrics("CNN", {"accuracy": 0.6})


def test_backend_untouched():
    # Building reports never switches the user's matplotlib backend.
    backend = matplotlib.get_backend()
    Report().add_text("t", "x").to_html()
    assert matplotlib.get_backend() == backend


def test_docstring_examples():
    result = doctest.testmod(skxray.report, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ----------------------------------------------------------------------------- readable output
def three_class_table(n_models=4):
    """A compare_models-like table: 3 classes, 4 models, 5 folds."""
    classes = ["Covid-19", "Normal", "Viral Pneumonia"]
    rng = np.random.default_rng(0)
    metrics = ["accuracy", "balanced_accuracy", "roc_auc", "brier"]
    metrics += [f"{k}_{c}" for k in ("sensitivity", "ppv") for c in classes]
    metrics += ["ood_rate", "fit_time", "predict_time"]
    names = ["cnn", "fnn", "resnet50", "soft-voting"][:n_models]
    records = {}
    for k, name in enumerate(names):
        row = {}
        for m in metrics:
            row[f"mean_{m}"] = 0.8 + 0.05 * k if "time" not in m else 12.0 * (k + 1)
            row[f"std_{m}"] = float(rng.uniform(0.001, 0.05))
        records[name] = row
    table = pd.DataFrame.from_dict(records, orient="index")
    table.index.name = "model"
    table.attrs = {"classes": classes, "positive_label": "Covid-19", "n_splits": 5}
    return table


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((0.99178, 0.011644), {}, "99.2 ± 1.2"),
        ((1, 0), {}, "100.0 ± 0.0"),
        ((0.5,), {}, "50.0"),
        ((0.9,), {"low": 0.851, "high": 0.95}, "90.0 (85.1–95.0)"),
        ((float("nan"), 0.1), {}, "n/a"),
        ((None,), {}, "n/a"),
        ((np.float32(0.25), np.float64(0.0)), {}, "25.0 ± 0.0"),
    ],
)
def test_format_percent(args, kwargs, expected):
    assert skxray.report.format_percent(*args, **kwargs) == expected


@pytest.mark.parametrize(
    "key, expected",
    [
        ("mean_balanced_accuracy", "Balanced accuracy"),
        ("balanced_accuracy", "Balanced accuracy"),
        ("sensitivity_Covid-19", "COVID-19 sensitivity"),
        ("std_ppv_Viral Pneumonia", "Viral Pneumonia PPV"),
        ("roc_auc", "ROC AUC"),
        ("brier", "Brier score"),
        ("ood_rate", "Flagged OOD"),
        ("fit_time", "Fit time (s)"),
        ("something_else", "something else"),
    ],
)
def test_metric_labels(key, expected):
    assert skxray.report.metric_label(key) == expected


def test_comparison_table_is_readable_and_marks_the_best():
    table = three_class_table()
    text = Report().add_comparison(table).to_html()
    comparison = section_html(text, "model-comparison")
    for header in ("Balanced accuracy (%)", "COVID-19 sensitivity (%)", "Normal PPV (%)",
                   "ROC AUC (%)", "Brier score", "Flagged OOD (%)"):
        assert f"<th>{header}</th>" in comparison
    assert "mean_" not in comparison and "sensitivity_Covid-19" not in comparison
    # soft-voting has the highest means: bold in every "higher is better" column;
    # the Brier score is best when lowest (cnn).
    rows = {m.group(1): m.group(2) for m in
            __import__("re").finditer(r'<tr><th class="text">([^<]+)</th>(.*?)</tr>', comparison)}
    assert rows["soft-voting"].count("class=best") == 9
    assert rows["cnn"].count("class=best") == 1
    assert f"{100 * table.at['cnn', 'mean_accuracy']:.1f} ± " in rows["cnn"]
    # Times are folded away, not in the main table.
    main_table = comparison[: comparison.index("</table>")]
    assert "Fit time" not in main_table
    assert "<details><summary>Other metrics and times per fold</summary>" in comparison


def test_terminal_table_fits_100_columns():
    table = three_class_table()
    text = skxray.report.format_comparison(table, width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("model") and "Balanced" in lines[0]
    assert sum("*" in line for line in lines[3:7]) >= 1
    assert "soft-voting" in text and "mean ± std" in lines[-1]
    narrow = skxray.report.format_comparison(table, width=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_mean_interval():
    low, high = skxray.report.mean_interval(0.8, 0.05, 5)
    # t(0.975, 4) = 2.776; standard error = 0.05 / sqrt(4)
    assert low == pytest.approx(0.8 - 2.776445 * 0.025, abs=1e-5)
    assert high == pytest.approx(0.8 + 2.776445 * 0.025, abs=1e-5)
    assert skxray.report.mean_interval(0.99, 0.05, 3)[1] == 1.0  # clipped
    assert np.isnan(skxray.report.mean_interval(0.9, 0.1, 1)[0])


def test_summary_names_best_model_with_intervals():
    table = three_class_table()
    report = Report().describe(data="phantoms", protocol="5-fold CV grouped by patient",
                               caveats="Phantoms are not X-rays.")
    report.add_comparison(table)
    assert report.sections[:2] == [("summary", "Summary"), ("model-comparison", "Model comparison")]
    summary = section_html(report.to_html(), "summary")
    assert "Best: <strong>soft-voting</strong>, balanced accuracy 95.0 % (95 % CI" in summary
    assert "5.0 points ahead of resnet50, 90.0 % (95 % CI" in summary
    assert "5-fold CV grouped by patient" in summary and "phantoms" in summary
    assert "Phantoms are not X-rays." in summary
    assert "badge" not in summary  # no check was run


def test_summary_badges_match_the_verdicts():
    from skxray.audit import AuditReport, Finding

    audit = AuditReport([Finding("leakage", "ok", "fine"), Finding("lungs", "fail", "bad")])
    report = Report().add_audit(audit)
    report.add_external_validation(
        {"balanced_accuracy": (0.95, 0.9, 0.98)}, {"balanced_accuracy": (0.7, 0.6, 0.8)},
        shift_verdict="warning", shift_text="The new images differ.", abstention_rate=0.2,
    )
    assert report.sections[:3] == [
        ("summary", "Summary"),
        ("external-validation", "External validation"),
        ("shortcut-and-leakage-audit", "Shortcut and leakage audit"),
    ]
    summary = section_html(report.to_html(), "summary")
    assert '<dt>Audit</dt><dd><span class="badge badge-fail"' in summary
    assert '<dt>Shift test</dt><dd><span class="badge badge-warning"' in summary
    assert "20.0 % of the external images were not classified" in summary
    external = section_html(report.to_html(), "external-validation")
    assert "95.0 (90.0–98.0)" in external and "70.0 (60.0–80.0)" in external
    assert "<td>-25.0</td>" in external
    with pytest.raises(ValueError, match="verdict must be one of"):
        Report().add_verdict("x", "maybe")


def test_detail_is_folded_in_an_appendix(full_report):
    text = full_report.path.read_text(encoding="utf-8")
    appendix = text[text.index('id="appendix-title"'):]
    for sid in ("metrics-fnn-cross-validated", "parameters-cnn", "software-versions"):
        assert f'<section id="{sid}">\n<details><summary><h2>' in appendix
    body = text[: text.index('id="appendix-title"')]
    assert "<details><summary><h2>" not in body
    assert body.index('<section id="summary">') < body.index('<section id="model-comparison">')


def test_cv_figures_overlay_every_model(phantoms):
    X, y, groups = phantoms
    rng = np.random.default_rng(0)
    proba = {}
    for name in ("CNN", "FNN", "Vote"):
        p = rng.uniform(size=len(y))
        proba[name] = np.column_stack([p, 1 - p])
    proba["FNN"][:3] = np.nan  # images in no test fold are left out
    text = Report().add_cv_figures(y, proba).to_html()
    section = section_html(text, "cross-validated-predictions")
    assert section.count("<img ") == 3  # ROC, calibration, one row of confusion matrices
    assert '<div class="row">' in section
    assert 'alt="ROC curves of every model, COVID-19 vs rest"' in section
    with pytest.raises(ValueError, match="has shape"):
        Report().add_cv_figures(y, {"CNN": np.zeros((3, 2))})


def test_grouped_learning_curves_and_gradcam(models, phantoms):
    X, y, _ = phantoms
    cnn, fnn = models
    report = Report().add_learning_curves_grid({"CNN": cnn, "FNN": fnn})
    report.add_gradcam_gallery({"CNN": cnn, "FNN": fnn}, X, y, n=2)
    text = report.to_html()
    assert section_html(text, "learning-curves").count("<img ") == 2
    gallery = section_html(text, "grad-cam")
    assert gallery.count("<img ") == 1 and "No map for FNN" in gallery


def test_external_validation_shows_a_display_figure():
    from skxray.evaluation import ExternalValidationDisplay

    y = np.array(["a"] * 6 + ["b"] * 4)
    y_pred = np.array(["a"] * 5 + ["b"] * 3 + ["a"] * 2)
    display = ExternalValidationDisplay.from_predictions(y, y_pred, classes=["a", "b"])
    report = Report().add_external_validation(
        {"accuracy": display.internal[0]}, {"accuracy": display.external[0]}, figures=[display]
    )
    section = section_html(report.to_html(), "external-validation")
    assert section.count("<img ") == 1 and "70.0" in section  # 7 of 10 right


def test_dataset_summary_draws_the_sizes_through_their_display(phantoms, monkeypatch):
    X, y, _ = phantoms
    sizes = np.column_stack([np.arange(40) + 100, np.full(40, 200)])
    drawn = []
    real = skxray.evaluation.ImageSizesDisplay.from_sizes.__func__

    def spy(cls, heights, widths, **kwargs):
        drawn.append((np.asarray(heights).tolist(), np.asarray(widths).tolist()))
        return real(cls, heights, widths, **kwargs)

    monkeypatch.setattr(skxray.evaluation.ImageSizesDisplay, "from_sizes", classmethod(spy))
    Report().add_dataset_summary(X, y, image_sizes=sizes, n_images=0)
    assert drawn == [(sizes[:, 0].tolist(), sizes[:, 1].tolist())]
    drawn.clear()
    Report().add_dataset_summary(X, y, n_images=0)  # one size: no histogram
    assert drawn == []


def test_external_validation_says_why_images_were_uncertain():
    report = Report().add_external_validation(
        {"accuracy": 0.9}, {"accuracy": 0.7}, abstention_rate=0.25,
        abstention_reasons={"lung check": 3, "distance": 7, "low confidence": 1},
    )
    section = section_html(report.to_html(), "external-validation")
    assert "25.0 % of the external images were not classified" in section
    assert "3 failed the lung check" in section and "7 are unlike the training images" in section
    assert "1 below min_confidence" in section
