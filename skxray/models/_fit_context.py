"""The values one call of ``fit`` resolves before training, passed to its steps.

``BaseImageClassifier.fit`` resolves where and how it trains, where it writes
checkpoints and what it resumes from, then hands these values to its steps
(``_make_net``, ``_fit_net``, ``_train_net``, ``_fit_ood``), which return
values in turn: nothing is parked on the estimator for the length of a fit
(skorch's hooks work the same way). They are frozen, so a step cannot change
what the next one reads.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Checkpoints", "FitContext", "RunSettings", "TrainedNet"]


@dataclass(frozen=True)
class RunSettings:
    """Where and how one fit trains (``BaseImageClassifier._run_settings``).

    Attributes
    ----------
    device : str
        The training device (``device_``).
    loader : dict
        DataLoader settings of the training and prediction iterators
        (worker processes, pinned memory).
    autocast : torch.dtype or None
        The autocast precision of the forward passes, None for float32.
    accelerator : accelerate.Accelerator or None
        The accelerator of a data-parallel fit, None in a single process.
    writer : bool
        Whether this process writes checkpoints (the main one).
    amp : bool
        Whether mixed precision is used (``amp_``).
    amp_probe : dict or None
        The timings ``amp="auto"`` decided by (``amp_probe_``), None when
        nothing was measured.
    """

    device: str
    loader: dict
    autocast: Any
    accelerator: Any
    writer: bool
    amp: bool
    amp_probe: Any = None


@dataclass(frozen=True)
class Checkpoints:
    """Where one fit writes its checkpoints and what it continues from.

    Attributes
    ----------
    path : str or None
        The fit's checkpoint folder (``checkpoint_path_``), None without
        ``checkpoint_dir``.
    fingerprint : str or None
        The training fingerprint written into ``last.pt`` (parameters, data,
        seed), which a resumed fit must match.
    resumed_from : str or None
        The ``last.pt`` continued from (``resumed_from_``).
    state : dict or None
        The training state read from it, None for a fresh start.
    """

    path: Any = None
    fingerprint: Any = None
    resumed_from: Any = None
    state: Any = None


@dataclass(frozen=True)
class FitContext:
    """What ``fit`` resolved before training, read by each of its steps.

    Attributes
    ----------
    run : RunSettings
    checkpoints : Checkpoints
    seed : int
        The seed drawn from ``random_state`` (initialisation, shuffling,
        validation split, detector).
    split : tuple of two ndarrays of int, or None
        ``(train_idx, valid_idx)``: the training and validation images'
        indices (None: no validation split). Drawn once per fit, by image
        or, with ``groups``, by group; the net's ``train_split`` and the
        detector read the same indices.
    n_train : int
        The number of training images after the split.
    criterion : callable
        The loss factory, its keywords bound.
    groups : ndarray or None
        The group (e.g. patient) of each training image, as passed to
        ``fit``: the validation split and the detector's cross-fitting keep
        each group on one side.
    """

    run: RunSettings
    checkpoints: Checkpoints
    seed: int
    split: Any
    n_train: int
    criterion: Any
    groups: Any = None

    @property
    def validate(self):
        """Whether a validation split is held out."""
        return self.split is not None

    @property
    def valid_idx(self):
        """The validation images' indices, sorted, or None."""
        return None if self.split is None else np.sort(self.split[1])


@dataclass(frozen=True)
class TrainedNet:
    """What ``_fit_net`` returns: the trained net and, when at hand, embeddings.

    Attributes
    ----------
    net : skorch.NeuralNet
        The trained net.
    train_embeddings : ndarray of shape (n_samples, n_features) or None
        The embeddings of every training image, in order, when the
        training computed them anyway (the ResNet-50's cached features): the
        out-of-distribution detector then skips its own pass over the images.
    """

    net: Any
    train_embeddings: Any = None
