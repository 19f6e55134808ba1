"""What the darkcovidnet_paper grid would cost on this CPU, measured on one fold.

The replication rows of ``accuracy.py`` (``darkcovidnet_paper``: the paper's
network, 256 px, 100 epochs, 5 folds, two tasks, two protocols) are meant
for a GPU (``gpu_grid.sh``). This script measures why: it trains the preset
for a few epochs on the first image-level fold of the three-class task (the
same split as ``accuracy.py``) at 256 px and at 128 px, and the benchmark
CNN (``cnn``, 128 px) beside it, then extrapolates the grid's time from the
measured epoch times:

- per fold: the mean epoch time x 100 epochs, plus what ``fit`` spends
  outside the epochs (the out-of-distribution detector's pass and fit), plus
  three predictions of the test fold (plain, lungs masked, borders masked);
- the three-class task has 1,124 images (about 900 training images per fold),
  the binary one 625 (500): binary folds are scaled by 500/900;
- 5 folds x 2 protocols per task (patient-grouped folds hold about as many
  images as image-level ones).

It also checks the issue's rule of thumb (a 256 px DarkCovidNet epoch costs
about 1.5 epochs of the CNN at 128 px). Timings on a shared CPU are
indicative only; the ``machine`` key records the load average.

Example::

    nice -n 5 python benchmarks/darkcovidnet_cost.py --epochs 2 --threads auto
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402
from _common import (  # noqa: E402
    Stopwatch,
    configure_threads,
    default_out,
    finish,
    log,
    machine_info,
    write_json,
)

GRID_EPOCHS = accuracy.MODEL_SETTINGS["darkcovidnet_paper"]["max_epochs"]
FOLDS, PROTOCOLS = 5, 2
N_TRAIN = {"3class": 900, "binary": 500}  # training images of one 5-fold fold


def measure(model, image_size, args, data, idx, train, test, y):
    """Fit ``model`` for ``args.epochs`` epochs on one fold; its times, in seconds."""
    cfg = accuracy.model_config(model, args)
    cfg["image_size"] = image_size
    est = accuracy.make_estimator(model, cfg, "cpu", None)
    X = data.X(image_size)[idx]
    with Stopwatch() as t_fit:
        est.fit(X[train], y[train])
    with Stopwatch() as t_pred:
        est.predict_proba(X[test])
    durations = [h["dur"] for h in est.history_]
    # The process's CPU time, by epoch in proportion to the wall time: on a
    # shared CPU the wall time measures the other jobs as much as this one.
    cpu_per_wall = t_fit.cpu_seconds / t_fit.seconds
    row = {
        "model": model,
        "image_size": image_size,
        "epochs_run": len(durations),
        "n_train": len(train),
        "n_test": len(test),
        "epoch_s": durations,
        "epoch_mean_s": float(np.mean(durations)),
        "epoch_mean_after_first_s": float(np.mean(durations[1:])) if len(durations) > 1 else None,
        "fit_s": t_fit.seconds,
        "fit_outside_epochs_s": t_fit.seconds - sum(durations),
        "predict_s": t_pred.seconds,
        "fit_cpu_s": t_fit.cpu_seconds,
        "predict_cpu_s": t_pred.cpu_seconds,
        "cpu_s_per_wall_s": cpu_per_wall,
        "epoch_cpu_s": [d * cpu_per_wall for d in durations],
    }
    log(f"{model} {image_size} px: epochs {[round(d, 1) for d in durations]} s, fit {t_fit.seconds:.0f} s")
    return row


def extrapolate(row, epochs):
    """Hours of the 2-task x 2-protocol x 5-fold grid at ``epochs`` epochs, from one fold's times.

    ``wall``: at the load this run saw; ``cpu``: CPU-hours of the process
    (all its threads), which an idle machine would spread over its cores.
    """
    out = {"epochs": epochs}
    for kind, scale in (("wall", 1.0), ("cpu", row["cpu_s_per_wall_s"])):
        durations = row["epoch_s"][1:] or row["epoch_s"]  # the first epoch warms up
        epoch = scale * float(np.mean(durations))
        predict = row["predict_s"] if kind == "wall" else row["predict_cpu_s"]
        fold_3class = epochs * epoch + scale * row["fit_outside_epochs_s"] + 3 * predict
        fold_binary = fold_3class * N_TRAIN["binary"] / N_TRAIN["3class"]
        total = FOLDS * PROTOCOLS * (fold_3class + fold_binary)
        out[f"{kind}_fold_3class_h"] = fold_3class / 3600
        out[f"{kind}_fold_binary_h"] = fold_binary / 3600
        out[f"{kind}_grid_h"] = total / 3600
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per measurement")
    p.add_argument("--threads", default="auto", help="torch intra-op threads (as accuracy.py)")
    p.add_argument("--out", default=None, help="JSON file (default results/darkcovidnet_cost.json)")
    p.add_argument("--summarise", action="store_true",
                   help="recompute the estimates and ratios of --out from its measurements, train nothing")
    args = p.parse_args(argv)
    if args.summarise:
        out = Path(args.out) if args.out else default_out("darkcovidnet_cost.json", False)
        payload = json.loads(out.read_text(encoding="utf-8"))
        for row in payload["results"]:
            row["grid_estimate"] = extrapolate(row, accuracy.MODEL_SETTINGS[row["model"]]["max_epochs"])
        for key in [k for k in payload["settings"] if k.startswith("ratio_")]:
            del payload["settings"][key]  # the names before wall and CPU were told apart
        summarise(payload)
        write_json(out, payload)
        print(table(payload))
        return payload
    threads = configure_threads(args.threads)
    acc_args = accuracy.parse_args(["--device", "cpu", "--epochs", str(args.epochs)])
    out = Path(args.out) if args.out else default_out("darkcovidnet_cost.json", False)
    data = accuracy.Data(acc_args)
    idx, _ = accuracy.task_index(data.y, "3class")
    y = data.y[idx]
    train, test = accuracy.make_splits(y, data.groups[idx], "image", FOLDS)[0]
    payload = {
        "machine": machine_info("cpu"),
        "settings": {
            "task": "3class", "fold": "first image-level fold of accuracy.py (StratifiedKFold, seed 0)",
            "epochs_timed": args.epochs, "grid_epochs": GRID_EPOCHS, "folds": FOLDS,
            "protocols": PROTOCOLS, "n_train_per_fold": N_TRAIN,
            "loading": "load_image_folder(keep_aspect='crop'), as accuracy.py",
            "estimators": "accuracy.py MODEL_SETTINGS (darkcovidnet_paper, cnn), max_epochs overridden",
            **threads,
        },
        "results": [],
    }
    started = time.perf_counter()
    for model, size in (("darkcovidnet_paper", 256), ("darkcovidnet_paper", 128), ("cnn", 128)):
        row = measure(model, size, acc_args, data, idx, train, test, y)
        # The epochs of the model's own row in accuracy.py: 100 and 15.
        row["grid_estimate"] = extrapolate(row, accuracy.MODEL_SETTINGS[model]["max_epochs"])
        payload["results"].append(row)
        write_json(out, payload)
    payload["settings"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    summarise(payload)
    finish(payload, out, started, table)
    return payload


def summarise(payload):
    """Epoch-time ratios between the measurements, in wall and in CPU time.

    The CPU ratios are the steadier: each measurement ran at its own load.
    """
    by = {(r["model"], r["image_size"]): r for r in payload["results"]}
    for kind in ("wall", "cpu"):
        epoch = {}
        for key, r in by.items():
            durations = r["epoch_s"][1:] or r["epoch_s"]
            epoch[key] = float(np.mean(durations)) * (r["cpu_s_per_wall_s"] if kind == "cpu" else 1.0)
        payload["settings"][f"{kind}_ratio_dcn256_epoch_to_cnn128_epoch"] = (
            epoch["darkcovidnet_paper", 256] / epoch["cnn", 128]
        )
        payload["settings"][f"{kind}_ratio_dcn256_epoch_to_dcn128_epoch"] = (
            epoch["darkcovidnet_paper", 256] / epoch["darkcovidnet_paper", 128]
        )


def table(payload):
    lines = ["| model | px | wall s / epoch | CPU s / epoch | grid, wall h | grid, CPU h |",
             "|---|---|---|---|---|---|"]
    for r in payload["results"]:
        e = r["epoch_mean_after_first_s"] or r["epoch_mean_s"]
        g = r["grid_estimate"]
        lines.append(f"| {r['model']} | {r['image_size']} | {e:.1f} | {e * r['cpu_s_per_wall_s']:.1f} "
                     f"| {g['wall_grid_h']:.1f} | {g['cpu_grid_h']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
