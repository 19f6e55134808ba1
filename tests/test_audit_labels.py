"""Tests of the audit's label-issues check (check 6) and of training with suspects removed.

Evidence: phantoms with 10% of their labels flipped at random. Most tests
audit a logistic regression on the pixels (a scikit-learn pipeline, which
the audit accepts like any classifier): it runs the whole ``audit()`` path
in a second, so several data sets can be pooled. One test audits a small
skxray CNN, and the CleanLearning tests wrap the FNNClassifier at 32 px.
"""

import os

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skxray.audit import DEFAULT_THRESHOLDS, audit
from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier, FNNClassifier

SIZE = 32
CLASSES = ("Covid-19", "Normal", "Pneumonia")
#: The check's bars on phantoms: share of the flips it flags, share of its flags that are flips.
MIN_RECALL, MIN_PRECISION = 0.80, 0.60
#: Clean phantoms: at most this share of the images flagged (observed: 0-1.3%).
MAX_CLEAN_FLAGS = 0.02


def _flatten(X):
    return X.reshape(len(X), -1)


def pixel_model():
    """Logistic regression on the pixels: out-of-fold probabilities in a fraction of a second."""
    return make_pipeline(FunctionTransformer(_flatten), LogisticRegression(C=0.1, max_iter=1000))


def flipped_phantoms(n, n_classes, seed, size=SIZE):
    """Phantoms, their true labels, patients, and labels with 10% flipped at random."""
    classes = CLASSES[:n_classes]
    X, y, groups = make_phantom_cxr(
        n, classes=classes, image_size=size, random_state=seed, return_groups=True
    )
    rng = np.random.default_rng(seed)
    flips = rng.choice(n, n // 10, replace=False)
    noisy = y.copy()
    for i in flips:
        noisy[i] = rng.choice([c for c in classes if c != y[i]])
    return X, y, groups, noisy, flips


def flagged(report):
    return set(report["labels"].details["suspects"]["image"].tolist())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_flipped_labels_are_found(n_classes):
    hits = n_flips = n_flagged = n_clean_flagged = n_images = 0
    for seed in range(4):  # pooled over four data sets, so one unlucky draw does not decide
        X, y, groups, noisy, flips = flipped_phantoms(300, n_classes, seed)
        kw = dict(groups=groups, cv=5, random_state=0, checks=["labels"])
        report = audit(pixel_model(), X, noisy, **kw)
        found = flagged(report)
        hits += len(found & set(flips.tolist()))
        n_flips += len(flips)
        n_flagged += len(found)
        finding = report["labels"]
        assert finding.figures["n_suspected"] == len(found)
        # 10% flipped is above the 5% warning level.
        assert finding.verdict == "warning", finding.explanation
        clean = audit(pixel_model(), X, y, **kw)["labels"]
        n_clean_flagged += clean.figures["n_suspected"]
        n_images += len(y)
        assert clean.figures["suspected_fraction"] <= MAX_CLEAN_FLAGS
        assert clean.verdict == "ok", clean.explanation
    assert hits / n_flips >= MIN_RECALL
    assert hits / n_flagged >= MIN_PRECISION
    assert n_clean_flagged / n_images <= MAX_CLEAN_FLAGS


def test_pairs_suspects_and_gallery_without_file_names():
    X, y, groups, noisy, flips = flipped_phantoms(300, 3, 0)
    report = audit(pixel_model(), X, noisy, groups=groups, cv=5, random_state=0, checks=["labels"])
    finding = report["labels"]
    suspects = finding.details["suspects"]
    pairs = finding.details["pairs"]
    # The pairs count the suspects, by given and suggested label.
    assert pairs["n_suspected"].sum() == len(suspects) == finding.figures["n_suspected"]
    counted = suspects.groupby(["given", "suggested"]).size()
    for row in pairs.itertuples():
        assert counted[(row.given, row.suggested)] == row.n_suspected
        assert finding.figures["suspected_by_pair"][f"{row.given} -> {row.suggested}"] == (
            row.n_suspected
        )
    assert (suspects["given"] != suspects["suggested"]).all()
    assert (suspects["given"].to_numpy() == noisy[suspects["image"]]).all()
    # Most suspect first; the score is the out-of-fold probability of the given label.
    assert suspects["label_quality"].is_monotonic_increasing
    assert (suspects["label_quality"] == suspects["p_given"]).all()
    assert list(suspects["rank"]) == list(range(1, len(suspects) + 1))
    assert "file" not in suspects  # arrays: no file names, the gallery names the index
    assert (suspects["patient"].to_numpy() == groups[suspects["image"]]).all()
    # Flipped images are the ones whose given label the suggested one corrects.
    true_of_flip = {i: y[i] for i in flips}
    right = [s == true_of_flip[i] for i, s in zip(suspects["image"], suspects["suggested"])
             if i in true_of_flip]
    assert np.mean(right) >= 0.8
    html = report.to_html()
    assert "6. Label issues" in html
    assert html.count("data:image/png;base64,") == 1  # the gallery
    first = suspects.iloc[0]
    assert f"image {first['image']} given {first['given']}, suggested {first['suggested']}" in html
    assert len(finding.arrays["suspect_images"]) == min(12, len(suspects))
    d = report.to_dict()["findings"][0]
    assert d["details"]["suspects"][0]["image"] == first["image"]


def test_file_names_reach_the_suspects_and_gallery(tmp_path):
    X, y, groups, noisy, flips = flipped_phantoms(150, 2, 1)
    paths = []
    for i, img in enumerate(X):
        path = tmp_path / f"img{i:03d}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
        paths.append(os.fspath(path))
    report = audit(
        pixel_model(),
        paths,
        noisy,
        groups=groups,
        cv=3,
        random_state=0,
        checks=["labels"],
        image_size=SIZE,
    )
    suspects = report["labels"].details["suspects"]
    assert len(suspects) > 0
    assert list(suspects["file"]) == [f"img{i:03d}.png" for i in suspects["image"]]
    assert list(suspects["path"]) == [paths[i] for i in suspects["image"]]
    html = report.to_html()
    assert f"{suspects['file'].iloc[0]} given {suspects['given'].iloc[0]}" in html


def test_skxray_cnn_end_to_end():
    # The check on a skxray network, inside a full default audit run's machinery.
    X, y, groups, noisy, flips = flipped_phantoms(240, 2, 0)
    cnn = CNNClassifier(
        filters=(8, 16),
        dense_units=16,
        max_epochs=15,
        lr=3e-3,
        batch_size=16,
        validation_fraction=None,
        ood=False,
        random_state=0,
    )
    report = audit(cnn, X, noisy, groups=groups, cv=5, random_state=0, checks=["labels"])
    found = flagged(report)
    hits = len(found & set(flips.tolist()))
    assert hits / len(flips) >= MIN_RECALL
    assert hits / len(found) >= MIN_PRECISION
    assert report["labels"].verdict == "warning"
    assert report.info["n_fits"] == 5  # the grouped CV only: the check trains nothing


def test_weak_model_is_inconclusive():
    # Two classes with clear lungs cannot be told apart: the models' doubts mean nothing.
    X, y, groups = make_phantom_cxr(
        120, classes=("Normal", "No_findings"), image_size=SIZE, random_state=0, return_groups=True
    )
    report = audit(pixel_model(), X, y, groups=groups, cv=3, random_state=0, checks=["labels"])
    finding = report["labels"]
    assert finding.verdict == "warning"
    assert "too weak" in finding.explanation


def test_warning_threshold_is_configurable():
    X, y, groups, noisy, _ = flipped_phantoms(300, 2, 0)
    kw = dict(groups=groups, cv=5, random_state=0, checks=["labels"])
    assert DEFAULT_THRESHOLDS["label_issues_warning"] == 0.05
    default = audit(pixel_model(), X, noisy, **kw)["labels"]
    assert default.verdict == "warning"
    lax = audit(pixel_model(), X, noisy, thresholds={"label_issues_warning": 0.5}, **kw)["labels"]
    assert lax.figures["n_suspected"] == default.figures["n_suspected"]
    assert lax.verdict == "ok"


# ------------------------------------------------------- training with cleanlab


def small_fnn():
    return FNNClassifier(
        hidden_layer_sizes=(32,), max_epochs=10, image_size=SIZE, ood=False, random_state=0
    )


def test_cleanlearning_wraps_fnn_unchanged():
    from cleanlab.classification import CleanLearning

    X, y, groups, noisy, flips = flipped_phantoms(200, 2, 0)
    classes = sorted(set(y))
    y_int = np.array([classes.index(v) for v in noisy])  # cleanlab wants class indices
    cl = CleanLearning(small_fnn(), seed=0, cv_n_folds=3, find_label_issues_kwargs={"n_jobs": 1})
    cl.fit(X, y_int)
    issues = cl.get_label_issues()
    assert len(issues) == len(X)
    assert {"is_label_issue", "label_quality", "given_label", "predicted_label"} <= set(issues)
    found = set(np.flatnonzero(issues["is_label_issue"]))
    assert len(found & set(flips.tolist())) >= 0.5 * len(flips)
    # The final model is our FNN, fitted on the images kept.
    assert isinstance(cl.clf, FNNClassifier)
    assert cl.clf.n_iter_ == 10
    # Trained on the images kept only.
    assert cl.clf.classes_.tolist() == [0, 1]
    pred = cl.predict(X)
    assert pred.shape == (len(X),) and set(pred) <= {0, 1}
    assert cl.predict_proba(X).shape == (len(X), 2)


def test_cleaning_is_in_training_folds_only_and_scores_use_original_labels():
    from cleanlab.classification import CleanLearning

    X, y, groups, noisy, flips = flipped_phantoms(200, 2, 1)
    classes = sorted(set(y))
    y_int = np.array([classes.index(v) for v in noisy])
    cv = StratifiedGroupKFold(3, shuffle=True, random_state=0)
    estimator = CleanLearning(
        small_fnn(), seed=0, cv_n_folds=3, find_label_issues_kwargs={"n_jobs": 1}
    )
    # The documented recipe: CleanLearning as the estimator of cross_validate.
    res = cross_validate(
        estimator, X, y_int, groups=groups, cv=cv, scoring="accuracy", return_estimator=True
    )
    true_int = np.array([classes.index(v) for v in y])
    cost_of_flips = 0.0
    for (train, test), model, score in zip(
        cv.split(X, y_int, groups), res["estimator"], res["test_score"]
    ):
        # Suspects were looked for in the training fold only ...
        assert len(model.get_label_issues()) == len(train)
        pred = model.predict(X[test])
        # ... and the score is against the test fold's labels as given, flips included;
        # scored on cleaned (here: the true) labels it would be higher.
        assert score == pytest.approx(np.mean(pred == y_int[test]))
        cost_of_flips += np.mean(pred == true_int[test]) - score
    assert cost_of_flips > 0
