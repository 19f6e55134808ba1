"""Render skxray HTML reports in headless Chromium and check that people can read them.

For each report it checks, at a 1280 px wide window with every ``<details>``
block closed:

* the page is at most ``--max-height`` CSS pixels tall (default 6000);
* nothing is wider than the window: the page does not scroll sideways and no
  table needs a horizontal scroll bar;
* the browser console shows no error;
* every image loaded (``complete`` with a natural width > 0);
* the file is self-contained (no http/https URL) and at most ``--max-mb``.

It optionally saves a screenshot of the first screen (``--screenshot``).

Nothing is installed: Chromium is looked up on the PATH (``chromium``,
``chromium-browser``, ``google-chrome``) or taken from ``$SKXRAY_CHROMIUM``;
without it the script says so and exits with status 0 (``--require`` makes
that status 3). The measurements are read with a small script added to a
temporary copy of the page; the report itself holds no script.

Usage::

    python benchmarks/report_check.py demo-report/report.html [more.html ...]
    python benchmarks/report_check.py --build /tmp/report-check   # a small demo first

``make report-check`` runs the second form.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1280
SCREEN_HEIGHT = 800
#: Added first in <head>: collects console.error calls, script errors and failed loads.
_CATCH = """<script>
window.__errors = [];
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    var t = e.target;
    window.__errors.push(e.message ? "error: " + e.message
      : "failed to load: " + ((t && (t.src || t.href)) || "?").slice(0, 80));
  }, true);
})();
</script>
"""
_MEASURE = """
<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = false; });
  var W = window.innerWidth, doc = document.documentElement;
  var wide = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 1 && !el.closest("details:not([open]) > :not(summary)")) {
      wide.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " right=" + Math.round(r.right));
    }
    if (el.classList.contains("table-wrap") && el.scrollWidth > el.clientWidth + 1) {
      wide.push("table-wrap needs scrolling: " + el.scrollWidth + " > " + el.clientWidth);
    }
  });
  var broken = [];
  document.querySelectorAll("img").forEach(function (img, i) {
    if (!img.complete || img.naturalWidth === 0) { broken.push(i + ": " + (img.alt || "")); }
  });
  var out = document.createElement("pre");
  out.id = "skxray-report-check";
  out.textContent = JSON.stringify({
    height: Math.max(doc.scrollHeight, document.body.scrollHeight),
    scroll_width: doc.scrollWidth, viewport: W, wide: wide.slice(0, 20),
    n_images: document.images.length, broken_images: broken,
    n_details: document.querySelectorAll("details").length, errors: window.__errors,
    n_sections: document.querySelectorAll("section").length
  });
  document.body.appendChild(out);
});
</script>
"""


def find_chromium():
    """Path of a Chromium executable, or None."""
    env = os.environ.get("SKXRAY_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags(profile):
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{SCREEN_HEIGHT}",
    ]


def measure(html_path, chromium, *, screenshot=None, timeout=120):
    """Measurements of one page (dict); raises RuntimeError when Chromium fails."""
    html_path = Path(html_path).resolve()
    text = html_path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="skxray-report-check-") as tmp:
        tmp = Path(tmp)
        probe = tmp / "page.html"
        head = re.search(r"<head[^>]*>", text)
        at = head.end() if head else 0
        probe_text = text[:at] + _CATCH + text[at:]
        probe.write_text(probe_text.replace("</body>", _MEASURE + "</body>", 1), encoding="utf-8")
        cmd = [
            chromium,
            *_flags(tmp / "profile"),
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        match = re.search(r'<pre id="skxray-report-check">(.*?)</pre>', run.stdout, re.S)
        if not match:
            raise RuntimeError(
                f"Chromium gave no measurement for {html_path} (exit {run.returncode}): "
                + run.stderr[-600:]
            )
        import html as html_mod

        result = json.loads(html_mod.unescape(match.group(1)))
        # Chromium logs every console message as INFO on stderr: keep those that are errors.
        logged = [
            line.strip()
            for line in run.stderr.splitlines()
            if "CONSOLE" in line and any(w in line for w in ("Uncaught", "Failed to load", "Refused"))
        ]
        result["console_errors"] = result.pop("errors") + logged
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [chromium, *_flags(tmp / "profile2"), f"--screenshot={shot}", html_path.as_uri()],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
            result["screenshot"] = str(shot)
    result["bytes"] = html_path.stat().st_size
    result["external_urls"] = sorted(set(re.findall(r"https?://[^\s\"'<>)]+", text)))[:5]
    return result


def problems(result, *, max_height=6000, max_mb=1.5):
    """The failed checks of one measurement, as sentences (empty when all pass)."""
    found = []
    if result["height"] > max_height:
        found.append(f"page is {result['height']} px tall (limit {max_height})")
    if result["scroll_width"] > result["viewport"] or result["wide"]:
        found.append(f"wider than {result['viewport']} px: {result['wide'][:5]}")
    if result["console_errors"]:
        found.append(f"console errors: {result['console_errors'][:3]}")
    if result["broken_images"]:
        found.append(f"images not loaded: {result['broken_images'][:5]}")
    if result["bytes"] > max_mb * 1e6:
        found.append(f"file is {result['bytes'] / 1e6:.2f} MB (limit {max_mb})")
    if result["external_urls"]:
        found.append(f"refers to external URLs: {result['external_urls']}")
    return found


def build_small_demo(out, *, epochs=1, n_samples=48, image_size=32):
    """Write a small demo report (phantoms, CNN + FNN, 2 folds) under ``out``; return its path.

    ``skxray demo`` runs in a child process from the repository root, so the
    report comes from this checkout's skxray whatever is installed.
    """
    import os

    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable, "-m", "skxray.cli", "demo", "--out", str(Path(out).resolve()),
        "--models", "cnn,fnn", "--cv", "2", "--epochs", str(epochs),
        "--n-samples", str(n_samples), "--image-size", str(image_size),
    ]
    path = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    if run.returncode:
        raise RuntimeError(f"skxray demo exited with status {run.returncode}: {run.stderr[-1000:]}")
    return Path(out) / "report.html"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="*", help="HTML reports to check")
    parser.add_argument("--build", metavar="DIR", help="first write a small demo report in DIR")
    parser.add_argument("--max-height", type=int, default=6000)
    parser.add_argument("--max-mb", type=float, default=1.5)
    parser.add_argument("--screenshot", metavar="PNG", help="first screen of the (first) report")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--require", action="store_true", help="exit 3 when Chromium is missing")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(
            "report-check skipped: no Chromium found (install 'chromium' or set "
            "SKXRAY_CHROMIUM to its path)."
        )
        return 3 if args.require else 0
    reports = list(args.reports)
    if args.build:
        reports.insert(0, str(build_small_demo(args.build)))
    if not reports:
        parser.error("give a report or --build DIR")
    failed = False
    for i, path in enumerate(reports):
        result = measure(path, chromium, screenshot=args.screenshot if i == 0 else None)
        found = problems(result, max_height=args.max_height, max_mb=args.max_mb)
        if args.json:
            print(json.dumps({"report": str(path), **result, "problems": found}, indent=1))
        status = "FAIL" if found else "ok"
        print(
            f"{status}  {path}: {result['height']} px tall at {result['viewport']} px, "
            f"{result['bytes'] / 1e6:.2f} MB, {result['n_images']} images, "
            f"{result['n_details']} folded blocks"
        )
        for line in found:
            print(f"      - {line}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
