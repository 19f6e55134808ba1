"""skxray: scikit-learn estimators for chest X-ray classification.

The public API is re-exported here; see the documentation for a guided tour.
"""

from skxray._version import __version__  # noqa: F401 (the package version)
from skxray.audit import AuditReport, audit
from skxray.datasets import load_image_folder, make_phantom_cxr
from skxray.io import ImageReadError, read_image
from skxray.models import (
    CNNClassifier,
    FNNClassifier,
    PretrainedCXRClassifier,
    PretrainedWeightsError,
    ResNet50Classifier,
    load,
)
from skxray.ood import OODDetector

__all__ = [
    "AuditReport",
    "CNNClassifier",
    "OODDetector",
    "FNNClassifier",
    "ImageReadError",
    "PretrainedCXRClassifier",
    "PretrainedWeightsError",
    "ResNet50Classifier",
    "audit",
    "load",
    "load_image_folder",
    "make_phantom_cxr",
    "read_image",
]
