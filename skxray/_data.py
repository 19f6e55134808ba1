"""The torch Datasets the classifiers' networks read images from.

This module imports nothing else from skxray, so the estimators, the OOD
detector and the explanation tools can all import it without an import
cycle. How a file becomes an image is passed in (``read``), not imported.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ImagePathDataset",
    "SampleWeightedDataset",
    "TensorImageDataset",
    "private_generator_iterator",
    "unweighted",
    "with_sample_weight",
]

#: The label of an item whose label is unknown (prediction).
NO_LABEL = -1


class ImagePathDataset(Dataset):
    """Read images from disk on demand, so folders larger than memory can train.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    y : tensor of int64 or None
        Encoded labels, one per path; None for prediction.
    read : callable
        ``read(path)`` returns the image as a (channels, height, width)
        array, already resized; it must be picklable for DataLoader workers.
    """

    def __init__(self, paths, y, read):
        self.paths = paths
        self.y = y
        self.read = read

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.read(self.paths[i]), dtype=np.float32))
        y = torch.tensor(NO_LABEL) if self.y is None else self.y[i]
        return x, y


class TensorImageDataset(Dataset):
    """Images already in memory as one (N, C, H, W) float32 tensor."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        y = torch.tensor(NO_LABEL) if self.y is None else self.y[i]
        return self.X[i], y


class SampleWeightedDataset(Dataset):
    """Items of ``dataset`` with a weight each, as skorch recommends for sample weights.

    Item ``i`` is ``({"x": image, "sample_weight": weight}, label)``: skorch
    hands the dict to the net's ``infer`` and ``get_loss`` as the batch's
    ``X`` (skorch's FAQ, "How do I use sample weights"), where the weights
    scale each image's loss; the network itself only sees ``"x"``.

    Parameters
    ----------
    dataset : Dataset
        One of the datasets above, whose items are ``(image, label)``.
    sample_weight : tensor of float32
        One weight per item.
    """

    def __init__(self, dataset, sample_weight):
        self.dataset = dataset
        self.sample_weight = sample_weight

    @property
    def y(self):
        """The labels of the wrapped dataset (read by the validation accuracy)."""
        return self.dataset.y

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return {"x": x, "sample_weight": self.sample_weight[i]}, y


def with_sample_weight(dataset, sample_weight):
    """``dataset`` with ``sample_weight`` (a tensor), or ``dataset`` itself when it is None."""
    return dataset if sample_weight is None else SampleWeightedDataset(dataset, sample_weight)


def unweighted(x):
    """The images of a batch or item, with the sample weights of :class:`SampleWeightedDataset` left out."""
    if isinstance(x, dict) and "sample_weight" in x:
        return x["x"]
    return x


def private_generator_iterator():
    """iterator_valid settings that keep prediction off the global torch RNG.

    Every DataLoader iteration draws a worker seed from the global RNG unless
    it has a generator of its own; predicting must not change the user's RNG.
    """
    return {"iterator_valid__generator": torch.Generator()}
