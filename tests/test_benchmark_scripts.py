"""The benchmark scripts' bookkeeping: merging a grid run in parallel parts
(``benchmarks/accuracy.py --merge``, what ``benchmarks/gpu_grid.sh`` needs)
and the results the documentation shows. No model is trained here.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def accuracy():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import accuracy

        yield accuracy
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


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
