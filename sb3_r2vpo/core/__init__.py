"""
Framework-agnostic R2VPO math (torch only): the importance ratio, the objectives, ratio statistics,
aggregation, the dual controller for ``lam``, the f-divergence scale table and R2VPO-OFF's replay sampling order.
"""

from sb3_r2vpo.core.aggregation import AGGREGATIONS, aggregate_loss, aggregation_weights
from sb3_r2vpo.core.divergences import F_DIVERGENCES, FDivergence, alpha_divergence, f_divergence, target_var_from_divergence
from sb3_r2vpo.core.dual import (
    DEFAULT_AUTO_INIT,
    VAR_COEF_UPDATES,
    VarCoefController,
    check_var_coef_update,
    parse_var_coef,
)
from sb3_r2vpo.core.objectives import (
    OBJECTIVES,
    clip_objective,
    get_objective,
    gppo_objective,
    r2vpo_objective,
    spo_objective,
    topr_objective,
)
from sb3_r2vpo.core.ratio import (
    ImportanceRatio,
    NonFiniteRatioError,
    importance_ratio,
    log_importance_ratio,
    max_finite_log_ratio,
)
from sb3_r2vpo.core.replay_sampling import REPLAY_SAMPLINGS, check_replay_sampling, permutation_passes
from sb3_r2vpo.core.stats import DEFAULT_RATIO_BAND, RatioStats, grouped_second_moment
from sb3_r2vpo.core.validation import check_positive

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_AUTO_INIT",
    "DEFAULT_RATIO_BAND",
    "F_DIVERGENCES",
    "OBJECTIVES",
    "REPLAY_SAMPLINGS",
    "VAR_COEF_UPDATES",
    "FDivergence",
    "ImportanceRatio",
    "NonFiniteRatioError",
    "RatioStats",
    "VarCoefController",
    "aggregate_loss",
    "aggregation_weights",
    "alpha_divergence",
    "check_positive",
    "check_replay_sampling",
    "check_var_coef_update",
    "clip_objective",
    "f_divergence",
    "get_objective",
    "gppo_objective",
    "grouped_second_moment",
    "importance_ratio",
    "log_importance_ratio",
    "max_finite_log_ratio",
    "parse_var_coef",
    "permutation_passes",
    "r2vpo_objective",
    "spo_objective",
    "target_var_from_divergence",
    "topr_objective",
]
