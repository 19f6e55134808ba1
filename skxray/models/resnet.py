"""ResNet-50 pretrained on ImageNet, frozen, with a new two-layer head."""

import os
from numbers import Integral
from pathlib import Path

import torch
import torchvision
from torch import nn

from skxray._data import BatchIterator, TensorImageDataset, with_sample_weight
from skxray._param_validation import Interval, StrOptions
from skxray.models._base import (
    SHARED_PARAM_DEFAULTS,
    BaseImageClassifier,
    common_attributes_doc,
    common_parameters_doc,
    keyword_only_init,
)
from skxray.models._feature_store import FeatureStore
from skxray.models._fit_context import TrainedNet

__all__ = ["ResNet50Classifier", "PretrainedWeightsError", "load_resnet50_state_dict"]

_TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_N_FEATURES = 2048


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained (typically: no internet)."""


def _try_weights(requested, *, fallback_on=(PretrainedWeightsError,)):
    """Check that ``requested`` weights load; fall back to random initialisation if not.

    Shared by the command line and ``benchmarks/accuracy.py``, which word
    their notes differently (private to skxray, but keeps its signature).

    Returns
    -------
    weights : str, path-like or None
        ``requested``, or None when it is None/"none" or could not be loaded.
    error : Exception or None
        Why the weights could not be loaded (one of ``fallback_on``); None
        when they loaded or were not requested.
    """
    if requested is None or str(requested).lower() == "none":
        return None, None
    try:
        load_resnet50_state_dict(requested)
    except fallback_on as exc:
        return None, exc
    return requested, None


def load_resnet50_state_dict(weights):
    """Return the backbone state dict named by ``weights``.

    Parameters
    ----------
    weights : {"IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT"} or path-like
        A torchvision weight name (downloaded once into
        ``$TORCH_HOME/hub/checkpoints``, read from there afterwards), or a
        local ``.safetensors`` file or ``.pth``/``.pt`` state dict (read with
        ``weights_only=True``, so a pickle payload is refused).

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        ResNet-50 weights without the ``fc`` layer.

    Raises
    ------
    PretrainedWeightsError
        When torchvision cannot download the weights; the message says how to
        supply them offline.
    FileNotFoundError
        When ``weights`` is neither a known name nor an existing file.
    ValueError
        When the file cannot be read as a ResNet-50 state dict.
    """
    if isinstance(weights, str) and weights in _TORCHVISION_WEIGHTS:
        enum = torchvision.models.ResNet50_Weights[
            weights if weights != "DEFAULT" else "IMAGENET1K_V2"
        ]
        try:
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # URLError, OSError, hash mismatch: all mean "not available"
            filename = Path(enum.url).name
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise PretrainedWeightsError(
                f"Could not obtain the ImageNet weights {weights!r} for ResNet-50 ({exc}). "
                "This machine is probably offline. Either copy the file "
                f"{filename} (from {enum.url}, e.g. downloaded on a machine with internet) into "
                f"{cache} (set TORCH_HOME to change that folder), or pass a local file: "
                "ResNet50Classifier(weights='/path/to/resnet50.pth' or '.safetensors'). "
                "weights=None trains from random initialisation."
            ) from exc
    else:
        state = read_state_dict_file(
            weights,
            "ResNet-50",
            hint=(
                f"pass one of {_TORCHVISION_WEIGHTS}, None, or the path of a .safetensors/.pth state dict"
            ),
        )
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def read_state_dict_file(weights, what, *, hint):
    """The state dict in the local file ``weights``, read without unpickling.

    Shared by the backbones that take a weights file (ResNet-50 and the
    torchxrayvision backbones of :mod:`skxray.models.xrv`).

    Parameters
    ----------
    weights : path-like
        A ``.safetensors`` file, or a ``.pth``/``.pt`` state dict (read with
        ``torch.load(..., weights_only=True)``, so a pickle payload is refused).
    what : str
        The network, for messages ("ResNet-50").
    hint : str
        What to pass instead, for the message of a missing file.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The tensors; those of a file saved from a whole skxray module
        (keys ``backbone.<name>``) under their backbone names.

    Raises
    ------
    FileNotFoundError
        When ``weights`` is not an existing file.
    ValueError
        When the file cannot be read as a plain state dict.
    """
    path = Path(os.fspath(weights))
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file {str(path)!r} does not exist; {hint}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Cannot read {what} weights from {str(path)!r}: {exc}. Only plain state dicts "
            "(.safetensors, or .pth/.pt loadable with weights_only=True) are accepted."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__}).")
    # Accept our own module's keys ("backbone.<name>") as well as the backbone's.
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


class FrozenBackboneNet(nn.Module):
    """A pretrained backbone, frozen in eval mode, and a new two-layer head.

    The module of :class:`ResNet50Classifier` and of
    :class:`skxray.models.PretrainedCXRClassifier`; a subclass builds the
    backbone, implements ``_backbone_features`` (images in [0, 1] ->
    ``n_features`` per image) and names its ``gradcam_layer``.
    """

    def __init__(self, backbone, n_features, n_outputs, head_units, dropout, freeze):
        super().__init__()
        self.backbone = backbone
        self.freeze = freeze
        if freeze:
            for param in self.backbone.parameters():
                param.requires_grad_(False)
        # LayerNorm first: feature scales differ wildly between pretrained and
        # randomly initialised backbones, and it is per image, so cached and
        # uncached training stay identical.
        self.head = nn.Sequential(
            nn.LayerNorm(n_features),
            nn.Linear(n_features, head_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(head_units, n_outputs),
        )
        # Set by the classifier's feature_cache_dir; frozen backbones only.
        self.feature_store = None

    def train(self, mode=True):
        super().train(mode)
        # A frozen backbone stays in eval mode so its BatchNorm running
        # statistics never move, whatever skorch does to the whole module.
        if self.freeze:
            self.backbone.eval()
        return self

    def features(self, x):
        # Only without gradients: Grad-CAM needs the backbone to run (its
        # hooks and gradients), and training never reads the store.
        if self.feature_store is not None and self.freeze and not torch.is_grad_enabled():
            return self.feature_store(x, self._backbone_features)
        return self._backbone_features(x)

    def _backbone_features(self, x):
        raise NotImplementedError

    def embed(self, x):
        """Penultimate-layer activations: the head's hidden ReLU layer."""
        return self.head[:-2](self.features(x))

    def forward(self, x):
        return self.head(self.features(x))


class _ResNet50Net(FrozenBackboneNet):
    """Gray or RGB images in [0, 1] -> ImageNet-normalised RGB -> ResNet-50 -> head.

    ``channels_last`` keeps a frozen backbone's weights and activations in
    NHWC memory format (``module__channels_last``): its forward pass runs
    faster that way on the CPU (``benchmarks/speed.py``, section
    ``limit_resnet``). A backbone being fine-tuned (``freeze=False``) stays
    NCHW: its training was not measured. Only the memory layout changes,
    not the weights' values; a saved model is written contiguous either way.
    """

    def __init__(self, n_outputs, head_units, dropout, freeze, state_dict=None, channels_last=True):
        backbone = torchvision.models.resnet50(weights=None)
        backbone.fc = nn.Identity()
        if state_dict is not None:
            missing, unexpected = backbone.load_state_dict(state_dict, strict=False)
            if missing or unexpected:
                raise ValueError(
                    "The weights do not fit torchvision's ResNet-50: "
                    f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
                )
        super().__init__(backbone, _N_FEATURES, n_outputs, head_units, dropout, freeze)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.memory_format = torch.channels_last if channels_last and freeze else torch.contiguous_format
        self.backbone.to(memory_format=self.memory_format)

    def _backbone_features(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone(((x - self.mean) / self.std).contiguous(memory_format=self.memory_format))

    @property
    def gradcam_layer(self):
        """The last bottleneck block of the backbone."""
        return self.backbone.layer4[-1]


#: What ``net_.module_`` is, and the attribute of its own, in the docstrings
#: of the frozen-backbone classifiers.
FROZEN_BACKBONE_NET_DOC = "``net_.module_`` is the full model\n        (backbone and head)"
FEATURES_CACHED_DOC = """
    features_cached_ : bool
        Whether the head was trained on cached features.
"""
#: The head and caching parameters of the frozen-backbone classifiers.
FROZEN_HEAD_PARAMS_DOC = """    freeze : bool, default=True
        Keep every backbone weight and BatchNorm statistic unchanged (the
        backbone stays in eval mode); only the head is trained.

    head_units : int, default=256
        Units of the head's hidden layer.

    cache_features : {"auto", True, False}, default="auto"
        Compute backbone features once per ``fit`` and train the head on
        them. "auto" caches when ``freeze=True``, ``augment`` is None and
        ``mixup`` is 0; True requires all three.
"""


def frozen_backbone_doc(template, params):
    """The docstring of a frozen-backbone classifier, its shared pieces filled in.

    ``template`` holds ``{frozen_head}``, ``{common}`` and ``{attributes}``;
    ``params`` is the class's parameter dict (for the defaults).
    """
    return template.format(
        frozen_head=FROZEN_HEAD_PARAMS_DOC,
        common=common_parameters_doc(params),
        attributes=common_attributes_doc(
            net_module=FROZEN_BACKBONE_NET_DOC,
            dur_note="; feature caching time not included",
            extra=FEATURES_CACHED_DOC,
        ),
    )


#: The parameters of the frozen backbone, before the shared ones.
_BACKBONE_PARAMS = {
    "weights": "IMAGENET1K_V2",
    "freeze": True,
    "head_units": 256,
    "cache_features": "auto",
    "feature_cache_dir": None,
}
#: The parameters of ResNet50Classifier and their defaults, in signature order
#: (keyword_only_init builds its __init__; the docstring reads its defaults).
_RESNET_PARAMS = {
    **_BACKBONE_PARAMS,
    **SHARED_PARAM_DEFAULTS,
    "image_size": 224,  # the backbone's training resolution
}


class ResNet50Classifier(BaseImageClassifier):
    __doc__ = frozen_backbone_doc(
        """ResNet-50 with ImageNet weights, frozen, and a new two-layer head.

    Transfer learning for small X-ray sets: torchvision's ResNet-50 turns each
    image into 2,048 features and only a new head (layer normalisation, dense ReLU
    layer, dropout, output layer) is trained. Gray images are replicated to three channels and
    ImageNet-normalised inside the estimator, so pass images scaled to
    [0, 1], like :class:`skxray.preprocessing.ImageLoader` produces.

    With a frozen backbone and no augmentation or mixup the backbone features are
    computed once per ``fit`` and the head trains on them
    (``cache_features``), which is many times faster than running the
    backbone every epoch.

    Parameters
    ----------
    weights : {{"IMAGENET1K_V2", "IMAGENET1K_V1", "DEFAULT"}}, path-like or None, \
default="IMAGENET1K_V2"
        Backbone weights: a torchvision name (downloaded once into
        ``$TORCH_HOME/hub/checkpoints``), a local ``.safetensors`` or
        ``.pth`` state dict (read with ``weights_only=True``), or None for a
        random initialisation. Offline, a torchvision name raises
        :class:`PretrainedWeightsError` explaining how to supply the file.

{frozen_head}
    feature_cache_dir : str, path-like or None, default=None
        Folder where the frozen backbone's features are kept across fits,
        one file of 8 KB per image, keyed by the image's pixels, in a
        subfolder named after a hash of the weights. Cross-validation, a grid
        search over head parameters, scoring, masking audits and repeated
        runs then pass each distinct image through the backbone once instead
        of once per fit and per prediction. Needs ``freeze=True``; safe to
        share between processes (files are written atomically). Gradients
        (Grad-CAM) always run the backbone. None keeps nothing. A folder of
        this machine: :meth:`save` does not keep it, and
        ``skxray.load(folder, feature_cache_dir=...)`` takes it again.

{common}
{attributes}
    See Also
    --------
    CNNClassifier : Small network trained from scratch.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.models import ResNet50Classifier
    >>> X, y = make_phantom_cxr(40, image_size=32, random_state=0)
    >>> clf = ResNet50Classifier(weights=None, max_epochs=2, random_state=0).fit(X, y)
    >>> clf.features_cached_
    True
    """,
        _RESNET_PARAMS,
    )

    _rgb_input = True
    _machine_params = ("checkpoint_dir", "feature_cache_dir")

    def _restore_loaded_state(self):
        # Whether fit trained on cached features; a loaded model predicts on
        # images (through the feature store when feature_cache_dir is given).
        self.features_cached_ = False

    __init__ = keyword_only_init(_RESNET_PARAMS)

    _parameter_constraints: dict = {
        **BaseImageClassifier._parameter_constraints,
        # A torchvision name or a file, checked when the weights are loaded.
        "weights": "no_validation",
        "freeze": "no_validation",  # read as a truth value
        "head_units": [Interval(Integral, 1, None, closed="left")],
        "cache_features": [StrOptions({"auto"}), "boolean"],
        "feature_cache_dir": [None, str, os.PathLike],
    }

    def _check_params(self):
        super()._check_params()
        name = type(self).__name__
        if self.cache_features is True and (not self.freeze or self.augment is not None or self.mixup):
            raise ValueError(
                f"{name}: cache_features=True needs freeze=True, augment=None and mixup=0 "
                "(cached features cannot be augmented, mixed or fine-tuned)."
            )
        if self.feature_cache_dir is not None and not self.freeze:
            raise ValueError(
                f"{name}: feature_cache_dir needs freeze=True (the features of "
                "a backbone being fine-tuned change at every step)."
            )

    def _caches_features(self):
        if self.cache_features == "auto":
            return bool(self.freeze) and self.augment is None and not self.mixup
        return bool(self.cache_features)

    def _build_module(self, input_shape, n_outputs):
        channels = input_shape[0]
        if channels not in (1, 3):
            raise ValueError(
                f"ResNet50Classifier needs gray (1 channel) or RGB (3 channels) images; got {channels} channels."
            )
        state = None if self.weights is None else load_resnet50_state_dict(self.weights)
        module = _ResNet50Net(n_outputs, **self._head_kwargs(state))
        self._attach_feature_store(module)
        return module

    def _build_module_for_loading(self, input_shape, n_outputs):
        # The saved file holds every backbone weight: no need to fetch any.
        module = _ResNet50Net(n_outputs, **self._head_kwargs(None))
        self._attach_feature_store(module)
        return module

    def _head_kwargs(self, state_dict):
        return self._with_routed(
            "module",
            _ResNet50Net,
            head_units=self.head_units,
            dropout=self.dropout,
            freeze=bool(self.freeze),
            state_dict=state_dict,
        )

    def _attach_feature_store(self, module):
        # The weights are hashed at the first lookup, after they are loaded.
        if self.feature_cache_dir is not None and self.freeze:
            module.feature_store = FeatureStore(
                self.feature_cache_dir, module.backbone, prefix="resnet50"
            )

    def _precision_probe_mode(self):
        # With cached features the backbone only runs forward (extraction and
        # prediction); the head's training on features costs next to nothing.
        return "predict" if self._caches_features() else "train"

    def _fit_net(self, module, dataset, y_enc, context, sample_weight=None):
        self.features_cached_ = self._caches_features()
        if not self.features_cached_:
            return super()._fit_net(module, dataset, y_enc, context, sample_weight=sample_weight)
        # As in prediction: the estimator's iterator_valid, its settings (iterator_valid__...) included.
        loader = {**context.run.loader, **self._routed("iterator_valid")}
        batch_size = loader.pop("batch_size", self.batch_size)
        features = _extract_features(
            module, dataset, batch_size=batch_size, device=self.device_, loader=loader, autocast=context.run.autocast
        )
        head_net = self._make_net(module.head, context)
        cached = with_sample_weight(TensorImageDataset(features, dataset.y), sample_weight)
        self._train_net(head_net, cached, y_enc, context)
        # The returned net holds the full model (the trained head is shared),
        # so predict, Grad-CAM and saving work on images as usual.
        net = self._make_net(module, context).initialize()
        net.history = head_net.history
        # The OOD detector's embeddings from the cached features: running
        # the backbone again would double the cost of fit.
        embeddings = _head_embeddings(module.head, features, self.batch_size, self.device_) if self.ood else None
        return TrainedNet(net, train_embeddings=embeddings)


@torch.no_grad()
def _extract_features(module, dataset, *, batch_size, device, loader=None, autocast=None):
    """The frozen backbone's features of every image of ``dataset``, in order, on the CPU.

    ``autocast`` (bfloat16 or None) is the precision the fit chose
    (``amp_``): the features are computed as the fitted model's predictions
    compute them, and returned as float32.

    The batches come from :class:`~skxray._data.BatchIterator`, as the
    estimators' predictions do: images in memory are sliced a whole batch at
    a time (moved to ``device`` once when they fit there), files are read by
    a ``DataLoader`` with the ``loader`` settings (``num_workers``).
    """
    module.to(device)
    module.eval()
    # A private generator: even an unshuffled pass draws a seed from the
    # global RNG, which would shift dropout masks against an uncached fit.
    # In order, whatever the loader settings say: row i holds image i's features.
    settings = {**(loader or {}), "shuffle": False, "generator": torch.Generator(), "device": device}
    iterator = BatchIterator(dataset, batch_size=batch_size, **settings)
    with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
        chunks = [module.features(x.to(device)).float().cpu() for x, _ in iterator]
    return torch.cat(chunks)


@torch.no_grad()
def _head_embeddings(head, features, batch_size, device):
    """The head's hidden layer (``module.embed``) computed from cached backbone features."""
    head.eval()
    return torch.cat(
        [
            head[:-2](features[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(features), batch_size)
        ]
    ).numpy()
