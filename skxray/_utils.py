"""Small helpers shared by several skxray modules: one definition each.

This module imports nothing else from skxray, so any module may import it
without creating an import cycle. Where two callers need a different rule
(a quantile in (0, 1) vs a border band in [0, 0.5); strict JSON for files
other programs read vs round-tripping JSON for saved models), the helpers
have names that say which rule they apply.
"""

import base64
import io
import json
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "as_python_scalar",
    "check_border_fraction",
    "check_groups",
    "check_open_fraction",
    "check_per_image",
    "check_label_vector",
    "check_sample_weight",
    "close_figure",
    "dumps_json",
    "format_value",
    "is_int",
    "is_real",
    "jsonable",
    "make_cv",
    "png_base64",
    "round_or_none",
]


# --------------------------------------------------------------------------
# type tests


def is_int(value):
    """True for Python and numpy integers, False for bools (``True`` is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    """True for Python and numpy real numbers, False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_python_scalar(value):
    """A numpy scalar as the matching Python scalar; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------
# parameter checks


def _check_real_in(value, name, owner, low, high, *, low_closed, interval):
    prefix = f"{owner}: " if owner else ""
    ok = is_real(value) and math.isfinite(value)
    if ok:
        ok = (low <= value if low_closed else low < value) and value < high
    if not ok:
        raise ValueError(f"{prefix}{name} must be a float in {interval}; got {value!r}.")
    return float(value)


def check_open_fraction(value, name, owner=None):
    """``value`` as a float strictly between 0 and 1 (a quantile, a share).

    Raises ``ValueError`` naming ``owner`` (the class, if any), ``name`` and
    the value otherwise.
    """
    return _check_real_in(value, name, owner, 0.0, 1.0, low_closed=False, interval="(0, 1)")


def check_border_fraction(value, name, owner=None, *, allow_zero=True):
    """``value`` as the width of a border band, a fraction of each side below 0.5.

    Two bands of 0.5 would cover the whole image, so 0.5 is excluded; 0 (no
    band) is allowed unless ``allow_zero=False``.
    """
    interval = "[0, 0.5)" if allow_zero else "(0, 0.5)"
    return _check_real_in(value, name, owner, 0.0, 0.5, low_closed=allow_zero, interval=interval)


def check_per_image(values, n, name):
    """One value per image (patient ids, sources), none missing.

    Returns None for None, else an object array of length ``n``. Raises
    ``ValueError`` for a wrong length or a None/NaN entry.
    """
    if values is None:
        return None
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"{name} must have one entry per image: got shape {arr.shape} for {n} images."
        )
    missing = [i for i, v in enumerate(arr) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise ValueError(f"{name} has missing values (e.g. at position {missing[0]}).")
    return arr


def check_label_vector(y, name, n_samples=None):
    """Class labels as a non-empty 1-D array, as long as ``y_true`` when ``n_samples`` is given."""
    from sklearn.utils.validation import column_or_1d

    y = column_or_1d(y, warn=True)
    if len(y) == 0:
        raise ValueError(f"{name} is empty.")
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(f"{name} has {len(y)} labels but y_true has {n_samples}.")
    return y


def check_sample_weight(sample_weight, n_samples, owner):
    """One finite, non-negative weight per image, not all zero, as a float64 array.

    A scalar gives every image that weight. Raises ``ValueError`` naming
    ``owner`` and ``sample_weight`` otherwise.
    """
    try:
        weights = np.array(sample_weight, dtype=np.float64)  # a copy: never a view of the caller's
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: sample_weight must be numbers, one per image ({exc}).") from exc
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(
            f"{owner}: sample_weight has shape {weights.shape}; expected ({n_samples},), one weight per image."
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{owner}: sample_weight must be finite and non-negative.")
    if not weights.sum() > 0:
        raise ValueError(f"{owner}: sample_weight is zero for every image; nothing would be learnt.")
    return weights


def check_groups(groups, n_samples, owner):
    """One group label (e.g. a patient id) per image, as a 1-D array.

    Any hashable labels work (strings, ints). Raises ``ValueError`` naming
    ``owner`` and ``groups`` when the length differs from ``n_samples`` or a
    label is missing.
    """
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n_samples:
        raise ValueError(
            f"{owner}: groups has shape {labels.shape}; expected ({n_samples},), one group per image."
        )
    missing = pd.isna(labels)
    if missing.any():
        raise ValueError(
            f"{owner}: groups is missing for {int(missing.sum())} image(s) (first at index "
            f"{int(np.flatnonzero(missing)[0])}); give every image a group."
        )
    return labels


def make_cv(cv, groups, random_state):
    """The cross-validation splitter for ``cv``.

    An int gives a shuffled :class:`~sklearn.model_selection.StratifiedKFold`,
    or :class:`~sklearn.model_selection.StratifiedGroupKFold` when ``groups``
    are given (a patient's images stay on one side); a splitter passes
    through :func:`~sklearn.model_selection.check_cv`.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, check_cv

    if is_int(cv):
        if cv < 2:
            raise ValueError(f"cv must be an int >= 2 or a cross-validation splitter; got {cv!r}.")
        if groups is not None:
            return StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=random_state)
        return StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    if isinstance(cv, bool) or cv is None or isinstance(cv, (str, float)):
        raise ValueError(f"cv must be an int >= 2 or a cross-validation splitter; got {cv!r}.")
    return check_cv(cv, classifier=True)


# --------------------------------------------------------------------------
# numbers shown to people


def fold_mean_interval(mean, std, n_splits, level=0.95):
    """A Student t interval of the mean of ``n_splits`` fold values, clipped to [0, 1].

    ``std`` is the population standard deviation over the folds (``ddof=0``,
    as ``compare_models`` reports it), so the standard error is
    ``std / sqrt(n_splits - 1)``. The clip keeps an interval of a rate (an
    accuracy, a sensitivity) inside what a rate can be: with 3 folds the
    unclipped half-width is 4.3 standard errors. ``(nan, nan)`` when fewer
    than two folds or a value is missing.
    """
    from scipy.stats import t

    mean, std = as_python_scalar(mean), as_python_scalar(std)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (mean, std)):
        return math.nan, math.nan
    if n_splits is None or int(n_splits) < 2:
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, int(n_splits) - 1)) * float(std) / math.sqrt(int(n_splits) - 1)
    return max(0.0, float(mean) - half), min(1.0, float(mean) + half)


def round_or_none(x, ndigits=3):
    """``x`` rounded, or None when it is None, NaN or infinite (a figure "not computable")."""
    return None if x is None or not np.isfinite(x) else round(float(x), ndigits)


def format_value(value, spec=".4g"):
    """A value for an HTML or text table: floats formatted with ``spec``.

    None and NaN become "n/a"; other non-floats are returned unchanged (so a
    DataFrame column keeps its labels and counts). The audit's figures use
    ``spec=".3f"`` (scores between 0 and 1), the report's tables the default
    4 significant digits (values of any magnitude).
    """
    value = as_python_scalar(value)
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else format(value, spec)
    return value


# --------------------------------------------------------------------------
# JSON


def jsonable(obj, *, unknown="raise", where="value", ndigits=None):
    """``obj`` as strict-JSON values: what other programs read (metrics, reports).

    numpy scalars and arrays become Python numbers and lists, tuples lists,
    mappings dicts with string keys, DataFrames ``{index: {column: value}}``,
    Series dicts, paths strings; NaN and infinite floats become None (strict
    JSON has no NaN).

    Parameters
    ----------
    obj : object
        The value to convert.
    unknown : {"raise", "str", "repr"}, default="raise"
        What to do with any other object: raise ``TypeError`` naming
        ``where``, or write ``str(obj)`` / ``repr(obj)``.
    where : str, default="value"
        Name of ``obj`` in the error message.
    ndigits : int or None, default=None
        Round floats to this many digits (the benchmarks' 6), None keeps them.
    """
    obj = as_python_scalar(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return obj if ndigits is None else round(obj, ndigits)

    def recurse(value, at):
        return jsonable(value, unknown=unknown, where=at, ndigits=ndigits)

    if isinstance(obj, Mapping):
        return {
            (k if isinstance(k, str) else str(as_python_scalar(k))): recurse(v, f"{where}[{k!r}]")
            for k, v in obj.items()
        }
    if isinstance(obj, pd.DataFrame):
        return recurse(obj.to_dict(orient="index"), where)
    if isinstance(obj, pd.Series):
        return recurse(obj.to_dict(), where)
    if isinstance(obj, np.ndarray):
        return [recurse(v, where) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [recurse(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if unknown == "str":
        return str(obj)
    if unknown == "repr":
        return repr(obj)
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which cannot be written as JSON; "
        "use numbers, strings, lists and dicts."
    )


def _roundtrip_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps_json(obj):
    """JSON text that skxray reads back itself (saved models): NaN is kept.

    Unlike :func:`jsonable`, NaN and infinite floats are written as Python's
    ``json`` writes them (``NaN``, ``Infinity``) so that a saved value loads
    back unchanged; only numpy scalars and paths are converted.
    """
    return json.dumps(obj, default=_roundtrip_default, indent=2)


# --------------------------------------------------------------------------
# figures


def close_figure(fig):
    """Free a figure: pyplot figures are closed, plain Figures just dropped."""
    manager = getattr(fig.canvas, "manager", None)
    if manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def png_base64(fig, *, dpi=100, close=False):
    """``fig`` as base64 PNG text for a ``data:image/png;base64,`` URI.

    Cropped to its content (``bbox_inches="tight"``) and without matplotlib's
    "Software" metadata, so the PNG carries no URL. ``close=True`` frees the
    figure afterwards (also when saving fails).
    """
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        if close:
            close_figure(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
