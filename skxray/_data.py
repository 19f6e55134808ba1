"""The torch Datasets the classifiers' networks read images from.

This module imports nothing else from skxray, so the estimators, the OOD
detector and the explanation tools can all import it without an import
cycle. How a file becomes an image is passed in (``read``), not imported.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ImagePathDataset", "TensorImageDataset", "private_generator_iterator"]

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


def private_generator_iterator():
    """iterator_valid settings that keep prediction off the global torch RNG.

    Every DataLoader iteration draws a worker seed from the global RNG unless
    it has a generator of its own; predicting must not change the user's RNG.
    """
    return {"iterator_valid__generator": torch.Generator()}
