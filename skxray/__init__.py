"""skxray: scikit-learn estimators for chest X-ray classification.

The public API is re-exported here; see the documentation for a guided tour.
"""

__version__ = "0.1.0.dev0"
