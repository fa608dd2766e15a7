"""The importance ratio ``r = pi_theta(a|s) / mu(a|s)`` and the errors raised when it is not finite."""

import math
from typing import NamedTuple

import torch as th


class NonFiniteRatioError(FloatingPointError, ValueError):
    """
    Raised when an importance ratio, a ratio statistic, a loss or a gradient norm is NaN or infinite.

    The message carries the context (where in training it happened) and the offending statistics,
    so a diverging run stops with an explanation instead of silently writing NaN into the weights.
    It is also a ``ValueError``, like the error torch's distributions raise on NaN parameters, so code
    that handles diverging runs that way (rl_zoo3's Optuna objective prunes such trials) handles it too.
    """


def log_importance_ratio(log_prob: th.Tensor, behavior_log_prob: th.Tensor) -> th.Tensor:
    """
    ``log r = log pi_theta(a|s) - log mu(a|s)``, computed in at least float32.

    Half-precision log-probabilities are upcast first: a bf16 difference of two log-probs of
    magnitude ~10 has an absolute error of ~0.03, which would swamp the ratio variance.

    :param log_prob: log-probabilities of the taken actions under the current policy (with grad)
    :param behavior_log_prob: log-probabilities under the behavior policy that generated the data
    :return: the log-ratio, same shape as the inputs
    """
    if log_prob.shape != behavior_log_prob.shape:
        raise ValueError(
            f"log_prob and behavior_log_prob must have the same shape, got {tuple(log_prob.shape)} "
            f"and {tuple(behavior_log_prob.shape)}"
        )
    if log_prob.dtype in (th.float16, th.bfloat16):
        log_prob = log_prob.float()
    if behavior_log_prob.dtype != log_prob.dtype:
        behavior_log_prob = behavior_log_prob.to(log_prob.dtype)
    return log_prob - behavior_log_prob


class ImportanceRatio(NamedTuple):
    """The importance ratio in the three forms the objectives and statistics need."""

    ratio: th.Tensor
    minus_one: th.Tensor
    log: th.Tensor


def importance_ratio(log_prob: th.Tensor, behavior_log_prob: th.Tensor) -> ImportanceRatio:
    """
    The importance ratio, its deviation from one and its logarithm.

    ``r - 1`` is computed as ``expm1(log r)``: near ``r = 1`` (the usual on-policy regime) this keeps
    full relative precision in the deviation, which the variance penalty squares. The log-ratio is kept
    because far below 1 the ratio underflows to 0 while ``log r`` stays finite (and the statistics need it).

    :param log_prob: log-probabilities under the current policy
    :param behavior_log_prob: log-probabilities under the behavior policy
    :return: ``(ratio, minus_one, log)``
    """
    log_ratio = log_importance_ratio(log_prob, behavior_log_prob)
    ratio_minus_one = th.expm1(log_ratio)
    return ImportanceRatio(ratio_minus_one + 1.0, ratio_minus_one, log_ratio)


def max_finite_log_ratio(dtype: th.dtype) -> float:
    """
    Largest log-ratio whose squared deviation ``(r - 1)^2`` is still finite in ``dtype``.

    :param dtype: floating point dtype the penalty is computed in
    :return: ``log(sqrt(finfo(dtype).max))``
    """
    return 0.5 * math.log(th.finfo(dtype).max)
