"""
Where the CNN looks: Grad-CAM
=============================

:func:`skxray.explain.plot_gradcam` overlays the Grad-CAM heatmap of a
fitted :class:`skxray.models.CNNClassifier` on each image, titled with the
predicted class and its probability and, under it, the true class.
"""

import matplotlib.pyplot as plt

from skxray.datasets import make_phantom_cxr
from skxray.explain import plot_gradcam
from skxray.models import CNNClassifier

X, y = make_phantom_cxr(60, image_size=32, random_state=0)
cnn = CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=10, lr=3e-3, batch_size=16,
                    random_state=0).fit(X, y)

# Draw into pyplot axes (without ``ax=`` it builds a Figure outside pyplot,
# to save with ``fig.savefig``).
fig, axes = plt.subplots(1, 4, figsize=(9, 2.8))
plot_gradcam(cnn, X[:4], y=y[:4], ax=axes)
plt.show()
