"""A multilayer perceptron on flattened pixels: the baseline."""

import torch
from torch import nn

from skxray._utils import is_int
from skxray.models._base import COMMON_PARAMETERS_DOC, BaseImageClassifier

__all__ = ["FNNClassifier"]


class _MLP(nn.Module):
    def __init__(self, n_inputs, n_outputs, hidden_layer_sizes, dropout):
        super().__init__()
        layers = [nn.Flatten()]
        for units in hidden_layer_sizes:
            layers += [nn.Linear(n_inputs, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            n_inputs = units
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(n_inputs, n_outputs)

    def activation_stats(self, x):
        """Mean, standard deviation and share of active units of every hidden layer.

        For out-of-distribution detection, like the CNN's per-channel
        statistics. Summaries, not the units themselves: the units of a
        dense layer fitted on a few hundred images recognise individual
        patients, so new patients of the training hospitals would look
        unfamiliar too (their raw activations made the shift test reject
        10-18 % of held-out same-hospital batches at alpha 0.05). Without
        hidden layers, the same three summaries of the flattened pixels.
        """
        x = torch.flatten(x, 1)
        stats = []
        for layer in self.hidden:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                stats += [x.mean(dim=1), x.std(dim=1, correction=0), (x > 0).float().mean(dim=1)]
        if not stats:
            stats = [x.mean(dim=1), x.std(dim=1, correction=0), (x > 0).float().mean(dim=1)]
        return torch.stack(stats, dim=1)

    def embed(self, x):
        """Last hidden layer's activations (the flattened pixels without hidden layers)."""
        return self.hidden(x)

    def forward(self, x):
        return self.output(self.hidden(x))


class FNNClassifier(BaseImageClassifier):
    __doc__ = """Feed-forward neural network (multilayer perceptron) on flattened pixels.

    The baseline against which the convolutional models are compared: every
    pixel is an input feature, so it ignores the spatial structure that the
    CNN exploits. Accepts images or an already-flat 2-D array
    (n_samples, n_features), like :class:`sklearn.neural_network.MLPClassifier`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(256, 64)
        Units of each hidden layer (ReLU, then dropout).

{common}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.

    input_shape_ : tuple of int
        (channels, height, width) of the training images; (1, 1, n_features)
        for 2-D input.

    n_features_in_ : int
        Number of features, only when fitted on 2-D input.

    net_ : skorch.NeuralNet
        The trained skorch net; its ``module_`` is the torch model.

    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_acc``,
        ``lr``, ``dur`` (seconds).

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
    CNNClassifier : Convolutional network, usually far better on images.
    sklearn.neural_network.MLPClassifier : The scikit-learn perceptron.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.models import FNNClassifier
    >>> X, y = make_phantom_cxr(60, image_size=32, random_state=0)
    >>> clf = FNNClassifier(max_epochs=2, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """.format(
        common=COMMON_PARAMETERS_DOC.format(
            lr="1e-3",
            weight_decay="1e-4",
            dropout="0.2",
            batch_size="32",
            max_epochs="30",
            optimizer="adam",
            image_size="64",
        )
    )

    def __init__(
        self,
        *,
        hidden_layer_sizes=(256, 64),
        lr=1e-3,
        weight_decay=1e-4,
        dropout=0.2,
        batch_size=32,
        max_epochs=30,
        optimizer="adam",
        lr_schedule=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        augment=None,
        checkpoint_dir=None,
        device="auto",
        image_size=64,
        keep_aspect="crop",
        random_state=None,
        verbose=0,
        ood=True,
        min_confidence=0.0,
        num_workers=0,
        amp="auto",
        accelerator="auto",
        label_smoothing=0.0,
        tta=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
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
        self.label_smoothing = label_smoothing
        self.tta = tta

    _parameter_constraints: dict = {
        **BaseImageClassifier._parameter_constraints,
        "hidden_layer_sizes": [tuple, list],
    }

    def _check_params(self):
        super()._check_params()
        # The items of a tuple have no declarative constraint in scikit-learn.
        sizes = self.hidden_layer_sizes
        if not all(is_int(u) and u >= 1 for u in sizes):
            raise ValueError(
                "FNNClassifier: hidden_layer_sizes must be a tuple of positive ints; "
                f"got {sizes!r}."
            )

    def _build_module(self, input_shape, n_outputs):
        channels, height, width = input_shape
        return _MLP(channels * height * width, n_outputs, tuple(self.hidden_layer_sizes), self.dropout)
