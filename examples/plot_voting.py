"""
Soft voting of the CNN, the FNN and the ResNet-50
=================================================

:class:`~sklearn.ensemble.VotingClassifier` with ``voting="soft"`` averages
the probabilities of the three skxray models;
:func:`skxray.evaluation.compare_models` cross-validates all four on the
same folds and :func:`skxray.report.format_comparison` prints the table that
``skxray compare`` prints. The ResNet-50 runs from random initialisation
here (``weights=None``: no download) on tiny images, to stay fast.
"""

from sklearn.ensemble import VotingClassifier

from skxray.datasets import make_phantom_cxr
from skxray.evaluation import compare_models
from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier
from skxray.report import format_comparison

X, y, groups = make_phantom_cxr(60, image_size=32, random_state=0, return_groups=True)

members = [
    ("cnn", CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=10, lr=3e-3,
                          batch_size=16, random_state=0)),
    ("fnn", FNNClassifier(hidden_layer_sizes=(32,), max_epochs=10, random_state=0)),
    ("resnet50", ResNet50Classifier(weights=None, image_size=32, max_epochs=5, random_state=0)),
]
models = dict(members)
models["soft-voting"] = VotingClassifier(members, voting="soft")

table = compare_models(models, X, y, cv=2, groups=groups)
print(format_comparison(table))
