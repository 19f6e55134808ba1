"""The skxray classifiers: scikit-learn estimators that own a skorch net."""

from skxray.models._persistence import load
from skxray.models._registry import all_classifiers, classifier_names, make_classifier
from skxray.models.cnn import CNN_PRESETS, CNNClassifier
from skxray.models.fnn import FNNClassifier
from skxray.models.resnet import PretrainedWeightsError, ResNet50Classifier
from skxray.models.xrv import PretrainedCXRClassifier

__all__ = [
    "CNNClassifier",
    "CNN_PRESETS",
    "FNNClassifier",
    "ResNet50Classifier",
    "PretrainedCXRClassifier",
    "PretrainedWeightsError",
    "all_classifiers",
    "classifier_names",
    "load",
    "make_classifier",
]
