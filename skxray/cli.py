"""The ``skxray`` command: explore, train, evaluate, predict, compare, audit, demo.

User errors (a missing folder, one class only, an unknown model) print one
line and exit with status 2; ``--verbose`` shows the traceback instead.
``predict`` and ``evaluate`` go on past files they cannot read: they answer
for every readable image, list each unreadable one with its reason, and exit
with status 1; with ``--scheduler`` they do the same on a Dask cluster
(:mod:`skxray.dask`).
"""

import argparse
import contextlib
import json
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from skxray._utils import jsonable

__all__ = ["main", "build_parser", "model_defaults"]

#: A batch this large gets the shift test before its predictions.
MIN_BATCH_FOR_SHIFT_TEST = 20


class UserError(Exception):
    """An error caused by the command line or the data, reported in one line."""


# ----------------------------------------------------------------------------- models and defaults
#: The classifier class behind each ``--model`` name.
MODEL_CLASSES = {"cnn": "CNNClassifier", "fnn": "FNNClassifier", "resnet50": "ResNet50Classifier"}
MODELS = tuple(MODEL_CLASSES)


def _model_class(name):
    import skxray.models  # noqa: F401 (fills the registry)
    from skxray.models._registry import CLASSIFIERS

    if name not in MODEL_CLASSES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return CLASSIFIERS[MODEL_CLASSES[name]]


def model_defaults(name, preset=None):
    """The image size and epochs ``skxray`` uses for a model when none are given.

    They are the estimator's own constructor defaults (``image_size``,
    ``max_epochs``), overridden by the named preset's, so that the command
    line and ``CNNClassifier()`` in Python train the same model.

    Parameters
    ----------
    name : {"cnn", "fnn", "resnet50"}
        The ``--model`` name.
    preset : str, default=None
        A preset of ``CNNClassifier.from_preset`` (``skxray train --preset``).

    Returns
    -------
    defaults : dict
        ``{"image_size": int, "epochs": int}``.

    Examples
    --------
    >>> from skxray.cli import model_defaults
    >>> from skxray.models import CNNClassifier
    >>> model_defaults("cnn")["epochs"] == CNNClassifier().max_epochs
    True
    >>> model_defaults("cnn", preset="benchmark")["epochs"]
    15
    """
    from skxray.models import CNN_PRESETS

    params = _model_class(name)().get_params()
    params.update(CNN_PRESETS[preset] if preset else {})
    return {"image_size": params["image_size"], "epochs": params["max_epochs"]}


def _fill_model_defaults(args):
    """Set ``args.image_size`` and ``args.epochs_by_model`` from the models' defaults.

    Several models (``compare``, ``demo``) share one image size, as the images
    are read once: the smallest of their defaults. Each model keeps its own
    epochs unless ``--epochs`` is given.
    """
    names = [args.model] if hasattr(args, "model") else _model_names(args.models)
    preset = getattr(args, "preset", None)
    defaults = {name: model_defaults(name, preset) for name in names}
    if args.image_size is None:
        args.image_size = min(d["image_size"] for d in defaults.values())
    args.epochs_by_model = {
        name: d["epochs"] if args.epochs is None else args.epochs for name, d in defaults.items()
    }


def _model_names(value):
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UserError(f"--models names no model; choose among {', '.join(MODELS)}")
    for name in names:
        _model_class(name)  # an unknown name is a user error
    return names


def _epochs_text(args):
    """The epochs for the report: "20 epochs", or each model's when they differ."""
    counts = args.epochs_by_model
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} epochs"
    return "epochs: " + ", ".join(f"{name} {n}" for name, n in counts.items())


def _make_model(name, *, epochs, image_size, random_state, verbose=0, weights="IMAGENET1K_V2",
                feature_cache_dir=None, preset=None, **params):
    """The classifier of ``name``: its defaults (or ``preset``'s) with the given settings."""
    cls = _model_class(name)
    params = dict(params, max_epochs=epochs, random_state=random_state, verbose=verbose,
                  image_size=image_size)
    if name == "resnet50":
        params.update(weights=weights, feature_cache_dir=feature_cache_dir)
    if preset is None:
        return cls(**params)
    if not hasattr(cls, "from_preset"):
        raise UserError(f"--preset {preset} is a preset of the cnn model; {name} has none")
    return cls.from_preset(preset, **params)


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _feature_cache(args):
    """The ResNet-50 feature folder: --feature-cache-dir, else a temporary one for this command.

    Every fold, the ensemble and the final fit then share one backbone pass
    per image.
    """
    if args.feature_cache_dir:
        yield args.feature_cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="skxray-features-") as folder:
        yield folder


def _resnet_weights(requested, *, verbose=False):
    """ImageNet weights when they can be had, else None, with a one-line note saying so.

    Returns ``(weights, note, cause)``: ``cause`` is the technical reason
    (the download error and where to put the file) or None; the note says
    what to do in one line. torch's own download messages are shown only
    with ``verbose``.
    """
    import io

    from skxray.models.resnet import PretrainedWeightsError, load_resnet50_state_dict

    if requested is None or str(requested).lower() == "none":
        return None, "ResNet-50 backbone: random initialisation (--weights none).", None
    try:
        with contextlib.ExitStack() as quiet:
            if not verbose:  # torch prints "Downloading: ..." to stdout
                quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
            load_resnet50_state_dict(requested)
    except PretrainedWeightsError as exc:
        # One line that says what to do; skxray --verbose adds the cause.
        return None, (
            "ResNet-50 starts from random weights: no ImageNet weights (offline?); "
            "pass --weights FILE"
        ), str(exc)
    return requested, f"ResNet-50 backbone: {requested} weights.", None


def _warn(message, cause=None, *, verbose=False):
    """One line on stderr that says what to do; the technical cause only with --verbose."""
    print(f"warning: {message}", file=sys.stderr)
    if verbose and cause:
        print(f"  cause: {cause}", file=sys.stderr)


def _load_folder(data_dir, *, image_size, classes=None, keep_aspect="crop"):
    from skxray.datasets import load_image_folder

    path = Path(data_dir)
    if not path.exists():
        raise UserError(f"data folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is not a folder")
    return load_image_folder(path, classes=classes, image_size=image_size, keep_aspect=keep_aspect)


def _keep_aspect(args):
    """The ``keep_aspect`` value of ``--keep-aspect`` (crop, pad or stretch)."""
    return {"crop": "crop", "pad": "pad", "stretch": False}[getattr(args, "keep_aspect", "crop")]


def _phantoms(n_samples, image_size, random_state):
    from sklearn.utils import Bunch

    from skxray.datasets import make_phantom_cxr

    X, y, groups = make_phantom_cxr(
        n_samples, image_size=image_size, random_state=random_state, return_groups=True
    )
    return Bunch(data=X, target=y, groups=groups, frame=None)


def _parse_classes(value):
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def _print_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


def _save_figure(fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- commands
def cmd_explore(args):
    from skxray.datasets import load_image_folder
    from skxray.evaluation import plot_image_grid

    path = Path(args.data_dir)
    if not path.is_dir():
        raise UserError(f"data folder {str(path)!r} does not exist or is not a folder")
    bunch = load_image_folder(path, classes=_parse_classes(args.classes))
    labels, counts = np.unique(bunch.target, return_counts=True)
    print(f"{len(bunch.target)} images in {len(labels)} classes under {path}")
    _print_table(list(zip(labels, counts)), ["class", "images"])
    from skxray.io import read_image

    # read_image, not PIL: DICOM folders must work too.
    sizes = np.asarray([read_image(file).shape[::-1] for file in bunch.filenames])
    print(
        f"image width: min {sizes[:, 0].min()}, median {int(np.median(sizes[:, 0]))}, max {sizes[:, 0].max()}; "
        f"height: min {sizes[:, 1].min()}, median {int(np.median(sizes[:, 1]))}, max {sizes[:, 1].max()}"
    )
    if bunch.groups is not None:
        print(f"{len(np.unique(bunch.groups))} patients (from manifest.csv)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _save_figure(
        plot_image_grid(bunch.filenames, bunch.target, n=6, random_state=args.random_state),
        out / "sample_grid.png",
    )
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist(sizes.max(axis=1), bins=20)
    ax.set_xlabel("longest side (px)")
    ax.set_ylabel("images")
    _save_figure(fig, out / "size_histogram.png")
    return 0


def cmd_train(args):
    # Refuse a bad destination before minutes of training, not after.
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a folder")
    if args.resume and not args.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir, the folder the interrupted run wrote to")
    from skxray._atomic import FolderLockedError, exclusive_lock

    # Held from before training until the model is saved: a second
    # 'skxray train --out SAME_DIR' fails at once, instead of training for
    # minutes and then mixing its files with the first one's.
    try:
        with exclusive_lock(out):
            return _train_into(args, out)
    except FolderLockedError as exc:
        raise UserError(str(exc)) from exc


def _train_model(args):
    """The unfitted classifier of ``skxray train``: the defaults or the preset, then the options."""
    weights = args.weights
    if args.model == "resnet50" and str(weights).lower() == "none":
        weights = None
    # Only the options given, so the defaults (or the preset's) stay; "none" is None.
    given = {k: v for k, v in {"lr": args.lr, "class_weight": args.class_weight}.items() if v is not None}
    given["early_stopping"] = args.early_stopping or None
    given["checkpoint_dir"] = args.checkpoint_dir
    model = _make_model(
        args.model,
        epochs=args.epochs_by_model[args.model],
        image_size=args.image_size,
        random_state=args.random_state,
        verbose=1,
        weights=weights,
        # Only a folder the user chose. The saved model does not keep it:
        # pass --feature-cache-dir again to the commands that load it.
        feature_cache_dir=args.feature_cache_dir,
        preset=args.preset,
        # Saved with the model, so evaluate and predict read images the same way.
        keep_aspect=_keep_aspect(args),
        **{k: None if v == "none" else v for k, v in given.items() if v is not None},
    )
    return model


def _train_into(args, out):
    from skxray.evaluation import plot_learning_curves

    model = _train_model(args)  # a bad option fails before the images are read
    bunch = _load_folder(
        args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes),
        keep_aspect=model.keep_aspect,
    )
    start = time.perf_counter()
    # The progress bar redraws one line with carriage returns: only for a person
    # watching a terminal, or when asked; logs keep the per-epoch table. The default
    # callback is named, so a parameter switches it off.
    if not (args.progress or sys.stderr.isatty()):
        model.set_params(callbacks__progress_bar=None)
    model.fit(bunch.data, bunch.target, resume=bool(args.resume))
    print(f"trained {type(model).__name__} on {len(bunch.target)} images in {time.perf_counter() - start:.1f} s")
    out = model.save(args.out)
    print(f"saved model to {out}")
    _save_figure(plot_learning_curves(model), Path(out) / "learning_curves.png")
    return 0


def _load_model(model_dir):
    from skxray.models import load

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"{str(path)!r} is not a saved skxray model (no config.json); train one with 'skxray train'")
    return load(path)


def _expand_images(items):
    """The files named, with every image file below each named folder (recursively).

    Hidden files and folders are skipped; a folder's files come sorted by
    path. A named file is kept even if it does not exist, so that it is
    reported as unreadable with the others instead of stopping the batch.
    """
    from skxray.io import is_image_file

    files = []
    for item in items:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(
            f
            for f in path.rglob("*")
            if f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
            and is_image_file(f)
        )
        if not found:
            raise UserError(f"no image files in folder {str(path)!r}")
        files.extend(found)
    return files


def _batch_shift_test(model, n_images, run, *, quiet):
    """The shift test of a batch of 20 images or more, printed first (None when not run).

    ``run()`` computes it: in this process, or on a Dask worker.
    """
    if getattr(model, "ood_", None) is None or not model.ood_.has_reference_:
        if not quiet:
            print("Shift test: not available (the model has no held-out reference sample).")
        return None
    if n_images < MIN_BATCH_FOR_SHIFT_TEST:
        if not quiet:
            print(
                f"Shift test: not run ({n_images} images; it needs {MIN_BATCH_FOR_SHIFT_TEST} or more "
                "to say anything about a batch)."
            )
        return None
    result = run()
    if not quiet:
        print(f"Shift test: {result.verdict()}")
    return result


def _per_image_line(rows):
    """What the per-image columns say, as what they are: one image at a time, not the batch."""
    uncertain = sum(r["answer"] == "uncertain" for r in rows)
    flagged = sum(bool(r["out_of_distribution"]) for r in rows)
    return (
        f"Per image: {uncertain} of {len(rows)} answered 'uncertain' ({flagged} out of distribution for "
        "the model's detector, the rest below min_confidence). Each flag is about one image (a picture "
        "that is not a chest X-ray, an inverted or rotated film); an unflagged image is not validated "
        "when the shift test says the images differ."
    )


def _print_unreadable(unreadable):
    """One line per file that could not be read, on stderr, like every other error."""
    for file, reason in unreadable:
        print(f"skxray: error: {reason if file in reason else f'{file}: {reason}'}", file=sys.stderr)


def cmd_predict(args):
    model = _load_model(args.model_dir)
    files = _expand_images(args.images)
    if args.scheduler:
        readable, unreadable, scores, shift = _predict_on_dask(args, model, files)
    else:
        from skxray.dask import read_images, score_images
        from skxray.ood import shift_test

        X, readable, unreadable = read_images(model, files)
        shift = None
        if len(X):
            shift = _batch_shift_test(
                model, len(X), lambda: shift_test(model, X, random_state=0), quiet=args.json
            )
        scores = score_images(model, X)
    rows = _prediction_rows(model, readable, scores)
    if args.json:
        print(
            json.dumps(
                {
                    "shift_test": None if shift is None else shift.to_dict(),
                    "predictions": rows,
                    "unreadable": [{"image": f, "reason": r} for f, r in unreadable],
                },
                indent=2,
            )
        )
    elif rows:
        headers = ["image", "label", "probability"]
        if "answer" in rows[0]:
            headers += ["out_of_distribution", "ood_distance", "answer"]
        _print_table(
            [[r[h] if not isinstance(r[h], float) else f"{r[h]:.3f}" for h in headers] for r in rows], headers
        )
        if "answer" in rows[0]:
            print(_per_image_line(rows))
    _print_unreadable(unreadable)
    return 1 if unreadable else 0


@contextlib.contextmanager
def _dask_predictor(args):
    """A :class:`skxray.dask.DaskPredictor` for ``--scheduler``, with its errors as user errors."""
    from skxray.dask import DaskPredictor

    if args.partition_size is not None and args.partition_size < 1:
        raise UserError(f"--partition-size must be 1 or more; got {args.partition_size}")
    with contextlib.ExitStack() as stack:
        try:
            predictor = stack.enter_context(
                DaskPredictor(args.model_dir, args.scheduler, partition_size=args.partition_size)
            )
        except ImportError as exc:  # no dask extra
            raise UserError(str(exc)) from exc
        yield predictor


def _predict_on_dask(args, model, files):
    """``(readable, unreadable, scores, shift)`` of ``predict`` scored on the Dask cluster."""
    with _dask_predictor(args) as predictor:
        predictions = predictor.predict(files)
        shift = None
        if predictions.files:
            shift = _batch_shift_test(
                model, len(predictions.files), lambda: predictor.shift_test(predictions.files),
                quiet=args.json,
            )
    scores = {
        "proba": predictions.proba,
        "answers": predictions.answers,
        "ood_scores": predictions.ood_scores,
        "out_of_distribution": predictions.out_of_distribution,
    }
    return predictions.files, predictions.unreadable, scores, shift


def _prediction_rows(model, files, scores):
    """One JSON-friendly row per file from :func:`skxray.dask.score_images`'s ``scores``."""
    proba = scores["proba"]
    best = proba.argmax(axis=1) if len(proba) else np.empty(0, dtype=int)
    rows = []
    for i, file in enumerate(files):
        row = {
            "image": file,
            "label": jsonable(model.classes_[best[i]]),
            "probability": float(proba[i, best[i]]),
            "probabilities": {str(c): float(p) for c, p in zip(model.classes_, proba[i])},
        }
        if scores["answers"] is not None:
            row["out_of_distribution"] = bool(scores["out_of_distribution"][i])
            row["ood_distance"] = float(scores["ood_scores"][i])
            row["answer"] = jsonable(scores["answers"][i])
        rows.append(row)
    return rows


def cmd_evaluate(args):
    from skxray.datasets import load_image_folder

    model = _load_model(args.model_dir)
    path = Path(args.data_dir)
    if not path.is_dir():
        raise UserError(f"data folder {str(path)!r} does not exist or is not a folder")
    # Paths first, so one unreadable file is reported instead of sinking the run.
    bunch = load_image_folder(path, min_classes=1)
    known = {str(c) for c in model.classes_}
    foreign = sorted(set(bunch.target_names) - known)
    if foreign:
        raise UserError(
            f"{str(path)!r} has class folder(s) {foreign} that the model does not know; "
            f"its classes are {sorted(known)}"
        )
    label_of = dict(zip(map(str, bunch.filenames), bunch.target))

    def labels(readable):
        return _as_model_labels(np.asarray([label_of[f] for f in readable], dtype=object), model.classes_)

    if args.scheduler:
        result, unreadable = _evaluate_on_dask(args, bunch.filenames, labels)
    else:
        result, unreadable = _evaluate_here(model, bunch.filenames, labels)
    if result is None:
        _print_unreadable(unreadable)
        return 1
    result["unreadable"] = [{"image": f, "reason": r} for f, r in unreadable]
    if args.json:
        print(json.dumps(jsonable(result), indent=2))
    else:
        _print_external(result)
    if args.report:
        _write_evaluate_report(args, model, result)
    _print_unreadable(unreadable)
    return 1 if unreadable else 0


def _evaluate_here(model, files, labels):
    """``(external_validation result or None when nothing is readable, unreadable)`` in this process."""
    from skxray.dask import read_images
    from skxray.evaluation import external_validation

    X, readable, unreadable = read_images(model, files)
    if not len(X):
        return None, unreadable
    return external_validation(model, X, labels(readable), random_state=0), unreadable


def _evaluate_on_dask(args, files, labels):
    """As :func:`_evaluate_here`, the images scored on the Dask cluster of ``--scheduler``."""
    with _dask_predictor(args) as predictor:
        predictions = predictor.predict(files)
        if not predictions.files:
            return None, predictions.unreadable
        result = predictor.external_validation(predictions, labels(predictions.files), random_state=0)
    return result, predictions.unreadable


def _write_evaluate_report(args, model, result):
    """The evaluate report: internal (cross-validated, with --internal) beside external figures."""
    from sklearn.base import clone

    from skxray.evaluation import compare_models, external_validation_figures
    from skxray.ood import ShiftTestResult
    from skxray.report import Report

    name = type(model).__name__
    internal, n_splits = None, args.cv
    protocol = "Internal: not run (pass --internal TRAIN_DIR)."
    if args.internal:
        train = _load_folder(
            args.internal,
            image_size=model.input_shape_[-1],
            classes=[str(c) for c in model.classes_],
            keep_aspect=model.keep_aspect,
        )
        table = compare_models(
            {name: clone(model)}, train.data, train.target, cv=args.cv, groups=train.groups, random_state=0
        )
        internal, n_splits = table.iloc[0], table.attrs["n_splits"]
        grouped = " grouped by patient" if train.groups is not None else " (no patient ids: image-level folds)"
        protocol = f"Internal: {args.cv}-fold cross-validation on {args.internal}{grouped}."
    report = Report(title=f"{name} on {Path(args.data_dir).name}")
    report.add_text(
        "What was run",
        f"Model {args.model_dir} ({name}, classes {', '.join(map(str, model.classes_))}) evaluated on "
        f"{result['n_samples']} images of {args.data_dir}. {protocol}",
    )
    inside, outside = external_validation_figures(result, internal, n_splits=n_splits)
    shift = result["shift_test"]
    report.add_external_validation(
        inside,
        outside,
        shift_verdict=None if shift is None else ShiftTestResult(**shift).severity(),
        shift_text="" if shift is None else ShiftTestResult(**shift).verdict(),
        abstention_rate=None if result["abstention"] is None else result["abstention"]["value"],
        title=f"{name}: internal and external figures",
    )
    if result["notes"]:
        report.add_text("What could not be computed", "\n\n".join(result["notes"]))
    path = report.save(Path(args.report) / "report.html")
    print(f"wrote {path}")


def _as_model_labels(y, classes):
    """Folder names (str) as the model's label type (ints or bools when it was fitted on those)."""
    by_name = {str(c): c for c in classes}
    out = np.empty(len(y), dtype=object)
    out[:] = [by_name[str(v)] for v in y]
    return out if classes.dtype == object else out.astype(classes.dtype)


def _fmt_rate(rate):
    low, high = rate["ci95"]
    return f"{100 * rate['value']:.1f} % (95 % CI {100 * low:.1f}-{100 * high:.1f}, {rate['count']}/{rate['n']})"


def _print_external(result):
    shift = result["shift_test"]
    if shift is not None:
        from skxray.ood import ShiftTestResult

        print(f"Shift test: {ShiftTestResult(**shift).verdict()}")
    print(f"{result['n_samples']} images; classes present: {', '.join(map(str, result['classes_present']))}")
    for name, entry in result["per_class"].items():
        print(f"sensitivity {name}: {_fmt_rate(entry['sensitivity'])}")
    print(f"accuracy: {_fmt_rate(result['accuracy'])}")
    if result["abstention"] is not None:
        print(f"abstained ('uncertain'): {_fmt_rate(result['abstention'])}")
    metrics = result["metrics"]
    if metrics is not None:
        for key in ("balanced_accuracy", "roc_auc", "brier"):
            if metrics.get(key) is not None:
                print(f"{key}: {metrics[key]:.4f}")
    for note in result["notes"]:
        print(f"not computed: {note}")


def _models_for_compare(
    names, *, epochs_by_model, image_size, random_state, weights, feature_cache_dir=None, verbose=False
):
    """The models by name, with the soft vote of them all; and the warnings to show.

    Returns ``(models, notes, warnings)``: notes are facts for the report
    (e.g. which ResNet-50 weights), warnings ``(message, cause)`` pairs.
    """
    from sklearn.ensemble import VotingClassifier

    notes, problems = [], []
    models = {}
    for name in names:
        w = weights
        if name == "resnet50":
            w, note, cause = _resnet_weights(weights, verbose=verbose)
            if cause:
                problems.append((note, cause))
                note = "ResNet-50 from random initialisation (ImageNet weights unavailable offline)."
            notes.append(note)
        models[name] = _make_model(
            name,
            epochs=epochs_by_model[name],
            image_size=image_size,
            random_state=random_state,
            weights=w,
            feature_cache_dir=feature_cache_dir,
        )
    if len(models) > 1:
        models["soft-voting"] = VotingClassifier(list(models.items()), voting="soft")
    return models, notes, problems


def _run_compare(bunch, args, *, title, data, caveats=()):
    with _feature_cache(args) as feature_cache_dir:
        return _run_compare_with(
            bunch, args, title=title, data=data, caveats=caveats, feature_cache_dir=feature_cache_dir
        )


def _run_compare_with(bunch, args, *, title, data, caveats, feature_cache_dir):
    from skxray.evaluation import compare_models
    from skxray.report import Report, format_comparison

    names = list(args.epochs_by_model)
    labels = np.unique(bunch.target)
    if len(labels) < 2:
        raise UserError(f"the data hold one class only ({labels[0]!r}); at least two are needed")
    models, notes, problems = _models_for_compare(
        names,
        epochs_by_model=args.epochs_by_model,
        image_size=args.image_size,
        random_state=args.random_state,
        weights=args.weights,
        feature_cache_dir=feature_cache_dir,
        verbose=args.verbose,
    )
    groups = bunch.groups
    if groups is not None:
        protocol = f"{args.cv}-fold cross-validation grouped by patient (StratifiedGroupKFold)"
    else:
        protocol = f"{args.cv}-fold stratified cross-validation without patient ids"
        problems.append((
            "no patient ids (manifest.csv): images of one patient may fall in several folds, "
            "which inflates the figures; add a manifest.csv with a patient column.",
            None,
        ))
    n_images = len(bunch.target)
    print(f"{protocol}; {n_images} images, {len(labels)} classes, {args.image_size} px")
    for message, cause in problems:
        _warn(message, cause, verbose=args.verbose)
    start = time.perf_counter()
    table, predictions = compare_models(
        models, bunch.data, bunch.target, cv=args.cv, groups=groups, random_state=args.random_state,
        return_predictions=True,
    )
    elapsed = time.perf_counter() - start
    print()
    print(format_comparison(table, width=100))
    print(f"cross-validation took {elapsed:.0f} s")

    if any("random initialisation" in n for n in notes):
        caveats = [*caveats, "The ResNet-50 ran from random initialisation, not ImageNet weights."]
    if groups is None:
        caveats = [*caveats, "Without patient ids, one patient's images may be in training and "
                   "test folds, which inflates every figure."]
    caveats = [*caveats, "Cross-validation within one collection cannot reveal shortcuts shared "
               "by all its images (e.g. a class coming from one source), nor how the models do "
               "at another hospital."]
    model_names = ", ".join(names) + (" and their soft vote" if "soft-voting" in models else "")
    report = Report(title)
    report.describe(
        data=data,
        protocol=f"{protocol}; images resized to {args.image_size} × {args.image_size} px "
        f"({args.keep_aspect}); {_epochs_text(args)}",
        models="; ".join([model_names, *notes]),
        caveats=caveats,
    )
    report.add_dataset_summary(bunch.data, bunch.target, groups=groups)
    report.add_comparison(table)
    for name, row in table.iterrows():
        report.add_metrics(name, row.to_dict())
    classes = np.asarray(table.attrs["classes"], dtype=object)
    report.add_cv_figures(bunch.target, predictions, classes)
    _add_final_fits(report, models, bunch)
    out = Path(args.out)
    path = report.save(out / "report.html")
    print(f"metrics: {path.parent / 'metrics.json'}")
    print(f"report: {path}")
    return table


def _add_final_fits(report, models, bunch):
    """One fit of each model on all images, for learning curves, Grad-CAM and parameters."""
    final = {}
    for name, model in models.items():
        if name == "soft-voting":
            continue
        final[name] = model.fit(bunch.data, bunch.target)
        report.add_parameters(name, final[name])
    report.add_learning_curves_grid(final)
    report.add_gradcam_gallery(final, bunch.data, bunch.target, n=4)


def cmd_compare(args):
    bunch = _load_folder(
        args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes),
        keep_aspect=_keep_aspect(args),
    )
    _run_compare(bunch, args, title=f"skxray comparison: {Path(args.data_dir).name}",
                 data=f"the image folder {args.data_dir}")
    return 0


def cmd_demo(args):
    if args.data is None:
        print("Demo on synthetic phantoms made on the spot: they test the software, they are not")
        print("evidence about real X-rays (pass --data DATA_DIR for a real folder).")
        bunch = _phantoms(args.n_samples, args.image_size, args.random_state)
        data = "synthetic phantoms made on the spot (skxray.make_phantom_cxr)"
        caveats = ["These are synthetic phantoms, not X-rays: the figures test the software and "
                   "say nothing about diagnosis."]
    else:
        bunch = _load_folder(
            args.data, image_size=args.image_size, classes=_parse_classes(args.classes),
            keep_aspect=_keep_aspect(args),
        )
        data = f"the image folder {args.data}"
        caveats = []
    _run_compare(bunch, args, title="skxray demo", data=data, caveats=caveats)
    return 0


def cmd_audit(args):
    from skxray.audit import audit
    from skxray.report import Report

    bunch = _load_folder(args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes))
    weights, note = args.weights, None
    if args.model == "resnet50":
        weights, note, cause = _resnet_weights(weights, verbose=args.verbose)
        if cause:
            _warn(note, cause, verbose=args.verbose)
        else:
            print(note)
    sources = None
    if bunch.frame is not None and "source" in bunch.frame:
        sources = bunch.frame["source"].to_numpy()
    with _feature_cache(args) as feature_cache_dir:
        model = _make_model(
            args.model,
            epochs=args.epochs_by_model[args.model],
            image_size=args.image_size,
            random_state=args.random_state,
            weights=weights,
            feature_cache_dir=feature_cache_dir,
        )
        result = audit(
            model, bunch.data, bunch.target, groups=bunch.groups, sources=sources, cv=args.cv,
            random_state=args.random_state,
        )
    print(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(result.to_json())
    report = Report(f"skxray audit: {Path(args.data_dir).name}")
    report.describe(
        data=f"the image folder {args.data_dir}",
        protocol=f"{args.cv}-fold cross-validation"
        + (" grouped by patient" if bunch.groups is not None else " without patient ids")
        + f"; images resized to {args.image_size} × {args.image_size} px; {_epochs_text(args)}",
        models=args.model if args.model != "resnet50" else f"resnet50 ({note})",
        caveats="An audit finds the shortcuts it looks for; a clean audit does not prove the "
        "model reads the lungs, nor that it works at another hospital.",
    )
    report.add_dataset_summary(bunch.data, bunch.target, groups=bunch.groups)
    report.add_audit(result)
    path = report.save(out / "report.html")
    print(f"wrote {out / 'audit.json'} and {path}")
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
MODELS_HELP = f"comma-separated models among {', '.join(MODELS)} (default %(default)s)"


def _defaults_help(key):
    """'cnn 128, fnn 64, resnet50 224': each model's default, for the --help texts."""
    return ", ".join(f"{name} {model_defaults(name)[key]}" for name in MODELS)


def _add_model_options(p, *, several=False):
    """--image-size, --epochs, --random-state, --classes, --weights, --feature-cache-dir."""
    shared = " (several models share the smallest)" if several else ""
    p.add_argument("--image-size", type=int, metavar="PX",
                   help=f"side of the square images in pixels (default: the model's own, "
                   f"{_defaults_help('image_size')}{shared})")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"training epochs (default: the model's own, {_defaults_help('epochs')})")
    p.add_argument("--random-state", type=int, default=0, metavar="SEED",
                   help="seed of the folds, the weights and the shuffling (default 0)")
    p.add_argument("--classes", help="comma-separated classes to use (default: every sub-folder)")
    p.add_argument("--weights", default="IMAGENET1K_V2",
                   help="ResNet-50 weights: IMAGENET1K_V2, a file, or none (default IMAGENET1K_V2)")
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
    from skxray.dask import MAX_PARTITION_SIZE

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


def _add_train_options(p):
    from skxray.models import CNN_PRESETS

    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--model", required=True, choices=MODELS, help="the classifier to train")
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
    p.add_argument("--cv", type=int, default=5, help="folds of --internal (default %(default)s)")
    _add_dask_options(p)


def _add_predict_options(p):
    p.add_argument("model_dir", metavar="MODEL_DIR", help=MODEL_DIR_HELP)
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+",
                   help="image files (PNG, JPEG, TIFF, DICOM ...) or folders, searched recursively")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_dask_options(p)


def _add_explore_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--out", default="explore", metavar="DIR", help="folder for the figures (default ./explore)")
    p.add_argument("--classes", help="comma-separated classes to use (default: every sub-folder)")
    p.add_argument("--random-state", type=int, default=0, metavar="SEED", help="seed of the sample grid (default 0)")


def _add_compare_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for report.html and metrics.json")
    p.add_argument("--cv", type=int, default=5, help=CV_HELP)
    p.add_argument("--models", default="cnn,fnn,resnet50", help=MODELS_HELP)
    _add_keep_aspect(p)
    _add_model_options(p, several=True)


def _add_demo_options(p):
    p.add_argument("--data", metavar="DATA_DIR", help="a real image folder (default: phantoms made on the spot)")
    p.add_argument("--out", default="demo-report", metavar="REPORT_DIR",
                   help="folder for report.html and metrics.json (default ./demo-report)")
    p.add_argument("--cv", type=int, default=3, help=CV_HELP)
    p.add_argument("--n-samples", type=int, default=240, help="phantoms to make without --data (default 240)")
    p.add_argument("--models", default="cnn,fnn,resnet50", help=MODELS_HELP)
    _add_keep_aspect(p)
    _add_model_options(p, several=True)


def _add_audit_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", help=DATA_DIR_HELP)
    p.add_argument("--model", default="cnn", choices=MODELS, help="the classifier to audit (default cnn)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for audit.json and report.html")
    p.add_argument("--cv", type=int, default=5, help=CV_HELP)
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
    from skxray import __version__

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
            if hasattr(args, "epochs"):  # a command that trains
                _fill_model_defaults(args)
            return args.func(args)
    except Exception as exc:
        from skxray.io import ImageReadError
        from skxray.models import PretrainedWeightsError

        user_errors = (
            UserError,
            ImageReadError,
            PretrainedWeightsError,
            OSError,  # unreadable inputs, unwritable outputs
            ValueError,
        )
        user_error = isinstance(exc, user_errors)
        if args.verbose or not user_error:
            raise
        print(f"skxray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
