"""DarkCovidNet: ``CNNClassifier(architecture="darkcovidnet")`` and the paper's preset.

The layer counts and shapes are those of the authors' notebook
(``DarkCovidNet.ipynb`` of github.com/muhammedtalo/COVID-19, the model cell
and its ``learn.summary()``); whether the recipe reaches the paper's
accuracy is for ``benchmarks/accuracy.py`` on real X-rays, not for these
phantom tests.
"""

from pathlib import Path

import _helpers
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import skxray
from skxray.augmentation import xray_augmentation
from skxray.datasets import make_phantom_cxr
from skxray.models import CNN_PRESETS, CNNClassifier

SIZE = 32


def darkcovidnet(**params):
    """The paper's preset, shortened for 32 px phantoms."""
    return CNNClassifier.from_preset("darkcovidnet_paper", **{"max_epochs": 2, "random_state": 0, **params})


@pytest.fixture(scope="module")
def phantom_split():
    X, y = make_phantom_cxr(300, image_size=SIZE, random_state=1)
    return X[:200], y[:200], X[200:], y[200:]


def _module(input_shape, n_classes):
    n_outputs = 1 if n_classes == 2 else n_classes
    torch.manual_seed(0)
    return CNNClassifier(architecture="darkcovidnet", dropout=0.0)._build_module(input_shape, n_outputs)


# ------------------------------------------------------------------ architecture
def test_seventeen_convolutions_in_the_notebook_order():
    module = _module((1, 64, 64), 3)
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 17
    assert [c.out_channels for c in convs] == [
        8, 16, 32, 16, 32, 64, 32, 64, 128, 64, 128, 256, 128, 256, 128, 256, 3
    ]
    assert [c.kernel_size[0] for c in convs] == [3, 3] + [3, 1, 3] * 4 + [1, 3, 3]
    assert not any(c.bias is not None for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in module.modules()) == 5
    leaky = [m for m in module.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 16 and {m.negative_slope for m in leaky} == {0.1}


@pytest.mark.parametrize(("n_classes", "n_weights"), [(2, 1_164_434), (3, 1_167_586)])
def test_the_notebooks_weights_at_256_px(n_classes, n_weights):
    # learn.summary() of the two notebooks: 3-channel 256 px input, 13x13
    # maps before the head, nn.Linear(338, 2) and nn.Linear(507, 3).
    module = _module((3, 256, 256), n_classes)
    if n_classes == 2:
        module.classifier[-1] = torch.nn.Linear(338, 2)  # the paper's two softmax outputs
    assert module.classifier[-1].in_features == n_classes * 13 * 13
    assert sum(p.numel() for p in module.parameters()) == n_weights
    module.eval()
    with torch.no_grad():
        assert module.features(torch.zeros(1, 3, 256, 256)).shape == (1, 256, 13, 13)


@pytest.mark.parametrize(("size", "side"), [(64, 7), (128, 9), (256, 13)])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_output_shapes_at_any_size(size, side, n_classes):
    module = _module((1, size, size), n_classes)
    module.eval()
    with torch.no_grad():
        out = module(torch.rand(2, 1, size, size))
        embedding = module.embed(torch.rand(2, 1, size, size))
    assert out.shape == (2, 1 if n_classes == 2 else n_classes)
    # The head reads one map per class (two for two classes) of side x side pixels.
    assert embedding.shape == (2, max(n_classes, 2) * side * side)


# ------------------------------------------------------------------ the preset
def test_preset_settings_and_fresh_augmentation():
    clf = CNNClassifier.from_preset("darkcovidnet_paper", random_state=0)
    params = clf.get_params()
    expected = {"architecture": "darkcovidnet", "image_size": 256, "max_epochs": 100, "batch_size": 32,
                "lr": 3e-3, "lr_schedule": "onecycle", "optimizer": "adamw", "weight_decay": 1e-2,
                "dropout": 0.0}
    assert {k: params[k] for k in expected} == expected
    assert repr(params["augment"]) == repr(xray_augmentation("fastai"))
    # Each classifier gets its own copy: tuning one never changes the preset.
    assert params["augment"] is not CNN_PRESETS["darkcovidnet_paper"]["augment"]
    assert repr(clone(clf).get_params()["augment"]) == repr(params["augment"])


def test_preset_schedule_is_one_cycle_to_3e3():
    # 900 training images (a 3-class training fold), 100 epochs of 32: the
    # schedule the preset's skorch callback steps through, batch by batch.
    clf = CNNClassifier.from_preset("darkcovidnet_paper")
    callbacks = dict(clf._callbacks(900, False, writer=True, processes=1))
    scheduler_cb = callbacks["lr_scheduler"]
    assert scheduler_cb.step_every == "batch"
    steps = scheduler_cb.kwargs["total_steps"]
    assert steps == 100 * 29
    weights = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weights], lr=clf.lr, weight_decay=clf.weight_decay)
    scheduler = scheduler_cb.policy(optimizer, **scheduler_cb.kwargs)
    lrs, beta1 = [], []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        beta1.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
    lrs = np.array(lrs)
    assert lrs.max() == pytest.approx(3e-3)
    # fastai's fit_one_cycle: warm-up over 30 % of the steps from max/25,
    # then down to max/25/1e4; momentum (Adam's beta1) from 0.95 to 0.85 and back.
    assert lrs.argmax() / steps == pytest.approx(0.3, abs=0.01)
    assert lrs[0] == pytest.approx(3e-3 / 25)
    assert lrs[-1] < 3e-3 / 25 / 1e3
    assert max(beta1) == pytest.approx(0.95) and min(beta1) == pytest.approx(0.85)


@pytest.fixture(scope="module")
def fitted(phantom_split):
    """The preset trained for 10 epochs (its batch norm needs about 60 batches)."""
    X, y, _, _ = phantom_split
    return darkcovidnet(max_epochs=10).fit(X, y)


def test_tiny_phantom_fit_learns(fitted, phantom_split):
    _, _, X_test, y_test = phantom_split
    clf = fitted
    assert clf.history_[-1]["train_loss"] < clf.history_[0]["train_loss"]
    assert clf.score(X_test, y_test) >= 0.8


# ------------------------------------------------------------------ shared parameters
def test_ood_gradcam_save_and_load(fitted, phantom_split, tmp_path):
    from skxray.explain import gradcam

    _, _, X_test, _ = phantom_split
    clf = fitted
    stats = clf.module_.activation_stats(torch.from_numpy(X_test[:4, None]))
    # Mean and standard deviation of the last block of each resolution.
    assert stats.shape == (4, 2 * (8 + 16 + 32 + 64 + 128 + 256))
    assert clf.ood_ is not None and clf.ood_score(X_test[:3]).shape == (3,)
    heat = gradcam(clf, X_test[:2])
    assert heat.shape == (2, SIZE, SIZE) and heat.max() > 0
    loaded = skxray.load(clf.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.ood_score(X_test), clf.ood_score(X_test))


def test_resume_after_interrupt_equals_uninterrupted(phantom_split, tmp_path, monkeypatch):
    X, y, X_test, _ = phantom_split
    reference = darkcovidnet(max_epochs=3, checkpoint_dir=tmp_path / "a", ood=False).fit(X, y)
    with monkeypatch.context() as patch:
        _helpers.interrupt_after_epoch(patch, 1)
        stopped = darkcovidnet(max_epochs=3, checkpoint_dir=tmp_path / "b", ood=False).fit(X, y)
    assert stopped.n_iter_ == 1
    resumed = darkcovidnet(max_epochs=3, checkpoint_dir=tmp_path / "b", ood=False).fit(X, y, resume=True)
    assert resumed.resumed_from_ == str(Path(stopped.checkpoint_path_) / "last.pt")  # as documented
    # The one-cycle schedule and the augmentation's random stream carry on.
    assert [h["lr"] for h in resumed.history_] == pytest.approx([h["lr"] for h in reference.history_])
    np.testing.assert_allclose(resumed.predict_proba(X_test), reference.predict_proba(X_test), atol=1e-5)


def test_amp_true_on_cpu_trains_in_bfloat16_or_is_refused(phantom_split):
    # bfloat16 autocast on a CPU with oneDNN's bfloat16 kernels; refused,
    # naming amp, on one without them.
    X, y, _, _ = phantom_split
    clf = darkcovidnet(amp=True, device="cpu", max_epochs=1, ood=False)
    try:
        clf.fit(X, y)
    except ValueError as exc:
        assert "amp=True" in str(exc) and "does not support" in str(exc)
    else:
        assert clf.amp_ is True and clf.net_.autocast_dtype is torch.bfloat16
        assert np.isfinite(clf.predict_proba(X)).all()


# ------------------------------------------------------------------ scikit-learn checks
#: The network's float32 convolutions round the last bit of an image's logits
#: differently with its place in the batch (2e-7, one float32 step), where
#: this check asks for 1e-7; the plain CNN happens to stay bit-identical.
EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance": "float32 rounding of batched convolutions (2e-7)",
    "check_sample_weight_equivalence_on_dense_data": _helpers.WEIGHTS_ARE_NOT_REPEATS,
}


@parametrize_with_checks(
    # The preset's one-cycle to 3e-3, over 8 epochs: 20 constant-rate epochs
    # took 3 times as long. ood=False: the detector's covariance costs more
    # than the network on these tiny inputs; test_ood_gradcam_save_and_load
    # covers it.
    [CNNClassifier(architecture="darkcovidnet", lr=3e-3, lr_schedule="onecycle", max_epochs=8,
                   random_state=0, ood=False)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
    # Whether the last bit moves depends on the machine's kernels.
    xfail_strict=False,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
