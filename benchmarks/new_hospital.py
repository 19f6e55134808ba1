"""A model at a hospital it never saw: per-image abstention and the batch shift test.

Trains the default ``CNNClassifier`` (128 px, 15 epochs) and the default
``FNNClassifier`` (64 px) on 80 % of the patients of darkcovidnet
(Covid-19 vs No_findings), then measures, on images none of them trained on:

- per-image abstention (``predict_with_abstention``) on the held-out
  patients, on held-out Pneumonia patients (same NIH source, a disease the
  model never saw) and on the 243 Hannover COVID-19 images, and the AUROC of
  ``ood_score`` between held-out patients and Hannover, with the score's
  whole ROC curve;
- both parts of :func:`skxray.ood.shift_test` over random batches of 20 and
  of 40 images: batches of held-out patients with a COVID-19 share of 0 %,
  50 %, 100 % and the training share (a change of case mix only), of
  Hannover and of held-out Pneumonia. For each batch, the image test
  against a reference matched to the BBSE and to the EM estimate of the
  class mix, and against the whole reference (the test before issue 25);
  the case-mix test; the estimated COVID-19 share, its error and whether
  its 95 % interval covers the truth. The features and probabilities of
  each pool are computed once, so the batch loops are cheap;
- ``adapt_proba`` on those batches: log-loss, Brier score and calibration
  error of the COVID-19 probability as given and adapted to the estimated
  (and, for mixed batches, the known) share;
- the per-image flags on images that are not chest X-rays (scikit-image's
  pictures and ``lfw_subset``, held-out X-rays inverted, rotated, upside
  down, mirrored, tiny crops): measured, never fitted.

**Hannover is measured, never used**: nothing is fitted, calibrated, tuned
or chosen on it (its README). The detector's design was chosen on
darkcovidnet alone (synthetic acquisition changes of held-out images), and
its threshold is the library's default. Writes
``benchmarks/results/new_hospital.json``; ``docs/new_hospital.rst`` shows
its table::

    .venv/bin/python benchmarks/new_hospital.py            # about 15 min on 2 CPU cores
    .venv/bin/python benchmarks/new_hospital.py --quick    # 64 px, fewer epochs and batches
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CLASSES_3,
    POSITIVE,
    Stopwatch,
    default_out,
    log,
    machine_info,
    require_data,
    write_json,
)

#: Held-out rates of false alarm at which the Hannover abstention is also read off the ROC.
OPERATING_POINTS = (0.01, 0.05, 0.10)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn,fnn", help="comma-separated: cnn, fnn (default both)")
    p.add_argument("--batches", type=int, default=100, help="random batches per size and pool (100)")
    p.add_argument("--permutations", type=int, default=1000, help="permutations per shift test (1000)")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="the classifiers' validation_fraction (default: theirs, 0.1): the size of "
                   "the labelled reference of the shift test")
    p.add_argument("--split-by", choices=("patient", "image"), default="patient",
                   help="the classifiers' validation split (the shift test's labelled reference and "
                   "the detector's calibration images): whole patients, fit(..., groups=patient ids), "
                   "the default; or images, as before (results/new_hospital_split_by_image.json)")
    p.add_argument("--quick", action="store_true", help="64 px, 4 epochs, 20 batches: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return p.parse_args(argv)


def make_model(name, quick, random_state, validation_fraction=None):
    from skxray.models import CNNClassifier, FNNClassifier

    extra = {} if validation_fraction is None else {"validation_fraction": validation_fraction}
    if name == "cnn":
        # The defaults, with the 15 epochs `skxray train` used when this was measured
        # (it now takes the estimator's own max_epochs).
        return CNNClassifier(max_epochs=4 if quick else 15, image_size=64 if quick else 128,
                             random_state=random_state, **extra)
    if name == "fnn":
        return FNNClassifier(max_epochs=4 if quick else 30, random_state=random_state, **extra)
    raise SystemExit(f"unknown model {name!r}: choose cnn or fnn")


def hannover_paths():
    """The external images' paths; the folder is only ever read, never fitted."""
    from skxray.datasets import get_data_home

    root = get_data_home() / "hannover"
    if not root.is_dir():
        raise SystemExit(f"hannover not found under {root.parent}; set SKXRAY_DATA")
    return np.array(sorted(str(p) for p in (root / "Covid-19").glob("*.png")), dtype=object)


def split_patients(y, groups, random_state):
    """80/20 patient split of Covid-19 vs No_findings, and the held-out Pneumonia patients."""
    from sklearn.model_selection import GroupShuffleSplit

    binary = np.flatnonzero(y != "Pneumonia")
    train, test = next(
        GroupShuffleSplit(1, test_size=0.2, random_state=random_state).split(
            binary, y[binary], groups[binary]
        )
    )
    train, test = binary[train], binary[test]
    pneumonia = np.flatnonzero((y == "Pneumonia") & ~np.isin(groups, groups[train]))
    return train, test, pneumonia


#: scikit-image pictures that ship in its wheel (no download): none is a chest X-ray.
SKIMAGE_PICTURES = ("camera", "astronaut", "page", "text", "retina", "microaneurysms",
                    "immunohistochemistry", "shepp_logan_phantom")


def _gray_square(img, size):
    """A picture as the loaders give an X-ray: gray, float32 in [0, 1], centre-cropped to ``size``."""
    from skimage.color import rgb2gray

    from skxray.preprocessing import resize_images

    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
    elif img.max() > 1:
        img = img / 255.0
    return resize_images(img[None].astype(np.float32), size, keep_aspect="crop")[0]


def gross_errors(X_held_out, size, seed):
    """Images that are not chest X-rays, or not as the model was trained: measured, never fitted.

    Pictures of scikit-image's wheel; its ``lfw_subset`` (100 faces and 100
    non-face patches of the same photos, 25 px); held-out X-rays inverted,
    rotated by 90 degrees, turned upside down, mirrored; tiny crops (one
    eighth of the side) of held-out X-rays blown up to the model's size.
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    pictures = np.stack([_gray_square(getattr(skimage.data, n)(), size) for n in SKIMAGE_PICTURES])
    faces = np.stack([_gray_square(f, size) for f in skimage.data.lfw_subset()])
    X = np.asarray(X_held_out, dtype=np.float32)
    side = max(2, X.shape[-1] // 8)
    corners = rng.integers(0, X.shape[-1] - side, size=(len(X), 2))
    crops = np.stack([
        _gray_square(x[r:r + side, c:c + side], size) for x, (r, c) in zip(X, corners)
    ])
    return {
        "skimage_pictures": pictures,
        "lfw_subset": faces,
        "inverted": 1.0 - X,
        "rotated_90": np.rot90(X, 1, axes=(-2, -1)).copy(),
        "upside_down": X[..., ::-1, :].copy(),
        "mirrored": X[..., :, ::-1].copy(),
        "tiny_crops": crops,
    }


def gross_error_rates(model, X_held_out, size, seed):
    """Share flagged "uncertain", share out of distribution (``ood_score > 1``) and AUROC per set.

    The AUROC is that of ``ood_score`` between the held-out patients and the set.
    """
    from sklearn.metrics import roc_auc_score

    out = {}
    sets = {"held_out": np.asarray(X_held_out, dtype=np.float32),
            **gross_errors(X_held_out, size, seed)}
    held_scores = None
    for name, X in sets.items():
        scores = model.ood_score(X)
        held_scores = scores if held_scores is None else held_scores
        out[name] = {
            "n": len(X),
            "uncertain": float(np.mean(model.predict_with_abstention(X) == "uncertain")),
            "out_of_distribution": float(np.mean(scores > 1.0)),
        }
        if name != "held_out":
            truth = np.r_[np.zeros(len(held_scores)), np.ones(len(scores))]
            out[name]["ood_score_auroc_vs_held_out"] = float(roc_auc_score(truth, np.r_[held_scores, scores]))
        if name == "skimage_pictures":
            out[name]["per_picture_ood_score"] = dict(zip(SKIMAGE_PICTURES, scores.tolist()))
    return out


def roc_summary(scores_in, scores_out):
    """AUROC, a thinned ROC curve and the external flag rate at fixed in-distribution rates."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    scores = np.r_[scores_in, scores_out]
    fpr, tpr, _ = roc_curve(truth, scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 60)).astype(int))
    points = {
        f"external_flagged_at_{int(100 * rate)}pct_held_out": float(
            np.mean(scores_out > np.quantile(scores_in, 1 - rate))
        )
        for rate in OPERATING_POINTS
    }
    return float(roc_auc_score(truth, scores)), {"fpr": fpr[keep], "tpr": tpr[keep]}, points


def pool_features(model, X):
    """The shift test's features and the classifier's probabilities of a pool, computed once."""
    from skxray.ood import shift_features

    return shift_features(model, X)


def _draw(rng, pos, neg, n_pos, size):
    """Indices of a batch with ``n_pos`` images of ``pos`` and the rest of ``neg``.

    Without replacement when each pool is large enough, with replacement otherwise
    (the caller records which).
    """
    picks, replaced = [], False
    for pool, n in ((pos, n_pos), (neg, size - n_pos)):
        if n:
            replace = n > len(pool)
            replaced |= replace
            picks.append(rng.choice(pool, n, replace=replace))
    return np.concatenate(picks), replaced


def _test_batch(detector, pool, idx, permutations, seed):
    """Three tests of one batch: reference matched by BBSE, matched by EM, and the whole reference."""
    from dataclasses import replace

    from skxray.ood import shift_test

    kw = {"n_permutations": permutations, "random_state": seed}
    batch = pool[idx]
    bbse = shift_test(detector, batch, prevalence_method="bbse", **kw)
    em = shift_test(detector, batch, prevalence_method="em", **kw)
    # Without probabilities: no case-mix part, the whole reference.
    plain = shift_test(detector, replace(batch, proba=None), **kw)
    return bbse, em, plain


def summarise(results, truth_share, positive):
    """Rates over the batches of one setting."""
    b, e, pl = (np.array([r[i] for r in results], dtype=object) for i in range(3))

    def share(res):
        return np.array([r.prevalence[positive] for r in res])

    est_b, est_e = share(b), share(e)
    row = {
        "image_rejected_at_0.05_bbse_matched": float(np.mean([r.pvalue < 0.05 for r in b])),
        "image_rejected_at_0.01_bbse_matched": float(np.mean([r.pvalue < 0.01 for r in b])),
        "image_rejected_at_0.05_em_matched": float(np.mean([r.pvalue < 0.05 for r in e])),
        "image_rejected_at_0.01_em_matched": float(np.mean([r.pvalue < 0.01 for r in e])),
        "rejected_at_0.05_whole_reference": float(np.mean([r.pvalue < 0.05 for r in pl])),
        "rejected_at_0.01_whole_reference": float(np.mean([r.pvalue < 0.01 for r in pl])),
        "case_mix_rejected_at_0.05": float(np.mean([r.case_mix_changed for r in b])),
        "mean_estimated_covid_share_bbse": float(est_b.mean()),
        "mean_estimated_covid_share_em": float(est_e.mean()),
        "median_matched_reference_size": float(np.median([r.n_reference for r in b])),
    }
    if truth_share is not None:
        truth = np.asarray(truth_share, dtype=float)
        for name, est, res in (("bbse", est_b, b), ("em", est_e, e)):
            row[f"within_10_points_{name}"] = float(np.mean(np.abs(est - truth) <= 0.10 + 1e-9))
            row[f"mean_abs_error_{name}"] = float(np.mean(np.abs(est - truth)))
            row[f"ci_covers_truth_{name}"] = float(np.mean([
                r.prevalence_low[positive] - 1e-9 <= t <= r.prevalence_high[positive] + 1e-9
                for r, t in zip(res, truth)
            ]))
    return row


def adaptation_row(proba_batches, truth_batches, estimates, known_share, training_share):
    """Log-loss, Brier score and calibration error of the COVID-19 probability, as given and adapted."""
    from skxray.ood import adapt_proba

    p = np.concatenate(proba_batches)
    t = np.concatenate(truth_batches).astype(float)
    variants = {"as_given": p}
    variants["adapted_to_estimate"] = np.concatenate([
        adapt_proba(pb, [q, 1 - q], [training_share, 1 - training_share])
        for pb, q in zip(proba_batches, estimates)
    ])
    if 0 < known_share < 1:
        variants["adapted_to_known"] = adapt_proba(p, [known_share, 1 - known_share],
                                                   [training_share, 1 - training_share])
    row = {}
    for name, v in variants.items():
        p1 = np.clip(v[:, 0], 1e-6, 1 - 1e-6)
        row[f"log_loss_{name}"] = float(-np.mean(t * np.log(p1) + (1 - t) * np.log(1 - p1)))
        row[f"brier_{name}"] = float(np.mean((p1 - t) ** 2))
        row[f"ece_{name}"] = expected_calibration_error(p1, t)
    return row


def expected_calibration_error(p, t, n_bins=10):
    """Mean |observed share - mean probability| over ten equal-width bins, weighted by their counts."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return float(sum(
        np.sum(bins == k) * abs(t[bins == k].mean() - p[bins == k].mean())
        for k in range(n_bins) if np.any(bins == k)
    ) / len(p))


def case_mix_batches(name, model, cache, y_held, args, seed):
    """Batches of held-out patients with a set COVID-19 share: a change of case mix only."""
    det = model.ood_
    proba = cache.proba
    positive = list(det.reference_classes_).index(POSITIVE)
    pos, neg = np.flatnonzero(y_held == POSITIVE), np.flatnonzero(y_held != POSITIVE)
    training_share = float(det.training_prevalence_[positive])
    rows, adapt = [], []
    n_batches = 20 if args.quick else args.batches
    for mix, share in (("covid_0pct", 0.0), ("covid_50pct", 0.5), ("covid_100pct", 1.0),
                       ("training_share", training_share)):
        for size in (20, 40):
            rng = np.random.default_rng(seed + size)
            n_pos = int(round(share * size))
            results, replaced, probas, truths = [], False, [], []
            for b in range(n_batches):
                idx, rep = _draw(rng, pos, neg, n_pos, size)
                replaced |= rep
                results.append(_test_batch(det, cache, idx, args.permutations, seed + b))
                probas.append(proba[idx][:, [positive, 1 - positive]])
                truths.append(y_held[idx] == POSITIVE)
            row = {"model": name, "batches_from": f"held_out_{mix}", "covid_share": n_pos / size,
                   "batch_size": size, "n_batches": n_batches, "drawn_with_replacement": replaced,
                   **summarise(results, [n_pos / size] * n_batches, positive)}
            rows.append(row)
            estimates = [r[0].prevalence[positive] for r in results]
            adapt.append({"model": name, "batches_from": f"held_out_{mix}", "batch_size": size,
                          "covid_share": n_pos / size, "drawn_with_replacement": replaced,
                          **adaptation_row(probas, truths, estimates, n_pos / size, training_share)})
            log(f"{name}: {row}")
    return rows, adapt


def external_batches(name, model, pools, args, seed):
    """Random batches of Hannover and of held-out Pneumonia: what each part of the test says."""
    det = model.ood_
    positive = list(det.reference_classes_).index(POSITIVE)
    rows = []
    n_batches = 20 if args.quick else args.batches
    for pool_name, pool in pools.items():
        for size in (20, 40):
            rng = np.random.default_rng(seed + size)
            results = [
                _test_batch(det, pool, rng.choice(len(pool), size, replace=False), args.permutations, seed + b)
                for b in range(n_batches)
            ]
            row = {"model": name, "batches_from": pool_name, "batch_size": size,
                   "n_batches": n_batches, **summarise(results, None, positive)}
            rows.append(row)
            log(f"{name}: {row}")
    return rows


def measure(name, args, bunch, external_paths, split):
    from skxray.preprocessing import ImageLoader

    train, test, pneumonia = split
    model = make_model(name, args.quick, args.random_state, args.validation_fraction)
    size = model.image_size
    X = bunch[size]["X"]
    y = bunch[size]["y"]
    groups = bunch[size]["groups"][train] if args.split_by == "patient" else None
    X_ext = ImageLoader(image_size=size).fit_transform(external_paths)
    with Stopwatch() as fit_time:
        # With the patients as groups the validation split, which calibrates the
        # detector and is the shift test's labelled reference, holds new patients only.
        model.fit(X[train], y[train], groups=groups)
    log(f"{name}: fitted in {fit_time.seconds:.0f} s")
    answers = {
        "held_out": model.predict_with_abstention(X[test]),
        "pneumonia": model.predict_with_abstention(X[pneumonia]),
        "hannover": model.predict_with_abstention(X_ext),
    }
    scores_in, scores_ext = model.ood_score(X[test]), model.ood_score(X_ext)
    auroc, curve, points = roc_summary(scores_in, scores_ext)
    auroc_pneumonia = roc_summary(scores_in, model.ood_score(X[pneumonia]))[0]
    predicted = model.predict(X_ext)
    answered = answers["hannover"] != "uncertain"
    row = {
        "model": name,
        "image_size": size,
        "held_out_accuracy": float(np.mean(model.predict(X[test]) == y[test])),
        "abstained_held_out": float(np.mean(answers["held_out"] == "uncertain")),
        "abstained_pneumonia": float(np.mean(answers["pneumonia"] == "uncertain")),
        "abstained_hannover": float(np.mean(~answered)),
        "ood_score_auroc_hannover_vs_held_out": auroc,
        "ood_score_auroc_pneumonia_vs_held_out": auroc_pneumonia,
        **points,
        "hannover_called_covid": float(np.mean(predicted == POSITIVE)),
        "hannover_called_covid_of_answered": float(np.mean(predicted[answered] == POSITIVE))
        if answered.any() else None,
        "fit_seconds": fit_time.seconds,
    }
    held = pool_features(model, X[test])
    shift, adapt = case_mix_batches(name, model, held, y[test], args, args.random_state)
    shift += external_batches(name, model, {
        "hannover": pool_features(model, X_ext),
        "held_out_pneumonia": pool_features(model, X[pneumonia]),
    }, args, args.random_state)
    gross = {"model": name, **gross_error_rates(model, X[test], size, args.random_state)}
    row["n_reference"] = len(model.ood_.reference_labels_)
    row["n_reference_covid"] = int(np.sum(model.ood_.reference_labels_ == list(model.classes_).index(POSITIVE)))
    row["n_held_out_covid"] = int(np.sum(y[test] == POSITIVE))
    log(f"{name}: {row}")
    return row, {"model": name, **curve}, shift, adapt, gross


def main(argv=None):
    from skxray.datasets import load_image_folder

    args = parse_args(argv)
    root = require_data()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = {make_model(n, args.quick, 0).image_size for n in names}
    bunch = {}
    for size in sorted(sizes):
        b = load_image_folder(root, classes=CLASSES_3, image_size=size, n_jobs=-1)
        bunch[size] = {"X": b.data, "y": np.asarray(b.target), "groups": np.asarray(b.groups)}
    first = bunch[min(sizes)]
    split = split_patients(first["y"], first["groups"], args.random_state)
    external = hannover_paths()
    rows, curves, shift, adapt, gross = [], [], [], [], []
    for name in names:
        row, curve, rates, adapted, flags = measure(name, args, bunch, external, split)
        rows.append(row)
        curves.append(curve)
        shift.extend(rates)
        adapt.extend(adapted)
        gross.append(flags)
    payload = {
        "machine": machine_info(),
        "settings": {
            "dataset": "darkcovidnet (Covid-19 vs No_findings), 80/20 patient split",
            "external": "hannover (243 COVID-19 X-rays, 71 patients): measured only",
            "n_train": len(split[0]),
            "n_held_out": len(split[1]),
            "n_pneumonia": len(split[2]),
            "n_hannover": len(external),
            "random_state": args.random_state,
            "validation_fraction": args.validation_fraction,
            "validation_split_by": args.split_by,
            "permutations": args.permutations,
            "quick": args.quick,
            "before_patient_split": "new_hospital_split_by_image.json: the same run with the "
            "validation split drawn per image (fit without groups)",
            "before_issue_25": {
                "not_a_chest_xray": "new_hospital_before_issue25.json",
                "shift_test": "the rejected_at_*_whole_reference columns: the test against the whole "
                "reference, as before issue 25, on the same batches",
            },
            "before_issue_14": {
                "abstained_hannover": 0.107,
                "abstained_held_out": 0.007,
                "ood_score_auroc_hannover_vs_held_out": 0.85,
                "note": "CNN 128 px, old detector (embedding + descriptor, quantile 0.99), as measured in issue 14",
            },
        },
        "results": rows,
        "shift_test": shift,
        "prior_adaptation": adapt,
        "not_a_chest_xray": gross,
        "roc_curves": curves,
    }
    out = args.out or default_out("new_hospital.json", args.quick)
    log(f"wrote {write_json(out, payload)}")


if __name__ == "__main__":
    main()
