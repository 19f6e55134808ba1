"""The ``skxray`` command: explore, train, evaluate, predict, compare, audit, demo.

User errors (a missing folder, one class only, an unreadable image, an
unknown model) print one line and exit with status 2; ``--verbose`` shows the
traceback instead.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

MODELS = ("cnn", "fnn", "resnet50")


class UserError(Exception):
    """An error caused by the command line or the data, reported in one line."""


# ----------------------------------------------------------------------------- helpers
def _make_model(
    name, *, epochs, image_size, random_state, verbose=0, weights="IMAGENET1K_V2", feature_cache_dir=None
):
    from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier

    common = dict(random_state=random_state, verbose=verbose, image_size=image_size)
    if name == "cnn":
        return CNNClassifier(max_epochs=epochs, **common)
    if name == "fnn":
        return FNNClassifier(max_epochs=epochs, **common)
    if name == "resnet50":
        return ResNet50Classifier(
            max_epochs=epochs, weights=weights, feature_cache_dir=feature_cache_dir, **common
        )
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


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


def _resnet_weights(requested):
    """ImageNet weights when they can be had, else None, with a note saying so."""
    from skxray.models.resnet import PretrainedWeightsError, load_resnet50_state_dict

    if requested is None or str(requested).lower() == "none":
        return None, "ResNet-50 backbone: random initialisation (--weights none)."
    try:
        load_resnet50_state_dict(requested)
    except PretrainedWeightsError as exc:
        return None, (
            "ResNet-50 backbone: ImageNet weights unavailable on this machine, so it runs "
            f"from random initialisation. {exc}"
        )
    return requested, f"ResNet-50 backbone: {requested} weights."


def _load_folder(data_dir, *, image_size, classes=None, keep_aspect="crop"):
    from skxray.datasets import load_image_folder

    path = Path(data_dir)
    if not path.exists():
        raise UserError(f"data folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is not a folder")
    return load_image_folder(path, classes=classes, image_size=image_size, keep_aspect=keep_aspect)


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


def _train_into(args, out):
    from skxray.evaluation import plot_learning_curves

    keep_aspect = {"crop": "crop", "pad": "pad", "stretch": False}[args.keep_aspect]
    bunch = _load_folder(
        args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes), keep_aspect=keep_aspect
    )
    weights = args.weights
    if args.model == "resnet50" and str(weights).lower() == "none":
        weights = None
    model = _make_model(
        args.model,
        epochs=args.epochs,
        image_size=args.image_size,
        random_state=args.random_state,
        verbose=1,
        weights=weights,
        # Only a folder the user chose. The saved model does not keep it:
        # pass --feature-cache-dir again to the commands that load it.
        feature_cache_dir=args.feature_cache_dir,
    )
    # Saved with the model, so evaluate and predict read images the same way.
    model.set_params(keep_aspect=keep_aspect)
    if args.early_stopping:
        model.set_params(early_stopping=True)
    if args.checkpoint_dir:
        model.set_params(checkpoint_dir=args.checkpoint_dir)
    start = time.perf_counter()
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


def cmd_evaluate(args):
    from skxray.evaluation import classification_metrics

    model = _load_model(args.model_dir)
    size = model.input_shape_[-1]
    bunch = _load_folder(
        args.data_dir, image_size=size, classes=list(model.classes_), keep_aspect=model.keep_aspect
    )
    proba = model.predict_proba(bunch.data)
    y_pred = model.classes_[proba.argmax(axis=1)]
    metrics = classification_metrics(bunch.target, y_pred, proba, classes=model.classes_)
    if args.json:
        print(json.dumps(_jsonable(metrics), indent=2))
    else:
        for key, value in metrics.items():
            if not isinstance(value, dict):
                print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
        per_class = metrics.get("per_class", {})
        if per_class:
            names = list(next(iter(per_class.values())).keys())
            _print_table(
                [[c] + [_fmt(per_class[c][n]) for n in names] for c in per_class], ["class", *names]
            )
    return 0


def _fmt(value):
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def cmd_predict(args):
    from skxray.io import read_image
    from skxray.preprocessing import resize_image

    model = _load_model(args.model_dir)
    channels, height, width = model.input_shape_
    images = []
    for file in args.images:
        img = read_image(file, as_gray=channels == 1)
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        images.append(resize_image(img, (height, width), keep_aspect=model.keep_aspect))
    X = np.stack(images)
    proba = model.predict_proba(X)
    best = proba.argmax(axis=1)
    scores = flags = decisions = None
    if getattr(model, "ood_", None) is not None:
        decisions, scores = model.predict_with_abstention(X, return_scores=True)
        flags = scores > model.ood_.threshold_
    rows = []
    for i, file in enumerate(args.images):
        row = {
            "image": str(file),
            "label": _jsonable(model.classes_[best[i]]),
            "probability": float(proba[i, best[i]]),
            "probabilities": {str(c): float(p) for c, p in zip(model.classes_, proba[i])},
        }
        if flags is not None:
            row["out_of_distribution"] = bool(flags[i])
            row["ood_distance"] = float(scores[i])
            row["answer"] = _jsonable(decisions[i])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        headers = ["image", "label", "probability"]
        if flags is not None:
            headers += ["out_of_distribution", "ood_distance", "answer"]
        _print_table(
            [[r[h] if not isinstance(r[h], float) else f"{r[h]:.3f}" for h in headers] for r in rows], headers
        )
    return 0


def _models_for_compare(names, *, epochs, image_size, random_state, weights, feature_cache_dir=None):
    from sklearn.ensemble import VotingClassifier

    notes = []
    models = {}
    for name in names:
        w = weights
        if name == "resnet50":
            w, note = _resnet_weights(weights)
            notes.append(note)
        models[name] = _make_model(
            name,
            epochs=epochs,
            image_size=image_size,
            random_state=random_state,
            weights=w,
            feature_cache_dir=feature_cache_dir,
        )
    if len(models) > 1:
        models["soft-voting"] = VotingClassifier(list(models.items()), voting="soft")
    return models, notes


def _run_compare(bunch, args, *, title, note=None):
    with _feature_cache(args) as feature_cache_dir:
        return _run_compare_with(bunch, args, title=title, note=note, feature_cache_dir=feature_cache_dir)


def _run_compare_with(bunch, args, *, title, note, feature_cache_dir):
    from skxray.evaluation import compare_models
    from skxray.report import Report

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        if name not in MODELS:
            raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    labels = np.unique(bunch.target)
    if len(labels) < 2:
        raise UserError(f"the data hold one class only ({labels[0]!r}); at least two are needed")
    models, notes = _models_for_compare(
        names,
        epochs=args.epochs,
        image_size=args.image_size,
        random_state=args.random_state,
        weights=args.weights,
        feature_cache_dir=feature_cache_dir,
    )
    groups = bunch.groups
    cv_note = (
        f"{args.cv}-fold cross-validation grouped by patient (StratifiedGroupKFold)"
        if groups is not None
        else f"{args.cv}-fold stratified cross-validation (no patient ids: images of one patient may fall in several folds)"
    )
    print(cv_note)
    for n in notes:
        print(n)
    start = time.perf_counter()
    table, predictions = compare_models(
        models, bunch.data, bunch.target, cv=args.cv, groups=groups, random_state=args.random_state,
        return_predictions=True,
    )
    elapsed = time.perf_counter() - start
    with _pandas_wide():
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"cross-validation took {elapsed:.0f} s")

    report = Report(title, note=" ".join(filter(None, [note, cv_note, *notes])))
    report.add_dataset_summary(bunch.data, bunch.target)
    report.add_comparison(table)
    for name, row in table.iterrows():
        report.add_metrics(name, row.to_dict())
    classes = np.unique(bunch.target)
    for name, proba in predictions.items():
        y_pred = classes[np.asarray(proba).argmax(axis=1)]
        report.add_confusion_matrix(name, bunch.target, y_pred)
        report.add_roc(name, bunch.target, proba, classes)
        report.add_calibration(name, bunch.target, proba, classes)
    # One fit on all images for learning curves, Grad-CAM and parameters.
    final = {}
    for name, model in models.items():
        if name == "soft-voting":
            continue
        fitted = model.fit(bunch.data, bunch.target)
        final[name] = fitted
        report.add_learning_curves(name, fitted)
        report.add_parameters(name, fitted)
    rng = np.random.default_rng(args.random_state)
    show = rng.choice(len(bunch.target), size=min(6, len(bunch.target)), replace=False)
    for name in ("cnn", "resnet50"):
        if name in final:
            report.add_gradcam(name, final[name], bunch.data[show], bunch.target[show])
    out = Path(args.out)
    path = report.save(out / "report.html")
    print(f"wrote {path} and {path.parent / 'metrics.json'}")
    return table


class _pandas_wide:
    def __enter__(self):
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 50)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def cmd_compare(args):
    bunch = _load_folder(args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes))
    _run_compare(bunch, args, title=f"skxray comparison: {args.data_dir}")
    return 0


def cmd_demo(args):
    if args.data is None:
        note = (
            "Run on synthetic phantoms made on the spot (skxray.make_phantom_cxr): they test the "
            "software, they are not evidence about real X-rays. Pass --data DATA_DIR for a real folder."
        )
        print(note)
        bunch = _phantoms(args.n_samples, args.image_size, args.random_state)
    else:
        note = f"Run on the image folder {args.data}."
        bunch = _load_folder(args.data, image_size=args.image_size, classes=_parse_classes(args.classes))
    _run_compare(bunch, args, title="skxray demo", note=note)
    return 0


def cmd_audit(args):
    from skxray.audit import audit
    from skxray.report import Report

    bunch = _load_folder(args.data_dir, image_size=args.image_size, classes=_parse_classes(args.classes))
    weights = args.weights
    if args.model == "resnet50":
        weights, note = _resnet_weights(weights)
        print(note)
    sources = None
    if bunch.frame is not None and "source" in bunch.frame:
        sources = bunch.frame["source"].to_numpy()
    with _feature_cache(args) as feature_cache_dir:
        model = _make_model(
            args.model,
            epochs=args.epochs,
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
    report = Report(f"skxray audit: {args.data_dir}")
    report.add_audit(result)
    path = report.save(out / "report.html")
    print(f"wrote {out / 'audit.json'} and {path}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser():
    """Return the argument parser of the ``skxray`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser, with one sub-command per task.
    """
    parser = argparse.ArgumentParser(
        prog="skxray",
        description="Chest X-ray classification with scikit-learn-compatible neural networks.",
    )
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p, *, image_size=64, epochs=10):
        p.add_argument("--image-size", type=int, default=image_size, help=f"side of the square images (default {image_size})")
        p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
        p.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
        p.add_argument("--classes", help="comma-separated classes to use (default: all folders)")
        p.add_argument("--weights", default="IMAGENET1K_V2", help="ResNet-50 weights: IMAGENET1K_V2, a file, or none")
        p.add_argument(
            "--feature-cache-dir",
            metavar="DIR",
            help="keep the frozen ResNet-50's features of each image in DIR, for later runs "
            "(compare, demo and audit otherwise share them through a temporary folder)",
        )

    p = sub.add_parser("explore", help="counts per class, image sizes and a grid of sample images")
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder per class")
    p.add_argument("--out", default="explore", help="folder for the figures (default ./explore)")
    p.add_argument("--classes", help="comma-separated classes to use")
    p.add_argument("--random-state", type=int, default=0)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("train", help="fit a model on a folder and save it")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to save the model in")
    p.add_argument("--early-stopping", action="store_true", help="stop when the validation loss stalls")
    p.add_argument(
        "--checkpoint-dir", metavar="DIR", help="write a crash-safe checkpoint every epoch under DIR"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the last interrupted run with the same settings under --checkpoint-dir",
    )
    p.add_argument(
        "--keep-aspect",
        choices=("crop", "pad", "stretch"),
        default="crop",
        help="how non-square images become square: centre crop (default), zero padding or stretch",
    )
    common(p, image_size=128, epochs=15)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a saved model on a folder")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability of each image")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="CNN vs FNN vs ResNet-50 (and their ensemble) under cross-validation, HTML report")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    p.add_argument("--cv", type=int, default=5, help="folds (default 5)")
    p.add_argument("--models", default="cnn,fnn,resnet50", help="comma-separated (default cnn,fnn,resnet50)")
    common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="the main job: compare the models and write the HTML report")
    p.add_argument("--data", metavar="DATA_DIR", help="a real image folder (default: phantoms made on the spot)")
    p.add_argument("--out", default="demo-report", metavar="REPORT_DIR")
    p.add_argument("--cv", type=int, default=3)
    p.add_argument("--n-samples", type=int, default=240, help="phantoms to make without --data (default 240)")
    p.add_argument("--models", default="cnn,fnn,resnet50")
    common(p, image_size=64, epochs=8)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("audit", help="shortcut-learning and leakage audit of a model on a folder")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--model", default="cnn", choices=MODELS)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--cv", type=int, default=5)
    common(p)
    p.set_defaults(func=cmd_audit)
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
        0 on success, 2 on a user error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.verbose:
                warnings.simplefilter("ignore", category=FutureWarning)
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
