"""Validation of numeric hyperparameters: errors that name the parameter, its value and the allowed range."""

import math
import numbers
from collections.abc import Callable
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


def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer hyperparameter (an integral float is accepted) that must be ``>= minimum``."""
    if isinstance(value, bool) or (not isinstance(value, int) and not (is_real_number(value) and float(value).is_integer())):
        raise ValueError(f"{name}={value!r} (type {type(value).__name__}) is invalid: expected an integer >= {minimum}")
    if int(value) < minimum:
        raise ValueError(f"{name}={value!r} is out of range: expected an integer >= {minimum}")
    return int(value)


def check_unit_interval(name: str, value: Any) -> float:
    """A number in ``[0, 1]`` (discount factors, GAE's lambda)."""
    if not is_real_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is out of range: expected a number in [0, 1]")
    return float(value)


SCHEDULE_HINT = (
    "or a schedule: a callable of progress_remaining (from 1 to 0), e.g. "
    "stable_baselines3.common.utils.LinearSchedule(start, end, 1.0); strings such as 'lin_0.02' are RL Zoo's yml "
    "syntax, which only rl_zoo3 (and r2vpo-zoo) parse"
)


def _check_not_a_string(name: str, value: Any, bound: str) -> None:
    if isinstance(value, str):
        raise ValueError(f"{name}={value!r} (type str) is invalid: expected a finite number {bound}, {SCHEDULE_HINT}")


def check_schedule(name: str, value: Any) -> None:
    """A schedule (any callable) or a finite number ``> 0``."""
    if not callable(value):
        _check_not_a_string(name, value, "> 0")
        check_positive(name, value)


def check_schedule_value(
    name: str, schedule: float | Callable[[float], float], progress_remaining: float, *, allow_zero: bool
) -> float:
    """
    The value of a float-or-schedule hyperparameter at ``progress_remaining``, validated where it is used: a
    schedule that turns negative, NaN or infinite part-way through training raises then (it may end at 0 when
    ``allow_zero``).
    """
    if not callable(schedule):
        _check_not_a_string(name, schedule, ">= 0" if allow_zero else "> 0")
        return check_positive(name, schedule, allow_zero=allow_zero)
    value = schedule(progress_remaining)
    return check_positive(f"{name} (at progress_remaining={progress_remaining:.3g})", value, allow_zero=allow_zero)
