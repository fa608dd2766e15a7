"""
R2VPO inside Hugging Face TRL: :class:`R2VPOConfig` (a ``GRPOConfig``) and :class:`R2VPOTrainer` (a
``GRPOTrainer`` whose loss is the shared core's R2VPO objective). Needs the ``trl`` extra.
"""

try:
    import trl  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("llm_adapter.trl needs TRL: install the extra with `pip install 'sb3-r2vpo[llm,trl]'`") from error

from llm_adapter.trl.aggregation import aggregate_like_trl
from llm_adapter.trl.config import AGGREGATING_LOSS_TYPES, R2VPOConfig
from llm_adapter.trl.trainer import R2VPOTrainer, ratio_is_always_one

__all__ = ["AGGREGATING_LOSS_TYPES", "R2VPOConfig", "R2VPOTrainer", "aggregate_like_trl", "ratio_is_always_one"]
