"""Tables of the benchmark results for people: results first, then settings, then machine.

Used by ``benchmarks/run_all.py`` (``benchmarks/results/README.md``, Markdown)
and by ``docs/_ext/skxray_docgen.py`` (the Benchmarks page, reStructuredText),
so that both show the same table. Pure Python: no numpy, no torch.

The accuracy table puts the paper's figures (DarkCovidNet, Ozturk et al.
2020: 98.08 % binary, 87.02 % 3-class accuracy, image-level folds) and the
targets in the same rows as the measured ones.
"""

import json
import os

#: DarkCovidNet's published accuracy (image-level 5-fold CV), used when a
#: results file does not carry it.
PAPER_ACCURACY = {"binary": 0.9808, "3class": 0.8702}
TASK_NAMES = {"binary": "COVID-19 vs normal", "3class": "3 classes"}
#: After the name of a ResNet-50 that ran without its ImageNet weights, in every table.
RANDOM_WEIGHTS = "from random weights (ImageNet weights unavailable offline)"


def _pct(mean, std=None):
    if mean is None:
        return ""
    text = f"{100 * mean:.1f}"
    return text if std is None else f"{text} ± {100 * std:.1f}"


def _pct2(value):
    return "" if value is None else f"{100 * value:.2f}"


def accuracy_table(payload):
    """(header, rows) of an accuracy.json payload, with the paper and the target in each row."""
    settings = payload.get("settings", {})
    paper = {**PAPER_ACCURACY, **(settings.get("paper_accuracy") or {})}
    header = [
        "task", "folds by", "model", "accuracy (%)", "patient-grouped (%)", "paper (%)",
        "target (%)", "met", "balanced acc. (%)", "ROC AUC (%)", "COVID-19 sens. (%)",
        "COVID-19 PPV (%)", "abstained (%)", "answered acc. (%)", "lungs masked (bal. acc.)",
    ]
    results = payload.get("results", [])
    # The patient-grouped figure beside each row (issue 15): the same task and
    # model under grouped folds.
    grouped = {(r["task"], r["model"]): r for r in results if r["protocol"] == "patient"}
    rows = []
    for r in results:
        g = grouped.get((r["task"], r["model"]), {}) if r["protocol"] == "image" else {}
        model = model_label(r, results) + (" (best)" if r.get("best_model") else "")
        if r.get("image_size"):
            model += f", {r['image_size']} px, {r.get('epochs', '?')} ep."
        target = r.get("target_accuracy")
        met = r.get("meets_accuracy_target")
        lungs = r.get("lungs_masked_balanced_accuracy")
        rows.append([
            TASK_NAMES.get(r["task"], r["task"]),
            r["protocol"],
            model,
            _pct(r.get("accuracy_mean"), r.get("accuracy_std")),
            _pct(g.get("accuracy_mean"), g.get("accuracy_std")),
            _pct2(r.get("paper_accuracy", paper.get(r["task"]))),
            "" if target is None else f">= {_pct(target)}",
            "" if met is None else ("yes" if met else "no"),
            _pct(r.get("balanced_accuracy_mean"), r.get("balanced_accuracy_std")),
            _pct(r.get("roc_auc_mean"), r.get("roc_auc_std")),
            _pct(r.get("covid_sensitivity_mean"), r.get("covid_sensitivity_std")),
            _pct(r.get("covid_ppv_mean"), r.get("covid_ppv_std")),
            _pct(r.get("abstention_rate")),
            _pct(r.get("answered_accuracy")),
            "" if lungs is None else f"{lungs:.3f}",
        ])
    return header, rows


def _random_init(row):
    return str(row.get("weights") or "").lower().startswith("random")


def model_label(row, results=()):
    """A result row's model name; a ResNet-50 without ImageNet weights says so.

    An ensemble (``members``) says it when one of its members, among
    ``results``, ran from random weights.
    """
    if _random_init(row):
        return f"{row['model']} {RANDOM_WEIGHTS}"
    members = str(row.get("members") or "").split("+")
    random_members = sorted({r["model"] for r in results if _random_init(r)} & set(members))
    if random_members:
        return f"{row['model']}, its {', '.join(random_members)} {RANDOM_WEIGHTS}"
    return row["model"]


def accuracy_notes(payload):
    """Sentences under the accuracy table: protocol, masking target, ResNet-50 weights."""
    s = payload.get("settings", {})
    notes = [
        f"Mean ± std over {s.get('folds', '?')} folds on {s.get('dataset', '?')} "
        f"({s.get('n_images', '?')} images, relative to SKXRAY_DATA). "
        "The paper's figures are DarkCovidNet's (Ozturk et al. 2020), image-level folds."
    ]
    if s.get("lungs_masked_target"):
        notes.append(
            "Lungs masked: balanced accuracy with the lungs hidden, target "
            f"{s['lungs_masked_target']} (a model that reads the lungs should fall to chance)."
        )
    if any("abstention_rate" in r for r in payload.get("results", [])):
        notes.append(
            "Abstained: share of the test images that predict_with_abstention left "
            "unanswered (out-of-distribution detector, ood=True, the default), pooled over "
            "the folds; answered acc.: accuracy on the others. Empty: no detector (ensembles). "
            "The *_defaults rows are each class with nothing set but random_state; the cnn "
            "row is CNNClassifier.from_preset(\"benchmark\"), what the quickstart uses."
        )
    if s.get("masking_note"):
        notes.append(f"Lungs masked, caveat: {s['masking_note']}")
    weights = str(s.get("resnet50_weights") or "")
    if weights.upper().startswith("RANDOM"):
        notes.append(
            "ResNet-50 ran from random initialisation (the ImageNet weights could not be "
            "downloaded): its rows are not transfer learning."
        )
    return notes


#: The settings worth a line on the page (the rest stay in the JSON file).
_SETTINGS = (
    "dataset", "n_images", "folds", "cv_image", "cv_patient", "loading", "voting", "masking",
    "estimator_random_state", "threads", "quick", "label", "total_time_s",
)
#: Machine facts worth a line.
_MACHINE = (
    "date_utc", "cpu_model", "cpu_simd", "cpu_logical_cores", "memory_gib", "device", "gpu", "python",
    "torch", "torchvision", "skorch", "sklearn", "numpy", "skxray", "git_commit",
)


def settings_rows(payload):
    """(name, value) pairs of the main settings of a payload."""
    s = payload.get("settings", {})
    rows = [(k, s[k]) for k in _SETTINGS if k in s and s[k] not in (None, "")]
    weights = s.get("resnet50_weights")
    if weights:
        rows.append(("resnet50_weights", str(weights).split(":")[0]))
    return rows


def machine_rows(payload):
    """(name, value) pairs of the machine a payload was measured on."""
    m = payload.get("machine", {})
    return [(k, m[k]) for k in _MACHINE if k in m and m[k] not in (None, "")]


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def markdown(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_markdown(payload):
    """The accuracy section of README.md: results, then settings, then machine."""
    header, rows = accuracy_table(payload)
    parts = [markdown(header, rows), ""]
    for note in accuracy_notes(payload):
        parts += [note, ""]
    parts += ["### Settings", ""]
    parts += [markdown(["setting", "value"], settings_rows(payload)), "", "### Machine", ""]
    parts += [markdown(["", "value"], machine_rows(payload))]
    note = payload.get("machine", {}).get("timing_note")
    if note:
        parts += ["", note]
    return "\n".join(parts)


def portable_dataset(path, data_home=None):
    """``path`` relative to the data home (``SKXRAY_DATA``) when inside it, as a POSIX string.

    Committed results then hold no absolute machine path.

    >>> portable_dataset("/data/x/darkcovidnet", data_home="/data/x")
    'darkcovidnet'
    >>> portable_dataset("phantom (synthetic)", data_home="/data/x")
    'phantom (synthetic)'
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    if data_home is None:
        from skxray.datasets import get_data_home

        data_home = get_data_home()
    try:
        rel = os.path.relpath(text, os.fspath(data_home))
    except ValueError:  # another drive
        rel = None
    if rel is None or rel.startswith(".."):
        return os.path.basename(text.rstrip("/"))
    return rel.replace(os.sep, "/")
