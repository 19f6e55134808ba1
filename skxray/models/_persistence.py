"""Saving and loading fitted classifiers without pickle.

A saved model is a folder with ``config.json`` (class, parameters, classes,
input shape, history, the out-of-distribution detector's settings) and
``model.safetensors`` (tensors only: the weights and, under the ``__ood__.``
prefix, the detector's arrays in float64). Loading
never unpickles, so a model folder from an untrusted source cannot run code.
"""

import json
import os
from pathlib import Path

import numpy as np
from skorch import NeuralNet
from torch import nn

from skxray.models._base import _private_generator_iterator, dumps_json

__all__ = ["save_model", "load"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
# Prefix of the OOD detector's arrays in model.safetensors (no module key has it).
OOD_PREFIX = "__ood__."


def _registry():
    from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier

    return {cls.__name__: cls for cls in (CNNClassifier, FNNClassifier, ResNet50Classifier)}


def _jsonable_params(estimator):
    params, dropped = {}, {}
    for name, value in estimator.get_params(deep=False).items():
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


def save_model(estimator, path):
    """Write a fitted skxray classifier to the folder ``path``.

    Parameters
    ----------
    estimator : CNNClassifier, FNNClassifier or ResNet50Classifier
        A fitted classifier.
    path : str or path-like
        Destination folder (created if needed).

    Returns
    -------
    path : pathlib.Path
        The folder written.
    """
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
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
    # Write to temporary names first so an interrupted save never leaves a
    # half-written model under the real names.
    tmp_weights = path / (WEIGHTS_NAME + ".tmp")
    tmp_config = path / (CONFIG_NAME + ".tmp")
    try:
        save_file(state, str(tmp_weights))
        tmp_config.write_text(dumps_json(config))
    except BaseException:
        for tmp in (tmp_weights, tmp_config):
            tmp.unlink(missing_ok=True)
        raise
    tmp_weights.replace(path / WEIGHTS_NAME)
    tmp_config.replace(path / CONFIG_NAME)
    return path


def load(path):
    """Load a classifier saved with ``estimator.save(path)``.

    Only JSON and safetensors are read; nothing is unpickled.

    Parameters
    ----------
    path : str or path-like
        Folder written by :meth:`save`.

    Returns
    -------
    estimator : CNNClassifier, FNNClassifier or ResNet50Classifier
        The fitted classifier, on the CPU.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its two files is missing.
    ValueError
        If the folder does not hold a skxray model.

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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    for file in (config_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved skxray model: {file.name} is missing.")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(config_path)!r} is not valid JSON: {exc}") from exc
    registry = _registry()
    name = config.get("class") if isinstance(config, dict) else None
    if name not in registry:
        raise ValueError(
            f"{str(config_path)!r} names class {name!r}; expected one of {sorted(registry)}."
        )
    cls = registry[name]
    required = ("params", "classes", "classes_dtype", "input_shape", "input_kind", "history")
    missing_keys = [key for key in required if key not in config]
    if missing_keys:
        raise ValueError(f"{str(config_path)!r} lacks the entries {missing_keys}: not a complete skxray model.")
    params = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in config["params"].items()
        if k in cls().get_params(deep=False)
    }
    estimator = cls(**params)
    estimator.classes_ = np.asarray(config["classes"], dtype=config["classes_dtype"])
    estimator.input_shape_ = tuple(config["input_shape"])
    estimator._input_kind = config["input_kind"]
    if config.get("n_features_in") is not None:
        estimator.n_features_in_ = int(config["n_features_in"])
    estimator.history_ = config["history"]
    estimator.n_iter_ = len(estimator.history_)
    estimator.device_ = "cpu"
    estimator.checkpoint_path_ = None
    n_classes = len(estimator.classes_)
    n_outputs = 1 if n_classes == 2 else n_classes
    module = estimator._build_module_for_loading(estimator.input_shape_, n_outputs)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{str(weights_path)!r} is not a valid safetensors file: {exc}") from exc
    ood_arrays = {
        k[len(OOD_PREFIX) :]: state.pop(k).numpy() for k in list(state) if k.startswith(OOD_PREFIX)
    }
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        raise ValueError(
            f"{str(weights_path)!r} does not fit a {name} with input shape "
            f"{estimator.input_shape_} (config.json): {exc}"
        ) from exc
    if missing or unexpected:
        raise ValueError(
            f"{str(weights_path)!r} does not fit a {name} with input shape "
            f"{estimator.input_shape_}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    # The same batch size as the fitted net: BLAS results depend on it in the
    # last digits, and a reloaded model must predict exactly the same.
    estimator.net_ = NeuralNet(
        module=module,
        criterion=nn.Identity,
        device="cpu",
        batch_size=estimator.batch_size,
        **_private_generator_iterator(),
    ).initialize()
    if hasattr(estimator, "cache_features"):
        estimator.features_cached_ = False
    estimator.ood_ = None
    if config.get("ood") is not None:
        from skxray.ood import OODDetector

        try:
            estimator.ood_ = OODDetector._from_state(config["ood"], ood_arrays, estimator)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{str(path)!r} holds an unreadable out-of-distribution detector: {exc!r}."
            ) from exc
    return estimator
