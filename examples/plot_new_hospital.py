"""
A model at a new hospital
=========================

A CNN trained on images of one scanner meets images of another. Its
out-of-distribution detector (``ood_``, fitted with the model) flags the
unfamiliar images, and :meth:`~skxray.models.CNNClassifier.predict_with_abstention`
answers ``"uncertain"`` for them instead of guessing.
"""

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier

X_train, y_train = make_phantom_cxr(80, image_size=32, scanner="A", random_state=0)
X_same, y_same = make_phantom_cxr(40, image_size=32, scanner="A", random_state=1)
X_new, y_new = make_phantom_cxr(40, image_size=32, scanner="B", random_state=2)

cnn = CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=10, lr=3e-3, batch_size=16,
                    random_state=0)
cnn.fit(X_train, y_train)

# %%
# Same scanner vs new scanner: accuracy, and how many images the model
# declines to classify.
for name, X, y in (("same scanner", X_same, y_same), ("new scanner", X_new, y_new)):
    answers = cnn.predict_with_abstention(X)
    answered = answers != "uncertain"
    accuracy = balanced_accuracy_score(y, cnn.predict(X))
    print(f"{name:13s} balanced accuracy {accuracy:.2f}; "
          f"abstained on {np.mean(~answered):.0%} of the images")
