"""
GRPO-style LLM training with R2VPO: rollouts from vLLM or ``transformers``' ``generate`` mapped token by token into
the shared loss core (``sb3_r2vpo.core``). Imports ``transformers`` only where models are loaded, never vLLM here.
"""

from llm_adapter.advantages import GroupAdvantages, group_relative_advantages
from llm_adapter.config import TrainConfig
from llm_adapter.logprobs import chunked_token_log_probs, naive_token_log_probs
from llm_adapter.objectives import LLM_OBJECTIVES
from llm_adapter.replay import RolloutReplay
from llm_adapter.rewards import math_answer_reward, resolve_reward
from llm_adapter.rollouts import RolloutBatch
from llm_adapter.vllm_outputs import rollout_batch_from_vllm, sampled_token_log_probs

__all__ = [
    "LLM_OBJECTIVES",
    "GroupAdvantages",
    "RolloutBatch",
    "RolloutReplay",
    "TrainConfig",
    "chunked_token_log_probs",
    "group_relative_advantages",
    "math_answer_reward",
    "naive_token_log_probs",
    "resolve_reward",
    "rollout_batch_from_vllm",
    "sampled_token_log_probs",
]
