"""Hardening: fuzzed decoders, full disks, model files from other versions and
from strangers, two writers at once, headers that lie (issue #19).

Each section's tests make the failure happen (a writer that fails part-way,
a forged file, a second process) and check what the user is left with: the
previous file intact, an error naming the file and the reason, nothing
half-written that a later run could load.
"""

import errno
import hashlib
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skxray._atomic import FolderLockedError, atomic_write, atomic_write_many, exclusive_lock
from skxray.datasets import make_phantom_cxr
from skxray.io import ImageReadError, read_image
from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier, load
from skxray.models._feature_store import FeatureStore
from skxray.report import Report
from skxray.testing import dicom_dataset

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FUZZ = ROOT / "benchmarks" / "fuzz.py"


def _env():
    # Subprocesses must import this checkout's skxray, whatever their cwd.
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _stray_tmp(folder):
    return sorted(p.name for p in Path(folder).rglob("*.tmp"))


def _failing_after(real_bytes, errnum):
    """A writer that writes half of ``real_bytes`` to its file, then fails like a full disk."""

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(real_bytes[: len(real_bytes) // 2])
        raise OSError(errnum, os.strerror(errnum))

    return write


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_cxr(40, image_size=16, random_state=0)


@pytest.fixture(scope="module")
def tiny_fnn(phantoms):
    X, y = phantoms
    return FNNClassifier(hidden_layer_sizes=(4,), max_epochs=2, ood=False, random_state=0).fit(X, y)


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("skxray_fuzz_harness", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- 1. fuzzing


def test_fuzz_seed_corpus_is_valid_and_covers_every_kind(tmp_path):
    """Each seed decodes: a seed that fails would only fuzz the error path."""
    corpus = _fuzz_module().seed_corpus()
    kinds = {name.rsplit(".", 1)[1] for name in corpus}
    assert kinds == {"png", "jpg", "tif", "bmp", "dcm"}
    for name in ("gray16.png", "palette.png", "rgba.png", "mono1.dcm", "mono2_voilut.dcm",
                 "mono2_rle.dcm", "mono2_jpeg.dcm", "mono2_j2k.dcm", "mono2_deflate.dcm"):
        assert name in corpus
    for name, data in corpus.items():
        assert len(data) < 2048, name  # tiny: generated, never committed
        path = tmp_path / name
        path.write_bytes(data)
        img = read_image(path)
        assert img.shape == (8, 8) and img.dtype == np.float32, name
        assert 0 <= img.min() <= img.max() <= 1, name


@pytest.mark.slow
def test_fuzz_smoke(tmp_path):
    """A short atheris run over the seed corpus finds nothing (exit status 0)."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install -e '.[fuzz]'); the fuzz smoke test needs it")
    import resource

    corpus = tmp_path / "corpus"
    _fuzz_module().write_corpus(corpus)
    # libFuzzer's memory limit reads the peak RSS of its process, and Linux
    # carries the peak of the process that started it (this pytest run, with
    # torch and every earlier test loaded: 3.2 GB once) across exec. Against
    # the default 2 GB the check then failed whenever the run lasted past
    # libFuzzer's first one-second RSS sample, i.e. on a busy machine. The
    # limit is 2 GB above what the worker inherits.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--worker", "-atheris_runs=300", "-seed=1",
         f"-rss_limit_mb={inherited_mb + 2048}", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))


# Inputs the fuzzer found, each once a crash of read_image; all must now be
# refused with ImageReadError. The suffix is the one the harness gave them.
FUZZ_FINDINGS = {
    # pydicom decodes elements lazily: an unknown VR in
    # PhotometricInterpretation raised NotImplementedError from ds.get().
    "dicom_unknown_vr_photometric.img": "corrupt DICOM header: NotImplementedError",
}


@pytest.mark.parametrize("name", sorted(FUZZ_FINDINGS))
def test_fuzz_findings_are_refused_cleanly(name, tmp_path):
    path = tmp_path / name
    shutil.copy(DATA / "fuzz" / name, path)
    with pytest.raises(ImageReadError, match=FUZZ_FINDINGS[name]) as info:
        read_image(path)
    assert info.value.path == str(path)


# ------------------------------------------------------- 2. full disks, failing writes


@pytest.mark.parametrize("errnum", [errno.ENOSPC, errno.EIO])
def test_atomic_write_keeps_previous_file_and_names_it(tmp_path, errnum):
    target = tmp_path / "file.bin"
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"old"))
    with pytest.raises(OSError, match=rf"file\.bin'.*{os.strerror(errnum)}") as info:
        atomic_write(target, _failing_after(b"new content", errnum))
    assert info.value.errno == errnum
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert _stray_tmp(tmp_path) == []


def test_atomic_write_many_changes_nothing_when_a_later_file_fails(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    atomic_write_many([(a, lambda t: Path(t).write_text("a1")), (b, lambda t: Path(t).write_text("b1"))])
    with pytest.raises(OSError, match="No space left"):
        atomic_write_many([(a, lambda t: Path(t).write_text("a2")), (b, _failing_after(b"b2b2", errno.ENOSPC))])
    assert (a.read_text(), b.read_text()) == ("a1", "b1")
    assert _stray_tmp(tmp_path) == []


@pytest.mark.parametrize("failing", ["write_bytes", "write_text"], ids=["weights", "config"])
@pytest.mark.parametrize("errnum", [errno.ENOSPC, errno.EIO])
def test_save_failing_part_way_leaves_previous_model(tiny_fnn, phantoms, tmp_path, monkeypatch, failing, errnum):
    X, y = phantoms
    folder = tiny_fnn.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".skxray.lock"}
    other = FNNClassifier(hidden_layer_sizes=(4,), max_epochs=1, ood=False, random_state=1).fit(X, y)

    real = getattr(Path, failing)

    def fail(self, data, *args, **kwargs):
        if self.name.endswith(".tmp"):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errnum, os.strerror(errnum))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, failing, fail)
    name = "model.safetensors" if failing == "write_bytes" else "config.json"
    with pytest.raises(OSError, match=rf"{name}'.*{os.strerror(errnum)}"):
        other.save(folder)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".skxray.lock"}
    assert after == before
    np.testing.assert_array_equal(load(folder).predict_proba(X), tiny_fnn.predict_proba(X))


def test_folder_mixing_two_saves_is_refused(tiny_fnn, phantoms, tmp_path):
    """A process killed between the two renames leaves new weights beside the old config."""
    X, y = phantoms
    a = tiny_fnn.save(tmp_path / "a")
    b = FNNClassifier(hidden_layer_sizes=(4,), max_epochs=1, ood=False, random_state=1).fit(X, y).save(tmp_path / "b")
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    with pytest.raises(ValueError, match="does not match the checksum in config.json"):
        load(a)


@pytest.mark.parametrize("victim", ["last.pt", "params.pt"])
def test_checkpoint_write_failing_keeps_previous_checkpoint(phantoms, tmp_path, monkeypatch, victim):
    from skxray.models._resume import read_state

    X, y = phantoms
    real_save = torch.save
    calls = []

    def flaky_save(obj, f, *args, **kwargs):
        name = os.path.basename(str(f))
        if name.startswith(f".{victim}.") and name.endswith(".tmp"):
            calls.append(name)
            if len(calls) == 2:  # the second epoch's write fails half-way
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                _failing_after(buf.getvalue(), errno.ENOSPC)(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    clf = FNNClassifier(hidden_layer_sizes=(4,), max_epochs=3, ood=False, random_state=0,
                        checkpoint_dir=tmp_path, validation_fraction=None)
    with pytest.raises(OSError, match=rf"{victim}'.*No space left on device"):
        clf.fit(X, y)
    monkeypatch.undo()
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert _stray_tmp(tmp_path) == []
    if victim == "last.pt":
        assert read_state(run / "last.pt")["epoch"] == 1  # the previous one, intact
    else:
        torch.load(run / "params.pt", weights_only=True)  # complete, loadable


def test_feature_cache_write_failing_leaves_nothing_loadable(tmp_path, monkeypatch):
    torch.manual_seed(0)
    store = FeatureStore(tmp_path, torch.nn.Conv2d(1, 1, 3), prefix="t")
    old, new = np.arange(4.0), np.arange(4.0) + 10
    store.save("kept", old)
    real = np.save

    def fail(f, arr, *args, **kwargs):
        buf = io.BytesIO()
        real(buf, arr, *args, **kwargs)
        f.write(buf.getvalue()[:60])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(OSError, match=r"kept\.npy'.*Input/output error"):
        store.save("kept", new)
    with pytest.raises(OSError, match=r"fresh\.npy'.*Input/output error"):
        store.save("fresh", new)
    monkeypatch.undo()
    np.testing.assert_array_equal(store.load("kept"), old)
    assert store.load("fresh") is None
    assert _stray_tmp(tmp_path) == []


def test_report_save_failing_keeps_previous_report(tmp_path, monkeypatch):
    path = Report().add_metrics("A", {"accuracy": 0.5}).save(tmp_path / "report.html")
    before = (path.read_text(), (tmp_path / "metrics.json").read_text())
    real = Path.write_text

    def fail(self, data, *args, **kwargs):
        if self.name.startswith(".metrics.json."):
            real(self, data[:5], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match=r"metrics\.json'.*No space left on device"):
        Report().add_metrics("B", {"accuracy": 0.9}).save(path)
    monkeypatch.undo()
    assert (path.read_text(), (tmp_path / "metrics.json").read_text()) == before
    assert _stray_tmp(tmp_path) == []


# ------------------------------------------------- 3. model files: versions, strangers


def _copy_model(name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(DATA / name, folder)
    return folder


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return config


_DROP = object()


@pytest.mark.parametrize("name", ["format_v1_fnn", "format_v1_cnn"])
def test_format_v1_reference_model_loads_and_predicts_the_same(name):
    """Models saved by skxray 0.1 (format 1) must load and predict the same forever."""
    folder = DATA / name
    expected = json.loads((folder / "expected.json").read_text())
    X = np.load(folder / "check_images.npy", allow_pickle=False)
    model = load(folder)
    np.testing.assert_allclose(model.predict_proba(X), expected["predict_proba"], rtol=1e-5, atol=1e-6)
    assert model.predict(X).tolist() == expected["predict"]


def test_newer_format_version_names_both_versions(tmp_path):
    folder = _copy_model("format_v1_fnn", tmp_path)
    _edit_config(folder, format_version=2)
    with pytest.raises(ValueError, match=r"format version 2.*reads format versions up to 1"):
        load(folder)


@pytest.mark.parametrize(
    "version, match",
    [(0, "claims format version 0"), ("1", "must be an integer"), (True, "must be an integer")],
)
def test_bad_format_version(tmp_path, version, match):
    folder = _copy_model("format_v1_fnn", tmp_path)
    _edit_config(folder, format_version=version)
    with pytest.raises(ValueError, match=match):
        load(folder)


def test_older_file_without_checksum_loads(tmp_path):
    """Format-1 folders saved before the checksum existed have no weights_sha256."""
    folder = _copy_model("format_v1_fnn", tmp_path)
    _edit_config(folder, weights_sha256=_DROP)
    X = np.load(folder / "check_images.npy")
    expected = json.loads((folder / "expected.json").read_text())["predict_proba"]
    np.testing.assert_allclose(load(folder).predict_proba(X), expected, rtol=1e-5, atol=1e-6)


def test_saved_config_has_no_machine_paths(phantoms, tmp_path):
    X, y = phantoms
    clf = FNNClassifier(hidden_layer_sizes=(4,), max_epochs=1, ood=False, random_state=0,
                        checkpoint_dir=tmp_path / "ckpt").fit(X, y)
    config = json.loads((clf.save(tmp_path / "m") / "config.json").read_text())
    assert config["params"]["checkpoint_dir"] is None
    assert load(tmp_path / "m").checkpoint_dir is None
    assert load(tmp_path / "m", checkpoint_dir=tmp_path / "c2").checkpoint_dir == tmp_path / "c2"
    with pytest.raises(ValueError, match="FNNClassifier has no parameter feature_cache_dir"):
        load(tmp_path / "m", feature_cache_dir=tmp_path)


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory):
    X, y = make_phantom_cxr(12, image_size=32, random_state=0)
    clf = ResNet50Classifier(weights=None, head_units=4, max_epochs=1, ood=False, random_state=0)
    folder = clf.fit(X, y).save(tmp_path_factory.mktemp("resnet") / "model")
    return folder, X


def test_crafted_feature_cache_dir_is_not_used(resnet_folder, tmp_path, monkeypatch):
    """A config.json naming folders (or a weights file) elsewhere makes load/predict touch none of them."""
    import skxray.models.resnet as resnet

    src, X = resnet_folder
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, folder / name)
    elsewhere = tmp_path / "elsewhere"
    params = json.loads((folder / "config.json").read_text())["params"]
    params.update(feature_cache_dir=str(elsewhere), checkpoint_dir=str(elsewhere / "ckpt"),
                  weights=str(tmp_path / "outside.safetensors"))
    _edit_config(folder, params=params)

    def never(*args, **kwargs):
        raise AssertionError("load read a weights file named by config.json")

    monkeypatch.setattr(resnet, "load_resnet50_state_dict", never)
    model = load(folder)
    assert model.feature_cache_dir is None and model.checkpoint_dir is None
    assert model.features_cached_ is False  # set by the class's _restore_loaded_state hook
    model.predict(X[:2])
    assert not elsewhere.exists()
    # The user opts in again explicitly.
    mine = tmp_path / "mine"
    load(folder, feature_cache_dir=mine).predict(X[:2])
    assert len(list(mine.rglob("*.npy"))) == 2


def _rewrite_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    _edit_config(folder, weights_sha256=digest)  # a forger updates the checksum too


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("output.bias"), r"missing \['output.bias'\]"),
        (lambda s: s.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
        (lambda s: s.update({"output.weight": torch.zeros(1, 5)}),
         r"tensor 'output.weight' is torch.float32 \(1, 5\), expected torch.float32 \(1, 4\)"),
        (lambda s: s.update({"output.weight": torch.zeros(1, 4, dtype=torch.float64)}),
         r"tensor 'output.weight' is torch.float64"),
    ],
    ids=["missing", "unexpected", "wrong_shape", "wrong_dtype"],
)
def test_forged_tensors_are_refused(tmp_path, edit, match):
    folder = _copy_model("format_v1_fnn", tmp_path)
    _rewrite_weights(folder, edit)
    with pytest.raises(ValueError, match=match):
        load(folder)


def test_truncated_weights_are_refused(tmp_path):
    folder = _copy_model("format_v1_fnn", tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 7])
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        load(folder)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"input_shape": [1, 16384, 16384]}, "does not fit a FNNClassifier"),
        ({"input_shape": [1, 10**6, 10**6]}, "input_shape must be"),
        ({"input_shape": [2, 16, 16]}, "input_shape must be"),
        ({"classes_dtype": "V8"}, "classes_dtype must be"),
        ({"classes": ["only"]}, "at least two classes"),
        ({"class": "subprocess.Popen"}, "names class 'subprocess.Popen'"),
        ({"params": [1]}, "'params' must be an object"),
    ],
)
def test_forged_config_is_refused_before_building(tmp_path, changes, match):
    """A gigantic input shape is checked on the meta device: nothing is allocated."""
    folder = _copy_model("format_v1_fnn", tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=match):
        load(folder)


def test_oversized_config_is_refused_unread(tmp_path, monkeypatch):
    from skxray.models import _persistence

    folder = _copy_model("format_v1_fnn", tmp_path)
    monkeypatch.setattr(_persistence, "_MAX_CONFIG_BYTES", 100)
    with pytest.raises(ValueError, match=r"config.json' is [0-9,]+ bytes; a skxray config.json is a few kB"):
        load(folder)


def test_persistence_uses_class_hooks_not_attribute_probing():
    import inspect

    from skxray.models import _persistence

    assert "hasattr" not in inspect.getsource(_persistence)
    assert CNNClassifier._machine_params == FNNClassifier._machine_params == ("checkpoint_dir",)
    assert set(ResNet50Classifier._machine_params) == {"checkpoint_dir", "feature_cache_dir"}


# ---------------------------------------------------------- 4. two writers at once

# Loads skxray/_atomic.py alone: importing the skxray package (torch) would
# take seconds.
_HOLD_LOCK = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[2])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
with atomic.exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the lock of ``tmp_path / 'out'`` until the test ends."""
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder), str(ROOT / "skxray" / "_atomic.py")],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    proc.stdin.close()
    proc.wait()


def test_save_refuses_a_folder_another_process_is_writing(tiny_fnn, phantoms, held_lock):
    folder, proc = held_lock
    with pytest.raises(FolderLockedError, match=rf"'{folder}': another process \(pid {proc.pid}\)"):
        tiny_fnn.save(folder)
    assert not (folder / "config.json").exists()
    proc.stdin.close()
    proc.wait()
    tiny_fnn.save(folder)  # free again: the kernel dropped the lock with the process
    np.testing.assert_array_equal(load(folder).predict(phantoms[0]), tiny_fnn.predict(phantoms[0]))


def test_lock_is_reentrant_and_cleans_up_an_unused_folder(tmp_path):
    folder = tmp_path / "new"
    with exclusive_lock(folder), exclusive_lock(folder):
        assert (folder / ".skxray.lock").exists()
    assert not folder.exists()  # created by the lock, left empty: removed


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    X, y = make_phantom_cxr(24, image_size=16, random_state=0)
    for i, (img, label) in enumerate(zip(X, y)):
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / label / f"{i}.png")
    return root


def _train_cmd(data, out):
    return [sys.executable, "-m", "skxray.cli", "train", str(data), "--model", "fnn", "--out", str(out),
            "--image-size", "16", "--epochs", "1"]


def test_cli_train_refuses_an_out_folder_being_written(png_folder, held_lock):
    folder, proc = held_lock
    result = subprocess.run(_train_cmd(png_folder, folder), capture_output=True, text=True, env=_env())
    assert result.returncode == 2, result.stderr
    assert f"Cannot write to '{folder}': another process (pid {proc.pid})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / "config.json").exists()


@pytest.mark.slow
def test_two_cli_trains_into_one_folder_never_mix(png_folder, tmp_path):
    """Started together: each ends complete or with the lock error; the folder holds one whole model."""
    out = tmp_path / "out"
    procs = [subprocess.Popen(_train_cmd(png_folder, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    for code, stderr in results:
        assert code == 0 or (code == 2 and "another process" in stderr), stderr[-2000:]
    assert any(code == 0 for code, _ in results)
    config = json.loads((out / "config.json").read_text())
    weights = (out / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == config["weights_sha256"]
    load(out)
    assert _stray_tmp(out) == []


def _fill_cache(root, images, rounds):
    """Run in a Dask worker process: store the features of ``images`` again and again."""
    import numpy as np
    import torch

    from skxray.models._feature_store import FeatureStore

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    store = FeatureStore(root, backbone, prefix="t")
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)[:, None])
    with torch.no_grad():
        feats = backbone(x).numpy()
    for _ in range(rounds):
        for image, f in zip(images, feats):
            store.save(store.key(np.asarray(image, dtype=np.float32)[None]), f)
    return str(store.folder)


@pytest.mark.slow
def test_two_dask_workers_share_a_feature_cache(tmp_path):
    pytest.importorskip("distributed")
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    X, _ = make_phantom_cxr(12, image_size=16, random_state=0)
    X = X.astype(np.float32)
    halves = [X[:8], X[4:]]  # 4 images written by both workers
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        futures = [client.submit(_fill_cache, str(tmp_path), half, 30, workers=[w], pure=False)
                   for half, w in zip(halves, workers)]
        folders = client.gather(futures)
    assert folders[0] == folders[1]
    # What one process alone would store, hashed file by file.
    expected_folder = _fill_cache(str(tmp_path / "alone"), X, 1)
    expected = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in Path(expected_folder).iterdir()}
    got = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in Path(folders[0]).iterdir()}
    assert len(expected) == 12
    assert got == expected
    for p in Path(folders[0]).iterdir():
        np.load(p, allow_pickle=False)
    assert _stray_tmp(tmp_path) == []


# ------------------------------------------------------------- 5. headers that lie


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _lying_png(width, height, color_type=6):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _lying_dicom(path, rows, cols, bits=32, samples=1, photometric="MONOCHROME2"):
    ds = dicom_dataset(uid="1.2.3")
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = b"\0" * 64
    ds.save_as(path, enforce_file_format=True)


_MEASURE_RSS = """
import json, resource, sys, warnings
from skxray.io import ImageReadError, read_image
import pydicom.pixels  # imported before the baseline, like any warm process
out = {}
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_image(path)
        reason = "read"
    except ImageReadError as exc:
        reason = exc.reason
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out[path] = [reason, (after - before) / 1024]
print(json.dumps(out))
"""

# Each would need at least 400 MB if decoded; the files are a few hundred bytes.
LYING = {
    "claims_10000x10000_rgba.png": "more than a 69-byte PNG can hold",
    "claims_2e31_squared.png": "too many pixels",
    "claims_10000x10000_32bit.dcm": "holds 64 bytes, but the header (10000x10000",
    "claims_65535x65535.dcm": "too many pixels: 65535x65535",
    "claims_3_samples_mono.dcm": "SamplesPerPixel is 3; MONOCHROME2 has 1",
    "claims_bits_48.dcm": "BitsAllocated is 48",
}


@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is POSIX only")
def test_lying_headers_are_refused_before_allocation(tmp_path):
    (tmp_path / "claims_10000x10000_rgba.png").write_bytes(_lying_png(10000, 10000))
    (tmp_path / "claims_2e31_squared.png").write_bytes(_lying_png(2**31 - 1, 2**31 - 1))
    _lying_dicom(tmp_path / "claims_10000x10000_32bit.dcm", 10000, 10000)
    _lying_dicom(tmp_path / "claims_65535x65535.dcm", 65535, 65535)
    _lying_dicom(tmp_path / "claims_3_samples_mono.dcm", 5000, 5000, bits=16, samples=3)
    _lying_dicom(tmp_path / "claims_bits_48.dcm", 5000, 5000, bits=48)
    paths = [str(tmp_path / name) for name in LYING]
    result = subprocess.run([sys.executable, "-c", _MEASURE_RSS, *paths],
                            capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    for name, reason in LYING.items():
        got_reason, grown_mb = measured[str(tmp_path / name)]
        assert reason in got_reason, (name, got_reason)
        assert grown_mb < 64, (name, grown_mb)  # peak RSS: no image-sized allocation


def _tiff_pages(path, n):
    """A little-endian TIFF of ``n`` 2x2 8-bit pages, all sharing one strip (built by hand: fast)."""
    strip = bytes([0, 0, 0, 0])
    entries = [(256, 3, 2), (257, 3, 2), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8), (277, 3, 1), (278, 3, 2), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip)
    for i in range(n):
        start = len(out)
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHI", tag, kind, 1) + struct.pack("<I", value)
        out += struct.pack("<I", start + ifd_size if i < n - 1 else 0)
    Path(path).write_bytes(bytes(out))


def test_tiff_with_thousands_of_pages_reads_only_the_first(tmp_path, monkeypatch):
    from PIL import TiffImagePlugin

    _tiff_pages(tmp_path / "two.tif", 2)
    _tiff_pages(tmp_path / "many.tif", 5000)
    real = TiffImagePlugin.ImageFileDirectory_v2.load
    loaded = []

    def counting(self, fp):
        loaded.append(1)
        return real(self, fp)

    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "load", counting)
    read_image(tmp_path / "two.tif")
    two = len(loaded)
    loaded.clear()
    img = read_image(tmp_path / "many.tif")
    # As many page directories parsed as for a 2-page file: the rest is never read.
    assert len(loaded) == two
    np.testing.assert_array_equal(img, np.zeros((2, 2), dtype=np.float32))
