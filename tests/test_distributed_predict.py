"""Prediction over many files on Dask (``skxray.dask``, ``skxray predict/evaluate --scheduler``).

One ``distributed.LocalCluster`` of two single-threaded worker *processes*
serves the module: processes, as on a real cluster, so that nothing can
pass through shared memory (the model must travel as its folder's path).
Hooks installed in the worker processes count the model loads and hold
the first partition back, so that partitions finish out of order.
"""

import json
import pickle
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from skxray.datasets import make_phantom_cxr

distributed = pytest.importorskip("distributed")

SIZE = 32
N_IMAGES = 30


def run_cli(capsys, *args):
    """``skxray ARGS`` in this process (a subprocess costs half a minute of imports here)."""
    from skxray.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=out, stderr=err)


def _save_png(path, img):
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from skxray.models import CNNClassifier

    X, y = make_phantom_cxr(60, image_size=SIZE, random_state=0)
    model = CNNClassifier(image_size=SIZE, max_epochs=2, random_state=0).fit(X, y)
    assert model.ood_ is not None and model.ood_.has_reference_  # abstention and shift test exercised
    return str(model.save(tmp_path_factory.mktemp("model") / "cnn"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Class folders of phantom PNGs, of another seed than the training images."""
    root = tmp_path_factory.mktemp("xrays")
    X, y = make_phantom_cxr(N_IMAGES, image_size=SIZE, random_state=1)
    for i, (img, label) in enumerate(zip(X, y)):
        (root / label).mkdir(exist_ok=True)
        _save_png(root / label / f"img{i:03d}.png", img)
    return root


@pytest.fixture(scope="module")
def files(folder):
    return sorted(str(p) for p in Path(folder).glob("*/*.png"))


# ------------------------------------------------------------- worker hooks
# Run on each worker with client.run; this module is pickled by value, since
# the workers cannot import the tests.


def _install_hooks(dask_worker):
    import skxray.io
    import skxray.models

    dask_worker.skxray_test_loads = 0
    original_load = skxray.models.load

    def counting_load(path, **kwargs):
        dask_worker.skxray_test_loads += 1
        return original_load(path, **kwargs)

    skxray.models.load = counting_load
    original_read = skxray.io.read_image

    def read_image(path, *args, **kwargs):
        # The file named hold-*.png waits until a file named release-*.png
        # has been read (by the other worker), then a little more.
        name = Path(path).name
        if name.startswith("release-"):
            (Path(path).parent / "released").touch()
        if name.startswith("hold-"):
            deadline = time.monotonic() + 60
            while not (Path(path).parent / "released").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        return original_read(path, *args, **kwargs)

    skxray.io.read_image = read_image


def _load_count(dask_worker):
    return dask_worker.skxray_test_loads


def _plugin_names(dask_worker):
    return list(dask_worker.plugins)


@pytest.fixture(scope="module")
def client():
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        client.run(_install_hooks)
        yield client


def _serial(model_dir, files):
    """What skxray predict computes without Dask."""
    from skxray.dask import read_images, score_images
    from skxray.models import load

    model = load(model_dir)
    X, readable, unreadable = read_images(model, files)
    return readable, unreadable, score_images(model, X)


def _assert_same_scores(predictions, scores):
    np.testing.assert_allclose(predictions.proba, scores["proba"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predictions.answers, scores["answers"])
    np.testing.assert_array_equal(predictions.out_of_distribution, scores["out_of_distribution"])
    np.testing.assert_allclose(predictions.ood_scores, scores["ood_scores"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ tests


def test_same_scores_as_serial_and_model_loaded_once_per_worker(client, model_dir, files):
    from skxray.dask import DaskPredictor

    before = client.run(_load_count)
    with DaskPredictor(model_dir, client, partition_size=3) as predictor:
        predictions = predictor.predict(files)
    after = client.run(_load_count)
    # Ten partitions, two workers: two loads, one on each worker.
    assert predictions.n_partitions == 10 and predictions.partition_size == 3
    assert {w: after[w] - before[w] for w in after} == {w: 1 for w in after}
    readable, unreadable, scores = _serial(model_dir, files)
    assert predictions.files == readable == files and predictions.unreadable == unreadable == []
    assert list(predictions.classes) == ["Covid-19", "Normal"]
    _assert_same_scores(predictions, scores)
    # Both kinds of answer are present, so the abstention comparison means something.
    assert {"uncertain"} < set(predictions.answers)


def test_the_model_travels_as_its_path(model_dir):
    from skxray._dask_plugin import ModelPlugin

    plugin = ModelPlugin(model_dir)
    weights = sum(p.stat().st_size for p in Path(model_dir).iterdir())
    assert len(pickle.dumps(plugin)) < 500 < weights


def test_a_model_the_workers_cannot_load_fails_at_once(client, model_dir, tmp_path):
    import shutil

    from skxray.dask import DaskPredictor

    broken = tmp_path / "cnn"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum|safetensors|weights"):
        with DaskPredictor(broken, client):
            pass
    # The cluster is still usable, and the plugin of the failed attempt gone.
    names = client.run(_plugin_names)
    assert len(names) == 2
    assert not [n for worker in names.values() for n in worker if n.startswith("skxray-model-")]


def test_order_kept_when_partitions_finish_out_of_order(client, model_dir, folder, tmp_path):
    from distributed import get_task_stream

    from skxray.dask import DaskPredictor

    X, _ = make_phantom_cxr(12, image_size=SIZE, random_state=2)
    names = ["hold-0.png", *(f"mid-{i}.png" for i in range(1, 11)), "release-11.png"]
    files = []
    for name, img in zip(names, X):
        _save_png(tmp_path / name, img)
        files.append(str(tmp_path / name))
    with get_task_stream(client) as stream, DaskPredictor(model_dir, client, partition_size=2) as predictor:
        predictions = predictor.predict(files)
    finished = sorted(
        (t["startstops"][-1]["stop"], int(t["key"].rsplit("-", 1)[1]))
        for t in stream.data
        if str(t["key"]).startswith("skxray-predict-")
    )
    order = [index for _, index in finished]
    # The premise: the first partition finished after later ones (so results
    # appended as they came would be out of order).
    assert sorted(order) == list(range(6)) and order[0] != 0
    assert predictions.files == files
    readable, _, scores = _serial(model_dir, files)
    _assert_same_scores(predictions, scores)


def test_assemble_places_parts_by_index():
    from skxray.dask import _assemble

    def part(index, n):
        files = [f"{index}-{i}" for i in range(n)]
        proba = np.full((n, 2), index, dtype=float)
        scores = {"proba": proba, "answers": None, "ood_scores": None, "out_of_distribution": None}
        return index, np.array(["a", "b"]), files, [(f"bad-{index}", "why")], scores

    parts = [part(2, 1), part(0, 2), part(1, 0)]
    out = _assemble(parts, 3, 2)
    assert out.files == ["0-0", "0-1", "2-0"]
    assert out.proba[:, 0].tolist() == [0, 0, 2]
    assert out.unreadable == [("bad-0", "why"), ("bad-1", "why"), ("bad-2", "why")]
    with pytest.raises(RuntimeError, match=r"partitions \[1\]"):
        _assemble(parts[:2], 3, 2)


def _assert_same_json(a, b, where="result"):
    if isinstance(a, float) and isinstance(b, float):
        assert np.isclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_json(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_json(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def with_unreadable(folder, tmp_path_factory):
    """The folder's files with an empty PNG, a missing file and a text file among them."""
    extra = tmp_path_factory.mktemp("broken")
    empty, text = extra / "empty.png", extra / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    good = sorted(Path(folder).glob("*/*.png"))
    missing = extra / "missing.png"
    return [good[0], empty, *good[1:20], missing, *good[20:], text], [empty, missing, text]


def test_cli_predict_on_dask_matches_serial(client, model_dir, with_unreadable, capsys):
    with_unreadable, broken = with_unreadable
    address = client.scheduler.address
    serial = run_cli(capsys, "predict", model_dir, *with_unreadable, "--json")
    dask = run_cli(capsys, "predict", model_dir, *with_unreadable, "--json", "--scheduler", address,
                   "--partition-size", "4")
    assert serial.returncode == dask.returncode == 1, dask.stderr
    # Each unreadable file gets its own error line, exactly as without Dask.
    assert dask.stderr == serial.stderr
    errors = dask.stderr.splitlines()
    assert len(errors) == 3 and all(line.startswith("skxray: error: ") for line in errors)
    out, expected = json.loads(dask.stdout), json.loads(serial.stdout)
    assert [u["image"] for u in out["unreadable"]] == [str(p) for p in broken]
    assert len(out["predictions"]) == N_IMAGES
    assert out["shift_test"] is not None  # 30 readable images: the test ran
    _assert_same_json(out, expected)
    table = run_cli(capsys, "predict", model_dir, *with_unreadable, "--scheduler", address)
    assert table.returncode == 1 and table.stdout.startswith("Shift test: ")
    assert table.stdout == run_cli(capsys, "predict", model_dir, *with_unreadable).stdout


def test_cli_evaluate_on_dask_matches_serial(client, model_dir, folder, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n")
    serial = run_cli(capsys, "evaluate", model_dir, data, "--json")
    dask = run_cli(capsys, "evaluate", model_dir, data, "--json", "--scheduler", client.scheduler.address)
    assert serial.returncode == dask.returncode == 1, dask.stderr
    assert dask.stderr == serial.stderr and "broken.png" in dask.stderr
    out, expected = json.loads(dask.stdout), json.loads(serial.stdout)
    assert out["n_samples"] == N_IMAGES and out["shift_test"] is not None
    assert out["abstention"] is not None and out["metrics"] is not None
    _assert_same_json(out, expected)


@pytest.mark.parametrize(
    "value, message",
    [("local:0", "needs a worker count N >= 1"), ("local:two", "needs a worker count")],
)
def test_bad_scheduler_is_a_user_error(model_dir, files, value, message, capsys):
    result = run_cli(capsys, "predict", model_dir, files[0], "--scheduler", value)
    assert result.returncode == 2
    assert result.stderr.startswith("skxray: error: ") and message in result.stderr


def test_shift_test_reads_at_most_the_cap(monkeypatch):
    from skxray import dask as skdask
    from skxray.ood import _MAX_SHIFT_SAMPLES

    # The cap matches what shift_test itself subsamples to.
    assert skdask.SHIFT_TEST_MAX_IMAGES == _MAX_SHIFT_SAMPLES

    class FakeClient:
        def submit(self, func, plugin_name, files, options, pure):
            self.files, self.options = files, options
            return type("Done", (), {"result": lambda self: "ok"})()

    predictor = skdask.DaskPredictor("unused", None)
    predictor.client_, predictor._plugin_name = FakeClient(), "p"
    many = [f"{i:05d}.png" for i in range(2500)]
    assert predictor.shift_test(many) == "ok"
    chosen = predictor.client_.files
    assert len(chosen) == 2000 and chosen == sorted(chosen) and set(chosen) < set(many)
    predictor.shift_test(many[:1500])
    assert predictor.client_.files == many[:1500]
    # The worker's shift_test gets every option (the CLI's --exclude-patient-pairs).
    assert predictor.client_.options["exclude_patient_pairs"] is False
    predictor.shift_test(many[:30], exclude_patient_pairs=True)
    assert predictor.client_.options["exclude_patient_pairs"] is True


@pytest.mark.slow
def test_predict_files_on_its_own_local_cluster(model_dir, files):
    from skxray.dask import predict_files

    predictions = predict_files(model_dir, files[:5], "local:1")
    readable, _, scores = _serial(model_dir, files[:5])
    # One worker: about four partitions, here of ceil(5 / 4) = 2 files.
    assert predictions.files == readable and predictions.n_partitions == 3
    _assert_same_scores(predictions, scores)
