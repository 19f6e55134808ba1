"""Label issues on darkcovidnet (3 classes), and training with them removed, measured honestly.

All with the library's code, written to ``benchmarks/results/label_issues.json``
after each part (so a slow machine still keeps the parts done)::

    .venv/bin/python benchmarks/label_issues.py            # 20-40 min on 1 shared CPU core
    .venv/bin/python benchmarks/label_issues.py --phantom  # smoke run, synthetic images

1. ``audit``: :func:`skxray.audit.audit` with only its ``"labels"`` check
   (one patient-grouped 5-fold cross-validation; cleanlab's confident
   learning on the out-of-fold probabilities) on all 1,124 images at 64 px,
   for the default FNN (first) and the CNN of
   ``benchmarks/audit_darkcovidnet.py`` (last, the costliest part). Gives
   the suspects per (given, suggested) class pair and the most suspect files.
2. ``phantom_evidence``: phantoms (32 px) with 10% of the labels flipped at
   random, audited with a logistic regression on the pixels: the share of
   the flips that are flagged (recall) and of the flagged that are flips
   (precision), and the flags on the same phantoms before flipping.
3. ``cleaning``: the default :class:`~skxray.models.FNNClassifier` (64 px)
   with and without ``cleanlab.classification.CleanLearning``, in the same
   patient-grouped 5 folds (:func:`sklearn.model_selection.cross_validate`).
   CleanLearning finds the suspects of each *training* fold with its own
   (image-level, 5-fold) cross-validation, drops them and refits, with
   ``sample_weight`` re-weighting the classes of the kept images; every
   score is computed on the test fold's *original* labels.

The counts of part 1 are images the out-of-fold models doubt, not proven
label errors: a radiologist has to look at them.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CLASSES_3,
    QUICK_RESULTS_DIR,
    RESULTS_DIR,
    command_line,
    log,
    machine_info,
    require_data,
    write_json,
)
from audit_darkcovidnet import audit_cnn, base_parser  # noqa: E402

#: Suspects listed in the JSON (the audit report itself has all of them).
N_LISTED = 30
#: The parts, cheapest first; the CNN's audit (5 CNN fits) last.
PARTS = ("audit-fnn", "phantom_evidence", "cleaning", "audit-cnn")


def parse_args(argv=None):
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--phantom-seeds", type=int, default=10, help="phantom data sets (10)")
    p.add_argument(
        "--inner-cv", type=int, default=5, help="CleanLearning's own folds in part 3 (5)"
    )
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run; the others are kept from the JSON file if it "
        f"exists (default: {','.join(PARTS)})",
    )
    return p.parse_args(argv)


def load_data(args):
    """File paths (or phantom images), labels, patient ids, sources, where they come from."""
    if args.phantom:
        from skxray.datasets import make_phantom_cxr

        X, y, groups = make_phantom_cxr(
            240, classes=CLASSES_3, image_size=args.image_size, random_state=0, return_groups=True
        )
        return X, y, groups, None, "phantoms (synthetic smoke run)"
    from doc_tables import portable_dataset

    from skxray.datasets import load_image_folder

    root = require_data()
    meta = load_image_folder(root, classes=CLASSES_3, image_size=None)
    where = portable_dataset(root)  # relative to SKXRAY_DATA: no machine path in results
    return meta.data, meta.target, meta.groups, meta.frame["source"].to_numpy(), where


def models(args):
    """The audited models: the default FNN and the CNN of the audit benchmark."""
    from skxray.models import FNNClassifier

    fnn = FNNClassifier(image_size=args.image_size, device="cpu", random_state=args.random_state)
    return {"fnn": fnn, "cnn": audit_cnn(args)}


def audit_labels(args, X, y, groups, sources, name):
    """Part 1: the audit's label check with one of the models."""
    from skxray.audit import audit

    model = models(args)[name]
    t0 = time.perf_counter()
    kw = dict(groups=groups, sources=sources, cv=args.cv, random_state=args.random_state)
    report = audit(model, X, y, checks=["labels"], image_size=args.image_size, verbose=1, **kw)
    finding = report["labels"]
    log(f"{name}: {finding.summary}")
    suspects = finding.details["suspects"].head(N_LISTED).copy()
    if "path" in suspects:
        # "Class/file.png", as in the data set's manifest.csv: no machine path in results.
        suspects["file"] = [str(Path(p).relative_to(Path(p).parents[1])) for p in suspects["path"]]
        suspects = suspects.drop(columns="path")
    row = {
        "model": name,
        "estimator": repr(model),
        "verdict": finding.verdict,
        "explanation": finding.explanation,
        **finding.figures,
        "pairs": finding.details["pairs"].to_dict(orient="records"),
        "top_suspects": suspects.to_dict(orient="records"),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    return [row]


def cleaning(args, X_images, y, groups):
    """Part 2: FNN with and without CleanLearning, scored on the original test labels."""
    from cleanlab.classification import CleanLearning
    from sklearn.model_selection import StratifiedGroupKFold, cross_validate
    from sklearn.preprocessing import LabelEncoder

    from skxray.models import FNNClassifier

    y_int = LabelEncoder().fit_transform(y)  # cleanlab wants class indices 0..k-1
    cv = StratifiedGroupKFold(args.cv, shuffle=True, random_state=args.random_state)
    fnn = FNNClassifier(image_size=args.image_size, device="cpu", random_state=args.random_state)
    variants = {
        "fnn": fnn,
        "fnn + CleanLearning": CleanLearning(
            fnn,
            seed=args.random_state,
            cv_n_folds=args.inner_cv,
            find_label_issues_kwargs={"n_jobs": 1},
        ),
    }
    rows = []
    for name, estimator in variants.items():
        t0 = time.perf_counter()
        res = cross_validate(
            estimator,
            X_images,
            y_int,
            groups=groups,
            cv=cv,
            scoring=["accuracy", "balanced_accuracy"],
            return_estimator=True,
        )
        removed = [
            int(est.label_issues_mask.sum()) if hasattr(est, "label_issues_mask") else 0
            for est in res["estimator"]
        ]
        row = {"model": name, "elapsed_s": round(time.perf_counter() - t0, 1)}
        if name != "fnn":
            row["inner_cv"] = f"{args.inner_cv}-fold, image-level (CleanLearning's own)"
        for metric in ("accuracy", "balanced_accuracy"):
            scores = res[f"test_{metric}"]
            row[f"{metric}_mean"] = float(np.mean(scores))
            row[f"{metric}_std"] = float(np.std(scores))
            row[f"{metric}_per_fold"] = [float(s) for s in scores]
        row["removed_from_training_per_fold"] = removed
        # Whether CleanLearning re-weighted the classes of the kept images
        # (it does for a classifier whose fit takes sample_weight).
        row["reweighted_per_fold"] = [
            "sample_weight" in getattr(est, "label_issues_df", {}) for est in res["estimator"]
        ]
        log(f"{name}: accuracy {row['accuracy_mean']:.4f} removed {removed}")
        rows.append(row)
    return rows


def phantom_evidence(args):
    """Part 3: recall and precision of the flags on phantoms with 10% of labels flipped."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from skxray.audit import audit
    from skxray.datasets import make_phantom_cxr

    rows = []
    for n_classes in (2, 3):
        classes = ("Covid-19", "Normal", "Pneumonia")[:n_classes]
        for seed in range(args.phantom_seeds):
            X, y, groups = make_phantom_cxr(
                300, classes=classes, image_size=32, random_state=seed, return_groups=True
            )
            rng = np.random.default_rng(seed)
            flips = rng.choice(len(y), len(y) // 10, replace=False)
            noisy = y.copy()
            for i in flips:
                noisy[i] = rng.choice([c for c in classes if c != y[i]])
            model = make_pipeline(
                FunctionTransformer(_flatten), LogisticRegression(C=0.1, max_iter=1000)
            )
            kw = dict(groups=groups, cv=5, random_state=0, checks=["labels"])
            clean = audit(model, X, y, **kw)["labels"].figures["n_suspected"]
            found = audit(model, X, noisy, **kw)["labels"].details["suspects"]["image"]
            hits = len(set(found.tolist()) & set(flips.tolist()))
            rows.append(
                {
                    "classes": n_classes,
                    "seed": seed,
                    "n_images": len(y),
                    "n_flipped": len(flips),
                    "n_flagged": len(found),
                    "recall": hits / len(flips),
                    "precision": hits / len(found) if len(found) else None,
                    "n_flagged_before_flipping": int(clean),
                }
            )
    return rows


def _flatten(X):
    return X.reshape(len(X), -1)


def main(argv=None):
    t0 = time.perf_counter()
    args = parse_args(argv)
    X, y, groups, sources, where = load_data(args)
    log(f"{len(X)} images from {where}")
    import torch

    torch.set_num_threads(max(1, args.threads))  # 1 by default: the CPU is shared
    out = args.out or (QUICK_RESULTS_DIR if args.phantom else RESULTS_DIR) / "label_issues.json"
    settings = {
        "data": where,
        "classes": list(CLASSES_3),
        "image_size": args.image_size,
        "cv": f"StratifiedGroupKFold({args.cv}, shuffle=True) by patient",
        "random_state": args.random_state,
        "torch_threads": torch.get_num_threads(),
    }
    runs = {
        "audit-fnn": lambda: audit_labels(args, X, y, groups, sources, "fnn"),
        "phantom_evidence": lambda: phantom_evidence(args),
        "cleaning": lambda: cleaning(args, _pixels(args, X), y, groups),
        "audit-cnn": lambda: audit_labels(args, X, y, groups, sources, "cnn"),
    }
    for name in [p for p in PARTS if p in args.parts.split(",")]:
        t_part = time.perf_counter()
        result = runs[name]()
        _save_part(out, name, result, settings, round(time.perf_counter() - t_part, 1))
        log(f"wrote {name} to {out} ({time.perf_counter() - t0:.0f} s so far)")
    return 0


def _save_part(out, name, result, settings, seconds):
    """Put one part into the JSON file, keeping the parts of earlier (or parallel) runs.

    The file is read just before it is written, so that runs of different
    parts (``--parts``) can share it.
    """
    payload = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    payload["machine"] = machine_info("cpu")
    payload.setdefault("settings", {}).update(settings)
    payload["settings"].pop("command", None)  # one per part, in "commands"
    for key, value in (("commands", command_line()), ("elapsed_s", seconds)):
        if not isinstance(payload["settings"].get(key), dict):
            payload["settings"][key] = {}
        payload["settings"][key][name] = value
    if name.startswith("audit-"):
        model = name.split("-", 1)[1]
        rows = [r for r in payload.get("audit", []) if r["model"] != model] + result
        payload["audit"] = sorted(rows, key=lambda r: r["model"], reverse=True)  # fnn, cnn
    else:
        payload[name] = result
    write_json(out, payload)


def _pixels(args, X):
    """The images as arrays (the audit read the files itself)."""
    if args.phantom:
        return X
    from _common import load_pixels

    return load_pixels(require_data(), args.image_size, n_jobs=1).data


if __name__ == "__main__":
    raise SystemExit(main())
