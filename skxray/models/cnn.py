"""A small convolutional network trained from scratch."""

from numbers import Integral

import torch
from torch import nn

from skxray._param_validation import Interval
from skxray._utils import is_int
from skxray.models._base import COMMON_PARAMETERS_DOC, BaseImageClassifier

__all__ = ["CNNClassifier"]


def _pool_for(height, width):
    """2x2 max-pooling, reduced to the axes that can still be halved."""
    kernel = (2 if height >= 2 else 1, 2 if width >= 2 else 1)
    return nn.Identity() if kernel == (1, 1) else nn.MaxPool2d(kernel)


class _ConvNet(nn.Module):
    def __init__(
        self, input_shape, n_outputs, filters, kernel_size, dense_units, dropout, batch_norm, channels_last=True
    ):
        super().__init__()
        # NHWC convolutions train 1.21x faster on CPU (benchmarks/results/speed.json,
        # roofline "channels_last"; ~5 % on a GPU); benchmarks/speed.py measures it.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        channels, height, width = input_shape
        layers = []
        for n_filters in filters:
            layers.append(nn.Conv2d(channels, n_filters, kernel_size, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(n_filters))
            # Not in place: Grad-CAM hooks this layer's output.
            layers.append(nn.ReLU())
            pool = _pool_for(height, width)
            layers.append(pool)
            if not isinstance(pool, nn.Identity):
                height = height // 2 if height >= 2 else height
                width = width // 2 if width >= 2 else width
            channels = n_filters
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * height * width, dense_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_units, n_outputs),
        )
        self.features.to(memory_format=self.memory_format)

    @property
    def gradcam_layer(self):
        """The last ReLU of the convolutional blocks (before its pooling)."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]

    def activation_stats(self, x):
        """Mean and standard deviation of each channel of every convolutional block.

        Read after each block's ReLU. Out-of-distribution detection uses
        them: the final embedding maps unfamiliar images onto familiar class
        prototypes, while the early blocks still see intensity, texture and
        noise (Lee et al., NeurIPS 2018, use several layers for that reason).
        """
        x = x.contiguous(memory_format=self.memory_format)
        stats = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3), correction=0)]
        return torch.cat(stats, dim=1)

    def embed(self, x):
        """Penultimate-layer activations: the dense ReLU layer's output."""
        return self.classifier[:-2](self.features(x.contiguous(memory_format=self.memory_format)))

    def forward(self, x):
        return self.classifier(self.features(x.contiguous(memory_format=self.memory_format)))


class CNNClassifier(BaseImageClassifier):
    __doc__ = """Convolutional neural network for chest X-ray classification.

    Blocks of convolution, batch normalisation, ReLU and 2x2 max-pooling
    (32, 64 and 128 filters by default), then flatten, dropout, a dense
    ReLU layer, dropout and the output layer: one logit with a sigmoid for
    two classes, a softmax otherwise. Trained from scratch, so it suits small
    grayscale images (64-256 px) and CPUs.

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
        training).

{common}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.

    input_shape_ : tuple of int
        (channels, height, width) of the training images.

    n_features_in_ : int
        Number of features, only when fitted on 2-D (tabular) input.

    net_ : skorch.NeuralNet
        The trained skorch net; its ``module_`` is the torch model.

    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_acc``,
        ``lr``, ``dur`` (seconds); validation entries are None without a
        validation split.

    n_iter_ : int
        Number of epochs run.

    checkpoint_path_ : str or None
        Folder of this fit's checkpoint, when ``checkpoint_dir`` is set.

    resumed_from_ : str or None
        The ``last.pt`` checkpoint this fit continued from
        (``fit(X, y, resume=...)``), None for a fresh start.

    device_ : str
        Device the model was trained on.

    ood_ : skxray.ood.OODDetector or None
        Out-of-distribution detector fitted with the network (``ood=True``;
        None with ``ood=False`` or fewer than 10 training images); see
        :meth:`predict_with_abstention` and the user guide's page on
        out-of-distribution detection.

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
    """.format(
        common=COMMON_PARAMETERS_DOC.format(
            lr="1e-3",
            weight_decay="1e-4",
            dropout="0.3",
            batch_size="32",
            max_epochs="20",
            optimizer="adam",
            image_size="128",
        )
    )

    def __init__(
        self,
        *,
        filters=(32, 64, 128),
        kernel_size=3,
        dense_units=64,
        batch_norm=True,
        lr=1e-3,
        weight_decay=1e-4,
        dropout=0.3,
        batch_size=32,
        max_epochs=20,
        optimizer="adam",
        lr_schedule=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        augment=None,
        checkpoint_dir=None,
        device="auto",
        image_size=128,
        keep_aspect="crop",
        random_state=None,
        verbose=0,
        ood=True,
        min_confidence=0.0,
        num_workers=0,
        amp="auto",
        accelerator="auto",
    ):
        self.filters = filters
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.batch_norm = batch_norm
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.augment = augment
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.image_size = image_size
        self.keep_aspect = keep_aspect
        self.random_state = random_state
        self.verbose = verbose
        self.ood = ood
        self.min_confidence = min_confidence
        self.num_workers = num_workers
        self.amp = amp
        self.accelerator = accelerator

    _parameter_constraints: dict = {
        **BaseImageClassifier._parameter_constraints,
        "filters": [tuple, list],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "dense_units": [Interval(Integral, 1, None, closed="left")],
        "batch_norm": "no_validation",  # read as a truth value
    }

    def _check_params(self):
        super()._check_params()
        # The items of a tuple have no declarative constraint in scikit-learn.
        filters = self.filters
        if len(filters) == 0 or not all(is_int(f) and f >= 1 for f in filters):
            raise ValueError(
                f"CNNClassifier: filters must be a non-empty tuple of positive ints; got {filters!r}."
            )

    def _build_module(self, input_shape, n_outputs):
        return _ConvNet(
            input_shape,
            n_outputs,
            filters=tuple(self.filters),
            kernel_size=self.kernel_size,
            dense_units=self.dense_units,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
        )
