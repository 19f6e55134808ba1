"""The audit's figures are displays: data taken from a finding once, drawn on any axes."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from skxray.audit import (
    AuditCalibrationDisplay,
    Finding,
    LabelIssuesDisplay,
    LungGradCAMDisplay,
    LungMaskingDisplay,
)

MASKING = pd.DataFrame({"images": ["unmasked", "lungs masked", "borders masked"],
                        "balanced_accuracy": [0.9, 0.62, 0.85]})
CURVE = pd.DataFrame({"mean_predicted": [0.1, 0.45, 0.9], "fraction_positive": [0.2, 0.4, 0.95]})


def lungs_finding(with_gradcam=True):
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:13, 2:7] = mask[3:13, 9:14] = True
    arrays = {"mean_gradcam": rng.random((16, 16)), "lung_mask": mask,
              "mean_image": rng.random((16, 16))} if with_gradcam else {}
    return Finding("lungs", "ok", "x", figures={"chance": 1 / 3}, details={"masking": MASKING},
                   arrays=arrays)


def labels_finding(n=7, files=True):
    suspects = pd.DataFrame({
        "rank": range(1, n + 1), "image": [10 + i for i in range(n)],
        "given": ["Normal"] * n, "suggested": ["Covid-19"] * n,
        "label_quality": np.linspace(0.01, 0.3, n),
    })
    if files:
        suspects.insert(2, "file", [f"patient_{i:03d}_a_rather_long_name.png" for i in range(n)])
    images = np.random.default_rng(1).random((n, 1, 12, 12))  # channels first
    return Finding("labels", "warning", "x", details={"suspects": suspects},
                   arrays={"suspect_images": images})


def grid(n):
    fig = Figure()
    return fig, np.asarray(fig.subplots(1, n), dtype=object).reshape(-1)


def test_masking_display_draws_the_table_and_redraws_without_the_finding():
    finding = lungs_finding()
    disp = LungMaskingDisplay.from_finding(finding)
    assert [b.get_height() for b in disp.bars_] == [0.9, 0.62, 0.85]
    assert [t.get_text() for t in disp.ax_.get_xticklabels()] == list(MASKING["images"])
    chance = [line for line in disp.ax_.lines if line.get_linestyle() == "--"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(1 / 3)
    assert disp.figure_.get_size_inches().tolist() == [4.2, 2.6]
    finding.details.clear()  # plot draws what from_finding took, not the finding
    for _ in range(2):
        fig, (ax,) = grid(1)
        assert disp.plot(ax=ax) is disp and disp.ax_ is ax and disp.figure_ is fig
        assert [b.get_height() for b in disp.bars_] == [0.9, 0.62, 0.85]


def test_gradcam_display_outlines_the_lungs_on_both_panels():
    finding = lungs_finding()
    disp = LungGradCAMDisplay.from_finding(finding)
    assert len(disp.axes_) == 2 and len(disp.figure_.axes) == 2
    heat = disp.axes_[1].images[0].get_array()
    np.testing.assert_array_equal(heat, finding.arrays["mean_gradcam"])
    np.testing.assert_array_equal(disp.axes_[0].images[0].get_array(), finding.arrays["mean_image"])
    for ax in disp.axes_:  # the lung field's outline
        assert [type(c).__name__ for c in ax.collections] == ["QuadContourSet"]
    finding.arrays.clear()
    for _ in range(2):
        fig, axes = grid(2)
        disp.plot(ax=axes)
        assert disp.figure_ is fig and list(disp.axes_) == list(axes)
        np.testing.assert_array_equal(axes[1].images[0].get_array(), heat)
    # No mean image: a black one, as the page drew before.
    finding = lungs_finding()
    del finding.arrays["mean_image"]
    disp = LungGradCAMDisplay.from_finding(finding)
    assert not disp.axes_[0].images[0].get_array().any()


def test_calibration_display_draws_the_audit_bins():
    finding = Finding("calibration", "ok", "x", figures={"curve_of": "P(Covid-19)"},
                      details={"calibration_curve": CURVE})
    disp = AuditCalibrationDisplay.from_finding(finding)
    assert disp.line_.get_xdata().tolist() == CURVE["mean_predicted"].tolist()
    assert disp.line_.get_ydata().tolist() == CURVE["fraction_positive"].tolist()
    assert disp.ax_.get_xlabel() == "P(Covid-19)"
    finding.details.clear()
    for _ in range(2):
        fig, (ax,) = grid(1)
        disp.plot(ax=ax)
        assert disp.ax_ is ax and disp.line_.get_ydata().tolist() == [0.2, 0.4, 0.95]
        assert len(ax.lines) == 2  # the diagonal and the curve


def test_label_issues_display_titles_each_suspect():
    finding = labels_finding()
    disp = LabelIssuesDisplay.from_finding(finding)
    assert len(disp.axes_) == 7
    assert len(disp.figure_.axes) == 12  # two rows of six; the blank cells stay blank
    assert disp.axes_[0].get_title() == (
        "1. patient_00..._name.png\nNormal -> Covid-19\nquality 0.01")
    assert disp.alt_text.startswith(
        "Top suspected label issues: patient_000_a_rather_long_name.png given Normal, "
        "suggested Covid-19; ")
    # Channels first: the thumbnail is their mean.
    np.testing.assert_allclose(disp.axes_[0].images[0].get_array(),
                               finding.arrays["suspect_images"][0].mean(axis=0))
    titles = [ax.get_title() for ax in disp.axes_]
    finding.arrays.clear()
    for _ in range(2):
        fig, axes = grid(8)
        disp.plot(ax=axes)
        assert [ax.get_title() for ax in disp.axes_] == titles
        assert axes[7].get_title() == "" and not axes[7].images  # extra axes untouched
    unnamed = LabelIssuesDisplay.from_finding(labels_finding(2, files=False))
    assert unnamed.axes_[1].get_title().startswith("2. image 11\n")
    with pytest.raises(ValueError, match="at least 2 axes"):
        unnamed.plot(ax=grid(1)[1])


def test_from_finding_names_the_wrong_or_empty_finding():
    with pytest.raises(ValueError, match="must be the 'lungs' finding; got 'labels'"):
        LungMaskingDisplay.from_finding(labels_finding())
    with pytest.raises(ValueError, match="LungGradCAMDisplay.from_finding: .* no mean Grad-CAM"):
        LungGradCAMDisplay.from_finding(lungs_finding(with_gradcam=False))
    with pytest.raises(ValueError, match="no calibration curve"):
        AuditCalibrationDisplay.from_finding(Finding("calibration", "ok", "x"))
    with pytest.raises(ValueError, match="no suspect"):
        LabelIssuesDisplay.from_finding(Finding("labels", "ok", "x"))


def test_finding_plots_are_the_displays_figures():
    assert [type(d) for d in lungs_finding().displays()] == [LungMaskingDisplay,
                                                              LungGradCAMDisplay]
    assert [type(d) for d in lungs_finding(with_gradcam=False).displays()] == [LungMaskingDisplay]
    assert Finding("labels", "ok", "x").displays() == []  # no suspect: no gallery
    assert Finding("leakage", "ok", "x").plots() == []
    plots = lungs_finding().plots()
    assert [alt for alt, _ in plots] == [
        "Balanced accuracy with lungs or borders masked",
        "Mean Grad-CAM heatmap with the lung field outlined",
    ]
    assert all(png.startswith("iVBORw0KGgo") for _, png in plots)  # base64 of a PNG
    (alt, _), = labels_finding(3).plots()
    assert alt == LabelIssuesDisplay.from_finding(labels_finding(3)).alt_text
