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


def _policy_loss_config(config: Any) -> Any:
    if config is None:
        raise ValueError("verl passed no actor config to the policy loss: the aggregation needs its global_batch_info")
    return config.policy_loss


def _metrics(prefix: str, stats: RatioStats) -> dict[str, float]:
    summary = stats.summarize(context=f"verl policy loss {prefix!r}")
    names = ("ratio_var", "ratio_mean", "ratio_max", "ratio_outside", "approx_kl")
    return {f"{prefix}/{name}": summary[name] for name in names}


def _aggregate(
    per_token_loss: th.Tensor,
    response_mask: th.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: th.Tensor | None,
) -> th.Tensor:
    if rollout_is_weights is not None:
        per_token_loss = per_token_loss * rollout_is_weights
    return agg_loss(loss_mat=per_token_loss, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info)


@register_policy_loss("r2vpo")
def r2vpo_policy_loss(
    old_log_prob: th.Tensor,
    log_prob: th.Tensor,
    advantages: th.Tensor,
    response_mask: th.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: th.Tensor | None = None,
) -> tuple[th.Tensor, dict[str, Any]]:
    """
    R2VPO's ``-r A + lam (r - 1)^2`` per token; ``lam`` from this process's controller (see :mod:`llm_adapter.verl.dual`).

    Metrics: ``r2vpo/lam`` (the value used), ``r2vpo/penalty``, ``r2vpo/ratio_var``, ``r2vpo/ratio_mean``,
    ``r2vpo/ratio_max``, ``r2vpo/ratio_outside`` (fraction with ``|r - 1| > 0.2``) and ``r2vpo/approx_kl``, each over
    the micro-batch's tokens (verl averages them over micro-batches and ranks).
    """
    settings = _policy_loss_config(config)
    if not isinstance(settings, R2VPOPolicyLossConfig):
        raise TypeError(
            f"loss_mode='r2vpo' needs policy_loss._target_=llm_adapter.verl.R2VPOPolicyLossConfig (R2VPO's settings), "
            f"got a {type(settings).__name__}"
        )
    state = dual_state()
    lam = state.bind(settings).value
    mask = response_mask.bool()
    per_token_loss, stats = r2vpo_objective(log_prob, old_log_prob, advantages, mask=mask, var_coef=lam)
    loss = _aggregate(per_token_loss, mask, loss_agg_mode, config, rollout_is_weights)
    if log_prob.requires_grad and th.is_grad_enabled():
        state.add(stats)  # a training micro-batch: its statistics count for this optimizer step's dual step
    metrics = _metrics("r2vpo", stats)
    metrics["r2vpo/lam"] = lam
    metrics["r2vpo/penalty"] = lam * metrics["r2vpo/ratio_var"]
    return loss, metrics


def _clip_ranges(config: Any) -> dict[str, float]:
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return {"clip_range": float(low), "clip_range_high": float(high)}


def _baseline_loss(name: str, objective: Callable[..., Any], coefs: Callable[[Any], dict[str, float]]) -> PolicyLoss:
    """A verl policy loss for one of the core's comparison objectives, its coefficients read from verl's config."""

    def policy_loss(
        old_log_prob: th.Tensor,
        log_prob: th.Tensor,
        advantages: th.Tensor,
        response_mask: th.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: th.Tensor | None = None,
    ) -> tuple[th.Tensor, dict[str, Any]]:
        _policy_loss_config(config)
        mask = response_mask.bool()
        per_token_loss, stats = objective(log_prob, old_log_prob, advantages, mask=mask, **coefs(config))
        return _aggregate(per_token_loss, mask, loss_agg_mode, config, rollout_is_weights), _metrics(name, stats)

    policy_loss.__name__ = f"{name}_policy_loss"
    policy_loss.__doc__ = f"The core's ``{objective.__name__}`` as verl's ``loss_mode={name!r}``."
    return register_policy_loss(name)(policy_loss)


#: verl ``loss_mode`` names this package registers (verl has none of them), with where their coefficients come from:
#: SPO's ``eps`` is the actor's ``clip_ratio``, GPPO's ranges ``clip_ratio_low`` / ``clip_ratio_high``, TOPR's
#: truncation ``policy_loss.topr_truncation`` (1 without :class:`R2VPOPolicyLossConfig`).
REGISTERED_LOSSES: dict[str, PolicyLoss] = {
    "r2vpo": r2vpo_policy_loss,
    "spo": _baseline_loss("spo", spo_objective, lambda config: {"clip_range": float(config.clip_ratio)}),
    "gppo": _baseline_loss("gppo", gppo_objective, _clip_ranges),
    "topr": _baseline_loss(
        "topr", topr_objective, lambda config: {"truncation": float(getattr(config.policy_loss, "topr_truncation", 1.0))}
    ),
}
