"""
Audit a model for shortcuts
===========================

Phantoms whose COVID-19 class carries both the disease signal in the lungs
and a bright marker in a corner, like a hospital's label. The cross-validated
score is excellent; :func:`skxray.audit.audit` shows why: the model still
scores with the lungs hidden, and falls to chance when the borders are hidden.
"""

from skxray.audit import audit
from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier

X, y, groups = make_phantom_cxr(
    90, classes=("Covid-19", "Normal"), marker_class="Covid-19",
    image_size=32, random_state=0, return_groups=True,
)
model = CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=10, lr=3e-3,
                      batch_size=16, random_state=0)
report = audit(model, X, y, groups=groups, cv=3, random_state=0,
               checks=["leakage", "lungs", "calibration"])
print(report)

# %%
# Each finding keeps its numbers:
print(report["lungs"].details["masking"].round(2))
