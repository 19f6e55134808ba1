"""What every check reads: the audited data and the audit's settings, frozen."""

from dataclasses import dataclass

import numpy as np

from skxray.audit._report import TITLES, Finding


@dataclass(frozen=True)
class AuditData:
    """The inputs of one :func:`~skxray.audit.audit` call, checked and encoded.

    Built once by ``audit`` and passed to every check, which only reads it.
    """

    X: np.ndarray  # (N, H, W) or (N, C, H, W) float32
    y: np.ndarray  # the labels as given
    y_enc: np.ndarray  # index of each label in ``classes``
    classes: list  # sorted, the order of the estimators' classes_
    groups: np.ndarray | None  # patient ids (object array) or None
    sources: np.ndarray | None  # sources (object array) or None
    paths: list | None  # file paths when X was given as paths
    estimator: object
    cv: int
    random_state: object
    thresholds: dict
    duplicate_distance: int
    hash_size: int
    border_fraction: float
    source_model: object
    n_bins: int
    lung_region: str  # "segmenter" or "ellipse"
    verbose: int

    @property
    def k(self):
        """Number of classes."""
        return len(self.classes)

    @property
    def shift(self):
        """Pixels by which the duplicate check shifts images (about 3% of the side)."""
        return max(1, round(min(self.X.shape[-2:]) / 32))


def make_finding(name, verdict, explanation, figures, details=None, summary="", arrays=None):
    """A :class:`Finding` with the check's numbered title."""
    return Finding(
        name=name,
        verdict=verdict,
        explanation=explanation,
        figures=figures,
        details=details or {},
        title=TITLES[name],
        summary=summary,
        arrays=arrays or {},
    )


def fmt_score(x):
    """A score with 2 decimals for a summary line, "n/a" when not computable."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"
