"""Saving and loading fitted classifiers without pickle.

A saved model is a folder with ``config.json`` (format version, class,
parameters, classes, input shape, history, the out-of-distribution detector's
settings, the sha256 of the weights file) and ``model.safetensors`` (tensors
only: the weights and, under the ``__ood__.`` prefix, the detector's arrays in
float64). Loading never unpickles, so a model folder from an untrusted source
cannot run code; it also checks everything it reads before using it (format
version, class, input shape, the weights' checksum, names, shapes and dtypes),
so that a damaged, truncated, forged or newer-format folder gives an error
that says which file is wrong and why.

Saving writes both files through :func:`skxray._atomic.atomic_write_many`
under an exclusive lock on the folder: a full disk leaves the previous model
intact, and two processes saving into the same folder at once give one
complete model and one :class:`~skxray._atomic.FolderLockedError`.

Constructor parameters that name folders of the machine that trained the
model (``checkpoint_dir``, ``feature_cache_dir``: each class lists them in
``_machine_params``) are saved as None and never restored: a model file from
elsewhere must not make this machine write into a folder it chose. Pass them
to :func:`load` again when wanted.

Format history
--------------
1
    First format. Files written before the checksum was added have no
    ``weights_sha256``; they load without that check.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skxray._atomic import atomic_write_many, exclusive_lock
from skxray._data import BatchIterator, private_generator_iterator
from skxray._utils import dumps_json
from skxray._version import __version__
from skxray.models import _precision
from skxray.models._distributed import TrainingNet
from skxray.models._registry import CLASSIFIERS

__all__ = ["save_model", "load"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Version of the folder layout written by :func:`save_model`. Raise it when a
#: change would make an older skxray misread a new folder; :func:`load` reads
#: every version up to this one.
FORMAT_VERSION = 1
# Prefix of the OOD detector's arrays in model.safetensors (no module key has it).
OOD_PREFIX = "__ood__."
# Entries of config.json that load needs.
_REQUIRED = ("params", "classes", "classes_dtype", "input_shape", "input_kind", "history")
# Largest side of an input image accepted from a config.json: a forged input
# shape must not make load build (allocate) a gigantic network.
_MAX_SIDE = 16384
# A config.json holds settings and the training history: a few kB, a few MB
# for thousands of epochs. Anything bigger is not one (and would fill memory).
_MAX_CONFIG_BYTES = 64 * 1024**2


def _jsonable_params(estimator):
    params, dropped = {}, {}
    machine = set(type(estimator)._machine_params)
    for name, value in estimator.get_params(deep=False).items():
        if name in machine:
            # A folder of this machine: meaningless, even harmful, elsewhere.
            params[name] = None
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        try:
            json.dumps(value)
        except TypeError:
            # Train-time objects (augmentations) are not needed to predict.
            dropped[name] = repr(value)
            value = None
        params[name] = list(value) if isinstance(value, tuple) else value
    return params, dropped


def _model_state(estimator):
    """``(config, tensors)`` of a fitted estimator, ready to write."""
    params, dropped = _jsonable_params(estimator)
    config = {
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "params": params,
        "params_not_saved": dropped,
        "classes": estimator.classes_.tolist(),
        "classes_dtype": str(estimator.classes_.dtype),
        "input_shape": list(estimator.input_shape_),
        "input_kind": estimator._input_kind,
        "n_features_in": getattr(estimator, "n_features_in_", None),
        "history": estimator.history_,
        # The precision the model predicts in, and what amp="auto" measured.
        "amp": bool(getattr(estimator, "amp_", False)),
        "amp_probe": getattr(estimator, "amp_probe_", None),
    }
    state = {
        k: v.detach().cpu().contiguous() for k, v in estimator.module_.state_dict().items()
    }
    detector = getattr(estimator, "ood_", None)
    if detector is not None:
        import torch

        ood_config, ood_arrays = detector._get_state()
        config["ood"] = ood_config
        for key, value in ood_arrays.items():
            state[OOD_PREFIX + key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    return config, state


def save_model(estimator, path):
    """Write a fitted skxray classifier to the folder ``path``.

    Both files are written to temporary names, flushed to disk, and only
    then renamed into place, under an exclusive lock on the folder. A write
    that fails (full disk, I/O error) leaves the previous model in the folder
    intact; if the process dies between the two renames, ``config.json``'s
    checksum no longer matches ``model.safetensors`` and :func:`load` refuses
    the mix.

    Parameters
    ----------
    estimator : CNNClassifier, FNNClassifier, ResNet50Classifier or PretrainedCXRClassifier
        A fitted classifier.
    path : str or path-like
        Destination folder (created if needed). Other files in it are kept.

    Returns
    -------
    path : pathlib.Path
        The folder written.

    Raises
    ------
    OSError
        If a file cannot be written; the message names it and says why.
    skxray._atomic.FolderLockedError
        If another process is saving into the same folder.
    NotADirectoryError
        If ``path`` exists and is not a folder.
    """
    from safetensors.torch import save as safetensors_bytes
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Cannot save a model to {str(path)!r}: it exists and is not a folder.")
    config, state = _model_state(estimator)
    weights = safetensors_bytes(state)
    config["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    config_text = dumps_json(config)
    with exclusive_lock(path):
        # Weights first: until config.json (with their checksum) is renamed
        # into place, the folder still describes the previous model.
        atomic_write_many(
            [
                (path / WEIGHTS_NAME, lambda tmp: Path(tmp).write_bytes(weights)),
                (path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config_text, encoding="utf-8")),
            ]
        )
    return path


def load(path, *, feature_cache_dir=None, checkpoint_dir=None):
    """Load a classifier saved with ``estimator.save(path)``.

    Only JSON and safetensors are read, nothing is unpickled, and no file
    outside ``path`` is opened. Everything read is checked first: the format
    version, the class, the input shape, the checksum of the weights (files
    saved by skxray 0.1 and later), and the names, shapes and dtypes of the
    tensors.

    Parameters
    ----------
    path : str or path-like
        Folder written by :meth:`save`.
    feature_cache_dir : str, path-like or None, default=None
        ``feature_cache_dir`` of the loaded ResNet50Classifier or
        PretrainedCXRClassifier. Folders of
        the machine that saved the model are never restored from the file
        (a model file from elsewhere must not choose where this machine
        writes): pass it again to use a feature cache.
    checkpoint_dir : str, path-like or None, default=None
        ``checkpoint_dir`` of the loaded classifier, for the same reason.

    Returns
    -------
    estimator : CNNClassifier, FNNClassifier, ResNet50Classifier or PretrainedCXRClassifier
        The fitted classifier, on the CPU. A PretrainedCXRClassifier is
        rebuilt from the saved backbone weights, without its original weights
        file or a download (its DenseNets need torchxrayvision installed).

    Raises
    ------
    FileNotFoundError
        If the folder or one of its two files is missing.
    ValueError
        If the folder does not hold a complete, intact skxray model, or was
        written in a newer format than this skxray reads (the message names
        both versions), or ``feature_cache_dir`` is given for a class that
        has no such parameter.

    Examples
    --------
    >>> import tempfile
    >>> import skxray
    >>> from skxray.datasets import make_phantom_cxr
    >>> X, y = make_phantom_cxr(40, image_size=32, random_state=0)
    >>> clf = skxray.FNNClassifier(max_epochs=2, random_state=0).fit(X, y)
    >>> folder = clf.save(tempfile.mkdtemp())
    >>> bool((skxray.load(folder).predict_proba(X) == clf.predict_proba(X)).all())
    True
    """
    path = Path(path)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    for file in (config_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved skxray model: {file.name} is missing.")
    config = _read_config(config_path)
    cls = CLASSIFIERS[config["class"]]
    estimator = _make_estimator(
        cls, config, config_path,
        {"feature_cache_dir": feature_cache_dir, "checkpoint_dir": checkpoint_dir},
    )
    state = _read_weights(weights_path, config.get("weights_sha256"))
    ood_arrays = {
        k[len(OOD_PREFIX) :]: state.pop(k).numpy() for k in list(state) if k.startswith(OOD_PREFIX)
    }
    module = _load_module(estimator, state, weights_path)
    # The same batch size as the fitted net: BLAS results depend on it in the
    # last digits, and a reloaded model must predict exactly the same.
    # In the precision it was fitted in (amp_), where this CPU has bfloat16
    # kernels: a reloaded model predicts what the fitted one predicted.
    estimator.net_ = TrainingNet(
        module=module,
        criterion=nn.Identity,
        device="cpu",
        autocast_dtype=torch.bfloat16 if estimator.amp_ and _precision.bf16_supported("cpu") else None,
        batch_size=estimator.batch_size,
        # Arrays predict in whole batches, as the fitted net did.
        iterator_valid=BatchIterator,
        **private_generator_iterator(),
        # Compiled as the fitted net predicted (the weights are the plain module's).
        compile=bool(estimator.compile),
        **{f"compile__{k}": v for k, v in estimator._routed("compile").items()},
    ).initialize()
    estimator._restore_loaded_state()
    estimator.ood_ = _restore_ood(config, ood_arrays, estimator, path)
    return estimator


def _read_config(config_path):
    """Parse and check ``config.json``; return it as a dict."""
    size = config_path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ValueError(
            f"{str(config_path)!r} is {size:,} bytes; a skxray config.json is a few kB "
            f"(at most {_MAX_CONFIG_BYTES:,} accepted)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(config_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{str(config_path)!r} holds a JSON {type(config).__name__}, not an object.")
    _check_format_version(config, config_path)
    registry = CLASSIFIERS
    name = config.get("class")
    if not isinstance(name, str) or name not in registry:
        raise ValueError(
            f"{str(config_path)!r} names class {name!r}; expected one of {sorted(registry)}."
        )
    missing_keys = [key for key in _REQUIRED if key not in config]
    if missing_keys:
        raise ValueError(f"{str(config_path)!r} lacks the entries {missing_keys}: not a complete skxray model.")
    if not isinstance(config["params"], dict):
        raise ValueError(f"{str(config_path)!r}: 'params' must be an object.")
    shape = config["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= _MAX_SIDE for s in shape)
        or shape[0] not in (1, 3)
    ):
        raise ValueError(
            f"{str(config_path)!r}: input_shape must be [channels (1 or 3), height, width] "
            f"with sides of at most {_MAX_SIDE}; got {shape!r}."
        )
    classes = config["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError(f"{str(config_path)!r}: 'classes' must list at least two classes; got {classes!r}.")
    try:
        dtype = np.dtype(config["classes_dtype"])
    except TypeError as exc:
        raise ValueError(f"{str(config_path)!r}: bad classes_dtype {config['classes_dtype']!r}.") from exc
    if dtype.kind not in "biuUO":
        raise ValueError(
            f"{str(config_path)!r}: classes_dtype must be an integer, bool, string or object dtype; "
            f"got {dtype}."
        )
    if not isinstance(config["history"], list):
        raise ValueError(f"{str(config_path)!r}: 'history' must be a list.")
    if not isinstance(config.get("amp", False), bool) or not isinstance(config.get("amp_probe"), (dict, type(None))):
        raise ValueError(f"{str(config_path)!r}: 'amp' must be true or false and 'amp_probe' an object or null.")
    return config


def _check_format_version(config, config_path):
    """Refuse a format this skxray cannot read, naming both versions."""
    version = config.get("format_version", 1)  # never absent in files skxray wrote
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{str(config_path)!r}: format_version must be an integer; got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(config_path)!r} is a model saved in format version {version}, by a newer "
            f"skxray; this skxray ({__version__}) reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade skxray to load it."
        )
    if version < 1:
        raise ValueError(
            f"{str(config_path)!r} claims format version {version}; skxray has only ever written "
            f"versions 1 to {FORMAT_VERSION}."
        )


def _make_estimator(cls, config, config_path, machine_values):
    """A fresh ``cls`` with the saved parameters and fitted attributes, no module yet."""
    allowed = cls().get_params(deep=False)
    not_saved = config.get("params_not_saved") or {}
    params = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in config["params"].items()
        # skorch's prefixed parameters (module__..., iterator_valid__...) too,
        # unless their value could not be written.
        if (k in allowed or cls._routed_prefix(k) is not None and k not in not_saved)
        and k not in cls._machine_params
    }
    for name, value in machine_values.items():
        if name in cls._machine_params:
            params[name] = value
        elif value is not None:
            raise ValueError(f"load: {cls.__name__} has no parameter {name}; got {name}={value!r}.")
    estimator = cls(**params)
    estimator.classes_ = np.asarray(config["classes"], dtype=config["classes_dtype"])
    estimator.input_shape_ = tuple(config["input_shape"])
    estimator._input_kind = config["input_kind"]
    if config.get("n_features_in") is not None:
        estimator.n_features_in_ = int(config["n_features_in"])
    estimator.history_ = config["history"]
    estimator.n_iter_ = len(estimator.history_)
    estimator.device_ = "cpu"
    # Files written before amp_ was saved: float32, as they were loaded then.
    estimator.amp_ = config.get("amp", False)
    estimator.amp_probe_ = config.get("amp_probe")
    estimator.checkpoint_path_ = None
    return estimator


def _read_weights(weights_path, expected_sha256):
    """The tensors of ``model.safetensors``, checked against config.json's checksum."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    try:
        data = weights_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"Cannot read {str(weights_path)!r}: {exc.strerror or exc}") from exc
    # Parsing first gives a truncated file its plain diagnosis; safetensors is
    # made for untrusted input, so parsing before the checksum is safe.
    try:
        state = safetensors_load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{str(weights_path)!r} is not a valid safetensors file: {exc}") from exc
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError(
            f"{str(weights_path)!r} does not match the checksum in config.json: the file is "
            "damaged, or the folder mixes files of two saves. Save the model again."
        )
    return state


def _load_module(estimator, state, weights_path):
    """Build the estimator's module and load ``state`` into it, checking it fits first."""
    import torch

    name = type(estimator).__name__
    n_classes = len(estimator.classes_)
    n_outputs = 1 if n_classes == 2 else n_classes

    def mismatch(detail):
        return ValueError(
            f"{str(weights_path)!r} does not fit a {name} with input shape "
            f"{estimator.input_shape_} (config.json): {detail}"
        )

    # First on the meta device, which allocates nothing: a forged config or
    # weights file is refused before a real network is built.
    try:
        with torch.device("meta"):
            expected = estimator._build_module_for_loading(estimator.input_shape_, n_outputs).state_dict()
    except (NotImplementedError, RuntimeError):  # pragma: no cover - a module meta cannot build
        expected = None
    if expected is not None:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise mismatch(f"missing {missing[:5]}, unexpected {unexpected[:5]}.")
        for key, ref in expected.items():
            got = state[key]
            if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
                raise mismatch(
                    f"tensor {key!r} is {got.dtype} {tuple(got.shape)}, "
                    f"expected {ref.dtype} {tuple(ref.shape)}."
                )
    module = estimator._build_module_for_loading(estimator.input_shape_, n_outputs)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        raise mismatch(str(exc)) from exc
    if missing or unexpected:
        raise mismatch(f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}.")
    return module


def _restore_ood(config, ood_arrays, estimator, path):
    if config.get("ood") is None:
        return None
    from skxray.ood import OODDetector

    try:
        return OODDetector._from_state(config["ood"], ood_arrays, estimator)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"{str(path)!r} holds an unreadable out-of-distribution detector: {exc!r}."
        ) from exc
