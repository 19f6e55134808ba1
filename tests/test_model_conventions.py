"""What scikit-learn and skorch users expect of the classifiers.

Sample weights (also through Pipeline and GridSearchCV, with metadata routing
on and off), skorch's prefixed parameters and callbacks, ``predict_log_proba``,
the input tags and the HTML representation's link to the docs.
"""

from functools import partial

import _helpers
import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.ensemble import VotingClassifier
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from skorch.callbacks import Callback

import skxray.models
from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier, all_classifiers, load

SIZE = 32

# One full batch, no validation split, no detector: a fit is a few
# deterministic gradient steps, so two fits can be compared weight by weight.
DETERMINISTIC = {"batch_size": 256, "validation_fraction": None, "ood": False, "max_epochs": 2}
tiny_cnn = partial(_helpers.tiny_cnn, **DETERMINISTIC)


@pytest.fixture(scope="module")
def phantoms():
    X, y, groups = make_phantom_cxr(40, image_size=SIZE, random_state=0, return_groups=True)
    return X, y, groups


def _weights(clf):
    return torch.cat([p.detach().flatten() for p in clf.module_.parameters()]).numpy()


def _same_fit(a, b):
    np.testing.assert_allclose(_weights(a), _weights(b), rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        [h["train_loss"] for h in a.history_], [h["train_loss"] for h in b.history_], rtol=1e-6
    )


# ------------------------------------------------------------------ sample_weight
def test_sample_weight_changes_the_fit_and_ones_do_not(phantoms):
    X, y, _ = phantoms
    plain = tiny_cnn().fit(X, y)
    _same_fit(plain, tiny_cnn().fit(X, y, sample_weight=np.ones(len(y))))
    weights = np.random.default_rng(0).uniform(0.0, 3.0, len(y))
    weighted = tiny_cnn().fit(X, y, sample_weight=weights)
    assert np.abs(_weights(weighted) - _weights(plain)).max() > 1e-4


# No batch normalisation and no dropout: both see the batch's composition, so
# a duplicated image would change them where a weight cannot.
@pytest.mark.parametrize(
    "make, classes, class_weight",
    [
        (partial(tiny_cnn, batch_norm=False, dropout=0.0), ("Covid-19", "Normal"), None),
        (
            partial(tiny_cnn, batch_norm=False, dropout=0.0, label_smoothing=0.1),
            ("Covid-19", "Normal", "Pneumonia"),
            {"Covid-19": 3.0, "Normal": 1.0, "Pneumonia": 0.5},
        ),
        (
            partial(_helpers.tiny_fnn, dropout=0.0, **DETERMINISTIC),
            ("Covid-19", "Normal"),
            {"Covid-19": 2.0, "Normal": 1.0},
        ),
        # The frozen ResNet-50 trains its head on cached backbone features.
        (partial(_helpers.tiny_resnet, dropout=0.0, **DETERMINISTIC), ("Covid-19", "Normal"), None),
    ],
    ids=["cnn-binary", "cnn-3-classes-class-weight", "fnn-class-weight", "resnet-cached"],
)
def test_weight_of_two_equals_duplicating_the_image(make, classes, class_weight):
    X, y = make_phantom_cxr(24, classes=classes, image_size=SIZE, random_state=3)
    weights = np.ones(len(y))
    weights[[2, 5]] = 2.0
    weighted = make(class_weight=class_weight).fit(X, y, sample_weight=weights)
    duplicated = make(class_weight=class_weight).fit(
        np.concatenate([X, X[[2, 5]]]), np.concatenate([y, y[[2, 5]]])
    )
    _same_fit(weighted, duplicated)
    # A weight of 0 is the image left out.
    weights[[2, 5]] = 0.0
    zeroed = make(class_weight=class_weight).fit(X, y, sample_weight=weights)
    _same_fit(zeroed, make(class_weight=class_weight).fit(np.delete(X, [2, 5], 0), np.delete(y, [2, 5])))


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(3), r"sample_weight has shape \(3,\); expected \(40,\)"),
        (-np.ones(40), "sample_weight must be finite and non-negative"),
        (np.full(40, np.nan), "sample_weight must be finite and non-negative"),
        (np.zeros(40), "sample_weight is zero for every image"),
    ],
)
def test_bad_sample_weight_names_the_parameter(weights, message, phantoms):
    X, y, _ = phantoms
    with pytest.raises(ValueError, match=rf"CNNClassifier: {message}"):
        tiny_cnn().fit(X, y, sample_weight=weights)


@pytest.fixture(scope="module")
def weighted_reference(phantoms):
    """A direct weighted fit, and the weights: what routing must reproduce."""
    X, y, _ = phantoms
    weights = np.random.default_rng(1).uniform(0.2, 3.0, len(y))
    return tiny_cnn().fit(X, y, sample_weight=weights), weights


def test_sample_weight_through_pipeline_and_grid_search_with_routing(phantoms, weighted_reference):
    X, y, _ = phantoms
    reference, weights = weighted_reference
    with sklearn.config_context(enable_metadata_routing=True):
        clf = tiny_cnn().set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        pipe = make_pipeline(clf).fit(X, y, sample_weight=weights)
        _same_fit(pipe[-1], reference)
        search = GridSearchCV(make_pipeline(clf), {"cnnclassifier__lr": [1e-3]}, cv=2)
        search.fit(X, y, sample_weight=weights)
    _same_fit(search.best_estimator_[-1], reference)


def test_sample_weight_through_pipeline_and_grid_search_without_routing(phantoms, weighted_reference):
    X, y, _ = phantoms
    reference, weights = weighted_reference
    pipe = make_pipeline(tiny_cnn()).fit(X, y, cnnclassifier__sample_weight=weights)
    _same_fit(pipe[-1], reference)
    search = GridSearchCV(make_pipeline(tiny_cnn()), {"cnnclassifier__lr": [1e-3]}, cv=2)
    search.fit(X, y, cnnclassifier__sample_weight=weights)
    _same_fit(search.best_estimator_[-1], reference)


def test_voting_classifier_passes_sample_weight_on(phantoms, weighted_reference):
    X, y, _ = phantoms
    reference, weights = weighted_reference
    voting = VotingClassifier([("cnn", tiny_cnn()), ("fnn", _helpers.tiny_fnn(**DETERMINISTIC))], voting="soft")
    voting.fit(X, y, sample_weight=weights)
    _same_fit(voting.estimators_[0], reference)


@pytest.mark.parametrize("routing", [True, False])
def test_groups_route_to_a_grouped_cv(routing, phantoms):
    X, y, groups = phantoms
    seen = []

    class RecordingGroupKFold(GroupKFold):
        def split(self, X, y=None, groups=None):
            seen.append(groups)
            return super().split(X, y, groups)

    with sklearn.config_context(enable_metadata_routing=routing):
        search = GridSearchCV(
            make_pipeline(tiny_cnn(max_epochs=1)), {"cnnclassifier__lr": [1e-3]}, cv=RecordingGroupKFold(2)
        )
        search.fit(X, y, groups=groups)
    assert seen and all(np.array_equal(g, groups) for g in seen)


# ------------------------------------------------------------------ groups
@pytest.fixture(scope="module")
def patients():
    """60 phantoms of 20 patients, 3 images each, both classes among the patients."""
    X, y = make_phantom_cxr(60, image_size=SIZE, classes=("Covid-19", "Normal"), random_state=3)
    order = np.argsort(y, kind="stable")
    return X[order], y[order], np.repeat(np.arange(20), 3)


def _validation_indices(clf):
    return np.asarray(clf.net_.train_split.valid_idx)


def test_groups_keep_each_patient_on_one_side_of_the_validation_split(patients):
    X, y, groups = patients
    settings = {"max_epochs": 1, "validation_fraction": 0.2, "ood": True}
    by_image = _validation_indices(_helpers.tiny_cnn(**settings).fit(X, y))
    # Without groups the split is by image: some patient has images on both sides.
    assert np.isin(groups[by_image], np.delete(groups, by_image)).any()
    clf = _helpers.tiny_cnn(**settings).fit(X, y, groups=groups)
    valid = _validation_indices(clf)
    assert not np.isin(groups[valid], np.delete(groups, valid)).any()
    assert len(np.unique(groups[valid])) == 4  # one fold of round(1 / 0.2) = 5
    assert set(y[valid]) == set(y)
    # The detector's labelled reference is those images.
    assert len(clf.ood_.reference_labels_) == len(valid)
    np.testing.assert_array_equal(np.sort(clf.ood_.reference_labels_), np.sort(clf._label_encoder.transform(y[valid])))


def test_groups_reach_fit_through_grid_search_with_routing(patients):
    X, y, groups = patients
    with sklearn.config_context(enable_metadata_routing=True):
        clf = _helpers.tiny_cnn(max_epochs=1, validation_fraction=0.2, ood=False).set_fit_request(groups=True)
        search = GridSearchCV(clf, {"lr": [1e-3]}, cv=GroupKFold(2)).fit(X, y, groups=groups)
    valid = _validation_indices(search.best_estimator_)
    assert not np.isin(groups[valid], np.delete(groups, valid)).any()


@pytest.mark.parametrize(
    "groups, message",
    [
        (np.arange(3), r"groups has shape \(3,\); expected \(60,\)"),
        (np.where(np.arange(60) == 7, np.nan, 1.0), r"groups is missing for 1 image\(s\) \(first at index 7\)"),
    ],
)
def test_bad_groups_name_the_parameter(groups, message, patients):
    X, y, _ = patients
    with pytest.raises(ValueError, match=rf"CNNClassifier: {message}"):
        _helpers.tiny_cnn(max_epochs=1).fit(X, y, groups=groups)


def test_too_few_groups_train_without_validation_and_say_so(patients):
    X, y, _ = patients
    groups = (y == y[0]).astype(int)  # two groups, each one class: no stratified fold exists
    with pytest.warns(UserWarning, match="groups are too few"):
        clf = _helpers.tiny_cnn(max_epochs=1, ood=False).fit(X, y, groups=groups)
    assert clf.net_.train_split is None and clf.history_[-1]["valid_loss"] is None


# -------------------------------------------------------- skorch's parameter routing
def test_prefixed_parameters_are_parameters():
    clf = CNNClassifier(optimizer="sgd", optimizer__momentum=0.5)
    clf.set_params(module__channels_last=False, iterator_train__shuffle=False, callbacks__progress_bar=None)
    params = clf.get_params()
    assert params["optimizer__momentum"] == 0.5 and params["module__channels_last"] is False
    assert params["iterator_train__shuffle"] is False and params["callbacks__progress_bar"] is None
    copy = clone(clf)
    assert {k: v for k, v in copy.get_params().items() if "__" in k} == {
        "optimizer__momentum": 0.5,
        "module__channels_last": False,
        "iterator_train__shuffle": False,
        "callbacks__progress_bar": None,
    }
    assert "optimizer__momentum=0.5" in repr(clf)
    with pytest.raises(TypeError, match=r"CNNClassifier\.__init__\(\) got an unexpected keyword argument 'dataset__x'"):
        CNNClassifier(dataset__x=1)


def test_prefixed_parameters_reach_skorch_and_torch(phantoms):
    X, y, _ = phantoms
    clf = tiny_cnn(
        optimizer="sgd",
        optimizer__momentum=0.5,
        module__channels_last=False,
        iterator_train__shuffle=False,
        iterator_valid__drop_last=False,
        verbose=1,
        callbacks__progress_bar=None,
    ).fit(X, y)
    assert clf.net_.optimizer_.param_groups[0]["momentum"] == 0.5
    assert clf.net_.optimizer_.param_groups[0]["nesterov"] is True  # the default it did not replace
    assert clf.module_.memory_format == torch.contiguous_format
    assert clf.net_.get_params()["iterator_train__shuffle"] is False
    names = [name for name, _ in clf.net_.callbacks_]
    assert "progress_bar" not in names and "lr_record" in names
    assert "progress_bar" in [n for n, _ in tiny_cnn(verbose=1, max_epochs=1).fit(X, y).net_.callbacks_]


def test_criterion_keywords_route_like_class_weight(phantoms):
    # pos_weight 3 is what class_weight={"Covid-19": 1, "Normal": 3} computes.
    X, y, _ = phantoms
    routed = tiny_cnn(criterion__pos_weight=torch.tensor([3.0])).fit(X, y)
    _same_fit(routed, tiny_cnn(class_weight={"Covid-19": 1.0, "Normal": 3.0}).fit(X, y))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"optimizer__lr": 0.1}, "optimizer__lr is set by the parameter 'lr'"),
        ({"iterator_train__batch_size": 4}, "iterator_train__batch_size is set by the parameter 'batch_size'"),
        ({"module__dropout": 0.1}, "module__dropout is set by the parameter 'dropout'"),
        (
            {"class_weight": "balanced", "criterion__pos_weight": torch.tensor([2.0])},
            "criterion__pos_weight is set by the parameter 'class_weight'",
        ),
        ({"optimizer__betas2": 1}, r"optimizer__betas2 is not a keyword of Adam; optimizer__ accepts \[.*'betas'"),
        ({"module__foo": 1}, r"module__foo is not a keyword of _ConvNet; module__ accepts \['channels_last'\]"),
        ({"criterion__foo": 1}, "criterion__foo is not a keyword of _BinaryLogitLoss"),
    ],
)
def test_bad_prefixed_parameters_name_themselves(params, message, phantoms):
    X, y, _ = phantoms
    with pytest.raises(ValueError, match=rf"CNNClassifier: {message}"):
        tiny_cnn(**params).fit(X, y)


def test_optimizer_momentum_in_a_grid(phantoms):
    X, y, _ = phantoms
    search = GridSearchCV(
        tiny_cnn(optimizer="sgd", max_epochs=1), {"optimizer__momentum": [0.0, 0.5]}, cv=2, refit=True
    ).fit(X, y)
    assert [p["optimizer__momentum"] for p in search.cv_results_["params"]] == [0.0, 0.5]
    best = search.best_params_["optimizer__momentum"]
    assert search.best_estimator_.net_.optimizer_.param_groups[0]["momentum"] == best
    # Each candidate trains with its own momentum (0 is plain SGD).
    fits = [clone(search.estimator).set_params(**p).fit(X, y) for p in search.cv_results_["params"]]
    assert [f.net_.optimizer_.param_groups[0]["momentum"] for f in fits] == [0.0, 0.5]
    assert np.abs(_weights(fits[0]) - _weights(fits[1])).max() > 1e-5


class _CountEpochs(Callback):
    """A user's callback: counts the epochs it sees."""

    def initialize(self):
        self.epochs_ = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs_ += 1


def test_user_callback_is_called_and_switchable(phantoms):
    X, y, _ = phantoms
    counter = _CountEpochs()
    clf = tiny_cnn(max_epochs=3, callbacks=[("count", counter)]).fit(X, y)
    assert counter.epochs_ == 3
    assert clone(clf).get_params()["callbacks"][0][0] == "count"
    tiny_cnn(max_epochs=2, callbacks=[("count", counter)], callbacks__count=None).fit(X, y)
    assert counter.epochs_ == 3  # switched off: not called again


def test_prefixed_parameters_are_saved_and_loaded(tmp_path, phantoms):
    X, y, _ = phantoms
    clf = tiny_cnn(module__channels_last=False, callbacks=[_CountEpochs()]).fit(X, y)
    loaded = load(clf.save(tmp_path / "model"))
    assert loaded.get_params()["module__channels_last"] is False
    assert loaded.module_.memory_format == torch.contiguous_format
    assert loaded.callbacks is None  # a callback is not data; predictions need none
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


# ------------------------------------------------------------------ predictions
@pytest.mark.parametrize("n_classes, tta", [(2, False), (3, False), (2, True)])
def test_predict_log_proba_is_the_log_of_predict_proba(n_classes, tta):
    classes = ("Covid-19", "Normal", "Pneumonia")[:n_classes]
    X, y = make_phantom_cxr(30, classes=classes, image_size=SIZE, random_state=0)
    clf = tiny_cnn(tta=tta, max_epochs=1).fit(X, y)
    log_proba = clf.predict_log_proba(X)
    assert log_proba.shape == (30, n_classes) and log_proba.dtype == np.float32
    np.testing.assert_allclose(log_proba, np.log(clf.predict_proba(X)), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ tags and repr
@pytest.mark.parametrize("name", [name for name, _ in all_classifiers()])
def test_input_tags_say_images_and_paths(name):
    tags = get_tags(dict(all_classifiers())[name]())
    assert tags.input_tags.two_d_array and tags.input_tags.three_d_array and tags.input_tags.string
    assert not tags.input_tags.allow_nan and not tags.input_tags.sparse


@pytest.mark.parametrize("name", [name for name, _ in all_classifiers()])
def test_html_repr_links_to_the_api_page(name):
    # The API reference documents every name of skxray.models.__all__ on
    # api/generated/skxray.models.<name>.html (docs/_ext/skxray_docgen.py).
    assert name in skxray.models.__all__
    url = f"https://skxray.readthedocs.io/en/latest/api/generated/skxray.models.{name}.html"
    clf = dict(all_classifiers())[name]()
    assert clf._get_doc_link() == url
    assert f'href="{url}"' in clf._repr_html_()


def test_resume_finds_a_fit_with_callbacks_and_not_one_with_other_weights(tmp_path, phantoms):
    # The checkpoint's fingerprint holds the sample weights, and the callbacks
    # without their memory addresses (a new instance is the same setting).
    X, y, _ = phantoms
    weights = np.linspace(0.5, 2.0, len(y))

    def make():
        return tiny_cnn(checkpoint_dir=tmp_path, callbacks=[("count", _CountEpochs())])

    make().fit(X, y, sample_weight=weights)
    assert make().fit(X, y, sample_weight=weights, resume=True).resumed_from_ is not None
    assert make().fit(X, y, sample_weight=weights[::-1], resume=True).resumed_from_ is None


# ------------------------------------------------ fit passes values, not attributes
def test_fit_steps_see_no_attribute_that_fit_removes(phantoms, tmp_path, monkeypatch):
    # fit hands its steps a frozen FitContext and takes back what they
    # return; an attribute present while a step runs but gone after fit is
    # state parked on the estimator (tests/test_architecture.py checks the
    # source for ``del self.<name>``, this the behaviour). A fresh fit and a
    # resumed one (fingerprint and training state in play) are both watched.
    from skxray.models._base import BaseImageClassifier

    seen = []
    for hook in ("_fit_net", "_train_net", "_fit_ood"):
        original = getattr(BaseImageClassifier, hook)

        def spy(self, *args, _original=original, **kwargs):
            seen.append(set(vars(self)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(BaseImageClassifier, hook, spy)
    X, y, _ = phantoms
    clf = _helpers.tiny_cnn(max_epochs=1, checkpoint_dir=tmp_path)
    clf.fit(X, y)
    clf.fit(X, y, resume=True)
    assert clf.resumed_from_ is not None
    assert len(seen) == 6
    assert [sorted(keys - set(vars(clf))) for keys in seen] == [[]] * 6


@pytest.mark.parametrize("n_classes", [2, 3])
def test_build_module_is_the_module_fit_trains(phantoms, n_classes):
    X, y, _ = phantoms
    if n_classes == 3:
        y = np.where(np.arange(len(y)) % 3 == 0, "Other", y)
    clf = tiny_cnn(optimizer="sgd", module__channels_last=False)
    fitted = clone(clf).fit(X, y)
    built = clf.build_module(X.shape[1:] if X.ndim == 4 else (1, *X.shape[1:]), n_classes=n_classes)
    assert type(built) is type(fitted.module_)
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in fitted.module_.state_dict().items()
    }
    assert built.memory_format == torch.contiguous_format
    assert built(torch.zeros(3, 1, SIZE, SIZE)).shape == (3, 1 if n_classes == 2 else 3)
    with pytest.raises(ValueError, match="n_classes must be an int >= 2"):
        clf.build_module((1, SIZE, SIZE), n_classes=1)
