"""``compile=True``: skorch's ``torch.compile`` of the network, off by default.

The compiled fits use torch.compile's ``"aot_eager"`` backend
(``compile__backend``): it traces the network through TorchDynamo and
AOTAutograd, wraps it as the default backend does (``_orig_mod``), and skips
inductor's C++ code generation, which costs tens of seconds on a fresh
machine. What these tests check (the plain module's keys in saved files and
checkpoints, loading, resuming, routing) does not depend on the backend;
what inductor does to speed is measured in ``benchmarks/speed.py``
(``limit_compile``). The compiled fits share one module-scoped fixture.
"""

from functools import partial
from pathlib import Path

import _helpers
import numpy as np
import pytest
import torch
from sklearn.base import clone

import skxray
from skxray.datasets import make_phantom_cxr
from skxray.models import CNNClassifier

MAX_EPOCHS = 3
tiny_cnn = partial(_helpers.tiny_cnn, max_epochs=MAX_EPOCHS, ood=False)
#: Compiled without inductor's code generation (see the module docstring).
COMPILED = {"compile": True, "compile__backend": "aot_eager"}


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(48, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def fits(phantoms, tmp_path_factory):
    """Seeded CNNs fitted compiled (with checkpoints), and without dropout compiled and not."""
    X, y = phantoms
    folder = tmp_path_factory.mktemp("compiled")
    return {
        "compiled": tiny_cnn(**COMPILED, checkpoint_dir=folder / "a").fit(X, y),
        "compiled_no_dropout": tiny_cnn(**COMPILED, dropout=0.0).fit(X, y),
        "eager_no_dropout": tiny_cnn(dropout=0.0).fit(X, y),
        "folder": folder,
    }


def _is_compiled(module):
    # torch.compile's wrapper keeps the module it compiled in _orig_mod.
    return hasattr(module, "_orig_mod")


def test_compile_is_off_by_default():
    assert CNNClassifier().compile is False
    assert skxray.models.FNNClassifier().get_params()["compile"] is False


@pytest.mark.slow
def test_compiled_fit_trains_the_same_model(fits, phantoms):
    X, _ = phantoms
    compiled, eager = fits["compiled_no_dropout"], fits["eager_no_dropout"]
    assert _is_compiled(compiled.net_.module_)
    assert not _is_compiled(eager.net_.module_)
    # module_ is the plain module in both cases, with the same state_dict keys.
    assert not _is_compiled(compiled.module_)
    assert list(compiled.module_.state_dict()) == list(eager.module_.state_dict())
    # Same seed, same model: compilation changes the kernels, not the arithmetic
    # beyond rounding (dropout aside: compiled, it draws from another stream).
    for a, b in zip(compiled.history_, eager.history_, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    np.testing.assert_allclose(compiled.predict_proba(X), eager.predict_proba(X), atol=1e-4)


@pytest.mark.slow
def test_compiled_model_saves_and_loads(fits, phantoms, tmp_path):
    X, _ = phantoms
    compiled = fits["compiled"]
    expected = compiled.predict_proba(X)
    loaded = skxray.load(compiled.save(tmp_path / "model"))
    assert loaded.compile is True
    assert _is_compiled(loaded.net_.module_)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    # The best weights of checkpoint_dir load into the plain module too.
    best = torch.load(Path(compiled.checkpoint_path_) / "params.pt", weights_only=True)
    assert list(best) == list(compiled.module_.state_dict())


@pytest.mark.slow
def test_compiled_fit_resumes_to_the_uninterrupted_model(fits, phantoms, monkeypatch):
    X, y = phantoms
    folder = fits["folder"] / "b"
    with monkeypatch.context() as patch:
        _helpers.interrupt_after_epoch(patch, 1)
        stopped = tiny_cnn(**COMPILED, checkpoint_dir=folder).fit(X, y)
    assert stopped.n_iter_ == 1
    state = torch.load(Path(stopped.checkpoint_path_) / "last.pt", weights_only=True)
    # The checkpoint holds the plain module's keys, not torch.compile's "_orig_mod." ones.
    assert not any(k.startswith("_orig_mod.") for k in state["module"])
    resumed = tiny_cnn(**COMPILED, checkpoint_dir=folder).fit(X, y, resume=True)
    assert resumed.resumed_from_ is not None
    uninterrupted = fits["compiled"]
    # Dropout included: the compiled fit's masks continue where they stopped.
    assert [h["train_loss"] for h in resumed.history_] == pytest.approx(
        [h["train_loss"] for h in uninterrupted.history_], rel=1e-5
    )
    np.testing.assert_allclose(resumed.predict_proba(X), uninterrupted.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"compile": "yes"}, "'compile' parameter of CNNClassifier must be"),
        ({"compile": 1}, "'compile' parameter of CNNClassifier must be"),
        ({"compile": True, "compile__bogus": 1}, "compile__bogus is not a keyword of compile"),
        ({"compile": True, "compile__model": None}, "compile__model is set by the parameter 'the module'"),
    ],
)
def test_bad_compile_settings_are_refused_naming_them(params, match, phantoms):
    X, y = phantoms
    with pytest.raises(ValueError, match=match):
        tiny_cnn(**params).fit(X, y)


def test_compile_keywords_are_routed_parameters():
    clf = CNNClassifier(compile=True, compile__mode="reduce-overhead")
    assert clf.get_params()["compile__mode"] == "reduce-overhead"
    assert clone(clf).get_params()["compile__mode"] == "reduce-overhead"
    assert clf.set_params(compile__dynamic=False).get_params()["compile__dynamic"] is False
