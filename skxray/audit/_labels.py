"""Check 6: images whose given label the out-of-fold models doubt (confident learning).

The work is cleanlab's (Northcutt, Jiang and Chuang, "Confident learning:
estimating uncertainty in dataset labels", JAIR 70:1373-1411, 2021): its
plain ``cleanlab.filter.find_label_issues`` flags the images and
``cleanlab.rank.get_label_quality_scores`` ranks them. Its ``Datalab`` front
end is not used: it needs Hugging Face ``datasets`` and ``pyarrow`` and adds
checks (outliers, near-duplicates) the audit already has or does not need.
This module only turns cleanlab's answer into a :class:`Finding`.
"""

import os

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from skxray._utils import round_or_none
from skxray.audit._context import fmt_score, make_finding
from skxray.audit._cv import scores, two_class_scale

#: Suspects drawn as thumbnails in the HTML report; ``details["suspects"]``
#: lists all of them (the HTML table its first 50).
GALLERY_SIZE = 12
#: cleanlab's default rule: per given class, flag as many images as the
#: confident joint estimates to be mislabelled, those with the largest margin
#: of another class over the given one.
FILTER_BY = "prune_by_noise_rate"
#: Label quality score: the out-of-fold probability of the given label (0 =
#: the models are sure it is wrong). Ranks the suspects, lowest first.
QUALITY_METHOD = "self_confidence"


def label_issues(y_enc, proba):
    """Confident learning on out-of-fold probabilities: flags, quality scores, suggestions.

    Parameters
    ----------
    y_enc : ndarray of shape (n_samples,)
        Given labels as class indices 0 ... k-1, every class present.
    proba : ndarray of shape (n_samples, k)
        Out-of-fold probabilities (columns in class-index order).

    Returns
    -------
    flagged : ndarray of bool, shape (n_samples,)
        Suspected label issues (``cleanlab.filter.find_label_issues``).
    quality : ndarray of shape (n_samples,)
        Label quality in [0, 1], lower is more suspect.
    suggested : ndarray of int, shape (n_samples,)
        The class the models prefer (argmax of ``proba``).
    """
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, None)
    proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
    labels = np.asarray(y_enc, dtype=int)
    # n_jobs=1: cleanlab would otherwise start one process per core.
    flagged = find_label_issues(labels, proba, filter_by=FILTER_BY, n_jobs=1)
    quality = get_label_quality_scores(labels, proba, method=QUALITY_METHOD)
    return np.asarray(flagged, dtype=bool), np.asarray(quality), proba.argmax(axis=1)


def check_labels(data, grouped):
    """The ``"labels"`` finding from the grouped CV's out-of-fold probabilities."""
    n, classes = len(data.y_enc), data.classes
    flagged, quality, suggested = label_issues(data.y_enc, grouped["proba"])
    idx = np.flatnonzero(flagged)
    idx = idx[np.argsort(quality[idx], kind="stable")]  # most suspect first
    suspects = _suspects_table(data, idx, quality, suggested, grouped["proba"])
    pairs = _pairs_table(data, idx, suggested)
    ba = scores(data.y_enc, grouped["proba"], data.k)["balanced_accuracy"]
    fraction = len(idx) / n
    figures = {
        "n_images": n,
        "n_suspected": len(idx),
        "suspected_fraction": round_or_none(fraction, 4),
        "suspected_by_pair": {
            f"{r.given} -> {r.suggested}": int(r.n_suspected) for r in pairs.itertuples()
        },
        "suspected_by_class": {
            str(c): int(np.sum(data.y_enc[idx] == j)) for j, c in enumerate(classes)
        },
        "model_balanced_accuracy": round_or_none(ba),
        "filter_by": FILTER_BY,
        "quality_score": QUALITY_METHOD,
    }
    verdict, text = _verdict(data.thresholds, fraction, len(idx), n, pairs, ba, data.k)
    top = f"; most: {pairs['given'].iloc[0]} -> {pairs['suggested'].iloc[0]}" if len(pairs) else ""
    summary = f"{len(idx)} suspected ({100 * fraction:.1f}%){top}"
    shown = idx[:GALLERY_SIZE]
    arrays = {"suspect_images": data.X[shown]} if len(shown) else {}
    details = {"pairs": pairs, "suspects": suspects}
    return make_finding("labels", verdict, text, figures, details, summary, arrays)


def _suspects_table(data, idx, quality, suggested, proba):
    """One row per suspect, most suspect first: where it is, given and suggested labels."""
    classes = data.classes
    rows = []
    for rank, i in enumerate(idx, start=1):
        given, other = int(data.y_enc[i]), int(suggested[i])
        row = {"rank": rank, "image": int(i)}
        if data.paths is not None:
            row["file"] = os.path.basename(data.paths[i])
            row["path"] = data.paths[i]
        if data.groups is not None:
            row["patient"] = data.groups[i]
        if data.sources is not None:
            row["source"] = data.sources[i]
        row.update(
            given=classes[given],
            suggested=classes[other],
            label_quality=round(float(quality[i]), 4),
            p_given=round(float(proba[i, given]), 4),
            p_suggested=round(float(proba[i, other]), 4),
        )
        rows.append(row)
    columns = None if rows else ["rank", "image", "given", "suggested", "label_quality"]
    return pd.DataFrame(rows, columns=columns)


def _pairs_table(data, idx, suggested):
    """Suspects per (given, suggested) pair, largest first, with the given class's share."""
    counts = pd.Series(data.y_enc).value_counts()
    frame = pd.DataFrame({"g": data.y_enc[idx], "s": suggested[idx]})
    grouped = frame.groupby(["g", "s"]).size().reset_index(name="n_suspected")
    grouped = grouped.sort_values(["n_suspected", "g", "s"], ascending=[False, True, True])
    return pd.DataFrame(
        {
            "given": [data.classes[g] for g in grouped["g"]],
            "suggested": [data.classes[s] for s in grouped["s"]],
            "n_suspected": grouped["n_suspected"].astype(int).to_numpy(),
            "share_of_given_class": [
                round(float(m) / int(counts[g]), 4)
                for g, m in zip(grouped["g"], grouped["n_suspected"])
            ],
        }
    )


def _verdict(th, fraction, n_suspected, n, pairs, balanced_accuracy, k):
    limit = th["label_issues_warning"]
    share = f"{n_suspected} of {n} images ({100 * fraction:.1f}%)"
    scaled = two_class_scale(balanced_accuracy, k)
    if scaled is None or scaled < th["min_score"]:
        return "warning", (
            f"The out-of-fold models are too weak (balanced accuracy "
            f"{fmt_score(balanced_accuracy)}) for their doubts to single out wrong labels; "
            f"{share} were flagged, which mostly reflects the models' own errors."
        )
    if fraction > limit:
        top = ", ".join(
            f"{r.n_suspected} {r.given} the models call {r.suggested}"
            for r in pairs.head(3).itertuples()
        )
        return "warning", (
            f"The out-of-fold models confidently doubt the given label of {share}, more than "
            f"{100 * limit:.0f}% ({top}). Review them: each is a doubt, not a proven error, "
            "and a model's own mistakes are flagged too."
        )
    if n_suspected == 0:
        return "ok", "The out-of-fold models confidently doubt no image's given label."
    return "ok", (
        f"The out-of-fold models confidently doubt the given label of {share}, at most "
        f"{100 * limit:.0f}%: worth a look, but no sign of a widespread labelling problem."
    )
