"""Chest X-ray-pretrained backbones from torchxrayvision, frozen, with a new head.

torchxrayvision (Cohen et al., MIDL 2022) publishes DenseNet-121 and
ResNet-50 networks trained on hundreds of thousands of chest X-rays (NIH,
CheXpert, MIMIC-CXR, PadChest, RSNA and others). :class:`PretrainedCXRClassifier`
uses one of them as a frozen feature extractor, exactly as
:class:`~skxray.models.ResNet50Classifier` uses the ImageNet ResNet-50: same
head, same feature caching, same saving and loading.

torchxrayvision is an optional dependency (``pip install "skxray[xrv]"``),
imported only when a DenseNet backbone is built or named weights are loaded.
"""

import os
import warnings
from numbers import Integral
from pathlib import Path

import torchvision
from torch import nn
from torch.nn import functional as F

from skxray._param_validation import Interval, StrOptions
from skxray.models._base import (
    SHARED_PARAM_DEFAULTS,
    keyword_only_init,
)
from skxray.models._feature_store import FeatureStore
from skxray.models.resnet import (
    _BACKBONE_PARAMS,
    FrozenBackboneNet,
    PretrainedWeightsError,
    ResNet50Classifier,
    frozen_backbone_doc,
    read_state_dict_file,
)

__all__ = ["PretrainedCXRClassifier", "XRV_BACKBONES", "load_xrv_state_dict", "to_xrv_input"]

#: torchxrayvision's weights by name -> (architecture, native input side,
#: number of features). The names are those of ``torchxrayvision.models.model_urls``
#: (version 1.5); the DenseNets were trained at 224 px, the ResNet-50 at 512 px.
XRV_BACKBONES = {
    **{
        f"densenet121-res224-{source}": ("densenet121", 224, 1024)
        for source in ("all", "nih", "pc", "chex", "rsna", "mimic_nb", "mimic_ch")
    },
    "resnet50-res512-all": ("resnet50", 512, 2048),
}
# torchxrayvision's pixel range: images are scaled to [-_XRV_RANGE, _XRV_RANGE].
_XRV_RANGE = 1024.0
# The smallest side a DenseNet-121 accepts: it halves the image five times
# and its last transition pools 2 x 2.
_MIN_SIDE = 32


def _import_xrv():
    """torchxrayvision, or an ImportError saying how to install it."""
    try:
        # torchxrayvision.models calls warnings.filterwarnings("ignore") when
        # imported, which would silence every warning of the process (ours
        # included); catch_warnings restores the filters afterwards.
        with warnings.catch_warnings():
            import torchxrayvision
    except ImportError as exc:
        raise ImportError(
            "PretrainedCXRClassifier needs torchxrayvision for its DenseNet backbones and its "
            'named weights: pip install "skxray[xrv]" (or pip install torchxrayvision).'
        ) from exc
    return torchxrayvision


def to_xrv_input(x, resolution):
    """Images in [0, 1] -> torchxrayvision's input convention.

    The one place where skxray's images become what torchxrayvision's
    networks were trained on:

    - one channel: RGB images are averaged over their channels, as
      torchxrayvision's README does (``img.mean(2)``);
    - pixel values scaled linearly from [0, 1] to [-1024, 1024], the result of
      ``torchxrayvision.datasets.normalize(img, maxval)`` on the original image;
    - square images resized to ``resolution`` x ``resolution`` with bilinear
      interpolation and antialiasing, as torchxrayvision's models resize
      their input (``torchxrayvision.utils.fix_resolution``).

    Parameters
    ----------
    x : torch.Tensor of shape (n, 1 or 3, height, width)
        Images in [0, 1].
    resolution : int or None
        Side of the output images; None keeps the input size.

    Returns
    -------
    torch.Tensor of shape (n, 1, resolution, resolution)
        Images in [-1024, 1024].

    Examples
    --------
    >>> import torch
    >>> from skxray.models.xrv import to_xrv_input
    >>> to_xrv_input(torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3), None).flatten().tolist()
    [-1024.0, 0.0, 1024.0]
    """
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return (2.0 * x - 1.0) * _XRV_RANGE


def _build_backbone(backbone):
    """The architecture of ``backbone``, randomly initialised, without its classifier."""
    architecture = XRV_BACKBONES[backbone][0]
    if architecture == "densenet121":
        # torchxrayvision's own class, so its weight files load unchanged.
        model = _import_xrv().models.DenseNet(weights=None)
        del model.classifier
        return model
    # What torchxrayvision.models.ResNet builds (it cannot be built without
    # downloading its weights): torchvision's ResNet-50 with a 1-channel stem.
    model = torchvision.models.resnet50(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()
    return model


def _backbone_state(state):
    """Keep the backbone's tensors of a torchxrayvision state dict, under our names.

    Drops the 18-pathology classifier (``classifier.``, ``fc.``) and the
    operating points (``op_threshs``), and the ``model.`` prefix of the
    ``state_dict()`` of a ``torchxrayvision.models.ResNet``.
    """
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return {
        k: v
        for k, v in state.items()
        if not k.startswith(("classifier.", "fc.")) and k != "op_threshs"
    }


def _weights_url(backbone):
    xrv = _import_xrv()
    if backbone not in xrv.models.model_urls:
        raise ValueError(
            f"This torchxrayvision ({xrv.__version__}) has no weights {backbone!r}; "
            f"it has {sorted(k for k in xrv.models.model_urls if '-' in k)}."
        )
    return xrv, xrv.models.model_urls[backbone]["weights_url"]


def _download_error(backbone, url, exc):
    xrv = _import_xrv()
    folder = Path(xrv.utils.get_cache_dir())
    filename = Path(url).name
    return PretrainedWeightsError(
        f"Could not obtain torchxrayvision's weights {backbone!r} ({exc!r}). This machine is "
        f"probably offline. Either copy the file {filename} (from {url}, downloaded on a "
        f"machine with internet) into {folder} (torchxrayvision's cache, under the HOME "
        "folder), and keep weights='pretrained'; or pass a local state dict: "
        f"PretrainedCXRClassifier(backbone={backbone!r}, weights='/path/to/{backbone}.pth' or "
        "'.safetensors'), saved on that machine with torch.save(torchxrayvision.models."
        f"get_model({backbone!r}).state_dict(), '{backbone}.pth'). weights=None trains from a "
        "random initialisation."
    )


def load_xrv_state_dict(backbone, weights="pretrained"):
    """Return the backbone weights of a torchxrayvision network.

    Parameters
    ----------
    backbone : str
        One of ``skxray.models.xrv.XRV_BACKBONES``, e.g. ``"densenet121-res224-all"``.
    weights : "pretrained" or path-like, default="pretrained"
        ``"pretrained"``: torchxrayvision's released file for ``backbone``,
        read from its cache (``~/.torchxrayvision/models_data/``) and
        downloaded there first when absent. torchxrayvision reads its own
        files (``torch.load`` of a pickled model for the DenseNets), as it
        does when used directly. A path: a local ``.safetensors`` file or
        ``.pth``/``.pt`` state dict of that architecture (read with
        ``weights_only=True``, so a pickle payload is refused), such as
        ``torch.save(torchxrayvision.models.get_model(backbone).state_dict(), path)``
        writes.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The backbone's weights, without the pathology classifier.

    Raises
    ------
    PretrainedWeightsError
        When ``"pretrained"`` weights are not in the cache and cannot be
        downloaded; the message names the file to copy, where, and the
        parameter to pass instead.
    FileNotFoundError
        When ``weights`` is a path that does not exist.
    ValueError
        When a file cannot be read as such a state dict.
    ImportError
        When ``"pretrained"`` is asked for and torchxrayvision is not installed.
    """
    if backbone not in XRV_BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(XRV_BACKBONES)}; got {backbone!r}.")
    if isinstance(weights, str) and weights == "pretrained":
        xrv, url = _weights_url(backbone)
        local = Path(xrv.utils.get_cache_dir()) / Path(url).name
        if not local.is_file():
            try:
                xrv.models.get_weights(backbone)
            except Exception as exc:  # ConnectionError, HTTPError, OSError: all "not available"
                raise _download_error(backbone, url, exc) from exc
        try:
            state = xrv.models.get_model(backbone).state_dict()
        except Exception as exc:
            raise ValueError(
                f"torchxrayvision could not read its weights file {str(local)!r} ({exc!r}); "
                "it is probably damaged or incomplete: delete it and download it again."
            ) from exc
    else:
        state = read_state_dict_file(
            weights,
            f"torchxrayvision {backbone}",
            hint="pass weights='pretrained', None, or the path of a .safetensors/.pth state dict",
        )
    return _backbone_state(state)


class _XRVNet(FrozenBackboneNet):
    """Images in [0, 1] -> torchxrayvision input (:func:`to_xrv_input`) -> backbone -> head."""

    def __init__(
        self, backbone, resolution, n_outputs, head_units, dropout, freeze, state_dict=None
    ):
        network = _build_backbone(backbone)
        if state_dict is not None:
            missing, unexpected = network.load_state_dict(state_dict, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"The weights do not fit torchxrayvision's {backbone}: "
                    f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
                )
        super().__init__(
            network, XRV_BACKBONES[backbone][2], n_outputs, head_units, dropout, freeze
        )
        self.architecture = XRV_BACKBONES[backbone][0]
        self.resolution = resolution

    def _backbone_features(self, x):
        x = to_xrv_input(x, self.resolution)
        if self.architecture == "densenet121":
            # torchxrayvision's DenseNet.features2, with an out-of-place ReLU
            # so that Grad-CAM's hooks on the last block see its own output.
            out = F.relu(self.backbone.features(x))
            return F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.backbone(x)  # torchxrayvision's ResNet.features

    @property
    def gradcam_layer(self):
        """The backbone's last feature map: DenseNet's final norm, ResNet's last block."""
        if self.architecture == "densenet121":
            return self.backbone.features.norm5
        return self.backbone.layer4[-1]


#: The parameters of PretrainedCXRClassifier and their defaults, in signature order
#: (keyword_only_init builds its __init__; the docstring reads its defaults).
_XRV_PARAMS = {
    "backbone": "densenet121-res224-all",
    **_BACKBONE_PARAMS,
    "weights": "pretrained",
    "input_resolution": "native",
    **SHARED_PARAM_DEFAULTS,
    "image_size": 224,
}


class PretrainedCXRClassifier(ResNet50Classifier):
    __doc__ = frozen_backbone_doc(
        """A chest X-ray-pretrained torchxrayvision backbone, frozen, and a new head.

    torchxrayvision's DenseNet-121 and ResNet-50 networks were trained on
    hundreds of thousands of chest X-rays; each turns an image into 1,024
    (DenseNet) or 2,048 (ResNet) features, and only a new head (layer
    normalisation, dense ReLU layer, dropout, output layer) is trained. Head,
    feature caching (``cache_features``, ``feature_cache_dir``), Grad-CAM,
    saving and loading work as for :class:`ResNet50Classifier`, of which this
    is a subclass.

    Pass images in [0, 1], gray or RGB, like every skxray classifier: they are
    converted to torchxrayvision's convention inside the estimator
    (:func:`to_xrv_input`: one channel, scaled to [-1024, 1024], resized to
    ``input_resolution``).

    Needs the optional dependency torchxrayvision (``pip install
    "skxray[xrv]"``) for the DenseNets and for ``weights="pretrained"``.

    Parameters
    ----------
    backbone : str, default="densenet121-res224-all"
        torchxrayvision's network: ``"densenet121-res224-<source>"`` with
        source ``all``, ``nih``, ``pc`` (PadChest), ``chex`` (CheXpert),
        ``rsna``, ``mimic_nb`` or ``mimic_ch`` (MIMIC-CXR), trained at
        224 px; or ``"resnet50-res512-all"``, trained at 512 px (see
        ``skxray.models.xrv.XRV_BACKBONES``).

    weights : "pretrained", path-like or None, default="pretrained"
        ``"pretrained"``: torchxrayvision's released weights of ``backbone``,
        read from ``~/.torchxrayvision/models_data/`` and downloaded there on
        first use. Offline, put the file there or pass a path: a local
        ``.safetensors`` or ``.pth`` state dict of that architecture (read
        with ``weights_only=True``). None: random initialisation (tests, or
        to measure what pretraining brings). When the weights cannot be
        downloaded, ``fit`` raises :class:`PretrainedWeightsError` naming the
        file, the folder and the parameter to pass instead.

    input_resolution : "native", int or None, default="native"
        Side to which the backbone's input is resized (bilinear, with
        antialiasing, as torchxrayvision does). "native": the resolution the
        weights were trained at (224 for the DenseNets, 512 for the
        ResNet-50). None keeps the images' own size (at least 32 px; the
        features then differ from torchxrayvision's). Images must be square
        unless None.

{frozen_head}
    feature_cache_dir : str, path-like or None, default=None
        Folder where the frozen backbone's features are kept across fits and
        predictions, one file per image keyed by its pixels, in a subfolder
        named after the backbone, ``input_resolution`` and a hash of the
        weights. As for :class:`ResNet50Classifier`.

{common}
{attributes}
    See Also
    --------
    ResNet50Classifier : The same with torchvision's ImageNet ResNet-50.

    Notes
    -----
    No accuracy of the pretrained weights on skxray's data sets has been
    measured: they could not be downloaded where skxray is developed. The
    tests check the whole path with randomly initialised weights written to
    a file (the features equal torchxrayvision's own for the same weights).

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.models import PretrainedCXRClassifier
    >>> X, y = make_phantom_cxr(40, image_size=32, random_state=0)
    >>> clf = PretrainedCXRClassifier(weights=None, input_resolution=None, max_epochs=2,
    ...                               random_state=0).fit(X, y)
    >>> clf.features_cached_, clf.predict(X[:3]).shape
    (True, (3,))
    """,
        _XRV_PARAMS,
    )

    _rgb_input = False

    __init__ = keyword_only_init(_XRV_PARAMS)

    _parameter_constraints: dict = {
        **ResNet50Classifier._parameter_constraints,
        "backbone": [StrOptions(set(XRV_BACKBONES))],
        # "pretrained" or a file, checked when the weights are loaded.
        "weights": [None, str, os.PathLike],
        "input_resolution": [
            StrOptions({"native"}),
            Interval(Integral, _MIN_SIDE, None, closed="left"),
            None,
        ],
    }

    def _resolution(self):
        if self.input_resolution == "native":
            return XRV_BACKBONES[self.backbone][1]
        return self.input_resolution

    def _check_input_shape(self, input_shape):
        channels, height, width = input_shape
        name = type(self).__name__
        if channels not in (1, 3):
            raise ValueError(
                f"{name} needs gray (1 channel) or RGB (3 channels) images; got {channels} channels."
            )
        resolution = self._resolution()
        if resolution is not None and height != width:
            raise ValueError(
                f"{name}: input_resolution={self.input_resolution!r} resizes square images, as "
                f"torchxrayvision does; got {height} x {width} images. Crop them to a square first "
                "(skxray.preprocessing.resize_images, or keep_aspect='crop' for files), or pass "
                "input_resolution=None."
            )
        if resolution is None and min(height, width) < _MIN_SIDE:
            raise ValueError(
                f"{name}: with input_resolution=None the images are used at their own size, which "
                f"must be at least {_MIN_SIDE} px; got {height} x {width}."
            )

    def _build_module(self, input_shape, n_outputs):
        self._check_input_shape(input_shape)
        state = None if self.weights is None else load_xrv_state_dict(self.backbone, self.weights)
        return self._make_module(n_outputs, state)

    def _build_module_for_loading(self, input_shape, n_outputs):
        # The saved file holds every backbone weight: no need to fetch any.
        return self._make_module(n_outputs, None)

    def _make_module(self, n_outputs, state):
        kwargs = self._with_routed(
            "module",
            _XRVNet,
            backbone=self.backbone,
            resolution=self._resolution(),
            head_units=self.head_units,
            dropout=self.dropout,
            freeze=bool(self.freeze),
            state_dict=state,
        )
        module = _XRVNet(n_outputs=n_outputs, **kwargs)
        self._attach_feature_store(module)
        return module

    def _attach_feature_store(self, module):
        # The resolution changes the features of the same weights and pixels,
        # so it is part of the folder's name; the weights are hashed lazily.
        if self.feature_cache_dir is not None and self.freeze:
            prefix = f"xrv-{self.backbone}-{self._resolution() or 'own'}"
            module.feature_store = FeatureStore(
                self.feature_cache_dir, module.backbone, prefix=prefix
            )
