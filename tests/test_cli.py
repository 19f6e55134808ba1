"""The ``skxray`` command.

Most tests call the command's ``main`` in this process (:func:`run`): what
they check is the command's work, options, output and exit status, and a
fresh interpreter per call costs several CPU-seconds of imports. Where the
process itself is the subject (the console entry point, its environment, a
terminal's progress bar), the test starts ``python -m skxray.cli`` in a
subprocess (:func:`run_process`).
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skxray.cli import main
from skxray.datasets import make_phantom_cxr

SIZE = 32


def run(*args, cwd=None):
    """Run ``skxray ARGS`` through ``skxray.cli.main`` in this process.

    Returns what :func:`run_process` returns (a ``CompletedProcess`` with the
    exit status and the captured text), so a test reads the same either way.
    Warnings are ignored, as ``PYTHONWARNINGS=ignore`` does for the subprocess.
    An exception that ``main`` lets through (``--verbose`` re-raises) ends as
    the interpreter would end it: its traceback on stderr and status 1.
    """
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except Exception:
            traceback.print_exc(file=err)
            code = 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_process(*args, cwd=None, env=None):
    """Run ``skxray ARGS`` as a user would: the console script's module in a new process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "skxray.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A class-per-folder data set of phantom PNGs with a manifest."""
    root = tmp_path_factory.mktemp("xrays")
    X, y, groups = make_phantom_cxr(48, image_size=SIZE, random_state=0, return_groups=True)
    rows = []
    for i, (img, label, group) in enumerate(zip(X, y, groups)):
        (root / label).mkdir(exist_ok=True)
        rel = f"{label}/img{i:03d}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / rel)
        rows.append({"path": rel, "label": label, "patient_id": f"p{group}", "source": "phantom"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def model_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    result = run("train", folder, "--model", "cnn", "--out", out, "--image-size", SIZE, "--epochs", 2)
    assert result.returncode == 0, result.stderr
    return out


COMMANDS = ["explore", "train", "evaluate", "predict", "compare", "demo", "audit"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_each_command(command):
    from skxray.cli import COMMANDS as TEXTS

    result = run(command, "--help")
    assert result.returncode == 0
    assert "usage: skxray " + command in result.stdout
    _, description, example = TEXTS[command]
    # What the command does (its first words), then an example that runs this command.
    assert " ".join(description.split()[:6]) in " ".join(result.stdout.split())
    assert f"example:\n  skxray {command} " in result.stdout and example in result.stdout


def _sub_parsers():
    import argparse

    from skxray.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_argument_has_help():
    parsers = _sub_parsers()
    assert sorted(parsers) == sorted(COMMANDS)
    for name, parser in parsers.items():
        assert parser.description and parser.epilog.startswith("example:"), name
        for action in parser._actions:
            assert action.help, f"skxray {name}: {action.option_strings or action.metavar} has no help"
    # The ones a new user asked about, by name.
    helps = {(name, a.metavar if not a.option_strings else a.option_strings[0]): a.help
             for name, p in parsers.items() for a in p._actions}
    for key in [("train", "DATA_DIR"), ("predict", "MODEL_DIR"), ("predict", "IMAGE_OR_FOLDER"),
                ("train", "--model"), ("train", "--out"), ("compare", "--cv"), ("compare", "--models"),
                ("train", "--random-state"), ("audit", "--model")]:
        assert len(helps[key]) > 10, key


def test_version(capsys):
    from skxray import __version__
    from skxray.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"skxray {__version__}"


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["train", "d", "--model", "cnn", "--out", "o"], False),
        (["--verbose", "train", "d", "--model", "cnn", "--out", "o"], True),
        (["train", "d", "--verbose", "--model", "cnn", "--out", "o"], True),
        (["predict", "m", "a.png", "--verbose"], True),
        (["explore", "d", "--verbose"], True),
    ],
)
def test_verbose_before_or_after_the_command(argv, verbose):
    from skxray.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def _resolved(*argv):
    """The image size and epochs a command resolves from its options (``skxray.workflows.model_settings``)."""
    from skxray.cli import build_parser
    from skxray.workflows import model_settings

    args = build_parser().parse_args(list(argv))
    names = [args.model] if hasattr(args, "model") else args.models.split(",")
    return model_settings(names, image_size=args.image_size, epochs=args.epochs, preset=getattr(args, "preset", None))


@pytest.mark.parametrize("model", ["cnn", "fnn", "resnet50"])
def test_defaults_are_the_estimators(model):
    from skxray.models import make_classifier

    own = make_classifier(model).get_params()
    commands = (["train", "d", "--out", "o", "--model", model], ["audit", "d", "--out", "o", "--model", model],
                ["compare", "d", "--out", "o", "--models", model], ["demo", "--models", model])
    for command in commands:
        args = _resolved(*command)
        assert (args.image_size, args.epochs_by_model) == (own["image_size"], {model: own["max_epochs"]})
    # Several models read the images once: at the smallest of their sizes, each with its epochs.
    both = _resolved("compare", "d", "--out", "o", "--models", f"cnn,{model}")
    cnn = make_classifier("cnn").image_size
    assert both.image_size == min(own["image_size"], cnn)
    assert both.epochs_by_model[model] == own["max_epochs"]
    assert _resolved("demo", "--models", model, "--epochs", "3", "--image-size", "16").epochs_by_model == {model: 3}


def _train_params(*options):
    """The parameters of the model ``skxray train`` hands to ``skxray.workflows.train``."""
    from types import SimpleNamespace

    import skxray.workflows
    from skxray.cli import main

    models = []

    def train(data_dir, out, model, **kwargs):
        models.append(model)
        return SimpleNamespace(model=model, n_images=0, fit_seconds=0.0, model_dir=out, files=[])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skxray.workflows, "train", train)
        assert main(["train", "d", "--out", "o", "--model", "cnn", *options]) == 0
    (model,) = models
    return model.get_params()


def test_train_builds_the_library_defaults_or_the_preset():
    from skxray.models import CNN_PRESETS, CNNClassifier

    cli_only = {"verbose", "random_state"}  # what the command sets itself

    def differ(a, b):
        return {k for k in a if a[k] != b[k]} - cli_only

    assert differ(_train_params(), CNNClassifier().get_params()) == set()
    preset = CNNClassifier.from_preset("benchmark").get_params()
    assert differ(_train_params("--preset", "benchmark"), preset) == set()
    assert set(CNN_PRESETS["benchmark"]) <= differ(preset, CNNClassifier().get_params())
    changed = _train_params("--preset", "benchmark", "--lr", "0.005", "--class-weight", "none")
    assert differ(changed, preset) == {"lr", "class_weight"}
    assert changed["lr"] == 0.005 and changed["class_weight"] is None
    assert _train_params("--class-weight", "balanced", "--epochs", "3")["class_weight"] == "balanced"


def test_preset_of_another_model_is_a_user_error(tmp_path, capsys):
    from skxray.cli import main

    argv = ["train", str(tmp_path), "--model", "fnn", "--preset", "benchmark",
            "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    assert "--preset benchmark is a preset of the cnn model" in capsys.readouterr().err


def test_help_shows_each_models_defaults():
    from skxray.cli import model_defaults

    text = " ".join(_sub_parsers()["compare"].format_help().split())
    for model in ("cnn", "fnn", "resnet50"):
        defaults = model_defaults(model)
        assert f"{model} {defaults['image_size']}" in text and f"{model} {defaults['epochs']}" in text


def test_help_lists_commands():
    # The console entry point itself, in a new process.
    result = run_process("--help")
    assert result.returncode == 0
    for command in ("explore", "train", "evaluate", "predict", "compare", "demo", "audit"):
        assert command in result.stdout


def test_explore(folder, tmp_path):
    result = run("explore", folder, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "48 images in 2 classes" in result.stdout
    assert "Covid-19" in result.stdout and "Normal" in result.stdout
    assert (tmp_path / "sample_grid.png").is_file()
    assert (tmp_path / "size_histogram.png").is_file()


def test_train_saves_model_and_curves(model_dir):
    from skxray.models import CNNClassifier

    assert (model_dir / "config.json").is_file()
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "learning_curves.png").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["class"] == "CNNClassifier"
    # Without --preset: the library's defaults, but for what the command line set.
    defaults = CNNClassifier().get_params()
    for name in ("lr", "lr_schedule", "class_weight", "optimizer", "dropout"):
        assert config["params"][name] == defaults[name], name


def test_train_resumes_from_checkpoint(folder, tmp_path):
    args = ["train", folder, "--model", "fnn", "--image-size", SIZE, "--epochs", 2]
    args += ["--checkpoint-dir", tmp_path / "ckpt"]
    first = run(*args, "--out", tmp_path / "m1", "--resume")
    assert first.returncode == 0, first.stderr
    assert "Resuming" not in first.stdout  # nothing to resume yet
    again = run(*args, "--out", tmp_path / "m2", "--resume")
    assert again.returncode == 0, again.stderr
    assert "after epoch 2: 0 epoch(s) to go" in again.stdout
    assert (tmp_path / "m2" / "config.json").is_file()


def test_evaluate(model_dir, folder):
    result = run("evaluate", model_dir, folder, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert 0 <= out["accuracy"]["value"] <= 1
    low, high = out["accuracy"]["ci95"]
    assert 0 <= low <= out["accuracy"]["value"] <= high <= 1
    assert set(out["per_class"]) == {"Covid-19", "Normal"}
    assert set(out["metrics"]["per_class"]) == {"Covid-19", "Normal"}
    assert out["classes_missing"] == [] and out["unreadable"] == []
    assert 0 <= out["abstention"]["value"] <= 1
    assert 0 < out["shift_test"]["pvalue"] <= 1 and out["shift_test"]["n_test"] == 48


@pytest.fixture(scope="module")
def covid_only(folder, tmp_path_factory):
    """An external folder holding one of the model's two classes, as a new hospital might send."""
    root = tmp_path_factory.mktemp("covid_only")
    (root / "Covid-19").mkdir()
    for src in sorted((Path(folder) / "Covid-19").glob("*.png")):
        (root / "Covid-19" / src.name).write_bytes(src.read_bytes())
    return root


def test_evaluate_one_class_folder(model_dir, covid_only, tmp_path):
    n = len(list((covid_only / "Covid-19").iterdir()))
    result = run("evaluate", model_dir, covid_only, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["classes_present"] == ["Covid-19"] and out["classes_missing"] == ["Normal"]
    sens = out["per_class"]["Covid-19"]["sensitivity"]
    assert sens["n"] == n and 0 <= sens["ci95"][0] <= sens["value"] <= sens["ci95"][1] <= 1
    assert out["metrics"] is None
    assert any("ROC AUC" in note and "Normal" in note for note in out["notes"])
    text = run("evaluate", model_dir, covid_only, "--report", tmp_path / "r")
    assert text.returncode == 0, text.stderr
    assert "sensitivity Covid-19:" in text.stdout and "95 % CI" in text.stdout
    assert "not computed:" in text.stdout and "Shift test:" in text.stdout
    html = (tmp_path / "r" / "report.html").read_text()
    assert "COVID-19 sensitivity" in html and "badge-" in html and "What could not be computed" in html


def test_evaluate_with_internal_figures(model_dir, folder, covid_only, tmp_path):
    result = run(
        "evaluate", model_dir, covid_only, "--report", tmp_path, "--internal", folder, "--cv", 2
    )
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report.html").read_text()
    assert "grouped by patient" in html and "COVID-19 sensitivity" in html
    assert "n/a" not in html.split("COVID-19 sensitivity")[1][:200]  # the internal column is filled


def test_evaluate_folder_with_a_class_the_model_does_not_know(model_dir, tmp_path):
    (tmp_path / "Pneumonia").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "Pneumonia" / "a.png")
    result = run("evaluate", model_dir, tmp_path)
    assert result.returncode == 2
    assert "Pneumonia" in result.stderr and "does not know" in result.stderr


def test_predict_table_and_json(model_dir, folder):
    images = sorted(Path(folder).glob("*/*.png"))[:3]
    table = run("predict", model_dir, *images)
    assert table.returncode == 0, table.stderr
    assert "label" in table.stdout and "probability" in table.stdout
    # Three images are too few for the shift test, and the output says so.
    assert "Shift test: not run (3 images" in table.stdout
    as_json = run("predict", model_dir, *images, "--json")
    out = json.loads(as_json.stdout)
    rows = out["predictions"]
    assert out["shift_test"] is None and out["unreadable"] == []
    assert [r["image"] for r in rows] == [str(p) for p in images]
    for row in rows:
        assert row["label"] in ("Covid-19", "Normal")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert isinstance(row["out_of_distribution"], bool) and row["ood_distance"] >= 0
        assert row["answer"] in ("Covid-19", "Normal", "uncertain")
        # Why an image is "uncertain", and nothing for an answered one.
        assert (row["reason"] == "") == (row["answer"] != "uncertain")
        assert row["out_of_distribution"] == any(p in row["reason"] for p in ("distance", "lung check"))


def test_predict_folder_recursively_with_shift_verdict_first(model_dir, folder):
    result = run("predict", model_dir, folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 48 images: the batch verdict comes before the first prediction.
    assert lines[0].startswith("Shift test: ")
    assert "p = " in lines[0]
    assert sum(".png" in line for line in lines) == 48
    # Both answers: the case mix with its interval, and the images.
    assert "case mix" in lines[0] and "95 % CI" in lines[0] and "images" in lines[0]
    # The per-image columns, said for what they are.
    assert lines[-1].startswith("Per image: ") and "about one image" in lines[-1]
    out = json.loads(run("predict", model_dir, folder, "--json").stdout)
    assert len(out["predictions"]) == 48 and out["shift_test"]["n_test"] == 48
    shift = out["shift_test"]
    assert shift["reference_matched"] and len(shift["prevalence"]) == 2
    assert isinstance(shift["images_differ"], bool) and isinstance(shift["case_mix_changed"], bool)
    images = [r["image"] for r in out["predictions"]]
    assert images == sorted(images)


def test_predict_broken_file_among_good_ones(model_dir, folder, tmp_path):
    good = sorted(Path(folder).glob("*/*.png"))[:3]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    result = run("predict", model_dir, good[0], empty, good[1], missing, good[2], "--json")
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert [r["image"] for r in out["predictions"]] == [str(p) for p in good]
    assert [u["image"] for u in out["unreadable"]] == [str(empty), str(missing)]
    assert all(u["reason"] for u in out["unreadable"])
    text = run("predict", model_dir, good[0], empty)
    assert text.returncode == 1
    assert str(empty) in text.stderr and "Traceback" not in text.stderr
    assert str(good[0]) in text.stdout


def test_compare_writes_report(folder, tmp_path):
    result = run(
        "compare", folder, "--out", tmp_path, "--models", "cnn,fnn", "--cv", 2,
        "--epochs", 1, "--image-size", SIZE,
    )
    assert result.returncode == 0, result.stderr
    assert "grouped by patient" in result.stdout
    assert "soft-voting" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if str(tmp_path) not in line) <= 100
    html = (tmp_path / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64," in html
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"cnn", "fnn", "soft-voting"} <= set(metrics)
    # Each fold's value, beside the mean and std, in the file and the page.
    assert len(metrics["cnn"]["per_fold"]["balanced_accuracy"]) == 2
    assert "mean_balanced_accuracy" in metrics["cnn"]
    assert '<section id="per-fold-values">' in html


def test_compare_resnet_shares_a_feature_folder(folder, tmp_path):
    cache = tmp_path / "features"
    result = run(
        "compare", folder, "--out", tmp_path / "report", "--models", "resnet50,fnn", "--cv", 2,
        "--epochs", 1, "--image-size", SIZE, "--weights", "none", "--feature-cache-dir", cache,
    )
    assert result.returncode == 0, result.stderr
    (backbone,) = cache.iterdir()
    # Both folds, the ensemble and the final fit: one file per distinct image.
    assert len(list(backbone.glob("*.npy"))) == 48


def test_compare_without_feature_folder_leaves_no_temporary_files(folder, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env_tmp = {"TMPDIR": str(scratch)}
    # A new process, so that TMPDIR decides where temporary files go.
    result = run_process(
        "compare", folder, "--out", tmp_path / "report", "--models", "resnet50", "--cv", 2,
        "--epochs", 1, "--image-size", SIZE, "--weights", "none", env=env_tmp,
    )
    assert result.returncode == 0, result.stderr
    assert not any(p.name.startswith("skxray-features-") for p in scratch.iterdir())


def test_demo_on_phantoms(tmp_path):
    result = run(
        "demo", "--out", tmp_path, "--n-samples", 40, "--cv", 2, "--epochs", 1,
        "--image-size", SIZE, "--models", "cnn,fnn",
    )
    assert result.returncode == 0, result.stderr
    assert "synthetic phantoms" in result.stdout
    html = (tmp_path / "report.html").read_text()
    assert "synthetic phantoms" in html
    # A compact table that fits 100 columns, then the report's path.
    assert max(len(line) for line in result.stdout.splitlines() if str(tmp_path) not in line) <= 100
    assert "Balanced" in result.stdout and "± " in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'report.html'}"
    assert '<section id="summary">' in html and "Best: <strong>" in html


def test_train_progress_bar_only_on_a_terminal(folder, tmp_path):
    args = ["train", folder, "--model", "fnn", "--image-size", SIZE, "--epochs", 1]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def raw(*more):  # bytes: text mode would turn the carriage returns into newlines
        cmd = [sys.executable, "-m", "skxray.cli", *map(str, args), *map(str, more)]
        return subprocess.run(cmd, capture_output=True, env=env, timeout=900)

    logged = raw("--out", tmp_path / "m1")
    assert logged.returncode == 0, logged.stderr
    assert b"\r" not in logged.stdout + logged.stderr  # a log file gets no carriage returns
    assert b"epoch" in logged.stdout  # but keeps the per-epoch table
    asked = raw("--out", tmp_path / "m2", "--progress")
    assert asked.returncode == 0, asked.stderr
    assert b"\r" in asked.stdout + asked.stderr


@pytest.mark.parametrize("command", ["train", "compare", "demo"])
def test_keep_aspect_option(command):
    assert "--keep-aspect {crop,pad,stretch}" in run(command, "--help").stdout


def test_audit_command(folder, tmp_path):
    result = run(
        "audit", folder, "--model", "cnn", "--out", tmp_path, "--cv", 2, "--epochs", 1,
        "--image-size", SIZE,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "audit.json").is_file()
    assert (tmp_path / "report.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["explore", "/does/not/exist"], "does not exist"),
        (["train", "/does/not/exist", "--model", "cnn", "--out", "x"], "does not exist"),
        (["predict", "/no/model", "a.png"], "not a saved skxray model"),
        (["train", "/does/not/exist", "--model", "cnn", "--out", "x", "--resume"], "--resume needs --checkpoint-dir"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_model_is_a_usage_error(folder, tmp_path):
    result = run("train", folder, "--model", "vgg", "--out", tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'vgg'" in result.stderr


def test_one_class_and_unreadable_image(tmp_path):
    one = tmp_path / "one"
    (one / "Normal").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "Normal" / f"{i}.png")
    result = run("train", one, "--model", "cnn", "--out", tmp_path / "m")
    assert result.returncode == 2 and "two classes" in result.stderr

    bad = tmp_path / "bad"
    for label in ("A", "B"):
        (bad / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / label / "ok.png")
    (bad / "A" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run("train", bad, "--model", "cnn", "--out", tmp_path / "m2", "--image-size", 8)
    assert result.returncode == 2
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    verbose = run("--verbose", "train", bad, "--model", "cnn", "--out", tmp_path / "m3", "--image-size", 8)
    assert "Traceback" in verbose.stderr
    after = run("train", bad, "--model", "cnn", "--out", tmp_path / "m4", "--image-size", 8, "--verbose")
    assert "Traceback" in after.stderr  # a global option works after the sub-command too


def test_resnet_fallback_warning_is_one_line(monkeypatch, capsys):
    from skxray import cli
    from skxray.models import resnet
    from skxray.workflows import WorkflowWarning, resnet_weights

    def offline(weights):
        print('Downloading: "https://download.pytorch.org/models/resnet50.pth"')
        raise resnet.PretrainedWeightsError("Could not obtain ... (<urlopen error [Errno -2]>)")

    monkeypatch.setattr(resnet, "load_resnet50_state_dict", offline)
    with pytest.warns(WorkflowWarning) as record:
        weights, note = resnet_weights("IMAGENET1K_V2")
    captured = capsys.readouterr()
    assert weights is None and "Downloading" not in captured.out + captured.err
    (warning,) = [r.message for r in record]
    cli._warn(warning)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= 101  # one line, under 100 columns
    assert "--weights FILE" in err and "urlopen" not in err
    cli._warn(warning, verbose=True)
    assert "urlopen error" in capsys.readouterr().err  # the cause, with --verbose only


@pytest.mark.parametrize("models, message", [(",", "--models names no model"), ("cnn,vgg", "'vgg'")])
def test_bad_model_list_is_a_user_error(models, message, tmp_path, capsys):
    from skxray.cli import main

    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "r"), "--models", models]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_exclude_patient_pairs_reaches_the_shift_test(model_dir, folder, command):
    from skxray.models import load

    # The folder has a manifest, so the model knows which reference images share a patient.
    reference_groups = load(model_dir).ood_.reference_groups_
    assert len(np.unique(reference_groups)) < len(reference_groups)
    args = [command, model_dir, folder, "--json"]
    plain = json.loads(run(*args).stdout)["shift_test"]
    result = run(*args, "--exclude-patient-pairs")
    assert result.returncode == 0, result.stderr
    shift = json.loads(result.stdout)["shift_test"]
    assert plain["patient_pairs_excluded"] is False and shift["patient_pairs_excluded"] is True
    assert "pairs of images of one reference patient left out" in shift["method"]
    assert shift["n_test"] == plain["n_test"] == 48
