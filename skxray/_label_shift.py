"""Label shift: a batch's class proportions from a classifier's predictions.

Under a pure change of case mix ("label shift"), the images of each class
look as before, p(x | y) is unchanged and only p(y) moves. Then

- the share of each predicted class in a batch is ``C @ q``, where ``C[i, j]``
  is the probability that an image of class ``j`` is predicted ``i``
  (estimated on held-out labelled images) and ``q`` the batch's class
  proportions: black-box shift estimation (BBSE; Lipton, Wang & Smola,
  ICML 2018) solves it for ``q``;
- the posteriors follow Bayes' rule, ``p_new(y | x) ~ p(y | x) q_y / p_y``,
  and the EM prior adjustment (Saerens, Latinne & Decaestecker, Neural
  Computation 2002) iterates that rule to the ``q`` that explains the batch.

Both are only valid when the images of each class do not differ: at a new
hospital the predictions themselves are wrong, and so are the proportions
estimated from them. Imports nothing else from skxray.
"""

import numpy as np
from scipy import stats

#: Replicates of the parametric bootstrap behind the 95 % interval.
N_BOOTSTRAP = 1000
PREVALENCE_METHODS = ("bbse", "em")


def confusion_columns(y_true, y_pred, n_classes):
    """``C[i, j]``: share of the held-out images of class ``j`` predicted ``i`` (columns sum to 1).

    A class without held-out images gets the identity column (no evidence
    of confusion).
    """
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (np.asarray(y_pred, dtype=np.int64), np.asarray(y_true, dtype=np.int64)), 1.0)
    totals = counts.sum(axis=0)
    eye = np.eye(n_classes)
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), eye)


def project_simplex(v):
    """Euclidean projection of the rows of ``v`` onto the probability simplex."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    k = np.arange(1, v.shape[1] + 1)
    rho = (u - css / k > 0).sum(axis=1)
    theta = css[np.arange(len(v)), rho - 1] / rho
    return np.maximum(v - theta[:, None], 0.0)


def bbse(C, mu):
    """Class proportions ``q`` with ``C @ q`` closest to the predicted shares ``mu``.

    ``C`` is (k, k) or a stack (B, k, k), ``mu`` (k,) or (B, k). Solves the
    linear system (least squares, through the pseudo-inverse, when ``C`` is
    singular) and projects onto the simplex, so that the estimate is a
    proportion even when sampling noise pushes the solution outside.
    Returns (B, k).
    """
    C = np.asarray(C, dtype=np.float64)
    mu = np.atleast_2d(np.asarray(mu, dtype=np.float64))
    q = np.einsum("...ij,...j->...i", np.linalg.pinv(C), mu)
    return project_simplex(q)


def em_prior(proba, training_prior, n_iter=200, tol=1e-8):
    """Saerens et al.'s EM: the prior ``q`` under which the adjusted posteriors average to ``q``.

    ``proba`` is (n, k), or a stack (B, n, k) of resampled batches whose
    priors are found side by side; returns (k,) or (B, k).
    """
    proba = np.asarray(proba, dtype=np.float64)
    p = np.maximum(np.asarray(training_prior, dtype=np.float64), 1e-12)
    q = np.broadcast_to(p, proba.shape[:-2] + p.shape).copy()
    for _ in range(n_iter):
        adjusted = proba * (q / p)[..., None, :]
        adjusted /= np.maximum(adjusted.sum(axis=-1, keepdims=True), 1e-300)
        new = adjusted.mean(axis=-2)
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def adapt_proba(proba, prevalence, training_prevalence):
    """Bayes' rule for a new prior: ``p(y | x) * q_y / p_y``, rows renormalised."""
    proba = np.asarray(proba, dtype=np.float64)
    ratio = np.asarray(prevalence, dtype=np.float64) / np.maximum(
        np.asarray(training_prevalence, dtype=np.float64), 1e-12
    )
    adjusted = proba * ratio
    total = adjusted.sum(axis=1, keepdims=True)
    # A row whose classes all got weight 0 keeps its probabilities.
    return np.where(total > 0, adjusted / np.where(total > 0, total, 1.0), proba)


def estimate(method, ref_labels, ref_pred, ref_proba, pred, proba, training_prior, rng):
    """Point estimate and 95 % percentile interval of the batch's class proportions.

    ``method="bbse"``: the interval redraws the batch's predicted-class
    shares and, class by class, the columns of the reference's confusion
    matrix from their posteriors given the counts (Dirichlet, with Jeffreys'
    prior of one half per cell, so that a class never predicted still has
    some uncertainty), so it carries both the batch's and the reference's
    sampling error. ``method="em"``: the batch is resampled (the EM
    adjustment trusts the calibrated probabilities). Returns ``(q, low,
    high)``.
    """
    k = len(training_prior)
    if method == "bbse":
        C = confusion_columns(ref_labels, ref_pred, k)
        counts = np.bincount(pred, minlength=k)
        q = bbse(C, counts / len(pred))[0]
        mus = rng.dirichlet(counts + 0.5, size=N_BOOTSTRAP)
        confusion = np.zeros((k, k))
        np.add.at(confusion, (np.asarray(ref_pred), np.asarray(ref_labels)), 1.0)
        Cs = np.stack([rng.dirichlet(confusion[:, j] + 0.5, size=N_BOOTSTRAP) for j in range(k)], axis=2)
        boots = bbse(Cs, mus)
    else:
        q = em_prior(proba, training_prior)
        n_boot = N_BOOTSTRAP // 5
        rows = rng.randint(0, len(proba), size=(n_boot, len(proba)))
        boots = em_prior(np.asarray(proba, dtype=np.float64)[rows], training_prior)
    low, high = np.quantile(boots, [0.025, 0.975], axis=0)
    return q, np.minimum(low, q), np.maximum(high, q)


def case_mix_pvalue(ref_pred, pred, k):
    """Do the predicted classes of the batch and of the reference differ in proportion?

    Black-box shift detection (Rabanser et al., NeurIPS 2019): under a pure
    change of case mix the predicted-class shares move with the class
    proportions, so comparing them tests the latter with the classifier as
    a dimension reduction. Fisher's exact test for two classes, the
    chi-squared test of the 2 x k table otherwise.
    """
    table = np.vstack([np.bincount(ref_pred, minlength=k), np.bincount(pred, minlength=k)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    if table.shape[1] == 2:
        return float(stats.fisher_exact(table)[1])
    return float(stats.chi2_contingency(table)[1])


def matched_subsample(labels, proportions, rng):
    """Indices of a subsample of ``labels`` with class shares ``proportions``, drawn without replacement.

    The largest such subsample the labelled images allow: ``n`` is the
    biggest size at which every class ``j`` has ``round(n * q_j)`` images
    to give. Without replacement, since duplicated reference images make a
    permutation test anti-conservative.
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = len(proportions)
    available = np.bincount(labels, minlength=k)
    q = np.asarray(proportions, dtype=np.float64)
    n = len(labels)
    while n > 0:
        counts = np.round(n * q).astype(np.int64)
        if (counts <= available).all():
            break
        n -= 1
    chosen = [
        rng.choice(np.flatnonzero(labels == j), counts[j], replace=False) for j in range(k) if counts[j]
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
