"""Does bfloat16 autocast on the CPU cost accuracy? The rule that lets ``amp="auto"`` measure there.

Pre-specified (issue 29, before the run): the default ``CNNClassifier``
(nothing set but ``random_state``, ``image_size=64``) is cross-validated on
darkcovidnet's binary task (Covid-19 vs No_findings) with patient-grouped
5-fold cross-validation (``StratifiedGroupKFold(shuffle=True,
random_state=0)`` by the manifest's ``patient_id``, the folds of
``benchmarks/accuracy.py``), once with ``amp=False`` (float32) and once with
``amp=True`` (bfloat16 autocast on the CPU), the same seeds, the two fits of
each fold one after the other. RULE: if bfloat16's mean balanced accuracy is
lower than float32's by more than 1 point (0.01), ``amp="auto"`` must not
choose bfloat16 on the CPU; otherwise it measures there as on a GPU.

Writes ``benchmarks/results/amp_cpu.json`` (``--quick``: ``results/quick/``):
one row per precision (mean and standard deviation over the folds of
accuracy, balanced accuracy, ROC AUC, and the fit time), the per-fold rows,
and ``verdict`` (the rule's inputs and outcome). Fit times are wall times on
a shared CPU: indicative only (``benchmarks/speed.py`` measures speed).

Usage::

    nice -n 5 python benchmarks/amp_cpu.py --threads 1
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    SHARED_CPU_NOTE,
    Stopwatch,
    command_line,
    configure_threads,
    default_out,
    finish,
    log,
    machine_info,
    write_json,
)
from accuracy import Data, make_splits, scores, task_index  # noqa: E402

from skxray.audit import proba_in_order  # noqa: E402

#: The rule, fixed before the run: bfloat16 may lose at most this much mean balanced accuracy.
MAX_BALANCED_ACCURACY_LOSS = 0.01
PRECISIONS = {"float32": False, "bfloat16": True}
METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="default: the class's own max_epochs")
    p.add_argument("--threads", default="1", help="torch threads: an int, 'default' or 'auto'")
    p.add_argument("--quick", action="store_true", help="2 folds, 32 px, 2 epochs, 240 images")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    # What accuracy.Data reads.
    args.phantom, args.load, args.subset = False, "squarecrop", None
    if args.quick:
        args.folds, args.image_size, args.epochs, args.subset = 2, 32, 2, 240
    return args


def verdict(rows):
    """The rule's inputs and outcome, from the two summary rows."""
    by = {r["precision"]: r for r in rows}
    loss = by["float32"]["balanced_accuracy_mean"] - by["bfloat16"]["balanced_accuracy_mean"]
    allowed = bool(loss <= MAX_BALANCED_ACCURACY_LOSS)
    return {
        "rule": "amp='auto' may choose bfloat16 on the CPU unless bfloat16's mean balanced accuracy "
                f"is lower than float32's by more than {MAX_BALANCED_ACCURACY_LOSS:.2f}",
        "balanced_accuracy_loss": float(loss),
        "max_balanced_accuracy_loss": MAX_BALANCED_ACCURACY_LOSS,
        "cpu_auto_may_choose_bfloat16": allowed,
        "fit_time_ratio_float32_over_bfloat16": float(
            by["float32"]["fit_time_s_mean"] / by["bfloat16"]["fit_time_s_mean"]
        ),
    }


def summary(precision, folds):
    row = {"precision": precision, "amp": PRECISIONS[precision], "n_folds": len(folds)}
    for key in (*METRICS, "fit_time_s"):
        values = [f[key] for f in folds if f[key] is not None]
        row[f"{key}_mean"] = float(np.mean(values)) if values else None
        row[f"{key}_std"] = float(np.std(values)) if values else None
    return row


def main(argv=None):
    from sklearn.base import clone

    from skxray import CNNClassifier

    args = parse_args(argv)
    threads = configure_threads(args.threads)
    out = Path(args.out) if args.out else default_out("amp_cpu.json", args.quick)
    data = Data(args)
    idx, classes = task_index(data.y, "binary")
    y, groups = data.y[idx], data.groups[idx]
    X = data.X(args.image_size)[idx]
    splits = make_splits(y, groups, "patient", args.folds)
    params = {"random_state": 0, "verbose": 0, "device": "cpu", "image_size": args.image_size}
    if args.epochs:
        params["max_epochs"] = args.epochs
    template = CNNClassifier(**params)
    payload = {
        "machine": machine_info("cpu"),
        "settings": {
            "command": command_line(), "note": SHARED_CPU_NOTE, **threads,
            "task": "binary (Covid-19 vs No_findings)", "n_images": int(len(y)),
            "cv": "StratifiedGroupKFold(shuffle=True, random_state=0), groups=patient_id",
            "estimator": repr(template), "max_epochs": template.max_epochs,
            "rule_max_balanced_accuracy_loss": MAX_BALANCED_ACCURACY_LOSS,
        },
        "results": [],
        "folds": [],
    }
    started = time.perf_counter()
    for i, (train, test) in enumerate(splits):
        for precision, amp in PRECISIONS.items():
            clf = clone(template).set_params(amp=amp)
            with Stopwatch() as t:
                clf.fit(X[train], y[train])
            s = scores(y[test], proba_in_order(clf, X[test], classes), classes)
            payload["folds"].append({"precision": precision, "fold": i, "n_train": len(train),
                                     "n_test": len(test), **s, "fit_time_s": t.seconds,
                                     "fit_cpu_s": t.cpu_seconds, "amp_": bool(clf.amp_)})
            log(f"fold {i + 1}/{len(splits)} {precision}: balanced accuracy "
                f"{s['balanced_accuracy']:.4f}, fit {t.seconds:.1f} s")
            write_json(out, payload)
    payload["results"] = [
        summary(p, [f for f in payload["folds"] if f["precision"] == p]) for p in PRECISIONS
    ]
    payload["verdict"] = verdict(payload["results"])
    return finish(payload, out, started, markdown_table)


def markdown_table(payload):
    lines = ["| precision | accuracy | balanced accuracy | ROC AUC | fit time (s) |", "|---|---|---|---|---|"]
    for r in payload["results"]:
        cells = [f"{100 * r[f'{k}_mean']:.1f} +/- {100 * r[f'{k}_std']:.1f}" for k in METRICS]
        lines.append(f"| {r['precision']} | {' | '.join(cells)} | {r['fit_time_s_mean']:.1f} |")
    v = payload.get("verdict")
    if v:
        lines.append("")
        lines.append(f"balanced accuracy loss of bfloat16: {100 * v['balanced_accuracy_loss']:.2f} points; "
                     f"amp='auto' may choose bfloat16 on the CPU: {v['cpu_auto_may_choose_bfloat16']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
