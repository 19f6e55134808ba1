"""Shared machinery of the skxray classifiers.

Each classifier is a scikit-learn estimator that *owns* a skorch net built in
``fit`` (composition): scikit-learn sees a plain estimator with explicit
parameters, while skorch runs the training loop, callbacks and device moves.
Subclasses provide one hook, :meth:`BaseImageClassifier._build_module`, and may
override :meth:`BaseImageClassifier._fit_net` (the frozen ResNet-50 trains its
head on cached features there). ``fit``'s steps pass values, not attributes:
they read one frozen :class:`~skxray.models._fit_context.FitContext` and
return what they made (``_fit_net`` a
:class:`~skxray.models._fit_context.TrainedNet`).
"""

import dataclasses
import functools
import inspect
import math
import os
import time
import uuid
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochScoring,
    LRScheduler,
    ProgressBar,
)
from skorch.dataset import ValidSplit
from skorch.history import History
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset
from torch.utils.data.dataloader import default_collate

from skxray._data import (
    BatchIterator,
    ImagePathDataset,
    MirroredDataset,
    TensorImageDataset,
    private_generator_iterator,
    with_sample_weight,
)
from skxray._param_validation import HasMethods, Interval, StrOptions, validate_params
from skxray._utils import check_groups, check_sample_weight
from skxray._validation import check_image_array, is_path_array
from skxray._version import DOCS_URL
from skxray.augmentation import supports_batches
from skxray.io import read_image
from skxray.models._distributed import (
    AcceleratedNet,
    TrainingNet,
    is_secondary_process,
    loader_kwargs,
    resolve_accelerator,
    resolve_autocast,
    share_from_main,
    unwrapped_module,
)
from skxray.models._fit_context import Checkpoints, FitContext, RunSettings, TrainedNet
from skxray.models._precision import precision_record, settle_precision
from skxray.models._registry import CLASSIFIERS
from skxray.models._resume import (
    STATE_FILE,
    AtomicCheckpoint,
    TrainingState,
    find_resume_state,
    read_state,
    start_from_state,
    training_fingerprint,
)
from skxray.preprocessing import resize_image

__all__ = [
    "BaseImageClassifier",
    "ROUTED_PREFIXES",
    "SHARED_PARAM_DEFAULTS",
    "common_attributes_doc",
    "common_parameters_doc",
    "keyword_only_init",
    "routed_prefix",
]

#: The parameters every classifier takes, in signature order, with their
#: defaults (COMMON_PARAMETERS_DOC documents them). A class builds its
#: ``__init__`` with :func:`keyword_only_init` from its own parameters, these,
#: and any default of its own (FNNClassifier: 64 px, 30 epochs).
SHARED_PARAM_DEFAULTS = {
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "dropout": 0.3,
    "batch_size": 32,
    "max_epochs": 20,
    "optimizer": "adam",
    "lr_schedule": None,
    "early_stopping": False,
    "validation_fraction": 0.1,
    "n_iter_no_change": 5,
    "class_weight": None,
    "augment": None,
    "checkpoint_dir": None,
    "device": "auto",
    "image_size": 128,
    "keep_aspect": "crop",
    "random_state": None,
    "verbose": 0,
    "ood": True,
    "min_confidence": 0.0,
    "num_workers": 0,
    "amp": "auto",
    "compile": False,
    "accelerator": "auto",
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "tta": False,
    "callbacks": None,
}

#: skorch's ``NeuralNet`` prefixes (skorch/net.py) that every classifier
#: routes: ``set_params(optimizer__momentum=0.9)`` passes ``momentum=0.9`` to
#: the optimizer, as in skorch. Keywords with these prefixes are parameters
#: like the others (``get_params``, ``clone``, grid searches), kept in the
#: estimator's ``__dict__`` as skorch keeps them.
ROUTED_PREFIXES = (
    "module", "criterion", "optimizer", "iterator_train", "iterator_valid", "callbacks", "compile"
)


def routed_prefix(name):
    """The skorch prefix that the parameter ``name`` is routed by, or None."""
    head, sep, rest = name.partition("__")
    return head if sep and rest and head in ROUTED_PREFIXES else None


#: The Attributes section of every classifier's docstring (``{extra}``: a class's
#: own, after ``n_iter_``).
COMMON_ATTRIBUTES_DOC = """\
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.

    input_shape_ : tuple of int
        (channels, height, width) of the training images; (1, 1, n_features)
        for 2-D (tabular) input.

    n_features_in_ : int
        Number of features, only when fitted on 2-D (tabular) input.

    net_ : skorch.NeuralNet
        The trained skorch net; {net_module}.

    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_acc``,
        ``lr``, ``dur`` (seconds{dur_note}).
        Validation entries are None without a validation split.

    n_iter_ : int
        Number of epochs run.
{extra}
    checkpoint_path_ : str or None
        Folder of this fit's checkpoint, when ``checkpoint_dir`` is set.

    resumed_from_ : str or None
        The ``last.pt`` checkpoint this fit continued from
        (``fit(X, y, resume=...)``), None for a fresh start.

    device_ : str
        Device the model was trained on.

    amp_ : bool
        Whether the network trained (and predicts) in bfloat16 autocast
        (``amp``); saved with the model.

    amp_probe_ : dict or None
        What ``amp="auto"`` measured to decide ``amp_``: seconds per step in
        ``float32_s`` and ``bfloat16_s``, their ratio ``speedup``, the
        ``min_speedup`` bfloat16 needed, and the ``batch_size``,
        ``input_shape``, ``mode`` ("train" or "predict"), ``device`` and
        ``threads`` it was timed with. None when nothing was measured
        (``amp`` True or False, or ``"auto"`` on the CPU). Saved with the model.

    ood_ : skxray.ood.OODDetector or None
        Out-of-distribution detector fitted with the network (``ood=True``;
        None with ``ood=False`` or fewer than 10 training images); see
        :meth:`predict_with_abstention` and the user guide's page on
        out-of-distribution detection.
"""


def _doc_default(value):
    """A default as the docs write it: 1e-3 rather than 0.001."""
    if isinstance(value, float) and 0 < value < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return str(value)


def common_parameters_doc(defaults):
    """COMMON_PARAMETERS_DOC with the defaults of one class (a dict as for keyword_only_init)."""
    names = ("lr", "weight_decay", "dropout", "batch_size", "max_epochs", "optimizer", "image_size")
    return COMMON_PARAMETERS_DOC.format(**{name: _doc_default(defaults[name]) for name in names})


def common_attributes_doc(*, net_module="its ``module_`` is the torch model", dur_note="", extra=""):
    """COMMON_ATTRIBUTES_DOC for one class: what ``net_.module_`` is, and its own attributes."""
    return COMMON_ATTRIBUTES_DOC.format(net_module=net_module, dur_note=dur_note, extra=extra)


def keyword_only_init(defaults):
    """An ``__init__`` that stores the keyword parameters ``defaults`` names, and nothing else.

    scikit-learn reads an estimator's parameters from the signature of its
    ``__init__`` (``BaseEstimator._get_param_names``) and wants ``__init__``
    to store them unchanged. Written by hand, the four classifiers repeated
    the same 25 parameters and 25 assignments four times, and a new shared
    parameter had to be added in eight places. Declared once as data, each
    class still gets an explicit keyword-only signature (``__signature__``:
    ``inspect.signature``, ``help``, Sphinx and ``get_params`` see every name
    and default) and the same behaviour, errors included.

    Besides these, it stores the keywords that carry one of skorch's
    prefixes (:data:`ROUTED_PREFIXES`, e.g. ``optimizer__momentum``), as
    skorch's ``NeuralNet`` does. The signature leaves them out: scikit-learn
    reads it as the list of named parameters (``check_estimator`` passes a
    value to each), and ``get_params`` adds the prefixed ones that are set.

    Parameters
    ----------
    defaults : dict
        Parameter names, in signature order, and their defaults. Defaults are
        stored as given, so they must be immutable (tuples, not lists), as
        in any hand-written signature.

    Returns
    -------
    __init__ : function
    """
    params = dict(defaults)
    keyword = inspect.Parameter.KEYWORD_ONLY

    def __init__(self, **kwargs):
        for name in kwargs:
            if name not in params and routed_prefix(name) is None:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {name!r}")
        for name, default in params.items():
            setattr(self, name, kwargs.get(name, default))
        # skorch's prefixed parameters (optimizer__momentum=...), stored as given.
        for name, value in kwargs.items():
            if name not in params:
                setattr(self, name, value)

    __init__.generated_by = keyword_only_init  # BaseImageClassifier names it after its class
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, keyword, default=value) for name, value in params.items()]
    )
    return __init__


_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
_LR_SCHEDULES = (None, "plateau", "cosine", "onecycle")
_DEVICES = ("auto", "cpu", "cuda")

# Parameters documented once and shared by the three classifiers' docstrings.
COMMON_PARAMETERS_DOC = """\
    lr : float, default={lr}
        Learning rate of the optimizer (the peak rate for ``lr_schedule="onecycle"``).

    weight_decay : float, default={weight_decay}
        L2 penalty passed to the optimizer (decoupled for ``"adamw"``).

    dropout : float, default={dropout}
        Dropout probability in the dense layers, in [0, 1).

    batch_size : int, default={batch_size}
        Number of images per training batch.

    max_epochs : int, default={max_epochs}
        Number of passes over the training images (fewer with early stopping).

    optimizer : {{"adam", "adamw", "sgd"}}, default="{optimizer}"
        Optimizer; ``"sgd"`` uses Nesterov momentum 0.9
        (``optimizer__momentum`` changes it; 0 is plain SGD).

    lr_schedule : {{None, "plateau", "cosine", "onecycle"}}, default=None
        Learning-rate schedule: constant, halved when the validation loss
        stops improving, cosine annealing over ``max_epochs``, or one-cycle.

    early_stopping : bool, default=False
        Stop when the validation loss has not improved for
        ``n_iter_no_change`` epochs and restore the weights of the best epoch.
        Needs ``validation_fraction > 0``.

    validation_fraction : float or None, default=0.1
        Fraction of the training images held out (stratified, seeded by
        ``random_state``) to compute ``valid_loss`` and ``valid_acc`` in
        ``history_``. ``None`` or 0 trains on every image. The split is skipped
        when the data are too small to stratify.

    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.

    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, as ``{{label: weight}}``, or
        "balanced" so each class counts as much as the others (useful with
        124 COVID images against 500 normals).

    augment : callable or None, default=None
        Train-time augmentation: called on each training image, a float32
        tensor of shape (channels, height, width), once per epoch; never on
        validation or prediction images. See :mod:`skxray.augmentation`,
        whose transforms augment whole batches on the training device
        (``augment_batch``, a draw per image) when ``X`` is an array.

    checkpoint_dir : str, path or None, default=None
        Folder under which each ``fit`` writes, to a sub-folder of its own
        (``checkpoint_path_``, so parallel fits never overwrite each other),
        the best weights, optimizer state and history (``params.pt``,
        ``optimizer.pt``, ``history.json``) and, every epoch, the full
        training state ``last.pt`` that ``fit(X, y, resume=True)`` continues
        from. Every file is written atomically (temporary file, then rename):
        a crash never leaves a half-written checkpoint, and a full disk stops
        ``fit`` with an ``OSError`` naming the file, the previous checkpoint
        intact. A folder of this machine: :meth:`save` does not keep it.

    device : {{"auto", "cpu", "cuda"}}, default="auto"
        Where to train; ``"auto"`` picks CUDA when available.

    image_size : int, default={image_size}
        Side of the square images read when ``X`` holds file paths.

    keep_aspect : {{"crop", "pad", False}}, default="crop"
        How files that are not square are brought to ``image_size`` when
        ``X`` holds file paths: centre-cropped to a square first ("crop"),
        letterboxed ("pad") or stretched (False). Cropping keeps anatomy
        undistorted and avoids a shape cue when the image shape depends on
        the source (see :func:`skxray.preprocessing.resize_images`). The
        command line loads folders the same way, from this parameter.

    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, dropout, shuffling, augmentation and the
        validation split. The global torch RNG is left untouched.

    verbose : int, default=0
        0 is silent; 1 prints a per-epoch table and a progress bar.

    ood : bool, default=True
        Fit an out-of-distribution detector at the end of ``fit``
        (``ood_``, a :class:`skxray.ood.OODDetector`): the Mahalanobis
        distance of the hidden layers' statistics and an image descriptor
        (CNN, FNN) or of the embedding and the descriptor (ResNet-50), its
        threshold calibrated on the validation split at the 0.95 quantile,
        and the validation images' features kept as the reference of
        :func:`skxray.ood.shift_test`. It also flags images whose lungs, as
        skxray's lung segmenter finds them, are not two lungs side by side
        (``lung_check``: rotated X-rays, faces, photographs), provided the
        validation images pass that check. It costs one more pass over the
        training images and is used by :meth:`predict_with_abstention` and
        :meth:`ood_score`. Needs at least 10 training images (``ood_`` is
        None below). At a hospital it never saw, the default CNN's
        detector flagged about a quarter of the images, fitted with the
        patients as ``groups`` (see the user guide's page on new
        hospitals).

    min_confidence : float in [0, 1], default=0.0
        :meth:`predict_with_abstention` answers ``"uncertain"`` when the
        top class probability is below it (0 never abstains on confidence).

    num_workers : int, default=0
        Worker processes that read, decode, resize (and augment) the image
        files while the network trains, when ``X`` holds file paths; 0 reads
        them in the training process. Each worker is seeded from
        ``random_state``, so a fit is reproducible for a given
        ``num_workers`` and ``fit(..., resume=True)`` continues it exactly.
        Without ``augment`` the model does not depend on ``num_workers``;
        with it, augmentations are drawn in the workers, so another
        ``num_workers`` gives another (equally valid) model. ``augment``
        must then be picklable (a class, not a lambda), as the readers are.
        On a GPU machine 8 workers read 256 px files 2.6-2.8x faster than
        none (an NVIDIA H200 with 16 cores; the scaling guide).

    amp : {{"auto", True, False}}, default="auto"
        Automatic mixed precision: forward passes in bfloat16 under
        ``torch.autocast``. ``"auto"`` decides by measurement on a GPU
        that supports bfloat16: ``fit`` times a few training steps of a
        copy of its network (forward passes only for a frozen backbone
        with cached features) in float32 and in bfloat16, at its batch
        size and input shape, and takes bfloat16 only when it is at least
        1.10x as fast; the decision is kept for the process (one
        measurement per architecture, input shape and batch size) and a
        resumed fit keeps its checkpoint's. On the CPU ``"auto"`` is
        float32: there bfloat16 cost 1.6 points of balanced accuracy on
        real X-rays (the scaling guide). ``True`` trains in bfloat16 on a
        GPU with bfloat16 or on a CPU with oneDNN's bfloat16 kernels
        (AVX-512 BF16 or AMX) and raises a ``ValueError`` elsewhere;
        ``False`` is float32. Whether bfloat16 was used is ``amp_``, the
        measured timings ``amp_probe_``.

    compile : bool, default=False
        Compile the network with ``torch.compile`` (skorch's ``compile``):
        the first batches of ``fit`` and of the first prediction wait while
        it compiles (tens of seconds, once per process and input shape),
        later ones run the compiled code. ``compile__<keyword>`` passes a keyword
        to ``torch.compile`` (``compile__mode="max-autotune"``,
        ``compile__dynamic=False``). The fitted ``module_`` is the plain
        module, saved, checkpointed and loaded as without compilation; a
        loaded model compiles again. The frozen ResNet-50 with cached features compiles
        its head for training. With dropout, the compiled network draws
        other dropout masks than the uncompiled one: another (equally valid)
        model for the same ``random_state``, still reproducible. Off by
        default: on a 2-core CPU it made the CNN's training slower, and it
        was not measured on a GPU (the scaling guide).

    accelerator : "auto", None or accelerate.Accelerator, default="auto"
        Data-parallel training over several processes (GPUs or machines)
        through skorch's ``AccelerateMixin`` and Hugging Face accelerate
        (``pip install 'skxray[distributed]'``). ``"auto"`` trains one
        model across the processes when a launcher started several
        (``torchrun``, ``accelerate launch``; ``WORLD_SIZE`` > 1) and as a
        single process otherwise; ``None`` always trains in this process
        alone; an ``Accelerator`` gives full control (precision, gradient
        accumulation). Only the main process writes checkpoints. See the
        user guide's page on scaling out.

    label_smoothing : float in [0, 1), default=0.0
        Label smoothing of the training loss (Szegedy et al., CVPR 2016):
        the target of each image is ``1 - label_smoothing`` on its class and
        ``label_smoothing / n_classes`` spread over all classes, as
        ``torch.nn.CrossEntropyLoss(label_smoothing=...)``; with two classes
        (one logit) the binary target becomes
        ``y * (1 - label_smoothing) + label_smoothing / 2``. It discourages
        over-confident outputs, which noisy labels would otherwise drive.

    mixup : float >= 0, default=0.0
        Mixup (Zhang et al., ICLR 2018): each training batch is replaced by
        ``lam * x + (1 - lam) * x[perm]``, a mix of its images with a
        shuffled copy of itself, with one ``lam`` drawn from
        ``Beta(mixup, mixup)`` per batch, and the loss is the same mix of
        the losses on both images' labels (class weights, label smoothing
        and sample weights apply to each). 0 switches it off; the paper
        used 0.1-0.4. It runs after ``augment``. Validation and prediction
        images are never mixed, and neither are the training images from
        which the out-of-distribution detector is fitted. A frozen
        backbone's features are not cached while it is on (the images,
        not their features, are mixed).

    tta : bool, default=False
        Test-time augmentation: :meth:`predict_proba` (and so
        :meth:`predict` and :meth:`decision_function`) average the class
        probabilities of each image and of its left-right mirror image. Costs
        a second forward pass; has no effect on 2-D (tabular) input, whose
        columns have no left and right.

    callbacks : list of skorch callbacks or None, default=None
        Callbacks of your own (``skorch.callbacks.Callback`` instances or
        ``(name, callback)`` pairs), run after the default ones, e.g. a
        logger; as skorch's ``callbacks``.

    **kwargs
        skorch's prefixed parameters, routed as skorch's ``NeuralNet``
        routes them: ``optimizer__momentum=0.9`` to the optimizer,
        ``criterion__...`` to the loss, ``module__...`` to the torch
        module's constructor, ``iterator_train__...`` and
        ``iterator_valid__...`` to the training and prediction iterators
        (whole batches sliced from arrays, ``DataLoader`` objects for file
        paths and for settings only they take), and ``callbacks__<name>__<param>`` to the
        callback named ``<name>`` (``callbacks__<name>=None`` switches a
        default callback off, e.g. ``callbacks__progress_bar=None``), and
        ``compile__...`` to ``torch.compile`` (with ``compile=True``). They
        appear in ``get_params``, survive ``clone`` and can be searched. A
        setting that has a parameter of its own is refused under a prefix
        (``optimizer__lr``: use ``lr``). See the user guide's page on
        training.
"""


class _RecordLearningRate(Callback):
    """Write the optimizer's current learning rate into the history each epoch."""

    def on_epoch_end(self, net, **kwargs):
        net.history.record("lr", float(net.optimizer_.param_groups[0]["lr"]))


class _AugmentingCollate:
    """Collate function for training batches that augments each image first.

    Living in the training iterator only is what guarantees that validation
    and prediction images are never augmented.
    """

    def __init__(self, augment):
        self.augment = augment
        #: Whether :meth:`augment_batch` augments whole batches (read by BatchIterator).
        self.batched = supports_batches(augment)

    def __call__(self, batch):
        batch = [(self._augment(x), y) for x, y in batch]
        return default_collate(batch)

    def augment_batch(self, x):
        """The images of a batch (a tensor, or a dict with sample weights), each augmented.

        What :class:`skxray._data.BatchIterator` calls. skxray's
        augmentations augment the whole batch at once, on its device, with
        a draw per image (``augment.augment_batch``); any other callable runs
        on each image in turn, drawing from the RNG in the same order as
        :meth:`__call__`, so the batches equal the DataLoader's.
        """
        if isinstance(x, dict):
            return {**x, "x": self.augment_batch(x["x"])}
        if self.batched:
            return self.augment.augment_batch(x)
        return torch.stack([self.augment(image) for image in x])

    def _augment(self, x):
        if isinstance(x, dict):  # an image with its sample weight
            return {**x, "x": self.augment(x["x"])}
        return self.augment(x)


class _ImageFileReader:
    """Read one file as a (channels, height, width) image of the fitted shape.

    A class, not a closure, so that DataLoader workers can unpickle it.
    """

    def __init__(self, shape, keep_aspect="crop"):
        self.shape = shape  # (channels, height, width)
        self.keep_aspect = keep_aspect

    def __call__(self, path):
        channels, height, width = self.shape
        img = read_image(path, as_gray=channels == 1)
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        return resize_image(img, (height, width), keep_aspect=self.keep_aspect)


class _BinaryLogitLoss:
    """BCE on a single logit, so two-class models have one output unit.

    A plain callable, not an ``nn.Module``: accelerate wraps every module it
    is given in DistributedDataParallel on CPU processes, which fails for a
    module without parameters. skorch leaves other criteria alone, so the
    class weights are moved to the logits' device here.
    """

    def __init__(self, pos_weight=None, label_smoothing=0.0):
        self.pos_weight = pos_weight
        self.label_smoothing = label_smoothing

    def __call__(self, logits, target, sample_weight=None):
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        target = target.to(logits.dtype)
        if self.label_smoothing:
            # Targets moved towards 1/2, as CrossEntropyLoss(label_smoothing=...)
            # does for two softmax outputs.
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        if sample_weight is None:
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), target, pos_weight=pos_weight)
        losses = F.binary_cross_entropy_with_logits(
            logits.reshape(-1), target, pos_weight=pos_weight, reduction="none"
        )
        # The mean above, each image counted sample_weight times.
        return _weighted_mean(losses, sample_weight, sample_weight)


class _CrossEntropyLoss:
    """Softmax cross-entropy; a plain callable for the same reason as :class:`_BinaryLogitLoss`."""

    def __init__(self, weight=None, label_smoothing=0.0):
        self.weight = weight
        self.label_smoothing = label_smoothing

    def __call__(self, logits, target, sample_weight=None):
        weight = None if self.weight is None else self.weight.to(logits.device)
        if sample_weight is None:
            return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)
        losses = F.cross_entropy(
            logits, target, weight=weight, label_smoothing=self.label_smoothing, reduction="none"
        )
        # torch's mean with class weights divides by the summed class weights
        # of the batch's targets; each image now counts sample_weight times.
        counts = sample_weight if weight is None else sample_weight * weight[target]
        return _weighted_mean(losses, sample_weight, counts)


def _weighted_mean(losses, sample_weight, counts):
    """``sum(sample_weight * losses) / sum(counts)``: a weight of 2 counts an image twice.

    A batch whose images all weigh 0 gives a loss of 0 (no update), not NaN.
    """
    sample_weight = sample_weight.to(device=losses.device, dtype=losses.dtype)
    total = counts.to(device=losses.device, dtype=losses.dtype).sum()
    return (sample_weight * losses).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny)


def _dataset_labels(dataset):
    """The labels of one of skxray's datasets, or of a Subset of one, without reading images."""
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    return dataset.y


def _log_proba_from_logits(logits, n_classes):
    """float64 log-probabilities of logits of shape (n, 1) (two classes) or (n, k)."""
    if n_classes == 2:
        z = logits.reshape(-1)
        # log(1 - sigmoid(z)) = -softplus(z), log(sigmoid(z)) = -softplus(-z)
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _binary_accuracy_or_multiclass(net, X, y):
    """Validation accuracy from logits (works for one-logit and softmax heads)."""
    logits = net.forward(X, training=False)
    if logits.ndim == 1 or logits.shape[1] == 1:
        pred = (logits.reshape(-1) > 0).long()
    else:
        pred = logits.argmax(1)
    # Without caching (distributed training) skorch passes no labels.
    y_true = _dataset_labels(X) if y is None else torch.as_tensor(np.asarray(y))
    return float((pred.cpu() == y_true.cpu()).float().mean())


#: Keywords under a skorch prefix that an estimator parameter sets already,
#: and that parameter (or what sets it); a keyword named as a parameter
#: (``module__dropout``) is refused too. One set by a parameter that is None
#: (``criterion__weight`` with ``class_weight=None``) is free.
_SET_BY_PARAMETERS = {
    "module": {
        "input_shape": "the training images",
        "n_inputs": "the training images",
        "n_outputs": "the classes",
        "state_dict": "weights",
        "resolution": "input_resolution",
    },
    "criterion": {"weight": "class_weight", "pos_weight": "class_weight"},
    "optimizer": {"params": "the module"},
    "iterator_train": {"dataset": "X", "generator": "random_state", "collate_fn": "augment", "device": "device"},
    "iterator_valid": {"dataset": "X", "device": "device"},
    "callbacks": {},
    "compile": {"model": "the module"},
}


class _FixedValidSplit:
    """skorch's ``train_split`` for validation indices drawn once per fit.

    ``fit`` draws the split (by image or by group) before training, so the
    net, each process of a distributed fit and the out-of-distribution
    detector read the same indices.
    """

    def __init__(self, train_idx, valid_idx):
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.valid_idx = np.asarray(valid_idx, dtype=np.int64)

    def __call__(self, dataset, y=None, **fit_params):
        return Subset(dataset, self.train_idx.tolist()), Subset(dataset, self.valid_idx.tolist())

    def __repr__(self):
        return f"{type(self).__name__}(n_valid={len(self.valid_idx)})"


class BaseImageClassifier(ClassifierMixin, BaseEstimator):
    """Base class: validation, label encoding, seeding, the skorch net.

    Not for direct use; subclasses define ``__init__`` with
    :func:`keyword_only_init` (explicit keyword parameters, as scikit-learn
    requires) and :meth:`_build_module`.
    """

    #: Whether the subclass's module needs 3-channel input (the ResNet-50).
    _rgb_input = False
    #: With scikit-learn's metadata routing on, ``fit`` asks for ``groups`` by
    #: default: groups given to a search or ``cross_val_score`` are the
    #: patients, and the validation split must keep them apart too.
    #: ``set_fit_request(groups=False)`` opts out.
    __metadata_request__fit = {"groups": True}
    #: The HTML representation (in notebooks) links to the class's API page.
    _doc_link_module = "skxray"
    _doc_link_template = DOCS_URL + "api/generated/skxray.models.{estimator_name}.html"

    #: :func:`routed_prefix`, for models/_persistence.py (which cannot import this module).
    _routed_prefix = staticmethod(routed_prefix)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The library's own classifiers, for loading by class name.
        if cls.__module__.startswith("skxray.models."):
            CLASSIFIERS[cls.__name__] = cls
        # So that Python's own errors ("takes 1 positional argument") name the class.
        init = cls.__dict__.get("__init__")
        if getattr(init, "generated_by", None) is keyword_only_init:
            init.__qualname__ = f"{cls.__qualname__}.__init__"

    #: What each constructor parameter accepts, checked when ``fit`` runs
    #: (scikit-learn's format; subclasses extend it with their own).
    _parameter_constraints: dict = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(_OPTIMIZERS))],
        "lr_schedule": [None, StrOptions({s for s in _LR_SCHEDULES if s is not None})],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="left")],
        "early_stopping": "no_validation",  # read as a truth value
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "augment": [None, callable],
        "checkpoint_dir": [None, str, os.PathLike],
        "device": [StrOptions(set(_DEVICES))],
        "image_size": [Interval(Integral, 1, None, closed="left")],
        "keep_aspect": ["boolean", StrOptions({"pad", "crop"})],
        "random_state": ["random_state"],
        "verbose": [Interval(Integral, 0, None, closed="left")],
        "ood": ["boolean"],
        "min_confidence": [Interval(Real, 0, 1, closed="both")],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "amp": [StrOptions({"auto"}), "boolean"],
        "compile": ["boolean"],
        "accelerator": [None, StrOptions({"auto"}), HasMethods(["prepare", "wait_for_everyone"])],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "mixup": [Interval(Real, 0, None, closed="left")],
        "tta": ["boolean"],
        "callbacks": [None, list, tuple],
    }
    #: Constructor parameters that name folders of the machine running the
    #: fit. :meth:`save` writes them as None and :func:`skxray.load` never
    #: restores them from a file (it takes them as arguments instead): a model
    #: file from elsewhere must not choose where this machine writes.
    _machine_params = ("checkpoint_dir",)

    # ------------------------------------------------------------------ hooks
    def _restore_loaded_state(self):
        """Set the fitted attributes that ``config.json`` does not hold.

        Called by :func:`skxray.load` once the weights are in ``net_``;
        subclasses with attributes of their own override it.
        """

    def _build_module(self, input_shape, n_outputs):
        """Return a fresh ``torch.nn.Module`` for inputs of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            (channels, height, width) of one image.
        n_outputs : int
            1 for two classes (one logit), else the number of classes.
        """
        raise NotImplementedError

    def _build_module_for_loading(self, input_shape, n_outputs):
        """The module to load saved weights into (no pretrained download)."""
        return self._build_module(input_shape, n_outputs)

    def _check_params(self):
        """Check the constructor parameters; called at the start of ``fit``.

        What each parameter accepts is declared in ``_parameter_constraints``;
        only rules that tie parameters together, or depend on the machine,
        are written here.
        """
        validate_params(self)
        name = type(self).__name__
        if self.early_stopping and not self.validation_fraction:
            raise ValueError(
                f"{name}: early_stopping=True needs a validation set; "
                f"set validation_fraction > 0 (got {self.validation_fraction!r})."
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{name}: device='cuda' but no CUDA device is available.")
        self._check_routed_params()

    # ------------------------------------------------------ skorch's routing
    def get_params(self, deep=True):
        """Parameters of this estimator, skorch's prefixed ones included.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained estimators.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=deep)
        params.update((k, v) for k, v in vars(self).items() if routed_prefix(k) is not None)
        return params

    def set_params(self, **params):
        """Set parameters, skorch's prefixed ones (``optimizer__momentum=0.9``) included.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        routed = {k: params.pop(k) for k in list(params) if routed_prefix(k) is not None}
        super().set_params(**params)
        for name, value in routed.items():
            setattr(self, name, value)
        return self

    def _routed(self, prefix):
        """The keywords routed by ``prefix`` (``optimizer__momentum`` -> ``{"momentum": ...}``)."""
        start = f"{prefix}__"
        return {k[len(start):]: v for k, v in vars(self).items() if k.startswith(start) and routed_prefix(k)}

    def _check_routed_params(self):
        """Refuse a prefixed keyword that one of the estimator's parameters sets already."""
        own = set(self._get_param_names())
        for prefix, keys in _SET_BY_PARAMETERS.items():
            for key in self._routed(prefix):
                parameter = keys.get(key, key if key in own else None)
                # class_weight=None leaves criterion__weight free.
                if parameter is not None and not (parameter in own and getattr(self, parameter) is None):
                    raise ValueError(
                        f"{type(self).__name__}: {prefix}__{key} is set by the parameter "
                        f"{parameter!r}; set that instead."
                    )

    def _with_routed(self, prefix, target, **kwargs):
        """``kwargs`` for calling ``target``, with the keywords routed by ``prefix`` added.

        Refuses, naming it, a routed keyword that ``target`` does not take.
        The subclasses' :meth:`_build_module` pass their module's keywords
        through here (``prefix="module"``).
        """
        routed = self._routed(prefix)
        accepted = {
            name
            for name, p in inspect.signature(target).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        unknown = sorted(set(routed) - accepted)
        if unknown:
            taken = set(_SET_BY_PARAMETERS[prefix]) | set(self._get_param_names()) | {"self", "params"}
            free = sorted(accepted - taken)
            raise ValueError(
                f"{type(self).__name__}: {prefix}__{unknown[0]} is not a keyword of "
                f"{getattr(target, '__name__', target)}; {prefix}__ accepts {free or 'none'}."
            )
        return {**kwargs, **routed}

    # ------------------------------------------------------------- inputs
    def _check_X(self, X, *, reset):
        """Return ``(kind, payload)`` where kind is "paths" or "array".

        Arrays come back as float32 (N, C, H, W); 2-D tabular input is taken
        as one-row images (N, 1, 1, n_features) so that scikit-learn's
        generic tools and checks can drive the estimator.
        """
        name = type(self).__name__
        if is_path_array(X):
            paths = np.asarray([os.fspath(p) for p in X], dtype=object)
            if reset:
                channels = 3 if self._rgb_input else 1
                self._input_kind = "images"
                self.input_shape_ = (channels, self.image_size, self.image_size)
            return "paths", paths
        arr = np.asarray(X) if not hasattr(X, "toarray") else X
        ndim = getattr(arr, "ndim", None)
        if ndim == 1:
            _raise_for_1d(arr)
        if ndim is not None and ndim <= 2 or hasattr(X, "toarray"):
            arr = validate_data(self, X, reset=reset, dtype=np.float32)
            if not arr.flags.writeable:
                arr = arr.copy()
            arr = arr[:, None, None, :]
            kind = "tabular"
        else:
            arr = check_image_array(X, name="X", dtype=np.float32)
            if arr.ndim == 3:
                arr = arr[:, None]
            kind = "images"
        shape = tuple(int(s) for s in arr.shape[1:])
        if reset:
            self._input_kind = kind
            self.input_shape_ = shape
        else:
            if kind != self._input_kind or shape != tuple(self.input_shape_):
                fitted = (
                    f"{self.input_shape_[-1]} features"
                    if self._input_kind == "tabular"
                    else f"images of shape (channels, height, width) = {tuple(self.input_shape_)}"
                )
                got = f"{shape[-1]} features" if kind == "tabular" else f"images of shape {shape}"
                raise ValueError(
                    f"X has {got}, but {name} was fitted on {fitted}. "
                    "Resize or convert the images the same way as for fit "
                    "(e.g. with skxray.preprocessing.Resize / ToGrayscale)."
                )
        return "array", arr

    def _check_y(self, X_len, y):
        name = type(self).__name__
        if y is None:
            raise ValueError(
                f"{name} requires y to be passed, but the target y is None."
            )
        _check_label_types(y)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != X_len:
            raise ValueError(
                f"X and y have inconsistent numbers of samples: {X_len} images but {len(y)} labels."
            )
        return y

    def _make_dataset(self, kind, X, y_enc=None):
        y_t = None if y_enc is None else torch.as_tensor(y_enc, dtype=torch.long)
        if kind == "paths":
            reader = _ImageFileReader(tuple(self.input_shape_), self.keep_aspect)
            return ImagePathDataset(X, y_t, reader)
        return TensorImageDataset(torch.from_numpy(X), y_t)

    def get_dataset(self, X, y=None):
        """The torch Dataset the fitted network reads ``X`` (and ``y``) from.

        ``X`` is checked as in :meth:`predict` (same formats as in ``fit``;
        file paths are read and resized lazily, as the network sees them).
        The one public way to turn images into network input, for tools that
        run the network themselves (Grad-CAM, out-of-distribution scores);
        skorch's ``NeuralNet.get_dataset`` plays the same role.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images in the same format as in ``fit``.
        y : array-like of shape (n_samples,) or None, default=None
            Class labels (values of ``classes_``); None gives every item
            the label -1.

        Returns
        -------
        dataset : torch.utils.data.Dataset
            Item ``i`` is ``(image, label)``: a float32 tensor of shape
            ``input_shape_`` and the int64 index of the label in
            ``classes_`` (-1 without ``y``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the classifier is not fitted.
        ValueError
            If ``X`` does not match the fitted input, or ``y`` has labels
            not in ``classes_`` or a different length.
        """
        check_is_fitted(self)
        kind, X_checked = self._check_X(X, reset=False)
        y_enc = None
        if y is not None:
            y = self._check_y(len(X_checked), y)
            try:
                y_enc = self._label_encoder.transform(y).astype(np.int64)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"y has labels that {type(self).__name__} was not fitted on ({exc}); "
                    f"its classes_ are {self.classes_.tolist()}."
                ) from exc
        return self._make_dataset(kind, X_checked, y_enc)

    def build_module(self, input_shape, n_classes=2):
        """A new, untrained torch module of this classifier's network.

        The module ``fit`` trains (``module_``), built from this classifier's
        parameters (``module__`` keywords included) for images of
        ``input_shape``, without data or training: to inspect the
        architecture, count its parameters, or train it in a loop of your
        own. Its weights are drawn from torch's global RNG (seed it with
        ``torch.manual_seed``); ``fit`` draws them from ``random_state``
        without touching it. Pretrained backbones are loaded as in ``fit``.

        Parameters
        ----------
        input_shape : tuple of int
            (channels, height, width) of one image.
        n_classes : int, default=2
            Number of classes; two classes have one output (a logit), more
            one output per class.

        Returns
        -------
        module : torch.nn.Module
            Maps a (n, channels, height, width) float32 batch to logits of
            shape (n, 1) or (n, n_classes).

        Raises
        ------
        ValueError
            If a parameter is invalid, or ``n_classes < 2``.

        Examples
        --------
        >>> import torch
        >>> from skxray.models import CNNClassifier
        >>> module = CNNClassifier(filters=(4, 8), dense_units=16).build_module((1, 32, 32))
        >>> module(torch.zeros(5, 1, 32, 32)).shape
        torch.Size([5, 1])
        """
        self._check_params()
        if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes < 2:
            raise ValueError(f"{type(self).__name__}.build_module: n_classes must be an int >= 2; got {n_classes!r}.")
        return self._build_module(tuple(int(s) for s in input_shape), 1 if n_classes == 2 else int(n_classes))

    # ------------------------------------------------------------- training
    def _resolve_device(self):
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _use_validation(self, y_enc):
        frac = self.validation_fraction
        if not frac:
            return False
        counts = np.bincount(y_enc)
        n_valid = math.ceil(frac * len(y_enc))
        n_classes = len(counts)
        # Stratification needs two images per class and room for every class
        # on both sides; below that a validation score would be noise anyway.
        return counts.min() >= 2 and n_valid >= n_classes and len(y_enc) - n_valid >= n_classes

    def _validation_split(self, y_enc, seed, groups=None):
        """This fit's ``(train_idx, valid_idx)``, or None for no validation split.

        Without ``groups``: skorch's stratified split of ``validation_fraction``
        of the images (the same indices as ``ValidSplit``). With ``groups``:
        whole groups (e.g. patients), one fold of a shuffled
        ``StratifiedGroupKFold`` with ``round(1 / validation_fraction)`` folds,
        so that no group has images on both sides. Too few groups, or a fold
        that leaves a class out of either side, gives no split, with a warning.
        """
        if not self._use_validation(y_enc):
            return None
        n = len(y_enc)
        if groups is None:
            # skorch's own split, in its order: fits without groups train as before.
            train, valid = ValidSplit(self.validation_fraction, stratified=True, random_state=seed)(np.arange(n), y_enc)
            return np.asarray(train.indices, dtype=np.int64), np.asarray(valid.indices, dtype=np.int64)
        n_folds = max(2, round(1 / self.validation_fraction))
        n_groups = len(np.unique(groups))
        valid = None
        if n_groups >= n_folds:
            with warnings.catch_warnings():
                # "The least populated class has only k members": the fold is still usable.
                warnings.simplefilter("ignore", UserWarning)
                cv = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
                _, valid = next(cv.split(np.zeros(n), y_enc, groups))
        n_classes = len(self.classes_)
        if valid is None or min(len(np.unique(y_enc[valid])), len(np.unique(np.delete(y_enc, valid)))) < n_classes:
            warnings.warn(
                f"{type(self).__name__}.fit: the {n_groups} groups in groups are too few to hold "
                f"out about {self.validation_fraction:g} of them with every class on both sides; "
                "training without a validation split (no early stopping on validation loss, "
                "no labelled reference for shift_test).",
                UserWarning,
                stacklevel=4,
            )
            return None
        valid = np.sort(valid.astype(np.int64))
        return np.setdiff1d(np.arange(n), valid), valid

    def _criterion(self, y_enc):
        n_classes = len(self.classes_)
        weights = None
        if self.class_weight is not None:
            weights = compute_class_weight(
                self.class_weight, classes=self.classes_, y=self.classes_[y_enc]
            )
        smoothing = float(self.label_smoothing)
        if n_classes == 2:
            pos_weight = None if weights is None else torch.tensor([weights[1] / weights[0]])
            return _BinaryLogitLoss, {"pos_weight": pos_weight, "label_smoothing": smoothing}
        weight = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        return _CrossEntropyLoss, {"weight": weight, "label_smoothing": smoothing}

    def _callbacks(self, n_train, validate, writer=True, processes=1):
        """skxray's default callbacks of this fit, as ``(name, callback)`` pairs.

        Named as skorch names its own (``epoch_timer``, ``train_loss``,
        ``valid_loss``, ``print_log``), so that ``callbacks__<name>__<param>``
        changes one and ``callbacks__<name>=None`` switches it off (skorch
        applies both). Those the settings leave out are not listed.
        """
        monitor = "valid_loss" if validate else "train_loss"
        valid_acc = EpochScoring(
            _binary_accuracy_or_multiclass, lower_is_better=False, on_train=False, name="valid_acc"
        )
        early_stopping = EarlyStopping(monitor=monitor, patience=self.n_iter_no_change, load_best=True)
        defaults = [
            ("lr_record", _RecordLearningRate()),
            ("valid_acc", valid_acc if validate else None),
            ("lr_scheduler", self._lr_scheduler(monitor, n_train, processes)),
            ("early_stopping", early_stopping if self.early_stopping else None),
            ("checkpoint", self._checkpoint_callback(monitor, writer)),
            # One progress bar, from the main process.
            ("progress_bar", ProgressBar() if self.verbose and writer else None),
        ]
        return [(name, callback) for name, callback in defaults if callback is not None]

    def _lr_scheduler(self, monitor, n_train, processes):
        """The ``LRScheduler`` of ``lr_schedule``, or None for a constant rate."""
        if self.lr_schedule == "plateau":
            return LRScheduler(
                torch.optim.lr_scheduler.ReduceLROnPlateau,
                monitor=monitor,
                factor=0.5,
                patience=max(1, self.n_iter_no_change // 2),
            )
        if self.lr_schedule == "cosine":
            return LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=self.max_epochs)
        if self.lr_schedule == "onecycle":
            # Each of the processes of a data-parallel fit takes every
            # processes-th batch (accelerate pads the last round).
            batches = max(1, math.ceil(n_train / self.batch_size))
            steps = self.max_epochs * math.ceil(batches / processes)
            return LRScheduler(
                torch.optim.lr_scheduler.OneCycleLR, max_lr=self.lr, total_steps=steps, step_every="batch"
            )
        return None

    def _checkpoint_callback(self, monitor, writer):
        """The callback writing the best weights under ``checkpoint_path_``, or None."""
        if self.checkpoint_dir is None:
            return None
        return AtomicCheckpoint(
            monitor=f"{monitor}_best",
            dirname=self.checkpoint_path_,
            f_params="params.pt",
            f_optimizer="optimizer.pt",
            f_criterion=None,
            f_history="history.json",
            writer=writer,
        )

    def _training_state_callback(self, generator, checkpoints, writer, precision=None):
        """The callback writing ``last.pt`` (last, so it sees every other state).

        ``checkpoints`` (a :class:`~skxray.models._fit_context.Checkpoints`)
        gives its folder, the fingerprint it records and the state a resumed
        fit restores; ``precision`` (JSON text) the precision it trains in,
        which a resumed ``amp="auto"`` fit takes instead of measuring again.
        """
        return TrainingState(
            str(Path(checkpoints.path) / STATE_FILE),
            checkpoints.fingerprint,
            self.max_epochs,
            generator,
            restore=checkpoints.state,
            writer=writer,
            precision=precision,
        )

    def _make_net(self, module, context, *, accelerated=True):
        """The skorch net of this fit, around ``module``.

        ``context`` (a :class:`~skxray.models._fit_context.FitContext`) holds
        what ``fit`` resolved: its run settings (device, DataLoader settings,
        autocast, accelerator, whether this process writes checkpoints), the
        checkpoints, the seed, the validation split and the loss. With an
        accelerator, ``accelerated=False`` gives the single-process net that
        the fitted estimator predicts with.
        """
        run, validate = context.run, context.validate
        accelerator = run.accelerator if accelerated else None
        optimizer_kwargs = {"weight_decay": self.weight_decay}
        if self.optimizer == "sgd":
            optimizer_kwargs.update(momentum=0.9, nesterov=True)
        optimizer_kwargs = self._with_routed("optimizer", _OPTIMIZERS[self.optimizer], **optimizer_kwargs)
        if self.optimizer == "sgd" and not optimizer_kwargs["momentum"] and "nesterov" not in self._routed("optimizer"):
            # optimizer__momentum=0 asks for plain SGD (torch refuses Nesterov without momentum).
            optimizer_kwargs["nesterov"] = False
        # Shuffling draws from its own seeded generator, so the order of the
        # batches does not depend on how much randomness anything else used.
        generator = torch.Generator().manual_seed(context.seed)
        iterator_train = {"shuffle": True, "generator": generator, **run.loader}
        if self.augment is not None:
            iterator_train["collate_fn"] = _AugmentingCollate(self.augment)
        iterator_valid = dict(run.loader)
        iterators = {}
        if accelerator is None:
            # Arrays in memory: whole batches by slicing, on the device when
            # they fit (BatchIterator); files: a DataLoader, as before.
            # accelerate's prepare needs DataLoaders.
            iterators = {"iterator_train": BatchIterator, "iterator_valid": BatchIterator}
            iterator_train["device"] = iterator_valid["device"] = run.device
        iterator_train.update(self._routed("iterator_train"))
        iterator_valid.update(self._routed("iterator_valid"))
        processes = 1 if accelerator is None else accelerator.num_processes
        callbacks = self._callbacks(context.n_train, validate, writer=run.writer, processes=processes)
        callbacks += list(self.callbacks or [])
        if context.checkpoints.path is not None:
            state = self._training_state_callback(
                generator, context.checkpoints, run.writer, precision=precision_record(run)
            )
            callbacks.append(("training_state", state))
        net_kwargs = dict(
            module=module,
            criterion=context.criterion,
            optimizer=_OPTIMIZERS[self.optimizer],
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=_FixedValidSplit(*context.split) if validate else None,
            callbacks=callbacks,
            verbose=self.verbose,
            **iterators,
            **{f"optimizer__{k}": v for k, v in optimizer_kwargs.items()},
            **{f"iterator_train__{k}": v for k, v in iterator_train.items()},
            **private_generator_iterator(),
            **{f"iterator_valid__{k}": v for k, v in iterator_valid.items()},
            # callbacks__<name>=None or callbacks__<name>__<param>: skorch applies them.
            **{f"callbacks__{k}": v for k, v in self._routed("callbacks").items()},
            mixup=float(self.mixup),
            # skorch compiles module_ (the criterion is no torch module) when asked.
            compile=bool(self.compile),
            **{f"compile__{k}": v for k, v in self._with_routed("compile", torch.compile).items()},
        )
        if accelerator is None:
            return TrainingNet(device=run.device, autocast_dtype=run.autocast, **net_kwargs)
        if validate:
            # Each process scores its share of the validation batches, so the
            # accuracy is computed from the gathered predictions, not from
            # per-process caches (this is the spelling skorch 1.4 accepts).
            net_kwargs["callbacks__valid_acc__use_caching"] = False
        # The wrapped module is kept until the end of fit: early stopping's
        # best weights are captured from it, with DistributedDataParallel's keys.
        # skorch's PrintLog ignores verbose=0 with any sink other than print.
        net_kwargs["callbacks__print_log__sink"] = accelerator.print if self.verbose else print
        return AcceleratedNet(accelerator=accelerator, unwrap_after_train=False, **net_kwargs)

    def _fit_net(self, module, dataset, y_enc, context, sample_weight=None):
        """Train ``module`` on ``dataset``; return a :class:`~skxray.models._fit_context.TrainedNet`.

        ``context`` is this fit's :class:`~skxray.models._fit_context.FitContext`:
        ``self._make_net(any_module, context)`` builds a skorch net around any
        module with this estimator's settings. ``sample_weight`` is a float32
        tensor or None. Subclasses override this hook to change what trains
        (the frozen ResNet-50 trains its head on cached features); they train
        with :meth:`_train_net` on ``with_sample_weight(their dataset,
        sample_weight)`` so that resumption and sample weights work, and
        return the training images' embeddings with the net when they have
        them at hand, which spares the detector a pass over the images.
        """
        net = self._make_net(module, context)
        return TrainedNet(self._train_net(net, with_sample_weight(dataset, sample_weight), y_enc, context))

    def _train_net(self, net, X, y, context):
        """``net.fit(X, y)``, or its continuation from the checkpoint ``context`` resumes."""
        state = context.checkpoints.state
        if state is None:
            return net.fit(X, y)
        net.initialize()
        start_from_state(net, state)
        done = int(state["epoch"])
        # With nothing left to train, zero epochs still run the end-of-training
        # callbacks (early stopping restores the best weights).
        remaining = 0 if state["finished"] else max(0, self.max_epochs - done)
        if self.verbose:
            print(
                f"Resuming from {context.checkpoints.resumed_from} after epoch {done}: "
                f"{remaining} epoch(s) to go."
            )
        net.partial_fit(X, y, epochs=remaining)
        return net

    def _run_settings(self, kind):
        """Where and how this fit trains: a :class:`~skxray.models._fit_context.RunSettings`."""
        name = type(self).__name__
        accelerator = resolve_accelerator(self.accelerator, self.device, self.amp, name)
        if accelerator is None:
            device = self._resolve_device()
            autocast = resolve_autocast(self.amp, device, name)
            amp = autocast is not None
            writer = True
        else:
            device = str(accelerator.device)
            # The accelerator runs the training under autocast; the fitted
            # estimator predicts in the precision it trained in.
            bf16 = accelerator.mixed_precision == "bf16" and accelerator.device.type == "cuda"
            autocast = torch.bfloat16 if bf16 else None
            amp = accelerator.mixed_precision != "no"
            writer = accelerator.is_main_process
        pin = torch.device(device).type == "cuda"
        loader = loader_kwargs(self.num_workers if kind == "paths" else 0, pin)
        return RunSettings(
            device=device, loader=loader, autocast=autocast, accelerator=accelerator, writer=writer, amp=amp
        )

    def _checkpoints(self, resume, X, y_enc, seed, accelerator, sample_weight=None, groups=None):
        """This fit's :class:`~skxray.models._fit_context.Checkpoints`: folder, fingerprint, state.

        With several processes the main one chooses the folder (a new one or
        the one to resume) and tells the others, so that they all agree; the
        folder must then be on a file system every process sees.
        """
        if self.checkpoint_dir is None:
            return Checkpoints()
        n_processes = 1 if accelerator is None else accelerator.num_processes
        fingerprint = training_fingerprint(
            self, X, y_enc, seed, num_processes=n_processes, sample_weight=sample_weight, groups=groups
        )

        loaded = {}

        def choose():
            found = find_resume_state(self, resume, fingerprint) if resume is not False else None
            if found is not None:
                loaded["state"] = found[1]
                return str(found[0]), True
            stamp = time.strftime("%Y%m%d-%H%M%S")
            return str(Path(self.checkpoint_dir) / f"{type(self).__name__}-{stamp}-{uuid.uuid4().hex[:8]}"), False

        path, resumed = share_from_main(accelerator, choose)
        if not resumed:
            return Checkpoints(path=path, fingerprint=fingerprint)
        resumed_from = str(Path(path) / STATE_FILE)
        # The process that chose the checkpoint has read it already.
        state = loaded.get("state")
        state = read_state(resumed_from, mmap=False) if state is None else state
        return Checkpoints(path=path, fingerprint=fingerprint, resumed_from=resumed_from, state=state)

    def _fit_context(self, kind, X, y_enc, resume, sample_weight, groups=None):
        """Resolve what this fit's steps read (a :class:`~skxray.models._fit_context.FitContext`).

        Sets the fitted attributes that say it: ``device_``, ``amp_``,
        ``checkpoint_path_`` and ``resumed_from_``.
        """
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        run = self._run_settings(kind)
        self.device_ = run.device
        split = self._validation_split(y_enc, seed, groups)
        n_train = len(y_enc) if split is None else len(split[0])
        checkpoints = self._checkpoints(resume, X, y_enc, seed, run.accelerator, sample_weight, groups)
        self.checkpoint_path_, self.resumed_from_ = checkpoints.path, checkpoints.resumed_from
        criterion, criterion_kwargs = self._criterion(y_enc)
        criterion_kwargs = self._with_routed("criterion", criterion, **criterion_kwargs)
        return FitContext(
            run=run,
            checkpoints=checkpoints,
            seed=seed,
            split=split,
            groups=groups,
            n_train=n_train,
            # skorch takes no criterion__ arguments for a criterion that is
            # not an nn.Module; it calls this factory instead.
            criterion=functools.partial(criterion, **criterion_kwargs),
        )

    def fit(self, X, y, sample_weight=None, *, groups=None, resume=False):
        """Train the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Training images (any numeric dtype, cast to float32; values are
            used as given, so scale them consistently, e.g. to [0, 1]) or
            paths of image files, read and resized to ``image_size`` while
            training. A 2-D array (n_samples, n_features) is taken as
            one-row images.
        y : array-like of shape (n_samples,)
            Class labels: strings such as ``"Covid-19"``, ints or bools.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Weight of each image in the training (and validation) loss:
            each image's loss is multiplied by its weight and the batch's
            loss divided by the batch's total weight (times its class
            weights, with ``class_weight``), so a weight of 2 counts an image
            as twice in its batch and a weight of 0 leaves it out of the
            loss. None weighs every image 1 and trains exactly as before.
            With scikit-learn's metadata routing on, request it with
            ``set_fit_request(sample_weight=True)``; see the user guide's
            page on training.
        groups : array-like of shape (n_samples,) or None, default=None
            The group of each image, e.g. its patient. The validation split
            then holds out whole groups (about ``validation_fraction`` of
            them, stratified by class), so that no patient has images on
            both sides. The validation images calibrate the
            out-of-distribution threshold and are the labelled reference of
            :func:`skxray.ood.shift_test`: when a patient's other images are
            in the training set, they look more familiar than a new
            patient's, the threshold comes out too low and the case-mix
            estimate too sure of the classifier. Pass it whenever patients
            have several images. None splits by image, as before. With
            scikit-learn's metadata routing on, request it with
            ``set_fit_request(groups=True)`` (``GridSearchCV`` and
            ``cross_val_score`` then pass their own ``groups`` on).
        resume : bool, str or path-like, default=False
            Continue an interrupted fit from its last checkpoint (needs
            ``checkpoint_dir``). ``True`` takes the newest ``last.pt`` under
            ``checkpoint_dir`` written by a fit with the same parameters and
            data, and starts afresh when there is none, so a script can always
            pass ``resume=True``; a path names such a checkpoint (file or
            folder), and a mismatch raises an error saying what differs.
            Weights, optimizer, learning-rate schedule, early-stopping state,
            history and random generators are restored, so the result equals
            an uninterrupted fit with the same ``random_state``.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        self._check_params()
        if resume is not False and self.checkpoint_dir is None:
            raise ValueError(
                f"{type(self).__name__}: resume={resume!r} needs checkpoint_dir, the folder "
                "the interrupted fit wrote its checkpoints to."
            )
        kind, X_checked = self._check_X(X, reset=True)
        y = self._check_y(len(X_checked), y)
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; "
                f"got 1 class: {self.classes_[0]!r}."
            )
        y_enc = self._label_encoder.transform(y).astype(np.int64)
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, len(y_enc), type(self).__name__)
            sample_weight = torch.as_tensor(weights, dtype=torch.float32)

        if groups is not None:
            groups = check_groups(groups, len(y_enc), type(self).__name__)
        context = self._fit_context(kind, X_checked, y_enc, resume, sample_weight, groups)
        n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        device = context.run.device
        cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
        # A forked RNG makes the fit reproducible from random_state (init,
        # dropout, shuffling, augmentation) without touching the user's
        # global torch RNG state.
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(context.seed)
            module = self._build_module(tuple(self.input_shape_), n_outputs)
            context = self._settle_precision(context, module)
            dataset = self._make_dataset(kind, X_checked, y_enc)
            trained = self._fit_net(module, dataset, y_enc, context, sample_weight=sample_weight)
            self.net_ = trained.net
            if context.run.accelerator is not None:
                self.net_ = _single_process_net(self.net_, functools.partial(self._make_net, context=context))
            self.ood_ = self._fit_ood(dataset, y_enc, context, trained.train_embeddings)
        _drop_cached_predictions(self.net_)
        _keep_one_copy_of_module(self.net_)
        self.history_ = _history_records(self.net_.history)
        self.n_iter_ = len(self.history_)
        return self

    def _settle_precision(self, context, module):
        """``context`` with ``amp="auto"`` decided for ``module``; sets ``amp_`` and ``amp_probe_``.

        The probe (:func:`skxray.models._precision.measure_precision`) times
        training steps of a copy of ``module``, or forward passes only where
        :meth:`_precision_probe_mode` says "predict".
        """
        run = settle_precision(
            context.run, module, input_shape=tuple(self.input_shape_),
            batch_size=min(self.batch_size, context.n_train), mode=self._precision_probe_mode(),
            resumed_state=context.checkpoints.state,
        )
        self.amp_, self.amp_probe_ = run.amp, run.amp_probe
        return dataclasses.replace(context, run=run)

    def _precision_probe_mode(self):
        """What ``amp="auto"`` times: "train" (forward and backward) or "predict" (forward only)."""
        return "train"

    def _fit_ood(self, dataset, y_enc, context, train_embeddings=None):
        """The out-of-distribution detector ``ood_`` (None when ``ood=False``).

        Its embedding threshold is calibrated on the validation images, which
        the network never trained on (the same indices as skorch's split).
        ``train_embeddings`` are those :meth:`_fit_net` returned, if any.
        """
        if not self.ood:
            return None
        from skxray.ood import _fit_for_classifier

        return _fit_for_classifier(
            self, dataset, y_enc, context.valid_idx, check_random_state(context.seed), train_embeddings,
            groups=context.groups,
        )

    # ------------------------------------------------------------- prediction
    def _forward_logits(self, dataset):
        """Logits of a dataset's images as a float64 ndarray of shape (n, 1) or (n, k)."""
        logits = self.net_.forward(dataset, training=False, device="cpu")
        return logits.detach().numpy().astype(np.float64)

    def _proba_from_logits(self, logits):
        if len(self.classes_) == 2:
            p1 = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
            return np.column_stack([1.0 - p1, p1])
        proba = np.exp(logits - logits.max(axis=1, keepdims=True))
        return proba / proba.sum(axis=1, keepdims=True)

    def _uses_tta(self):
        # A mirror of a row of tabular features would be meaningless.
        return bool(getattr(self, "tta", False)) and self._input_kind == "images"

    def _tta_proba(self, dataset):
        """Mean float64 probabilities of the images and their mirror images."""
        proba = self._proba_from_logits(self._forward_logits(dataset))
        mirrored = self._proba_from_logits(self._forward_logits(MirroredDataset(dataset)))
        return (proba + mirrored) / 2.0

    def decision_function(self, X):
        """Raw scores (logits) of the network for the images in ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images in the same format as in ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the logit of ``classes_[1]`` (positive means
            ``classes_[1]``); otherwise one logit per class. With
            ``tta=True``, the log-odds (two classes) or log-probabilities of
            the averaged probabilities of :meth:`predict_proba`.
        """
        dataset = self.get_dataset(X)
        if self._uses_tta():
            # Scores of the averaged probabilities, so that predict (the
            # argmax of predict_proba) and these scores agree: the log-odds
            # for two classes, the log-probabilities otherwise.
            proba = np.clip(self._tta_proba(dataset), np.finfo(np.float64).tiny, None)
            log_proba = np.log(proba)
            logits = log_proba[:, 1:] - log_proba[:, :1] if len(self.classes_) == 2 else log_proba
        else:
            logits = self._forward_logits(dataset)
        # float32 like the network: the last digits change with the batch
        # composition (BLAS blocking), so more precision would be false.
        logits = logits.astype(np.float32)
        return logits.reshape(-1) if len(self.classes_) == 2 else logits

    def embed(self, X):
        """Penultimate-layer features of the images in ``X``.

        The representation the output layer reads: the dense layer of the
        CNN, the last hidden layer of the FNN, the head's hidden layer of the
        ResNet-50. Used for out-of-distribution detection.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images as given to ``fit`` (same shape, channels and scaling).

        Returns
        -------
        features : ndarray of shape (n_samples, n_features)
            Float32 features.
        """
        dataset = self.get_dataset(X)
        module = self.net_.module_
        module.eval()
        chunks = []
        with torch.no_grad():
            for x, _ in self.net_.get_iterator(dataset, training=False):
                chunks.append(module.embed(x.to(self.net_.device)).cpu())
        return torch.cat(chunks).numpy()

    def predict_proba(self, X):
        """Class probabilities of the images in ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images in the same format (shape, channels, scaling) as in ``fit``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities (float32); columns follow ``classes_`` and rows
            sum to 1.
        """
        # float32 for the same reason as decision_function.
        return self._dataset_proba(self.get_dataset(X)).astype(np.float32)

    def _dataset_proba(self, dataset):
        """Float64 probabilities of a dataset's images, as :meth:`predict_proba` gives them."""
        if self._uses_tta():
            return self._tta_proba(dataset)
        return self._proba_from_logits(self._forward_logits(dataset))

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities of the images in ``X``.

        Computed from the logits (a log-softmax, or log-sigmoids for two
        classes), so that it stays finite where :meth:`predict_proba`
        rounds to 0; with ``tta=True``, the log of the averaged
        probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images as for :meth:`predict_proba`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities (float32); columns follow ``classes_``.
        """
        dataset = self.get_dataset(X)
        if self._uses_tta():
            with np.errstate(divide="ignore"):
                log_proba = np.log(self._tta_proba(dataset))
        else:
            log_proba = _log_proba_from_logits(self._forward_logits(dataset), len(self.classes_))
        # float32 for the same reason as decision_function.
        return log_proba.astype(np.float32)

    def predict(self, X):
        """Predicted class labels of the images in ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images as for :meth:`predict_proba`, which this calls.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels taken from ``classes_``.
        """
        proba = self.predict_proba(X)  # checks fitted state before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    def ood_score(self, X):
        """Out-of-distribution score of the images in ``X`` (see ``ood_``).

        The Mahalanobis distance to the training images in units of the
        calibrated threshold: above ``ood_.threshold_`` (1.0) an image is
        out of distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images in the format of ``fit``; each gets one score.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Float64 scores, higher = less like the training images.

        Raises
        ------
        ValueError
            When the classifier has no detector (``ood=False``, or fitted on
            fewer than 10 images).
        """
        check_is_fitted(self)
        if self.ood_ is None:
            raise ValueError(
                f"This {type(self).__name__} has no out-of-distribution detector (ood_ is None): "
                "it was fitted with ood=False or on fewer than 10 images. Fit it with ood=True, "
                "or fit a skxray.ood.OODDetector(estimator=...) on held-out images."
            )
        return self.ood_.ood_score(X)

    def predict_with_abstention(self, X, *, return_scores=False, return_reasons=False):
        """Predicted labels, or ``"uncertain"`` where the model should not answer.

        An image gets ``"uncertain"`` when ``ood_`` flags it as out of
        distribution or when its top class probability is below
        ``min_confidence``. An answered image is not guaranteed to be right,
        and ``"uncertain"`` is not a diagnosis.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
            Images in the same format as in ``fit``.
        return_scores : bool, default=False
            Also return the out-of-distribution scores (NaN without ``ood_``).
        return_reasons : bool, default=False
            Also return why each image is ``"uncertain"``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,), dtype object
            Labels from ``classes_``, or the string ``"uncertain"``.
        scores : ndarray of shape (n_samples,)
            Only with ``return_scores``: :meth:`ood_score` of each image; an
            image is flagged when its score exceeds ``ood_.threshold_``.
        reasons : ndarray of shape (n_samples,), dtype object
            Only with ``return_reasons``: ``""`` for an answered image;
            otherwise what made it ``"uncertain"``, comma-separated:
            ``"distance"`` (its features are beyond the detector's threshold:
            unlike the training images), ``"lung check"`` (the lung segmenter
            does not find the lungs of an upright frontal chest X-ray; see
            :meth:`skxray.ood.OODDetector.score_parts`) and ``"low confidence"``
            (top probability below ``min_confidence``). One pass over the
            images, whatever is returned.
        """
        proba = self.predict_proba(X)
        y_pred = np.empty(len(proba), dtype=object)
        y_pred[:] = list(self.classes_[np.argmax(proba, axis=1)])
        unsure = proba.max(axis=1) < self.min_confidence
        scores = np.full(len(proba), np.nan)
        flagged_by = np.full(len(proba), "", dtype=object)
        if self.ood_ is not None:
            parts = self.ood_.score_parts(X)
            scores, flagged_by = parts.score, parts.flagged_by
        uncertain = unsure | (flagged_by != "")
        y_pred[uncertain] = "uncertain"
        out = [y_pred]
        if return_scores:
            out.append(scores)
        if return_reasons:
            reasons = np.array(
                [", ".join(p for p in (f, "low confidence" if u else "") if p) for f, u in zip(flagged_by, unsure)],
                dtype=object,
            )
            out.append(reasons)
        return tuple(out) if len(out) > 1 else y_pred

    def score(self, X, y, sample_weight=None):
        """Accuracy of ``predict(X)`` against ``y``.

        Parameters
        ----------
        X : array-like of images or file paths
            Images in the same format as in ``fit``.
        y : array-like of shape (n_samples,)
            True labels; each must be one of ``classes_``.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            Mean accuracy.

        Raises
        ------
        ValueError
            If ``y`` holds labels never seen in ``fit``: the model cannot
            predict them, so an accuracy would silently count them as errors.
        """
        check_is_fitted(self)
        unseen = sorted(set(np.asarray(y, dtype=object).tolist()) - set(self.classes_.tolist()), key=str)
        if unseen:
            raise ValueError(
                f"y holds labels never seen in fit: {unseen}; {type(self).__name__} was "
                f"trained on {self.classes_.tolist()}."
            )
        return super().score(X, y, sample_weight=sample_weight)

    @property
    def module_(self):
        """The trained ``torch.nn.Module`` (on the training device), uncompiled with ``compile=True``."""
        check_is_fitted(self)
        return unwrapped_module(self.net_)

    # ------------------------------------------------------------- persistence
    def save(self, path):
        """Save the fitted model to a folder without pickle.

        Writes ``config.json`` (class, parameters, classes, input shape,
        history) and ``model.safetensors`` (weights and buffers). Load it
        with :func:`skxray.load`, which never unpickles anything. Both files
        are written atomically under a lock on the folder: a full disk
        leaves the previous model intact, and a second process saving into
        the same folder at the same time gets an error. Folders of this
        machine (``checkpoint_dir``, ``feature_cache_dir``) are saved as None.
        In a data-parallel run (several processes) only the main process
        writes; the others return the path at once.

        Parameters
        ----------
        path : str or path-like
            Folder to create (or overwrite files in).

        Returns
        -------
        path : pathlib.Path
            The folder written, holding both files.

        Raises
        ------
        OSError
            If a file cannot be written; the message names it and says why.
        skxray._atomic.FolderLockedError
            If another process is saving into ``path`` at the same time.
        """
        from skxray.models._persistence import save_model

        if is_secondary_process():
            # Every process of a data-parallel run holds the same model; the
            # main one writes it (no barrier: a script may call save there only).
            return Path(path)
        return save_model(self, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        # Images as (n, height, width) or (n, channels, height, width) arrays,
        # file paths (strings), and 2-D (tabular) rows taken as one-row images.
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


def _raise_for_1d(arr):
    """A 1-D X is either paths with a bad item or numbers: say which."""
    if arr.dtype.kind == "O" and any(isinstance(v, (str, os.PathLike)) for v in arr):
        bad = [(i, v) for i, v in enumerate(arr) if not isinstance(v, (str, os.PathLike))]
        index, value = bad[0]
        raise ValueError(
            f"X looks like file paths, but item {index} is {value!r} "
            f"({len(bad)} item(s) are not paths)."
        )
    raise ValueError(
        f"X is a 1-D array of numbers (shape {arr.shape}), not images or file paths. "
        "Reshape your data: one image needs shape (1, height, width); tabular rows "
        "need (n_samples, n_features); file paths must be strings."
    )


def _check_label_types(y):
    """Refuse labels that mix strings with other types (e.g. "Covid-19" and 1).

    numpy would turn them all into strings, so predict would return "1" where
    the user wrote 1.
    """
    values = y.tolist() if isinstance(y, np.ndarray) and y.dtype.kind == "O" else y
    if isinstance(values, (list, tuple)) and values:
        flat = [v for row in values for v in (row if isinstance(row, (list, tuple)) else [row])]
        kinds = {isinstance(v, str) for v in flat}
        if len(kinds) > 1:
            others = sorted({type(v).__name__ for v in flat if not isinstance(v, str)})
            raise ValueError(
                f"y mixes label types (str and {', '.join(others)}); use one type for all labels."
            )


def _single_process_net(net, make_net):
    """A net trained through accelerate, as a plain net of this process.

    The fitted estimator then predicts, embeds and pickles exactly as one
    trained in a single process: every process holds the same weights and
    predicts all the images it is given, without collective calls.
    """
    single = make_net(unwrapped_module(net), accelerated=False).initialize()
    single.history = History(net.history.to_list())
    return single


def _drop_cached_predictions(net):
    """Empty the scoring callbacks' caches of the last epoch's outputs.

    They hold tensors on the training device outside the attributes skorch
    maps to the CPU when unpickling, so a model trained on CUDA would not
    unpickle on a machine without it; they also waste memory.
    """
    for _, callback in getattr(net, "callbacks_", []):
        if hasattr(callback, "y_preds_"):
            callback.y_preds_ = []
            callback.y_trues_ = []


def _keep_one_copy_of_module(net):
    """Replace the net's ``module`` parameter (an instance) by its class.

    skorch keeps the instance passed as ``module`` besides the trained
    ``module_``; only ``module_`` is mapped to the CPU when a CUDA-trained net
    is unpickled, so the instance would make such a model unloadable without a
    GPU. The class keeps the parameter meaningful without a second reference.
    ``__dict__`` is written directly because skorch forbids setting torch
    components outside ``initialize``; the net is never re-initialised.
    """
    if isinstance(net.__dict__.get("module"), nn.Module):
        net.__dict__["module"] = type(net.__dict__["module"])


def _history_records(history):
    """skorch's history as plain per-epoch dicts (JSON-serialisable)."""
    keys = ("epoch", "train_loss", "valid_loss", "valid_acc", "lr", "dur")
    records = []
    for row in history:
        record = {}
        for key in keys:
            value = row.get(key, None)
            record[key] = None if value is None else float(value) if key != "epoch" else int(value)
        for key, value in row.items():
            if key.endswith("_best") and key[: -len("_best")] in ("train_loss", "valid_loss"):
                record[key] = bool(value)
        records.append(record)
    return records
