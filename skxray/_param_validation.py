"""Declarative parameter checks: scikit-learn's ``_parameter_constraints``, imported here only.

The estimators declare what each parameter accepts as data, as scikit-learn's
own estimators do::

    _parameter_constraints = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adam", "adamw", "sgd"})],
    }

and call :func:`validate_params` when ``fit`` runs. Only rules that tie
parameters together (``early_stopping`` needs a validation set) are written
by hand.

``sklearn.utils._param_validation`` is private. It is used rather than
copied because it is large (a dozen constraint types, their error messages
and tests) and has been stable since scikit-learn 1.2; constraints.txt pins
the version that is tested, ``tests/test_architecture.py`` fails if these
names stop importing, and this is the only module that imports them, so a
vendored copy (as imbalanced-learn keeps) would replace one import line.
"""

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    make_constraint,
    validate_parameter_constraints,
)

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "validate_params",
]


def _refuses_bool(constraints):
    """Whether ``constraints`` ask for a number in an interval and accept no bool.

    scikit-learn's :class:`Interval` takes ``True`` as 1; skxray does not.
    """
    if constraints == "no_validation":
        return False
    has_interval = any(isinstance(c, Interval) for c in constraints)
    takes_bool = any((isinstance(c, str) and c == "boolean") or c is bool for c in constraints)
    return has_interval and not takes_bool


def validate_params(estimator):
    """Check ``estimator.get_params(deep=False)`` against its ``_parameter_constraints``.

    Raises :class:`~sklearn.utils._param_validation.InvalidParameterError`
    (a ``ValueError`` and ``TypeError``) naming the class, the parameter,
    what it accepts and the value given. Unlike scikit-learn, a bool is
    refused where a number in an interval is asked for: ``True`` is not a
    batch size.
    """
    constraints = type(estimator)._parameter_constraints
    params = estimator.get_params(deep=False)
    caller = type(estimator).__name__
    for name, value in params.items():
        if (
            isinstance(value, (bool, np.bool_))
            and name in constraints
            and _refuses_bool(constraints[name])
        ):
            accepted = " or ".join(str(make_constraint(c)) for c in constraints[name])
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller} must be {accepted}, not a bool. "
                f"Got {value!r} instead."
            )
    validate_parameter_constraints(constraints, params, caller_name=caller)
