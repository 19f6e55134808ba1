"""Tests of the shortcut-learning and data-leakage audit (skxray.audit).

The evidence tests plant each problem the audit should find (a corner marker
present in one class only, one class from a source with another intensity
profile, duplicated images across folds, patient-specific appearance) and
check that the matching finding fires, and that clean phantoms with the
signal in the lungs raise no failure. Images are 32 px phantoms and the
networks tiny, so the whole file runs in well under two minutes on a CPU.
"""

import io
import json
import os
from functools import partial

import _helpers
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.pipeline import make_pipeline

from skxray.audit import CHECKS, DEFAULT_THRESHOLDS, AuditReport, Finding, audit
from skxray.datasets import make_phantom_cxr
from skxray.models import FNNClassifier
from skxray.preprocessing import Rescale

SIZE = 32


tiny_cnn = partial(_helpers.tiny_cnn, filters=(8, 16), max_epochs=20, lr=3e-3, batch_size=16)


def two_scanner_sites(n, names):
    """``n`` healthy phantoms per site; every "Covid-19" one comes from scanner B."""
    XA, _, gA = make_phantom_cxr(
        n, classes=("Normal", "No_findings"), image_size=SIZE, random_state=0, return_groups=True
    )
    XB, _, gB = make_phantom_cxr(
        n,
        classes=("Normal", "No_findings"),
        scanner="B",
        image_size=SIZE,
        random_state=1,
        return_groups=True,
    )
    X = np.concatenate([XA, XB])
    y = np.array(["No_findings"] * n + ["Covid-19"] * n, dtype=object)
    groups = np.concatenate([gA, gB + 1000])
    sources = np.array([names[0]] * n + [names[1]] * n)
    return X, y, groups, sources


def balanced_sites(y, groups, n_sites, seed):
    """Assign patients to sites so that every site holds every class equally."""
    rng = np.random.default_rng(seed)
    site = {}
    for label in np.unique(y):
        for i, patient in enumerate(rng.permutation(np.unique(groups[y == label]))):
            site[patient] = f"site{i % n_sites + 1}"
    return np.array([site[p] for p in groups], dtype=object)


@pytest.fixture(scope="module")
def clean_report():
    """Full audit of clean phantoms: COVID-like opacities in the lungs, no marker."""
    X, y, groups = make_phantom_cxr(90, image_size=SIZE, random_state=0, return_groups=True)
    sources = balanced_sites(y, groups, 3, seed=0)
    return audit(tiny_cnn(), X, y, groups=groups, sources=sources, cv=3, random_state=0)


# ------------------------------------------------------------- evidence


def test_clean_phantoms_raise_no_failure(clean_report):
    verdicts = {f.name: f.verdict for f in clean_report.findings}
    assert [f.name for f in clean_report.findings] == list(CHECKS)
    assert "fail" not in verdicts.values(), str(clean_report)
    lungs = clean_report["lungs"].figures
    # The model learned the lung signal, and loses it with the lungs hidden.
    assert lungs["balanced_accuracy"] >= 0.9
    assert lungs["lungs_masked_balanced_accuracy"] < DEFAULT_THRESHOLDS["lungs_masked_fail"]
    assert lungs["borders_masked_balanced_accuracy"] >= lungs["balanced_accuracy"] - 0.1
    # Sites assigned independently of the label: nothing confounded.
    sources = clean_report["sources"].figures
    assert sources["label_from_source_balanced_accuracy"] == pytest.approx(0.5)
    assert sources["loso_sources_tested"] == 3
    assert clean_report["duplicates"].figures["n_pairs"] == 0
    # In-distribution held-out phantoms: few flagged out of distribution.
    assert 0 <= clean_report["calibration"].figures["ood_rate"] <= 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_corner_marker_shortcut_is_flagged(seed):
    # Both classes have clear lungs: the marker in the top-left corner of
    # every "Normal" image is the only thing that tells them apart.
    X, y, groups = make_phantom_cxr(
        60,
        classes=("Normal", "No_findings"),
        marker_class="Normal",
        image_size=SIZE,
        random_state=seed,
        return_groups=True,
    )
    report = audit(tiny_cnn(), X, y, groups=groups, cv=3, random_state=0, checks=["lungs"])
    lungs = report["lungs"]
    assert lungs.verdict == "fail", str(report)
    assert lungs.figures["balanced_accuracy"] >= 0.9
    assert lungs.figures["lungs_masked_balanced_accuracy"] >= 0.8
    assert lungs.figures["border_drop"] >= 0.3
    assert "outside the lungs" in lungs.explanation
    assert report.verdict == "fail"


def test_source_with_other_intensity_profile_is_flagged():
    # Every "Covid-19" image comes from scanner B (another intensity curve,
    # noise, field of view and a text block); both classes have clear lungs.
    X, y, groups, sources = two_scanner_sites(30, ("hospital A", "hospital B"))
    report = audit(
        tiny_cnn(),
        X,
        y,
        groups=groups,
        sources=sources,
        cv=3,
        random_state=0,
        checks=["sources", "lungs"],
    )
    src = report["sources"]
    assert src.verdict == "fail", str(report)
    assert src.figures["each_class_single_source"] is True
    assert src.figures["label_from_source_balanced_accuracy"] == 1.0
    assert src.figures["source_predictor_balanced_accuracy"] >= 0.9
    assert src.details["contingency"].loc["Covid-19", "hospital B"] == 30
    assert "hospital" in src.explanation
    # The scanner's look is everywhere, so the lungs-hidden model still works.
    assert report["lungs"].verdict in ("warning", "fail")
    assert report["lungs"].figures["lungs_masked_balanced_accuracy"] >= 0.65


def _jpeg(img, quality=70):
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def _shift(img, dy, dx):
    """Move the content by (dy, dx) pixels; the uncovered edge is black."""
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_planted_duplicates_are_all_found_and_distinct_phantoms_give_none():
    n = 80
    X, y, groups = make_phantom_cxr(
        n, image_size=SIZE, n_patients=n, random_state=3, return_groups=True
    )
    # Distinct phantoms (one image per patient): nothing to report.
    clean = audit(None, X, y, groups=groups, cv=3, random_state=0, checks=["duplicates"])
    assert clean["duplicates"].figures["n_pairs"] == 0
    assert clean["duplicates"].verdict == "ok"
    assert len(clean["duplicates"].details["pairs"]) == 0

    rng = np.random.default_rng(0)
    planted = {
        0: X[0].copy(),  # exact copy
        1: np.clip(X[1] + rng.normal(0, 0.01, X[1].shape), 0, 1),  # light noise
        2: _shift(X[2], 0, 1),  # 1 px shift
        3: _jpeg(X[3]),  # re-encoded
        4: np.clip(X[4] * 1.05, 0, 1),  # 5% brighter
        5: _shift(X[5], 1, -1),  # diagonal shift
    }
    copies = np.stack(list(planted.values())).astype(np.float32)
    X2 = np.concatenate([X, copies])
    y2 = np.concatenate([y, y[list(planted)]])
    # Each copy is filed under a new patient, as in a re-merged data set.
    groups2 = np.concatenate([groups, np.arange(len(planted)) + 10_000])
    report = audit(None, X2, y2, groups=groups2, cv=3, random_state=0, checks=["duplicates"])
    dup = report["duplicates"]
    pairs = dup.details["pairs"]
    found = set(zip(pairs["i"], pairs["j"]))
    expected = {(src, n + k) for k, src in enumerate(planted)}
    assert found == expected
    assert dup.figures["n_pairs"] == len(planted)
    assert not pairs["same_patient"].any()
    assert (pairs["distance"] <= 20).all()
    assert dup.figures["n_across_folds"] == int(pairs["across_folds"].sum()) > 0
    assert dup.verdict == "fail"
    assert "across training and test folds" in dup.explanation


def test_duplicate_across_classes_is_a_label_conflict():
    X, y = make_phantom_cxr(30, image_size=SIZE, n_patients=30, random_state=4)
    other = next(label for label in np.unique(y) if label != y[0])
    X2 = np.concatenate([X, X[:1]])
    y2 = np.concatenate([y, [other]])
    report = audit(None, X2, y2, cv=3, random_state=0, checks=["duplicates"])
    dup = report["duplicates"]
    assert dup.figures["n_pairs"] == 1
    assert dup.figures["n_across_classes"] == 1
    assert dup.verdict == "fail"


def _leaky_phantoms(seed):
    """No disease signal, but each patient has a look of its own and one label."""
    X, y, groups = make_phantom_cxr(
        72,
        classes=("Normal", "No_findings"),
        n_patients=12,
        image_size=SIZE,
        random_state=seed,
        return_groups=True,
    )
    rng = np.random.default_rng(seed)
    look = {p: np.kron(rng.normal(0, 1, (4, 4)), np.ones((8, 8))) for p in np.unique(groups)}
    X = np.clip(X + 0.08 * np.stack([look[p] for p in groups]), 0, 1).astype(np.float32)
    return X, y, groups


def test_patient_leakage_shows_a_gap():
    X, y, groups = _leaky_phantoms(0)
    report = audit(tiny_cnn(), X, y, groups=groups, cv=3, random_state=0, checks=["leakage"])
    leak = report["leakage"]
    figs = leak.figures
    assert figs["image_level_balanced_accuracy"] >= 0.85
    assert figs["gap"] >= DEFAULT_THRESHOLDS["leakage_gap_fail"]
    assert figs["image_level_balanced_accuracy"] > figs["grouped_balanced_accuracy"]
    assert figs["n_patients"] == 12
    assert figs["images_per_patient_max"] >= 5
    assert leak.verdict == "fail"
    assert "inflated" in leak.explanation
    assert report.info["n_fits"] == 6  # image-level and grouped CV, nothing else


def test_leakage_without_patient_ids_is_a_warning():
    X, y = make_phantom_cxr(30, image_size=SIZE, random_state=0)
    report = audit(tiny_cnn(max_epochs=2), X, y, cv=2, random_state=0, checks=["leakage"])
    leak = report["leakage"]
    assert leak.verdict == "warning"
    assert "No patient ids" in leak.explanation
    assert leak.figures["grouped_balanced_accuracy"] is None
    assert report.info["n_fits"] == 2


# ------------------------------------------------------------- report API


def test_report_prints_as_a_table(clean_report):
    text = str(clean_report)
    assert text.startswith("Shortcut and leakage audit of CNNClassifier")
    assert f"Overall verdict: {clean_report.verdict.upper()}" in text
    for finding in clean_report.findings:
        assert finding.title in text
        assert finding.summary in text
    assert "Key figures" in text
    assert repr(clean_report).startswith("AuditReport(verdict=")


def test_report_exports_to_dict_and_json(clean_report, tmp_path):
    d = clean_report.to_dict()
    assert d["verdict"] == clean_report.verdict
    assert [f["name"] for f in d["findings"]] == list(CHECKS)
    assert d["info"]["n_samples"] == 90
    assert d["info"]["class_counts"] == {"Covid-19": 45, "Normal": 45}
    text = clean_report.to_json()
    assert json.loads(text) == d
    path = tmp_path / "audit.json"
    clean_report.to_json(path)
    assert json.loads(path.read_text(encoding="utf-8")) == d
    lungs = next(f for f in d["findings"] if f["name"] == "lungs")
    assert {"balanced_accuracy", "lungs_masked_balanced_accuracy", "gradcam_lung_share"} <= set(
        lungs["figures"]
    )
    assert [row["images"] for row in lungs["details"]["masking"]] == [
        "unmasked",
        "lungs masked",
        "borders masked",
    ]
    calib = next(f for f in d["findings"] if f["name"] == "calibration")
    assert calib["details"]["calibration_curve"]
    assert 0 <= calib["figures"]["brier_score"] <= 1


def test_report_renders_self_contained_html(clean_report):
    fragment = clean_report.to_html()
    assert fragment.startswith('<section class="skxray-audit">')
    assert fragment.rstrip().endswith("</section>")
    assert fragment.count("data:image/png;base64,") >= 3  # masking, Grad-CAM, calibration
    assert "http://" not in fragment and "https://" not in fragment
    for finding in clean_report.findings:
        assert finding.title in fragment
    assert clean_report._repr_html_() == fragment


def test_html_escapes_labels():
    X, y = make_phantom_cxr(12, image_size=SIZE, random_state=0)
    y = np.where(y == "Normal", "<script>alert(1)</script>", y)
    X2, y2 = np.concatenate([X, X[:1]]), np.concatenate([y, y[:1]])
    report = audit(None, X2, y2, cv=2, random_state=0, checks=["duplicates"])
    fragment = report.to_html()
    assert "<script>" not in fragment
    assert "&lt;script&gt;" in fragment


def test_finding_and_verdict_accessors(clean_report):
    assert isinstance(clean_report, AuditReport)
    assert all(isinstance(f, Finding) for f in clean_report)
    assert len(clean_report) == len(CHECKS)
    order = ["ok", "warning", "fail"]
    worst = max((f.verdict for f in clean_report), key=order.index)
    assert clean_report.verdict == worst
    with pytest.raises(KeyError, match="No finding 'nope'"):
        clean_report["nope"]
    assert AuditReport([]).verdict == "ok"
    report = AuditReport(
        [
            Finding("leakage", "ok", "a"),
            Finding("lungs", "fail", "b"),
            Finding("sources", "warning", "c"),
        ]
    )
    assert report.verdict == "fail"


def test_sections_and_facts_give_the_html_content_as_data(clean_report):
    sections = clean_report.sections()
    assert [s.name for s in sections] == [f.name for f in clean_report]
    lungs = clean_report.sections()[CHECKS.index("lungs")]
    assert lungs.title == "4. Where the model looks"
    assert lungs.verdict == clean_report["lungs"].verdict
    assert ("chance", "0.500") in lungs.figures
    assert [caption for caption, _ in lungs.tables] == ["masking"]
    assert len(lungs.plots) == 2 and all(alt and png for alt, png in lungs.plots)
    assert clean_report.sections(plots=False)[CHECKS.index("lungs")].plots == []
    facts = dict(clean_report.facts())
    assert facts["Images"] == str(clean_report.info["n_samples"])
    assert facts["Model"] == "CNNClassifier"
    # The body without the <section> and heading that a host page supplies itself.
    body = clean_report.to_html(wrap=False)
    assert "<section" not in body and "<h2>" not in body
    assert clean_report.to_html(wrap=False).split("\n")[0] == clean_report.to_html().split("\n")[2]
    assert AuditReport.title == "Shortcut and leakage audit"


def test_html_sections_are_the_page_in_pieces():
    # A host page (Report.add_audit) lays the pieces out without reading the HTML.
    report = AuditReport(
        [Finding("leakage", "ok", "fine <a>", figures={"gap": 0.0}), Finding("lungs", "fail", "bad")],
        info={"estimator": "CNN", "n_samples": 10},
    )
    pieces = report.html_sections()
    assert [(p.title, p.detail) for p in pieces] == [
        ("Overview", False), ("1. Patient leakage", True), ("4. Where the model looks", True)
    ]
    overview, leakage, lungs = pieces
    assert "Overall verdict" in overview.html and "<h3>" not in overview.html
    assert overview.html.count('class="badge badge-') == 3  # overall and one per check
    assert leakage.html.startswith("<h3>1. Patient leakage <span class=\"badge badge-ok\"")
    assert "fine &lt;a&gt;" in leakage.html and "badge-fail" in lungs.html
    assert report.to_html(wrap=False) == "\n".join(p.html for p in pieces)


def test_section_tables_are_cut_at_50_rows():
    frame = pd.DataFrame({"i": range(60)})
    report = AuditReport([Finding("duplicates", "warning", "x", figures={"n": None}, details={"pairs": frame})])
    (section,) = report.sections()
    assert section.figures == [("n", "n/a")]
    ((caption, shown),) = section.tables
    assert caption == "pairs (first 50 of 60 rows)" and len(shown) == 50


@pytest.mark.parametrize(
    "checks, expected",
    [
        (["duplicates"], ["duplicates"]),
        ("duplicates", ["duplicates"]),
        (["calibration", "duplicates"], ["duplicates", "calibration"]),
    ],
)
def test_checks_subset(checks, expected):
    X, y, groups = make_phantom_cxr(24, image_size=SIZE, random_state=0, return_groups=True)
    estimator = tiny_cnn(max_epochs=2)
    report = audit(estimator, X, y, groups=groups, cv=2, random_state=0, checks=checks)
    assert [f.name for f in report.findings] == expected
    assert report.info["checks"] == expected
    assert report.info["n_fits"] == (2 if "calibration" in expected else 0)
    assert not hasattr(estimator, "classes_")  # the audit fits clones only


def test_sources_without_source_labels_is_a_warning_and_costs_nothing():
    X, y = make_phantom_cxr(24, image_size=SIZE, random_state=0)
    report = audit(tiny_cnn(max_epochs=2), X, y, cv=2, checks=["sources"])
    assert report["sources"].verdict == "warning"
    assert "No source labels" in report["sources"].explanation
    assert report.info["n_fits"] == 0


def test_fnn_has_no_gradcam_but_is_still_masked():
    X, y = make_phantom_cxr(30, image_size=SIZE, random_state=0)
    fnn = FNNClassifier(hidden_layer_sizes=(16,), max_epochs=2, random_state=0)
    report = audit(fnn, X, y, cv=2, random_state=0, checks=["lungs"])
    figs = report["lungs"].figures
    assert figs["gradcam_lung_share"] is None
    assert "TypeError" in figs["gradcam_unavailable"]
    assert figs["lungs_masked_balanced_accuracy"] is not None
    assert "mean_gradcam" not in report["lungs"].arrays


@pytest.mark.parametrize(
    ("region", "words"),
    [("segmenter", "lung segmenter"), ("ellipse", "ellipse lung prior")],
)
def test_the_lungs_check_names_the_region_it_used(region, words):
    X, y = make_phantom_cxr(30, image_size=SIZE, random_state=0)
    fnn = FNNClassifier(hidden_layer_sizes=(16,), max_epochs=2, random_state=0)
    report = audit(fnn, X, y, cv=2, random_state=0, checks=["lungs"], lung_region=region)
    lungs = report["lungs"]
    assert lungs.figures["lung_region"] == region
    assert words in lungs.explanation
    assert report.info["lung_region"] == region


def test_clean_report_used_the_segmenter_lungs(clean_report):
    figs = clean_report["lungs"].figures
    assert figs["lung_region"] == "segmenter"
    # The phantoms' lungs, not the whole image and not nothing.
    assert 0.15 < figs["lung_area_share"] < 0.6
    assert clean_report["lungs"].arrays["lung_mask"].dtype == bool


def test_bad_lung_region_is_refused():
    X, y = make_phantom_cxr(12, image_size=SIZE, random_state=0)
    with pytest.raises(ValueError, match="lung_region must be one of"):
        audit(None, X, y, checks=["duplicates"], lung_region="hull")


def test_pipeline_and_file_paths(tmp_path):
    X, y, groups = make_phantom_cxr(24, image_size=SIZE, random_state=0, return_groups=True)
    paths = []
    for i, img in enumerate(np.concatenate([X, X[:1]])):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
        paths.append(os.fspath(path))
    y2 = np.concatenate([y, y[:1]])
    g2 = np.concatenate([groups, [999]])
    model = make_pipeline(Rescale(), tiny_cnn(max_epochs=2))
    report = audit(
        model,
        paths,
        y2,
        groups=g2,
        cv=2,
        random_state=0,
        image_size=SIZE,
        checks=["duplicates", "lungs"],
    )
    assert report.info["image_shape"] == [SIZE, SIZE]
    pairs = report["duplicates"].details["pairs"]
    assert list(zip(pairs["i"], pairs["j"])) == [(0, 24)]
    assert pairs["path_j"].iloc[0] == paths[24]
    # Grad-CAM reaches the CNN at the end of the pipeline.
    assert report["lungs"].figures["gradcam_lung_share"] is not None


def test_duplicate_within_one_patient_is_only_a_warning():
    X, y, groups = make_phantom_cxr(40, image_size=SIZE, random_state=0, return_groups=True)
    X2, y2 = np.concatenate([X, X[:1]]), np.concatenate([y, y[:1]])
    g2 = np.concatenate([groups, groups[:1]])  # same patient, so same fold
    report = audit(None, X2, y2, groups=g2, cv=2, random_state=0, checks=["duplicates"])
    dup = report["duplicates"]
    assert dup.figures["n_pairs"] == 1
    assert dup.details["pairs"]["same_patient"].all()
    assert dup.figures["n_across_folds"] == 0
    assert dup.verdict == "warning"
    exact = audit(
        None, X2, y2, groups=g2, cv=2, random_state=0, checks=["duplicates"], duplicate_distance=0
    )
    assert exact["duplicates"].figures["n_pairs"] == 1  # an exact copy is at distance 0


def test_thresholds_change_the_verdict():
    X, y, groups = make_phantom_cxr(24, image_size=SIZE, random_state=0, return_groups=True)
    kwargs = dict(groups=groups, cv=2, random_state=0, checks=["calibration"])
    strict = {"ece_warning": 0.0, "ece_fail": 0.0, "fold_balance_warning": 1.0}
    report = audit(tiny_cnn(max_epochs=2), X, y, thresholds=strict, **kwargs)
    assert report["calibration"].verdict == "fail"
    assert report.info["thresholds"]["ece_fail"] == 0.0
    assert report.info["thresholds"]["leakage_gap_fail"] == DEFAULT_THRESHOLDS["leakage_gap_fail"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cv": 1}, "cv must be an int >= 2"),
        ({"cv": "3"}, "cv must be an int >= 2"),
        ({"checks": ["nope"]}, "unknown: \\['nope'\\]"),
        ({"checks": []}, "non-empty subset"),
        ({"thresholds": {"nope": 1}}, "Unknown threshold"),
        ({"thresholds": {"ece_warning": 0.5, "ece_fail": 0.2}}, "must not exceed"),
        ({"thresholds": {"ece_fail": float("nan")}}, "finite number"),
        ({"thresholds": [1]}, "thresholds must be a dict"),
        ({"duplicate_distance": -1}, "duplicate_distance"),
        ({"hash_size": 2}, "hash_size"),
        ({"border_fraction": 0.5}, "border_fraction"),
        ({"n_bins": 1}, "n_bins"),
        ({"source_model": "magic"}, "source_model"),
        ({"groups": np.arange(5)}, "groups must have one entry per image"),
        ({"sources": ["a"] * 5}, "sources must have one entry per image"),
        ({"sources": [None] * 24}, "sources has missing values"),
        ({"cv": 20}, "at least cv=20 patients"),
    ],
)
def test_bad_parameters(kwargs, match):
    X, y, groups = make_phantom_cxr(24, image_size=SIZE, random_state=0, return_groups=True)
    params = {"groups": groups, "cv": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        audit(tiny_cnn(max_epochs=1), X, y, **params)


def test_bad_data():
    X, y = make_phantom_cxr(12, image_size=SIZE, random_state=0)
    with pytest.raises(ValueError, match="y must have one label per image"):
        audit(tiny_cnn(), X, y[:5], cv=2)
    with pytest.raises(ValueError, match="at least two classes"):
        audit(tiny_cnn(), X, np.array(["a"] * 12), cv=2)
    with pytest.raises(ValueError, match="estimator must be an unfitted classifier"):
        audit(None, X, y, cv=2, checks=["lungs"])
    with pytest.raises(ValueError, match="X must have shape"):
        audit(None, X[:, 0], y, cv=2, checks=["duplicates"])


def test_source_model_can_be_the_estimator():
    X, y, groups, sources = two_scanner_sites(16, ("A", "B"))
    report = audit(
        tiny_cnn(max_epochs=5),
        X,
        y,
        groups=groups,
        sources=sources,
        cv=2,
        random_state=0,
        checks=["sources"],
        source_model="estimator",
    )
    figs = report["sources"].figures
    assert figs["source_predictor"] == "the audited estimator"
    assert figs["source_predictor_balanced_accuracy"] is not None
    # No class spans two sources: no grouped CV, no leave-one-source-out, only the source model.
    assert report.info["n_fits"] == 2
    assert figs["loso_sources_tested"] == 0


@pytest.mark.slow
def test_audit_page_examples_print_what_the_page_shows():
    # docs/audit.rst shows no hand-written output: its examples are doctests,
    # run here, so a change in the audit's figures or wording fails this test
    # instead of leaving the page out of date.
    import doctest
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "audit.rst"
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
    )
    assert result.attempted >= 20
    assert result.failed == 0, f"{result.failed} example(s) of {page.name} failed (output above)"


# ------------------------------------------------------------ the public measures
def test_public_measures_hide_what_they_say():
    from skxray.audit import border_masked, lung_masked, proba_in_order, two_class_scale

    X = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    lungs = np.zeros((6, 6), dtype=bool)
    lungs[2:4, 1:5] = True
    hidden = lung_masked(X, lungs)
    # Each image's lungs take the mean of the rest of that image; the rest stays.
    for i in range(2):
        assert np.allclose(hidden[i][lungs], X[i][~lungs].mean())
    np.testing.assert_array_equal(hidden[:, ~lungs], X[:, ~lungs])
    np.testing.assert_array_equal(lung_masked(X, np.stack([lungs, lungs])), hidden)
    borders = border_masked(X, 1 / 6)  # a band of one pixel
    assert (borders[:, [0, -1], :] == 0).all() and (borders[:, :, [0, -1]] == 0).all()
    np.testing.assert_array_equal(borders[:, 1:-1, 1:-1], X[:, 1:-1, 1:-1])
    assert two_class_scale(0.5, 2) == 0.5 and two_class_scale(float("nan"), 3) is None

    class Fold:  # a model that never saw class "c" and orders its columns its own way
        classes_ = np.array(["b", "a"])

        def predict_proba(self, X):
            return np.tile([0.25, 0.75], (len(X), 1))

    np.testing.assert_array_equal(proba_in_order(Fold(), X, ["a", "b", "c"]), [[0.75, 0.25, 0.0]] * 2)


def test_audit_plots_are_drawn_by_the_audit_displays(clean_report):
    from skxray.audit import AuditCalibrationDisplay, LungGradCAMDisplay, LungMaskingDisplay

    lungs = clean_report["lungs"]
    masking, gradcam = lungs.displays()
    assert isinstance(masking, LungMaskingDisplay) and isinstance(gradcam, LungGradCAMDisplay)
    heights = [bar.get_height() for bar in masking.bars_]
    assert heights == pytest.approx(lungs.details["masking"]["balanced_accuracy"].tolist())
    np.testing.assert_array_equal(gradcam.heatmap, lungs.arrays["mean_gradcam"])
    (calibration,) = clean_report["calibration"].displays()
    assert isinstance(calibration, AuditCalibrationDisplay)
    curve = clean_report["calibration"].details["calibration_curve"]
    assert calibration.line_.get_ydata().tolist() == pytest.approx(
        curve["fraction_positive"].tolist())
    assert [alt for alt, _ in lungs.plots()] == [masking.alt_text, gradcam.alt_text]
