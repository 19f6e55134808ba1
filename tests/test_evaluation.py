"""Tests of skxray.evaluation: metrics, plots and the cross-validated comparison."""

import doctest
import importlib
import math

import numpy as np
import pytest
from _helpers import tiny_cnn, tiny_fnn
from matplotlib.figure import Figure
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold

import skxray.evaluation
from skxray.datasets import make_phantom_cxr
from skxray.evaluation import (
    classification_metrics,
    compare_models,
    default_positive_label,
    evaluate,
    plot_calibration,
    plot_confusion_matrix,
    plot_image_grid,
    plot_learning_curves,
    plot_precision_recall,
    plot_roc,
)

C, N = "Covid-19", "Normal"





@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(60, image_size=32, random_state=0, return_groups=True)


@pytest.fixture(scope="module")
def fitted_cnn(phantoms):
    X, y, _ = phantoms
    return tiny_cnn().fit(X, y)


# ---------------------------------------------------------------------------
# classification_metrics: values computed by hand

# Covid-19: TP=2 (0, 1), FN=1 (2), FP=1 (5), TN=3 (3, 4, 6).
BIN_TRUE = [C, C, C, N, N, N, N]
BIN_PRED = [C, C, N, N, N, C, N]
BIN_P_COVID = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.6, 0.1])
BIN_PROBA = np.column_stack([BIN_P_COVID, 1 - BIN_P_COVID])  # columns: sorted classes


def test_binary_metrics_by_hand():
    m = classification_metrics(BIN_TRUE, BIN_PRED, BIN_PROBA)
    assert m["classes"] == [C, N]
    assert m["positive_label"] == C
    assert m["n_samples"] == 7
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    covid, normal = m["per_class"][C], m["per_class"][N]
    assert covid == pytest.approx(
        {
            "sensitivity": 2 / 3,
            "specificity": 3 / 4,
            "ppv": 2 / 3,
            "npv": 3 / 4,
            "f1": 2 / 3,
            "support": 3,
        }
    )
    assert normal == pytest.approx(
        {
            "sensitivity": 3 / 4,
            "specificity": 2 / 3,
            "ppv": 3 / 4,
            "npv": 2 / 3,
            "f1": 3 / 4,
            "support": 4,
        }
    )
    # 11 of the 12 (positive, negative) pairs are ranked right: 0.4 < 0.6.
    assert m["roc_auc"] == pytest.approx(11 / 12)
    # (0.1² + 0.2² + 0.6² + 0.3² + 0.2² + 0.6² + 0.1²) / 7
    assert m["brier"] == pytest.approx(0.91 / 7)
    assert m["confusion_matrix"] == [[2, 1], [1, 3]]
    assert isinstance(m["accuracy"], float) and isinstance(covid["support"], int)


def test_binary_metrics_from_proba_only_and_1d_proba():
    full = classification_metrics(BIN_TRUE, BIN_PRED, BIN_PROBA)
    from_proba = classification_metrics(BIN_TRUE, y_proba=BIN_PROBA)
    assert from_proba == full
    # 1-D: probability of classes[1] (Normal).
    assert classification_metrics(BIN_TRUE, y_proba=1 - BIN_P_COVID) == full


def test_positive_class_in_second_column():
    # Sorted classes put "Normal" first: the Covid column is the second one.
    y_true = ["covid", "covid", "Normal", "Normal"]
    proba = np.array([[0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.9, 0.1]])  # columns: Normal, covid
    m = classification_metrics(y_true, y_proba=proba)
    assert m["classes"] == ["Normal", "covid"]
    assert m["positive_label"] == "covid"
    assert m["roc_auc"] == pytest.approx(3 / 4)  # 0.3 < 0.4 is the one wrong pair
    assert m["brier"] == pytest.approx((0.2**2 + 0.7**2 + 0.4**2 + 0.1**2) / 4)


def test_explicit_positive_label():
    m = classification_metrics(BIN_TRUE, BIN_PRED, BIN_PROBA, positive_label=N)
    assert m["positive_label"] == N
    assert m["roc_auc"] == pytest.approx(11 / 12)  # binary AUC is symmetric
    # The per-class figures do not depend on the positive label.
    assert m["per_class"] == classification_metrics(BIN_TRUE, BIN_PRED, BIN_PROBA)["per_class"]


def test_three_class_metrics_by_hand():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    m = classification_metrics(y_true, y_pred)
    assert m["positive_label"] == "b"  # no covid: classes[1]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    expected = {
        "a": {"sensitivity": 1 / 2, "specificity": 3 / 4, "ppv": 1 / 2, "npv": 3 / 4},
        "b": {"sensitivity": 1.0, "specificity": 3 / 4, "ppv": 2 / 3, "npv": 1.0},
        "c": {"sensitivity": 1 / 2, "specificity": 1.0, "ppv": 1.0, "npv": 4 / 5},
    }
    for label, values in expected.items():
        got = {k: m["per_class"][label][k] for k in values}
        assert got == pytest.approx(values), label
        assert m["per_class"][label]["support"] == 2
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] is None and m["brier"] is None


def test_three_class_proba_metrics_by_hand():
    y_true = ["a", "b", "c", "a", "b", "c"]
    uniform = np.full((6, 3), 1 / 3)
    m = classification_metrics(y_true, y_proba=uniform)
    assert m["roc_auc"] == pytest.approx(0.5)
    # Each row: (2/3)² + 2 (1/3)² = 6/9 over 3 classes.
    assert m["brier"] == pytest.approx(2 / 9)
    perfect = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.7 + 0.1
    m = classification_metrics(y_true, y_proba=perfect)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["brier"] == pytest.approx((0.2**2 + 2 * 0.1**2) / 3)
    assert m["accuracy"] == 1.0


def test_multiclass_brier_reduces_to_binary_definition():
    # Mean over the one-hot matrix equals the positive-class Brier score for 2 classes.
    one_hot = (np.asarray(BIN_TRUE)[:, None] == np.array([C, N])).astype(float)
    assert np.mean((BIN_PROBA - one_hot) ** 2) == pytest.approx(
        classification_metrics(BIN_TRUE, y_proba=BIN_PROBA)["brier"]
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_undefined_ratios_are_nan():
    m = classification_metrics([C, C, N, N], [N, N, N, N])
    assert math.isnan(m["per_class"][C]["ppv"])  # Covid never predicted
    assert m["per_class"][C]["sensitivity"] == 0.0
    m = classification_metrics([C, C], y_proba=[[0.6, 0.4], [0.7, 0.3]], classes=[C, N])
    assert math.isnan(m["roc_auc"])


@pytest.mark.parametrize(
    "classes, expected",
    [
        (["Covid-19", "Normal"], "Covid-19"),
        (["Normal", "covid"], "covid"),
        (["NORMAL", "PNEUMONIA", "COVID19"], "COVID19"),
        (["No_findings", "Pneumonia"], "Pneumonia"),
        ([0, 1], 1),
        (np.array(["a", "b", "c"]), "b"),
    ],
)
def test_default_positive_label(classes, expected):
    assert default_positive_label(classes) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y_true=BIN_TRUE), "Pass y_pred, y_proba or both"),
        (dict(y_true=BIN_TRUE, y_pred=BIN_PRED[:-1]), "y_pred has 6 labels"),
        (dict(y_true=BIN_TRUE, y_proba=np.ones((7, 3)) / 3), "y_proba has 3 columns"),
        (dict(y_true=BIN_TRUE, y_proba=BIN_PROBA, classes=[C, "Other"]), "y_true holds label"),
        (dict(y_true=BIN_TRUE, y_pred=BIN_PRED, positive_label="Pneumonia"), "positive_label"),
        (dict(y_true=BIN_TRUE, y_proba=BIN_PROBA[:5]), r"y_proba must have shape"),
        (dict(y_true=["a", "b", "c"], y_proba=[0.1, 0.2, 0.3]), "y_proba is 1-D"),
        (dict(y_true=BIN_TRUE, y_pred=BIN_PRED, classes=[C]), "classes must hold at least two"),
    ],
)
def test_classification_metrics_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(**kwargs)


def test_default_positive_label_needs_two_classes():
    with pytest.raises(ValueError, match="classes must hold at least two"):
        default_positive_label(["Normal"])


def test_evaluate_matches_classification_metrics(phantoms, fitted_cnn):
    X, y, _ = phantoms
    m = evaluate(fitted_cnn, X, y)
    expected = classification_metrics(
        y, fitted_cnn.predict(X), fitted_cnn.predict_proba(X), classes=fitted_cnn.classes_
    )
    np.testing.assert_equal(m, expected)  # NaN-aware, nested
    assert m["positive_label"] == C
    assert 0.0 <= m["roc_auc"] <= 1.0


def test_evaluate_unfitted_raises(phantoms):
    X, y, _ = phantoms
    with pytest.raises(NotFittedError):
        evaluate(tiny_fnn(), X, y)


# ---------------------------------------------------------------------------
# compare_models


# Cross-validation fits many models: one epoch each, no held-out validation scoring.
FAST = dict(max_epochs=1, validation_fraction=None)


def voting():
    return VotingClassifier([("cnn", tiny_cnn(**FAST)), ("fnn", tiny_fnn(**FAST))], voting="soft")


@pytest.mark.parametrize("cv, grouped", [(2, True), (3, False)])
def test_compare_models_cnn_fnn_voting(phantoms, cv, grouped):
    X, y, groups = phantoms
    models = {"CNN": tiny_cnn(**FAST), "FNN": tiny_fnn(**FAST), "Vote": voting()}
    table, oof = compare_models(
        models, X, y, cv=cv, groups=groups if grouped else None, return_predictions=True
    )
    assert table.index.tolist() == ["CNN", "FNN", "Vote"]
    metrics = ["accuracy", "balanced_accuracy", "roc_auc", "brier"]
    metrics += [f"{k}_{c}" for k in ("sensitivity", "ppv") for c in (C, N)]
    metrics += ["ood_rate", "fit_time", "predict_time"]
    assert table.columns.tolist() == [f"{s}_{m}" for m in metrics for s in ("mean", "std")]
    # The skxray models' detectors report on their test folds; a voting
    # ensemble has none.
    assert table.loc[["CNN", "FNN"], "mean_ood_rate"].between(0, 1).all()
    assert np.isnan(table.loc["Vote", "mean_ood_rate"])
    assert (table.filter(like="std_").fillna(0) >= 0).all().all()
    assert (table["mean_fit_time"] > 0).all()
    assert (table["mean_predict_time"] > 0).all()
    for column in ("mean_accuracy", "mean_roc_auc", "mean_brier", f"mean_sensitivity_{C}"):
        assert table[column].between(0, 1).all(), column
    per_fold = table.attrs.pop("per_fold")
    assert table.attrs == {"classes": [C, N], "positive_label": C, "n_splits": cv}
    # One value per fold and metric; the table's mean and std are theirs.
    assert list(per_fold) == ["CNN", "FNN", "Vote"]
    for name, values in per_fold.items():
        assert list(values) == metrics
        for metric, folds in values.items():
            assert len(folds) == cv and all(isinstance(v, float) for v in folds)
            kept = np.asarray(folds)[~np.isnan(folds)]
            if kept.size:
                assert table.loc[name, f"mean_{metric}"] == pytest.approx(kept.mean())
                assert table.loc[name, f"std_{metric}"] == pytest.approx(kept.std())
    assert set(oof) == {"CNN", "FNN", "Vote"}
    for proba in oof.values():
        assert proba.shape == (60, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # The estimators passed in are left unfitted (clones are fitted).
    assert not hasattr(models["CNN"], "classes_")


class GroupLeakProbe(ClassifierMixin, BaseEstimator):
    """Predicts 1 in column 0 for the test rows whose patient was in the training rows.

    ``X`` holds row numbers, so the probe sees which rows it was trained on.
    """

    def __init__(self, groups=None):
        self.groups = groups

    def _groups_of(self, X):
        return np.asarray(self.groups)[np.asarray(X)[:, 0].astype(int)]

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.train_groups_ = set(self._groups_of(X).tolist())
        return self

    def predict_proba(self, X):
        leak = np.array([g in self.train_groups_ for g in self._groups_of(X).tolist()], float)
        return np.column_stack([leak, 1.0 - leak])


@pytest.mark.parametrize("cv", [2, 3])
def test_compare_models_groups_keep_patients_in_one_fold(phantoms, cv):
    _, y, groups = phantoms
    rows = np.arange(len(y))[:, None]
    probe = {"probe": GroupLeakProbe(groups)}
    _, grouped = compare_models(probe, rows, y, cv=cv, groups=groups, return_predictions=True)
    assert grouped["probe"][:, 0].max() == 0.0  # no test patient seen in training
    _, plain = compare_models(probe, rows, y, cv=cv, return_predictions=True)
    assert plain["probe"][:, 0].max() == 1.0  # image-level folds split patients


def test_compare_models_mean_is_mean_of_folds(phantoms):
    X, y, groups = phantoms
    splitter = GroupKFold(n_splits=3)
    table, oof = compare_models(
        {"FNN": tiny_fnn()}, X, y, cv=splitter, groups=groups, return_predictions=True
    )
    accs = [
        classification_metrics(y[test], y_proba=oof["FNN"][test], classes=[C, N])["accuracy"]
        for _, test in splitter.split(X, y, groups)
    ]
    assert table.loc["FNN", "mean_accuracy"] == pytest.approx(np.mean(accs))
    assert table.loc["FNN", "std_accuracy"] == pytest.approx(np.std(accs))
    assert table.attrs["n_splits"] == 3


def test_compare_models_ungrouped_is_reproducible_and_three_class():
    X, y = make_phantom_cxr(
        30, classes=("Covid-19", "Normal", "Pneumonia"), image_size=16, random_state=1
    )
    first, oof1 = compare_models({"FNN": tiny_fnn()}, X, y, cv=3, return_predictions=True)
    second, oof2 = compare_models({"FNN": tiny_fnn()}, X, y, cv=3, return_predictions=True)
    np.testing.assert_allclose(oof1["FNN"], oof2["FNN"])
    assert "mean_sensitivity_Pneumonia" in first.columns
    assert first.attrs["positive_label"] == C
    assert oof1["FNN"].shape == (30, 3)
    cols = [c for c in first.columns if "time" not in c]
    np.testing.assert_allclose(first[cols].to_numpy(), second[cols].to_numpy())
    # A different random_state shuffles other folds.
    _, oof3 = compare_models(
        {"FNN": tiny_fnn()}, X, y, cv=3, random_state=5, return_predictions=True
    )
    assert not np.allclose(oof1["FNN"], oof3["FNN"])


def test_compare_models_accepts_paths_and_splitter(tmp_path):
    X, y = make_phantom_cxr(24, image_size=16, random_state=0)
    paths = []
    for i, img in enumerate(X):
        path = tmp_path / f"{i}.png"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    table = compare_models(
        {"FNN": tiny_fnn(image_size=16, max_epochs=1)},
        paths,
        y,
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    )
    assert table.shape[0] == 1 and table["mean_fit_time"].iloc[0] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(estimators={}), "estimators must be a non-empty dict"),
        (dict(estimators=[tiny_fnn()]), "estimators must be a non-empty dict"),
        (dict(estimators={"x": object()}), r"estimators\['x'\] must be a classifier"),
        (dict(estimators={"FNN": tiny_fnn()}, cv=1), "cv must be an int >= 2"),
        (dict(estimators={"FNN": tiny_fnn()}, cv="five"), "cv must be an int >= 2"),
        (dict(estimators={"FNN": tiny_fnn()}, groups=[1, 2]), "groups has 2 entries"),
        (dict(estimators={"FNN": tiny_fnn()}, positive_label="Pneumonia"), "positive_label"),
    ],
)
def test_compare_models_errors(phantoms, kwargs, match):
    X, y, _ = phantoms
    with pytest.raises(ValueError, match=match):
        compare_models(X=X, y=y, **kwargs)


def test_compare_models_length_mismatch(phantoms):
    X, y, _ = phantoms
    with pytest.raises(ValueError, match="y has 59 labels but X has 60"):
        compare_models({"FNN": tiny_fnn()}, X, y[:-1])


# ---------------------------------------------------------------------------
# plots


def test_plot_image_grid_titles_and_colormap(phantoms):
    X, y, _ = phantoms
    fig = plot_image_grid(X, y, n=5, random_state=0, ncols=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    titles = [ax.get_title() for ax in fig.axes]
    assert set(titles) <= {C, N}
    for ax in fig.axes:
        assert ax.images[0].get_cmap().name == "gray"
        assert ax.images[0].get_array().shape == (32, 32)
    # Same seed, same draw; the titles are the labels of the drawn images.
    again = plot_image_grid(X, y, n=5, random_state=0, ncols=2)
    assert [ax.get_title() for ax in again.axes] == titles
    idx = np.random.RandomState(0).choice(60, size=5, replace=False)
    assert titles == list(y[idx])


def test_plot_image_grid_shows_all_when_n_too_large_and_index_titles():
    X, _ = make_phantom_cxr(4, image_size=16, random_state=0)
    fig = plot_image_grid(X[:, None], n=10, random_state=0)
    assert len(fig.axes) == 4
    assert sorted(ax.get_title() for ax in fig.axes) == ["#0", "#1", "#2", "#3"]


def test_plot_image_grid_rgb_and_paths(tmp_path):
    X, y = make_phantom_cxr(3, image_size=16, random_state=0)
    rgb = np.repeat(X[:, None], 3, axis=1)
    fig = plot_image_grid(rgb, y, n=2, random_state=0)
    assert fig.axes[0].images[0].get_array().shape == (16, 16, 3)
    paths = []
    for i, img in enumerate(X):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((img * 255).round().astype(np.uint8)).save(paths[-1])
    fig = plot_image_grid(paths, y, n=3, random_state=0)
    assert len(fig.axes) == 3
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()).std() > 0, True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must be an int >= 1"),
        (dict(ncols=0), "ncols must be an int >= 1"),
        (dict(y=["a"]), "y has 1 labels but X has 4"),
    ],
)
def test_plot_image_grid_errors(kwargs, match):
    X = np.zeros((4, 8, 8))
    with pytest.raises(ValueError, match=match):
        plot_image_grid(X, **kwargs)
    with pytest.raises(ValueError, match="X must be images"):
        plot_image_grid(np.zeros((4, 8)))


def best_epoch_line(ax):
    lines = [line for line in ax.lines if line.get_label().startswith("best epoch")]
    assert len(lines) == 1
    return lines[0]


def test_plot_learning_curves_marks_min_valid_loss():
    history = [
        {"epoch": 1, "train_loss": 0.9, "valid_loss": 0.8, "valid_acc": 0.5},
        {"epoch": 2, "train_loss": 0.7, "valid_loss": 0.5, "valid_acc": 0.7},
        {"epoch": 3, "train_loss": 0.4, "valid_loss": 0.6, "valid_acc": 0.8},
    ]
    fig = plot_learning_curves(history)
    ax_loss, ax_acc = fig.axes
    assert (ax_loss.get_title(), ax_acc.get_title()) == ("Loss", "Validation accuracy")
    for ax in (ax_loss, ax_acc):
        line = best_epoch_line(ax)
        assert list(line.get_xdata()) == [2, 2]
        assert line.get_label() == "best epoch (2)"
    labels = [line.get_label() for line in ax_loss.lines]
    assert labels[:2] == ["train loss", "validation loss"]
    np.testing.assert_allclose(ax_loss.lines[1].get_ydata(), [0.8, 0.5, 0.6])
    np.testing.assert_allclose(ax_acc.lines[0].get_ydata(), [0.5, 0.7, 0.8])


def test_plot_learning_curves_without_validation_uses_train_loss():
    history = [
        {"epoch": 1, "train_loss": 0.9, "valid_loss": None, "valid_acc": None},
        {"epoch": 2, "train_loss": 0.6, "valid_loss": None, "valid_acc": None},
        {"epoch": 3, "train_loss": 0.7, "valid_loss": None, "valid_acc": None},
    ]
    fig = plot_learning_curves(history)
    assert list(best_epoch_line(fig.axes[0]).get_xdata()) == [2, 2]
    assert [line.get_label() for line in fig.axes[0].lines] == ["train loss", "best epoch (2)"]
    assert "no validation set" in [t.get_text() for t in fig.axes[1].texts]


def test_plot_learning_curves_from_estimator(fitted_cnn):
    fig = plot_learning_curves(fitted_cnn)
    history = fitted_cnn.history_
    best = min(history, key=lambda r: r["valid_loss"])["epoch"]
    assert list(best_epoch_line(fig.axes[0]).get_xdata()) == [best, best]
    assert len(fig.axes[0].lines[0].get_xdata()) == len(history)


def test_plot_learning_curves_errors(fitted_cnn):
    with pytest.raises(NotFittedError):
        plot_learning_curves(tiny_cnn())
    with pytest.raises(ValueError, match="history is empty"):
        plot_learning_curves([])
    with pytest.raises(TypeError, match="has no history_"):
        plot_learning_curves(LogisticRegression().fit([[0], [1]], [0, 1]))
    with pytest.raises(TypeError, match="list of per-epoch dicts"):
        plot_learning_curves("history")


def test_plot_confusion_matrix_forms(phantoms, fitted_cnn):
    X, y, _ = phantoms
    fig = plot_confusion_matrix(fitted_cnn, X, y, name="CNN")
    ax = fig.axes[0]
    assert ax.get_title() == "Confusion matrix: CNN"
    assert [t.get_text() for t in ax.get_xticklabels()] == [C, N]
    counts = sorted(int(t.get_text()) for t in ax.texts)
    expected = classification_metrics(y, fitted_cnn.predict(X))["confusion_matrix"]
    assert counts == sorted(np.ravel(expected).tolist())

    fig = plot_confusion_matrix(y_true=BIN_TRUE, y_pred=BIN_PRED, normalize="true")
    assert fig.axes[0].get_title() == "Confusion matrix"
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.25", "0.33", "0.67", "0.75"]


@pytest.mark.parametrize("func", [plot_confusion_matrix, plot_roc, plot_calibration])
def test_plot_input_form_errors(func, phantoms, fitted_cnn):
    X, y, _ = phantoms
    with pytest.raises(ValueError, match="pass estimator, X and y, or y_true"):
        func()
    with pytest.raises(ValueError, match="not both"):
        func(fitted_cnn, X, y, y_true=y)
    with pytest.raises(ValueError, match="X and y are required"):
        func(fitted_cnn)


THREE_TRUE = ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
THREE_PROBA = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.3, 0.6],
        [0.4, 0.4, 0.2],
        [0.3, 0.3, 0.4],
        [0.2, 0.2, 0.6],
        [0.5, 0.1, 0.4],
        [0.1, 0.8, 0.1],
        [0.3, 0.5, 0.2],
    ]
)


@pytest.mark.parametrize(
    "func, binary_title, multi_title",
    [
        (plot_roc, "ROC curve (positive: Covid-19)", "ROC curves (one-vs-rest)"),
        (
            plot_precision_recall,
            "Precision-recall curve (positive: Covid-19)",
            "Precision-recall curves (one-vs-rest)",
        ),
        (plot_calibration, "Calibration (positive: Covid-19)", "Calibration (one-vs-rest)"),
    ],
)
def test_curve_plots(func, binary_title, multi_title):
    fig = func(y_true=BIN_TRUE, y_proba=BIN_PROBA, name="CNN")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == binary_title
    labels = ax.get_legend_handles_labels()[1]
    assert sum(label.startswith("CNN") for label in labels) == 1

    fig = func(y_true=THREE_TRUE, y_proba=THREE_PROBA)
    ax = fig.axes[0]
    assert ax.get_title() == multi_title
    labels = ax.get_legend_handles_labels()[1]
    for c in "abc":
        assert sum(label.startswith(f"{c} vs rest") for label in labels) == 1


def test_plot_roc_curve_matches_auc():
    fig = plot_roc(y_true=BIN_TRUE, y_proba=BIN_PROBA)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "Covid-19 (AUC = 0.92)" in labels  # 11/12
    fig = plot_roc(y_true=BIN_TRUE, y_proba=BIN_PROBA, positive_label=N)
    assert fig.axes[0].get_title() == "ROC curve (positive: Normal)"


def test_plots_from_estimator_and_on_given_axes(phantoms, fitted_cnn):
    X, y, _ = phantoms
    fig = Figure()
    axes = fig.subplots(1, 3)
    assert plot_roc(fitted_cnn, X, y, ax=axes[0]) is fig
    assert plot_calibration(fitted_cnn, X, y, ax=axes[1], n_bins=3) is fig
    assert plot_confusion_matrix(fitted_cnn, X, y, ax=axes[2]) is fig
    assert axes[0].get_title() == "ROC curve (positive: Covid-19)"


def test_curve_plot_errors():
    with pytest.raises(ValueError, match="y_proba has 3 columns"):
        plot_roc(y_true=BIN_TRUE, y_proba=np.ones((7, 3)) / 3)
    with pytest.raises(ValueError, match="at least two classes"):
        plot_roc(y_true=[C, C], y_proba=[[0.5, 0.5], [0.4, 0.6]], classes=[C, N])
    with pytest.raises(ValueError, match="n_bins must be an int >= 2"):
        plot_calibration(y_true=BIN_TRUE, y_proba=BIN_PROBA, n_bins=1)
    with pytest.raises(ValueError, match="positive_label"):
        plot_roc(y_true=BIN_TRUE, y_proba=BIN_PROBA, positive_label="Pneumonia")


# ---------------------------------------------------------------------------
# Documentation examples


@pytest.mark.parametrize(
    "module", ["_metrics", "_displays", "_curves", "_plot", "_compare", "_external"]
)
def test_docstring_examples(module):
    # The package's functions live in its modules: run each module's examples.
    mod = importlib.import_module(f"skxray.evaluation.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_internal_interval_of_few_folds_stays_a_rate():
    # With 3 folds the t half-width is 4.3 standard errors: a wide spread of
    # fold accuracies once gave "64.5 (24.0-105.1)" in the evaluate report.
    from skxray.evaluation import external_validation_figures
    from skxray.report import mean_interval

    external = {
        "per_class": {"Covid-19": {"support": 30, "sensitivity": {"value": 1.0, "ci95": [0.886, 1.0]}}},
        "accuracy": {"value": 1.0, "ci95": [0.886, 1.0]},
    }
    internal = {"mean_accuracy": 0.645, "std_accuracy": 0.13, "mean_sensitivity_Covid-19": 0.9,
                "std_sensitivity_Covid-19": 0.05}
    inside, _ = external_validation_figures(external, internal, n_splits=3)
    mean, low, high = inside["accuracy"]
    assert mean == 0.645 and 0.0 <= low < mean < high == 1.0
    # The report's table and the evaluate report give the same interval.
    assert inside["sensitivity_Covid-19"][1:] == mean_interval(0.9, 0.05, 3)
    assert inside["accuracy"][1] == pytest.approx(0.645 - 4.302653 * 0.13 / 2 ** 0.5, abs=1e-5)


def test_external_validation_from_predictions_equals_the_estimator_path(fitted_cnn, phantoms):
    # The Dask path computes external validation from predictions made on
    # workers; both paths must give the same dict, notes and shift test included.
    from skxray.evaluation import external_validation, external_validation_from_predictions
    from skxray.ood import shift_test

    X, y = phantoms[0][:40], phantoms[1][:40]
    assert fitted_cnn.ood_ is not None
    direct = external_validation(fitted_cnn, X, y, n_permutations=200, random_state=0)
    proba = fitted_cnn.predict_proba(X)
    rebuilt = external_validation_from_predictions(
        y, fitted_cnn.classes_[proba.argmax(axis=1)], proba, classes=fitted_cnn.classes_,
        answers=fitted_cnn.predict_with_abstention(X),
        shift_test=lambda: shift_test(fitted_cnn, X, n_permutations=200, random_state=0),
        reasons=fitted_cnn.predict_with_abstention(X, return_reasons=True)[1],
    )
    import json

    # As JSON: NaN-valued metrics compare equal there, not in a dict.
    assert json.dumps(rebuilt, sort_keys=True, default=str) == json.dumps(direct, sort_keys=True, default=str)
    assert direct["abstention"] is not None and direct["shift_test"] is not None
    # Why the images were "uncertain": each counted under every part that flagged it.
    why = direct["abstention_reasons"]
    assert set(why) == {"lung check", "distance", "low confidence"}
    uncertain = direct["abstention"]["count"]
    assert max(why.values()) <= uncertain <= sum(why.values())
    rotated = np.rot90(X, 1, axes=(-2, -1)).copy()
    turned = external_validation(fitted_cnn, rotated, y, n_permutations=50, random_state=0)
    assert turned["abstention_reasons"]["distance"] + turned["abstention_reasons"]["lung check"] > 0


def test_external_validation_from_predictions_without_detector_or_enough_images():
    from skxray.evaluation import external_validation_from_predictions

    def never():
        raise AssertionError("the shift test must not run")

    y = np.array(["a", "a", "a"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    no_detector = external_validation_from_predictions(
        y, np.array(["a", "b", "a"]), proba, classes=["a", "b"], shift_test=never)
    assert no_detector["abstention"] is None and no_detector["shift_test"] is None
    assert any(note.startswith("No out-of-distribution detector") for note in no_detector["notes"])
    assert no_detector["per_class"]["a"]["sensitivity"]["count"] == 2
    few = external_validation_from_predictions(
        y, np.array(["a", "b", "a"]), proba, classes=["a", "b"],
        answers=np.array(["a", "uncertain", "a"], dtype=object), shift_test=never)
    assert few["abstention"]["count"] == 1
    assert any(note.startswith("Shift test skipped") for note in few["notes"])
    assert not any(note.startswith("No out-of-distribution detector") for note in few["notes"])


def test_external_validation_checks_labels_before_predicting():
    from skxray.evaluation import external_validation

    class Refuses(ClassifierMixin, BaseEstimator):
        classes_ = np.array(["a", "b"])

        def fit(self, X, y):
            return self

        def __sklearn_is_fitted__(self):
            return True

        def predict_proba(self, X):
            raise AssertionError("predicted before the labels were checked")

    with pytest.raises(ValueError, match=r"label\(s\) \['c'\]"):
        external_validation(Refuses(), np.zeros((2, 8, 8)), ["a", "c"])


# ---------------------------------------------------------------------------
# Displays: compute once (from_*), draw anywhere (plot(ax))


class CountingClassifier(ClassifierMixin, BaseEstimator):
    """A 'fitted' classifier of fixed probabilities that counts its predict_proba calls."""

    def __init__(self, proba, classes):
        self.proba = proba
        self.classes = classes

    def fit(self, X, y):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return np.asarray(self.classes)

    def predict_proba(self, X):
        self.calls_ = getattr(self, "calls_", 0) + 1
        return np.asarray(self.proba)[: len(X)]


def _counting(proba, classes):
    return CountingClassifier(proba, classes), np.zeros((len(proba), 4, 4))


CURVE_DISPLAYS = [
    (skxray.evaluation.RocCurvesDisplay, ("fpr", "tpr", "roc_auc", "curve_names")),
    (
        skxray.evaluation.PrecisionRecallCurvesDisplay,
        ("precision", "recall", "average_precision", "prevalence", "curve_names"),
    ),
    (skxray.evaluation.ReliabilityDisplay, ("prob_true", "prob_pred", "y_prob", "curve_names")),
]


def _same(a, b):
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


@pytest.mark.parametrize("display, fields", CURVE_DISPLAYS)
@pytest.mark.parametrize("y_true, proba", [(BIN_TRUE, BIN_PROBA), (THREE_TRUE, THREE_PROBA)])
def test_curve_display_from_estimator_equals_from_predictions(display, fields, y_true, proba):
    classes = sorted(set(y_true))
    est, X = _counting(proba, classes)
    from_est = display.from_estimator(est, X, y_true, name="m")
    from_pred = display.from_predictions(y_true, proba, classes=classes, name="m")
    for field in fields + ("positive_label",):
        assert _same(getattr(from_est, field), getattr(from_pred, field)), field
    assert len(from_est.curve_names) == len(classes) - (len(classes) == 2)


@pytest.mark.parametrize("display, fields", CURVE_DISPLAYS)
def test_display_plots_twice_without_recomputing(display, fields, monkeypatch):
    est, X = _counting(THREE_PROBA, ["a", "b", "c"])
    disp = display.from_estimator(est, X, THREE_TRUE)
    assert est.calls_ == 1
    first_ax = disp.ax_
    # Drawing again must use the stored curves: no metric may run, no prediction.
    import skxray.evaluation._curves as displays

    for fn in ("roc_curve", "auc", "precision_recall_curve", "average_precision_score",
               "calibration_curve"):
        monkeypatch.setattr(displays, fn, lambda *a, **k: pytest.fail("recomputed"))
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert disp.plot(ax=axes[1]) is disp
    assert disp.ax_ is axes[1] and disp.figure_ is fig and disp.ax_ is not first_ax
    assert len(axes[0].lines) == 0 and len(axes[1].get_lines()) >= 3
    disp.plot()  # and on a new figure
    assert disp.figure_ is not fig and est.calls_ == 1
    assert len(disp.curves_) == len(disp.lines_) == 3


def test_three_class_roc_display_draws_what_plot_roc_draws():
    disp = skxray.evaluation.RocCurvesDisplay.from_predictions(THREE_TRUE, THREE_PROBA)
    assert disp.positive_label is None and len(disp.curves_) == 3
    labels = disp.ax_.get_legend_handles_labels()[1]
    assert sorted(lab.split(" (")[0] for lab in labels) == [
        "Chance level", "a vs rest", "b vs rest", "c vs rest"]
    ax = plot_roc(y_true=THREE_TRUE, y_proba=THREE_PROBA).axes[0]
    assert ax.get_legend_handles_labels()[1] == labels
    assert ax.get_title() == disp.ax_.get_title() == "ROC curves (one-vs-rest)"
    assert len(ax.lines) == 4  # three curves and the chance line
    drawn = {line.get_label(): line.get_xdata() for line in ax.lines}
    for line, fpr in zip(disp.lines_, disp.fpr, strict=True):
        np.testing.assert_array_equal(drawn[line.get_label()], fpr)


def test_cv_displays_drop_nan_rows_and_match_each_model():
    ev = skxray.evaluation
    y = np.array(BIN_TRUE + [C])
    p_a = np.vstack([BIN_PROBA, [np.nan, np.nan]])  # the last image: in no test fold
    p_b = np.vstack([BIN_PROBA[::-1], [0.5, 0.5]])
    roc = ev.RocCurvesDisplay.from_cv_predictions(y, {"A": p_a, "B": p_b})
    assert roc.curve_names == ["A", "B"] and roc.positive_label == C
    alone = ev.RocCurvesDisplay.from_predictions(BIN_TRUE, BIN_PROBA)
    np.testing.assert_array_equal(roc.fpr[0], alone.fpr[0])
    assert roc.roc_auc[0] == pytest.approx(11 / 12)
    cal = ev.ReliabilityDisplay.from_cv_predictions(y, {"A": p_a, "B": p_b}, n_bins=2)
    assert len(cal.y_prob[0]) == 7 and len(cal.y_prob[1]) == 8
    cms = ev.ConfusionMatricesDisplay.from_cv_predictions(y, {"A": p_a, "B": p_b})
    expected = classification_metrics(BIN_TRUE, y_proba=BIN_PROBA)["confusion_matrix"]
    assert cms.confusion_matrices[0].tolist() == expected
    assert [ax.get_title() for ax in cms.axes_] == ["A", "B"] and len(cms.figure_.axes) == 2
    with pytest.raises(ValueError, match=r"predictions\['B'\] has shape"):
        ev.RocCurvesDisplay.from_cv_predictions(y, {"A": p_a, "B": p_b[:3]})
    with pytest.raises(TypeError, match="non-empty dict"):
        ev.ConfusionMatricesDisplay.from_cv_predictions(y, {})


def test_confusion_display_forms_agree_and_plot_on_given_axes(phantoms, fitted_cnn):
    X, y, _ = phantoms
    ev = skxray.evaluation
    from_est = ev.ConfusionMatricesDisplay.from_estimator(fitted_cnn, X, y, name="CNN")
    from_pred = ev.ConfusionMatricesDisplay.from_predictions(y, fitted_cnn.predict(X), name="CNN")
    np.testing.assert_array_equal(from_est.confusion_matrices[0], from_pred.confusion_matrices[0])
    assert from_est.display_labels == list(fitted_cnn.classes_)
    fig = Figure()
    ax = fig.subplots()
    assert from_est.plot(ax=ax).ax_ is ax and ax.get_title() == "Confusion matrix: CNN"
    assert len(ax.texts) == 4


def test_learning_curves_display_from_estimator_equals_from_history(fitted_cnn):
    ev = skxray.evaluation
    from_est = ev.LearningCurvesDisplay.from_estimator(fitted_cnn)
    from_hist = ev.LearningCurvesDisplay.from_history(fitted_cnn.history_)
    np.testing.assert_array_equal(from_est.train_loss, from_hist.train_loss)
    assert from_est.best_epoch == from_hist.best_epoch
    fig = Figure()
    axes = fig.subplots(2, 2)
    from_hist.plot(ax=axes[1])
    assert list(from_hist.axes_) == list(axes[1]) and len(axes[0, 0].lines) == 0
    assert [line.get_xdata()[0] for line in from_hist.best_lines_] == [from_hist.best_epoch] * 2
    with pytest.raises(TypeError, match="use from_estimator"):
        ev.LearningCurvesDisplay.from_history(fitted_cnn)
    with pytest.raises(TypeError, match="use from_history"):
        ev.LearningCurvesDisplay.from_estimator(fitted_cnn.history_)


def test_image_grid_display_draws_its_sample_again(phantoms):
    X, y, _ = phantoms
    disp = skxray.evaluation.ImageGridDisplay.from_images(X, y, n=3, random_state=0)
    assert [str(y[i]) for i in disp.indices] == disp.titles
    fig = Figure()
    axes = fig.subplots(2, 2)
    disp.plot(ax=axes)
    assert [ax.get_title() for ax in axes.ravel()[:3]] == disp.titles
    assert axes[1, 1].get_title() == "" and len(axes[1, 1].images) == 0
    assert axes[1, 1].axison and len(disp.axes_) == 3  # the extra axes untouched
    with pytest.raises(ValueError, match="at least 3 axes"):
        disp.plot(ax=axes[0])


def test_external_validation_display_forms_agree():
    ev = skxray.evaluation
    y = np.array(["a"] * 6 + ["b"] * 4)
    y_pred = np.array(["a"] * 5 + ["b"] * 3 + ["a"] * 2)
    internal = {"mean_accuracy": 0.9, "std_accuracy": 0.05, "mean_sensitivity_a": 0.8,
                "std_sensitivity_a": 0.1}
    disp = ev.ExternalValidationDisplay.from_predictions(y, y_pred, classes=["a", "b"],
                                                         internal=internal, n_splits=5)
    result = ev.external_validation_from_predictions(y, y_pred, classes=["a", "b"])
    inside, outside = ev.external_validation_figures(result, internal, n_splits=5)
    assert disp.metrics == ["accuracy", "sensitivity_a", "sensitivity_b"]
    assert disp.external == [outside[k] for k in disp.metrics]
    assert disp.internal[0] == inside["accuracy"] and math.isnan(disp.internal[2][0])
    assert disp.external[1][0] == pytest.approx(5 / 6)
    points = disp.errorbars_["external"].lines[0].get_xdata()
    np.testing.assert_allclose(points, [100 * v for v, _, _ in disp.external])
    top_down = sorted(disp.ax_.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == ["accuracy", "sensitivity: a", "sensitivity: b"]


def test_image_sizes_display_counts_each_size_and_redraws_on_given_axes():
    heights, widths = [100, 100, 300, 500], [200, 250, 250, 250]
    disp = skxray.evaluation.ImageSizesDisplay.from_sizes(heights, widths, bins=4)
    assert [ax.get_title() for ax in disp.axes_] == ["Image heights", "Image widths"]
    assert disp.figure_.get_size_inches().tolist() == [8.0, 3.0]
    counts = [[p.get_height() for p in ax.patches] for ax in disp.axes_]
    assert counts == [[2, 0, 1, 1], [1, 0, 0, 3]]
    disp.heights = np.array([7, 7])  # plot draws the stored sizes, nothing else
    disp.widths = np.array([9, 9])
    for _ in range(2):
        axes = Figure().subplots(1, 2)
        assert disp.plot(ax=axes) is disp and list(disp.axes_) == list(axes)
        assert sum(p.get_height() for p in axes[0].patches) == 2
    with pytest.raises(ValueError, match="got 2 heights and 1 widths"):
        skxray.evaluation.ImageSizesDisplay.from_sizes([1, 2], [3])
    with pytest.raises(ValueError, match="bins must be an int >= 1"):
        skxray.evaluation.ImageSizesDisplay.from_sizes([1], [3], bins=0)
