"""Validation of numeric hyperparameters: errors that name the parameter, its value and the allowed range."""

import math
import numbers
from typing import Any


def is_real_number(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy int/float), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value: Any, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """
    Validate a real hyperparameter and return it as a float.

    :param name: the parameter's name, for the error message
    :param value: the value given
    :param allow_zero: accept 0
    :param allow_inf: accept +inf
    :return: ``float(value)``
    :raises ValueError: naming the parameter, its value and the allowed range
    """
    bound = ">= 0" if allow_zero else "> 0"
    kind = "number" if allow_inf else "finite number"
    if not is_real_number(value):
        raise ValueError(f"{name}={value!r} (type {type(value).__name__}) is invalid: expected a {kind} {bound}")
    value = float(value)
    finite_ok = math.isfinite(value) or (allow_inf and value == math.inf)
    if not finite_ok or value < 0.0 or (value == 0.0 and not allow_zero):
        raise ValueError(f"{name}={value!r} is out of range: expected a {kind} {bound}")
    return value
