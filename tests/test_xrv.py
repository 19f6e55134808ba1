"""PretrainedCXRClassifier: torchxrayvision backbones, tested offline.

torchxrayvision's released weights cannot be downloaded here, so every test
builds the architectures with random weights, writes them to files (a state
dict, or a file in torchxrayvision's cache in the release's own format) and
checks that the estimator's features equal those of torchxrayvision's own
model holding the same weights.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from _helpers import count_backbone_images
from sklearn.base import clone

from skxray import load
from skxray.datasets import make_phantom_cxr
from skxray.models import PretrainedCXRClassifier, PretrainedWeightsError
from skxray.models.xrv import _XRVNet, load_xrv_state_dict, to_xrv_input

with warnings.catch_warnings():  # torchxrayvision silences all warnings on import
    xrv = pytest.importorskip(
        "torchxrayvision",
        reason='torchxrayvision is not installed: pip install "skxray[xrv]" (make setup installs it)',
    )

DENSENET = "densenet121-res224-all"
RESNET = "resnet50-res512-all"


def tiny(**kw):
    params = dict(
        input_resolution=None, head_units=16, max_epochs=2, random_state=0, ood=False,
        validation_fraction=None,
    )
    return PretrainedCXRClassifier(**{**params, **kw})


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(24, image_size=32, random_state=0)


def _randomise_batchnorm(model, seed):
    # Fresh BatchNorm statistics are 0 and 1, which would hide a loader that
    # forgets them; give every one its own values.
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def densenet():
    """torchxrayvision's DenseNet with random weights: the reference model."""
    torch.manual_seed(1)
    return _randomise_batchnorm(xrv.models.DenseNet(weights=None), 1)


def _xrv_resnet_state(seed):
    """A state dict in the format of torchxrayvision's resnet50-res512-all file."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None, num_classes=18)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _randomise_batchnorm(model, seed).state_dict()


def _features(clf, X):
    x = torch.from_numpy(np.asarray(X, dtype=np.float32))
    with torch.no_grad():
        return clf.module_.features(x[:, None] if x.ndim == 3 else x).numpy()


def _xrv_scaled(X):
    """torchxrayvision's normalize(img, maxval=1): [0, 1] -> [-1024, 1024], one channel."""
    x = torch.from_numpy(np.asarray(X, dtype=np.float32))
    return ((2 * x - 1) * 1024)[:, None] if x.ndim == 3 else (2 * x - 1) * 1024


def _cache_file(home, backbone):
    """Where torchxrayvision looks for ``backbone``'s file under ``home``."""
    url = xrv.models.model_urls[backbone]["weights_url"]
    return Path(home) / ".torchxrayvision" / "models_data" / Path(url).name


def test_to_xrv_input_is_torchxrayvisions_convention():
    x = torch.rand(2, 1, 40, 40)
    out = to_xrv_input(x, None)
    np.testing.assert_allclose(out.numpy(), ((2 * x - 1) * 1024).numpy(), rtol=1e-6)
    assert to_xrv_input(torch.zeros(1, 1, 4, 4), None).min() == -1024
    assert to_xrv_input(torch.ones(1, 1, 4, 4), None).max() == 1024
    # RGB images are averaged to one channel.
    rgb = torch.rand(2, 3, 40, 40)
    np.testing.assert_allclose(
        to_xrv_input(rgb, None).numpy(), to_xrv_input(rgb.mean(1, keepdim=True), None).numpy(), rtol=1e-5
    )
    # Resized the way torchxrayvision's models resize their input.
    expected = xrv.utils.fix_resolution((2 * x - 1) * 1024, 56, object())
    np.testing.assert_allclose(to_xrv_input(x, 56).numpy(), expected.numpy(), atol=1e-3)
    assert to_xrv_input(x, 56).shape == (2, 1, 56, 56)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_state_dict_gives_torchxrayvisions_features(densenet, phantoms, tmp_path, suffix):
    X, y = phantoms
    path = tmp_path / f"densenet{suffix}"
    if suffix == ".pth":
        torch.save(densenet.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in densenet.state_dict().items()}, str(path))
    clf = tiny(weights=path).fit(X, y)
    with torch.no_grad():
        expected = densenet.features2(_xrv_scaled(X[:6])).numpy()
    np.testing.assert_allclose(_features(clf, X[:6]), expected, rtol=1e-4, atol=1e-5)
    assert clf.features_cached_ and clf.module_.backbone.training is False
    assert all(not p.requires_grad for p in clf.module_.backbone.parameters())
    # Random weights give other features: the comparison above can fail.
    other = tiny(weights=None).fit(X, y)
    assert not np.allclose(_features(other, X[:6]), expected, atol=1e-3)


def test_named_weights_read_from_torchxrayvisions_cache(densenet, phantoms, tmp_path, monkeypatch):
    # The offline route of the docs: the release file copied into
    # ~/.torchxrayvision/models_data/, in the release's format (a pickled model).
    X, y = phantoms
    monkeypatch.setenv("HOME", str(tmp_path))
    target = _cache_file(tmp_path, DENSENET)
    target.parent.mkdir(parents=True)
    torch.save(densenet, target)

    def no_download(*args, **kwargs):
        raise AssertionError("the file is in the cache; nothing should be downloaded")

    monkeypatch.setattr(xrv.utils, "download", no_download)
    clf = tiny(backbone=DENSENET).fit(X, y)
    assert clf.weights == "pretrained"
    with torch.no_grad():
        expected = densenet.features2(_xrv_scaled(X[:6])).numpy()
    np.testing.assert_allclose(_features(clf, X[:6]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_resnet50_matches_torchxrayvision_at_its_native_512_px(tmp_path, monkeypatch):
    # Named weights from the cache, resized to 512 px inside the estimator
    # exactly as torchxrayvision.models.ResNet.features resizes them.
    monkeypatch.setenv("HOME", str(tmp_path))
    target = _cache_file(tmp_path, RESNET)
    target.parent.mkdir(parents=True)
    torch.save(_xrv_resnet_state(2), target)
    X, y = make_phantom_cxr(4, image_size=48, random_state=0)
    clf = PretrainedCXRClassifier(
        backbone=RESNET, head_units=8, max_epochs=1, ood=False, validation_fraction=None, random_state=0
    ).fit(X, y)
    assert clf.module_.resolution == 512
    reference = xrv.models.ResNet(weights=RESNET)
    with torch.no_grad():
        expected = reference.features(_xrv_scaled(X[:2])).numpy()
    assert expected.shape == (2, 2048)
    np.testing.assert_allclose(_features(clf, X[:2]), expected, rtol=1e-3, atol=1e-4)


def test_download_failure_names_the_file_the_folder_and_the_parameter(phantoms, tmp_path, monkeypatch):
    import requests

    X, y = phantoms
    monkeypatch.setenv("HOME", str(tmp_path))

    def offline(url, filename):
        raise requests.exceptions.ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(xrv.utils, "download", offline)
    target = _cache_file(tmp_path, DENSENET)
    with pytest.raises(PretrainedWeightsError) as info:
        tiny().fit(X, y)
    message = str(info.value)
    assert target.name in message  # the file to copy
    assert str(target.parent) in message  # where
    assert xrv.models.model_urls[DENSENET]["weights_url"] in message  # from where
    assert f"PretrainedCXRClassifier(backbone='{DENSENET}', weights='/path/to/" in message
    assert not target.exists()


def test_saved_model_loads_without_pickle_or_weights_file(densenet, phantoms, tmp_path, monkeypatch):
    X, y = phantoms
    weights = tmp_path / "densenet.pth"
    torch.save(densenet.state_dict(), weights)
    clf = tiny(weights=weights, ood=True).fit(X, y)
    folder = clf.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]
    weights.unlink()  # loading reads the saved backbone, not the original file

    def no_weights(*args, **kwargs):
        raise AssertionError("loading must not fetch backbone weights")

    monkeypatch.setattr("skxray.models.xrv.load_xrv_state_dict", no_weights)
    monkeypatch.setattr(torch, "load", no_weights)  # nothing is unpickled
    loaded = load(folder)
    assert type(loaded) is PretrainedCXRClassifier and loaded.backbone == DENSENET
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_allclose(_features(loaded, X[:4]), _features(clf, X[:4]))
    assert loaded.ood_ is not None


def test_resnet50_backbone_saves_and_loads_without_torchxrayvision(phantoms, tmp_path, monkeypatch):
    # The ResNet-50 is torchvision's (1-channel stem); only the DenseNets need
    # torchxrayvision to be rebuilt, and say so when it is missing.
    X, y = phantoms
    resnet = tiny(backbone=RESNET, weights=None).fit(X, y)
    densenet = tiny(weights=None).fit(X, y)
    resnet.save(tmp_path / "resnet")
    densenet.save(tmp_path / "densenet")
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)
    loaded = load(tmp_path / "resnet")
    assert loaded.module_.backbone.conv1.in_channels == 1
    np.testing.assert_array_equal(loaded.predict_proba(X), resnet.predict_proba(X))
    with pytest.raises(ImportError, match=r'pip install "skxray\[xrv\]"'):
        load(tmp_path / "densenet")


def test_feature_cache_is_per_backbone_and_resolution(phantoms, tmp_path, monkeypatch):
    X, y = phantoms
    seen = count_backbone_images(monkeypatch, _XRVNet)
    first = tiny(weights=None, feature_cache_dir=tmp_path).fit(X, y)
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith(f"xrv-{DENSENET}-own-") and len(list(folder.glob("*.npy"))) == 24
    assert np.load(next(folder.glob("*.npy"))).shape == (1024,)
    seen.clear()
    again = clone(first).set_params(lr=3e-3).fit(X, y)  # same weights (random_state=0)
    again.predict_proba(X)
    assert seen == []
    # Another input resolution gives other features of the same pixels: another folder.
    clone(first).set_params(input_resolution=48).fit(X, y)
    assert sum(seen) == 24 and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"backbone": "densenet121-res999"}, ValueError, "'backbone' parameter of PretrainedCXRClassifier"),
        ({"input_resolution": 16}, ValueError, "'input_resolution' parameter"),
        ({"weights": 3}, TypeError, "'weights' parameter"),
        ({"weights": "/no/such/file.pth"}, FileNotFoundError, "/no/such/file.pth"),
        ({"feature_cache_dir": "x", "freeze": False}, ValueError, "PretrainedCXRClassifier: feature_cache_dir"),
    ],
)
def test_bad_parameters_are_named(params, error, match, phantoms):
    X, y = phantoms
    with pytest.raises(error, match=match):
        tiny(**params).fit(X, y)


def test_bad_images_and_weight_files_are_refused(densenet, phantoms, tmp_path):
    X, y = phantoms
    with pytest.raises(ValueError, match="at least 32 px; got 16 x 16"):
        tiny(weights=None).fit(X[:, :16, :16], y)
    with pytest.raises(ValueError, match="resizes square images.*32 x 40"):
        tiny(weights=None, input_resolution=32).fit(np.zeros((4, 32, 40), np.float32), [0, 1, 0, 1])
    # ResNet-50 weights for a DenseNet backbone.
    resnet_file = tmp_path / "resnet.pth"
    torch.save(_xrv_resnet_state(0), resnet_file)
    with pytest.raises(ValueError, match=f"do not fit torchxrayvision's {DENSENET}"):
        tiny(weights=resnet_file).fit(X, y)
    # A pickled model (the DenseNet release format) is not a plain state dict.
    pickled = tmp_path / "model.pt"
    torch.save(densenet, pickled)
    with pytest.raises(ValueError, match="Only plain state dicts"):
        load_xrv_state_dict(DENSENET, pickled)
    with pytest.raises(ValueError, match="backbone must be one of .*got 'densenet'"):
        load_xrv_state_dict("densenet", pickled)


def test_missing_torchxrayvision_says_how_to_install(phantoms, monkeypatch):
    X, y = phantoms
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)
    with pytest.raises(ImportError, match=r'pip install "skxray\[xrv\]"'):
        tiny(weights=None).fit(X, y)


def test_importing_torchxrayvision_leaves_warnings_on(monkeypatch):
    # torchxrayvision.models calls warnings.filterwarnings("ignore") when
    # imported: import it afresh and check the filters are as before.
    from skxray.models.xrv import _import_xrv

    for name in [n for n in sys.modules if n.split(".")[0] == "torchxrayvision"]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    with warnings.catch_warnings():
        before = list(warnings.filters)
        fresh = _import_xrv()
        after = list(warnings.filters)
    assert fresh is not xrv  # really imported again
    assert after == before


def test_gradcam_runs_through_the_densenet():
    from skxray.explain import gradcam

    # 64 px: DenseNet's last feature map is 2 x 2, so the heatmaps are not constant.
    X, y = make_phantom_cxr(12, image_size=64, random_state=0)
    clf = tiny(weights=None).fit(X, y)
    maps = gradcam(clf, X[:2])
    assert maps.shape == (2, 64, 64) and maps.max() > 0 and maps.std() > 0
