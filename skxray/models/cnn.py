"""A small convolutional network trained from scratch."""

from numbers import Integral

import torch
from torch import nn

from skxray._param_validation import Interval, StrOptions
from skxray._utils import is_int
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
CNN_PRESETS = {
    "benchmark": {"lr": 2e-3, "lr_schedule": "onecycle", "class_weight": "balanced", "max_epochs": 15},
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
    size.

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

    architecture : {{"plain", "residual"}}, default="plain"
        ``"plain"``: one convolution per block, then the feature maps are
        flattened into the dense layer, whose weights grow with the image
        (about 0.5 M at 64 px, 2.1 M at 128 px with the default filters).
        ``"residual"``: a convolutional stem, then per entry of ``filters``
        2x2 max-pooling and a residual block (two convolutions with batch
        normalisation and a shortcut, He et al. 2016), then global average
        pooling: the same number of weights at any image size, so 224-256 px
        images cost compute but not parameters.

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
        "architecture": [StrOptions({"plain", "residual"})],
    }

    @classmethod
    def from_preset(cls, name, **params):
        """A CNNClassifier with the settings of a named preset.

        Parameters
        ----------
        name : {"benchmark"}
            ``"benchmark"``: ``lr=2e-3``, ``lr_schedule="onecycle"``,
            ``class_weight="balanced"``, ``max_epochs=15``, the settings of
            the darkcovidnet benchmark (see the Benchmarks page); every other
            parameter keeps its default, ``ood=True`` and
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
        return cls(**{**CNN_PRESETS[name], **params})

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
        kwargs = self._with_routed("module", _ConvNet, batch_norm=self.batch_norm, **shared)
        return _ConvNet(input_shape, n_outputs, **kwargs)
