"""The benchmark scripts' bookkeeping: merging a grid run in parallel parts
(``benchmarks/accuracy.py --merge``, what ``benchmarks/gpu_grid.sh`` needs)
and the results the documentation shows. No model is trained here.
"""

import importlib.util
import json
from pathlib import Path

import _helpers
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def accuracy():
    with _helpers.benchmark_module("accuracy") as module:
        yield module


GPU_GRID = ROOT / "benchmarks" / "results" / "gpu" / "accuracy_px256.json"


def _part(task, protocol, models, total_time_s, date):
    """A part file as ``accuracy.py --tasks T --protocols P`` writes it (settings of a real run)."""
    base = json.loads(GPU_GRID.read_text(encoding="utf-8"))
    settings = {k: v for k, v in base["settings"].items() if k not in ("parts", "run_note")}
    rows = [{**base["results"][0], "task": task, "protocol": protocol, "model": m,
             "accuracy_mean": 0.9 + 0.01 * i} for i, m in enumerate(models)]
    return {
        "machine": {**base["machine"], "date_utc": date},
        "settings": {**settings, "tasks": [task], "protocols": [protocol], "models": list(models),
                     "command": f"accuracy.py --tasks {task} --protocols {protocol}",
                     "total_time_s": total_time_s},
        "results": rows,
        "folds": [{"task": task, "protocol": protocol, "model": m, "fold": 0} for m in models],
    }


def test_merge_joins_parts_run_side_by_side(accuracy, tmp_path, capsys):
    parts = [
        _part("3class", "patient", ["cnn"], 130.0, "d4"),
        _part("binary", "image", ["fnn", "cnn"], 300.0, "d1"),
        _part("binary", "patient", ["cnn"], 340.0, "d2"),
        _part("3class", "image", ["cnn"], 127.0, "d3"),
    ]
    files = []
    for i, part in enumerate(parts):
        files.append(tmp_path / f"part{i}.json")
        files[-1].write_text(json.dumps(part), encoding="utf-8")
    out = tmp_path / "merged.json"

    merged = accuracy.merge_files([str(f) for f in files], out)

    assert json.loads(out.read_text(encoding="utf-8")) == merged
    s = merged["settings"]
    assert s["tasks"] == ["binary", "3class"] and s["protocols"] == ["image", "patient"]
    # Rows in the order of a single run, whatever the order of the files.
    assert [(r["task"], r["protocol"], r["model"]) for r in merged["results"]] == [
        ("binary", "image", "cnn"), ("binary", "image", "fnn"), ("binary", "patient", "cnn"),
        ("3class", "image", "cnn"), ("3class", "patient", "cnn"),
    ]
    assert len(merged["folds"]) == 5
    # Each file's run is recorded; side by side, the total is the longest part.
    assert [p["blocks_written"] for p in s["parts"]] == [
        ["3class/patient"], ["binary/image"], ["binary/patient"], ["3class/image"]]
    assert s["total_time_s"] == 340.0
    assert "| binary | image |" in capsys.readouterr().out


def test_merge_keeps_the_later_file_where_two_hold_a_row(accuracy, tmp_path):
    old, new = _part("binary", "image", ["cnn"], 10.0, "d1"), _part("binary", "image", ["cnn"], 20.0, "d2")
    new["results"][0]["accuracy_mean"] = 0.5
    for name, part in (("a.json", old), ("b.json", new)):
        (tmp_path / name).write_text(json.dumps(part), encoding="utf-8")
    merged = accuracy.merge_files([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json")
    assert [r["accuracy_mean"] for r in merged["results"]] == [0.5]


def test_docs_show_gpu_results_but_not_those_with_the_superseded_fill(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "skxray_docgen_under_test", ROOT / "docs" / "_ext" / "skxray_docgen.py")
    docgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docgen)
    (tmp_path / "gpu").mkdir()
    (tmp_path / "speed.json").write_text("{}", encoding="utf-8")
    (tmp_path / "gpu" / "new.json").write_text('{"settings": {}}', encoding="utf-8")
    (tmp_path / "gpu" / "old.json").write_text(
        '{"settings": {"masking_fill": "whole-image mean (superseded)"}}', encoding="utf-8")
    assert [name for name, _ in docgen._result_files(tmp_path)] == ["speed.json", "gpu/new.json"]


def test_darkcovidnet_paper_row_is_the_library_preset(accuracy):
    """The replication rows train CNNClassifier.from_preset("darkcovidnet_paper"), nothing else."""
    from skxray.models import CNNClassifier

    args = accuracy.parse_args(["--models", "darkcovidnet_paper", "--device", "cpu"])
    cfg = accuracy.model_config("darkcovidnet_paper", args)
    est = accuracy.make_estimator("darkcovidnet_paper", cfg, "cpu", None)
    preset = CNNClassifier.from_preset("darkcovidnet_paper", **accuracy.COMMON_PARAMS, device="cpu")
    assert repr(est.get_params()) == repr(preset.get_params())
    assert "darkcovidnet_paper" not in accuracy.DEFAULT_MODELS  # 100 epochs at 256 px: a GPU's job
    payload = {"machine": {"gpu": None, "cpu_model": "some CPU"}}
    assert accuracy.device_name(payload) == "some CPU"
    assert accuracy.device_name({"machine": {"gpu": "NVIDIA H200", "cpu_model": "x"}}) == "NVIDIA H200"


@pytest.fixture(scope="module")
def lung_eval():
    with _helpers.benchmark_module("lung_segmenter_eval") as module:
        yield module


def _two_lungs(left_w=20, right_w=20, size=128):
    mask = np.zeros((size, size), dtype=bool)
    mask[30:90, 20:20 + left_w] = True
    mask[30:90, 70:70 + right_w] = True
    return mask


def test_lung_eval_bounding_box_and_its_shape(lung_eval):
    box = lung_eval.bounding_box(_two_lungs())
    # rows 30-89 (60 px), columns 20-89 (70 px); 2 x 60 x 20 lung pixels in it
    assert box["bbox_share"] == pytest.approx(60 * 70 / 128**2)
    assert box["bbox_height_share"] == pytest.approx(60 / 128)
    assert box["bbox_width_share"] == pytest.approx(70 / 128)
    assert box["bbox_aspect"] == pytest.approx(60 / 70)
    assert box["bbox_fill"] == pytest.approx(2400 / 4200)
    empty = lung_eval.bounding_box(np.zeros((8, 8), dtype=bool))
    assert empty["bbox_share"] == 0 and empty["bbox_fill"] is None


def test_lung_eval_counts_each_failing_criterion(lung_eval):
    big = np.zeros((128, 128), dtype=bool)
    big[10:118, 10:60] = big[10:118, 66:118] = True  # two lungs, 0.67 of the image
    one = np.zeros((128, 128), dtype=bool)
    one[30:90, 20:60] = True  # one part: also no left/right ratio
    masks = [_two_lungs(40, 40), _two_lungs(), _two_lungs(30, 10), big, one]
    checks = [lung_eval.plausibility(m) for m in masks]
    assert [c["plausible"] for c in checks] == [True, False, False, False, False]
    assert [lung_eval.failing_criteria(c) for c in checks] == [
        [], ["share_below_020"], ["share_below_020", "left_right_over_2"], ["share_above_060"],
        ["n_parts_not_2", "share_below_020", "left_right_over_2"]]
    counts = {r["criterion"]: r for r in lung_eval.criteria_counts(checks)}
    assert {k: (r["n_failing"], r["n_failing_only_this"]) for k, r in counts.items()} == {
        "n_parts_not_2": (1, 0), "share_below_020": (3, 1), "share_above_060": (1, 1),
        "left_right_over_2": (2, 0)}
    assert all(r["n_implausible"] == 4 and r["n_images"] == 5 for r in counts.values())


def test_lung_eval_caption_never_rounds_a_failing_share_up(lung_eval):
    check = {"lung_share": 3276 / 128**2, "n_parts": 2, "left_right_ratio": 1.0}  # 0.19995
    assert lung_eval._caption(check) == "0.199"
    assert lung_eval._caption({**check, "n_parts": 1, "left_right_ratio": None}) == "0.199, 1 part"
    assert lung_eval._caption({**check, "left_right_ratio": 2.46}) == "0.199, L/R 2.5"


def test_machine_info_records_the_cpu_instruction_sets(monkeypatch, tmp_path):
    # The same seed trains another model on a CPU with other float kernels
    # (issue 25: AVX2 vs AVX-512), so every result file says which it ran on.
    with _helpers.benchmark_module("_common") as common:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text("model name : X\nflags : fpu sse avx2 avx512f avx512_bf16\n")
        real = common.Path

        def fake(path, *a, **k):
            return cpuinfo if str(path) == "/proc/cpuinfo" else real(path, *a, **k)

        monkeypatch.setattr(common, "Path", fake)
        assert common._cpu_simd() == ["avx2", "avx512f", "avx512_bf16"]
        monkeypatch.setattr(common, "Path", real)
        simd = common.machine_info()["cpu_simd"]
        assert simd is None or set(simd) <= set(common.SIMD_FLAGS)


@pytest.fixture(scope="module")
def model_options():
    with _helpers.benchmark_module("model_options") as module:
        yield module


def test_model_options_prune_drops_flipped_training_labels(model_options):
    # The issue-30 option "prune_label_issues": cleanlab's suspects among the
    # training images, from out-of-fold probabilities by patient.
    from skxray.datasets import make_phantom_cxr

    classes = ("Covid-19", "Normal", "Pneumonia")
    X, y, groups = make_phantom_cxr(240, image_size=32, classes=classes, random_state=0, return_groups=True)
    rng = np.random.RandomState(0)
    flipped = rng.choice(len(y), 24, replace=False)
    y_noisy = y.copy()
    y_noisy[flipped] = [classes[(classes.index(c) + 1) % 3] for c in y[flipped]]
    fits = model_options.Fits(X, y_noisy, groups)
    params = {"filters": (4, 8), "dense_units": 16, "max_epochs": 15, "lr": 2e-3, "random_state": 0, "ood": False,
              "validation_fraction": None}
    keep = fits.label_issues_kept(params)
    dropped = np.flatnonzero(~keep)
    assert fits.pruned["n_dropped"] == len(dropped) == sum(fits.pruned["dropped_by_given_and_suggested_class"].values())
    # Most of the 24 flips are found (21 when written; dropping as many
    # images at random would find about 4), without dropping half the set.
    assert len(np.intersect1d(dropped, flipped)) >= 15
    assert len(dropped) <= 60
