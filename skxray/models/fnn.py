"""A multilayer perceptron on flattened pixels: the baseline."""

import torch
from torch import nn

from skxray._utils import is_int
from skxray.models._base import (
    SHARED_PARAM_DEFAULTS,
    BaseImageClassifier,
    common_attributes_doc,
    common_parameters_doc,
    keyword_only_init,
)

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


#: The parameters of FNNClassifier and their defaults, in signature order
#: (keyword_only_init builds its __init__; the docstring reads its defaults).
_FNN_PARAMS = {
    "hidden_layer_sizes": (256, 64),
    **SHARED_PARAM_DEFAULTS,
    # Defaults of its own (a dict literal keeps each key where it first stood).
    "dropout": 0.2,
    "max_epochs": 30,
    "image_size": 64,
}


class FNNClassifier(BaseImageClassifier):
    __doc__ = f"""Feed-forward neural network (multilayer perceptron) on flattened pixels.

    The baseline against which the convolutional models are compared: every
    pixel is an input feature, so it ignores the spatial structure that the
    CNN exploits. Accepts images or an already-flat 2-D array
    (n_samples, n_features), like :class:`sklearn.neural_network.MLPClassifier`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(256, 64)
        Units of each hidden layer (ReLU, then dropout).

{common_parameters_doc(_FNN_PARAMS)}
{common_attributes_doc()}
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
    """


    __init__ = keyword_only_init(_FNN_PARAMS)

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
        kwargs = self._with_routed(
            "module", _MLP, hidden_layer_sizes=tuple(self.hidden_layer_sizes), dropout=self.dropout
        )
        return _MLP(channels * height * width, n_outputs, **kwargs)
