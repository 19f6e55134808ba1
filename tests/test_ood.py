"""Out-of-distribution detection and abstention (skxray.ood, ood_ of the classifiers).

Statistical tolerance of the flag-rate tests. At ``quantile=0.99`` a new
in-distribution image is flagged with probability about 1% (the threshold is
the larger of a conformal and a log-normal estimate of the 99% quantile of
held-out scores; over eight training sets the rate on 2,000 fresh phantoms
was 0.4-2.2%). With n = 400 held-out phantoms the number flagged is
Binomial(400, p): for p = 0.01 the bound of 5% (20 images) lies 8 standard
deviations above the mean, P(X > 20) < 1e-8; even for p = 0.02 it is
P(X > 20) < 3e-4. The scanner-B phantoms differ in intensity curve, noise,
field of view and a burnt-in text block, and score about 15 times the
threshold, so the 90% bound has a wide margin too. The data are seeded, so
each test is deterministic; the tolerance says how unlikely a pass by luck of
the seed would be for a detector that is no better than the bound.
"""

import copy
import pickle
from functools import partial

import _helpers
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold
from torch.nn import functional as F

import skxray
from skxray.datasets import get_data_home, make_phantom_cxr
from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier
from skxray.ood import (
    MIN_SHIFT_TEST_IMAGES,
    OODDetector,
    ShiftTestResult,
    _logit_scores,
    _threshold,
    ood_rate,
    shift_test,
)

SIZE = 32


def flagged(detector, X):
    """scikit-learn's outlier convention: predict gives -1 for an outlier."""
    return detector.predict(X) == -1


def clone_without_lung_check(detector):
    """The same fitted detector with its lung layout check switched off."""
    other = copy.copy(detector)
    other.lung_check_ = False
    return other


tiny_cnn = partial(_helpers.tiny_cnn, max_epochs=5)


@pytest.fixture(scope="module")
def train():
    return _helpers.ood_train_phantoms(SIZE)


@pytest.fixture(scope="module")
def held_out():
    return _helpers.ood_held_out_phantoms(SIZE)


@pytest.fixture(scope="module")
def scanner_b():
    return make_phantom_cxr(200, image_size=SIZE, scanner="B", random_state=2)[0]


def _natural_images():
    from sklearn.datasets import load_sample_images

    crops = []
    for img in load_sample_images().images:  # china.jpg, flower.jpg: 427 x 640 RGB
        gray = torch.from_numpy(img.mean(axis=-1, dtype=np.float32) / 255)[None, None]
        for i in range(5):
            crop = gray[..., 20 * i : 20 * i + 400, 60 * i : 60 * i + 400]
            crops.append(F.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", antialias=True))
    return torch.cat(crops)[:, 0].numpy()


def _strange_images():
    rng = np.random.default_rng(0)
    return {
        "natural": _natural_images(),
        "constant": np.stack([np.full((SIZE, SIZE), v, np.float32) for v in np.linspace(0, 1, 11)]),
        "uniform noise": rng.uniform(0, 1, (20, SIZE, SIZE)).astype(np.float32),
    }


STRANGE = ["natural", "constant", "uniform noise"]


@pytest.fixture(scope="module")
def detector(train):
    X, y = train
    return OODDetector(random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def cnn(train):
    X, y = train
    return tiny_cnn().fit(X, y)


# -------------------------------------------------------------- the evidence
@pytest.mark.parametrize("who", ["detector", "cnn"])
def test_flags_second_scanner_not_held_out_phantoms(who, request, held_out, scanner_b):
    model = request.getfixturevalue(who)
    det = model if who == "detector" else model.ood_

    def flag(X):
        return flagged(det, X)
    X_in, _ = held_out
    in_rate = flag(X_in).mean()
    b_rate = flag(scanner_b).mean()
    print(f"{who}: held-out scanner A flagged {in_rate:.1%}, scanner B flagged {b_rate:.1%}")
    # Binomial tolerance (module docstring): the detector aims at 1 %, the
    # classifier's at 5 % (CLASSIFIER_QUANTILE), where 40 of 400 lies 4.6
    # standard deviations above the mean: P(X > 40) < 1e-5.
    assert in_rate <= (0.05 if who == "detector" else 0.10)
    assert b_rate >= 0.90


@pytest.mark.parametrize("kind", STRANGE)
@pytest.mark.parametrize("who", ["detector", "cnn"])
def test_flags_natural_constant_and_noise_images(who, kind, request):
    model = request.getfixturevalue(who)
    det = model if who == "detector" else model.ood_

    def flag(X):
        return flagged(det, X)
    assert flag(_strange_images()[kind]).all()


def test_detector_api(detector, train, scanner_b):
    X, _ = train
    assert detector.features_ == ("image",)
    assert detector.threshold_ == 1.0
    assert set(detector.block_thresholds_) == {"image"}
    assert detector.n_samples_fit_ == len(X)
    # Cross-fitted: every image of fit is held out once.
    assert detector.calibration_scores_.shape == (len(X),)
    scores = detector.ood_score(scanner_b)
    assert scores.dtype == np.float64 and scores.shape == (len(scanner_b),)
    np.testing.assert_array_equal(detector.score_samples(scanner_b), -scores)
    np.testing.assert_array_equal(detector.decision_function(scanner_b), 1.0 - scores)
    labels = detector.predict(scanner_b)
    np.testing.assert_array_equal(labels, np.where(scores > detector.threshold_, -1, 1))
    assert ood_rate(detector, scanner_b) == np.mean(labels == -1)


def test_detector_reproducible_and_clonable(train):
    X, y = train
    a = OODDetector(random_state=3).fit(X[:100], y[:100])
    b = clone(a).fit(X[:100], y[:100])
    np.testing.assert_array_equal(a.score_samples(X[100:150]), b.score_samples(X[100:150]))
    assert a.block_thresholds_ == b.block_thresholds_


def test_detector_accepts_uint8_and_tabular_input(train):
    X, y = train
    X8 = np.round(X[:120] * 255).astype(np.uint8)
    det = OODDetector(random_state=0).fit(X8, y[:120])
    assert not flagged(det, X8[:20]).all()
    assert flagged(det, 255 - X8[:20]).all()  # negatives: the intensity curve inverted
    flat = X[:120].reshape(120, -1)
    det = OODDetector(random_state=0).fit(flat)
    assert det.score_samples(flat).shape == (120,)


def test_detector_on_embedding_of_classifier(cnn, held_out, scanner_b):
    X_in, y_in = held_out
    # Fitted on images the network did not train on: a fair threshold.
    det = OODDetector(estimator=cnn, features="embedding", random_state=0).fit(X_in[:200], y_in[:200])
    assert det.features_ == ("embedding",)
    assert flagged(det, X_in[200:]).mean() <= 0.05
    both = OODDetector(estimator=cnn, features="both", random_state=0).fit(X_in[:200], y_in[:200])
    assert both.features_ == ("embedding", "image")
    assert flagged(both, scanner_b).mean() >= 0.9
    layers = OODDetector(estimator=cnn, random_state=0).fit(X_in[:200], y_in[:200])
    assert layers.features_ == ("layers",)  # "auto" for a CNN
    assert flagged(layers, X_in[200:]).mean() <= 0.05
    assert flagged(layers, scanner_b).mean() >= 0.9


@pytest.mark.parametrize("method", ["energy", "msp"])
def test_logit_methods(method, cnn, held_out, scanner_b):
    X_in, _ = held_out
    det = OODDetector(method, estimator=cnn).fit(X_in[:200])
    assert det.features_ == ()
    scores = det.ood_score(X_in[200:])
    assert scores.shape == (200,) and np.isfinite(scores).all()
    if method == "msp":
        assert ((scores >= 0) & (scores <= 0.5)).all()  # two classes
        proba = cnn.predict_proba(X_in[200:]).astype(np.float64)
        np.testing.assert_allclose(scores, 1 - proba.max(axis=1), atol=1e-6)
    else:
        assert (scores < 0).all()
    # Calibrated on images the network did not see: conformal bound.
    assert flagged(det, X_in[200:]).mean() <= 0.05
    assert set(np.unique(det.predict(scanner_b))) <= {-1, 1}


def test_binary_energy_is_symmetric():
    z = np.array([-8.0, -1.0, 0.0, 1.0, 8.0])
    energy = _logit_scores("energy", z)
    np.testing.assert_allclose(energy, energy[::-1])
    assert energy[2] == energy.max()  # the unsure image has the highest energy
    np.testing.assert_allclose(_logit_scores("msp", z), 1 - 1 / (1 + np.exp(-np.abs(z))))
    multi = np.array([[2.0, 0.0, -1.0]])
    np.testing.assert_allclose(_logit_scores("energy", multi), -np.log(np.exp(multi).sum()))


def test_threshold_estimate():
    scores = np.arange(1.0, 201.0)
    # Conformal: the ceil(201 * 0.9) = 181st smallest of 200.
    assert _threshold(scores, 0.9, parametric=False) == 181.0
    # Too few scores for the rank: the largest.
    assert _threshold(scores[:10], 0.99, parametric=False) == 10.0
    # The log-normal estimate extrapolates beyond the largest of few scores.
    rng = np.random.default_rng(0)
    few = np.exp(rng.normal(0, 0.1, 20))
    assert _threshold(few, 0.99, parametric=True) > few.max()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"method": "knn"}, "'method' parameter of OODDetector must be a str among .*Got 'knn'"),
        ({"quantile": 1.0}, r"'quantile' .* must be a float in the range \(0.0, 1.0\). Got 1.0"),
        ({"quantile": 0}, r"'quantile' .* must be a float in the range \(0.0, 1.0\). Got 0 "),
        ({"quantile": "0.99"}, r"'quantile' .* must be a float .*Got '0.99'"),
        ({"quantile": True}, r"'quantile' .* not a bool. Got True"),
        ({"features": "pixels"}, "'features' parameter of OODDetector must be .*Got 'pixels'"),
        ({"cv": 1}, r"'cv' .* must be an int in the range \[2, inf\). Got 1 "),
        ({"random_state": "seed"}, "'random_state' parameter of OODDetector"),
        ({"method": "energy"}, "estimator"),
        ({"method": "msp"}, "estimator"),
        ({"features": "embedding"}, "estimator"),
        ({"features": "both"}, "estimator"),
    ],
)
def test_detector_bad_params(params, message, train):
    X, _ = train
    with pytest.raises(ValueError, match=message):
        OODDetector(**params).fit(X[:50])


def test_detector_declares_every_parameter():
    # A parameter missing from _parameter_constraints would go unchecked.
    assert set(OODDetector._parameter_constraints) == set(OODDetector().get_params())


def test_detector_bad_input(train):
    X, y = train
    with pytest.raises(ValueError, match="at least 10 images"):
        OODDetector().fit(X[:9])
    with pytest.raises(ValueError, match="through a fitted skxray classifier"):
        OODDetector().fit(np.array(["a.png"] * 20, dtype=object))
    with pytest.raises(ValueError, match="y must have shape"):
        OODDetector().fit(X[:20], y[:19])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        OODDetector().score_samples(X[:5])
    with pytest.raises(NotFittedError):
        OODDetector(estimator=tiny_cnn()).fit(X[:20])


# -------------------------------------------------------------- classifier integration
def test_classifier_ood_calibrated_on_validation_split(cnn, train):
    X, _ = train
    det = cnn.ood_
    assert isinstance(det, OODDetector) and det.estimator is cnn
    assert det.features_ == ("layers",) and det.quantile == 0.95
    # The validation split of skorch: ceil(0.1 * 300) images, the only ones
    # with a held-out embedding distance.
    assert det.calibration_scores_.shape == (30,)
    assert det.n_samples_fit_ == len(X)
    np.testing.assert_array_equal(cnn.ood_score(X[:10]), det.ood_score(X[:10]))


def test_predict_with_abstention(cnn, held_out, scanner_b):
    X_in, _ = held_out
    X = np.concatenate([X_in[:50], scanner_b[:20]])
    y_pred, scores = cnn.predict_with_abstention(X, return_scores=True)
    assert y_pred.dtype == object and y_pred.shape == (70,)
    assert (y_pred[50:] == "uncertain").all()
    answered = y_pred[:50] != "uncertain"
    # At most 8 of 50 flagged: P(Binomial(50, 0.05) > 8) < 0.002.
    assert answered.mean() >= 0.84
    np.testing.assert_array_equal(y_pred[:50][answered], cnn.predict(X_in[:50])[answered])
    np.testing.assert_array_equal(y_pred == "uncertain", scores > cnn.ood_.threshold_)
    np.testing.assert_array_equal(cnn.predict_with_abstention(X), y_pred)


def test_min_confidence(cnn, held_out):
    X_in, _ = held_out
    top = cnn.predict_proba(X_in[:50]).max(axis=1)
    assert top.max() < 1.0  # not saturated, or min_confidence=1 would answer
    strict = pickle.loads(pickle.dumps(cnn)).set_params(min_confidence=1.0)
    assert (strict.predict_with_abstention(X_in[:50]) == "uncertain").all()
    cut = float(np.median(top))
    strict.min_confidence = cut
    y_pred = strict.predict_with_abstention(X_in[:50])
    assert ((y_pred == "uncertain") >= (top < cut)).all()


def test_ood_false_and_tiny_fits(train):
    X, y = train
    clf = tiny_cnn(max_epochs=1, ood=False).fit(X[:40], y[:40])
    assert clf.ood_ is None
    with pytest.raises(ValueError, match="no out-of-distribution detector"):
        clf.ood_score(X[:5])
    assert set(clf.predict_with_abstention(X[:5])) <= set(clf.classes_)
    assert np.isnan(ood_rate(clf, X[:5]))
    with pytest.warns(UserWarning, match="too few to calibrate"):
        tiny = tiny_cnn(max_epochs=1).fit(X[:6], y[:6])
    assert tiny.ood_ is None
    _, scores = tiny.predict_with_abstention(X[:3], return_scores=True)
    assert np.isnan(scores).all()


@pytest.mark.parametrize(
    "param, value, message",
    [
        ("ood", "yes", r"'ood' parameter of CNNClassifier must be an instance of 'bool'.*Got 'yes'"),
        ("min_confidence", 1.5, r"'min_confidence' parameter .* float in the range \[0.0, 1.0\]"),
        ("min_confidence", -0.1, r"'min_confidence' parameter .* float in the range \[0.0, 1.0\]"),
    ],
)
def test_classifier_bad_ood_params(param, value, message, train):
    X, y = train
    with pytest.raises(ValueError, match=message):
        tiny_cnn(**{param: value}).fit(X[:20], y[:20])


def test_fnn_tabular_and_no_validation(train):
    X, y = train
    flat = X.reshape(len(X), -1)
    clf = FNNClassifier(hidden_layer_sizes=(32,), max_epochs=5, validation_fraction=None, random_state=0)
    clf.fit(flat, y)
    # Without a validation split the embedding is calibrated on every image.
    assert clf.ood_.calibration_scores_.shape == (len(X),)
    assert clf.ood_score(flat[:5]).shape == (5,)
    assert flagged(clf.ood_, np.ones_like(flat[:5])).all()


def test_resnet_cached_embeddings_match_a_backbone_pass(train):
    X, y = train
    params = dict(weights=None, head_units=8, max_epochs=1, random_state=0)
    cached = ResNet50Classifier(**params).fit(X[:60], y[:60])
    uncached = ResNet50Classifier(cache_features=False, **params).fit(X[:60], y[:60])
    assert cached.features_cached_ and not uncached.features_cached_
    for name in ("embedding", "image"):
        np.testing.assert_allclose(
            cached.ood_.block_thresholds_[name], uncached.ood_.block_thresholds_[name], rtol=1e-4
        )


# -------------------------------------------------------------- persistence
@pytest.mark.parametrize("method", ["mahalanobis", "energy"])
def test_save_load_keeps_detector(method, cnn, held_out, scanner_b, tmp_path):
    X_in, y_in = held_out
    X = np.concatenate([X_in[:30], scanner_b[:10]])
    if method != "mahalanobis":
        # A detector assigned by hand is saved as well.
        cnn = pickle.loads(pickle.dumps(cnn))
        cnn.ood_ = OODDetector(method, estimator=cnn).fit(X_in[:100])
    folder = cnn.save(tmp_path / "model")
    loaded = skxray.load(folder)
    assert loaded.ood_.estimator is loaded
    for attr in ("threshold_", "features_", "block_thresholds_", "n_samples_fit_", "method", "quantile"):
        assert getattr(loaded.ood_, attr) == getattr(cnn.ood_, attr), attr
    np.testing.assert_array_equal(loaded.ood_.calibration_scores_, cnn.ood_.calibration_scores_)
    np.testing.assert_array_equal(loaded.ood_score(X), cnn.ood_score(X))
    np.testing.assert_array_equal(loaded.predict_with_abstention(X), cnn.predict_with_abstention(X))
    unpickled = pickle.loads(pickle.dumps(cnn))
    assert unpickled.ood_.estimator is unpickled
    np.testing.assert_array_equal(unpickled.ood_score(X), cnn.ood_score(X))


def test_load_without_detector(train, tmp_path):
    X, y = train
    clf = tiny_cnn(max_epochs=1, ood=False).fit(X[:40], y[:40])
    loaded = skxray.load(clf.save(tmp_path / "m"))
    assert loaded.ood_ is None and loaded.ood is False


# -------------------------------------------------------------- shift test
def _false_alarm_rate(model, pool, size, n_batches, alpha=0.05):
    rng = np.random.default_rng(0)
    pvalues = [
        shift_test(model, pool[rng.choice(len(pool), size, replace=False)], n_permutations=200,
                   random_state=i).pvalue
        for i in range(n_batches)
    ]
    return np.mean(np.asarray(pvalues) < alpha)


@pytest.mark.parametrize("who", ["detector", "cnn"])
def test_shift_test_flags_scanner_b_not_scanner_a(who, request, held_out, scanner_b):
    model = request.getfixturevalue(who)
    X_in, _ = held_out
    shifted = shift_test(model, scanner_b[:40], random_state=0)
    assert isinstance(shifted, ShiftTestResult)
    assert shifted.shifted and shifted.pvalue < 0.01
    assert shifted.pvalue >= 1 / 1001  # never 0: (1 + #exceeding) / (1 + B)
    assert shifted.n_test == 40 and shifted.n_permutations == 1000 and "MMD" in shifted.method
    if who == "detector":  # fitted without a classifier: the old question only
        assert not shifted.reference_matched and "differs from the training data" in shifted.verdict()
    else:
        assert shifted.reference_matched and shifted.images_differ
        assert "The images differ beyond the case mix" in shifted.verdict()
    # 40 batches of 20 new scanner-A phantoms at alpha = 0.05: a calibrated
    # test rejects about 2; more than 6 has probability < 0.005.
    assert _false_alarm_rate(model, X_in, 20, 40) <= 6 / 40
    same = shift_test(model, X_in[:40], random_state=0)
    assert not same.shifted
    assert ("no difference" if who == "detector" else "do not differ beyond") in same.verdict()


def test_few_validation_images_fall_back_to_embedding_and_descriptor(train):
    X, y = train
    # ceil(0.1 * 60) = 6 validation images, under MIN_LAYER_CALIBRATION.
    small = tiny_cnn(max_epochs=1).fit(X[:60], y[:60])
    assert small.ood_.features_ == ("embedding", "image") and small.ood_.has_reference_


def test_shift_test_reference_is_the_validation_split(cnn, train):
    det = cnn.ood_
    # ceil(0.1 * 300) validation images: the only ones the network never fitted.
    assert det.has_reference_ and det.reference_.shape[0] == 30
    # The image test compares with a subsample of it whose class mix is the batch's.
    result = shift_test(cnn, train[0][:40], random_state=0)
    assert result.reference_matched and 2 <= result.n_reference <= 30


def test_shift_test_is_seeded_and_saved_with_the_model(cnn, scanner_b, held_out, tmp_path):
    X = np.concatenate([held_out[0][:15], scanner_b[:15]])
    first = shift_test(cnn, X, n_permutations=200, random_state=3)
    assert shift_test(cnn, X, n_permutations=200, random_state=3) == first
    loaded = skxray.load(cnn.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.ood_.reference_, cnn.ood_.reference_)
    assert loaded.ood_.reference_bandwidth_ == cnn.ood_.reference_bandwidth_
    assert shift_test(loaded, X, n_permutations=200, random_state=3) == first


def test_shift_test_needs_a_held_out_reference(train):
    X, y = train
    clf = tiny_cnn(max_epochs=1, validation_fraction=None).fit(X[:60], y[:60])
    assert clf.ood_ is not None and not clf.ood_.has_reference_
    with pytest.raises(ValueError, match="validation_fraction > 0"):
        shift_test(clf, X[:20])
    no_detector = tiny_cnn(max_epochs=1, ood=False).fit(X[:60], y[:60])
    with pytest.raises(ValueError, match="ood=True"):
        shift_test(no_detector, X[:20])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0}, "alpha must be a float in"),
        ({"alpha": 1.5}, "alpha must be a float in"),
        ({"n_permutations": 10}, "n_permutations must be an int >= 19"),
        ({"n_permutations": 100.0}, "n_permutations must be an int >= 19"),
    ],
)
def test_shift_test_parameters(detector, held_out, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shift_test(detector, held_out[0][:20], **kwargs)


def test_shift_test_too_few_images(detector, held_out):
    with pytest.raises(ValueError, match=f"at least {MIN_SHIFT_TEST_IMAGES} images"):
        shift_test(detector, held_out[0][: MIN_SHIFT_TEST_IMAGES - 1])


def test_mmd_pvalues_are_uniform_under_the_null():
    from skxray.ood import _median_bandwidth, _mmd_permutation_test

    rng = np.random.RandomState(0)
    pvalues = []
    for _ in range(200):
        ref, test = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
        pvalues.append(_mmd_permutation_test(ref, test, _median_bandwidth(ref), 99, rng)[1])
    pvalues = np.asarray(pvalues)
    # 200 null tests: the share below 0.05 is about 5 % (sd 1.5 %); below
    # 0.5 about half. Bounds 4 sd away.
    assert (pvalues < 0.05).mean() <= 0.11
    assert 0.36 <= (pvalues < 0.5).mean() <= 0.64
    shifted = _mmd_permutation_test(ref, test + 1.0, _median_bandwidth(ref), 99, rng)
    assert shifted[1] == 0.01  # the smallest possible: 1 / (1 + 99)


# -------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def darkcovidnet():
    """A 64 px CNN fitted on 80 % of the Covid-19/No_findings patients, and the data."""
    from skxray.datasets import load_image_folder

    root = get_data_home() / "darkcovidnet"
    if not root.is_dir():
        pytest.skip(f"darkcovidnet not found under {root.parent}; set SKXRAY_DATA")
    bunch = load_image_folder(root, image_size=64, n_jobs=2)
    X, y, groups = bunch.data, bunch.target, bunch.groups
    two = y != "Pneumonia"
    # Patient-grouped split: no patient in both training and held-out images.
    train_idx, test_idx = next(
        StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X[two], y[two], groups[two])
    )
    X2, y2, g2 = X[two], y[two], groups[two]
    clf = CNNClassifier(
        filters=(8, 16, 32), dense_units=32, max_epochs=6, image_size=64, random_state=0
    ).fit(X2[train_idx], y2[train_idx])
    # Pneumonia images of patients not in the training set (21 patients also
    # have No_findings images).
    pneumonia = ~two & ~np.isin(groups, g2[train_idx])
    return clf, X2[test_idx], y2[test_idx], X[pneumonia]


@pytest.mark.realdata
def test_darkcovidnet_held_out_and_pneumonia(darkcovidnet):
    clf, X_test, y_test, X_pneumonia = darkcovidnet
    held = flagged(clf.ood_, X_test)
    pneumonia_rate = flagged(clf.ood_, X_pneumonia).mean()
    print(
        f"darkcovidnet 64 px: held-out Covid-19/No_findings flagged {held.mean():.1%} "
        f"({held.sum()}/{len(held)}), accuracy {clf.score(X_test, y_test):.1%}; "
        f"held-out Pneumonia flagged {pneumonia_rate:.1%} of {len(X_pneumonia)} (for information)"
    )
    # n = 125 held-out images at an aimed rate of 5 %: P(more than 15 flagged) < 0.003.
    assert held.mean() <= 0.12


@pytest.mark.realdata
def test_hannover_a_hospital_never_trained_on(darkcovidnet):
    """Measured only: nothing here is fitted, tuned or chosen on the Hannover images."""
    from skxray.preprocessing import ImageLoader

    root = get_data_home() / "hannover"
    if not root.is_dir():
        pytest.skip(f"hannover not found under {root.parent}; set SKXRAY_DATA")
    clf, X_test, _, _ = darkcovidnet
    paths = np.array(sorted(str(p) for p in (root / "Covid-19").glob("*.png")), dtype=object)
    X_ext = ImageLoader(image_size=64).fit_transform(paths)
    abstain_ext = flagged(clf.ood_, X_ext).mean()
    abstain_held = flagged(clf.ood_, X_test).mean()
    rng = np.random.default_rng(0)
    p_ext = [
        shift_test(clf, X_ext[rng.choice(len(X_ext), 40, replace=False)], n_permutations=200,
                   random_state=i).pvalue
        for i in range(20)
    ]
    false_alarms = _false_alarm_rate(clf, X_test, 20, 40)
    print(
        f"Hannover: {abstain_ext:.1%} abstained (held-out patients {abstain_held:.1%}); "
        f"shift test p < 0.01 in {np.mean(np.asarray(p_ext) < 0.01):.0%} of 20 batches of 40; "
        f"held-out batches of 20 rejected at 0.05: {false_alarms:.0%}"
    )
    # This small 64 px CNN measured 16.5 % abstained (held-out 1.6 %), the
    # default 128 px CNN about 60 % (benchmarks/new_hospital.py); the old
    # detector 10.7 % at 128 px. The bounds sit below the measured figures
    # and above what a detector blind to the hospital would give.
    assert abstain_ext >= 0.1 and abstain_ext >= 4 * abstain_held
    assert np.mean(np.asarray(p_ext) < 0.01) >= 0.9
    assert false_alarms <= 6 / 40


@pytest.mark.realdata
def test_darkcovidnet_rotated_xrays_are_flagged_by_the_lung_check(darkcovidnet):
    # Issue 25: at least 95 % of 90-degree-rotated held-out X-rays flagged;
    # the lung layout check (two lungs side by side) is what catches them
    # where the classifier's features do not.
    from skxray.segmentation import lung_layout

    clf, X_test, _, _ = darkcovidnet
    assert clf.ood_.lung_check_ and clf.ood_.lung_check_pass_rate_ >= 0.95
    rotated = np.rot90(X_test, 1, axes=(-2, -1)).copy()
    layout = lung_layout(rotated)
    layout_fails = ~layout.passes | (layout.ambiguity > clf.ood_.lung_ambiguity_threshold_)
    with_check = flagged(clf.ood_, rotated)
    without = clone_without_lung_check(clf.ood_).ood_score(rotated) > 1.0
    print(
        f"darkcovidnet 64 px rotated 90 degrees: flagged {with_check.mean():.1%} with the lung check, "
        f"{without.mean():.1%} without; the lung check alone fails {layout_fails.mean():.1%} (the layout "
        f"rule {np.mean(~layout.passes):.1%}); upright held-out "
        f"layout fails {np.mean(~lung_layout(X_test).passes):.1%}"
    )
    np.testing.assert_array_equal(with_check, without | layout_fails)
    assert with_check.mean() >= 0.95
    # And each flag says which part raised it (the CLI's reason column).
    parts = clf.ood_.score_parts(rotated)
    np.testing.assert_array_equal(["lung check" in f for f in parts.flagged_by], layout_fails)
    np.testing.assert_array_equal(["distance" in f for f in parts.flagged_by], without)
