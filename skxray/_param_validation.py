"""Declarative parameter checks: scikit-learn's ``_parameter_constraints``, imported here only.

The estimators declare what each parameter accepts as data, as scikit-learn's
own estimators do::

    _parameter_constraints = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adam", "adamw", "sgd"})],
    }

and call :func:`validate_params` when ``fit`` runs. Only rules that tie
parameters together (``early_stopping`` needs a validation set) are written
by hand. :class:`Pair` adds the one shape scikit-learn does not declare: two
numbers, a ``(min, max)`` range or a ``(height, width)`` size.

``sklearn.utils._param_validation`` is private. It is used rather than
copied because it is large (a dozen constraint types, their error messages
and tests) and has been stable since scikit-learn 1.2; constraints.txt pins
the version that is tested, ``tests/test_architecture.py`` fails if these
names stop importing, and this is the only module that imports them, so a
vendored copy (as imbalanced-learn keeps) would replace one import line.
The loop that applies the constraints (:func:`check_param`) is skxray's own,
about 15 lines in scikit-learn's wording, so that it can add :class:`Pair`
and refuse bools where a number is asked for.
"""

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    make_constraint,
)

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "KEEP_ASPECT",
    "Pair",
    "StrOptions",
    "check_keep_aspect",
    "check_param",
    "validate_params",
]


class Pair:
    """Constraint: two numbers of ``type``, each in an interval; ordered when ``ordered``.

    Declares a ``(min, max)`` range (``ordered=True``: min <= max) or a
    ``(height, width)`` size (``ordered=False``) the way :class:`Interval`
    declares one number; the interval's arguments are the same. A tuple, a
    list or a 1-D array of length 2 is accepted; bools are not numbers here.
    """

    hidden = False

    def __init__(self, type, left, right, *, closed, ordered=True, what=None):
        self.item = Interval(type, left, right, closed=closed)
        self.ordered = ordered
        self.what = what or ("(min, max) pair with min <= max" if ordered else "pair")

    def is_satisfied_by(self, val):
        if not isinstance(val, (tuple, list, np.ndarray)) or len(val) != 2:
            return False
        if any(isinstance(v, (bool, np.bool_)) or not self.item.is_satisfied_by(v) for v in val):
            return False
        return not self.ordered or val[0] <= val[1]

    def __str__(self):
        # Interval reads "a float in the range (0, 1]"; each number is one.
        return f"a {self.what}, each {self.item}"


def _refuses_bool(constraints):
    """Whether ``constraints`` ask for a number in an interval and accept no bool.

    scikit-learn's :class:`Interval` takes ``True`` as 1; skxray does not.
    """
    has_interval = any(isinstance(c, Interval) for c in constraints)
    takes_bool = any((isinstance(c, str) and c == "boolean") or c is bool for c in constraints)
    return has_interval and not takes_bool


def _as_constraint(constraint):
    return constraint if isinstance(constraint, Pair) else make_constraint(constraint)


def _accepted(constraints):
    shown = [str(c) for c in constraints if not c.hidden]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def check_param(name, value, constraints, caller):
    """``value`` if it meets one of ``constraints``, else raise naming ``caller``, ``name`` and it.

    For functions (``resize_images``) that take a parameter an estimator
    declares, so that both check it by one rule and say so in one wording.
    """
    refuses_bool = _refuses_bool(constraints)
    constraints = [_as_constraint(c) for c in constraints]
    if isinstance(value, (bool, np.bool_)) and refuses_bool:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be {_accepted(constraints)}, "
            f"not a bool. Got {value!r} instead."
        )
    if not any(c.is_satisfied_by(value) for c in constraints):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be {_accepted(constraints)}. "
            f"Got {value!r} instead."
        )
    return value


#: What ``keep_aspect`` accepts wherever images are resized (True means "pad").
KEEP_ASPECT = ["boolean", StrOptions({"pad", "crop"})]


def check_keep_aspect(value, caller):
    """``keep_aspect`` as False, "pad" or "crop"; raises naming ``caller`` otherwise."""
    check_param("keep_aspect", value, KEEP_ASPECT, caller)
    if isinstance(value, (bool, np.bool_)):
        return "pad" if value else False
    return value


def validate_params(estimator):
    """Check the parameters of ``estimator`` against its ``_parameter_constraints``.

    Raises :class:`~sklearn.utils._param_validation.InvalidParameterError`
    (a ``ValueError`` and ``TypeError``) naming the class, the parameter,
    what it accepts and the value given, in scikit-learn's words. Unlike
    scikit-learn, a bool is refused where a number in an interval is asked
    for (``True`` is not a batch size), and :class:`Pair` is understood.
    """
    caller = type(estimator).__name__
    # The declared names are read directly rather than through get_params,
    # whose signature inspection costs more than the checks: the
    # augmentations validate on every image.
    for name, constraints in type(estimator)._parameter_constraints.items():
        if constraints != "no_validation":
            check_param(name, getattr(estimator, name), constraints, caller)
