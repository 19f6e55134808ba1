"""Shortcut and leakage audit of a CNN on darkcovidnet (Covid-19 vs No_findings).

Runs :func:`skxray.audit.audit` on the two classes of the DarkCovidNet
benchmark, with the manifest's patient ids (``groups``) and sources
(``frame["source"]``: the Cohen covid-chestxray-dataset for Covid-19, NIH
ChestX-ray8 for No_findings), prints the report and writes
``benchmarks/results/audit.json``::

    .venv/bin/python benchmarks/audit_darkcovidnet.py            # about 10 min on 2 CPU cores
    .venv/bin/python benchmarks/audit_darkcovidnet.py --phantom  # smoke run, synthetic images

The CNN is modest on purpose (64 px, 3 convolutional blocks, 12 epochs) so
that the whole audit (two 5-fold cross-validations and the source model)
fits in a quarter of an hour on a shared CPU; the audit's questions (does
the score survive patient grouping, the lungs hidden, the borders hidden?)
do not need a state-of-the-art model.

The JSON has the shape of the other benchmark files: ``machine``,
``settings``, ``results`` (one row per check: verdict, key figures,
explanation), ``figures`` (one row per figure) and ``report`` (the full
:meth:`skxray.audit.AuditReport.to_dict`).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CLASSES_BINARY,
    QUICK_RESULTS_DIR,
    RESULTS_DIR,
    log,
    machine_info,
    require_data,
    write_json,
)


def base_parser(description):
    """The options of this benchmark, shared with ``benchmarks/label_issues.py``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (64)")
    p.add_argument("--epochs", type=int, default=12, help="CNN training epochs per fit (12)")
    p.add_argument("--cv", type=int, default=5, help="number of folds (5)")
    p.add_argument("--random-state", type=int, default=0, help="seed of folds and fits (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU is shared)")
    p.add_argument("--phantom", action="store_true", help="synthetic smoke run (not real data)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return p


def parse_args(argv=None):
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--html", type=Path, default=None, help="also write the HTML fragment here")
    p.add_argument("--lung-region", dest="lung_region", choices=("segmenter", "ellipse"),
                   default="segmenter",
                   help="lungs of check 4: skxray's lung segmenter (default) or the ellipse prior")
    return p.parse_args(argv)


def audit_cnn(args):
    """The audited CNN: modest on purpose (see the module docstring)."""
    from skxray.models import CNNClassifier

    return CNNClassifier(
        filters=(16, 32, 64),
        dense_units=32,
        max_epochs=args.epochs,
        batch_size=32,
        lr=1e-3,
        class_weight="balanced",
        image_size=args.image_size,
        device="cpu",
        random_state=args.random_state,
    )


def load_data(args):
    """Images, labels, patient ids and sources of Covid-19 vs No_findings."""
    if args.phantom:
        from skxray.datasets import make_phantom_cxr

        # One class from scanner B with a corner marker: a planted shortcut.
        XA, _, gA = make_phantom_cxr(
            120,
            classes=("No_findings", "x"),
            image_size=args.image_size,
            random_state=args.random_state,
            return_groups=True,
        )
        XB, _, gB = make_phantom_cxr(
            40,
            classes=("Normal", "x"),
            scanner="B",
            marker_class="Normal",
            image_size=args.image_size,
            random_state=args.random_state + 1,
            return_groups=True,
        )
        X = np.concatenate([XA, XB])
        y = np.array(["No_findings"] * len(XA) + ["Covid-19"] * len(XB), dtype=object)
        groups = np.concatenate([gA.astype(str), np.char.add("b", gB.astype(str))]).astype(object)
        sources = np.array(["scanner A"] * len(XA) + ["scanner B"] * len(XB), dtype=object)
        return X, y, groups, sources, "phantoms (synthetic smoke run)"
    from skxray.datasets import load_image_folder

    root = require_data()
    bunch = load_image_folder(
        root, classes=CLASSES_BINARY, image_size=args.image_size, keep_aspect="crop", n_jobs=2
    )
    from doc_tables import portable_dataset

    # Relative to SKXRAY_DATA: no machine path in committed results.
    where = portable_dataset(root)
    return bunch.data, bunch.target, bunch.groups, bunch.frame["source"].to_numpy(), where


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    from skxray.audit import audit

    t0 = time.perf_counter()
    X, y, groups, sources, where = load_data(args)
    log(f"loaded {len(X)} images from {where} in {time.perf_counter() - t0:.0f} s")
    model = audit_cnn(args)
    report = audit(
        model,
        X,
        y,
        groups=groups,
        sources=sources,
        cv=args.cv,
        random_state=args.random_state,
        lung_region=args.lung_region,
        verbose=1,
    )
    print(report, flush=True)

    results = [
        {
            "check": f.title,
            "verdict": f.verdict,
            "key_figures": f.summary,
            "explanation": f.explanation,
        }
        for f in report.findings
    ]
    figures = [
        {"check": f.name, "figure": name, "value": value}
        for f in report.findings
        for name, value in f.figures.items()
        if not isinstance(value, dict | list)
    ]
    payload = {
        "machine": machine_info("cpu"),
        "settings": {
            "data": where,
            "classes": CLASSES_BINARY,
            "image_size": args.image_size,
            "loading": "load_image_folder(image_size, keep_aspect='crop'): centre square crop, then resize",
            "model": repr(model),
            "epochs": args.epochs,
            "cv": args.cv,
            "random_state": args.random_state,
            "torch_threads": torch.get_num_threads(),
            "lung_region": args.lung_region,
            "elapsed_s": round(time.perf_counter() - t0, 1),
        },
        "overall_verdict": report.verdict,
        "results": results,
        "figures": figures,
        "report": report.to_dict(),
    }
    out = args.out or (QUICK_RESULTS_DIR if args.phantom else RESULTS_DIR) / "audit.json"
    write_json(out, payload)
    log(f"wrote {out}")
    if args.html:
        args.html.write_text(report.to_html(), encoding="utf-8")
        log(f"wrote {args.html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
