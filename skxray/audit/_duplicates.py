"""Check 2: near-duplicate images found by perceptual hashing."""

import time

import pandas as pd

from skxray._utils import round_or_none
from skxray.audit._context import make_finding
from skxray.audit._hashing import near_duplicate_pairs, perceptual_hashes

_COLUMNS = [
    "i",
    "j",
    "label_i",
    "label_j",
    "distance",
    "phash_distance",
    "dhash_distance",
    "same_class",
    "same_patient",
    "fold_i",
    "fold_j",
    "across_folds",
]


def check_duplicates(data, fold_of):
    """The ``"duplicates"`` finding; ``fold_of`` is each image's test fold in the grouped CV."""
    t0 = time.perf_counter()
    base, variants = perceptual_hashes(data.X, data.hash_size, data.shift)
    found = near_duplicate_pairs(base, variants, data.duplicate_distance)
    rows = [_pair_row(data, fold_of, i, j, dists) for (i, j), dists in sorted(found.items())]
    pairs = pd.DataFrame(rows, columns=_COLUMNS if not rows else None)
    n_pairs = len(pairs)
    n_across_classes = int((~pairs["same_class"]).sum()) if n_pairs else 0
    n_across_folds = int(pairs["across_folds"].sum()) if n_pairs else 0
    n_other_patients = int((~pairs["same_patient"]).sum()) if n_pairs else 0
    figures = {
        "n_pairs": n_pairs,
        "n_images_involved": len(set(pairs["i"]).union(pairs["j"])) if n_pairs else 0,
        "n_within_class": n_pairs - n_across_classes,
        "n_across_classes": n_across_classes,
        "n_across_folds": n_across_folds,
        "n_between_patients": n_other_patients if data.groups is not None else None,
        "max_distance_bits": data.duplicate_distance,
        "hash_bits": data.hash_size**2,
        "hash_seconds": round_or_none(time.perf_counter() - t0, 2),
    }
    rule = f"perceptual-hash distance <= {data.duplicate_distance} of {data.hash_size**2} bits"
    verdict, text = _verdict(n_pairs, n_across_folds, n_across_classes, rule)
    summary = f"{n_pairs} pairs ({n_across_folds} across folds, {n_across_classes} across classes)"
    return make_finding("duplicates", verdict, text, figures, {"pairs": pairs}, summary)


def _pair_row(data, fold_of, i, j, dists):
    y, groups, sources = data.y, data.groups, data.sources
    dist, dp, dd = dists
    row = {
        "i": i,
        "j": j,
        "label_i": y[i],
        "label_j": y[j],
        "distance": dist,
        "phash_distance": dp,
        "dhash_distance": dd,
        "same_class": bool(y[i] == y[j]),
        "same_patient": bool(groups is not None and groups[i] == groups[j]),
        "fold_i": int(fold_of[i]),
        "fold_j": int(fold_of[j]),
        "across_folds": bool(fold_of[i] != fold_of[j]),
    }
    if groups is not None:
        row["patient_i"], row["patient_j"] = groups[i], groups[j]
    if sources is not None:
        row["source_i"], row["source_j"] = sources[i], sources[j]
    if data.paths is not None:
        row["path_i"], row["path_j"] = data.paths[i], data.paths[j]
    return row


def _verdict(n_pairs, n_across_folds, n_across_classes, rule):
    if n_pairs == 0:
        return "ok", f"No near-duplicate images were found ({rule})."
    if n_across_folds or n_across_classes:
        bits = []
        if n_across_folds:
            bits.append(f"{n_across_folds} across training and test folds")
        if n_across_classes:
            bits.append(f"{n_across_classes} between different classes")
        return "fail", (
            f"{n_pairs} pair(s) of near-identical images were found, {' and '.join(bits)}: "
            "the test folds partly repeat the training images"
            + (" and some copies carry conflicting labels." if n_across_classes else ".")
        )
    return "warning", (
        f"{n_pairs} pair(s) of near-identical images were found, all within one class and "
        "one fold (e.g. the same patient): harmless for this grouped split, but they "
        "inflate any image-level split; consider removing them."
    )
