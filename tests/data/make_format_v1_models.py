"""Write the tiny reference models of tests/data (run once, by hand).

``python tests/data/make_format_v1_models.py`` (from the repository root)
saves a tiny FNN and CNN (a few kB each; without the out-of-distribution
detector, whose arrays would be ten times bigger) trained on 16x16 phantoms,
in model format version 1,
with the images they were checked on and their probabilities. The test
``test_hardening.py::test_format_v1_reference_model_loads_and_predicts_the_same``
then checks that every later skxray still loads them and predicts the same.
Never regenerate them to make that test pass: a change that breaks it breaks
every model users have saved.
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import skxray  # noqa: E402
from skxray.datasets import make_phantom_cxr  # noqa: E402


def main():
    X, y = make_phantom_cxr(48, image_size=16, random_state=0)
    X_check = X[:4].astype(np.float32)
    models = {
        "fnn": skxray.FNNClassifier(hidden_layer_sizes=(4,), max_epochs=2, ood=False, random_state=0),
        "cnn": skxray.CNNClassifier(filters=(2,), dense_units=4, max_epochs=2, ood=False, random_state=0),
    }
    for name, model in models.items():
        model.fit(X, y)
        folder = model.save(HERE / f"format_v1_{name}")
        (folder / ".skxray.lock").unlink(missing_ok=True)
        np.save(folder / "check_images.npy", X_check, allow_pickle=False)
        expected = {
            "skxray_version": skxray.__version__,
            "predict_proba": model.predict_proba(X_check).tolist(),
            "predict": model.predict(X_check).tolist(),
        }
        (folder / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(folder, sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
