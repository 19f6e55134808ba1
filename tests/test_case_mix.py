"""A new case mix or new images? The two answers of shift_test, and per-image gross errors.

Phantoms prove the code runs and that each part answers its own question;
what it achieves on real X-rays is measured by ``benchmarks/new_hospital.py``.

Statistical tolerance of the false-alarm test: 40 batches at alpha = 0.05
are Binomial(40, 0.05) under a calibrated test; more than 6 rejections has
probability < 0.005. The data are seeded, so each test is deterministic.
"""

import copy
import json
from dataclasses import replace
from functools import partial

import _helpers
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest

import skxray
from skxray import _label_shift
from skxray.datasets import make_phantom_cxr
from skxray.ood import (
    OODDetector,
    ShiftFeatures,
    ShiftTestResult,
    adapt_proba,
    shift_features,
    shift_test,
)

SIZE = 32

tiny_cnn = partial(_helpers.tiny_cnn, max_epochs=8)


@pytest.fixture(scope="module")
def train():
    return _helpers.ood_train_phantoms(SIZE)


@pytest.fixture(scope="module")
def held_out():
    return _helpers.ood_held_out_phantoms(SIZE)


@pytest.fixture(scope="module")
def cnn(train):
    X, y = train
    return tiny_cnn().fit(X, y)


def _one_class_batches(pool, labels, classes, size, n_batches):
    rng = np.random.default_rng(0)
    for b in range(n_batches):
        members = np.flatnonzero(labels == classes[b % len(classes)])
        yield b, pool[rng.choice(members, size, replace=False)]


# ------------------------------------------------------------------ the two questions
def test_a_change_of_case_mix_alone_is_not_an_image_shift(cnn, held_out):
    X, y = held_out
    image_alarms, whole_alarms, case_alarms = [], [], []
    for b, batch in _one_class_batches(X, y, cnn.classes_, 20, 40):
        result = shift_test(cnn, batch, n_permutations=200, random_state=b)
        assert result.reference_matched
        image_alarms.append(result.images_differ)
        case_alarms.append(result.case_mix_changed)
        # The test before issue 25: the whole reference, whose mix is the training one.
        features = replace(shift_features(cnn, batch), proba=None)
        whole = shift_test(cnn, features, n_permutations=200, random_state=b)
        whole_alarms.append(whole.images_differ)
    print(f"one-class batches: image part {np.mean(image_alarms):.0%}, whole reference "
          f"{np.mean(whole_alarms):.0%}, case mix {np.mean(case_alarms):.0%}")
    assert np.sum(image_alarms) <= 6
    # The batches do differ in case mix, which the old test took for a shift
    # and the case-mix part sees: without this the first bound would be empty.
    assert np.mean(case_alarms) >= 0.5
    assert np.mean(whole_alarms) > np.mean(image_alarms)


def test_scanner_b_is_an_image_shift_whatever_its_case_mix(cnn):
    X_b, y_b = make_phantom_cxr(120, image_size=SIZE, scanner="B", random_state=2)
    for batch in (X_b[:40], X_b[y_b == cnn.classes_[0]][:30]):
        result = shift_test(cnn, batch, random_state=0)
        assert result.reference_matched and result.images_differ and result.pvalue < 0.01
        assert result.severity() == "fail"
        assert "The images differ beyond the case mix" in result.verdict()


def test_prevalence_estimate_and_verdict(cnn, held_out):
    X, y = held_out
    positive = list(cnn.classes_).index("Covid-19")
    batch = X[y == "Covid-19"][:40]
    result = shift_test(cnn, batch, random_state=0)
    assert result.classes == list(cnn.classes_)
    q, low, high = (np.array(v) for v in (result.prevalence, result.prevalence_low, result.prevalence_high))
    assert np.isclose(q.sum(), 1) and (low <= q).all() and (q <= high).all()
    assert q[positive] >= 0.6 and high[positive] >= 0.9
    np.testing.assert_allclose(result.training_prevalence, cnn.ood_.training_prevalence_)
    assert result.case_mix_changed and result.case_mix_pvalue < 0.05
    assert result.severity() == "warning"
    verdict = result.verdict()
    assert verdict.startswith("The case mix differs from training: Covid-19 about")
    assert "95 % CI" in verdict and "The images do not differ beyond that" in verdict
    em = shift_test(cnn, batch, prevalence_method="em", random_state=0)
    assert em.prevalence_method == "em" and em.prevalence[positive] >= 0.6
    # Round trip through JSON, as the command line's --json and report do.
    assert ShiftTestResult(**json.loads(json.dumps(result.to_dict()))) == result


def test_prevalence_method_is_checked(cnn, held_out):
    with pytest.raises(ValueError, match="prevalence_method must be one of"):
        shift_test(cnn, held_out[0][:20], prevalence_method="mlls")


# ------------------------------------------------------------------ persistence
def test_labelled_reference_is_saved_and_loaded(cnn, held_out, tmp_path):
    det = cnn.ood_
    assert det.has_labelled_reference_
    # ceil(0.1 * 300) validation images, their labels and the classifier's probabilities.
    assert det.reference_labels_.shape == (30,) and det.reference_proba_.shape == (30, 2)
    assert list(det.reference_classes_) == list(cnn.classes_)
    loaded = skxray.load(cnn.save(tmp_path / "m"))
    for attr in ("reference_labels_", "reference_proba_", "training_prevalence_", "reference_classes_"):
        np.testing.assert_array_equal(getattr(loaded.ood_, attr), getattr(det, attr), err_msg=attr)
    X = held_out[0][:30]
    assert shift_test(loaded, X, n_permutations=200, random_state=1) == shift_test(
        cnn, X, n_permutations=200, random_state=1
    )


def _as_previous_release(folder):
    """Strip what the previous release did not save: the reference's labels and probabilities."""
    import hashlib

    from safetensors.torch import load_file, save

    config = json.loads((folder / "config.json").read_text())
    del config["ood"]["reference_classes_"]
    tensors = {
        k: v for k, v in load_file(folder / "model.safetensors").items()
        if not k.endswith(("reference_labels_", "reference_proba_", "training_prevalence_"))
    }
    weights = save(tensors)
    config["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_model_of_the_previous_release_answers_the_old_question(cnn, held_out, tmp_path):
    folder = cnn.save(tmp_path / "old")
    _as_previous_release(folder)
    old = skxray.load(folder)
    assert old.ood_.has_reference_ and not old.ood_.has_labelled_reference_
    X, y = held_out
    np.testing.assert_array_equal(old.predict_with_abstention(X[:20]), cnn.predict_with_abstention(X[:20]))
    result = shift_test(old, X[y == "Covid-19"][:40], random_state=0)
    assert not result.reference_matched and result.prevalence is None and result.case_mix_changed is None
    assert result.n_reference == 30  # the whole reference
    assert "cannot tell a change of case mix from different images" in result.verdict()


# ------------------------------------------------------------------ pairs of one patient
def test_the_statistic_across_patients_is_the_usual_one_when_each_image_is_a_patient():
    from skxray.ood import _mmd_permutation_test, _mmd_permutation_test_across_patients

    rng = np.random.default_rng(0)
    Z_ref, Z_test = rng.normal(size=(12, 4)), rng.normal(0.5, 1, size=(9, 4))
    usual = _mmd_permutation_test(Z_ref, Z_test, 4.0, 99, np.random.default_rng(1))
    across = _mmd_permutation_test_across_patients(Z_ref, np.arange(12), Z_test, 4.0, 99, np.random.default_rng(1))
    np.testing.assert_allclose(across, usual, rtol=1e-10)


def test_leaving_out_pairs_of_one_patient_keeps_a_clustered_reference_near_alpha():
    # A reference of 8 patients with 2 near-identical images each, and batches
    # of 20 new patients from the same distribution: nothing differs. The
    # image-level test takes each patient's likeness for independent images
    # and rejects far more often than alpha; leaving those pairs out does not.
    from skxray.ood import _mmd_permutation_test, _mmd_permutation_test_across_patients

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 2)
    usual, across = [], []
    for _ in range(150):
        Z_ref = np.repeat(rng.normal(size=(8, 5)), 2, axis=0) + 0.05 * rng.normal(size=(16, 5))
        Z_test = rng.normal(size=(20, 5))
        usual.append(_mmd_permutation_test(Z_ref, Z_test, 10.0, 199, rng)[1] < 0.05)
        across.append(_mmd_permutation_test_across_patients(Z_ref, groups, Z_test, 10.0, 199, rng)[1] < 0.05)
    print(f"clustered reference, nothing differs: rejected {np.mean(usual):.0%} image-level, "
          f"{np.mean(across):.0%} across patients")
    assert np.mean(usual) >= 0.2 and np.mean(across) <= 0.12
    # A real difference is still seen.
    Z_ref = np.repeat(rng.normal(size=(8, 5)), 2, axis=0) + 0.05 * rng.normal(size=(16, 5))
    assert _mmd_permutation_test_across_patients(Z_ref, groups, rng.normal(1.5, 1, size=(20, 5)), 10.0, 199, rng)[1] < 0.01


@pytest.fixture(scope="module")
def grouped_cnn(train):
    X, y = train
    patients = np.arange(len(X)) // 2  # two images per patient
    return tiny_cnn().fit(X, y, groups=patients)


def test_exclude_patient_pairs_uses_the_reference_groups_and_survives_save_and_load(
    grouped_cnn, cnn, held_out, tmp_path
):
    det = grouped_cnn.ood_
    assert det.reference_groups_ is not None and len(det.reference_groups_) == len(det.reference_labels_)
    # Whole patients in the validation split: every code twice, and codes, not ids.
    assert set(np.bincount(det.reference_groups_)) == {2}
    X = held_out[0][:30]
    kw = {"n_permutations": 200, "random_state": 0}
    plain = shift_test(grouped_cnn, X, **kw)
    paired = shift_test(grouped_cnn, X, exclude_patient_pairs=True, **kw)
    assert not plain.patient_pairs_excluded and paired.patient_pairs_excluded
    assert "pairs of images of one reference patient left out" in paired.method
    assert paired.statistic != plain.statistic
    loaded = skxray.load(grouped_cnn.save(tmp_path / "grouped"))
    np.testing.assert_array_equal(loaded.ood_.reference_groups_, det.reference_groups_)
    assert shift_test(loaded, X, exclude_patient_pairs=True, **kw) == paired
    # Without groups (or a model saved before them) nothing is left out.
    assert cnn.ood_.reference_groups_ is None
    assert shift_test(cnn, X, exclude_patient_pairs=True, **kw) == shift_test(cnn, X, **kw)
    with pytest.raises(ValueError, match="exclude_patient_pairs must be True or False"):
        shift_test(cnn, X, exclude_patient_pairs="yes")


# ------------------------------------------------------------------ prior adaptation
def test_adapt_proba_is_bayes_rule():
    proba = np.array([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]])
    same = adapt_proba(proba, [0.3, 0.7], [0.3, 0.7])
    np.testing.assert_allclose(same, proba)
    adapted = adapt_proba(proba, [0.9, 0.1], [0.5, 0.5])
    odds = (proba[:, 0] / proba[:, 1]) * 9
    np.testing.assert_allclose(adapted[:, 0], odds / (1 + odds))
    np.testing.assert_allclose(adapted.sum(axis=1), 1)
    with pytest.raises(ValueError, match="prevalence must hold one proportion per column"):
        adapt_proba(proba, [0.5, 0.3], [0.5, 0.5])
    with pytest.raises(ValueError, match="training_prevalence must hold"):
        adapt_proba(proba, [0.5, 0.5], [0.5, 0.2, 0.3])


def test_adapting_to_a_skewed_case_mix_lowers_the_log_loss():
    # Calibrated posteriors of a known model: class 0 ~ N(0, 1), class 1 ~ N(1.5, 1).
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.9).astype(int)  # 90 % class 1; training had 50 %
    x = rng.normal(1.5 * y, 1.0)
    odds = np.exp(1.5 * x - 1.125)
    proba = np.column_stack([1 / (1 + odds), odds / (1 + odds)])

    def log_loss(p):
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    adapted = adapt_proba(proba, [0.1, 0.9], [0.5, 0.5])
    assert log_loss(adapted) < log_loss(proba) - 0.05
    em = _label_shift.em_prior(proba, [0.5, 0.5])
    assert abs(em[1] - y.mean()) < 0.03


# ------------------------------------------------------------------ estimators
def test_bbse_recovers_the_class_mix_from_a_known_confusion_matrix():
    C = np.array([[0.8, 0.3], [0.2, 0.7]])  # columns: P(predicted | true)
    q = np.array([0.25, 0.75])
    np.testing.assert_allclose(_label_shift.bbse(C, C @ q)[0], q)
    # Sampling noise beyond the simplex is projected back onto it.
    np.testing.assert_allclose(_label_shift.bbse(C, [0.85, 0.15])[0], [1.0, 0.0])
    labels = np.repeat([0, 1], [50, 50])
    preds = np.r_[np.zeros(40), np.ones(10), np.zeros(15), np.ones(35)].astype(int)
    np.testing.assert_allclose(_label_shift.confusion_columns(labels, preds, 2), C)


def test_matched_subsample_is_drawn_without_replacement():
    labels = np.repeat([0, 1, 2], [10, 30, 5])
    rng = np.random.RandomState(0)
    idx = _label_shift.matched_subsample(labels, [0.5, 0.5, 0.0], rng)
    assert len(np.unique(idx)) == len(idx) == 20
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), [10, 10, 0])
    assert len(_label_shift.matched_subsample(labels, [0.0, 0.0, 1.0], rng)) == 5


# ------------------------------------------------------------------ outlier convention
def test_detector_follows_scikit_learns_outlier_convention(train):
    X, y = train
    X_b = make_phantom_cxr(20, image_size=SIZE, scanner="B", random_state=2)[0]
    det = OODDetector(random_state=0).fit(X, y)
    flat = X.reshape(len(X), -1)
    forest = IsolationForest(random_state=0).fit(flat)
    for model, Xin, Xout in ((det, X[:20], X_b), (forest, flat[:20], X_b.reshape(20, -1))):
        # Inliers: +1, higher score_samples, decision_function >= 0 mostly.
        assert (model.predict(Xout) == -1).all(), type(model).__name__
        assert model.score_samples(Xin).mean() > model.score_samples(Xout).mean()
        assert (model.decision_function(Xout) < 0).all()
        np.testing.assert_allclose(model.decision_function(Xout), model.score_samples(Xout) - model.offset_)
    # The classifiers' ood_score keeps its meaning: higher = more abnormal, 1 the threshold.
    np.testing.assert_allclose(det.ood_score(X_b), -det.score_samples(X_b))
    assert (det.ood_score(X_b) > det.threshold_).all()
    assert set(np.unique(clone(det).fit_predict(X, y))) <= {-1, 1}


# ------------------------------------------------------------------ gross errors
def _gross_errors():
    """Pictures of scikit-image's wheel (no download) at SIZE px: none is a chest X-ray."""
    import skimage.data
    from skimage.color import rgb2gray

    from skxray.preprocessing import resize_images

    out = []
    for name in ("camera", "astronaut", "page", "text", "retina", "microaneurysms",
                 "immunohistochemistry", "shepp_logan_phantom"):
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
        img = rgb2gray(img[..., :3] / 255) if img.ndim == 3 else img / max(1.0, img.max())
        out.append(resize_images(img[None].astype(np.float32), SIZE, keep_aspect="crop")[0])
    faces = skimage.data.lfw_subset()[:40].astype(np.float32)
    return np.concatenate([np.stack(out), resize_images(faces, SIZE)])


def _xrv_tiny(**kw):
    from skxray.models import PretrainedCXRClassifier

    pytest.importorskip("torchxrayvision")
    return PretrainedCXRClassifier(input_resolution=None, head_units=16, max_epochs=2, random_state=0, **kw)


CLASSIFIERS = {
    "cnn": lambda: _helpers.tiny_cnn(max_epochs=5),
    "fnn": lambda: _helpers.tiny_fnn(max_epochs=5),
    "resnet50": lambda: _helpers.tiny_resnet(),
    "pretrained_cxr": lambda: _xrv_tiny(weights=None),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_every_classifier_flags_what_is_not_a_chest_xray(name, train, held_out):
    X, y = train
    clf = CLASSIFIERS[name]().fit(X, y)
    X_in = held_out[0][:100]
    pictures = _gross_errors()
    inverted, rotated = 1.0 - X_in, np.rot90(X_in, 1, axes=(1, 2)).copy()
    rates = {
        "pictures": np.mean(clf.predict_with_abstention(pictures) == "uncertain"),
        "inverted": np.mean(clf.predict_with_abstention(inverted) == "uncertain"),
        "rotated": np.mean(clf.predict_with_abstention(rotated) == "uncertain"),
        "held_out": np.mean(clf.ood_score(X_in) > clf.ood_.threshold_),
    }
    print(name, rates)
    assert rates["pictures"] == 1.0
    assert rates["inverted"] >= 0.95 and rates["rotated"] >= 0.95
    # 100 held-out phantoms at an aimed 5 %: more than 15 has probability < 0.001.
    assert rates["held_out"] <= 0.15


# ------------------------------------------------------------ the lung layout check
def _lung_check_score(det, images):
    """The lung check's score, from the definition: layout score or ambiguity over its limit."""
    from skxray.segmentation import LAYOUT_SCORE_CAP, lung_layout

    layout = lung_layout(images)
    ambiguity = np.minimum(layout.ambiguity / det.lung_ambiguity_threshold_, LAYOUT_SCORE_CAP)
    return np.maximum(layout.score, ambiguity), layout


def test_lung_check_adds_the_lung_score_to_the_images_it_fails(train, held_out):
    X, y = train
    det = OODDetector(features="image", lung_check=True, random_state=0).fit(X[:100], y[:100])
    assert det.lung_check_ and det.lung_check_pass_rate_ >= 0.95
    X_in = held_out[0][:40]
    mixed = np.concatenate([X_in, np.rot90(X_in, 1, axes=(1, 2)), np.zeros_like(X_in[:2])])
    off = copy.copy(det)
    off.lung_check_ = False
    lungs, layout = _lung_check_score(det, mixed)
    expected = np.where(lungs > 1, np.maximum(off.ood_score(mixed), lungs), off.ood_score(mixed))
    np.testing.assert_allclose(det.ood_score(mixed), expected, rtol=1e-12)
    assert (layout.score > 1).sum() >= 40  # the rotated phantoms and the blank images fail the rule
    # predict, decision_function and score_samples stay consistent (OutlierMixin).
    np.testing.assert_array_equal(det.predict(mixed) == -1, det.ood_score(mixed) > det.threshold_)
    np.testing.assert_allclose(det.decision_function(mixed), det.score_samples(mixed) - det.offset_)


def test_lung_ambiguity_limit_is_the_fit_images_quantile(train, held_out):
    from skxray.ood import LUNG_AMBIGUITY_QUANTILE
    from skxray.segmentation import lung_layout

    X, y = train
    det = OODDetector(features="image", lung_check=True, random_state=0).fit(X[:100], y[:100])
    ambiguity = lung_layout(X[:100]).ambiguity
    assert det.lung_ambiguity_threshold_ == pytest.approx(np.quantile(ambiguity, LUNG_AMBIGUITY_QUANTILE))
    # About 1 % of the fit images lie above it, none of them by the layout rule alone.
    assert 0 < np.mean(ambiguity > det.lung_ambiguity_threshold_) <= 0.02
    # An image of lungs drawn with less certainty than the limit is flagged by the
    # lung check, even when its layout passes and its distance does not flag it.
    X_in = held_out[0][:40]
    strict = copy.copy(det)
    strict.lung_ambiguity_threshold_ = np.min(lung_layout(X_in).ambiguity) / 2
    parts = strict.score_parts(X_in)
    assert (parts.lung_ambiguity > 1).all()
    assert all("lung check" in f for f in parts.flagged_by)
    assert (parts.lung_layout <= 1).mean() >= 0.95


def test_classifier_lung_ambiguity_limit_uses_every_training_image(train):
    # The segmenter owes nothing to the classifier: its limit is taken on all
    # the training images, not only on the validation split (a 99 % quantile
    # of a few dozen images is too noisy).
    from skxray.ood import LUNG_AMBIGUITY_QUANTILE
    from skxray.segmentation import lung_layout

    X, y = train
    clf = _helpers.tiny_fnn(max_epochs=2).fit(X, y)
    det = clf.ood_
    assert det.lung_check_
    expected = np.quantile(lung_layout(X).ambiguity, LUNG_AMBIGUITY_QUANTILE)
    assert det.lung_ambiguity_threshold_ == pytest.approx(expected, rel=1e-5)


def test_score_parts_say_which_part_flagged_each_image(train, held_out):
    # The per-image figures "as what they are" (issue 25, item 4): a flag of
    # the lung check and a flag of the distance are told apart.
    from skxray.segmentation import lung_layout

    X, y = train
    det = OODDetector(features="image", lung_check=True, random_state=0).fit(X[:100], y[:100])
    X_in = held_out[0][:40]
    mixed = np.concatenate([X_in, np.rot90(X_in, 1, axes=(1, 2)), np.zeros_like(X_in[:2])])
    parts = det.score_parts(mixed)
    off = copy.copy(det)
    off.lung_check_ = False
    np.testing.assert_array_equal(parts.score, det.ood_score(mixed))
    np.testing.assert_array_equal(parts.distance, off.ood_score(mixed))
    layout = lung_layout(mixed)
    np.testing.assert_array_equal(parts.lung_layout, layout.score)
    np.testing.assert_allclose(parts.lung_ambiguity, layout.ambiguity / det.lung_ambiguity_threshold_)
    flagged = parts.score > det.threshold_
    np.testing.assert_array_equal(parts.flagged_by != "", flagged)
    by_lungs = np.array(["lung check" in f for f in parts.flagged_by])
    by_distance = np.array(["distance" in f for f in parts.flagged_by])
    np.testing.assert_array_equal(by_lungs, flagged & ((parts.lung_layout > 1) | (parts.lung_ambiguity > 1)))
    np.testing.assert_array_equal(by_distance, parts.distance > det.threshold_)
    assert by_lungs.sum() >= 40
    # Without the check there is no layout, and every flag is the distance's.
    plain = off.score_parts(mixed)
    assert plain.lung_layout is None and plain.lung_ambiguity is None
    assert set(plain.flagged_by) <= {"", "distance"}


def test_predict_with_abstention_returns_why_each_image_is_uncertain(cnn, held_out):
    X_in = held_out[0][:20]
    mixed = np.concatenate([X_in, np.rot90(X_in, 1, axes=(1, 2))])
    answers, scores, reasons = cnn.predict_with_abstention(mixed, return_scores=True, return_reasons=True)
    np.testing.assert_array_equal(answers, cnn.predict_with_abstention(mixed))
    np.testing.assert_array_equal(scores, cnn.ood_score(mixed))
    np.testing.assert_array_equal(reasons == "", answers != "uncertain")
    parts = cnn.ood_.score_parts(mixed)
    low = cnn.predict_proba(mixed).max(axis=1) < cnn.min_confidence
    for reason, flagged_by, unsure in zip(reasons, parts.flagged_by, low):
        assert reason == ", ".join(p for p in (flagged_by, "low confidence" if unsure else "") if p)
    # One of the two extra returns alone is a pair.
    assert len(cnn.predict_with_abstention(mixed, return_reasons=True)) == 2


def test_lung_check_is_off_when_the_training_images_fail_it():
    noise = np.random.default_rng(0).random((30, 32, 32)).astype(np.float32)
    with pytest.warns(UserWarning, match="lung layout check"):
        det = OODDetector(features="image", lung_check=True, random_state=0).fit(noise)
    assert not det.lung_check_ and det.lung_check_pass_rate_ < 0.95
    plain = OODDetector(features="image", random_state=0).fit(noise)
    np.testing.assert_array_equal(det.ood_score(noise[:5]), plain.ood_score(noise[:5]))
    assert not plain.lung_check_ and plain.lung_check_pass_rate_ is None


def test_lung_check_needs_the_mahalanobis_distance(train):
    X, _ = train
    with pytest.raises(ValueError, match="lung_check=True needs method='mahalanobis'"):
        OODDetector(method="energy", estimator=None, lung_check=True).fit(X[:20])


def test_the_classifiers_detector_keeps_its_lung_check_through_save_and_load(cnn, held_out, tmp_path):
    assert cnn.ood_.lung_check and cnn.ood_.lung_check_
    loaded = skxray.load(cnn.save(tmp_path / "m"))
    assert loaded.ood_.lung_check_ and loaded.ood_.lung_check_pass_rate_ == cnn.ood_.lung_check_pass_rate_
    assert loaded.ood_.lung_ambiguity_threshold_ == cnn.ood_.lung_ambiguity_threshold_ > 0
    # A model saved before the ambiguity limit checks the lung layout alone.
    folder = cnn.save(tmp_path / "layout_only")
    config = json.loads((folder / "config.json").read_text())
    del config["ood"]["lung_ambiguity_threshold_"]
    (folder / "config.json").write_text(json.dumps(config))
    layout_only = skxray.load(folder)
    assert layout_only.ood_.lung_check_ and layout_only.ood_.lung_ambiguity_threshold_ is None
    images = np.concatenate([held_out[0][:10], np.zeros((2, SIZE, SIZE), dtype=np.float32)])
    parts = layout_only.ood_.score_parts(images)
    assert parts.lung_ambiguity is None
    distance = parts.distance
    expected = np.where(parts.lung_layout > 1, np.maximum(distance, parts.lung_layout), distance)
    np.testing.assert_allclose(layout_only.ood_score(images), expected)
    # Tightened to below every image's ambiguity, the new model flags them all; the old one cannot.
    strict = copy.copy(cnn.ood_)
    strict.lung_ambiguity_threshold_ = 1e-9
    assert (strict.score_parts(images).lung_ambiguity > 1).all()
    assert (strict.ood_score(images) > 1).all()
    # A model saved before the check has none, and scores as before it.
    folder = cnn.save(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    for key in ("lung_check_", "lung_check_pass_rate_", "lung_ambiguity_threshold_"):
        del config["ood"][key]
    del config["ood"]["params"]["lung_check"]
    (folder / "config.json").write_text(json.dumps(config))
    old = skxray.load(folder)
    assert not old.ood_.lung_check_ and not old.ood_.lung_check
    blank = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    off = copy.copy(cnn.ood_)
    off.lung_check_ = False
    np.testing.assert_array_equal(old.ood_score(blank), off.ood_score(blank))


# ------------------------------------------------------------ features computed once
def test_repeated_images_are_counted_once(cnn, held_out):
    # A batch drawn with replacement (or the same file sent twice) holds the
    # same image twice; a permutation test takes the copies for independent
    # images and rejects too often (benchmarks/shift_reference_probe.py: 61 %
    # instead of 17 % of COVID-19-only batches of 40 drawn from 24 images).
    X, _ = held_out
    pool = shift_features(cnn, X[:60])
    idx = np.arange(5, 35)
    repeated = np.r_[idx, idx[:12], idx[3:5]]
    kw = {"n_permutations": 100, "random_state": 0}
    once, twice = shift_test(cnn, pool[idx], **kw), shift_test(cnn, pool[repeated], **kw)
    assert once.n_repeated == 0 and twice.n_repeated == 14 and twice.n_test == once.n_test == 30
    assert {k: v for k, v in vars(twice).items() if k != "n_repeated"} == {
        k: v for k, v in vars(once).items() if k != "n_repeated"
    }
    assert "14 repeated images counted once" in twice.verdict() or twice.images_differ
    # The images themselves, through the network: the copies are found too.
    assert shift_test(cnn, X[repeated], **kw).n_repeated == 14
    with pytest.raises(ValueError, match="of which 3 distinct"):
        shift_test(cnn, pool[np.r_[idx[:3], idx[:3]]], **kw)


def test_shift_features_of_a_pool_give_the_tests_of_its_batches(cnn, held_out):
    # benchmarks/new_hospital.py tests many batches of one pool: the network
    # runs over the pool once, and each batch's answers are those of its images
    # (up to float32 rounding of the network's outputs, which depends on the batch).
    X, _ = held_out
    pool = shift_features(cnn, X[:60])
    assert len(pool) == 60 and pool.proba.shape == (60, len(cnn.classes_))
    idx = np.arange(5, 35)
    for method in ("bbse", "em"):
        kw = {"n_permutations": 50, "prevalence_method": method, "random_state": 0}
        from_pool, from_images = vars(shift_test(cnn, pool[idx], **kw)), vars(shift_test(cnn, X[idx], **kw))
        numbers = {k for k, v in from_images.items() if isinstance(v, (float, list)) and k != "classes"}
        assert {k: v for k, v in from_pool.items() if k not in numbers} == {
            k: v for k, v in from_images.items() if k not in numbers
        }
        for key in numbers:
            np.testing.assert_allclose(from_pool[key], from_images[key], rtol=1e-6, err_msg=key)
    whole = shift_test(cnn, replace(pool[idx], proba=None), n_permutations=50, random_state=0)
    assert whole.case_mix_changed is None and not whole.reference_matched
    with pytest.raises(ValueError, match=r"features of shape \(60, 3\)"):
        shift_test(cnn, ShiftFeatures(pool.features[:, :3], None))
    with pytest.raises(ValueError, match="probabilities of shape"):
        shift_test(cnn, ShiftFeatures(pool.features[idx], pool.proba[:5]))
    with pytest.raises(ValueError, match="at least 5 images"):
        shift_test(cnn, pool[:3])
