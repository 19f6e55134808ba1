"""The skxray classifier classes by name, for loading saved models.

A leaf module: ``BaseImageClassifier`` adds each classifier class defined in
``skxray.models`` here when the class is created, so code that rebuilds a
model from its saved class name (``models/_persistence.py``) can find the
class without importing the models package back (an import cycle).
"""

__all__ = ["CLASSIFIERS"]

#: Class name -> class, filled as the classifier modules are imported.
CLASSIFIERS = {}
