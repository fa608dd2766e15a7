"""
The core's objectives as verl policy losses (``verl.trainer.ppo.core_algos.register_policy_loss``).

Each loss takes verl's arguments, computes the per-token loss with ``sb3_r2vpo.core`` (no formula here), multiplies
it by verl's ``rollout_is_weights`` (its rollout-correction weights, as verl's own losses do) and aggregates it with
verl's ``agg_loss`` and ``config.global_batch_info``, so every ``loss_agg_mode`` and the global normalization across
micro-batches and data-parallel ranks are verl's own.
"""

from collections.abc import Callable
from typing import Any

import torch as th
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss

from llm_adapter.verl.config import R2VPOPolicyLossConfig
from llm_adapter.verl.dual import dual_state
from sb3_r2vpo.core.objectives import gppo_objective, r2vpo_objective, spo_objective, topr_objective
from sb3_r2vpo.core.stats import RatioStats

PolicyLoss = Callable[..., tuple[th.Tensor, dict[str, Any]]]
#: ``(log_prob, old_log_prob, advantages, mask, actor_config) -> (per-token loss, ratio statistics, lam or None)``
PerTokenLoss = Callable[[th.Tensor, th.Tensor, th.Tensor, th.Tensor, Any], tuple[th.Tensor, RatioStats, float | None]]


def _register(name: str, per_token_loss: PerTokenLoss, doc: str) -> PolicyLoss:
    """
    Register a verl policy loss (verl's signature) named ``name`` around a core objective.

    Metrics, over the micro-batch's tokens (verl averages them over micro-batches and ranks): ``<name>/ratio_var``
    (token mean of ``(r - 1)^2``), ``<name>/ratio_mean``, ``<name>/ratio_max``, ``<name>/ratio_outside`` (fraction
    with ``|r - 1| > 0.2``), ``<name>/approx_kl``, and for R2VPO ``r2vpo/lam`` (the value used) and ``r2vpo/penalty``.
    """

    def policy_loss(
        old_log_prob: th.Tensor,
        log_prob: th.Tensor,
        advantages: th.Tensor,
        response_mask: th.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: th.Tensor | None = None,
    ) -> tuple[th.Tensor, dict[str, Any]]:
        if config is None:
            raise ValueError("verl passed no actor config to the policy loss: the aggregation needs its global_batch_info")
        mask = response_mask.bool()
        loss, stats, lam = per_token_loss(log_prob, old_log_prob, advantages, mask, config)
        if rollout_is_weights is not None:
            loss = loss * rollout_is_weights
        aggregated = agg_loss(loss_mat=loss, loss_mask=mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info)
        summary = stats.summarize(context=f"verl policy loss {name!r}")
        metrics: dict[str, Any] = {
            f"{name}/{key}": summary[key] for key in ("ratio_var", "ratio_mean", "ratio_max", "ratio_outside", "approx_kl")
        }
        if lam is not None:
            metrics[f"{name}/lam"] = lam
            metrics[f"{name}/penalty"] = lam * summary["ratio_var"]
        return aggregated, metrics

    policy_loss.__name__ = f"{name}_policy_loss"
    policy_loss.__doc__ = doc
    return register_policy_loss(name)(policy_loss)


def _r2vpo(
    log_prob: th.Tensor, old_log_prob: th.Tensor, advantages: th.Tensor, mask: th.Tensor, config: Any
) -> tuple[th.Tensor, RatioStats, float | None]:
    settings = config.policy_loss
    if not isinstance(settings, R2VPOPolicyLossConfig):
        raise TypeError(
            f"loss_mode='r2vpo' needs policy_loss._target_=llm_adapter.verl.R2VPOPolicyLossConfig (R2VPO's settings), "
            f"got a {type(settings).__name__}"
        )
    state = dual_state()
    lam = state.bind(settings).value
    per_token_loss, stats = r2vpo_objective(log_prob, old_log_prob, advantages, mask=mask, var_coef=lam)
    if log_prob.requires_grad and th.is_grad_enabled():
        state.add(stats)  # a training micro-batch: its statistics count for this optimizer step's dual step
    return per_token_loss, stats, lam


def _clip_ranges(config: Any) -> dict[str, float]:
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return {"clip_range": float(low), "clip_range_high": float(high)}


def _baseline(objective: Callable[..., Any], coefficients: Callable[[Any], dict[str, float]]) -> PerTokenLoss:
    """A comparison objective of the core, its coefficients read from verl's actor config."""

    def per_token_loss(
        log_prob: th.Tensor, old_log_prob: th.Tensor, advantages: th.Tensor, mask: th.Tensor, config: Any
    ) -> tuple[th.Tensor, RatioStats, float | None]:
        loss, stats = objective(log_prob, old_log_prob, advantages, mask=mask, **coefficients(config))
        return loss, stats, None

    return per_token_loss


#: verl ``loss_mode`` names this package registers (verl has none of them), with where their coefficients come from:
#: SPO's ``eps`` is the actor's ``clip_ratio``, GPPO's ranges ``clip_ratio_low`` / ``clip_ratio_high``, TOPR's
#: truncation ``policy_loss.topr_truncation`` (1 without :class:`R2VPOPolicyLossConfig`).
REGISTERED_LOSSES: dict[str, PolicyLoss] = {
    "r2vpo": _register(
        "r2vpo",
        _r2vpo,
        "R2VPO's ``-r A + lam (r - 1)^2`` per token; ``lam`` from this process's controller (:mod:`llm_adapter.verl.dual`).",
    ),
    "spo": _register(
        "spo",
        _baseline(spo_objective, lambda config: {"clip_range": float(config.clip_ratio)}),
        "SPO's fixed quadratic penalty with weight ``|A| / (2 eps)``; ``eps`` is the actor's ``clip_ratio``.",
    ),
    "gppo": _register(
        "gppo",
        _baseline(gppo_objective, _clip_ranges),
        "GPPO's gradient-preserving clip; the ranges are the actor's ``clip_ratio_low`` / ``clip_ratio_high``.",
    ),
    "topr": _register(
        "topr",
        _baseline(topr_objective, lambda config: {"truncation": float(getattr(config.policy_loss, "topr_truncation", 1.0))}),
        "TOPR; the truncation is ``policy_loss.topr_truncation`` with :class:`R2VPOPolicyLossConfig`, else 1.",
    ),
}
