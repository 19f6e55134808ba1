"""Crash-safe checkpoints and resumption of an interrupted ``fit``.

Each epoch a fit with ``checkpoint_dir`` writes ``last.pt``: everything the
next epoch depends on (weights, optimizer, learning-rate schedule, the state
of the scoring and early-stopping callbacks, the history, and the random
number generators that draw dropout masks, augmentation and the batch order).
``fit(X, y, resume=True)`` reloads it and continues where training stopped, so
a run killed after epoch k and resumed gives the same model as a run that was
never interrupted.

Every file is written atomically (:func:`skxray._atomic.atomic_write`): to a
temporary file in the same folder, flushed to disk, then renamed over the old
one. A process killed while writing, or a write that fails with a full disk,
leaves the previous checkpoint intact; a failed write raises an OSError that
names the file. Files are read back with ``torch.load(weights_only=True)``,
which refuses pickled code.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint

# One atomic-write helper for every file skxray writes (see skxray._atomic).
from skxray._atomic import atomic_write
from skxray.models._distributed import unwrapped_module

STATE_FILE = "last.pt"
_FORMAT = 1
# Parameters that change neither the numbers nor the course of training: a
# run may be resumed with other values for them.
# The number of processes is compared on its own (see training_fingerprint).
_FREE_PARAMETERS = ("verbose", "checkpoint_dir", "device", "feature_cache_dir", "accelerator")
# Callback attributes that skorch resets at the start of every fit call but
# that a resumed run must carry on with.
_CALLBACK_ATTRIBUTES = ("best_score_", "misses_", "dynamic_threshold_", "best_epoch_", "best_model_weights_")


class AtomicCheckpoint(Checkpoint):
    """skorch's ``Checkpoint`` with each file written atomically.

    ``writer=False`` (the processes other than the main one of a distributed
    fit) writes nothing, not even the folder, but still takes part in the
    collective steps of accelerate's ``save_params``.
    """

    def __init__(self, *, writer=True, **kwargs):
        super().__init__(**kwargs)
        self.writer = writer

    def initialize(self):
        if self.writer:
            return super().initialize()
        self._validate_filenames()
        return self

    def _save_params(self, f, net, f_name, log_name):
        if not self.writer:
            if hasattr(net, "accelerator"):
                # A barrier and the re-wrapping of the module on every process;
                # skorch writes only on the main one.
                net.save_params(**{f_name: f, "use_safetensors": self.use_safetensors})
            return None
        if not isinstance(f, (str, os.PathLike)):
            return super()._save_params(f, net, f_name, log_name)
        # skorch's own _save_params turns a failed write into a printed line
        # and carries on; a full disk must instead stop the fit with an error
        # naming the file, the previous checkpoint left intact.
        atomic_write(f, lambda tmp: net.save_params(**{f_name: tmp, "use_safetensors": self.use_safetensors}))


def training_fingerprint(estimator, X, y_enc, seed, num_processes=1, sample_weight=None, groups=None):
    """What a checkpoint must agree on to be resumed by this fit.

    The constructor parameters (callables by type), the classes, the input
    shape, a hash of the training images (or paths), labels, sample
    weights and groups (which set the validation split), and the
    number of processes training together (each sees another share of the
    batches, so another count continues another run).
    """
    params = {}
    for name, value in sorted(estimator.get_params(deep=False).items()):
        if name in _FREE_PARAMETERS:
            continue
        if callable(value) and not isinstance(value, type):
            # Objects without a stable repr (a lambda prints its address).
            text = repr(value)
            value = type(value).__qualname__ if " at 0x" in text else text
        # Without memory addresses: a list of callbacks prints them too.
        params[name] = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)) if not isinstance(value, str) else value
    digest = hashlib.sha1()
    if isinstance(X, np.ndarray) and X.dtype.kind != "O":
        digest.update(str(X.shape).encode())
        digest.update(np.ascontiguousarray(X).data)
    else:
        digest.update("\0".join(map(str, X)).encode())
    digest.update(np.ascontiguousarray(y_enc, dtype=np.int64).data)
    if sample_weight is not None:
        # Only then, so that checkpoints of unweighted fits keep their fingerprint.
        digest.update(np.ascontiguousarray(np.asarray(sample_weight), dtype=np.float32).data)
    if groups is not None:
        # Likewise only then; as text, so that any hashable labels hash alike.
        digest.update(("groups\0" + "\0".join(map(str, groups))).encode())
    return {
        "estimator": type(estimator).__name__,
        "params": params,
        "classes": [str(c) for c in estimator.classes_],
        "input_shape": [int(s) for s in estimator.input_shape_],
        "n_samples": int(len(y_enc)),
        "data_sha1": digest.hexdigest(),
        "seed": int(seed),
        "num_processes": int(num_processes),
    }


def _differences(saved, current):
    """Human-readable list of what differs between two fingerprints."""
    out = []
    # Checkpoints from before distributed training were single-process ones.
    saved = {"num_processes": 1, **saved}
    for key in ("estimator", "classes", "input_shape", "n_samples", "data_sha1", "seed", "num_processes"):
        if saved.get(key) == current.get(key):
            continue
        if key == "data_sha1":
            out.append("the training images or labels differ")
        else:
            out.append(f"{key} {saved.get(key)!r} in the checkpoint vs {current.get(key)!r} now")
    saved_params, params = saved.get("params", {}), current.get("params", {})
    for name in sorted(set(saved_params) | set(params)):
        if saved_params.get(name) != params.get(name):
            out.append(f"{name}={saved_params.get(name)} in the checkpoint vs {name}={params.get(name)} now")
    return out


def read_state(path, *, mmap=True):
    """Load a ``last.pt`` file without unpickling code.

    Tensors are memory-mapped by default, so looking at many candidates is
    cheap; the state a fit resumes from is read into memory (``mmap=False``)
    so that the file can be replaced while training goes on.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"Cannot read the training checkpoint '{path}': {type(exc).__name__}: {exc}") from exc


def find_resume_state(estimator, resume, fingerprint):
    """The ``(folder, state)`` to resume from, or None to start afresh.

    ``resume=True`` takes the newest ``last.pt`` under ``checkpoint_dir``
    written by a fit with the same fingerprint (none: a fresh start, so a
    script can always pass ``resume=True``). A path must name such a file or
    its folder, and a mismatch is an error that says what differs.
    """
    name = type(estimator).__name__
    if resume is True:
        root = Path(estimator.checkpoint_dir)
        candidates = sorted(
            root.glob(f"{name}-*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for candidate in candidates:
            try:
                state = read_state(candidate)
            except ValueError:
                continue  # unreadable: another candidate may do
            if state.get("format") == _FORMAT and not _differences(json.loads(state["fingerprint"]), fingerprint):
                return candidate.parent, read_state(candidate, mmap=False)
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{name}: resume={str(resume)!r} is neither a checkpoint file nor a folder holding {STATE_FILE}.")
    state = read_state(path)
    if state.get("format") != _FORMAT:
        raise ValueError(f"{name}: '{path}' is not a skxray training checkpoint (format {state.get('format')!r}).")
    diffs = _differences(json.loads(state["fingerprint"]), fingerprint)
    if diffs:
        raise ValueError(f"{name}: cannot resume from '{path}': " + "; ".join(diffs) + ".")
    return path.parent, read_state(path, mmap=False)


def _plain(value):
    """numpy scalars as Python numbers, so ``weights_only`` loading accepts them."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class TrainingState(Callback):
    """Save the full training state atomically at the end of every epoch.

    With ``restore`` (a loaded state) it first puts that state back at the
    start of training, after skorch's own callbacks have reset theirs, which
    is why it must be the last callback.
    """

    def __init__(self, path, fingerprint, max_epochs, generator, restore=None, writer=True, precision=None):
        self.writer = writer
        # JSON text: the precision the fit trains in (amp="auto"'s decision).
        self.precision = precision
        self.path = path
        self.fingerprint = fingerprint
        self.max_epochs = max_epochs
        self.generator = generator
        self.restore = restore

    def on_train_begin(self, net, **kwargs):
        state, self.restore = self.restore, None
        if state is None:
            return
        # Creating the scheduler in on_train_begin moved the learning rate;
        # the optimizer's saved param groups carry the right one.
        net.optimizer_.load_state_dict(state["optimizer"])
        scheduler = _scheduler(net)
        if scheduler is not None and state["lr_scheduler"] is not None:
            scheduler.load_state_dict(state["lr_scheduler"])
        saved_callbacks = state["callbacks"]
        for cb_name, callback in net.callbacks_:
            for attr, value in saved_callbacks.get(cb_name, {}).items():
                setattr(callback, attr, value)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.generator.set_state(state["rng"]["generator"])

    def on_epoch_end(self, net, **kwargs):
        self.save(net, finished=False)

    def on_train_end(self, net, **kwargs):
        early = dict(net.callbacks_).get("early_stopping")
        stopped = early is not None and early.misses_ >= early.patience
        self.save(net, finished=stopped or len(net.history) >= self.max_epochs)

    def save(self, net, *, finished):
        if not self.writer:
            # Only the main process of a distributed fit writes; the processes
            # hold the same weights, history and generators.
            return
        callbacks = {}
        for cb_name, callback in net.callbacks_:
            saved = {a: _plain(getattr(callback, a)) for a in _CALLBACK_ATTRIBUTES if hasattr(callback, a)}
            if saved:
                callbacks[cb_name] = saved
        scheduler = _scheduler(net)
        state = {
            "format": _FORMAT,
            "fingerprint": json.dumps(self.fingerprint),
            "epoch": len(net.history),
            "finished": bool(finished),
            **({} if self.precision is None else {"precision": self.precision}),
            "history": json.dumps(net.history.to_list(), default=_plain),
            "module": unwrapped_module(net).state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "lr_scheduler": None if scheduler is None else scheduler.state_dict(),
            "callbacks": callbacks,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generator": self.generator.get_state(),
            },
        }
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))


def _scheduler(net):
    callback = dict(net.callbacks_).get("lr_scheduler")
    return None if callback is None else getattr(callback, "lr_scheduler_", None)


def start_from_state(net, state):
    """Put a saved state into an initialised net before ``partial_fit``.

    The rest (optimizer again, schedule, callbacks, RNGs) is restored by
    :class:`TrainingState` once skorch has run its own ``on_train_begin``.
    """
    unwrapped_module(net).load_state_dict(state["module"])
    # Schedulers built on a net with history expect 'initial_lr' in the
    # optimizer's param groups, which the saved optimizer state holds.
    net.optimizer_.load_state_dict(state["optimizer"])
    net.replace_history(json.loads(state["history"]))
