"""``amp="auto"`` decides by measurement: the probe, its cache, and what fit does with it."""

import itertools
from functools import partial

import _helpers
import numpy as np
import pytest
import torch
from torch import nn

import skxray
from skxray.datasets import make_phantom_cxr
from skxray.models import _precision

tiny_cnn = partial(_helpers.tiny_cnn, image_size=32, device="cpu", ood=False, max_epochs=3)


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    """No decision of another test is reused, and none made here is left behind.

    The CPU plays a GPU: bfloat16 autocast is declared native and
    ``amp="auto"`` measures there (autocast runs on any CPU, only slower
    without native kernels), so that the probe's path runs in the tests.
    """
    _precision.clear_cache()
    monkeypatch.setattr(_precision, "bf16_supported", lambda device_type: True)
    monkeypatch.setattr(_precision, "CPU_AUTO_MEASURES", True)
    yield
    _precision.clear_cache()


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(48, image_size=32, random_state=0)


def fake_clock(float32_s, bfloat16_s):
    """A timer under which each float32 step lasts ``float32_s`` and each bfloat16 one ``bfloat16_s``."""
    durations = itertools.cycle([float32_s, bfloat16_s])  # the probe's interleaved order
    state = {"now": 0.0, "started": False}

    def timer():
        if state["started"]:
            state["now"] += next(durations)
        state["started"] = not state["started"]
        return state["now"]

    return timer


def small_module():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 1)
    )


@pytest.mark.parametrize(
    ("float32_s", "bfloat16_s", "chosen"),
    [(1.0, 0.5, True), (1.0, 1.0 / 1.11, True), (1.0, 0.95, False), (1.0, 1.0, False), (1.0, 1.3, False)],
)
def test_the_decision_follows_the_measurement(float32_s, bfloat16_s, chosen):
    # bfloat16 only when at least MIN_SPEEDUP (1.10) times as fast: a 1.05x
    # "gain" is within timing noise and stays float32.
    decision = _precision.measure_precision(
        small_module(), "cpu", (1, 8, 8), 4, timer=fake_clock(float32_s, bfloat16_s)
    )
    assert decision["bfloat16"] is chosen
    assert decision["float32_s"] == pytest.approx(float32_s)
    assert decision["bfloat16_s"] == pytest.approx(bfloat16_s)
    assert decision["speedup"] == pytest.approx(float32_s / bfloat16_s)
    assert decision["min_speedup"] == _precision.MIN_SPEEDUP == 1.10


@pytest.mark.parametrize("mode", ["train", "predict"])
def test_the_probe_leaves_the_module_and_the_global_rng_untouched(mode):
    module = small_module().train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    decision = _precision.measure_precision(module, "cpu", (1, 8, 8), 4, mode=mode)
    assert torch.equal(torch.get_rng_state(), rng)
    after = module.state_dict()
    # Weights and BatchNorm statistics (num_batches_tracked too) as built.
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert module.training and all(p.grad is None for p in module.parameters())
    assert decision["mode"] == mode and decision["float32_s"] > 0 and decision["bfloat16_s"] > 0


def test_one_probe_per_key(phantoms, monkeypatch):
    X, y = phantoms
    calls = []
    original = _precision._time_steps
    monkeypatch.setattr(_precision, "_time_steps", lambda *a: calls.append(a[-2]) or original(*a))
    first = tiny_cnn().fit(X, y)
    second = tiny_cnn(max_epochs=1, lr=0.01).fit(X, y)  # other settings, same architecture and batches
    assert len(calls) == 1 and second.amp_probe_ == first.amp_probe_ and second.amp_ == first.amp_
    tiny_cnn(batch_size=16).fit(X, y)  # another batch size: another key
    tiny_cnn(filters=(4, 4)).fit(X, y)  # another architecture
    assert calls == ["train"] * 3


def test_auto_probes_on_a_copy_so_the_fit_equals_amp_false(phantoms, monkeypatch):
    # No decision can be bfloat16 (MIN_SPEEDUP infinite): the probe still runs,
    # and the fit draws and trains exactly as a fit without it.
    X, y = phantoms
    monkeypatch.setattr(_precision, "MIN_SPEEDUP", float("inf"))
    rng = torch.get_rng_state()
    auto = tiny_cnn(amp="auto").fit(X, y)
    assert torch.equal(torch.get_rng_state(), rng)
    plain = tiny_cnn(amp=False).fit(X, y)
    assert auto.amp_ is False and auto.amp_probe_["bfloat16"] is False and auto.amp_probe_["float32_s"] > 0
    assert plain.amp_ is False and plain.amp_probe_ is None  # amp=False: no probe
    np.testing.assert_array_equal(auto.predict_proba(X), plain.predict_proba(X))


def test_bfloat16_when_faster_and_two_fits_with_one_random_state_are_identical(phantoms, monkeypatch):
    X, y = phantoms
    monkeypatch.setattr(_precision, "MIN_SPEEDUP", 0.0)  # any measurement chooses bfloat16
    a = tiny_cnn().fit(X, y)
    _precision.clear_cache()  # the second fit measures again
    b = tiny_cnn().fit(X, y)
    assert a.amp_ is True and a.net_.autocast_dtype is torch.bfloat16
    assert a.amp_probe_["bfloat16"] is True and b.amp_ is True
    for p, q in zip(a.module_.parameters(), b.module_.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_frozen_resnet_with_cached_features_times_forward_passes_only(phantoms, monkeypatch):
    X, y = phantoms
    modes = []
    original = _precision._time_steps
    monkeypatch.setattr(_precision, "_time_steps", lambda *a: modes.append(a[-2]) or original(*a))
    clf = _helpers.tiny_resnet(image_size=32, device="cpu", ood=False, max_epochs=1, batch_size=8).fit(X, y)
    assert clf.features_cached_ and modes == ["predict"] and clf.amp_probe_["mode"] == "predict"


def test_resume_reuses_the_decision_of_the_run_it_resumes(phantoms, monkeypatch, tmp_path):
    X, y = phantoms
    monkeypatch.setattr(_precision, "MIN_SPEEDUP", 0.0)  # this run measures bfloat16 faster
    reference = tiny_cnn(max_epochs=3, checkpoint_dir=tmp_path / "a").fit(X, y)
    with monkeypatch.context() as patch:
        _helpers.interrupt_after_epoch(patch, 1)
        stopped = tiny_cnn(max_epochs=3, checkpoint_dir=tmp_path / "b").fit(X, y)
    assert stopped.n_iter_ == 1 and stopped.amp_ is True
    # A new process (no cached decision) on which a probe would now say float32.
    _precision.clear_cache()
    monkeypatch.setattr(_precision, "MIN_SPEEDUP", float("inf"))
    probes = []
    monkeypatch.setattr(_precision, "_time_steps", lambda *a: probes.append(a) or {})
    resumed = tiny_cnn(max_epochs=3, checkpoint_dir=tmp_path / "b").fit(X, y, resume=True)
    assert resumed.resumed_from_ is not None and not probes
    assert resumed.amp_ is True and resumed.amp_probe_ == stopped.amp_probe_
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))


def test_amp_true_where_bfloat16_is_not_native_raises_naming_amp(phantoms, monkeypatch):
    X, y = phantoms
    monkeypatch.setattr(_precision, "bf16_supported", lambda device_type: False)
    with pytest.raises(ValueError, match=r"CNNClassifier: amp=True .*does not support.*amp=False"):
        tiny_cnn(amp=True).fit(X, y)
    # "auto" there: float32, nothing measured.
    clf = tiny_cnn(amp="auto", max_epochs=1).fit(X, y)
    assert clf.amp_ is False and clf.amp_probe_ is None and clf.net_.autocast_dtype is None


def test_amp_true_on_a_cpu_with_bfloat16_trains_in_bfloat16_without_probing(phantoms, monkeypatch):
    X, y = phantoms
    monkeypatch.setattr(_precision, "_time_steps", lambda *a: pytest.fail("amp=True measured"))
    clf = tiny_cnn(amp=True, max_epochs=1).fit(X, y)
    assert clf.amp_ is True and clf.amp_probe_ is None and clf.net_.autocast_dtype is torch.bfloat16


def test_the_decision_and_timings_persist_through_save_and_load(phantoms, monkeypatch, tmp_path):
    X, y = phantoms
    monkeypatch.setattr(_precision, "MIN_SPEEDUP", 0.0)
    clf = tiny_cnn().fit(X, y)
    loaded = skxray.load(clf.save(tmp_path / "model"))
    assert loaded.amp_ is True and loaded.amp_probe_ == clf.amp_probe_
    # It predicts in the precision it was fitted in, so exactly as the fitted model.
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
