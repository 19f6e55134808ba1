"""The workflows behind the ``skxray`` commands, called from Python.

The commands themselves (``tests/test_cli.py``) run every workflow through
the command line; these tests call them directly, for what a Python user
sees: the result objects, the errors before any work, the warnings, and the
docstring examples (which train one tiny FNN and run a tiny demo).
"""

import doctest

import numpy as np
import pytest
from PIL import Image

import skxray.models._registry
import skxray.workflows
from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier, FNNClassifier, classifier_names, make_classifier
from skxray.workflows import (
    WorkflowWarning,
    compare,
    evaluate,
    explore,
    make_model,
    model_defaults,
    model_settings,
    train,
)

SIZE = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Class folders of phantom PNGs without a manifest (so: no patient ids)."""
    root = tmp_path_factory.mktemp("xrays")
    X, y = make_phantom_cxr(24, image_size=SIZE, random_state=0)
    for i, (img, label) in enumerate(zip(X, y)):
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / label / f"{i:02d}.png")
    return root


@pytest.mark.parametrize("module", [skxray.workflows, skxray.models._registry])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_models_by_name_come_from_the_registry():
    assert classifier_names() == ("cnn", "fnn", "resnet50")
    assert type(make_classifier("fnn")) is FNNClassifier
    assert make_classifier("cnn", preset="benchmark").get_params() == CNNClassifier.from_preset(
        "benchmark"
    ).get_params()
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; choose one of cnn, fnn, resnet50"):
        make_classifier("vgg")
    with pytest.raises(ValueError, match=r"preset='benchmark': FNNClassifier \('fnn'\) has no presets"):
        make_classifier("fnn", preset="benchmark")
    with pytest.raises(TypeError, match="lrr"):
        make_classifier("cnn", lrr=1)


def test_make_model_leaves_out_only_another_models_settings():
    cnn = make_model("cnn", epochs=3, image_size=SIZE, weights=None, feature_cache_dir="x", lr=0.5)
    assert (cnn.max_epochs, cnn.image_size, cnn.lr) == (3, SIZE, 0.5)
    assert "weights" not in cnn.get_params()
    resnet = make_model("resnet50", weights=None, feature_cache_dir="x")
    assert resnet.weights is None and resnet.feature_cache_dir == "x"
    # Defaults (or the preset's) stay where a setting is None.
    assert make_model("cnn", preset="benchmark").max_epochs == model_defaults("cnn", "benchmark")["epochs"]
    with pytest.raises(TypeError, match=r"no skxray classifier takes: \['lrr'\]"):
        make_model("cnn", lrr=1)


def test_model_settings_share_the_smallest_size():
    sizes = {name: model_defaults(name)["image_size"] for name in classifier_names()}
    settings = model_settings(["resnet50", "fnn"])
    assert settings.image_size == min(sizes["resnet50"], sizes["fnn"])
    assert settings.epochs_by_model == {n: model_defaults(n)["epochs"] for n in ("resnet50", "fnn")}
    assert model_settings(["cnn", "fnn"], epochs=2).epochs_text() == "2 epochs"
    assert model_settings(["cnn"], image_size=8).image_size == 8
    with pytest.raises(ValueError, match="no model named"):
        model_settings([])
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        model_settings(["cnn", "vgg"])


def test_explore(folder, tmp_path):
    result = explore(folder, tmp_path / "figures")
    assert result.n_images == 24 and result.class_counts == {"Covid-19": 12, "Normal": 12}
    assert result.n_patients is None  # no manifest
    assert result.sizes.shape == (24, 2) and (result.sizes == SIZE).all()
    assert [p.name for p in result.files] == ["sample_grid.png", "size_histogram.png"]
    assert all(p.is_file() for p in result.files)


def test_train_refuses_bad_settings_before_reading(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(NotADirectoryError, match=r"out '.*taken' exists and is not a folder"):
        train(missing, taken, "fnn")
    with pytest.raises(ValueError, match="resume=True needs the model's checkpoint_dir"):
        train(missing, tmp_path / "m", make_model("fnn"), resume=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(missing, tmp_path / "m", "fnn")


def test_evaluate_needs_a_saved_model(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a saved skxray model \(no config\.json\)"):
        evaluate(tmp_path, folder)


def test_compare_without_patient_ids_warns_and_says_so(folder, tmp_path, capsys):
    with pytest.warns(WorkflowWarning, match="no patient ids") as record:
        result = compare(folder, tmp_path, models=["fnn"], cv=2, epochs=1, image_size=SIZE)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing
    assert [type(w.message) for w in record if w.category is WorkflowWarning] == [WorkflowWarning]
    assert list(result.table.index) == ["fnn"]
    assert result.protocol.startswith("2-fold stratified cross-validation without patient ids")
    assert result.report_path == tmp_path / "report.html" and result.metrics_path.is_file()
    # The caveats of the run's facts are in the page's summary, before the general one.
    html = result.report_path.read_text()
    assert "one patient&#x27;s images may be in training and test folds" in html or (
        "one patient's images may be in training and test folds" in html
    )
    assert "Cross-validation within one collection cannot reveal shortcuts" in html


def test_compare_refuses_one_class(folder, tmp_path):
    with pytest.raises(ValueError, match="at least two classes"):
        compare(folder, tmp_path, models=["fnn"], classes=["Normal"], cv=2, epochs=1, image_size=SIZE)
