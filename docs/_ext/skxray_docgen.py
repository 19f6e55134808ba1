"""Build-time generated pieces of the skxray documentation.

On ``config-inited`` (before Sphinx looks for source files) this extension
writes three git-ignored include files next to ``conf.py``:

``_generated_api.rst``
    The API reference: for each public skxray module that imports, an
    ``autosummary`` table of every name in its ``__all__``. Modules whose file
    does not exist yet are listed in a note; a module that exists but fails
    to import is a build warning (so ``-W`` fails), since that is a bug.
``_generated_cli.rst``
    The ``--help`` text of the ``skxray`` command and each sub-command, from
    :func:`skxray.cli.build_parser`, so the options shown never drift.
``_generated_benchmarks.rst``
    One table per result in ``benchmarks/results/*.json``, whatever the
    JSON shape, or "no results committed yet".

On ``builder-inited`` it runs autosummary's stub generation on
``_generated_api.rst`` (autosummary itself only scans real documents, and the
include file is excluded from them), so ``docs/api/generated/`` is produced by
every build from a fresh clone.
"""

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import textwrap
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

API_FILE = "_generated_api.rst"
CLI_FILE = "_generated_cli.rst"
BENCH_FILE = "_generated_benchmarks.rst"
NEW_HOSPITAL_FILE = "_generated_new_hospital.rst"
NEW_HOSPITAL_FAMILIES_FILE = "_generated_new_hospital_families.rst"
AUDIT_FILE = "_generated_audit_darkcovidnet.rst"
LABELS_FILE = "_generated_label_issues.rst"
SEGMENTATION_FILE = "_generated_segmentation.rst"
STUB_DIR = "api/generated"

#: Public modules in the order of the API page, with their section titles.
API_MODULES = (
    ("skxray.io", "Reading images"),
    ("skxray.datasets", "Data sets"),
    ("skxray.preprocessing", "Preprocessing transformers"),
    ("skxray.segmentation", "Lung segmentation"),
    ("skxray.augmentation", "Train-time augmentation"),
    ("skxray.models", "Classifiers and persistence"),
    ("skxray.evaluation", "Metrics, plots and model comparison"),
    ("skxray.report", "HTML report"),
    ("skxray.explain", "Grad-CAM and saliency"),
    ("skxray.audit", "Shortcut and leakage audit"),
    ("skxray.ood", "Out-of-distribution detection"),
    ("skxray.dask", "Prediction on a Dask cluster"),
    ("skxray.testing", "Test inputs built in code"),
    ("skxray.workflows", "Workflows: the commands in Python"),
    ("skxray.cli", "Command line"),
)

#: Public names that live in a sub-module without being re-exported by the
#: documented module; shown in its table, relative to it.
API_EXTRAS = {
    "skxray.models": (
        "resnet.load_resnet50_state_dict",
        "xrv.load_xrv_state_dict",
        "xrv.to_xrv_input",
    ),
}


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it already holds it (keeps mtimes, so
    Sphinx does not re-read the pages that include it)."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.write_text(text, encoding="utf-8")


def _heading(text, char):
    return f"{text}\n{char * len(text)}\n"


# --------------------------------------------------------------------------
# API reference


def _first_paragraph(doc):
    doc = inspect.cleandoc(doc or "")
    return doc.split("\n\n", 1)[0].strip()


def _kind(obj):
    if inspect.isclass(obj):
        return "Exceptions" if issubclass(obj, BaseException) else "Classes"
    if callable(obj):
        return "Functions"
    return "Constants"


def _module_file_exists(modname):
    try:
        return importlib.util.find_spec(modname) is not None
    except (ImportError, ValueError):
        return False


def _api_rst():
    out = []
    documented = {}  # id(obj) -> canonical dotted name, for the top-level map
    missing = []
    for modname, title in API_MODULES:
        if not _module_file_exists(modname):
            missing.append(modname)
            logger.info("[skxray_docgen] %s does not exist yet; left out of the API page", modname)
            continue
        try:
            module = importlib.import_module(modname)
        except Exception as exc:  # a module that exists but is broken is a bug
            logger.warning(
                "[skxray_docgen] cannot import %s: %s: %s", modname, type(exc).__name__, exc
            )
            missing.append(modname)
            continue
        names = list(getattr(module, "__all__", []))
        groups = {"Classes": [], "Exceptions": [], "Functions": [], "Constants": []}
        for name in names:
            obj = getattr(module, name, None)
            if obj is None:
                logger.warning("[skxray_docgen] %s.__all__ lists %r, which it lacks", modname, name)
                continue
            groups[_kind(obj)].append(name)
            documented.setdefault(id(obj), f"{modname}.{name}")
        for extra in API_EXTRAS.get(modname, ()):
            groups["Functions"].append(extra)

        out.append(_heading(f"``{modname}``: {title}", "-"))
        out.append(f".. py:module:: {modname}\n")
        summary = _first_paragraph(module.__doc__)
        if summary:
            out.append(summary + "\n")
        out.append(f".. currentmodule:: {modname}\n")
        for kind, members in groups.items():
            if not members:
                continue
            out.append(f".. rubric:: {kind}\n")
            out.append(".. autosummary::")
            out.append(f"   :toctree: {STUB_DIR}")
            out.append("   :nosignatures:\n")
            out.extend(f"   {m}" for m in members)
            out.append("")

    head = []
    try:
        import skxray

        rows = []
        for name in skxray.__all__:
            target = documented.get(id(getattr(skxray, name, None)))
            if target:
                rows.append(f"- ``skxray.{name}``: :py:obj:`{target}`")
        if rows:
            head.append(_heading("Top-level shortcuts", "-"))
            head.append(".. py:module:: skxray\n")
            head.append(
                "``import skxray`` gives the most used names directly; each is the same "
                "object as the one documented in its module below.\n"
            )
            head.extend(rows)
            head.append("")
    except Exception as exc:
        logger.warning("[skxray_docgen] cannot import skxray: %s", exc)

    if missing:
        listed = ", ".join(f"``{m}``" for m in missing)
        head.append(
            ".. note::\n\n"
            f"   Not part of this build because the module does not exist yet: {listed}.\n"
        )
    return "\n".join(head + out) + "\n"


# --------------------------------------------------------------------------
# Command line


def _cli_rst():
    try:
        from skxray.cli import build_parser
    except Exception as exc:
        logger.warning("[skxray_docgen] cannot import skxray.cli: %s", exc)
        return ".. note::\n\n   The command-line reference could not be generated.\n"
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # argparse wraps help text to the terminal width
    try:
        parser = build_parser()
        blocks = [("skxray", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    blocks.append((f"skxray {name}", sub.format_help()))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    out = []
    for title, text in blocks:
        out.append(f".. _cli-help-{title.replace(' ', '-')}:\n")
        out.append(_heading(f"``{title}``", "~"))
        out.append(".. code-block:: text\n")
        out.append(textwrap.indent(text.rstrip(), "   ") + "\n")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Benchmarks

# Backslash-escaped, these lose any rST meaning (quotes: no smart quotes).
_RST_SPECIAL = set("\\`*_|[]<>:\"'")


def _escape(text):
    """Plain text safe inside an rST table cell or title."""
    text = " ".join(str(text).split())  # no newlines or tabs
    text = "".join("\\" + c if c in _RST_SPECIAL else c for c in text)
    # A cell starting with "-", "+", "#", "1." etc. could read as a list.
    if text and (text[0] in "-+#=~^\"'.()" or text[:1].isdigit()):
        text = "\\" + text if not text[:1].isdigit() else "\\ " + text
    return text


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _list_table(header, rows):
    if not rows:
        return ["*(empty)*", ""]
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        first = True
        for cell in row:
            prefix = "   * - " if first else "     - "
            text = _escape(_fmt(cell))
            lines.append((prefix + text).rstrip())
            first = False
    lines.append("")
    return lines


def _table_for(value):
    """rST lines rendering one JSON value as a table (any shape)."""
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            columns = []
            for row in value:
                columns.extend(k for k in row if k not in columns)
            return _list_table(columns, [[row.get(c) for c in columns] for row in value])
        return _list_table(["value"], [[v] for v in value])
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            columns = []
            for row in value.values():
                columns.extend(k for k in row if k not in columns)
            rows = [[k, *(row.get(c) for c in columns)] for k, row in value.items()]
            return _list_table(["name", *columns], rows)
        return _list_table(["name", "value"], [[k, v] for k, v in value.items()])
    return _list_table(["value"], [[value]])


def _doc_tables(results_dir):
    """benchmarks/doc_tables.py (shared with benchmarks/run_all.py), or None."""
    path = Path(results_dir).parent / "doc_tables.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("skxray_bench_doc_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result_files(results_dir):
    """``results/*.json``, then the GPU runs of ``results/gpu/`` (name, path).

    GPU files whose lungs-masked figures used the superseded fill
    (``settings.masking_fill``) stay in the repository as records and are
    not shown.
    """
    root = Path(results_dir)
    if not root.is_dir():
        return []
    files = [(f.name, f) for f in sorted(root.glob("*.json"))]
    for file in sorted((root / "gpu").glob("*.json")):
        try:
            settings = json.loads(file.read_text(encoding="utf-8")).get("settings") or {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            settings = {}
        if "superseded" not in str(settings.get("masking_fill", "")):
            files.append((f"gpu/{file.name}", file))
    return files


def _benchmarks_rst(results_dir):
    files = _result_files(results_dir)
    if not files:
        return (
            ".. note::\n\n"
            "   No results committed yet: ``benchmarks/results/`` holds no ``*.json`` file. "
            "Run ``make bench`` (or ``make bench-quick``) and commit the files it writes.\n"
        )
    tables = _doc_tables(results_dir)
    out = []
    for name, file in files:
        out.append(_heading(_escape(name.removesuffix(".json")), "~"))
        out.append(f"From benchmarks/results/{_escape(name)}.\n")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.append(
                ".. warning::\n\n   This file could not be read as JSON: "
                + _escape(f"{type(exc).__name__}: {exc}")
                + "\n"
            )
            continue
        if isinstance(data, dict) and file.name.startswith("accuracy") and tables is not None:
            # Results (with the paper's figures and the targets), settings, machine.
            header, rows = tables.accuracy_table(data)
            out.extend(_list_table(header, rows))
            out.extend(_escape(note) + "\n" for note in tables.accuracy_notes(data))
            out.append(_heading("Settings", "^"))
            out.extend(_list_table(["setting", "value"], tables.settings_rows(data)))
            out.append(_heading("Machine", "^"))
            out.extend(_list_table(["", "value"], tables.machine_rows(data)))
        elif isinstance(data, dict):
            scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
            nested = {k: v for k, v in data.items() if isinstance(v, (dict, list))}
            # What was measured first; how and where it was measured last.
            last = [k for k in ("settings", "machine") if k in nested]
            nested = {k: nested[k] for k in [*(k for k in nested if k not in last), *last]}
            if scalars:
                out.extend(_list_table(["name", "value"], list(scalars.items())))
            for key, value in nested.items():
                out.append(_heading(_escape(key), "^"))
                out.extend(_table_for(value))
        else:
            out.extend(_table_for(data))
    return "\n".join(out) + "\n"


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _new_hospital_rst(path):
    """The tables of docs/new_hospital.rst, from benchmarks/results/new_hospital.json."""
    if not Path(path).is_file():
        return (
            ".. note::\n\n   No figures yet: run ``benchmarks/new_hospital.py`` and commit "
            "``benchmarks/results/new_hospital.json``.\n"
        )
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    before = data["settings"].get("before_issue_14", {})
    header = ["model", "held-out accuracy", "abstained: held-out patients",
              "abstained: held-out Pneumonia", "abstained: Hannover", "ood_score AUROC: Hannover",
              "Hannover flagged at 1 / 5 / 10 % held-out"]
    rows = []
    if before:
        rows.append(["CNN, before (issue 14)", "91.5 %", _pct(before["abstained_held_out"]), "",
                     _pct(before["abstained_hannover"]),
                     f"{before['ood_score_auroc_hannover_vs_held_out']:.2f}", ""])
    for r in data["results"]:
        rows.append([
            f"{r['model'].upper()} {r['image_size']} px",
            _pct(r["held_out_accuracy"]),
            _pct(r["abstained_held_out"]),
            _pct(r["abstained_pneumonia"]),
            _pct(r["abstained_hannover"]),
            f"{r['ood_score_auroc_hannover_vs_held_out']:.3f}"
            + (f" (Pneumonia {r['ood_score_auroc_pneumonia_vs_held_out']:.3f})"
               if "ood_score_auroc_pneumonia_vs_held_out" in r else ""),
            " / ".join(_pct(r[f"external_flagged_at_{k}pct_held_out"]) for k in (1, 5, 10)),
        ])
    out = ["Per image:", ""] + _list_table(header, rows)
    shift = data["shift_test"]
    if shift and "case_mix_rejected_at_0.05" in shift[0]:
        out += _new_hospital_shift_tables(shift)
        out += _new_hospital_adaptation_table(data.get("prior_adaptation", []))
        out += _new_hospital_gross_table(data.get("not_a_chest_xray", []), path, data["settings"])
    else:  # a result file written before issue 25
        shift_rows = [
            [r["model"].upper(), r["batches_from"].replace("_", " "), r["batch_size"], r["n_batches"],
             _pct(r["rejected_at_0.05"]), _pct(r["rejected_at_0.01"]), f"{r['median_pvalue']:.3g}"]
            for r in shift
        ]
        out += ["Per batch (shift test):", ""] + _list_table(
            ["model", "batches from", "images", "batches", "rejected at 0.05", "rejected at 0.01",
             "median p"], shift_rows)
    return "\n".join(out) + "\n"


def _pairs(row, alpha):
    """The image part with ``exclude_patient_pairs``; "n/a" in results from before it."""
    value = row.get(f"image_rejected_at_{alpha}_bbse_matched_patient_pairs_left_out")
    return "n/a" if value is None else _pct(value)


def _new_hospital_shift_tables(shift):
    """Case-mix-only batches, then Hannover and Pneumonia: what each part of the shift test says."""
    mix_rows, ext_rows = [], []
    for r in shift:
        name = r["batches_from"].replace("held_out_", "").replace("_", " ")
        if "covid_share" in r:
            mix_rows.append([
                r["model"].upper(), f"{100 * r['covid_share']:.0f} %"
                + (" (drawn with replacement)" if r["drawn_with_replacement"] else ""),
                r["batch_size"], r["n_batches"],
                _pct(r["image_rejected_at_0.05_bbse_matched"]), _pairs(r, "0.05"),
                _pct(r["image_rejected_at_0.05_em_matched"]),
                _pct(r["rejected_at_0.05_whole_reference"]), _pct(r["case_mix_rejected_at_0.05"]),
                f"{_pct(r['within_10_points_bbse'])} / {_pct(r['within_10_points_em'])}",
                f"{_pct(r['ci_covers_truth_bbse'])} / {_pct(r['ci_covers_truth_em'])}",
            ])
        else:
            ext_rows.append([
                r["model"].upper(), name, r["batch_size"], r["n_batches"],
                f"{_pct(r['image_rejected_at_0.01_bbse_matched'])} / {_pct(r['image_rejected_at_0.05_bbse_matched'])}",
                f"{_pairs(r, '0.01')} / {_pairs(r, '0.05')}",
                f"{_pct(r['image_rejected_at_0.01_em_matched'])} / {_pct(r['image_rejected_at_0.05_em_matched'])}",
                f"{_pct(r['rejected_at_0.01_whole_reference'])} / {_pct(r['rejected_at_0.05_whole_reference'])}",
                _pct(r["case_mix_rejected_at_0.05"]),
                f"{_pct(r['mean_estimated_covid_share_bbse'])} / {_pct(r['mean_estimated_covid_share_em'])}",
            ])
    out = ["Case mix only: batches of held-out patients with a set COVID-19 share "
           "(rejected at alpha = 0.05; estimate and interval: BBSE / EM):", ""]
    out += _list_table(
        ["model", "COVID-19 share", "images", "batches", "image part (BBSE-matched)",
         "same, pairs of one patient left out", "image part (EM-matched)", "whole reference (before)",
         "case-mix test",
         "estimate within 10 points", "95 % interval covers the truth"], mix_rows)
    out += ["New images: Hannover and held-out Pneumonia (rejected at 0.01 / 0.05):", ""]
    out += _list_table(
        ["model", "batches from", "images", "batches", "image part (BBSE-matched)",
         "same, pairs of one patient left out", "image part (EM-matched)", "whole reference (before)",
         "case-mix test at 0.05",
         "mean estimated COVID-19 share (BBSE / EM)"], ext_rows)
    return out


def _new_hospital_adaptation_table(rows):
    """``adapt_proba`` on the case-mix batches: log-loss, Brier score and calibration error."""
    if not rows:
        return []
    def three(r, metric):
        known = r.get(f"{metric}_adapted_to_known")
        return " / ".join([f"{r[f'{metric}_as_given']:.3f}", f"{r[f'{metric}_adapted_to_estimate']:.3f}",
                           "n/a" if known is None else f"{known:.3f}"])

    table = [
        [r["model"].upper(), f"{100 * r['covid_share']:.0f} %", r["batch_size"],
         three(r, "log_loss"), three(r, "brier"), three(r, "ece")]
        for r in rows
    ]
    return ["Predictions adapted to the case mix (``adapt_proba``; as given / adapted to the "
            "BBSE estimate / adapted to the known share):", ""] + _list_table(
        ["model", "COVID-19 share", "images", "log-loss", "Brier score", "calibration error (ECE)"], table)


def _new_hospital_gross_table(rows, path, settings):
    """Share flagged "uncertain" on images that are not chest X-rays, before issue 25 and now."""
    if not rows:
        return []
    name = settings.get("before_issue_25", {}).get("not_a_chest_xray")
    before = {}
    if name and (Path(path).parent / name).is_file():
        for r in json.loads((Path(path).parent / name).read_text(encoding="utf-8"))["results"]:
            before[r["model"]] = r
    sets = [k for k in rows[0] if k != "model"]
    table = []
    for r in rows:
        old = before.get(r["model"], {})
        cells = []
        for k in sets:
            cell = _pct(r[k]["uncertain"])
            if "uncertain_without_lung_check" in r[k]:
                cell += f" (without the lung check {_pct(r[k]['uncertain_without_lung_check'])}"
                if "uncertain_layout_only" in r[k]:
                    cell += f"; its layout rule alone {_pct(r[k]['uncertain_layout_only'])}"
                cell += ")"
            if k in old:
                cell += f" (before issue 25 {_pct(old[k]['uncertain'])})"
            if "ood_score_auroc_vs_held_out" in r[k]:
                cell += f"; AUROC {r[k]['ood_score_auroc_vs_held_out']:.3f}"
            cells.append(cell)
        table.append([r["model"].upper()] + cells)
    return ["Not a chest X-ray: share answered \"uncertain\", the same model without its detector's "
            "lung check and with the layout rule alone (without the ambiguity limit), and, where measured, the AUROC of ``ood_score`` against held-out patients "
            "(n images per set in the result file):",
            ""] + _list_table(["model"] + [k.replace("_", " ") for k in sets], table)


def _acquisition_families(results):
    """(file name, sections) of the acquisition-family results: new_hospital.json's when it has
    them, else new_hospital_families.json (``new_hospital.py --only families``)."""
    for name in ("new_hospital.json", "new_hospital_families.json"):
        data = _read_result(results, name)
        if data and data.get("acquisition_families"):
            return name, data["acquisition_families"]
    return None, []


def _new_hospital_families_rst(results):
    """The per-image score on synthetic acquisition changes, each family left out in turn."""
    name, sections = _acquisition_families(results)
    if not sections:
        return _missing_results("new_hospital.py --only families", "new_hospital_families.json")
    first = sections[0]
    families = list(first["families"])
    out = [f"From ``benchmarks/results/{name}``. The families (strength fixed before measuring):", ""]
    out += [f"- ``{f}``: {_escape(first['families'][f])}" for f in families] + [""]
    rows = []
    for sec in sections:
        model, lofo, shipped = sec["model"].upper(), sec["leave_one_family_out"], sec["shipped"]
        for f in families:
            chosen = lofo[f]["chosen"] + (" (shipped)" if lofo[f]["chosen_is_shipped_design"] else "")
            rows.append([model, f.replace("_", " "), f"{shipped[f]['auroc_vs_held_out']:.3f}",
                         _pct(shipped[f]["uncertain"]),
                         f"{chosen}: {lofo[f]['chosen_mean_auroc_other_families']:.3f}",
                         f"{lofo[f]['chosen_auroc']:.3f}"])
        rows.append([model, "held-out patients, unchanged", "", _pct(sec["held_out"]["uncertain"]), "", ""])
        for ext, r in sec["external"].items():
            rows.append([model, ext, f"{r['auroc_vs_held_out']:.3f}", _pct(r["uncertain"]), "", ""])
    out += ["Per family: the shipped detector (the model's ``ood_``: its AUROC against the unchanged "
            "held-out images and the share answered \"uncertain\" at the default threshold), and the "
            "candidate chosen without that family (best mean AUROC over the other families) with its "
            "AUROC on it. Below, the same images unchanged and the external sets:", ""]
    out += _list_table(["model", "images", "shipped: AUROC", "shipped: uncertain",
                        "chosen without it: mean AUROC on the others", "chosen: AUROC here"], rows)
    grid = []
    for sec in sections:
        for cand, aurocs in sec["candidate_auroc"].items():
            label = cand + (" (shipped design)" if cand == sec["shipped_candidate"] else "")
            flagged = sec.get("candidate_calibration", {}).get(cand, {}).get("held_out_flagged")
            grid.append([sec["model"].upper(), label, *(f"{aurocs[f]:.3f}" for f in families),
                         f"{sec['candidate_mean_auroc'][cand]:.3f}", _pct(flagged)])
    out += ["AUROC of each candidate design (``OODDetector``, fitted on the training images) by family, "
            "and the share of unchanged held-out images its threshold flags:", ""]
    out += _list_table(["model", "candidate", *(f.replace("_", " ") for f in families), "mean",
                        "held-out flagged"], grid)
    return "\n".join(out) + "\n"


def _missing_results(script, result):
    return (
        f".. note::\n\n   No figures yet: run ``benchmarks/{script}`` and commit "
        f"``benchmarks/results/{result}``.\n"
    )


def _audit_darkcovidnet_rst(path):
    """The DarkCovidNet table of docs/audit.rst, from benchmarks/results/audit.json."""
    if not Path(path).is_file():
        return _missing_results("audit_darkcovidnet.py", "audit.json")
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    s, m = data["settings"], data.get("machine", {})
    info = data.get("report", {}).get("info", {})
    counts = ", ".join(f"{c} {n}" for c, n in info.get("class_counts", {}).items())
    patients = f" of {info['n_patients']} patients" if info.get("n_patients") else ""
    intro = (
        f"one run ({counts or ', '.join(s['classes'])} images{patients}; "
        f"{s['image_size']} px; {s['cv']} patient-grouped folds; seed {s['random_state']}; "
        f"{s['elapsed_s']:.0f} s on {s['torch_threads']} CPU thread(s), {m.get('date_utc', '?')}) "
        f"gave the overall verdict {data['overall_verdict']}:"
    )
    rows = [[r["check"], r["verdict"], r["key_figures"], r["explanation"]] for r in data["results"]]
    header = ["Check", "Verdict", "Key figures", "Explanation"]
    lines = ["``benchmarks/audit_darkcovidnet.py``, " + _escape(intro), "", *_list_table(header, rows)]
    return "\n".join(lines) + "\n"


def _read_result(results, name):
    path = Path(results) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _dice_rows(results):
    """Rows of the Dice table: cross-validated and external, segmenter and ellipse."""
    rows = []
    cv = _read_result(results, "lung_segmenter_cv.json")
    if cv:
        n_patients = len({r["patient_id"] for r in cv.get("per_image", [])})
        where = (f"lungmasks, patient-grouped {cv['settings']['n_splits']}-fold CV "
                 f"({cv['results'][0]['dice_n']} images, {n_patients} patients)")
        if not cv["settings"].get("complete", True):
            where += ", INCOMPLETE (folds still missing)"
        for r in cv["results"]:
            rows.append([where, r["region"], r["dice_mean"], r["dice_median"], r["dice_p5"],
                         r["dice_min"], "lung_segmenter_cv.json"])
    ev = _read_result(results, "lung_segmenter_eval.json")
    if ev:
        for r in ev["results"]:
            if "dice_mean" in r:
                rows.append([f"{r['set']} lung_masks ({r['dice_n']} images, never trained on)",
                             r["region"], r["dice_mean"], r["dice_median"], r["dice_p5"],
                             r["dice_min"], "lung_segmenter_eval.json"])
    return rows


def _lungs_finding(data):
    report = data.get("report", {})
    return next((f for f in report.get("findings", []) if f.get("name") == "lungs"), None)


def _audit_rows(results):
    rows = []
    for name in ("audit_ellipse.json", "audit.json"):
        data = _read_result(results, name)
        finding = data and _lungs_finding(data)
        if not finding:
            continue
        f = finding["figures"]
        rows.append([f.get("lung_region", data["settings"].get("lung_region", "ellipse")),
                     finding["verdict"], f.get("balanced_accuracy"),
                     f.get("lungs_masked_balanced_accuracy"), f.get("gradcam_lung_share"),
                     f.get("lung_area_share"), data["overall_verdict"], name])
    return rows


def _masked_rows(results):
    old = _read_result(results, "accuracy.json")
    new = _read_result(results, "accuracy_lungs_segmenter.json")
    if not (old and new):
        return []
    key = lambda r: (r["task"], r["protocol"], r["model"])  # noqa: E731
    before = {key(r): r for r in old["results"]}
    rows = []
    for r in new["results"]:
        b = before.get(key(r), {})
        rows.append([r["task"], r["protocol"], r["model"], b.get("accuracy_mean"),
                     r.get("accuracy_mean"), b.get("lungs_masked_balanced_accuracy"),
                     r.get("lungs_masked_balanced_accuracy"),
                     r.get("meets_lungs_masked_target")])
    return rows


def _segmentation_rst(results):
    """The tables of docs/segmentation.rst, from the lung segmenter's result files."""
    out = []
    rec = _read_result(results, "lung_segmenter.json")
    if rec is None:
        return _missing_results("train_lung_segmenter.py", "lung_segmenter.json")
    r, st = rec["results"][0], rec["settings"]
    out += ["Training record (``lung_segmenter.json``):", ""] + _list_table(
        ["weights", "sha256", "size (bytes)", "weights (count)", "images", "patients", "epochs",
         "input px", "training time (s)", "torch"],
        [[r["weights"], r["sha256"], r["size_bytes"], r["n_weights"], st["n_images"],
          st["n_patients"], st["epochs"], st["input_size"], r["train_seconds"],
          rec["machine"]["torch"]]])
    check = _read_result(results, "lung_segmenter_check.json")
    if check:
        c = check["results"][0]
        out += ["Retrained from scratch by ``train_lung_segmenter.py --check`` "
                "(``lung_segmenter_check.json``):", ""] + _list_table(
            ["", "sha256", "Dice on its training images", "Dice on 60 unseen phantoms"],
            [["shipped", c["shipped_sha256"], c.get("shipped_train_dice_mean"),
              c.get("shipped_phantom_dice_mean")],
             ["retrained", c["retrained_sha256"], c.get("retrained_train_dice_mean"),
              c.get("retrained_phantom_dice_mean")]])
        out += [f"Same bytes: {_fmt(c['same_bytes'])} (torch {check['machine']['torch']}, "
                f"{check['machine']['date_utc']}).", ""]
    out += ["Dice at 128 px (pixels marked \"ignore\" left out):", ""] + _list_table(
        ["images", "region", "mean", "median", "5th percentile", "min", "file"], _dice_rows(results))
    ev = _read_result(results, "lung_segmenter_eval.json")
    if ev:
        plaus = [[x["set"], x["n"], x.get("plausible_share"), x.get("two_parts_share"),
                  x.get("share_in_range"), x.get("left_right_within_2"),
                  x.get("lung_share_median")] for x in ev["results"] if "plausible_share" in x]
        out += ["Plausibility of the masks of the NIH images (no masks exist; "
                "``lung_segmenter_eval.json``):", ""] + _list_table(
            ["images", "n", "plausible", "two parts", "lung share 20-60 %",
             "left/right within 2x", "median lung share"], plaus)
    speed = _read_result(results, "speed_segmenter.json")
    if speed:
        rows = [[x["variant"], x["images_per_s"], x.get("images_per_cpu_s"), x["image_size"],
                 x["n_images"], x["threads"], x["peak_rss_mib"], x.get("meets_target")]
                for x in speed["results"] if x.get("benchmark") == "segmenter"]
        out += [f"Speed on {_escape(speed['machine']['cpu_model'])} "
                f"(``speed_segmenter.json``; a shared CPU, see its timing note):", ""]
        out += _list_table(["variant", "images/s", "images per CPU second", "px", "images",
                            "threads", "peak RSS (MiB)", ">= 200 images/s"], rows)
    audit = _audit_rows(results)
    if audit:
        out += ["The darkcovidnet audit's check 4, before (ellipse) and after (segmenter):", ""]
        out += _list_table(["lung region", "check 4 verdict", "balanced accuracy",
                            "lungs masked (bal. acc.)", "Grad-CAM share in lungs",
                            "lung share of image", "overall verdict", "file"], audit)
    masked = _masked_rows(results)
    if masked:
        out += ["Benchmark rows rerun with the segmenter's lungs "
                "(``accuracy.json``: ellipse; ``accuracy_lungs_segmenter.json``: segmenter):", ""]
        out += _list_table(["task", "folds by", "model", "accuracy (ellipse run)",
                            "accuracy (this run)", "lungs masked, ellipse",
                            "lungs masked, segmenter", "lungs masked <= 0.65"], masked)
    return "\n".join(out) + "\n"


def _label_evidence_rows(evidence):
    """One row per number of classes: pooled recall and precision, their range, clean flags."""
    rows = []
    for k in sorted({r["classes"] for r in evidence}):
        part = [r for r in evidence if r["classes"] == k]
        hits = sum(round(r["recall"] * r["n_flipped"]) for r in part)
        recalls = [r["recall"] for r in part]
        precisions = [r["precision"] for r in part if r["precision"] is not None]
        clean = [r["n_flagged_before_flipping"] / r["n_images"] for r in part]
        rows.append([
            k,
            len(part),
            f"{_pct(hits / sum(r['n_flipped'] for r in part))} "
            f"({_pct(min(recalls))} to {_pct(max(recalls))})",
            f"{_pct(hits / max(1, sum(r['n_flagged'] for r in part)))} "
            f"({_pct(min(precisions))} to {_pct(max(precisions))})",
            f"{_pct(sum(clean) / len(clean))} (at most {_pct(max(clean))})",
        ])
    return rows


def _label_issues_rst(path):
    """The tables of the label-issues section of docs/audit.rst, from label_issues.json."""
    if not Path(path).is_file():
        return _missing_results("label_issues.py", "label_issues.json")
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    s, out = data["settings"], []
    if data.get("phantom_evidence"):
        out += ["**Phantoms** (32 px, 300 images, 10% of labels flipped at random, audited with "
                "a logistic regression on the pixels; pooled over the data sets, range per data "
                "set in brackets):", ""]  # fixed text: no escaping needed
        out += _list_table(
            ["classes", "data sets", "flips flagged (recall)", "flagged that are flips (precision)",
             "flagged before flipping"],
            _label_evidence_rows(data["phantom_evidence"]),
        )
    for a in data.get("audit", []):
        nf = a["suspected_by_pair"]
        nf_pn = nf.get("No_findings -> Pneumonia", 0) + nf.get("Pneumonia -> No_findings", 0)
        out += [f"**{_escape(s['data'])}, {a['model'].upper()}**: " + _escape(
            f"{len(s['classes'])} classes, "
            f"{s['image_size']} px, {s['cv']}; out-of-fold balanced accuracy "
            f"{a['model_balanced_accuracy']:.3f}. {a['n_suspected']} of {a['n_images']} images "
            f"suspected ({_pct(a['suspected_fraction'])}), verdict {a['verdict']}; "
            f"{nf_pn} of them between No_findings and Pneumonia."
        ), ""]
        out += _list_table(
            ["given", "suggested", "suspects", "share of the given class"],
            [[r["given"], r["suggested"], r["n_suspected"], _pct(r["share_of_given_class"])]
             for r in a["pairs"]],
        )
    # The suspects of the most accurate model: its doubts are the least its own errors.
    best = max(data.get("audit", []), key=lambda a: a["model_balanced_accuracy"], default=None)
    if best and best["top_suspects"]:
        out += [f"The ten most suspect images ({best['model'].upper()}), for a radiologist "
                "to review:", ""]
        out += _list_table(
            ["rank", "file", "patient", "given", "suggested", "label quality"],
            [[r["rank"], r.get("file", r["image"]), r.get("patient", ""), r["given"],
              r["suggested"], f"{r['label_quality']:.3f}"] for r in best["top_suspects"][:10]],
        )
    if data.get("cleaning"):
        out += ["**Training with the suspects removed**: " + _escape(
            f"FNNClassifier, {s['image_size']} px, "
            f"{s['cv']}; every score on the test fold's original labels; mean ± std over the "
            "folds. CleanLearning looks for the suspects of each training fold with its own "
            + next((r["inner_cv"] for r in data["cleaning"] if r.get("inner_cv")), "")
            + " cross-validation."
        ), ""]
        out += _list_table(
            ["model", "accuracy", "balanced accuracy", "training images removed per fold"],
            [[r["model"],
              f"{_pct(r['accuracy_mean'])} ± {_pct(r['accuracy_std'])}",
              f"{_pct(r['balanced_accuracy_mean'])} ± {_pct(r['balanced_accuracy_std'])}",
              ", ".join(str(n) for n in r["removed_from_training_per_fold"])]
             for r in data["cleaning"]],
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Sphinx hooks


def _generate_files(app, config):
    srcdir = Path(app.srcdir)
    repo = srcdir.parent
    _write_if_changed(srcdir / API_FILE, _api_rst())
    _write_if_changed(srcdir / CLI_FILE, _cli_rst())
    _write_if_changed(srcdir / BENCH_FILE, _benchmarks_rst(repo / "benchmarks" / "results"))
    _write_if_changed(
        srcdir / NEW_HOSPITAL_FILE,
        _new_hospital_rst(repo / "benchmarks" / "results" / "new_hospital.json"),
    )
    _write_if_changed(
        srcdir / NEW_HOSPITAL_FAMILIES_FILE,
        _new_hospital_families_rst(repo / "benchmarks" / "results"),
    )
    _write_if_changed(
        srcdir / AUDIT_FILE, _audit_darkcovidnet_rst(repo / "benchmarks" / "results" / "audit.json")
    )
    _write_if_changed(
        srcdir / LABELS_FILE, _label_issues_rst(repo / "benchmarks" / "results" / "label_issues.json")
    )
    _write_if_changed(
        srcdir / SEGMENTATION_FILE, _segmentation_rst(repo / "benchmarks" / "results")
    )


def _generate_api_stubs(app):
    from sphinx.ext.autosummary.generate import generate_autosummary_docs

    generate_autosummary_docs(
        [API_FILE],
        suffix=".rst",
        base_path=app.srcdir,
        app=app,
        imported_members=app.config.autosummary_imported_members,
        overwrite=app.config.autosummary_generate_overwrite,
        encoding=app.config.source_encoding,
    )


def setup(app):
    app.connect("config-inited", _generate_files)
    app.connect("builder-inited", _generate_api_stubs)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

