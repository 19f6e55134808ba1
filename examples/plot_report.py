"""
An HTML report of a comparison
==============================

:func:`skxray.evaluation.compare_models` cross-validates two models on the
same patient-grouped folds; :class:`skxray.report.Report` turns the table
and the out-of-fold probabilities into one self-contained HTML page: a
summary naming the best model with 95 % intervals, one readable table,
overlaid ROC and calibration curves, and the detail folded in an appendix
(the metrics also go to ``metrics.json``). ``skxray demo`` writes the same
report from the command line.
"""

import tempfile
from pathlib import Path

from skxray.datasets import make_phantom_cxr
from skxray.evaluation import compare_models
from skxray.models import CNNClassifier, FNNClassifier
from skxray.report import Report, format_comparison

X, y, groups = make_phantom_cxr(60, image_size=32, random_state=0, return_groups=True)
models = {
    "cnn": CNNClassifier(filters=(8, 16), dense_units=16, max_epochs=10, lr=3e-3,
                         batch_size=16, random_state=0),
    "fnn": FNNClassifier(hidden_layer_sizes=(32,), max_epochs=10, random_state=0),
}
table, oof = compare_models(models, X, y, cv=3, groups=groups, return_predictions=True)
print(format_comparison(table))  # what `skxray compare` prints

# %%
# The report: what was run, then the results, figures, data and appendix.
classes = table.attrs["classes"]
report = Report("CNN vs FNN on phantoms")
report.describe(data="60 synthetic phantoms", protocol="3-fold CV grouped by patient",
                caveats="Synthetic phantoms, not real X-rays.")
report.add_dataset_summary(X, y, groups=groups, n_images=3)
report.add_comparison(table)                # the summary names the best model
report.add_cv_figures(y, oof, classes)      # overlaid ROC and calibration curves
for name, row in table.iterrows():
    report.add_metrics(name, row.to_dict())  # folded, and in metrics.json
path = report.save(Path(tempfile.mkdtemp()) / "report.html")
print([title for _, title in report.sections])
print(path.name, sorted(p.name for p in path.parent.iterdir()))
