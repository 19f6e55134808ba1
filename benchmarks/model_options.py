"""What each CNN training option does, on one fixed patient-grouped split.

Every option is the benchmark's CNN (``accuracy.MODEL_SETTINGS["cnn"]``:
``class_weight="balanced"``, ``lr=2e-3``, ``lr_schedule="onecycle"``, 15
epochs, no validation split, ``ood=False``) with **one** change, fitted on the
same training patients and scored on the same held-out patients, so that the
rows differ by that change only. Beside them, the library's defaults
(``CNNClassifier(random_state=0)``: ``ood=True`` with a 10 % validation split
to calibrate it) and the benchmark settings with the same ``ood=True`` and
validation split, so that abstention is measured too.

The split: fold ``--fold`` (default 0, the first) of ``accuracy.make_splits(..., "patient", 5)``
(``StratifiedGroupKFold(5, shuffle=True, random_state=0)`` grouped by the
manifest's ``patient_id``): about 80 % of the patients train, 20 % test, no
patient on both sides. One split of about 125 (binary) or 225 (three
classes) test images: a difference of 1 point is 1-3 images, within the
noise of one split; only larger differences say anything.

Options (``--options``, comma-separated, in this order by default):

``benchmark``
    the benchmark's CNN settings (the reference of every other row);
``defaults``
    ``CNNClassifier(random_state=0)``, nothing else set (20 epochs, lr 1e-3,
    no class weights, no schedule, ``ood=True``);
``benchmark_ood``
    the benchmark settings with the defaults' ``validation_fraction=0.1`` and
    ``ood=True``;
``tta``
    the ``benchmark`` model itself, predicted with ``tta=True`` (flip
    averaging is a prediction-time option: no second fit);
``residual``
    ``architecture="residual"``;
``label_smoothing``
    ``label_smoothing=0.1``;
``residual_ls``
    both of the above (two changes; run after each alone);
``seeds_x3``
    soft vote of three fits with ``random_state`` 0, 1, 2 (0 is ``benchmark``);
``epochs30``
    one-cycle over 30 epochs instead of 15;
``px96`` / ``px128`` / ``px256``
    images of 96 / 128 / 256 px instead of 64 (256: DarkCovidNet's own);
``residual_px256``
    ``architecture="residual"`` at 256 px (its weights do not grow with the
    image).
``mixup``
    ``mixup=0.2`` (issue 30; Zhang et al., ICLR 2018, used 0.1-0.4; 0.2
    was fixed before any run, nothing else was tried). Rule, also fixed
    before the first run: mixup goes on to a 5-fold row of the three-class
    task if its accuracy on the held-out patients of fold 0 and of fold 1
    each beats ``benchmark``'s, measured in the same run, by more than one
    point (about 2 of 225 images). Its rows are in
    ``results/tuning/model_options_issue30.json``, beside a ``benchmark``
    row refitted on the same machine.
``prune_label_issues``
    the ``benchmark`` CNN refitted without the training images whose label
    cleanlab doubts (issue 30: noise-robust training): out-of-fold
    probabilities of the training patients from a patient-grouped 5-fold
    cross-validation of the same CNN (``StratifiedGroupKFold``, shuffled,
    seed 0), then ``cleanlab.filter.find_label_issues`` with its defaults
    (``filter_by="prune_by_noise_rate"``, as ``CleanLearning``). Only
    training images are dropped; the held-out patients are scored on their
    original labels. The row gives how many were dropped, per (given,
    suggested) class. Same rule as ``mixup``, fixed before its first run;
    rows in the same file.
``darkcovidnet``
    ``architecture="darkcovidnet"`` (the paper's network) with the
    benchmark's settings (class weights, one-cycle to 2e-3, 15 epochs,
    dropout 0.3 before its output layer) at the run's image size (issue 30:
    "DarkCovidNet with our best settings"; 64 px here, where the paper
    reads 256).
``cnn_darkcovidnet``
    soft vote of ``benchmark`` and ``darkcovidnet`` (issue 30: an ensemble
    of the two networks). Both with the same rule as ``mixup``, fixed
    before their first run; rows in the same file.

Metrics on the held-out patients: accuracy, balanced accuracy, ROC AUC
(one-vs-rest macro for three classes), with ``ood=True`` the abstention rate
of ``predict_with_abstention`` and the accuracy on the answered images.
Rows are merged into ``--out`` as each option finishes (a crash keeps what
finished; two runs with different ``--tasks`` can share the file).

Example (one thread each; about 10 and 20 CPU-minutes, 40-80 minutes of
wall time on a 2-core machine shared with five other jobs)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/model_options.py --tasks binary
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/model_options.py --tasks 3class
"""

import argparse
import fcntl
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    Stopwatch,
    command_line,
    configure_threads,
    load_metadata,
    load_pixels,
    log,
    machine_info,
    phantom_bunch,
    require_data,
    write_json,
)
from accuracy import MODEL_SETTINGS, make_splits, scores, task_index  # noqa: E402

# The reference these rows were measured against: the whole training part is
# used for training (no validation split, no detector), so that the options
# differ from it by one change only. (accuracy.py itself now keeps the
# library's ood=True and validation split; "benchmark_ood" is that setting.)
REFERENCE_PARAMS = {"validation_fraction": None, "ood": False, "random_state": 0, "verbose": 0}

OUT = RESULTS_DIR / "tuning" / "model_options.json"
PRUNE = "prune_label_issues"
# One change each against "benchmark": (parameter overrides, image size or
# None for --image-size, extra members to average (a random_state, or a dict
# of parameter overrides), predict with tta).
OPTIONS = {
    "benchmark": ({}, None, (), False),
    "defaults": (None, None, (), False),  # None: CNNClassifier's own defaults
    "benchmark_ood": ({"validation_fraction": 0.1, "ood": True}, None, (), False),
    "tta": ({}, None, (), True),
    "residual": ({"architecture": "residual"}, None, (), False),
    "label_smoothing": ({"label_smoothing": 0.1}, None, (), False),
    "residual_ls": ({"architecture": "residual", "label_smoothing": 0.1}, None, (), False),
    "seeds_x3": ({}, None, (1, 2), False),
    "epochs30": ({"max_epochs": 30}, None, (), False),
    "px96": ({}, 96, (), False),
    "px128": ({}, 128, (), False),
    # DarkCovidNet's own resolution; residual: weights independent of size.
    "px256": ({}, 256, (), False),
    "residual_px256": ({"architecture": "residual"}, 256, (), False),
    "mixup": ({"mixup": 0.2}, None, (), False),
    # PRUNE is no constructor parameter: Fits drops the suspects first.
    "prune_label_issues": ({PRUNE: True}, None, (), False),
    "darkcovidnet": ({"architecture": "darkcovidnet"}, None, (), False),
    # Extra members given as overrides of this option's parameters.
    "cnn_darkcovidnet": ({}, None, ({"architecture": "darkcovidnet"},), False),
}
DEFAULT_OPTIONS = ("benchmark", "defaults", "benchmark_ood", "tta", "residual", "label_smoothing",
                   "seeds_x3", "epochs30", "px96")


def option_params(option, args):
    """Constructor parameters of ``option`` (the image size is the array's)."""
    overrides, _, _, _ = OPTIONS[option]
    if overrides is None:
        return {"random_state": 0}
    spec = MODEL_SETTINGS["cnn"]
    return {**REFERENCE_PARAMS, **spec["params"], "max_epochs": args.epochs, **overrides}


class Fits:
    """Fitted models by parameters, so that options sharing a fit reuse it."""

    def __init__(self, X_train, y_train, groups_train=None):
        self.X_train, self.y_train, self.groups_train = X_train, y_train, groups_train
        self.cache = {}
        #: What the last pruned fit dropped (``prune_label_issues``).
        self.pruned = {}

    def get(self, params):
        from skxray.models import CNNClassifier

        key = json.dumps(params, sort_keys=True, default=repr)
        if key not in self.cache:
            params = dict(params)
            keep = slice(None)
            with Stopwatch() as t:
                if params.pop(PRUNE, False):
                    keep = self.label_issues_kept(params)
                clf = CNNClassifier(**params).fit(self.X_train[keep], self.y_train[keep])
            self.cache[key] = (clf, t.seconds)
        return self.cache[key]

    def label_issues_kept(self, params):
        """Mask of the training images whose label cleanlab does not doubt (out-of-fold, by patient)."""
        from cleanlab.filter import find_label_issues
        from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

        from skxray.models import CNNClassifier

        classes = np.unique(self.y_train)
        labels = np.searchsorted(classes, self.y_train)
        cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
        proba = cross_val_predict(CNNClassifier(**params), self.X_train, self.y_train,
                                  groups=self.groups_train, cv=cv, method="predict_proba")
        issues = find_label_issues(labels, proba, filter_by="prune_by_noise_rate")
        suggested = classes[proba.argmax(1)]
        pairs = Counter(f"{given} -> {said}" for given, said in zip(self.y_train[issues], suggested[issues]))
        self.pruned = {"n_training_images": int(len(labels)), "n_dropped": int(issues.sum()),
                       "dropped_by_given_and_suggested_class": dict(sorted(pairs.items()))}
        log(f"  prune_label_issues: dropping {int(issues.sum())} of {len(labels)} training images {dict(pairs)}")
        return ~issues


def evaluate_option(option, args, fits_by_size, X_test_by_size, y_test, classes):
    """One result row: fit (or reuse), predict the held-out patients, score."""
    _, size, extra_seeds, tta = OPTIONS[option]
    size = size or args.image_size
    fits, X_test = fits_by_size[size], X_test_by_size[size]
    params = option_params(option, args)
    clf, fit_s = fits.get(params)
    extra = [{**params, **s} if isinstance(s, dict) else {**params, "random_state": s} for s in extra_seeds]
    members = [clf] + [fits.get(p)[0] for p in extra]
    fit_s += sum(fits.get(p)[1] for p in extra)
    with Stopwatch() as t:
        probas = []
        for member in members:
            member.set_params(tta=tta)
            probas.append(member.predict_proba(X_test))
            member.set_params(tta=False)
    proba = np.mean(probas, axis=0)
    order = [list(clf.classes_).index(c) for c in classes]
    row = {"option": option, "image_size": size, "n_models": len(members), "tta": tta,
           **scores(y_test, proba[:, order], classes), "fit_time_s": fit_s, "predict_time_s": t.seconds}
    row["abstention_rate"] = row["answered_accuracy"] = None
    if clf.ood_ is not None:
        answer = clf.predict_with_abstention(X_test)
        answered = answer != "uncertain"
        row["abstention_rate"] = float(1.0 - answered.mean())
        row["answered_accuracy"] = float((answer[answered] == y_test[answered]).mean()) if answered.any() else None
    row["params"] = {k: v for k, v in clf.get_params().items() if k in (params or {}) or k == "random_state"}
    if (params or {}).get(PRUNE):
        row["label_issues_dropped"] = fits.pruned
    return row


def merge_rows(out, rows, settings):
    """Replace the rows of the same (task, option) in ``out`` and write it, under a lock."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives in the temporary folder, not beside the committed results.
    with open(Path(tempfile.gettempdir()) / f"skxray-{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        payload = json.loads(out.read_text()) if out.exists() else {"results": [], "settings": {}}
        def key(r):
            return r["task"], r["option"], r.get("fold", 0)

        keys = {key(r) for r in rows}
        payload["results"] = [r for r in payload["results"] if key(r) not in keys] + rows
        payload["machine"] = machine_info("cpu")
        # Each run adds its command line; the first run's stays first.
        commands = payload["settings"].get("commands", [])
        if "command" in settings:
            commands = commands + [settings.pop("command")]
        payload["settings"].update(settings, commands=commands)
        write_json(out, payload)


def load_data(args):
    if args.phantom:
        return phantom_bunch(args.image_size, n_samples=300), "phantom"
    root = require_data()
    return load_metadata(root), root


def pixels(args, root, size, phantom):
    if phantom:
        from skxray.preprocessing import resize_images

        return resize_images(phantom.data, size)
    with Stopwatch() as t:
        X = load_pixels(root, size).data
    log(f"loaded {len(X)} images at {size} px in {t.seconds:.0f} s")
    return X


def run_task(task, args, meta, root):
    y_all = np.asarray(meta.target, dtype=object)
    idx, classes = task_index(y_all, task)
    y, groups = y_all[idx], np.asarray(meta.groups, dtype=object)[idx]
    train, test = make_splits(y, groups, "patient", 5)[args.fold]
    log(f"== {task}: {len(train)} training images, {len(test)} held-out images "
        f"({len(set(groups[test]))} patients)")
    sizes = sorted({OPTIONS[o][1] or args.image_size for o in args.options})
    phantom = meta if args.phantom else None
    X_by_size = {s: pixels(args, root, s, phantom)[idx] for s in sizes}
    fits = {s: Fits(X_by_size[s][train], y[train], groups[train]) for s in sizes}
    X_test = {s: X_by_size[s][test] for s in sizes}
    settings = {f"{task}_split" + (f"_fold{args.fold}" if args.fold else ""): {"n_train": len(train), "n_test": len(test),
                                  "n_test_patients": len(set(groups[test])),
                                  "test_counts": {c: int((y[test] == c).sum()) for c in classes}}}
    for option in args.options:
        row = {"task": task, "fold": args.fold, **evaluate_option(option, args, fits, X_test, y[test], classes)}
        log(f"  {option}: accuracy {row['accuracy']:.4f}, balanced {row['balanced_accuracy']:.4f}, "
            f"AUC {row['roc_auc'] or float('nan'):.4f}, abstention {row['abstention_rate']}, fit {row['fit_time_s']:.0f} s")
        merge_rows(args.out, [row], settings)


def markdown_table(payload):
    """The results as a Markdown table, in the order of ``OPTIONS``, per task."""
    def pct(value):
        return "" if value is None else f"{100 * value:.1f}"

    lines = ["| task | fold | option | px | accuracy % | balanced % | ROC AUC % | abstained % | "
             "answered accuracy % | fit min |", "|---" * 10 + "|"]
    order = {name: i for i, name in enumerate(OPTIONS)}
    rows = sorted(payload["results"],
                  key=lambda r: (r["task"] != "binary", r.get("fold", 0), order.get(r["option"], 99)))
    for r in rows:
        lines.append(
            f"| {r['task']} | {r.get('fold', 0)} | {r['option']} | {r['image_size']} | {pct(r['accuracy'])} | "
            f"{pct(r['balanced_accuracy'])} | {pct(r['roc_auc'])} | {pct(r['abstention_rate'])} | "
            f"{pct(r['answered_accuracy'])} | {r['fit_time_s'] / 60:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="binary,3class")
    parser.add_argument("--options", default=",".join(DEFAULT_OPTIONS),
                        help=f"comma-separated, from {', '.join(OPTIONS)}")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=MODEL_SETTINGS["cnn"]["max_epochs"])
    parser.add_argument("--fold", type=int, default=0, choices=range(5),
                        help="which of the 5 patient-grouped folds is held out")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--phantom", action="store_true", help="synthetic images (smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = parser.parse_args(argv)
    args.options = [o for o in args.options.split(",") if o]
    unknown = [o for o in args.options if o not in OPTIONS]
    if unknown:
        parser.error(f"unknown option(s) {unknown}; choose from {list(OPTIONS)}")
    args.out = args.out or (RESULTS_DIR / "quick" / "model_options.json" if args.phantom else OUT)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    threads = configure_threads(args.threads)
    meta, root = load_data(args)
    t0 = time.perf_counter()
    merge_rows(args.out, [], {
        "command": command_line(), "threads": threads, "protocol": (
            "first fold of StratifiedGroupKFold(5, shuffle=True, random_state=0) by patient_id"),
        "benchmark_cnn": {**REFERENCE_PARAMS, **MODEL_SETTINGS["cnn"]["params"], "max_epochs": args.epochs},
        "image_size": args.image_size, "data": str(root),
    })
    for task in [t for t in args.tasks.split(",") if t]:
        run_task(task, args, meta, root)
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
