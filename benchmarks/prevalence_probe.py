"""Probe (issue 25): would calibrating the probabilities first make the EM case-mix estimate reliable?

Usage::

    python benchmarks/prevalence_probe.py [--random-state 1] [--batches 100]

``shift_test`` estimates a batch's COVID-19 share by BBSE (the default) or by
Saerens et al.'s EM. On split 0 (``new_hospital.json``) each misses the issue's
goal (within 10 points in at least 90 % of held-out batches of 40, at every
mix) for one model: BBSE for the FNN on COVID-19-only batches, EM for the CNN
on batches without COVID-19. EM trusts the probabilities to be calibrated.
Alexandari, Kundaje and Shrikumar (ICML 2020, "Maximum likelihood with
bias-corrected calibration is hard-to-beat at label shift adaptation")
calibrate them first, by bias-corrected temperature scaling (BCTS: one
temperature and one bias per class, fitted by log-loss on held-out labelled
images), then run EM with the calibrated validation images' mean prediction
as the source prior. This probe measures that beside BBSE and plain EM.

Design data only: the patient split of ``--random-state`` (1 and 2 are the
design splits; ``new_hospital.py`` reports split 0), never Hannover. For the
CNN and the FNN of ``new_hospital.py``, fitted with the patients as groups,
the labelled reference is the classifier's own (``ood_.reference_labels_``,
``ood_.reference_proba_``: its validation patients); BCTS is fitted on it. The
held-out batches are drawn as ``new_hospital.py`` draws them (COVID-19 share
0, 50, 100 % and the training share; 20 and 40 images; 100 batches).
Reported per method: the share of batches whose estimate lies within 10
points of the truth, and the mean absolute error.

Decision rule, fixed before the first run: EM after BCTS goes into the
library (as a ``prevalence_method``) only if, on both design splits and for
both models, its lowest within-10-points share over the four mixes at 40
images is at least 0.90; it becomes the default only if that lowest share is
also at least BBSE's, for both models on both splits.

Splits 1 and 2 (``results/prevalence_probe_split1.json``, ``..._split2.json``):
EM after BCTS fails the rule (CNN, split 1: 0.03; the CNN's validation
images are separable, the fitted temperature is 0.04, and the calibrated
probabilities are hard labels, so the estimate is BBSE's). Not built. The same
runs show BBSE's lowest share for the CNN at 0.03 and 0.00, plain EM's at
0.86 and 1.00 (FNN: BBSE 0.94 and 1.00, EM 0.83 and 0.94).

Rule 2, written after splits 1 and 2 and before splits 3 and 4 were run (on
which it alone decides): plain EM replaces BBSE as ``shift_test``'s default
``prevalence_method`` if, over splits 3 and 4 and both models, its lowest
within-10-points share at 40 images is higher than BBSE's lowest, and at
least 0.80.

The BBSE and EM here are the probe's own copies of ``skxray._label_shift``
(benchmarks use public names only), checked equal to it on random inputs
before the first run (20 draws, 2-3 classes; not part of this script).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    POSITIVE,
    default_out,
    log,
    machine_info,
    write_json,
)

METHODS = ("bbse", "em", "em_bcts")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn,fnn")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--random-state", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def project_simplex(v):
    u = -np.sort(-v)
    css = np.cumsum(u) - 1.0
    rho = int((u - css / np.arange(1, len(v) + 1) > 0).sum())
    return np.maximum(v - css[rho - 1] / rho, 0.0)


def bbse(ref_labels, ref_pred, pred, k):
    counts = np.zeros((k, k))
    np.add.at(counts, (np.asarray(ref_pred), np.asarray(ref_labels)), 1.0)
    totals = counts.sum(axis=0)
    C = np.where(totals > 0, counts / np.maximum(totals, 1.0), np.eye(k))
    return project_simplex(np.linalg.pinv(C) @ (np.bincount(pred, minlength=k) / len(pred)))


def em_prior(proba, prior, n_iter=200, tol=1e-8):
    p = np.maximum(np.asarray(prior, dtype=np.float64), 1e-12)
    q = p.copy()
    for _ in range(n_iter):
        adjusted = proba * (q / p)[None, :]
        adjusted /= np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-300)
        new = adjusted.mean(axis=0)
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_bcts(proba, labels):
    """One temperature and one bias per class (the first fixed at 0), by log-loss on ``labels``."""
    from scipy.optimize import minimize

    z = np.log(np.clip(proba, 1e-12, 1.0))
    k = z.shape[1]

    def loss(theta):
        t, b = np.exp(theta[0]), np.r_[0.0, theta[1:]]
        logp = z / t + b
        logp = logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
        return -logp[np.arange(len(labels)), labels].mean()

    theta = minimize(loss, np.zeros(k), method="L-BFGS-B").x
    return np.exp(theta[0]), np.r_[0.0, theta[1:]]


def apply_bcts(proba, t, b):
    return _softmax(np.log(np.clip(proba, 1e-12, 1.0)) / t + b)


def measure(name, args, bunch, split):
    import new_hospital as nh

    _, test, _ = split
    model, X, y, _, fit_seconds = nh.fit_on_split(name, args.random_state, bunch, split)
    det = model.ood_
    classes = list(det.reference_classes_)
    k = len(classes)
    positive = classes.index(POSITIVE)
    order = [list(model.classes_).index(c) for c in classes]
    ref_labels = np.asarray(det.reference_labels_, dtype=np.int64)
    ref_proba = np.asarray(det.reference_proba_, dtype=np.float64)
    ref_pred = ref_proba.argmax(axis=1)
    t, b = fit_bcts(ref_proba, ref_labels)
    calibrated_prior = apply_bcts(ref_proba, t, b).mean(axis=0)
    held = np.asarray(model.predict_proba(X[test]), dtype=np.float64)[:, order]
    y_held = y[test]
    pos, neg = np.flatnonzero(y_held == POSITIVE), np.flatnonzero(y_held != POSITIVE)
    training_share = float(det.training_prevalence_[positive])
    rows = []
    for mix, share in (("covid_0pct", 0.0), ("covid_50pct", 0.5), ("covid_100pct", 1.0),
                       ("training_share", training_share)):
        for bsize in (20, 40):
            rng = np.random.default_rng(args.random_state + bsize)
            n_pos = int(round(share * bsize))
            errors = {m: [] for m in METHODS}
            for _ in range(args.batches):
                idx, _ = nh._draw(rng, pos, neg, n_pos, bsize)
                proba = held[idx]
                truth = n_pos / bsize
                q = {
                    "bbse": bbse(ref_labels, ref_pred, proba.argmax(axis=1), k),
                    "em": em_prior(proba, det.training_prevalence_),
                    "em_bcts": em_prior(apply_bcts(proba, t, b), calibrated_prior),
                }
                for m in METHODS:
                    errors[m].append(abs(q[m][positive] - truth))
            row = {"model": name, "batches_from": f"held_out_{mix}", "batch_size": bsize,
                   **{f"within_10_points_{m}": float(np.mean(np.asarray(errors[m]) <= 0.10)) for m in METHODS},
                   **{f"mean_abs_error_{m}": float(np.mean(errors[m])) for m in METHODS}}
            rows.append(row)
            log(f"{name}: {row}")
    info = {"model": name, "n_reference": len(ref_labels), "n_reference_covid": int(np.sum(ref_labels == positive)),
            "bcts_temperature": float(t), "bcts_bias": b.tolist(), "calibrated_prior": calibrated_prior.tolist(),
            "training_prevalence": np.asarray(det.training_prevalence_).tolist(),
            "n_held_out": len(test), "n_held_out_covid": len(pos), "fit_seconds": fit_seconds}
    log(f"{name}: {info}")
    return info, rows


def lowest_at_40(rows):
    """Per model and method: the lowest within-10-points share over the mixes, batches of 40."""
    out = {}
    for r in rows:
        if r["batch_size"] != 40:
            continue
        for m in METHODS:
            key = (r["model"], m)
            out[key] = min(out.get(key, 1.0), r[f"within_10_points_{m}"])
    return {f"{model}/{m}": v for (model, m), v in out.items()}


def main(argv=None):
    import new_hospital as nh

    args = parse_args(argv)
    names, infos, rows = nh.probe_each_model(args, measure)
    lowest = lowest_at_40(rows)
    log(f"lowest within-10-points share at 40 images: {lowest}")
    out = {"machine": machine_info(), "settings": {**vars(args), "out": None, "methods": list(METHODS),
           "rule": __doc__.split("Decision rule, fixed before the first run: ")[1].split("\n\n")[0]},
           "models": infos, "rows": rows, "lowest_within_10_points_at_40": lowest}
    write_json(args.out or default_out(f"prevalence_probe_split{args.random_state}.json", False), out)


if __name__ == "__main__":
    main()
