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
- the per-image score on nine synthetic acquisition changes of the held-out
  images (gamma, noise, blur, JPEG, collimation, contrast, burnt-in text,
  sharpening, resolution; :data:`ACQUISITION_FAMILIES`), for the shipped
  detector (AUROC, ROC and flag rate) and for each detector design
  ``OODDetector`` exposes (fitted on the training images), with each family
  left out in turn of the choice among them; and on the lungmasks X-rays of
  patients not in darkcovidnet, beside Hannover.

**The lung check's ambiguity limit** (``lung_ambiguity_threshold_``, added after
the committed run of 2026-12-07 13:25 UTC) is reported beside the check as it
was, the layout rule alone (``*_layout_only``), in the same run. The rule for
keeping it, written before this script ran with it: it stays if the held-out
patients flagged "uncertain" stay at most 5 % (the issue's limit) for both
models; the pictures, faces and Hannover are reported and decide nothing.

**Hannover is measured, never used**: nothing is fitted, calibrated, tuned
or chosen on it (its README). The detector's design was chosen on
darkcovidnet alone (synthetic acquisition changes of held-out images,
measured here with each family left out in turn), and
its threshold is the library's default. Writes
``benchmarks/results/new_hospital.json``; ``docs/new_hospital.rst`` shows
its table::

    .venv/bin/python benchmarks/new_hospital.py            # about 15 min on 2 CPU cores
    .venv/bin/python benchmarks/new_hospital.py --quick    # 64 px, fewer epochs and batches
    .venv/bin/python benchmarks/new_hospital.py --only families  # the acquisition families alone
                                                          # -> new_hospital_families.json
"""

import argparse
import copy
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
    p.add_argument("--only", choices=["families"], default=None,
                   help="train the models and run only this section: 'families' (synthetic "
                   "acquisition changes, left out in turn), written to new_hospital_families.json")
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


def load_data_and_split(names, quick, random_state):
    """The darkcovidnet images at each model's input size, and the patient split of ``random_state``.

    Returns ``(bunch, split)``: ``bunch[size]`` holds ``X``, ``y`` and
    ``groups``; ``split`` is :func:`split_patients`' (train, held out,
    held-out Pneumonia). The probes of this folder use it too.
    """
    from skxray.datasets import load_image_folder

    root = require_data()
    sizes = {make_model(n, quick, 0).image_size for n in names}
    bunch = {}
    for size in sorted(sizes):
        b = load_image_folder(root, classes=CLASSES_3, image_size=size, n_jobs=-1)
        bunch[size] = {"X": b.data, "y": np.asarray(b.target), "groups": np.asarray(b.groups)}
    first = bunch[min(sizes)]
    return bunch, split_patients(first["y"], first["groups"], random_state)


def probe_each_model(args, measure):
    """A probe's loop: the data and split of ``args.random_state``, then ``measure(name, args, bunch,
    split) -> (info, rows)`` for each model of ``args.models``. Returns ``(names, infos, rows)``."""
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bunch, split = load_data_and_split(names, False, args.random_state)
    infos, rows = [], []
    for name in names:
        info, r = measure(name, args, bunch, split)
        infos.append(info)
        rows.extend(r)
    return names, infos, rows


def fit_on_split(name, random_state, bunch, split):
    """``make_model(name)`` fitted on the training patients of ``split``, with the patients as groups.

    Returns ``(model, X, y, groups, seconds)``: the arrays at the model's input size.
    """
    model = make_model(name, False, random_state)
    data = bunch[model.image_size]
    X, y, groups = data["X"], data["y"], data["groups"]
    train = split[0]
    with Stopwatch() as fit_time:
        model.fit(X[train], y[train], groups=groups[train])
    log(f"{name}: fitted in {fit_time.seconds:.0f} s")
    return model, X, y, groups, fit_time.seconds


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


def _with_detector(model, **attributes):
    """The same fitted model with a copy of its detector whose ``attributes`` are set."""
    other = copy.copy(model)
    other.ood_ = copy.copy(model.ood_)
    for name, value in attributes.items():
        setattr(other.ood_, name, value)
    return other


def without_lung_check(model):
    """The same fitted model, its detector's lung check switched off (the distance alone)."""
    return _with_detector(model, lung_check_=False)


def layout_only(model):
    """The same fitted model, its lung check without the ambiguity limit: the lung layout rule alone,
    as the check was before the limit (``lung_ambiguity_threshold_`` None)."""
    return _with_detector(model, lung_ambiguity_threshold_=None)


def _uncertain(model, X):
    return float(np.mean(model.predict_with_abstention(X) == "uncertain"))


def gross_error_rates(model, X_held_out, size, seed):
    """Share flagged "uncertain", share out of distribution (``ood_score > 1``) and AUROC per set.

    The AUROC is that of ``ood_score`` between the held-out patients and the set.
    ``uncertain_without_lung_check`` is the same model with its detector's lung
    check off (the feature distance alone), ``uncertain_layout_only`` the same
    with the lung check as it was before its ambiguity limit (the layout rule
    alone), and ``lung_layout_fails`` the share that
    :func:`skxray.segmentation.lung_layout` fails: what each part adds.
    """
    from sklearn.metrics import roc_auc_score

    from skxray.segmentation import lung_layout

    plain = without_lung_check(model)
    layout = layout_only(model)
    out = {}
    sets = {"held_out": np.asarray(X_held_out, dtype=np.float32),
            **gross_errors(X_held_out, size, seed)}
    held_scores = None
    for name, X in sets.items():
        scores = model.ood_score(X)
        held_scores = scores if held_scores is None else held_scores
        out[name] = {
            "n": len(X),
            "uncertain": _uncertain(model, X),
            "out_of_distribution": float(np.mean(scores > 1.0)),
            "uncertain_without_lung_check": _uncertain(plain, X),
            "uncertain_layout_only": _uncertain(layout, X),
            "lung_layout_fails": float(np.mean(~lung_layout(X).passes)),
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
    """Four tests of one batch: reference matched by BBSE, matched by EM, the whole reference,
    and matched by BBSE with the pairs of one reference patient left out (``exclude_patient_pairs``)."""
    from dataclasses import replace

    from skxray.ood import shift_test

    kw = {"n_permutations": permutations, "random_state": seed}
    batch = pool[idx]
    bbse = shift_test(detector, batch, prevalence_method="bbse", **kw)
    em = shift_test(detector, batch, prevalence_method="em", **kw)
    # Without probabilities: no case-mix part, the whole reference.
    plain = shift_test(detector, replace(batch, proba=None), **kw)
    pairs = shift_test(detector, batch, prevalence_method="bbse", exclude_patient_pairs=True, **kw)
    return bbse, em, plain, pairs


def summarise(results, truth_share, positive):
    """Rates over the batches of one setting."""
    b, e, pl, pp = (np.array([r[i] for r in results], dtype=object) for i in range(4))

    def share(res):
        return np.array([r.prevalence[positive] for r in res])

    est_b, est_e = share(b), share(e)
    row = {
        "image_rejected_at_0.05_bbse_matched": float(np.mean([r.pvalue < 0.05 for r in b])),
        "image_rejected_at_0.01_bbse_matched": float(np.mean([r.pvalue < 0.01 for r in b])),
        "image_rejected_at_0.05_em_matched": float(np.mean([r.pvalue < 0.05 for r in e])),
        "image_rejected_at_0.01_em_matched": float(np.mean([r.pvalue < 0.01 for r in e])),
        "image_rejected_at_0.05_bbse_matched_patient_pairs_left_out": float(np.mean([r.pvalue < 0.05 for r in pp])),
        "image_rejected_at_0.01_bbse_matched_patient_pairs_left_out": float(np.mean([r.pvalue < 0.01 for r in pp])),
        "patient_pairs_left_out": float(np.mean([r.patient_pairs_excluded for r in pp])),
        "rejected_at_0.05_whole_reference": float(np.mean([r.pvalue < 0.05 for r in pl])),
        "rejected_at_0.01_whole_reference": float(np.mean([r.pvalue < 0.01 for r in pl])),
        "case_mix_rejected_at_0.05": float(np.mean([r.case_mix_changed for r in b])),
        "mean_estimated_covid_share_bbse": float(est_b.mean()),
        "mean_estimated_covid_share_em": float(est_e.mean()),
        "median_matched_reference_size": float(np.median([r.n_reference for r in b])),
        # A batch drawn with replacement repeats images, which the test counts once.
        "median_distinct_images": float(np.median([r.n_test for r in b])),
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


# ------------------------------------------------------------------ acquisition families
# Issue 25: the per-image score's ROC and flag rate on synthetic acquisition
# changes of held-out darkcovidnet images, with each family in turn held out of
# the choice among the detector designs the library exposes, and on every
# external set of the repository. Hannover is only ever measured.

#: Synthetic acquisition changes, one documented strength each, fixed before
#: anything was measured with them (never tuned on what they report). Lengths
#: are shares of the image side, so the 64 px and 128 px images get the same
#: change. Applied to the held-out patients' images as the model sees them
#: (loaded, gray, in [0, 1], at the model's size).
ACQUISITION_FAMILIES = {
    "gamma": "intensity ** 1.6 (another look-up table: darker mid-greys)",
    "noise": "Gaussian noise of standard deviation 0.05, clipped to [0, 1]",
    "blur": "Gaussian blur, sigma 1 % of the side",
    "jpeg": "JPEG at quality 20",
    "collimation": "a black border of 10 % of the side on every edge",
    "contrast": "contrast reduced to 60 % about the image's mean",
    "burnt_in_text": "a white side marker, date and id line stamped at seeded places",
    "sharpening": "unsharp mask, radius 2 % of the side, amount 1.5",
    "resolution": "down-sampled to a third of the side, then up again (bilinear)",
}

#: The detector designs ``OODDetector`` exposes (the k-nearest-neighbour distance the
#: design also tried is not in the library, so it is not a candidate here).
DETECTOR_CANDIDATES = {
    "layers": {"method": "mahalanobis", "features": "layers"},
    "embedding": {"method": "mahalanobis", "features": "embedding"},
    "image": {"method": "mahalanobis", "features": "image"},
    "both": {"method": "mahalanobis", "features": "both"},
    "energy": {"method": "energy"},
    "msp": {"method": "msp"},
}
#: The candidate of the shipped design: a CNN's or FNN's ``ood_`` (``features="auto"``).
SHIPPED_CANDIDATE = "layers"


def _stamp_text(img, rng):
    """Burn a side marker, a date and an id line into one image, white, at seeded places."""
    from PIL import Image, ImageDraw, ImageFont

    side = img.shape[-1]
    pil = Image.fromarray(np.round(255 * img).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=max(6, round(0.08 * side)))
    lines = (
        "LR"[rng.integers(2)],
        f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.2020",
        f"ID {rng.integers(10**5, 10**6)}",
    )
    for text, band in zip(lines, (0.05, 0.80, 0.88)):
        x = int(rng.uniform(0.03, 0.55) * side)
        draw.text((x, int(band * side)), text, fill=255, font=font)
    return np.asarray(pil, dtype=np.float32) / 255.0


def _jpeg(img, quality):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(255 * img).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def acquisition_change(img, family, rng):
    """One held-out image (2-D, in [0, 1]) as another acquisition would give it.

    ``family`` is a key of :data:`ACQUISITION_FAMILIES`, whose value says the
    strength; ``rng`` (a seeded Generator) draws the noise and the text.
    """
    from skimage.filters import gaussian, unsharp_mask
    from skimage.transform import resize

    side = img.shape[-1]
    img = np.asarray(img, dtype=np.float32)
    if family == "gamma":
        out = img ** 1.6
    elif family == "noise":
        out = img + rng.normal(0.0, 0.05, img.shape)
    elif family == "blur":
        out = gaussian(img, sigma=0.01 * side, preserve_range=True)
    elif family == "jpeg":
        out = _jpeg(img, quality=20)
    elif family == "collimation":
        out, edge = img.copy(), max(1, round(0.10 * side))
        out[:edge], out[-edge:], out[:, :edge], out[:, -edge:] = 0, 0, 0, 0
    elif family == "contrast":
        out = img.mean() + 0.6 * (img - img.mean())
    elif family == "burnt_in_text":
        out = _stamp_text(img, rng)
    elif family == "sharpening":
        out = unsharp_mask(img, radius=0.02 * side, amount=1.5, preserve_range=True)
    elif family == "resolution":
        small = resize(img, (max(2, img.shape[0] // 3), max(2, side // 3)), order=1, anti_aliasing=True)
        out = resize(small, img.shape, order=1)
    else:
        raise ValueError(f"unknown acquisition family {family!r}: one of {sorted(ACQUISITION_FAMILIES)}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def acquisition_sets(X_held_out, seed):
    """Every family applied to every held-out image, seeded per family and image."""
    X = np.asarray(X_held_out, dtype=np.float32)
    return {
        family: np.stack([
            acquisition_change(x, family, np.random.default_rng([seed, k, i]))
            for i, x in enumerate(X)
        ])
        for k, family in enumerate(ACQUISITION_FAMILIES)
    }


def lungmasks_external():
    """The lungmasks X-rays of patients with no image in darkcovidnet: read only, never fitted.

    They come from the collection that gave darkcovidnet its COVID-19 images
    (other images, other patients, many places), so they are a milder change
    than a new hospital. Returns (paths, description), or (None, reason).
    """
    import csv

    from skxray.datasets import get_data_home

    home = get_data_home()
    manifest = home / "lungmasks" / "manifest.csv"
    if not manifest.is_file():
        return None, f"lungmasks not found under {home}"
    with open(home / "darkcovidnet" / "manifest.csv", newline="", encoding="utf-8") as f:
        seen = {r["patient_id"] for r in csv.DictReader(f)}
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not r["in_darkcovidnet"] and r["patient_id"] not in seen]
    paths = np.array(sorted(str(home / "lungmasks" / r["image"]) for r in rows), dtype=object)
    return paths, ("lungmasks images not in darkcovidnet, of patients with no darkcovidnet image "
                   "(COVID-19 image data collection, Cohen et al.: the source of darkcovidnet's "
                   "COVID-19 images)")


def _candidate_detectors(model, X_train, y_train, seed):
    """Each candidate design, fitted as the library allows on the classifier and its training images.

    At the quantile of the classifier's own detector (the library's default).
    """
    from skxray.ood import OODDetector

    return {
        name: OODDetector(quantile=model.ood_.quantile, estimator=model, random_state=seed,
                          **params).fit(X_train, y_train)
        for name, params in DETECTOR_CANDIDATES.items()
    }


def leave_one_family_out(auroc):
    """For each family: the candidate with the best mean AUROC over the other families, and its AUROC.

    ``auroc[candidate][family]``; ties go to the earlier candidate of
    :data:`DETECTOR_CANDIDATES`.
    """
    families = list(next(iter(auroc.values())))
    out = {}
    for family in families:
        others = [f for f in families if f != family]
        means = {c: float(np.mean([auroc[c][f] for f in others])) for c in auroc}
        chosen = max(means, key=means.get)
        out[family] = {
            "chosen": chosen,
            "chosen_is_shipped_design": chosen == SHIPPED_CANDIDATE,
            "chosen_mean_auroc_other_families": means[chosen],
            "chosen_auroc": auroc[chosen][family],
        }
    return out


def _shipped_rates(model, X, scores_in):
    """The shipped detector on one set: AUROC against held-out patients, ROC, flag rates."""
    answers, scores = model.predict_with_abstention(X, return_scores=True)
    auroc, curve, points = roc_summary(scores_in, scores)
    return {
        "n": len(X),
        "auroc_vs_held_out": auroc,
        "uncertain": float(np.mean(answers == "uncertain")),
        "ood_flagged": float(np.mean(scores > model.ood_.threshold_)),
        **points,
        "roc": curve,
    }


def acquisition_families(name, model, X_train, y_train, X_held_out, scores_in, row, args):
    """Candidates and the shipped detector against every acquisition family, left out in turn.

    ``scores_in`` are the shipped ``ood_score`` of the clean held-out images
    and ``row`` the per-image row of :func:`measure` (its held-out and
    Hannover figures are reused, not recomputed). The lungmasks images of
    :func:`lungmasks_external` are measured like a family, never fitted. The
    candidates are fitted on the images the network trained on, nothing else.
    """
    from sklearn.metrics import roc_auc_score

    from skxray.preprocessing import ImageLoader

    sets = acquisition_sets(X_held_out, args.random_state)
    detectors = _candidate_detectors(model, X_train, y_train, args.random_state)
    auroc, calibration = {}, {}
    for cand, det in detectors.items():
        clean = det.ood_score(X_held_out)
        truth = np.r_[np.zeros(len(clean)), np.ones(len(clean))]
        auroc[cand] = {f: float(roc_auc_score(truth, np.r_[clean, det.ood_score(Xf)])) for f, Xf in sets.items()}
        # How the threshold set on the training images sits for new in-distribution images.
        calibration[cand] = {"held_out_flagged": float(np.mean(clean > det.threshold_)),
                             "held_out_median_score": float(np.median(clean)),
                             "threshold": float(det.threshold_), "block_thresholds": det.block_thresholds_}
        log(f"{name}: candidate {cand}: {auroc[cand]}; {calibration[cand]}")
    lofo = leave_one_family_out(auroc)
    shipped = {f: _shipped_rates(model, Xf, scores_in) for f, Xf in sets.items()}
    for f in sets:
        lofo[f]["shipped_auroc"] = shipped[f]["auroc_vs_held_out"]
    external = {"hannover": {
        "auroc_vs_held_out": row["ood_score_auroc_hannover_vs_held_out"],
        "uncertain": row["abstained_hannover"],
        **{k: v for k, v in row.items() if k.startswith("external_flagged_at_")},
    }}
    lungmasks, about = lungmasks_external()
    if lungmasks is not None:
        X_lm = ImageLoader(image_size=model.image_size).fit_transform(lungmasks)
        external["lungmasks"] = {"about": about, **_shipped_rates(model, X_lm, scores_in)}
    out = {
        "model": name,
        "families": ACQUISITION_FAMILIES,
        "candidates": DETECTOR_CANDIDATES,
        "shipped_candidate": SHIPPED_CANDIDATE,
        "shipped_features": list(model.ood_.features_),
        "candidate_auroc": auroc,
        "candidate_mean_auroc": {c: float(np.mean(list(a.values()))) for c, a in auroc.items()},
        "candidate_calibration": calibration,
        "leave_one_family_out": lofo,
        "held_out": {"n": len(X_held_out), "uncertain": row["abstained_held_out"],
                     "ood_flagged": float(np.mean(scores_in > model.ood_.threshold_))},
        "shipped": shipped,
        "external": external,
    }
    log(f"{name}: leave one family out: {lofo}")
    return out


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
    plain = without_lung_check(model)
    row = {
        "model": name,
        "image_size": size,
        "held_out_accuracy": float(np.mean(model.predict(X[test]) == y[test])),
        "abstained_held_out": float(np.mean(answers["held_out"] == "uncertain")),
        "abstained_pneumonia": float(np.mean(answers["pneumonia"] == "uncertain")),
        "abstained_hannover": float(np.mean(~answered)),
        "lung_check": bool(model.ood_.lung_check_),
        "lung_check_pass_rate_validation": model.ood_.lung_check_pass_rate_,
        "abstained_held_out_without_lung_check": _uncertain(plain, X[test]),
        "abstained_pneumonia_without_lung_check": _uncertain(plain, X[pneumonia]),
        "abstained_hannover_without_lung_check": _uncertain(plain, X_ext),
        "lung_ambiguity_threshold": model.ood_.lung_ambiguity_threshold_,
        "abstained_held_out_layout_only": _uncertain(layout_only(model), X[test]),
        "abstained_pneumonia_layout_only": _uncertain(layout_only(model), X[pneumonia]),
        "abstained_hannover_layout_only": _uncertain(layout_only(model), X_ext),
        "ood_score_auroc_hannover_vs_held_out": auroc,
        "ood_score_auroc_pneumonia_vs_held_out": auroc_pneumonia,
        **points,
        "hannover_called_covid": float(np.mean(predicted == POSITIVE)),
        "hannover_called_covid_of_answered": float(np.mean(predicted[answered] == POSITIVE))
        if answered.any() else None,
        "fit_seconds": fit_time.seconds,
    }
    families = acquisition_families(name, model, X[train], y[train], X[test], scores_in, row, args)
    if args.only == "families":
        return row, {"model": name, **curve}, [], [], None, families
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
    return row, {"model": name, **curve}, shift, adapt, gross, families


def main(argv=None):
    args = parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bunch, split = load_data_and_split(names, args.quick, args.random_state)
    external = hannover_paths()
    rows, curves, shift, adapt, gross, families = [], [], [], [], [], []
    for name in names:
        row, curve, rates, adapted, flags, acquisition = measure(name, args, bunch, external, split)
        rows.append(row)
        curves.append(curve)
        shift.extend(rates)
        adapt.extend(adapted)
        gross.append(flags)
        families.append(acquisition)
    if args.only == "families":
        return write_families_only(args, split, rows, curves, families)
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
        "acquisition_families": families,
    }
    out = args.out or default_out("new_hospital.json", args.quick)
    log(f"wrote {write_json(out, payload)}")



def write_families_only(args, split, rows, curves, families):
    """``--only families``: the acquisition-family section alone, in its own file.

    With the per-image rows and Hannover's ROC curves (``roc_curves``) it is set beside.
    """
    payload = {
        "machine": machine_info(),
        "settings": {
            "dataset": "darkcovidnet (Covid-19 vs No_findings), 80/20 patient split",
            "note": "the acquisition_families section of new_hospital.json, run alone "
            "(new_hospital.py --only families): the same models, split and seed",
            "n_train": len(split[0]),
            "n_held_out": len(split[1]),
            "random_state": args.random_state,
            "validation_fraction": args.validation_fraction,
            "quick": args.quick,
        },
        "results": [{k: r[k] for k in ("model", "image_size", "held_out_accuracy", "abstained_held_out",
                                       "abstained_hannover", "ood_score_auroc_hannover_vs_held_out",
                                       "fit_seconds")} for r in rows],
        "acquisition_families": families,
        "roc_curves": curves,
    }
    out = args.out or default_out("new_hospital_families.json", args.quick)
    log(f"wrote {write_json(out, payload)}")
    return payload


if __name__ == "__main__":
    main()
