"""Inputs and checks shared by several test files (imported as ``_helpers``)."""

import importlib
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: The first bytes of each image format skxray reads: random bytes after a
#: real signature reach deeper into a decoder than pure noise.
FILE_SIGNATURES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x00" * 128 + b"DICM",
]


def check_unit_image(img, shape=None):
    """What every image skxray returns must be: finite float32 in [0, 1]."""
    assert img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    if shape is not None:
        assert img.shape == shape


# Small seeded classifiers for 32-px phantoms. A test file that needs other
# settings binds them once: ``tiny_cnn = partial(_helpers.tiny_cnn, max_epochs=5)``;
# keyword arguments given at the call still win.


def tiny_cnn(**params):
    """A CNNClassifier with two small convolution blocks."""
    from skxray.models import CNNClassifier

    defaults = {"filters": (4, 8), "dense_units": 16, "max_epochs": 2, "random_state": 0}
    return CNNClassifier(**{**defaults, **params})


def tiny_fnn(**params):
    """An FNNClassifier with one hidden layer of 16 units."""
    from skxray.models import FNNClassifier

    return FNNClassifier(**{"hidden_layer_sizes": (16,), "max_epochs": 2, "random_state": 0, **params})


def tiny_resnet(**params):
    """A ResNet50Classifier without pretrained weights (no download) and a small head."""
    from skxray.models import ResNet50Classifier

    defaults = {"weights": None, "head_units": 16, "max_epochs": 2, "random_state": 0}
    return ResNet50Classifier(**{**defaults, **params})


def ood_train_phantoms(size=32):
    """300 phantoms of the detector tests, one image per patient.

    A classifier calibrates its detector on its validation split, which is
    drawn per image. With several images per patient (the phantom default
    is three) the validation images have siblings among the training
    images, look more familiar than new patients do, and the threshold comes
    out too low (22 % of new phantom patients flagged instead of 5 %; see
    the user guide on new hospitals).
    """
    from skxray.datasets import make_phantom_cxr

    return make_phantom_cxr(300, image_size=size, n_patients=300, random_state=0)


def ood_held_out_phantoms(size=32):
    """400 phantoms of another seed: unseen patients of the same scanner."""
    from skxray.datasets import make_phantom_cxr

    return make_phantom_cxr(400, image_size=size, random_state=1)


def count_backbone_images(monkeypatch, net_class):
    """Patch ``net_class._backbone_features`` to count the images it sees.

    Returns the list that receives the batch size of every backbone pass,
    to check that cached features are not recomputed.
    """
    seen = []
    original = net_class._backbone_features

    def counting(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(net_class, "_backbone_features", counting)
    return seen


def interrupt_after_epoch(monkeypatch, epoch):
    """Ctrl-C after ``epoch`` epochs of a fit with ``checkpoint_dir``, once ``last.pt`` is written.

    skorch ends the fit early, as for a real interruption; use inside
    ``monkeypatch.context()`` so that the next fit runs normally.
    """
    from skxray.models._resume import TrainingState

    original = TrainingState.on_epoch_end

    def on_epoch_end(self, net, **kwargs):
        original(self, net, **kwargs)
        if len(net.history) == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingState, "on_epoch_end", on_epoch_end)


#: Why scikit-learn's check_sample_weight_equivalence_on_dense_data fails for the
#: classifiers, declared in each file that runs their estimator checks.
WEIGHTS_ARE_NOT_REPEATS = (
    "mini-batch training: a repeated image joins another shuffled batch, draws its own "
    "dropout mask and moves the batch statistics, where a weight does none of these; "
    "tests/test_model_conventions.py checks the equivalence in one deterministic full batch"
)


@contextmanager
def benchmark_module(name):
    """``benchmarks/<name>.py`` imported for a test, with ``benchmarks/`` on ``sys.path`` only meanwhile."""
    folder = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, folder)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(folder)
