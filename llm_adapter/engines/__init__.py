"""Rollout engines with one interface: ``TransformersEngine`` (``generate``) and ``VLLMEngine`` (in-process vLLM)."""

from llm_adapter.engines.base import RolloutEngine
from llm_adapter.engines.transformers_engine import TransformersEngine
from llm_adapter.engines.vllm_engine import VLLMEngine, vllm_sampling_kwargs

__all__ = ["RolloutEngine", "TransformersEngine", "VLLMEngine", "vllm_sampling_kwargs"]
