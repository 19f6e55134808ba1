"""The ``skxray`` command: explore, train, evaluate, predict, compare, audit, demo.

A shell over :mod:`skxray.workflows`: each command parses its options,
calls one workflow function and prints what it returns.

User errors (a missing folder, one class only, an unknown model) print one
line and exit with status 2; ``--verbose`` shows the traceback instead.
``predict`` and ``evaluate`` go on past files they cannot read: they answer
for every readable image, list each unreadable one with its reason, and exit
with status 1; with ``--scheduler`` they do the same on a Dask cluster
(:mod:`skxray.dask`).
"""

import argparse
import inspect
import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np

# No import inside a function here: ``import skxray`` (run by ``python -m
# skxray.cli``) already loads torch and the models, and skxray.workflows defers
# its plotting imports itself, so ``skxray --help`` pays for nothing more.
from skxray import __version__, workflows
from skxray._atomic import FolderLockedError
from skxray._utils import jsonable
from skxray.dask import MAX_PARTITION_SIZE
from skxray.io import ImageReadError
from skxray.models import CNN_PRESETS, PretrainedWeightsError, classifier_names, make_classifier
from skxray.ood import ShiftTestResult
from skxray.workflows import MIN_BATCH_FOR_SHIFT_TEST, WorkflowWarning, model_defaults

__all__ = ["main", "build_parser", "model_defaults"]


class UserError(Exception):
    """An error caused by the command line or the data, reported in one line."""


# ----------------------------------------------------------------------------- options to arguments
def _model_names(value):
    """The names of ``--models``; the workflow refuses an unknown one."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UserError(f"--models names no model; choose among {', '.join(classifier_names())}")
    return names


def _parse_classes(value):
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def _keep_aspect(args):
    """The ``keep_aspect`` value of ``--keep-aspect`` (crop, pad or stretch)."""
    return {"crop": "crop", "pad": "pad", "stretch": False}[getattr(args, "keep_aspect", "crop")]


def _verbose(args):
    """The workflows' ``verbose``: progress lines, and torch's own messages with --verbose."""
    return 2 if args.verbose else 1


def _model_options(args):
    """The settings that ``compare``, ``demo`` and ``audit`` pass on as they are."""
    return {
        "cv": args.cv,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "random_state": args.random_state,
        "classes": _parse_classes(args.classes),
        "weights": args.weights,
        "feature_cache_dir": args.feature_cache_dir,
        "verbose": _verbose(args),
    }


# ----------------------------------------------------------------------------- printing
def _warn(warning, *, verbose=False):
    """A :class:`~skxray.workflows.WorkflowWarning` as one line on stderr; its cause with --verbose.

    The parameter that fixes it is named by its option (``weights=FILE``
    reads ``--weights FILE``).
    """
    text = str(warning)
    parameter = getattr(warning, "parameter", None)
    if parameter:
        text = text.replace(f"{parameter}=", f"--{parameter.replace('_', '-')} ")
    print(f"warning: {text}", file=sys.stderr)
    cause = getattr(warning, "cause", None)
    if verbose and cause:
        print(f"  cause: {cause}", file=sys.stderr)


def _print_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


def _print_unreadable(unreadable):
    """One line per file that could not be read, on stderr, like every other error."""
    for file, reason in unreadable:
        print(f"skxray: error: {reason if file in reason else f'{file}: {reason}'}", file=sys.stderr)


def _per_image_line(rows):
    """What the per-image columns say, as what they are: one image at a time, not the batch."""
    uncertain = sum(r["answer"] == "uncertain" for r in rows)
    reasons = [r.get("reason", "") for r in rows]
    by_lungs = sum("lung check" in r for r in reasons)
    by_distance = sum("distance" in r for r in reasons)
    low = sum(r == "low confidence" for r in reasons)
    return (
        f"Per image: {uncertain} of {len(rows)} answered 'uncertain': {by_lungs} failed the lung check "
        f"(no two lungs of an upright frontal chest X-ray, or lungs the segmenter is unsure of), {by_distance} are unlike the training images "
        f"(distance beyond the detector's threshold), {low} only below min_confidence. Each flag is "
        "about one image (a picture that is not a chest X-ray, an inverted or rotated film); an "
        "unflagged image is not validated when the shift test says the images differ."
    )


def _fmt_rate(rate):
    low, high = rate["ci95"]
    return f"{100 * rate['value']:.1f} % (95 % CI {100 * low:.1f}-{100 * high:.1f}, {rate['count']}/{rate['n']})"


def _print_external(result):
    shift = result["shift_test"]
    if shift is not None:
        print(f"Shift test: {ShiftTestResult(**shift).verdict()}")
    print(f"{result['n_samples']} images; classes present: {', '.join(map(str, result['classes_present']))}")
    for name, entry in result["per_class"].items():
        print(f"sensitivity {name}: {_fmt_rate(entry['sensitivity'])}")
    print(f"accuracy: {_fmt_rate(result['accuracy'])}")
    if result["abstention"] is not None:
        print(f"abstained ('uncertain'): {_fmt_rate(result['abstention'])}")
        why = result.get("abstention_reasons")
        if why:
            print(f"  of which: {why['lung check']} failed the lung check (not an upright frontal chest "
                  f"X-ray to the lung segmenter, or lungs it is unsure of), {why['distance']} unlike the training images (distance), "
                  f"{why['low confidence']} below min_confidence; one image may have several reasons")
    metrics = result["metrics"]
    if metrics is not None:
        for key in ("balanced_accuracy", "roc_auc", "brier"):
            if metrics.get(key) is not None:
                print(f"{key}: {metrics[key]:.4f}")
    for note in result["notes"]:
        print(f"not computed: {note}")


def _print_predictions(result, *, as_json):
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    if result.shift_summary:
        print(result.shift_summary)
    rows = result.rows
    if not rows:
        return
    headers = ["image", "label", "probability"]
    if "answer" in rows[0]:
        headers += ["out_of_distribution", "ood_distance", "answer", "reason"]
    _print_table([[r[h] if not isinstance(r[h], float) else f"{r[h]:.3f}" for h in headers] for r in rows], headers)
    if "answer" in rows[0]:
        print(_per_image_line(rows))


# ----------------------------------------------------------------------------- commands
def cmd_explore(args):
    result = workflows.explore(args.data_dir, args.out, classes=_parse_classes(args.classes),
                               random_state=args.random_state)
    print(f"{result.n_images} images in {len(result.class_counts)} classes under {Path(args.data_dir)}")
    _print_table(list(result.class_counts.items()), ["class", "images"])
    width, height = result.sizes[:, 0], result.sizes[:, 1]
    print(
        f"image width: min {width.min()}, median {int(np.median(width))}, max {width.max()}; "
        f"height: min {height.min()}, median {int(np.median(height))}, max {height.max()}"
    )
    if result.n_patients is not None:
        print(f"{result.n_patients} patients (from manifest.csv)")
    for file in result.files:
        print(f"wrote {file}")
    return 0


def _check_train_args(args):
    """Refuse a bad destination or option before minutes of training, not after."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a folder")
    if args.resume and not args.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir, the folder the interrupted run wrote to")
    if args.preset and not hasattr(type(make_classifier(args.model)), "from_preset"):
        raise UserError(f"--preset {args.preset} is a preset of the cnn model; {args.model} has none")


def _train_model(args):
    """The unfitted classifier of ``skxray train``: the defaults or the preset, then the options."""
    # Only the options given, so the defaults (or the preset's) stay; "none" is None.
    given = {"lr": args.lr, "class_weight": args.class_weight, "early_stopping": args.early_stopping or None,
             "checkpoint_dir": args.checkpoint_dir, "image_size": args.image_size, "epochs": args.epochs}
    given = {k: None if v == "none" else v for k, v in given.items() if v is not None}
    return workflows.make_model(
        args.model,
        preset=args.preset,
        random_state=args.random_state,
        verbose=1,
        weights=None if str(args.weights).lower() == "none" else args.weights,
        # Only a folder the user chose. The saved model does not keep it:
        # pass --feature-cache-dir again to the commands that load it.
        feature_cache_dir=args.feature_cache_dir,
        # Saved with the model, so evaluate and predict read images the same way.
        keep_aspect=_keep_aspect(args),
        **given,
    )


def cmd_train(args):
    _check_train_args(args)
    # The progress bar redraws one line with carriage returns: only for a person
    # watching a terminal, or when asked; logs keep the per-epoch table.
    result = workflows.train(
        args.data_dir, args.out, _train_model(args), classes=_parse_classes(args.classes),
        resume=args.resume, progress_bar=args.progress or sys.stderr.isatty(),
    )
    print(f"trained {type(result.model).__name__} on {result.n_images} images in {result.fit_seconds:.1f} s")
    print(f"saved model to {result.model_dir}")
    for file in result.files:
        print(f"wrote {file}")
    return 0


def cmd_predict(args):
    result = workflows.predict(args.model_dir, args.images, scheduler=args.scheduler,
                               partition_size=args.partition_size,
                               exclude_patient_pairs=args.exclude_patient_pairs)
    _print_predictions(result, as_json=args.json)
    _print_unreadable(result.unreadable)
    return 1 if result.unreadable else 0


def cmd_evaluate(args):
    result = workflows.evaluate(
        args.model_dir, args.data_dir, report=args.report, internal=args.internal, cv=args.cv,
        scheduler=args.scheduler, partition_size=args.partition_size,
        exclude_patient_pairs=args.exclude_patient_pairs,
    )
    if result.validation is None:
        _print_unreadable(result.unreadable)
        return 1
    if args.json:
        print(json.dumps(jsonable(result.validation), indent=2))
    else:
        _print_external(result.validation)
    if result.report_path is not None:
        print(f"wrote {result.report_path}")
    _print_unreadable(result.unreadable)
    return 1 if result.unreadable else 0


def _print_compared(result):
    print(f"metrics: {result.metrics_path}")
    print(f"report: {result.report_path}")


def cmd_compare(args):
    result = workflows.compare(args.data_dir, args.out, models=_model_names(args.models),
                               keep_aspect=_keep_aspect(args), **_model_options(args))
    _print_compared(result)
    return 0


def cmd_demo(args):
    if args.data is None:
        print("Demo on synthetic phantoms made on the spot: they test the software, they are not")
        print("evidence about real X-rays (pass --data DATA_DIR for a real folder).")
    result = workflows.demo(args.out, data_dir=args.data, n_samples=args.n_samples,
                            models=_model_names(args.models), keep_aspect=_keep_aspect(args),
                            **_model_options(args))
    _print_compared(result)
    return 0


def cmd_audit(args):
    result = workflows.audit_folder(args.data_dir, args.out, model=args.model, **_model_options(args))
    print(result.audit)
    print(f"wrote {result.json_path} and {result.report_path}")
    return 0


# ----------------------------------------------------------------------------- parser
#: Each sub-command: the one line of ``skxray --help``, what ``skxray COMMAND --help``
#: says it does, and an example.
COMMANDS = {
    "explore": (
        "counts per class, image sizes and a grid of sample images",
        "Look at an image folder before training: print the images per class, the range of "
        "image sizes and the number of patients (from manifest.csv), and write a grid of "
        "sample images and a histogram of image sizes to --out.",
        "skxray explore ../shared/data/darkcovidnet --out explore",
    ),
    "train": (
        "fit a model on a folder and save it",
        "Fit one classifier on every image of a folder and save it to --out, with a plot of "
        "its learning curves. Without --preset the classifier has the library's defaults, as "
        "CNNClassifier() in Python; --preset benchmark gives CNNClassifier.from_preset"
        "('benchmark'), the settings of the quickstart and the benchmark. --epochs, --lr, "
        "--class-weight and --image-size override either.",
        "skxray train ../shared/data/darkcovidnet --model cnn --out models/cnn "
        "--classes Covid-19,No_findings",
    ),
    "evaluate": (
        "what a saved model achieves on a folder (all of its classes or some, e.g. "
        "another hospital's COVID-19 images), with 95%% intervals, abstention and the shift test",
        "Score a saved model on a labelled folder it was not trained on: accuracy and the "
        "sensitivity of each class present with 95 % intervals, the share of images it "
        "abstains on, and the shift test of the whole folder. --report writes an HTML report; "
        "--internal puts cross-validated figures of the same settings beside them.",
        "skxray evaluate models/cnn other-hospital/ --report evaluation",
    ),
    "predict": (
        "label and probability of each image; folders are searched recursively, and a "
        f"batch of {MIN_BATCH_FOR_SHIFT_TEST} images or more is shift-tested first",
        "Label each image with a saved model: the label, its probability and, when the model "
        "has an out-of-distribution detector, whether the image is out of distribution and "
        f"the answer ('uncertain' for those). A batch of {MIN_BATCH_FOR_SHIFT_TEST} images or "
        "more gets the shift test first. Unreadable files are listed on stderr (exit status 1).",
        "skxray predict models/cnn scans/ --json > predictions.json",
    ),
    "compare": (
        "CNN vs FNN vs ResNet-50 (and their ensemble) under cross-validation, HTML report",
        "Cross-validate several models and their soft vote on the same folds (grouped by "
        "patient when the folder has a manifest with patient_id), print a table of their "
        "figures and write an HTML report with curves, confusion matrices and Grad-CAM maps.",
        "skxray compare ../shared/data/darkcovidnet --out report --models cnn,fnn --cv 5",
    ),
    "demo": (
        "the main job: compare the models and write the HTML report",
        "'compare' on synthetic phantoms made on the spot (no data or network needed; they "
        "test the software, they are not evidence about X-rays), or on a real folder with "
        "--data.",
        "skxray demo --out demo-report",
    ),
    "audit": (
        "shortcut-learning and leakage audit of a model on a folder",
        "Look for shortcuts and leaks: cross-validate one model and run the audit's checks "
        "(patient leakage, duplicates, source, lungs masked, calibration, label issues) with "
        "the manifest's patient_id and source columns when present; write audit.json and "
        "report.html to --out.",
        "skxray audit ../shared/data/darkcovidnet --model cnn --out audit --image-size 64",
    ),
}

#: Help of the arguments several sub-commands share.
DATA_DIR_HELP = "image folder with one sub-folder per class, optionally a manifest.csv"
MODEL_DIR_HELP = "folder of a model saved by 'skxray train'"
CV_HELP = "number of cross-validation folds (default %(default)s)"
MODELS_HELP = f"comma-separated models among {', '.join(classifier_names())} (default %(default)s)"


def _default(function, parameter):
    """The default of a workflow's parameter, as an option's default."""
    return inspect.signature(function).parameters[parameter].default


def _defaults_help(key):
    """'cnn 128, fnn 64, resnet50 224': each model's default, for the --help texts."""
    return ", ".join(f"{name} {model_defaults(name)[key]}" for name in classifier_names())


def _add_model_options(p, *, several=False):
    """--image-size, --epochs, --random-state, --classes, --weights, --feature-cache-dir."""
    shared = " (several models share the smallest)" if several else ""
    p.add_argument("--image-size", type=int, metavar="PX",
                   help=f"side of the square images in pixels (default: the model's own, "
                   f"{_defaults_help('image_size')}{shared})")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"training epochs (default: the model's own, {_defaults_help('epochs')})")
    p.add_argument("--random-state", type=int, default=_default(workflows.compare, "random_state"),
                   metavar="SEED", help="seed of the folds, the weights and the shuffling (default %(default)s)")
    p.add_argument("--classes", help="comma-separated classes to use (default: every sub-folder)")
    weights = _default(workflows.compare, "weights")
    p.add_argument("--weights", default=weights,
                   help=f"ResNet-50 weights: {weights}, a file, or none (default %(default)s)")
    p.add_argument(
        "--feature-cache-dir", metavar="DIR",
        help="keep the frozen ResNet-50's features of each image in DIR, for later runs "
        "(compare, demo and audit otherwise share them through a temporary folder)",
    )


def _add_keep_aspect(p):
    p.add_argument(
        "--keep-aspect", choices=("crop", "pad", "stretch"), default="crop",
        help="how non-square images become square: centre crop (default), zero padding or stretch",
    )


def _add_dask_options(p):
    p.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="score the images on a Dask cluster: the address of a running scheduler "
        "(tcp://host:8786), or local:N to start N worker processes on this machine; "
        "each worker loads the model once, the output is the same, in the same order "
        "(needs the dask extra)",
    )
    p.add_argument(
        "--partition-size", type=int, metavar="N",
        help="with --scheduler: images per task (default: about 4 tasks per worker, "
        f"at most {MAX_PARTITION_SIZE} images each)",
    )


def _add_shift_options(p):
    p.add_argument(
        "--exclude-patient-pairs", action="store_true",
        help="in the shift test's image part, leave out the pairs of reference images of one "
        "patient (for a model trained on a folder with patient ids): fewer false alarms when "
        "only the case mix changed, a little less power on small batches (see the user "
        "guide's page on new hospitals)",
    )


def _add_train_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--model", required=True, choices=classifier_names(), help="the classifier to train")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to save the model in")
    p.add_argument("--preset", choices=sorted(CNN_PRESETS),
                   help="start from CNNClassifier.from_preset(PRESET) instead of the defaults "
                   "(cnn only; 'benchmark': the quickstart's settings)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model's or preset's)")
    p.add_argument("--class-weight", choices=("balanced", "none"),
                   help="'balanced' weighs each class by the inverse of its frequency "
                   "(default: the model's or preset's)")
    p.add_argument("--early-stopping", action="store_true", help="stop when the validation loss stalls")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="write a crash-safe checkpoint every epoch under DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue the last interrupted run with the same settings under --checkpoint-dir")
    _add_keep_aspect(p)
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when the output is not a terminal (e.g. a log file)")
    _add_model_options(p)


def _add_evaluate_options(p):
    p.add_argument("model_dir", metavar="MODEL_DIR", help=MODEL_DIR_HELP)
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP + " (the model's classes or some)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--report", metavar="REPORT_DIR", help="also write an HTML report to REPORT_DIR")
    p.add_argument(
        "--internal", metavar="TRAIN_DIR",
        help="with --report: cross-validate the model's settings on TRAIN_DIR (grouped by patient "
        "when it has a manifest with patient_id) to show internal figures beside the external ones",
    )
    p.add_argument("--cv", type=int, default=_default(workflows.evaluate, "cv"),
                   help="folds of --internal (default %(default)s)")
    _add_shift_options(p)
    _add_dask_options(p)


def _add_predict_options(p):
    p.add_argument("model_dir", metavar="MODEL_DIR", help=MODEL_DIR_HELP)
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+",
                   help="image files (PNG, JPEG, TIFF, DICOM ...) or folders, searched recursively")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_shift_options(p)
    _add_dask_options(p)


def _add_explore_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--out", default="explore", metavar="DIR", help="folder for the figures (default ./explore)")
    p.add_argument("--classes", help="comma-separated classes to use (default: every sub-folder)")
    p.add_argument("--random-state", type=int, default=_default(workflows.explore, "random_state"),
                   metavar="SEED", help="seed of the sample grid (default %(default)s)")


def _add_compare_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for report.html and metrics.json")
    p.add_argument("--cv", type=int, default=_default(workflows.compare, "cv"), help=CV_HELP)
    p.add_argument("--models", default=",".join(_default(workflows.compare, "models")), help=MODELS_HELP)
    _add_keep_aspect(p)
    _add_model_options(p, several=True)


def _add_demo_options(p):
    p.add_argument("--data", metavar="DATA_DIR", help="a real image folder (default: phantoms made on the spot)")
    p.add_argument("--out", default="demo-report", metavar="REPORT_DIR",
                   help="folder for report.html and metrics.json (default ./demo-report)")
    p.add_argument("--cv", type=int, default=_default(workflows.demo, "cv"), help=CV_HELP)
    p.add_argument("--n-samples", type=int, default=_default(workflows.demo, "n_samples"),
                   help="phantoms to make without --data (default %(default)s)")
    p.add_argument("--models", default=",".join(_default(workflows.demo, "models")), help=MODELS_HELP)
    _add_keep_aspect(p)
    _add_model_options(p, several=True)


def _add_audit_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--model", default=_default(workflows.audit_folder, "model"), choices=classifier_names(),
                   help="the classifier to audit (default %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for audit.json and report.html")
    p.add_argument("--cv", type=int, default=_default(workflows.audit_folder, "cv"), help=CV_HELP)
    _add_model_options(p)


def _command_table():
    """name -> (function adding its arguments, function running it)."""
    return {
        "explore": (_add_explore_options, cmd_explore),
        "train": (_add_train_options, cmd_train),
        "evaluate": (_add_evaluate_options, cmd_evaluate),
        "predict": (_add_predict_options, cmd_predict),
        "compare": (_add_compare_options, cmd_compare),
        "demo": (_add_demo_options, cmd_demo),
        "audit": (_add_audit_options, cmd_audit),
    }


def build_parser():
    """Return the argument parser of the ``skxray`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser, with one sub-command per task. ``--verbose`` is accepted
        before or after the sub-command.
    """
    verbose_help = "show full tracebacks and technical causes on errors"
    parser = argparse.ArgumentParser(
        prog="skxray",
        description="Chest X-ray classification with scikit-learn-compatible neural networks.",
        epilog="Run 'skxray COMMAND --help' for what a command does, with an example.",
    )
    parser.add_argument("--version", action="version", version=f"skxray {__version__}")
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    # After the sub-command too; SUPPRESS keeps a --verbose given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add_options, func) in _command_table().items():
        summary, description, example = COMMANDS[name]
        p = sub.add_parser(
            name, help=summary, parents=[after], formatter_class=argparse.RawDescriptionHelpFormatter,
            description=textwrap.fill(description, 79), epilog=f"example:\n  {example}",
        )
        add_options(p)
        p.set_defaults(func=func)
    return parser


def main(argv=None):
    """Run the ``skxray`` command.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 when ``predict`` or ``evaluate`` met unreadable
        files (the others are answered), 2 on a user error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.verbose:
                warnings.simplefilter("ignore", category=FutureWarning)
            _show_workflow_warnings(verbose=args.verbose)
            return args.func(args)
    except Exception as exc:
        user_errors = (
            UserError,
            ImageReadError,
            PretrainedWeightsError,
            FolderLockedError,  # another process writes the --out folder
            OSError,  # unreadable inputs, unwritable outputs
            ValueError,
        )
        user_error = isinstance(exc, user_errors)
        if args.verbose or not user_error:
            raise
        print(f"skxray: error: {exc}", file=sys.stderr)
        return 2


def _show_workflow_warnings(*, verbose):
    """Show each :class:`~skxray.workflows.WorkflowWarning` as it comes, as :func:`_warn` does.

    Called inside ``warnings.catch_warnings()``, which restores the previous
    display afterwards. Other warnings keep Python's display.
    """
    warnings.simplefilter("always", category=WorkflowWarning)
    show = warnings.showwarning

    def display(message, category, *rest, **kwargs):
        if issubclass(category, WorkflowWarning):
            _warn(message, verbose=verbose)
        else:
            show(message, category, *rest, **kwargs)

    warnings.showwarning = display


if __name__ == "__main__":
    sys.exit(main())
