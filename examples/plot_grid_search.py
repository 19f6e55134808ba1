"""
Grid search over dropout and learning rate
==========================================

skxray classifiers are scikit-learn estimators, so
:class:`~sklearn.model_selection.GridSearchCV` tunes them like any other.
Here an :class:`skxray.models.FNNClassifier` over two dropout rates and two
learning rates, with patient-grouped folds.
"""

import pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from skxray.datasets import make_phantom_cxr
from skxray.models import FNNClassifier

X, y, groups = make_phantom_cxr(80, image_size=24, random_state=0, return_groups=True)

search = GridSearchCV(
    FNNClassifier(hidden_layer_sizes=(32,), max_epochs=8, random_state=0),
    param_grid={"dropout": [0.0, 0.3], "lr": [1e-3, 1e-2]},
    cv=StratifiedGroupKFold(2),
    scoring="balanced_accuracy",
)
search.fit(X, y, groups=groups)

# %%
# Every combination, best first:
results = pd.DataFrame(search.cv_results_)[
    ["param_dropout", "param_lr", "mean_test_score", "std_test_score", "rank_test_score"]
]
print(results.sort_values("rank_test_score").to_string(index=False))
print("best:", search.best_params_)
