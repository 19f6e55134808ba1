"""Frozen-backbone features kept on disk across fits, one file per image.

A frozen backbone maps an image to the same features in every fit, so
cross-validation, a grid search over the head, scoring and repeated runs can
share them: each image (keyed by its pixels) goes through the backbone once.
The folder is specific to the backbone's weights (a hash of them), so other
weights never read these features.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

from skxray._atomic import atomic_write

__all__ = ["FeatureStore", "weights_fingerprint"]


def weights_fingerprint(module):
    """sha1 of a module's state (names, shapes, dtypes and values) and torch's version."""
    digest = hashlib.sha1(torch.__version__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureStore:
    """Features of one backbone, stored as ``<root>/<prefix>-<hash>/<image sha1>.npy``.

    Parameters
    ----------
    root : str or path-like
        Folder holding the features of every backbone (created on first write).

    backbone : torch.nn.Module
        The frozen backbone whose features are stored; its weights are hashed
        lazily, at the first lookup.

    prefix : str, default="features"
        Name of the backbone, first part of its folder's name.
    """

    def __init__(self, root, backbone, prefix="features"):
        self.root = Path(root).expanduser()
        self.prefix = prefix
        self._backbone = backbone
        self._folder = None

    @property
    def folder(self):
        if self._folder is None:
            self._folder = self.root / f"{self.prefix}-{weights_fingerprint(self._backbone)[:20]}"
        return self._folder

    @staticmethod
    def key(image):
        """sha1 of one input image: its dtype, shape and bytes."""
        image = np.ascontiguousarray(image)
        digest = hashlib.sha1(f"{image.dtype.str}:{image.shape}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def _path(self, key):
        return self.folder / f"{key}.npy"

    def load(self, key):
        """The stored features of ``key``, or None (absent or unreadable)."""
        path = self._path(key)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            # Absent, or damaged (a crash cannot leave half a file, because
            # writes are atomic, but a disk can): compute them again.
            return None

    def save(self, key, features):
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(key), lambda tmp: _save_npy(tmp, features))

    def __call__(self, x, compute):
        """Features of the batch ``x``, computing (``compute(x[i])``) only those not stored."""
        keys = [self.key(image) for image in x.detach().cpu().numpy()]
        found = [self.load(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            # float32 on disk whatever the forward pass ran in: under autocast
            # (amp on CUDA) it returns bfloat16, which numpy cannot hold.
            computed = compute(x[missing]).detach().float().cpu().numpy()
            for i, features in zip(missing, computed):
                self.save(keys[i], features)
                found[i] = features
        return torch.from_numpy(np.stack(found)).to(device=x.device)

    def __repr__(self):
        return f"FeatureStore({str(self.root)!r}, prefix={self.prefix!r})"


def _save_npy(path, array):
    # np.save appends ".npy" to names without it; write through a handle.
    with open(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
