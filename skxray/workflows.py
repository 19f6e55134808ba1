"""Workflows: the work behind each ``skxray`` command, as Python functions.

Each function takes plain arguments (folders, model names, settings), does
the whole job (reads the images, builds the classifiers by name from the
registry, fits, evaluates, writes the report and the other files) and
returns a small result object that says what it produced. The ``skxray``
command (:mod:`skxray.cli`) only parses its options, calls one of these and
prints the result, so ``skxray compare DATA --out report`` and
``compare("DATA", "report")`` do the same work.

============================  =====================================
``skxray explore``            :func:`explore`
``skxray train``              :func:`train`
``skxray evaluate``           :func:`evaluate`
``skxray predict``            :func:`predict`
``skxray compare``            :func:`compare`
``skxray demo``               :func:`demo`
``skxray audit``              :func:`audit_folder`
============================  =====================================

Progress: ``verbose=0`` (the default) prints nothing; ``verbose=1`` prints
what the command prints while it works (the protocol before a long
cross-validation, the comparison table as soon as it is known);
``verbose=2`` also lets torch print its download messages. A fallback the
user should know about (ResNet-50 without ImageNet weights, folds without
patient ids) is a :class:`WorkflowWarning`.

Examples
--------
A phantom folder (synthetic images: they test the software, not diagnosis),
a model trained on it, then evaluated and used:

>>> import tempfile
>>> from pathlib import Path
>>> from PIL import Image
>>> from skxray.datasets import make_phantom_cxr
>>> from skxray.workflows import evaluate, make_model, predict, train
>>> folder = tempfile.TemporaryDirectory()
>>> tmp = Path(folder.name)
>>> X, y = make_phantom_cxr(24, image_size=32, random_state=0)
>>> for i, (img, label) in enumerate(zip(X, y)):
...     (tmp / "data" / label).mkdir(parents=True, exist_ok=True)
...     Image.fromarray((img * 255).astype("uint8")).save(tmp / "data" / label / f"{i}.png")
>>> model = make_model("fnn", image_size=32, epochs=1, random_state=0)
>>> trained = train(tmp / "data", tmp / "model", model, progress_bar=False)
>>> trained.n_images, sorted(p.name for p in trained.files)
(24, ['learning_curves.png'])
>>> scored = evaluate(tmp / "model", tmp / "data", report=tmp / "report")
>>> scored.validation["n_samples"], scored.unreadable, scored.report_path.name
(24, [], 'report.html')
>>> answers = predict(tmp / "model", [tmp / "data"])
>>> len(answers.rows), answers.shift_summary.startswith("Shift test: ")
(24, True)
>>> folder.cleanup()
"""

import contextlib
import dataclasses
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import VotingClassifier
from sklearn.utils import Bunch

from skxray._atomic import exclusive_lock
from skxray._utils import jsonable
from skxray.audit import audit
from skxray.dask import DaskPredictor, read_images, score_images
from skxray.datasets import load_image_folder, make_phantom_cxr
from skxray.io import is_image_file, read_image
from skxray.models import classifier_names, load, make_classifier, resnet
from skxray.models._registry import CLASSIFIERS
from skxray.ood import ShiftTestResult, shift_test

# skxray.evaluation and skxray.report (matplotlib and the plotting code) are
# imported inside the functions that use them: ``skxray --help`` reads this
# module's defaults, and should not wait for them.

__all__ = [
    "MIN_BATCH_FOR_SHIFT_TEST",
    "AuditFolderResult",
    "CompareResult",
    "EvaluateResult",
    "ExploreResult",
    "ModelSettings",
    "PredictResult",
    "TrainResult",
    "WorkflowWarning",
    "audit_folder",
    "compare",
    "demo",
    "evaluate",
    "explore",
    "make_model",
    "model_defaults",
    "model_settings",
    "predict",
    "resnet_weights",
    "train",
]

#: A batch this large gets the shift test before its predictions (:func:`predict`).
MIN_BATCH_FOR_SHIFT_TEST = 20

#: The ImageNet weights the ResNet-50 starts from unless told otherwise.
DEFAULT_WEIGHTS = "IMAGENET1K_V2"

#: What cross-validation within one collection cannot show, said in every comparison.
_ONE_COLLECTION_CAVEAT = (
    "Cross-validation within one collection cannot reveal shortcuts shared by all its images "
    "(e.g. a class coming from one source), nor how the models do at another hospital."
)


class WorkflowWarning(UserWarning):
    """A fallback a workflow took that the user should know about.

    Parameters
    ----------
    message : str
        What happened and what to do, in one line.
    cause : str or None, default=None
        The technical reason (e.g. the download error), for a verbose display.
    parameter : str or None, default=None
        The parameter that fixes it (``"weights"``), so that the command
        line can name its option instead.
    """

    def __init__(self, message, cause=None, parameter=None):
        super().__init__(message)
        self.cause = cause
        self.parameter = parameter


def _warn(message, cause=None, parameter=None):
    warnings.warn(WorkflowWarning(message, cause, parameter), stacklevel=3)


def _say(verbose, *lines):
    if verbose:
        for line in lines:
            print(line)


# ----------------------------------------------------------------------------- models by name
def model_defaults(name, preset=None):
    """The image size and epochs a model gets when none are given.

    They are the estimator's own constructor defaults (``image_size``,
    ``max_epochs``), overridden by the named preset's, so that the workflows,
    the command line and ``CNNClassifier()`` in Python train the same model.

    Parameters
    ----------
    name : {"cnn", "fnn", "resnet50"}
        A name of :func:`skxray.models.classifier_names`.
    preset : str, default=None
        A preset of ``CNNClassifier.from_preset``.

    Returns
    -------
    defaults : dict
        ``{"image_size": int, "epochs": int}``.

    Examples
    --------
    >>> from skxray.workflows import model_defaults
    >>> from skxray.models import CNNClassifier
    >>> model_defaults("cnn")["epochs"] == CNNClassifier().max_epochs
    True
    >>> model_defaults("cnn", preset="benchmark")["epochs"]
    15
    """
    params = make_classifier(name, preset=preset).get_params()
    return {"image_size": params["image_size"], "epochs": params["max_epochs"]}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The image size and epochs of the models of one run (:func:`model_settings`).

    Attributes
    ----------
    image_size : int
        The side of the square images, shared by every model (they are read once).
    epochs_by_model : dict of str to int
        Each model's training epochs.
    """

    image_size: int
    epochs_by_model: dict

    def epochs_text(self):
        """The epochs for a report: "20 epochs", or each model's when they differ."""
        counts = self.epochs_by_model
        if len(set(counts.values())) == 1:
            return f"{next(iter(counts.values()))} epochs"
        return "epochs: " + ", ".join(f"{name} {n}" for name, n in counts.items())


def model_settings(names, *, image_size=None, epochs=None, preset=None):
    """The image size and epochs of several models, from their defaults where not given.

    Several models (:func:`compare`, :func:`demo`) share one image size, as
    the images are read once: the smallest of their defaults. Each model
    keeps its own epochs unless ``epochs`` is given.

    Parameters
    ----------
    names : sequence of str
        Names of :func:`skxray.models.classifier_names`.
    image_size : int or None, default=None
        The side of the images; None: the smallest of the models' defaults.
    epochs : int or None, default=None
        Epochs of every model; None: each model's default.
    preset : str or None, default=None
        A preset whose defaults replace the class's (``CNNClassifier`` only).

    Returns
    -------
    settings : ModelSettings

    Raises
    ------
    ValueError
        If ``names`` is empty or holds an unknown name.

    Examples
    --------
    >>> from skxray.workflows import model_defaults, model_settings
    >>> settings = model_settings(["cnn", "fnn"], epochs=3)
    >>> settings.epochs_by_model
    {'cnn': 3, 'fnn': 3}
    >>> settings.image_size == min(model_defaults(n)["image_size"] for n in ("cnn", "fnn"))
    True
    """
    names = list(names)
    if not names:
        raise ValueError(f"no model named; choose among {', '.join(classifier_names())}")
    defaults = {name: model_defaults(name, preset) for name in names}
    if image_size is None:
        image_size = min(d["image_size"] for d in defaults.values())
    by_model = {name: d["epochs"] if epochs is None else epochs for name, d in defaults.items()}
    return ModelSettings(image_size=image_size, epochs_by_model=by_model)


def _accepted_anywhere():
    return {p for cls in CLASSIFIERS.values() for p in cls._get_param_names()}


def make_model(name, *, preset=None, image_size=None, epochs=None, **settings):
    """The classifier of ``name`` as the workflows build it: defaults, then the settings.

    One set of settings builds every model of a comparison: a setting that
    only another classifier takes (``weights`` or ``feature_cache_dir`` of
    ResNet-50, for a CNN) is left out; one that no classifier takes is an
    error.

    Parameters
    ----------
    name : {"cnn", "fnn", "resnet50"}
        A name of :func:`skxray.models.classifier_names`.
    preset : str or None, default=None
        Start from ``from_preset(preset)`` (``cnn`` only).
    image_size : int or None, default=None
        ``image_size``; None keeps the default (or the preset's).
    epochs : int or None, default=None
        ``max_epochs``; None keeps the default (or the preset's).
    **settings
        Other constructor parameters (``lr``, ``random_state``, ``weights``, ...).

    Returns
    -------
    clf : BaseImageClassifier
        Unfitted.

    Raises
    ------
    TypeError
        If a setting is a parameter of no skxray classifier.

    Examples
    --------
    >>> from skxray.workflows import make_model
    >>> cnn = make_model("cnn", epochs=2, weights=None, random_state=0)
    >>> cnn.max_epochs, "weights" in cnn.get_params()
    (2, False)
    >>> make_model("resnet50", weights=None).weights is None
    True
    """
    unknown = sorted(set(settings) - _accepted_anywhere())
    if unknown:
        raise TypeError(f"make_model() got settings that no skxray classifier takes: {unknown}")
    if image_size is not None:
        settings["image_size"] = image_size
    if epochs is not None:
        settings["max_epochs"] = epochs
    own = make_classifier(name).get_params()
    return make_classifier(name, preset=preset, **{k: v for k, v in settings.items() if k in own})


def _no_weights(requested):
    return requested is None or str(requested).lower() == "none"


def resnet_weights(weights=DEFAULT_WEIGHTS, *, verbose=0):
    """The ResNet-50's starting weights: ``weights`` when they load, else None, with a warning.

    Parameters
    ----------
    weights : str, path-like or None, default="IMAGENET1K_V2"
        A torchvision weight name, a local file, or None (``"none"``) for a
        random initialisation (:func:`skxray.models.resnet.load_resnet50_state_dict`).
    verbose : int, default=0
        2 lets torch print its download messages.

    Returns
    -------
    weights : str, path-like or None
        ``weights``, or None when they were not asked for or could not be had.
    note : str
        Which weights the ResNet-50 starts from, one sentence for a report.

    Warns
    -----
    WorkflowWarning
        When ``weights`` cannot be had (typically offline): the ResNet-50
        then starts from random weights.

    Examples
    --------
    >>> from skxray.workflows import resnet_weights
    >>> resnet_weights("none")
    (None, 'ResNet-50 backbone: random initialisation (weights none).')
    """
    if _no_weights(weights):
        return None, "ResNet-50 backbone: random initialisation (weights none)."
    try:
        with contextlib.ExitStack() as quiet:
            if verbose < 2:  # torch prints "Downloading: ..." to stdout
                quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
            resnet.load_resnet50_state_dict(weights)
    except resnet.PretrainedWeightsError as exc:
        _warn("ResNet-50 starts from random weights: no ImageNet weights (offline?); pass weights=FILE",
              str(exc), "weights")
        return None, "ResNet-50 from random initialisation (ImageNet weights unavailable offline)."
    return weights, f"ResNet-50 backbone: {weights} weights."


# ----------------------------------------------------------------------------- reading folders
def _check_folder(data_dir, what="data folder"):
    path = Path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is not a folder")
    return path


def _load_folder(data_dir, *, image_size, classes=None, keep_aspect="crop"):
    path = _check_folder(data_dir)
    return load_image_folder(path, classes=classes, image_size=image_size, keep_aspect=keep_aspect)


def _aspect_text(keep_aspect):
    return "stretch" if keep_aspect is False else str(keep_aspect)


def _load_model(model_dir):
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a saved skxray model (no config.json); train one with 'skxray train'"
        )
    return load(path)


# ----------------------------------------------------------------------------- explore
@dataclasses.dataclass(frozen=True)
class ExploreResult:
    """What :func:`explore` found in a folder and wrote.

    Attributes
    ----------
    n_images : int
    class_counts : dict of str to int
        Images per class.
    sizes : ndarray of shape (n_images, 2)
        Width and height of each image, in pixels.
    n_patients : int or None
        Patients of the manifest, None without patient ids.
    files : list of pathlib.Path
        The figures written: the sample grid and the size histogram.
    """

    n_images: int
    class_counts: dict
    sizes: np.ndarray
    n_patients: object
    files: list


def explore(data_dir, out, *, classes=None, random_state=0):
    """Look at an image folder before training: counts, image sizes, a grid of samples.

    Parameters
    ----------
    data_dir : str or path-like
        A folder with one sub-folder per class, optionally a ``manifest.csv``.
    out : str or path-like
        Folder for ``sample_grid.png`` and ``size_histogram.png`` (created).
    classes : list of str or None, default=None
        The classes to use (default: every sub-folder).
    random_state : int, default=0
        Seed of the sample grid.

    Returns
    -------
    result : ExploreResult
    """
    from matplotlib.figure import Figure

    from skxray.evaluation import plot_image_grid

    path = _check_folder(data_dir)
    bunch = load_image_folder(path, classes=classes)
    labels, counts = np.unique(bunch.target, return_counts=True)
    # read_image, not PIL: DICOM folders must work too.
    sizes = np.asarray([read_image(file).shape[::-1] for file in bunch.filenames])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = plot_image_grid(bunch.filenames, bunch.target, n=6, random_state=random_state)
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist(sizes.max(axis=1), bins=20)
    ax.set_xlabel("longest side (px)")
    ax.set_ylabel("images")
    files = [out / "sample_grid.png", out / "size_histogram.png"]
    for figure, file in zip((grid, fig), files):
        figure.savefig(file, dpi=100, bbox_inches="tight")
    return ExploreResult(
        n_images=len(bunch.target),
        class_counts={str(k): int(v) for k, v in zip(labels, counts)},
        sizes=sizes,
        n_patients=None if bunch.groups is None else len(np.unique(bunch.groups)),
        files=files,
    )


# ----------------------------------------------------------------------------- train
@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` fitted and wrote.

    Attributes
    ----------
    model : BaseImageClassifier
        The fitted classifier.
    model_dir : pathlib.Path
        The folder it was saved to (``config.json``, ``model.safetensors``).
    n_images : int
        The images it was fitted on.
    fit_seconds : float
        How long ``fit`` took.
    files : list of pathlib.Path
        The other files written: ``learning_curves.png``.
    """

    model: object
    model_dir: Path
    n_images: int
    fit_seconds: float
    files: list


def train(data_dir, out, model="cnn", *, classes=None, resume=False, progress_bar=True):
    """Fit one classifier on every image of a folder and save it, with its learning curves.

    ``out`` is locked from before training until the model is saved: a
    second ``train`` into the same folder fails at once (with
    :class:`~skxray._atomic.FolderLockedError`) instead of mixing its files
    with the first one's.

    Parameters
    ----------
    data_dir : str or path-like
        A folder with one sub-folder per class, optionally a ``manifest.csv``.
        Its ``patient_id`` column, when there is one, is passed to ``fit`` as
        ``groups``: the validation split then holds out whole patients.
    out : str or path-like
        The folder to save the model in (created).
    model : str or BaseImageClassifier, default="cnn"
        A name of :func:`skxray.models.classifier_names` (the class's
        defaults), or an unfitted classifier (e.g. :func:`make_model`'s).
        The images are read at its ``image_size`` and ``keep_aspect``.
    classes : list of str or None, default=None
        The classes to use (default: every sub-folder).
    resume : bool, default=False
        Continue the last interrupted run under the model's ``checkpoint_dir``.
    progress_bar : bool, default=True
        False switches the progress bar over the batches off
        (``callbacks__progress_bar=None``); the per-epoch lines stay.

    Returns
    -------
    result : TrainResult

    Raises
    ------
    ValueError
        If ``resume`` is set without a ``checkpoint_dir``, or the folder has
        one class only.
    NotADirectoryError
        If ``out`` exists and is not a folder.
    """
    from skxray.evaluation import plot_learning_curves

    model = make_classifier(model) if isinstance(model, str) else model
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {str(out)!r} exists and is not a folder")
    if resume and not model.checkpoint_dir:
        raise ValueError("resume=True needs the model's checkpoint_dir, the folder the interrupted run wrote to")
    with exclusive_lock(out):
        bunch = _load_folder(data_dir, image_size=model.image_size, classes=classes,
                             keep_aspect=model.keep_aspect)
        if not progress_bar:
            model.set_params(callbacks__progress_bar=None)
        start = time.perf_counter()
        # With the folder's patient ids, the validation split holds out whole patients.
        model.fit(bunch.data, bunch.target, groups=bunch.groups, resume=bool(resume))
        seconds = time.perf_counter() - start
        model_dir = Path(model.save(out))
        curves = model_dir / "learning_curves.png"
        plot_learning_curves(model).savefig(curves, dpi=100, bbox_inches="tight")
    return TrainResult(model=model, model_dir=model_dir, n_images=len(bunch.target),
                       fit_seconds=seconds, files=[curves])


# ----------------------------------------------------------------------------- predict
@dataclasses.dataclass(frozen=True)
class PredictResult:
    """The answers of :func:`predict`.

    Attributes
    ----------
    rows : list of dict
        One per readable image, in the order given: ``image``, ``label``,
        ``probability``, ``probabilities`` (by class) and, when the model has
        an out-of-distribution detector, ``out_of_distribution``,
        ``ood_distance``, ``answer`` (``"uncertain"`` for an image it
        abstains on) and ``reason`` (why it is ``"uncertain"``:
        ``"distance"``, ``"lung check"`` and/or ``"low confidence"``; ``""``
        when answered). For an image the lung check flags, ``ood_distance``
        is the larger of its distance and its lung layout score. JSON-ready.
    shift_test : ShiftTestResult or None
        The batch's shift test (:func:`skxray.ood.shift_test`), None when not run.
    shift_summary : str or None
        One line, "Shift test: ...": the verdict, or why the test did not
        run. None when no image was readable.
    unreadable : list of (str, str)
        ``(file, reason)`` of each file that could not be read.
    """

    rows: list
    shift_test: object
    shift_summary: object
    unreadable: list

    def to_dict(self):
        """The result as ``skxray predict --json`` prints it."""
        return {
            "shift_test": None if self.shift_test is None else self.shift_test.to_dict(),
            "predictions": self.rows,
            "unreadable": [{"image": f, "reason": r} for f, r in self.unreadable],
        }


def _expand_images(items):
    """The files named, with every image file below each named folder (recursively).

    Hidden files and folders are skipped; a folder's files come sorted by
    path. A named file is kept even if it does not exist, so that it is
    reported as unreadable with the others instead of stopping the batch.
    """
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
            raise FileNotFoundError(f"no image files in folder {str(path)!r}")
        files.extend(found)
    return files


def _batch_shift_test(model, n_images, run):
    """``(result or None, summary line)``: the shift test of a batch of 20 images or more.

    ``run()`` computes it: in this process, or on a Dask worker.
    """
    if getattr(model, "ood_", None) is None or not model.ood_.has_reference_:
        return None, "Shift test: not available (the model has no held-out reference sample)."
    if n_images < MIN_BATCH_FOR_SHIFT_TEST:
        return None, (
            f"Shift test: not run ({n_images} images; it needs {MIN_BATCH_FOR_SHIFT_TEST} or more "
            "to say anything about a batch)."
        )
    result = run()
    return result, f"Shift test: {result.verdict()}"


@contextlib.contextmanager
def _dask_predictor(model_dir, scheduler, partition_size):
    """A :class:`skxray.dask.DaskPredictor`, with a missing dask extra as a ValueError."""
    if partition_size is not None and partition_size < 1:
        raise ValueError(f"partition_size must be 1 or more; got {partition_size}")
    with contextlib.ExitStack() as stack:
        try:
            predictor = stack.enter_context(DaskPredictor(model_dir, scheduler, partition_size=partition_size))
        except ImportError as exc:  # no dask extra
            raise ValueError(str(exc)) from exc
        yield predictor


def _predict_here(model, files, shift_options):
    X, readable, unreadable = read_images(model, files)
    shift = (None, None)
    if len(X):
        shift = _batch_shift_test(model, len(X), lambda: shift_test(model, X, random_state=0, **shift_options))
    return readable, unreadable, score_images(model, X), shift


def _predict_on_dask(model_dir, model, files, scheduler, partition_size, shift_options):
    with _dask_predictor(model_dir, scheduler, partition_size) as predictor:
        predictions = predictor.predict(files)
        shift = (None, None)
        if predictions.files:
            shift = _batch_shift_test(model, len(predictions.files),
                                      lambda: predictor.shift_test(predictions.files, **shift_options))
    scores = {
        "proba": predictions.proba,
        "answers": predictions.answers,
        "ood_scores": predictions.ood_scores,
        "out_of_distribution": predictions.out_of_distribution,
        "reasons": predictions.reasons,
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
            row["reason"] = str(scores["reasons"][i])
        rows.append(row)
    return rows


def predict(model_dir, images, *, scheduler=None, partition_size=None, exclude_patient_pairs=False):
    """Label each image with a saved model; shift-test a batch of 20 images or more first.

    Files that cannot be read do not stop the batch: every readable image is
    answered, and each unreadable one is listed with its reason.

    Parameters
    ----------
    model_dir : str or path-like
        A model saved by :func:`train` (or ``est.save``).
    images : list of str or path-like
        Image files (PNG, JPEG, TIFF, DICOM ...) or folders, searched recursively.
    scheduler : str or None, default=None
        Score the images on a Dask cluster (:class:`skxray.dask.DaskPredictor`):
        a scheduler address, or ``"local:N"``. The answers are the same.
    partition_size : int or None, default=None
        With ``scheduler``: images per task.
    exclude_patient_pairs : bool, default=False
        Of the shift test, as in :func:`skxray.ood.shift_test`: leave the
        pairs of reference images of one patient out of its image part
        (for a model trained on a folder with patient ids).

    Returns
    -------
    result : PredictResult

    Raises
    ------
    FileNotFoundError
        If ``model_dir`` is not a saved model, or a named folder holds no image.
    """
    model = _load_model(model_dir)
    files = _expand_images(images)
    shift_options = {"exclude_patient_pairs": bool(exclude_patient_pairs)}
    if scheduler:
        readable, unreadable, scores, shift = _predict_on_dask(model_dir, model, files, scheduler,
                                                               partition_size, shift_options)
    else:
        readable, unreadable, scores, shift = _predict_here(model, files, shift_options)
    return PredictResult(rows=_prediction_rows(model, readable, scores), shift_test=shift[0],
                         shift_summary=shift[1], unreadable=unreadable)


# ----------------------------------------------------------------------------- evaluate
@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """What :func:`evaluate` measured and wrote.

    Attributes
    ----------
    validation : dict or None
        :func:`skxray.evaluation.external_validation`'s result, with
        ``"unreadable"`` (``[{"image", "reason"}]``) added; None when no
        image could be read.
    unreadable : list of (str, str)
        ``(file, reason)`` of each file that could not be read.
    report_path : pathlib.Path or None
        The HTML report written, None without ``report``.
    """

    validation: object
    unreadable: list
    report_path: object


def _as_model_labels(y, classes):
    """Folder names (str) as the model's label type (ints or bools when it was fitted on those)."""
    by_name = {str(c): c for c in classes}
    out = np.empty(len(y), dtype=object)
    out[:] = [by_name[str(v)] for v in y]
    return out if classes.dtype == object else out.astype(classes.dtype)


def _evaluate_here(model, files, labels, shift_options):
    from skxray.evaluation import external_validation

    X, readable, unreadable = read_images(model, files)
    if not len(X):
        return None, unreadable
    return external_validation(model, X, labels(readable), random_state=0, **shift_options), unreadable


def _evaluate_on_dask(model_dir, files, labels, scheduler, partition_size, shift_options):
    with _dask_predictor(model_dir, scheduler, partition_size) as predictor:
        predictions = predictor.predict(files)
        if not predictions.files:
            return None, predictions.unreadable
        result = predictor.external_validation(predictions, labels(predictions.files), random_state=0,
                                               **shift_options)
    return result, predictions.unreadable


def evaluate(model_dir, data_dir, *, report=None, internal=None, cv=5, scheduler=None,
             partition_size=None, exclude_patient_pairs=False):
    """Score a saved model on a labelled folder it was not trained on.

    The folder may hold all of the model's classes or some (another
    hospital's COVID-19 images): :func:`skxray.evaluation.external_validation`
    gives what can be measured, with 95 % intervals, abstention and the shift
    test of the whole folder. Files that cannot be read are listed, not fatal.

    Parameters
    ----------
    model_dir : str or path-like
        A model saved by :func:`train` (or ``est.save``).
    data_dir : str or path-like
        A folder with one sub-folder per class, of the model's classes or some.
    report : str or path-like or None, default=None
        Also write an HTML report, ``report/report.html``.
    internal : str or path-like or None, default=None
        With ``report``: cross-validate the model's settings on this
        training folder (grouped by patient when it has a manifest with
        ``patient_id``) to show internal figures beside the external ones.
    cv : int, default=5
        Folds of ``internal``.
    scheduler, partition_size : default=None
        Score the images on a Dask cluster, as in :func:`predict`.
    exclude_patient_pairs : bool, default=False
        Of the shift test, as in :func:`predict`.

    Returns
    -------
    result : EvaluateResult

    Raises
    ------
    ValueError
        If the folder has a class the model does not know.
    """
    model = _load_model(model_dir)
    path = _check_folder(data_dir)
    # Paths first, so one unreadable file is reported instead of sinking the run.
    bunch = load_image_folder(path, min_classes=1)
    known = {str(c) for c in model.classes_}
    foreign = sorted(set(bunch.target_names) - known)
    if foreign:
        raise ValueError(
            f"{str(path)!r} has class folder(s) {foreign} that the model does not know; "
            f"its classes are {sorted(known)}"
        )
    label_of = dict(zip(map(str, bunch.filenames), bunch.target))

    def labels(readable):
        return _as_model_labels(np.asarray([label_of[f] for f in readable], dtype=object), model.classes_)

    shift_options = {"exclude_patient_pairs": bool(exclude_patient_pairs)}
    if scheduler:
        result, unreadable = _evaluate_on_dask(model_dir, bunch.filenames, labels, scheduler, partition_size,
                                               shift_options)
    else:
        result, unreadable = _evaluate_here(model, bunch.filenames, labels, shift_options)
    if result is None:
        return EvaluateResult(validation=None, unreadable=unreadable, report_path=None)
    result["unreadable"] = [{"image": f, "reason": r} for f, r in unreadable]
    report_path = None
    if report is not None:
        report_path = _write_evaluate_report(model, result, model_dir=model_dir, data_dir=data_dir,
                                             report=report, internal=internal, cv=cv)
    return EvaluateResult(validation=result, unreadable=unreadable, report_path=report_path)


def _internal_figures(model, internal, cv):
    """``(row of compare_models or None, n_splits, protocol text)`` of ``evaluate(internal=...)``."""
    from skxray.evaluation import compare_models

    if internal is None:
        return None, cv, "Internal: not run (pass --internal TRAIN_DIR; internal= in Python)."
    train_set = _load_folder(internal, image_size=model.input_shape_[-1],
                             classes=[str(c) for c in model.classes_], keep_aspect=model.keep_aspect)
    name = type(model).__name__
    table = compare_models({name: clone(model)}, train_set.data, train_set.target, cv=cv,
                           groups=train_set.groups, random_state=0)
    grouped = " grouped by patient" if train_set.groups is not None else " (no patient ids: image-level folds)"
    return table.iloc[0], table.attrs["n_splits"], f"Internal: {cv}-fold cross-validation on {internal}{grouped}."


def _write_evaluate_report(model, result, *, model_dir, data_dir, report, internal, cv):
    """The evaluate report: internal (cross-validated, with ``internal``) beside external figures."""
    from skxray.evaluation import external_validation_figures
    from skxray.report import Report

    name = type(model).__name__
    internal_row, n_splits, protocol = _internal_figures(model, internal, cv)
    page = Report(title=f"{name} on {Path(data_dir).name}")
    page.add_text(
        "What was run",
        f"Model {model_dir} ({name}, classes {', '.join(map(str, model.classes_))}) evaluated on "
        f"{result['n_samples']} images of {data_dir}. {protocol}",
    )
    inside, outside = external_validation_figures(result, internal_row, n_splits=n_splits)
    shift = None if result["shift_test"] is None else ShiftTestResult(**result["shift_test"])
    page.add_external_validation(
        inside,
        outside,
        shift_verdict=None if shift is None else shift.severity(),
        shift_text="" if shift is None else shift.verdict(),
        abstention_rate=None if result["abstention"] is None else result["abstention"]["value"],
        abstention_reasons=result.get("abstention_reasons"),
        title=f"{name}: internal and external figures",
    )
    if result["notes"]:
        page.add_text("What could not be computed", "\n\n".join(result["notes"]))
    return page.save(Path(report) / "report.html")


# ----------------------------------------------------------------------------- compare and demo
@dataclasses.dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` (or :func:`demo`) measured and wrote.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`skxray.evaluation.compare_models`'s table, one row per model
        (and ``"soft-voting"`` for their ensemble).
    report : Report
        The report written.
    report_path : pathlib.Path
        ``report.html``; ``metrics.json`` is beside it.
    protocol : str
        How the figures were obtained, e.g. "5-fold cross-validation grouped by patient ...".
    cv_seconds : float
        How long the cross-validation took.
    """

    table: object
    report: object
    report_path: Path
    protocol: str
    cv_seconds: float

    @property
    def metrics_path(self):
        """``metrics.json``, beside the report."""
        return self.report_path.parent / "metrics.json"


@contextlib.contextmanager
def _feature_cache(folder):
    """The ResNet-50 feature folder: ``folder``, else a temporary one for this run.

    Every fold, the ensemble and the final fit then share one backbone pass per image.
    """
    if folder:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="skxray-features-") as tmp:
        yield tmp


def _models_for_compare(settings, *, random_state, weights, feature_cache_dir, verbose):
    """``(models, notes)``: the models by name, with the soft vote of them all when several."""
    notes, models = [], {}
    for name, epochs in settings.epochs_by_model.items():
        w = weights
        if name == "resnet50":
            w, note = resnet_weights(weights, verbose=verbose)
            notes.append(note)
        models[name] = make_model(name, image_size=settings.image_size, epochs=epochs,
                                  random_state=random_state, weights=w, feature_cache_dir=feature_cache_dir)
    if len(models) > 1:
        models["soft-voting"] = VotingClassifier(list(models.items()), voting="soft")
    return models, notes


def _compare_caveats(caveats, *, random_init, grouped):
    """What the comparison cannot show, for the report's summary.

    The caveats of the run's facts (a ResNet-50 without ImageNet weights,
    folds without patient ids) follow the caller's, then what any
    cross-validation within one collection cannot show.
    """
    caveats = list(caveats)
    if random_init:
        caveats.append("The ResNet-50 ran from random initialisation, not ImageNet weights.")
    if not grouped:
        caveats.append("Without patient ids, one patient's images may be in training and test folds, "
                       "which inflates every figure.")
    return [*caveats, _ONE_COLLECTION_CAVEAT]


def _compare_protocol(cv, grouped):
    if grouped:
        return f"{cv}-fold cross-validation grouped by patient (StratifiedGroupKFold)"
    _warn("no patient ids (manifest.csv): images of one patient may fall in several folds, which "
          "inflates the figures; add a manifest.csv with a patient column.")
    return f"{cv}-fold stratified cross-validation without patient ids"


def _add_final_fits(report, models, bunch):
    """One fit of each model on all images, for learning curves, Grad-CAM and parameters."""
    final = {}
    for name, model in models.items():
        if name == "soft-voting":
            continue
        final[name] = model.fit(bunch.data, bunch.target, groups=bunch.groups)
        report.add_parameters(name, final[name])
    report.add_learning_curves_grid(final)
    report.add_gradcam_gallery(final, bunch.data, bunch.target, n=4)


def _compare_report(title, *, data, protocol, models, notes, caveats, bunch, table, predictions):
    from skxray.report import Report

    report = Report(title)
    names = [n for n in models if n != "soft-voting"]
    model_names = ", ".join(names) + (" and their soft vote" if "soft-voting" in models else "")
    report.describe(data=data, protocol=protocol, models="; ".join([model_names, *notes]), caveats=caveats)
    report.add_dataset_summary(bunch.data, bunch.target, groups=bunch.groups)
    report.add_comparison(table)
    for name, row in table.iterrows():
        report.add_metrics(name, row.to_dict())
    report.add_cv_figures(bunch.target, predictions, np.asarray(table.attrs["classes"], dtype=object))
    return report


def _compare_bunch(bunch, out, settings, *, cv, random_state, weights, feature_cache_dir, keep_aspect,
                   title, data, caveats, verbose):
    """Cross-validate the models of ``settings`` on ``bunch``, then write the report to ``out``."""
    from skxray.evaluation import compare_models
    from skxray.report import format_comparison

    labels = np.unique(bunch.target)
    if len(labels) < 2:
        raise ValueError(f"the data hold one class only ({labels[0]!r}); at least two are needed")
    with _feature_cache(feature_cache_dir) as cache:
        models, notes = _models_for_compare(settings, random_state=random_state, weights=weights,
                                            feature_cache_dir=cache, verbose=verbose)
        protocol = _compare_protocol(cv, bunch.groups is not None)
        _say(verbose, f"{protocol}; {len(bunch.target)} images, {len(labels)} classes, {settings.image_size} px")
        start = time.perf_counter()
        table, predictions = compare_models(models, bunch.data, bunch.target, cv=cv, groups=bunch.groups,
                                            random_state=random_state, return_predictions=True)
        seconds = time.perf_counter() - start
        _say(verbose, "", format_comparison(table, width=100), f"cross-validation took {seconds:.0f} s")
        caveats = _compare_caveats(caveats, random_init=any("random initialisation" in n for n in notes),
                                   grouped=bunch.groups is not None)
        protocol = (f"{protocol}; images resized to {settings.image_size} × {settings.image_size} px "
                    f"({_aspect_text(keep_aspect)}); {settings.epochs_text()}")
        report = _compare_report(title, data=data, protocol=protocol, models=models, notes=notes,
                                 caveats=caveats, bunch=bunch, table=table, predictions=predictions)
        _add_final_fits(report, models, bunch)
    path = report.save(Path(out) / "report.html")
    return CompareResult(table=table, report=report, report_path=path, protocol=protocol, cv_seconds=seconds)


def compare(data_dir, out, *, models=("cnn", "fnn", "resnet50"), cv=5, image_size=None, epochs=None,
            random_state=0, classes=None, weights=DEFAULT_WEIGHTS, feature_cache_dir=None,
            keep_aspect="crop", verbose=0):
    """Cross-validate several models and their soft vote on one folder; write the HTML report.

    The folds are grouped by patient when the folder has a manifest with
    ``patient_id`` (otherwise stratified, with a :class:`WorkflowWarning`).
    Each model is then refitted on all images for its learning curves and
    Grad-CAM maps. The frozen ResNet-50's features are computed once per
    image and shared by the folds, the ensemble and the final fit.

    Parameters
    ----------
    data_dir : str or path-like
        A folder with one sub-folder per class, optionally a ``manifest.csv``.
    out : str or path-like
        Folder for ``report.html`` and ``metrics.json`` (created).
    models : sequence of str, default=("cnn", "fnn", "resnet50")
        Names of :func:`skxray.models.classifier_names`.
    cv : int, default=5
        Number of folds.
    image_size, epochs : int or None, default=None
        As in :func:`model_settings`: the models' defaults when None.
    random_state : int, default=0
        Seed of the folds, the weights and the shuffling.
    classes : list of str or None, default=None
        The classes to use (default: every sub-folder).
    weights : str, path-like or None, default="IMAGENET1K_V2"
        The ResNet-50's starting weights; without them (offline) it starts
        from random weights, with a :class:`WorkflowWarning`, and the report
        says so.
    feature_cache_dir : str or path-like or None, default=None
        Keep the ResNet-50 features in this folder for later runs (default:
        a temporary folder, removed at the end).
    keep_aspect : {"crop", "pad"} or False, default="crop"
        How non-square images become square (:func:`skxray.datasets.load_image_folder`).
    verbose : int, default=0
        1 prints the protocol before the cross-validation and the table after it.

    Returns
    -------
    result : CompareResult

    Raises
    ------
    ValueError
        If a model name is unknown, or the data hold one class only.

    See Also
    --------
    demo : The same on phantoms made on the spot.
    """
    settings = model_settings(models, image_size=image_size, epochs=epochs)
    bunch = _load_folder(data_dir, image_size=settings.image_size, classes=classes, keep_aspect=keep_aspect)
    return _compare_bunch(bunch, out, settings, cv=cv, random_state=random_state, weights=weights,
                          feature_cache_dir=feature_cache_dir, keep_aspect=keep_aspect,
                          title=f"skxray comparison: {Path(data_dir).name}",
                          data=f"the image folder {data_dir}", caveats=(), verbose=verbose)


def demo(out, *, data_dir=None, n_samples=240, models=("cnn", "fnn", "resnet50"), cv=3, image_size=None,
         epochs=None, random_state=0, classes=None, weights=DEFAULT_WEIGHTS, feature_cache_dir=None,
         keep_aspect="crop", verbose=0):
    """:func:`compare` on synthetic phantoms made on the spot, or on a folder.

    Phantoms need no data and no network; they test the software and are
    not evidence about X-rays, and the report says so.

    Parameters
    ----------
    out : str or path-like
        Folder for ``report.html`` and ``metrics.json`` (created).
    data_dir : str or path-like or None, default=None
        A real image folder instead of phantoms.
    n_samples : int, default=240
        Phantoms to make without ``data_dir`` (:func:`skxray.make_phantom_cxr`,
        with patient ids).
    models, cv, image_size, epochs, random_state, classes, weights, feature_cache_dir, keep_aspect, verbose
        As in :func:`compare` (``cv`` defaults to 3).

    Returns
    -------
    result : CompareResult

    Examples
    --------
    >>> import tempfile
    >>> from skxray.workflows import demo
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = demo(out, n_samples=24, models=["fnn"], cv=2, epochs=1, image_size=32)
    ...     print(result.report_path.name, result.metrics_path.is_file())
    report.html True
    >>> list(result.table.index), result.protocol.split(";")[0]
    (['fnn'], '2-fold cross-validation grouped by patient (StratifiedGroupKFold)')
    """
    settings = model_settings(models, image_size=image_size, epochs=epochs)
    if data_dir is not None:
        bunch = _load_folder(data_dir, image_size=settings.image_size, classes=classes, keep_aspect=keep_aspect)
        data, caveats = f"the image folder {data_dir}", ()
    else:
        X, y, groups = make_phantom_cxr(n_samples, image_size=settings.image_size, random_state=random_state,
                                        return_groups=True)
        bunch = Bunch(data=X, target=y, groups=groups, frame=None)
        data = "synthetic phantoms made on the spot (skxray.make_phantom_cxr)"
        caveats = ["These are synthetic phantoms, not X-rays: the figures test the software and "
                   "say nothing about diagnosis."]
    return _compare_bunch(bunch, out, settings, cv=cv, random_state=random_state, weights=weights,
                          feature_cache_dir=feature_cache_dir, keep_aspect=keep_aspect, title="skxray demo",
                          data=data, caveats=caveats, verbose=verbose)


# ----------------------------------------------------------------------------- audit
@dataclasses.dataclass(frozen=True)
class AuditFolderResult:
    """What :func:`audit_folder` found and wrote.

    Attributes
    ----------
    audit : AuditReport
        :func:`skxray.audit.audit`'s result.
    json_path : pathlib.Path
        ``audit.json``.
    report_path : pathlib.Path
        ``report.html``.
    """

    audit: object
    json_path: Path
    report_path: Path


def audit_folder(data_dir, out, *, model="cnn", cv=5, image_size=None, epochs=None, random_state=0,
                 classes=None, weights=DEFAULT_WEIGHTS, feature_cache_dir=None, verbose=0):
    """The shortcut-learning and leakage audit of one model on a folder; JSON and HTML written.

    Cross-validates the model and runs the checks of :func:`skxray.audit.audit`
    with the manifest's ``patient_id`` and ``source`` columns when present.

    Parameters
    ----------
    data_dir : str or path-like
        A folder with one sub-folder per class, optionally a ``manifest.csv``.
    out : str or path-like
        Folder for ``audit.json`` and ``report.html`` (created).
    model : str, default="cnn"
        A name of :func:`skxray.models.classifier_names`.
    cv, image_size, epochs, random_state, classes, weights, feature_cache_dir
        As in :func:`compare`.
    verbose : int, default=0
        1 prints which ResNet-50 weights are used.

    Returns
    -------
    result : AuditFolderResult
    """
    from skxray.report import Report

    settings = model_settings([model], image_size=image_size, epochs=epochs)
    bunch = _load_folder(data_dir, image_size=settings.image_size, classes=classes)
    note = None
    if model == "resnet50":
        requested = weights
        weights, note = resnet_weights(requested, verbose=verbose)
        if weights is not None or _no_weights(requested):  # else the warning said it
            _say(verbose, note)
    sources = None
    if bunch.frame is not None and "source" in bunch.frame:
        sources = bunch.frame["source"].to_numpy()
    with _feature_cache(feature_cache_dir) as cache:
        clf = make_model(model, image_size=settings.image_size, epochs=settings.epochs_by_model[model],
                         random_state=random_state, weights=weights, feature_cache_dir=cache)
        result = audit(clf, bunch.data, bunch.target, groups=bunch.groups, sources=sources, cv=cv,
                       random_state=random_state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(result.to_json())
    report = Report(f"skxray audit: {Path(data_dir).name}")
    grouped = " grouped by patient" if bunch.groups is not None else " without patient ids"
    report.describe(
        data=f"the image folder {data_dir}",
        protocol=f"{cv}-fold cross-validation{grouped}; images resized to {settings.image_size} × "
        f"{settings.image_size} px; {settings.epochs_text()}",
        models=model if note is None else f"resnet50 ({note})",
        caveats="An audit finds the shortcuts it looks for; a clean audit does not prove the "
        "model reads the lungs, nor that it works at another hospital.",
    )
    report.add_dataset_summary(bunch.data, bunch.target, groups=bunch.groups)
    report.add_audit(result)
    return AuditFolderResult(audit=result, json_path=out / "audit.json", report_path=report.save(out / "report.html"))
