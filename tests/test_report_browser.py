"""The demo report in headless Chromium at 1280 px: short, not too wide, no errors.

Skipped (with the reason) when no Chromium is installed, except on CI
(``CI=true``), where a missing browser is a failure: ``.ci/run`` installs
Chromium from apt when it is missing, so CI runs the check a developer's
machine may skip. Nothing is installed here. ``make report-check`` runs the
same checks from benchmarks/report_check.py.
"""

import importlib.util
import os
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report_check.py"
_spec = importlib.util.spec_from_file_location("report_check", _SCRIPT)
report_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_check)

CHROMIUM = report_check.find_chromium()
IN_CI = os.environ.get("CI", "").lower() == "true"
MISSING = "no Chromium found (apt-get install chromium, or set SKXRAY_CHROMIUM)"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI, reason=f"{MISSING}: the browser check of the report is skipped"
)


@pytest.fixture(scope="module")
def chromium():
    """The browser; on CI (CI=true) its absence fails the tests instead of skipping them."""
    if CHROMIUM is None:
        pytest.fail(f"{MISSING}, and CI=true: CI must run the report's browser check "
                    "(.ci/run installs Chromium with apt-get when it can)")
    return CHROMIUM


@pytest.fixture(scope="module")
def demo(tmp_path_factory, chromium):
    """A small demo report: phantoms, CNN + FNN + their vote, 2 folds, 1 epoch, 32 px."""
    out = tmp_path_factory.mktemp("demo")
    path = report_check.build_small_demo(out)
    return path, report_check.measure(path, chromium)


def test_demo_report_reads_in_a_browser(demo):
    path, result = demo
    assert report_check.problems(result, max_height=6000, max_mb=1.5) == []
    assert result["height"] <= 6000
    assert result["scroll_width"] <= 1280 and result["wide"] == []
    assert result["console_errors"] == []
    assert result["n_images"] >= 6 and result["broken_images"] == []
    assert result["n_details"] >= 5  # metrics, parameters, versions ... folded


def test_check_catches_a_bad_page(tmp_path, chromium):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><div style='width:2000px;height:7000px'>wide</div>"
        "<img src='data:image/png;base64,AAAA' alt='broken'>"
        "<script>console.error('boom')</script></body></html>",
        encoding="utf-8",
    )
    found = " ".join(report_check.problems(report_check.measure(page, chromium)))
    assert "tall" in found and "wider than 1280" in found
    assert "images not loaded" in found and "console errors" in found
