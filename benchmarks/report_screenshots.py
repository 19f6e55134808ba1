"""Write each kind of skxray report on phantoms, measure it in Chromium, screenshot its first screen.

Builds a small class-per-folder set of phantom PNGs with a manifest (patient
ids and two sources), then runs ``skxray demo``, ``skxray compare`` and
``skxray audit`` on it, and ``skxray evaluate --report`` of a model trained on
it against a one-class folder from another phantom scanner, checks every report with ``report_check.py`` and
saves the first 1280 x 800 screen of each, shrunk to a small PNG, as
``docs/_static/report-<kind>.png``::

    python benchmarks/report_screenshots.py                 # screenshots into docs/_static
    python benchmarks/report_screenshots.py --no-shots      # measurements only
    python benchmarks/report_screenshots.py --code /other/checkout   # e.g. the code before a change

Needs Chromium (see report_check.py); takes a minute or two on a CPU.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_check  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"


def phantom_folder(root, n=60, size=48, only=None, **phantom):
    """A folder of phantom PNGs, one sub-folder per class, with manifest.csv.

    ``only`` keeps the images of these classes (e.g. an external folder of
    one class, as a hospital's COVID-19 cases); ``phantom`` goes to
    ``make_phantom_cxr`` (e.g. ``scanner="B"``).
    """
    from PIL import Image

    from skxray.datasets import make_phantom_cxr

    phantom = {"random_state": 0, **phantom}
    X, y, groups = make_phantom_cxr(n, image_size=size, return_groups=True, **phantom)
    rows = []
    for i, (img, label, group) in enumerate(zip(X, y, groups, strict=True)):
        if only is not None and label not in only:
            continue
        (root / label).mkdir(parents=True, exist_ok=True)
        rel = f"{label}/img{i:03d}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / rel)
        source = "hospital A" if i % 3 else "hospital B"
        rows.append({"path": rel, "label": label, "patient_id": f"p{group}", "source": source})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def skxray(args, code):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(code)}
    run = subprocess.run([sys.executable, "-m", "skxray.cli", *map(str, args)], cwd=code,
                         env=env, capture_output=True, text=True, check=False)
    if run.returncode:
        raise RuntimeError(f"skxray {' '.join(map(str, args))} failed:\n{run.stderr[-2000:]}")
    return run.stdout


def shrink(png, width=800, colours=96):
    """Scale a screenshot down and quantise it: a small PNG for the docs."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        height = round(im.height * width / im.width)
        small = im.resize((width, height), Image.LANCZOS).quantize(colours, dither=Image.NONE)
        small.save(png, optimize=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", default=str(REPO), help="checkout whose skxray writes the reports")
    parser.add_argument("--no-shots", action="store_true", help="measure only")
    parser.add_argument("--out", help="keep the reports in this folder")
    args = parser.parse_args(argv)
    chromium = report_check.find_chromium()
    if chromium is None:
        print("no Chromium found: nothing to measure.")
        return 0
    with tempfile.TemporaryDirectory(prefix="skxray-shots-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        data = phantom_folder(work / "data", n=120, size=64)
        external = phantom_folder(work / "external", n=60, size=64, scanner="B", only=("Covid-19",))
        # The demo's defaults (64 px, 8 epochs, 3 folds), CNN and FNN only: a few minutes.
        quick = ["--epochs", 8, "--image-size", 64, "--cv", 3]
        kinds = {
            "demo": ["demo", "--out", work / "demo", "--models", "cnn,fnn", *quick],
            "compare": ["compare", data, "--out", work / "compare", "--models", "cnn,fnn", *quick],
            "audit": ["audit", data, "--model", "cnn", "--out", work / "audit", *quick],
            "evaluate": ["evaluate", work / "model", external, "--report", work / "evaluate",
                         "--internal", data, "--cv", 3],
        }
        # The evaluate report needs a saved model (not a report itself).
        skxray(["train", data, "--model", "cnn", "--out", work / "model", *quick[:4]], args.code)
        for kind, command in kinds.items():
            skxray(command, args.code)
            html = work / kind / "report.html"
            shot = None if args.no_shots else STATIC / f"report-{kind}.png"
            result = report_check.measure(html, chromium, screenshot=shot)
            if shot is not None:
                shrink(shot)
            found = report_check.problems(result)
            print(
                f"{kind:8s} {result['height']:6d} px tall, {result['bytes'] / 1e6:.2f} MB, "
                f"{result['n_images']} images, {result['n_details']} folded blocks"
                + (f"; problems: {found}" if found else "; checks pass")
                + (f"; screenshot {shot.relative_to(REPO)}" if shot else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
