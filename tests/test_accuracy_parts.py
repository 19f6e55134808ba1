"""``benchmarks/accuracy.py`` in fold-level parts (issue 30: a grid too long
for one sitting on the CPU): ``--only-folds`` writes some folds to a parts
file, ``--collect-parts`` makes the rows of the complete sets. A grid run as
two parts and collected must give the one-shot run's rows. Phantom images,
32 px, a few epochs: this checks bookkeeping, not accuracy.
"""

import copy
import json
import shutil
from pathlib import Path

import _helpers
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Three folds so that the parts are uneven (fold 0, then folds 1-2); the
# ellipse lung region keeps --masking (its OOF arrays) without the segmenter.
COMMON = ["--phantom", "--quick", "--folds", "3", "--models", "fnn,cnn,voting", "--tasks", "binary",
          "--protocols", "image", "--masking", "--lung-region", "ellipse", "--threads", "default",
          "--device", "cpu"]
# What differs between two runs of the same folds: the clock and where it ran.
TIMES = {"fit_time_total_s", "fit_time_per_fold_s", "predict_time_per_fold_s", "within_60_min",
         "fit_time_s", "predict_time_s"}


@pytest.fixture(scope="module")
def accuracy():
    with _helpers.benchmark_module("accuracy") as module:
        yield module


@pytest.fixture(scope="module")
def runs(accuracy, tmp_path_factory):
    """The one-shot run, the same folds as two parts, and their collection."""
    folder = tmp_path_factory.mktemp("parts")
    one_shot = accuracy.main([*COMMON, "--out", str(folder / "full.json")])
    parts = folder / "parts.json"
    accuracy.main([*COMMON, "--only-folds", "0", "--parts", str(parts)])
    before_second = json.loads(parts.read_text(encoding="utf-8"))
    accuracy.main([*COMMON, "--only-folds", "1-2", "--parts", str(parts)])
    collected = accuracy.main(["--collect-parts", str(parts), "--out", str(folder / "collected.json")])
    return {"folder": folder, "one_shot": one_shot, "parts": parts, "before_second": before_second,
            "collected": collected}


def _key(row):
    return row["task"], row["protocol"], row["model"], row.get("fold")


def _figures(row):
    """A row or fold row without its timings and devices."""
    return {k: v for k, v in row.items()
            if k not in TIMES and k not in {"device", "device_name", "date_utc", "fold_devices"}}


def test_two_parts_collect_to_the_one_shot_rows(runs):
    one_shot, collected = runs["one_shot"], runs["collected"]
    assert [_key(r) for r in collected["results"]] == [_key(r) for r in one_shot["results"]]
    for got, want in zip(collected["results"], one_shot["results"], strict=True):
        assert _figures(got) == _figures(want), got["model"]
        assert got["accuracy_mean"] == want["accuracy_mean"]
        assert got["accuracy_std"] == want["accuracy_std"]
    want_folds = {_key(f): _figures(f) for f in one_shot["folds"]}
    assert {_key(f): _figures(f) for f in collected["folds"]} == want_folds
    assert len(collected["folds"]) == len(one_shot["folds"]) == 3 * 3
    # The rows list the device of each fold; the masking columns are there too.
    cnn = next(r for r in collected["results"] if r["model"] == "cnn")
    assert cnn["fold_devices"] == ["cpu (" + cnn["device_name"] + ")"] * 3
    assert cnn["lungs_masked_balanced_accuracy"] is not None


def test_parts_written_after_each_part_with_device_and_machine(runs):
    first = runs["before_second"]
    assert sorted((f["model"], f["fold"]) for f in first["folds"]) == [("cnn", 0), ("fnn", 0)]
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    assert len(parts["runs"]) == 2
    for f in parts["folds"]:
        assert f["device"] == "cpu"
        assert f["device_name"] == f["machine"]["cpu_model"]
        assert f["machine"]["date_utc"]


def test_parts_use_the_full_runs_fold_split(accuracy, runs):
    args = accuracy.parse_args(COMMON)
    data = accuracy.Data(args)
    idx, _ = accuracy.task_index(data.y, "binary")
    splits = accuracy.make_splits(data.y[idx], data.groups[idx], "image", args.folds)
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    for f in parts["folds"]:
        oof = accuracy.decode_oof(f["oof"], f["classes"])
        assert oof["test_index"] == splits[f["fold"]][1].tolist()
        assert oof["y"] == data.y[idx][splits[f["fold"]][1]].tolist()


def test_rerunning_a_fold_replaces_it(accuracy, runs, tmp_path):
    parts = tmp_path / "parts.json"
    shutil.copy(runs["parts"], parts)
    old = json.loads(parts.read_text(encoding="utf-8"))
    accuracy.main([*COMMON, "--models", "fnn", "--only-folds", "1", "--parts", str(parts)])
    new = json.loads(parts.read_text(encoding="utf-8"))
    keys = [_key(f) for f in new["folds"]]
    assert len(keys) == len(set(keys)) == len(old["folds"]) == 6
    rerun = [f for f in new["folds"] if f["run_id"] == new["runs"][-1]["run_id"]]
    assert [_key(f) for f in rerun] == [("binary", "image", "fnn", 1)]
    # Seeded: the rerun fold has the same figures, so the collected rows do not move.
    collected = accuracy.main(["--collect-parts", str(parts), "--out", str(tmp_path / "out.json")])
    assert [_figures(r) for r in collected["results"]] == [_figures(r) for r in runs["one_shot"]["results"]]


def test_incomplete_set_is_reported_not_collected(accuracy, runs, tmp_path):
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    parts["folds"] = [f for f in parts["folds"] if not (f["model"] == "fnn" and f["fold"] == 2)]
    path = tmp_path / "parts.json"
    accuracy.dump_parts(path, parts)
    payload, report = accuracy.collect_parts(path, tmp_path / "out.json")
    assert [r["model"] for r in payload["results"]] == ["cnn"]  # voting needs fnn too
    assert {f["model"] for f in payload["folds"]} == {"cnn"}
    assert "binary/image/fnn: folds 2 of 3 missing; not collected" in report
    assert "binary/image/voting: members fnn not complete; not collected" in report

    parts["folds"] = [f for f in parts["folds"] if f["fold"] == 0]  # nothing complete
    accuracy.dump_parts(path, parts)
    payload, report = accuracy.collect_parts(path, tmp_path / "nothing.json")
    assert payload is None
    assert not (tmp_path / "nothing.json").exists()
    assert "binary/image/cnn: folds 1, 2 of 3 missing; not collected" in report


def test_folds_of_other_settings_are_not_collected(accuracy, runs, tmp_path):
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    for f in parts["folds"]:
        if f["model"] == "cnn" and f["fold"] == 1:
            f["setup"]["config"]["image_size"] = 64
    path = tmp_path / "parts.json"
    accuracy.dump_parts(path, parts)
    payload, report = accuracy.collect_parts(path, tmp_path / "out.json")
    assert [r["model"] for r in payload["results"]] == ["fnn"]
    assert any(line.startswith("binary/image/cnn: folds [1] were run with other settings") for line in report)


def test_collect_replaces_rows_and_keeps_the_others(accuracy, runs, tmp_path):
    out = tmp_path / "accuracy.json"
    old = json.loads((runs["folder"] / "full.json").read_text(encoding="utf-8"))
    other = {**old["results"][0], "protocol": "patient", "accuracy_mean": 0.5}  # a row the parts do not make
    old["results"].append(other)
    old["folds"].append({"task": "binary", "protocol": "patient", "model": other["model"], "fold": 0})
    out.write_text(json.dumps(old), encoding="utf-8")
    merged = accuracy.main(["--collect-parts", str(runs["parts"]), "--out", str(out)])
    keys = [_key(r) for r in merged["results"]]
    assert len(keys) == len(set(keys)) == 4
    assert _key(other) in keys
    assert len(merged["folds"]) == 3 * 3 + 1
    assert len(merged["settings"]["parts"]) == 2  # the one-shot run, then the collection
    written = json.loads(out.read_text(encoding="utf-8"))
    assert [_key(r) for r in written["results"]] == keys


@pytest.mark.parametrize("text, folds", [("0", [0]), ("2-4", [2, 3, 4]), ("0, 3-4", [0, 3, 4])])
def test_only_folds_parses(accuracy, text, folds):
    assert accuracy.parse_only_folds(text, 5) == folds


@pytest.mark.parametrize("text", ["5", "a", "", "1-x"])
def test_only_folds_rejects_what_is_not_a_fold(accuracy, text):
    with pytest.raises(SystemExit, match="--only-folds"):
        accuracy.parse_only_folds(text, 5)


def test_only_folds_rows_are_complete_in_the_parts_file(accuracy, runs):
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    for f in parts["folds"]:
        n = f["n_test"]
        assert f["oof"]["encoding"] == "codes+base64"  # compact: the file stays small in git
        oof = accuracy.decode_oof(f["oof"], f["classes"])
        assert np.asarray(oof["proba"]).shape == (n, 2)
        assert np.asarray(oof["proba_lungs"]).shape == (n, 2)
        assert len(oof["answer"]) == n
        assert set(oof["answer"]) <= {*f["classes"], "uncertain"}


def test_records_of_the_old_plain_form_are_read_and_reencoded(accuracy, runs, tmp_path):
    """Parts written before the compact encoding: collected the same, re-encoded when the file is written."""
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    plain = copy.deepcopy(parts)
    for f in plain["folds"]:
        f["oof"] = accuracy.decode_oof(f["oof"], f["classes"])  # lists and strings, as before
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(plain), encoding="utf-8")
    collected = accuracy.collect_parts(path, tmp_path / "out.json")[0]
    assert [_figures(r) for r in collected["results"]] == [_figures(r) for r in runs["one_shot"]["results"]]
    accuracy.dump_parts(path, accuracy.read_parts(path))
    assert json.loads(path.read_text(encoding="utf-8"))["folds"] == parts["folds"]


def test_oof_encoding_is_exact_for_float64_too(accuracy):
    rng = np.random.default_rng(0)
    proba = rng.random((5, 3))  # not float32 values: stored as float64
    arrays = {"test_index": [4, 0, 2, 1, 3], "y": ["b", "a", "c", "a", "b"], "proba": proba,
              "proba_lungs": proba.astype(np.float32), "answer": ["b", "uncertain", "c", "a", "a"]}
    encoded = json.loads(json.dumps(accuracy.encode_oof(arrays, ["a", "b", "c"])))
    assert encoded["proba"]["dtype"] == "<f8" and encoded["proba_lungs"]["dtype"] == "<f4"
    assert encoded["answer"] == [1, -1, 2, 0, 0]
    decoded = accuracy.decode_oof(encoded, ["a", "b", "c"])
    assert decoded["proba"] == proba.tolist()
    assert decoded["proba_lungs"] == proba.astype(np.float32).astype(np.float64).tolist()
    assert {k: decoded[k] for k in ("test_index", "y", "answer")} == {
        k: arrays[k] for k in ("test_index", "y", "answer")}
    with pytest.raises(ValueError, match="answers other than"):
        accuracy.encode_oof({**arrays, "answer": ["b", "?", "c", "a", "a"]}, ["a", "b", "c"])


def test_ensemble_of_members_from_other_parts(accuracy, runs, tmp_path, monkeypatch):
    """A part run names an ensemble; its members come from earlier parts, scored once on collection."""
    parts = tmp_path / "parts.json"
    shutil.copy(runs["parts"], parts)
    monkeypatch.setitem(accuracy.ENSEMBLES, "cnn_fnn", ("cnn", "fnn"))
    monkeypatch.setattr(accuracy, "ALL_MODELS", (*accuracy.ALL_MODELS, "cnn_fnn"))
    # Fits fnn's fold 0 again (seeded: the same figures), not cnn: the ensemble only records its members.
    accuracy.main([*COMMON, "--models", "fnn,cnn_fnn", "--only-folds", "0", "--parts", str(parts)])
    recorded = json.loads(parts.read_text(encoding="utf-8"))["runs"][-1]
    assert recorded["models"] == ["fnn"]
    assert recorded["ensembles"] == {"cnn_fnn": ["cnn", "fnn"]}
    payload, report = accuracy.collect_parts(parts, tmp_path / "out.json")
    rows = {r["model"]: r for r in payload["results"]}
    # The same members on the same folds: the voting row of the one-shot run, under another name.
    voting = next(r for r in runs["one_shot"]["results"] if r["model"] == "voting")
    assert _figures({**rows["cnn_fnn"], "model": "voting"}) == _figures(voting)
    assert "binary/image/cnn_fnn: collected from its members" in " ".join(report)

    # Members scored on other test folds are refused, with the reason.
    moved = json.loads(parts.read_text(encoding="utf-8"))
    cnn = {f["fold"]: f for f in moved["folds"] if f["model"] == "cnn"}
    cnn[0]["oof"], cnn[1]["oof"] = cnn[1]["oof"], cnn[0]["oof"]  # still one split of the images
    accuracy.dump_parts(parts, moved)
    payload, report = accuracy.collect_parts(parts, tmp_path / "moved.json")
    assert "cnn_fnn" not in {r["model"] for r in payload["results"]}
    assert ("binary/image/cnn_fnn: members fnn were not scored on cnn's test folds (other images or "
            "splits); not collected") in report


def test_parts_files_collect_as_one(accuracy, runs, tmp_path):
    """A model's folds in one file, the others in another (files small enough to commit): the same rows.

    A fold found in both files is refused, naming both.
    """
    parts = json.loads(runs["parts"].read_text(encoding="utf-8"))
    cnn_runs = {f["run_id"] for f in parts["folds"] if f["model"] == "cnn"}
    split = {}
    for name, keep in (("cnn", lambda f: f["model"] == "cnn"), ("rest", lambda f: f["model"] != "cnn")):
        split[name] = tmp_path / f"{name}.json"
        accuracy.dump_parts(split[name], {**parts, "folds": [f for f in parts["folds"] if keep(f)],
                                          "runs": [r for r in parts["runs"] if r["run_id"] in cnn_runs]})
    out = tmp_path / "out.json"
    collected = accuracy.main(["--collect-parts", str(split["rest"]), str(split["cnn"]), "--out", str(out)])
    assert [_figures(r) for r in collected["results"]] == [_figures(r) for r in runs["collected"]["results"]]
    assert len(collected["settings"]["collected_from"]) == 2

    accuracy.dump_parts(split["rest"], parts)  # now every cnn fold is in both files
    with pytest.raises(SystemExit, match=r"fold binary/image/cnn/0 is in both .*rest\.json and .*cnn\.json"):
        accuracy.main(["--collect-parts", str(split["rest"]), str(split["cnn"]), "--out", str(out)])
    with pytest.raises(SystemExit, match="--collect-parts: no file"):
        accuracy.main(["--collect-parts", str(split["rest"]), str(tmp_path / "missing.json"), "--out", str(out)])
