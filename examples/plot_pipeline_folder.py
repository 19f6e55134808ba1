"""
A scikit-learn Pipeline on a folder of images
==============================================

Write phantom images into a folder with one sub-folder per class and a
``manifest.csv`` of patient ids, list it with
:func:`skxray.datasets.load_image_folder`, and cross-validate a
:class:`~sklearn.pipeline.Pipeline` that reads the files
(:class:`skxray.preprocessing.ImageLoader`), equalises their histogram and
trains a :class:`skxray.models.CNNClassifier`, with folds grouped by patient.
"""

import csv
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from skxray.datasets import load_image_folder, make_phantom_cxr
from skxray.models import CNNClassifier
from skxray.preprocessing import HistogramEqualization, ImageLoader

# %%
# A folder like a real data set: ``Covid-19/`` and ``Normal/`` with PNG files,
# and a manifest giving each image's patient.
root = Path(tempfile.mkdtemp(prefix="skxray-example-"))
X, y, groups = make_phantom_cxr(60, image_size=48, random_state=0, return_groups=True)
with open(root / "manifest.csv", "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["path", "label", "patient_id"])
    for i, (img, label, patient) in enumerate(zip(X, y, groups)):
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / label / f"{i}.png")
        writer.writerow([f"{label}/{i}.png", label, f"p{patient}"])

data = load_image_folder(root)  # file paths, labels and patient ids
print(len(data.data), "files;", len(set(data.groups)), "patients")

# %%
# The pipeline reads and resizes the files (centre crop to a square), then
# equalises each image's histogram before the CNN.
pipe = make_pipeline(
    ImageLoader(image_size=32),
    HistogramEqualization(),
    CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=20, lr=3e-3, batch_size=16,
                  random_state=0),
)
scores = cross_val_score(
    pipe, data.data, data.target, groups=data.groups,
    cv=StratifiedGroupKFold(3), scoring="balanced_accuracy",
)
print("balanced accuracy per fold:", np.round(scores, 3))
