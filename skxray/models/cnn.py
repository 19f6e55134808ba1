"""A small convolutional network trained from scratch."""

from numbers import Integral

import torch
from sklearn.base import clone
from torch import nn

from skxray._param_validation import Interval, StrOptions
from skxray._utils import is_int
from skxray.augmentation import xray_augmentation
from skxray.models._base import (
    SHARED_PARAM_DEFAULTS,
    BaseImageClassifier,
    common_attributes_doc,
    common_parameters_doc,
    keyword_only_init,
)

__all__ = ["CNNClassifier", "CNN_PRESETS"]

#: Named settings of :meth:`CNNClassifier.from_preset`. ``"benchmark"``: the
#: settings of the committed darkcovidnet benchmark (benchmarks/accuracy.py,
#: MODEL_SETTINGS["cnn"]), which beat the defaults on held-out patients
#: (benchmarks/results/tuning/model_options.json and issue 15); the
#: validation split and the out-of-distribution detector stay on.
#: ``"darkcovidnet_paper"``: the training recipe of the DarkCovidNet paper
#: (Ozturk et al. 2020) on its own network, as far as skxray's parameters can
#: say it; the docs' model page lists where each setting comes from and what
#: still differs from the authors' fastai notebook.
CNN_PRESETS = {
    "benchmark": {"lr": 2e-3, "lr_schedule": "onecycle", "class_weight": "balanced", "max_epochs": 15},
    "darkcovidnet_paper": {
        "architecture": "darkcovidnet",
        "image_size": 256,
        "max_epochs": 100,
        "batch_size": 32,
        "lr": 3e-3,
        "lr_schedule": "onecycle",
        # fastai v1's Learner: Adam with decoupled ("true") weight decay 1e-2.
        "optimizer": "adamw",
        "weight_decay": 1e-2,
        # The network has no dropout.
        "dropout": 0.0,
        "augment": xray_augmentation("fastai"),
    },
}


def _pool_for(height, width):
    """2x2 max-pooling, reduced to the axes that can still be halved.

    Returns the layer and the height and width of its output.
    """
    kernel = (2 if height >= 2 else 1, 2 if width >= 2 else 1)
    pool = nn.Identity() if kernel == (1, 1) else nn.MaxPool2d(kernel)
    return pool, height // kernel[0], width // kernel[1]


def _dense_head(in_features, dense_units, dropout, n_outputs, global_pool=False):
    """Flatten (or global average pooling), dropout, dense ReLU, dropout, output."""
    reduce = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
    return nn.Sequential(
        *reduce,
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(in_features, dense_units),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(dense_units, n_outputs),
    )


class _ConvNetBase(nn.Module):
    """``features`` then ``classifier``, in NHWC memory format.

    Subclasses build both and name in ``_block_output`` the type of the
    layer whose output ends a block (read by :meth:`activation_stats`).
    """

    _block_output = nn.ReLU

    def _set_memory_format(self, channels_last):
        # NHWC convolutions train 1.21x faster on CPU (benchmarks/results/speed.json,
        # roofline "channels_last"; ~5 % on a GPU); benchmarks/speed.py measures it.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.features.to(memory_format=self.memory_format)

    def activation_stats(self, x):
        """Mean and standard deviation of each channel of every convolutional block.

        Read at the end of each block. Out-of-distribution detection uses
        them: the final embedding maps unfamiliar images onto familiar class
        prototypes, while the early blocks still see intensity, texture and
        noise (Lee et al., NeurIPS 2018, use several layers for that reason).
        """
        x = x.contiguous(memory_format=self.memory_format)
        stats = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, self._block_output):
                stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3), correction=0)]
        return torch.cat(stats, dim=1)

    def embed(self, x):
        """Penultimate-layer activations: the dense ReLU layer's output."""
        return self.classifier[:-2](self.features(x.contiguous(memory_format=self.memory_format)))

    def forward(self, x):
        return self.classifier(self.features(x.contiguous(memory_format=self.memory_format)))


class _ConvNet(_ConvNetBase):
    def __init__(
        self, input_shape, n_outputs, filters, kernel_size, dense_units, dropout, batch_norm, channels_last=True
    ):
        super().__init__()
        channels, height, width = input_shape
        layers = []
        for n_filters in filters:
            layers.append(nn.Conv2d(channels, n_filters, kernel_size, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(n_filters))
            # Not in place: Grad-CAM hooks this layer's output.
            layers.append(nn.ReLU())
            pool, height, width = _pool_for(height, width)
            layers.append(pool)
            channels = n_filters
        self.features = nn.Sequential(*layers)
        self.classifier = _dense_head(channels * height * width, dense_units, dropout, n_outputs)
        self._set_memory_format(channels_last)

    @property
    def gradcam_layer(self):
        """The last ReLU of the convolutional blocks (before its pooling)."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]


class _ResidualBlock(nn.Module):
    """Two convolutions with batch norm and an identity (or 1x1) shortcut.

    He et al., CVPR 2016: the shortcut lets gradients skip the block, so the
    network can be deeper than the plain stack and still train.
    """

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        # Not in place: Grad-CAM hooks the last block's output ReLU.
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class _ResidualConvNet(_ConvNetBase):
    """Stem, residual blocks after 2x2 max-pooling, global average pooling.

    The dense head reads one value per channel, so the number of weights does
    not depend on the image size (the plain network's first dense layer grows
    with the pixels). Pooling before the first block keeps the cost near the
    plain network's although each block has two convolutions.
    """

    _block_output = _ResidualBlock

    def __init__(self, input_shape, n_outputs, filters, kernel_size, dense_units, dropout, channels_last=True):
        super().__init__()
        channels, height, width = input_shape
        layers = [
            nn.Conv2d(channels, filters[0], kernel_size, padding="same", bias=False),
            nn.BatchNorm2d(filters[0]),
            nn.ReLU(inplace=True),
        ]
        channels = filters[0]
        # One 2x2 pooling before each block, as many as the plain network has.
        for n_filters in filters:
            pool, height, width = _pool_for(height, width)
            layers.append(pool)
            layers.append(_ResidualBlock(channels, n_filters, kernel_size))
            channels = n_filters
        self.features = nn.Sequential(*layers)
        self.classifier = _dense_head(channels, dense_units, dropout, n_outputs, global_pool=True)
        self._set_memory_format(channels_last)

    @property
    def gradcam_layer(self):
        """The output ReLU of the last residual block."""
        return self.features[-1].relu


class _DarkConv(nn.Sequential):
    """DarkCovidNet's ``conv_block``: convolution without bias, batch norm, leaky ReLU (0.1).

    Every convolution is padded by one pixel, the 1x1 ones too, as in the
    authors' notebook (``padding=(for_pad(size) - 1) // 2`` with
    ``for_pad(1) == 3``): a 1x1 convolution grows the map by 2 pixels.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            # Not in place (the notebook's is): Grad-CAM hooks the last one.
            nn.LeakyReLU(0.1),
        )


class _TripleConv(nn.Sequential):
    """DarkCovidNet's ``triple_conv``: 3x3 up to ``out_channels``, 1x1 back down, 3x3 up."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            _DarkConv(in_channels, out_channels),
            _DarkConv(out_channels, in_channels, kernel_size=1),
            _DarkConv(in_channels, out_channels),
        )


class _Stage(nn.Sequential):
    """The DarkCovidNet blocks at one resolution (between two poolings).

    The out-of-distribution detector reads each stage's output statistics:
    one per resolution, 504 channels, where every block would give 888 and a
    covariance whose inversion (cubic in its size) costs about 5 times more.
    """


#: DarkCovidNet's layers after the input, from the model cell of the authors'
#: notebook: one tuple of blocks per stage, a 2x2 max-pool between stages.
#: ("conv", filters, kernel) is a conv_block, ("triple", filters) a triple_conv.
_DARKCOVIDNET_STAGES = (
    (("conv", 8, 3),),
    (("conv", 16, 3),),
    (("triple", 32),),
    (("triple", 64),),
    (("triple", 128),),
    (("triple", 256), ("conv", 128, 1), ("conv", 256, 3)),
)


class _DarkCovidNet(_ConvNetBase):
    """DarkCovidNet (Ozturk et al. 2020), the 17-convolution network of the paper.

    ``features``: conv 8, pool, conv 16, pool, four triple blocks of 32, 64,
    128 and 256 filters (a 2x2 max-pool after each but the last), conv 1x1
    128, conv 3x3 256. ``classifier``: a 3x3 convolution to one map per class
    (fastai v1's ``conv_layer``: no bias, ReLU, then batch norm), flatten,
    dropout and the linear output layer. The linear layer reads every pixel
    of the class maps, sized from ``input_shape``: 13x13 maps at 256 px, as
    the notebook's ``nn.Linear(338, 2)``.
    """

    _block_output = _Stage

    def __init__(self, input_shape, n_outputs, dropout, channels_last=True):
        super().__init__()
        channels, height, width = input_shape
        layers = []
        for index, stage in enumerate(_DARKCOVIDNET_STAGES):
            if index:
                pool, height, width = _pool_for(height, width)
                layers.append(pool)
            blocks = []
            for kind, n_filters, *kernel in stage:
                kernel_size = kernel[0] if kernel else 3
                block = _TripleConv(channels, n_filters) if kind == "triple" else _DarkConv(
                    channels, n_filters, kernel_size
                )
                blocks.append(block)
                if kind == "triple" or kernel_size == 1:
                    height, width = height + 2, width + 2  # a padded 1x1 convolution
                channels = n_filters
            layers.append(_Stage(*blocks))
        self.features = nn.Sequential(*layers)
        # One map per class; two for two classes, as in the paper, although
        # skxray's two-class output is a single logit.
        n_maps = max(n_outputs, 2)
        class_conv = nn.Conv2d(channels, n_maps, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(class_conv.weight)  # fastai v1 conv_layer's init
        self.classifier = nn.Sequential(
            class_conv,
            nn.ReLU(),
            nn.BatchNorm2d(n_maps),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(n_maps * height * width, n_outputs),
        )
        self._set_memory_format(channels_last)

    @property
    def gradcam_layer(self):
        """The leaky ReLU of the last convolutional block (conv 3x3, 256 filters)."""
        return self.features[-1][-1][-1]


#: The parameters of CNNClassifier and their defaults, in signature order
#: (keyword_only_init builds its __init__; the docstring reads its defaults).
_CNN_PARAMS = {
    "filters": (32, 64, 128),
    "kernel_size": 3,
    "dense_units": 64,
    "batch_norm": True,
    **SHARED_PARAM_DEFAULTS,
    "architecture": "plain",
}


class CNNClassifier(BaseImageClassifier):
    __doc__ = f"""Convolutional neural network for chest X-ray classification.

    Blocks of convolution, batch normalisation, ReLU and 2x2 max-pooling
    (32, 64 and 128 filters by default), then flatten, dropout, a dense
    ReLU layer, dropout and the output layer: one logit with a sigmoid for
    two classes, a softmax otherwise. Trained from scratch, so it suits small
    grayscale images (64-256 px) and CPUs. ``architecture="residual"``
    replaces the blocks by residual blocks and the flatten by global average
    pooling, so that the number of weights no longer grows with the image
    size. ``architecture="darkcovidnet"`` is the network of the DarkCovidNet
    paper (Ozturk et al. 2020); ``CNNClassifier.from_preset("darkcovidnet_paper")``
    adds the paper's training recipe.

    Parameters
    ----------
    filters : tuple of int, default=(32, 64, 128)
        Number of filters of each convolutional block.

    kernel_size : int, default=3
        Side of the square convolution kernels.

    dense_units : int, default=64
        Units of the dense layer before the output.

    batch_norm : bool, default=True
        Batch normalisation after each convolution (faster, steadier
        training). The residual blocks always use it.

    architecture : {{"plain", "residual", "darkcovidnet"}}, default="plain"
        ``"plain"``: one convolution per block, then the feature maps are
        flattened into the dense layer, whose weights grow with the image
        (about 0.5 M at 64 px, 2.1 M at 128 px with the default filters).
        ``"residual"``: a convolutional stem, then per entry of ``filters``
        2x2 max-pooling and a residual block (two convolutions with batch
        normalisation and a shortcut, He et al. 2016), then global average
        pooling: the same number of weights at any image size, so 224-256 px
        images cost compute but not parameters.
        ``"darkcovidnet"``: DarkCovidNet (Ozturk et al., Computers in Biology
        and Medicine 121, 2020), 17 convolutions with batch norm and leaky
        ReLU, built as in the authors' notebook; ``filters``,
        ``kernel_size``, ``dense_units`` and ``batch_norm`` do not apply, and
        ``dropout`` is put before its output layer (the paper has none: 0).
        Its output layer reads the flattened class maps, so it adapts to the
        image size (1.16 M weights at 256 px); see the user guide's model
        page.

{common_parameters_doc(_CNN_PARAMS)}
{common_attributes_doc()}
    See Also
    --------
    FNNClassifier : Multilayer perceptron baseline on flattened pixels.
    ResNet50Classifier : Frozen ImageNet ResNet-50 with a new head.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.models import CNNClassifier
    >>> X, y = make_phantom_cxr(60, image_size=32, random_state=0)
    >>> clf = CNNClassifier(filters=(8, 16), max_epochs=2, random_state=0).fit(X, y)
    >>> clf.classes_
    array(['Covid-19', 'Normal'], dtype=object)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """


    __init__ = keyword_only_init(_CNN_PARAMS)

    _parameter_constraints: dict = {
        **BaseImageClassifier._parameter_constraints,
        "filters": [tuple, list],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "dense_units": [Interval(Integral, 1, None, closed="left")],
        "batch_norm": "no_validation",  # read as a truth value
        "architecture": [StrOptions({"plain", "residual", "darkcovidnet"})],
    }

    @classmethod
    def from_preset(cls, name, **params):
        """A CNNClassifier with the settings of a named preset.

        Parameters
        ----------
        name : {"benchmark", "darkcovidnet_paper"}
            ``"benchmark"``: ``lr=2e-3``, ``lr_schedule="onecycle"``,
            ``class_weight="balanced"``, ``max_epochs=15``, the settings of
            the darkcovidnet benchmark (see the Benchmarks page).
            ``"darkcovidnet_paper"``: the DarkCovidNet paper's network and
            recipe, ``architecture="darkcovidnet"``, ``image_size=256``,
            one-cycle to ``lr=3e-3`` over ``max_epochs=100``,
            ``batch_size=32``, AdamW with ``weight_decay=1e-2``,
            ``dropout=0`` and ``augment=xray_augmentation("fastai")`` (the
            user guide's model page says where each setting comes from and
            what differs from the paper's fastai code). Every
            other parameter keeps its default, ``ood=True`` and
            ``validation_fraction=0.1`` included.
        **params
            Further constructor parameters; they override the preset's.

        Returns
        -------
        clf : CNNClassifier
            An unfitted classifier; ``get_params()`` shows every setting.

        Examples
        --------
        >>> from skxray.models import CNNClassifier
        >>> clf = CNNClassifier.from_preset("benchmark", random_state=0)
        >>> clf.lr_schedule, clf.class_weight, clf.ood
        ('onecycle', 'balanced', True)
        """
        if name not in CNN_PRESETS:
            raise ValueError(f"CNNClassifier.from_preset: unknown preset {name!r}; choose from {sorted(CNN_PRESETS)}.")
        # A fresh copy of the preset's augmentation for each classifier.
        preset = {k: clone(v) if hasattr(v, "get_params") else v for k, v in CNN_PRESETS[name].items()}
        return cls(**{**preset, **params})

    def _check_params(self):
        super()._check_params()
        # The items of a tuple have no declarative constraint in scikit-learn.
        filters = self.filters
        if len(filters) == 0 or not all(is_int(f) and f >= 1 for f in filters):
            raise ValueError(
                f"CNNClassifier: filters must be a non-empty tuple of positive ints; got {filters!r}."
            )

    def _build_module(self, input_shape, n_outputs):
        shared = {
            "filters": tuple(self.filters),
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
        }
        if self.architecture == "residual":
            return _ResidualConvNet(input_shape, n_outputs, **self._with_routed("module", _ResidualConvNet, **shared))
        if self.architecture == "darkcovidnet":
            return _DarkCovidNet(input_shape, n_outputs,
                                 **self._with_routed("module", _DarkCovidNet, dropout=self.dropout))
        kwargs = self._with_routed("module", _ConvNet, batch_norm=self.batch_norm, **shared)
        return _ConvNet(input_shape, n_outputs, **kwargs)
