"""Check 3: source confounding, and leave-one-source-out scores."""

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skxray._utils import make_cv, round_or_none
from skxray.audit._context import fmt_score, make_finding
from skxray.audit._cv import mean_recall, proba_in_order, run_cv, two_class_scale
from skxray.audit._report import worst_verdict


def check_sources(data, grouped):
    """The ``"sources"`` finding and the number of fits it cost."""
    sources, y, y_enc, k = data.sources, data.y, data.y_enc, data.k
    if sources is None:
        return _without_sources(), 0
    table = pd.crosstab(pd.Series(y, name="class"), pd.Series(sources, name="source"))
    n_sources = table.shape[1]
    sources_per_class = (table > 0).sum(axis=1)
    figures = {
        "n_sources": int(n_sources),
        "sources_per_class": {str(c): int(v) for c, v in sources_per_class.items()},
    }
    details = {"contingency": table}
    if n_sources == 1:
        return _one_source(figures, details), 0
    # Label predicted from the source alone: each source votes its majority class.
    majority = table.idxmax(axis=0)
    from_source = np.array([list(data.classes).index(majority[s]) for s in sources])
    label_from_source = float(balanced_accuracy_score(y_enc, from_source))
    single_source = bool((sources_per_class == 1).all())
    src_ba, confusion, n_fits, kind = _source_predictor_score(data)
    figures.update(
        {
            "each_class_single_source": single_source,
            "label_from_source_balanced_accuracy": round_or_none(label_from_source),
            "source_predictor": kind if src_ba is not None else None,
            "source_predictor_balanced_accuracy": round_or_none(src_ba),
        }
    )
    if confusion is not None:
        details["source_predictions"] = confusion
    loso = pd.DataFrame()
    if (sources_per_class > 1).any() and grouped is not None:
        loso, loso_fits = _leave_one_source_out(data, grouped, table.columns)
        n_fits += loso_fits
    if len(loso):
        details["leave_one_source_out"] = loso
    max_drop = float(loso["drop"].max()) if len(loso) else None
    figures["loso_max_drop"] = round_or_none(max_drop)
    figures["loso_sources_tested"] = len(loso)

    verdict, reasons = _confounding_verdict(
        data.thresholds,
        conf=two_class_scale(label_from_source, k),
        recog=two_class_scale(src_ba, n_sources) if src_ba is not None else None,
        label_from_source=label_from_source,
        src_ba=src_ba,
        single_source=single_source,
    )
    loso_level = _loso_level(max_drop, data.thresholds, k)
    if loso_level is not None:
        worst = loso.loc[loso["drop"].idxmax()]
        verdict = worst_verdict(verdict, loso_level)
        reasons.append(
            f"Tested on a source it never saw ({worst['held_out_source']}), the model falls "
            f"from {worst['in_source_score']:.2f} to {worst['held_out_score']:.2f}: it does not "
            "transfer between sources."
        )
    if not reasons:
        bits = (
            "the label does not follow the source "
            f"(label from source alone: {label_from_source:.2f})"
        )
        if len(loso):
            bits += f" and scores hold on held-out sources (largest drop {max_drop:+.2f})"
        reasons.append(f"{n_sources} sources: {bits}.")
    summary = (
        f"{n_sources} sources; label-from-source {fmt_score(label_from_source)}; "
        f"source predicted {fmt_score(src_ba)}"
        + (f"; LOSO max drop {max_drop:+.2f}" if max_drop is not None else "")
    )
    finding = make_finding("sources", verdict, " ".join(reasons), figures, details, summary)
    return finding, n_fits


def _without_sources():
    return make_finding(
        "sources",
        "warning",
        "No source labels (hospital, device or data set) were given, so source "
        "confounding cannot be checked; a model may recognise where an image comes "
        "from rather than the disease.",
        {"n_sources": None},
        summary="no source labels",
    )


def _one_source(figures, details):
    figures["label_from_source_balanced_accuracy"] = None
    return make_finding(
        "sources",
        "ok",
        "All images come from one source, so the source cannot give the label away; "
        "but the model has not been tested on another hospital either.",
        figures,
        details,
        summary="1 source",
    )


def _loso_level(max_drop, th, k):
    """"fail", "warning" or None for the largest leave-one-source-out drop.

    Drops are balanced-accuracy differences: scaled like the thresholds'
    two-class scale, a drop of ``t`` there is ``t * 2 * (1 - 1/k)`` here.
    """
    if max_drop is None:
        return None
    scale = 2 * (1 - 1 / k)
    if max_drop >= th["loso_drop_fail"] * scale:
        return "fail"
    if max_drop >= th["loso_drop_warning"] * scale:
        return "warning"
    return None


def _confounding_verdict(th, *, conf, recog, label_from_source, src_ba, single_source):
    """Verdict and reasons from how well the source gives the label and is recognised."""
    recognisable = recog is not None and recog >= th["source_recognisable"]
    if conf >= th["confounding_fail"] and recognisable:
        what = (
            "Each class comes from its own source"
            if single_source
            else "The source almost determines the class"
        )
        return "fail", [
            f"{what} (label from source alone: {label_from_source:.2f}) and a simple model "
            f"recognises the source from the images (balanced accuracy {src_ba:.2f}): the model "
            "can score well by recognising the hospital, not the disease."
        ]
    if conf >= th["confounding_warning"]:
        if recognisable:
            return "warning", [
                f"The source largely predicts the class (label from source alone: "
                f"{label_from_source:.2f}) and is recognisable from the images (balanced "
                f"accuracy {src_ba:.2f}): part of the score may come from the hospital."
            ]
        return "warning", [
            f"The source largely predicts the class (label from source alone: "
            f"{label_from_source:.2f}); a simple model did not recognise the sources "
            f"({fmt_score(src_ba)}), but a network may."
        ]
    return "ok", []


def _leave_one_source_out(data, grouped, source_names):
    """Per held-out source: in-source (grouped CV) vs held-out score; and the fits it cost."""
    sources, y, y_enc, classes = data.sources, data.y, data.y_enc, list(data.classes)
    rows, n_fits = [], 0
    for s in source_names:
        test = np.flatnonzero(sources == s)
        train = np.flatnonzero(sources != s)
        present = np.unique(y_enc[test])
        if len(np.unique(y_enc[train])) < 2 or not set(present) <= set(y_enc[train]):
            continue
        if data.verbose:
            print(f"[audit] leave-one-source-out: holding out {s!r}")
        model = clone(data.estimator).fit(data.X[train], y[train])
        n_fits += 1
        pred = proba_in_order(model, data.X[test], classes).argmax(axis=1)
        in_pred = grouped["proba"][test].argmax(axis=1)
        held = mean_recall(y_enc[test], pred, present)
        inside = mean_recall(y_enc[test], in_pred, present)
        rows.append(
            {
                "held_out_source": s,
                "n_images": len(test),
                "classes": ", ".join(str(classes[c]) for c in present),
                "in_source_score": inside,
                "held_out_score": held,
                "drop": inside - held,
            }
        )
    return pd.DataFrame(rows), n_fits


def _source_predictor_score(data):
    """Out-of-fold balanced accuracy of predicting the source from the images.

    Returns ``(score, confusion table, fits, kind of model)``; score and
    table are None when a source has fewer than 2 patients (images).
    """
    X, sources, groups, source_model = data.X, data.sources, data.groups, data.source_model
    src_classes = sorted(pd.unique(sources).tolist(), key=str)
    per_source = pd.Series(sources).value_counts()
    if groups is not None:
        per_source = pd.Series(groups).groupby(sources).nunique()
    n_splits = int(min(data.cv, per_source.min()))
    if n_splits < 2:
        return None, None, 0, "a source has fewer than 2 patients (images)"
    splits = list(make_cv(n_splits, groups, data.random_state).split(X, sources, groups))
    s_enc = np.array([src_classes.index(s) for s in sources])
    n_fits = 0
    if isinstance(source_model, str) and source_model == "descriptors":
        feats = descriptors(X)
        pred = np.zeros(len(X), dtype=int)
        for train, test in splits:
            m = _descriptor_model().fit(feats[train], s_enc[train])
            pred[test] = m.predict(feats[test])
        kind = "logistic regression on image descriptors"
    else:
        est = data.estimator if source_model == "estimator" else source_model
        res = run_cv(
            est,
            X,
            s_enc,
            list(range(len(src_classes))),
            splits,
            verbose=data.verbose,
            label="source model",
        )
        n_fits += res["n_fits"]
        pred = res["proba"].argmax(axis=1)
        kind = type(est).__name__ if source_model != "estimator" else "the audited estimator"
    confusion = pd.crosstab(
        pd.Series(sources, name="source"),
        pd.Series(np.array(src_classes, object)[pred], name="predicted"),
    )
    return float(balanced_accuracy_score(s_enc, pred)), confusion, n_fits, kind


def descriptors(X):
    """Cheap global image descriptors for the source model.

    An 8x8 thumbnail (layout, field of view), a 16-bin intensity histogram and
    percentiles (exposure, intensity curve), and mean/std of the four border
    bands and four corners (text, markers, collimation): what differs between
    hospitals and devices, with nothing specific to a disease.
    """
    G = X.mean(axis=1) if X.ndim == 4 else X
    n, h, w = G.shape
    rows = np.linspace(0, h, 9).astype(int)
    cols = np.linspace(0, w, 9).astype(int)
    thumb = np.add.reduceat(np.add.reduceat(G, rows[:-1], axis=1), cols[:-1], axis=2)
    thumb /= np.outer(np.diff(rows), np.diff(cols))[None]
    flat = G.reshape(n, -1)
    hist = np.stack([np.histogram(g, bins=16, range=(0.0, 1.0))[0] for g in flat]) / flat.shape[1]
    pct = np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1).T
    bh, bw = max(1, int(0.12 * h)), max(1, int(0.12 * w))
    regions = [
        G[:, :bh, :],
        G[:, -bh:, :],
        G[:, :, :bw],
        G[:, :, -bw:],
        G[:, :bh, :bw],
        G[:, :bh, -bw:],
        G[:, -bh:, :bw],
        G[:, -bh:, -bw:],
    ]
    band = np.concatenate(
        [np.stack([r.reshape(n, -1).mean(1), r.reshape(n, -1).std(1)], axis=1) for r in regions],
        axis=1,
    )
    stats = np.stack([flat.mean(1), flat.std(1)], axis=1)
    return np.concatenate([thumb.reshape(n, -1), hist, pct, band, stats], axis=1)


def _descriptor_model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
