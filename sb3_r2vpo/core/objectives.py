"""
Policy objectives with one signature, selected by name.

Every objective is a pure function

    objective(log_prob, behavior_log_prob, advantages, *, mask=None, **coefs) -> (per_sample_loss, RatioStats)

returning the per-sample (or per-token) loss to *minimize*, before aggregation (see
:mod:`sb3_r2vpo.core.aggregation`), and the ratio statistics of the batch.
"""

from collections.abc import Callable
from typing import Protocol

import torch as th

from sb3_r2vpo.core.ratio import importance_ratio
from sb3_r2vpo.core.stats import DEFAULT_RATIO_BAND, RatioStats


class Objective(Protocol):
    """The signature every policy objective follows."""

    def __call__(
        self,
        log_prob: th.Tensor,
        behavior_log_prob: th.Tensor,
        advantages: th.Tensor,
        *,
        mask: th.Tensor | None = None,
        **coefs: float,
    ) -> tuple[th.Tensor, RatioStats]: ...


def r2vpo_objective(
    log_prob: th.Tensor,
    behavior_log_prob: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    var_coef: float | th.Tensor = 1.0,
    band: float = DEFAULT_RATIO_BAND,
) -> tuple[th.Tensor, RatioStats]:
    """
    R2VPO's per-sample loss ``-r A + lam (r - 1)^2`` (METHOD.md, section 1): the one place the penalty is written.

    Its gradient is ``-grad(r) (A - 2 lam (r - 1))``: plain policy gradient near ``r = 1``, smoothly
    attenuated (never zeroed) as the ratio moves away from 1.

    :param log_prob: log-probabilities of the taken actions under the current policy
    :param behavior_log_prob: log-probabilities under the policy that generated the data
    :param advantages: advantage estimates (same shape)
    :param mask: optional mask of valid samples/tokens (used for the statistics only; aggregation masks the loss)
    :param var_coef: ``lam``, the weight of the ratio-variance penalty
    :param band: band around 1 for the ``ratio_outside`` statistic
    :return: ``(per_sample_loss, ratio_stats)``
    """
    ratio = importance_ratio(log_prob, behavior_log_prob)
    squared_deviation = ratio.minus_one.square()
    per_sample_loss = var_coef * squared_deviation - ratio.ratio * advantages
    stats = RatioStats.from_ratio(
        ratio.minus_one, log_ratio=ratio.log, squared_deviation=squared_deviation, mask=mask, band=band
    )
    return per_sample_loss, stats


def clip_objective(
    log_prob: th.Tensor,
    behavior_log_prob: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    band: float = DEFAULT_RATIO_BAND,
) -> tuple[th.Tensor, RatioStats]:
    """
    PPO/GRPO's clipped surrogate ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``.

    With ``clip_range_high=None`` the clip is symmetric (PPO, GRPO); a larger upper range is DAPO's
    "clip-higher" (GRPO-CH, 0.2/0.28).

    :param log_prob: log-probabilities under the current policy
    :param behavior_log_prob: log-probabilities under the behavior policy
    :param advantages: advantage estimates
    :param mask: optional mask of valid samples/tokens (statistics only)
    :param clip_range: lower clip range ``eps_low`` (and upper one if ``clip_range_high`` is None)
    :param clip_range_high: upper clip range ``eps_high``
    :param band: band for the ``ratio_outside`` statistic
    :return: ``(per_sample_loss, ratio_stats)``
    """
    high = clip_range if clip_range_high is None else clip_range_high
    ratio = importance_ratio(log_prob, behavior_log_prob)
    surrogate = ratio.ratio * advantages
    clipped = th.clamp(ratio.ratio, 1.0 - clip_range, 1.0 + high) * advantages
    stats = RatioStats.from_ratio(ratio.minus_one, log_ratio=ratio.log, mask=mask, band=band)
    return -th.min(surrogate, clipped), stats


def gppo_objective(
    log_prob: th.Tensor,
    behavior_log_prob: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    band: float = DEFAULT_RATIO_BAND,
) -> tuple[th.Tensor, RatioStats]:
    """
    GPPO's gradient-preserving clip (Su et al., 2025): PPO's clipped value, but a bounded, non-zero gradient.

    Where the clip binds, the clipped ratio ``1 +- eps`` is written as ``(1 +- eps) * r / sg(r)``: the loss value is
    PPO's, and the gradient is ``-(1 +- eps) A grad(log pi)`` instead of zero.

    :param log_prob: log-probabilities under the current policy
    :param behavior_log_prob: log-probabilities under the behavior policy
    :param advantages: advantage estimates
    :param mask: optional mask of valid samples/tokens (statistics only)
    :param clip_range: lower clip range ``eps_low`` (and upper one if ``clip_range_high`` is None)
    :param clip_range_high: upper clip range ``eps_high``
    :param band: band for the ``ratio_outside`` statistic
    :return: ``(per_sample_loss, ratio_stats)``
    """
    high = clip_range if clip_range_high is None else clip_range_high
    ratio = importance_ratio(log_prob, behavior_log_prob)
    ratio_over_detached = ratio.ratio / ratio.ratio.detach().clamp(min=th.finfo(ratio.ratio.dtype).tiny)
    clipped_ratio = th.where(
        ratio.ratio > 1.0 + high,
        (1.0 + high) * ratio_over_detached,
        th.where(ratio.ratio < 1.0 - clip_range, (1.0 - clip_range) * ratio_over_detached, ratio.ratio),
    )
    stats = RatioStats.from_ratio(ratio.minus_one, log_ratio=ratio.log, mask=mask, band=band)
    return -th.min(ratio.ratio * advantages, clipped_ratio * advantages), stats


def topr_objective(
    log_prob: th.Tensor,
    behavior_log_prob: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    truncation: float = 1.0,
    band: float = DEFAULT_RATIO_BAND,
) -> tuple[th.Tensor, RatioStats]:
    """
    TOPR, tapered off-policy REINFORCE (Le Roux et al., 2025).

    Samples with ``A >= 0`` get the plain REINFORCE gradient ``-A grad(log pi)`` (no importance weight);
    samples with ``A < 0`` are weighted by the truncated ratio ``sg(min(r, truncation))``. Written with
    ``r / sg(r)`` (whose gradient is ``grad(log pi)``) so that the loss value is ``-A`` (resp.
    ``-min(r, truncation) A``), on the same scale as the other objectives.

    :param log_prob: log-probabilities under the current policy
    :param behavior_log_prob: log-probabilities under the behavior policy
    :param advantages: advantage estimates
    :param mask: optional mask of valid samples/tokens (statistics only)
    :param truncation: upper truncation of the importance weight of negative samples (the paper's 1)
    :param band: band for the ``ratio_outside`` statistic
    :return: ``(per_sample_loss, ratio_stats)``
    """
    ratio = importance_ratio(log_prob, behavior_log_prob)
    detached = ratio.ratio.detach()
    score = ratio.ratio / detached.clamp(min=th.finfo(detached.dtype).tiny)
    weight = th.where(advantages >= 0, th.ones_like(detached), detached.clamp(max=truncation))
    stats = RatioStats.from_ratio(ratio.minus_one, log_ratio=ratio.log, mask=mask, band=band)
    return -weight * score * advantages, stats


def spo_objective(
    log_prob: th.Tensor,
    behavior_log_prob: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    clip_range: float = 0.2,
    band: float = DEFAULT_RATIO_BAND,
) -> tuple[th.Tensor, RatioStats]:
    """
    SPO, simple policy optimization (Xie et al., 2024): ``-(r A - |A| / (2 eps) (r - 1)^2)``.

    A quadratic penalty like R2VPO's, but with a per-sample weight ``|A| / (2 eps)`` fixed by the clip range
    instead of a tuned ``lam``: its optimum in ``r`` sits exactly at the clip boundary ``1 +- eps``.

    :param log_prob: log-probabilities under the current policy
    :param behavior_log_prob: log-probabilities under the behavior policy
    :param advantages: advantage estimates
    :param mask: optional mask of valid samples/tokens (statistics only)
    :param clip_range: ``eps``
    :param band: band for the ``ratio_outside`` statistic
    :return: ``(per_sample_loss, ratio_stats)``
    """
    ratio = importance_ratio(log_prob, behavior_log_prob)
    squared_deviation = ratio.minus_one.square()
    per_sample_loss = advantages.abs() / (2.0 * clip_range) * squared_deviation - ratio.ratio * advantages
    stats = RatioStats.from_ratio(
        ratio.minus_one, log_ratio=ratio.log, squared_deviation=squared_deviation, mask=mask, band=band
    )
    return per_sample_loss, stats


OBJECTIVES: dict[str, Callable[..., tuple[th.Tensor, RatioStats]]] = {
    "r2vpo": r2vpo_objective,
    "clip": clip_objective,
    "gppo": gppo_objective,
    "topr": topr_objective,
    "spo": spo_objective,
}


def get_objective(name: str) -> Callable[..., tuple[th.Tensor, RatioStats]]:
    """
    Look up an objective by name.

    :param name: one of :data:`OBJECTIVES`
    :return: the objective function
    """
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"Unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
