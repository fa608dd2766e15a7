"""Sampling with ``transformers``' ``generate``, sharing the trainer's model (no weight copy)."""

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch as th
from torch import nn

from llm_adapter.engines.base import RolloutEngine, eos_token_ids
from llm_adapter.logprobs import rollout_log_probs
from llm_adapter.rollouts import RolloutBatch


class TransformersEngine(RolloutEngine):
    """
    Pure-sampling ``generate`` (temperature only: ``top_k=0``, ``top_p=1``, no repetition penalty or any other
    logits processor), whatever the model's ``generation_config`` says; the log-probs are
    ``log_softmax(logits / temperature)`` of the sampled tokens, the same meaning as vLLM's ``processed_logprobs``
    under the same settings.

    ``generate`` fills every setting it is not given from the model's own ``generation_config`` (an instruct model's
    ``repetition_penalty``, ``top_k``, ...), so while sampling the model's ``generation_config`` is replaced by the
    neutral one, and restored afterwards. Generation runs in the trainer's precision (``precision``, its autocast),
    and the sampled tokens' log-probs are then computed the way the trainer computes them (final hidden states and
    the chunked log-softmax, :func:`llm_adapter.logprobs.rollout_log_probs`), instead of keeping ``[batch, vocab]``
    float32 logits per generated token.

    :param model: the trained causal LM (shared: the engine always samples from the current weights)
    :param tokenizer: its tokenizer (``pad_token_id`` and ``eos_token_id`` are used)
    :param precision: the context generation and scoring run in (the trainer's autocast; none by default)
    :param logprob_chunk_size: tokens whose logits exist at once when scoring
    :param micro_batch_size: completions per scoring forward pass (default: all)
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        precision: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        logprob_chunk_size: int = 1024,
        micro_batch_size: int | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad_token_id: set tokenizer.pad_token before training")
        self.model: Any = model  # a transformers PreTrainedModel (generate, generation_config)
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self.precision = precision
        self.logprob_chunk_size = logprob_chunk_size
        self.micro_batch_size = micro_batch_size

    @th.no_grad()
    def _sample(
        self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float, top_k: int
    ) -> tuple[list[list[int]], list[bool]]:
        """Sample one completion per prompt row; returns the completions (cut after EOS) and which were truncated."""
        from transformers import GenerationConfig

        pad = int(self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = th.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = th.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        neutral = GenerationConfig(
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=pad,
        )
        was_training, model_defaults = self.model.training, self.model.generation_config
        self.model.eval()
        self.model.generation_config = neutral  # nothing unset can be filled from the model's own defaults
        try:
            with self.precision():
                sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=neutral)
        finally:
            self.model.generation_config = model_defaults
            self.model.train(was_training)
        completions, truncated = [], []
        for tokens in sequences[:, width:].tolist():
            end = next((i + 1 for i, token in enumerate(tokens) if token in self.eos_token_ids), None)
            truncated.append(end is None)
            completions.append(tokens[: len(tokens) if end is None else end])
        return completions, truncated

    @th.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        policy_version: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        prompts = [list(p) for p in prompt_ids for _ in range(group_size)]
        completions, truncated = self._sample(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0
        )
        batch = RolloutBatch.from_sequences(
            prompts,
            completions,
            [[0.0] * len(tokens) for tokens in completions],
            group_ids=[group_offset + i // group_size for i in range(len(prompts))],
            truncated=truncated,
            policy_version=policy_version,
            pad_token_id=int(self.tokenizer.pad_token_id),
        )
        log_probs = rollout_log_probs(
            self.model,
            batch,
            temperature=temperature,
            chunk_size=self.logprob_chunk_size,
            micro_batch_size=self.micro_batch_size,
            precision=self.precision,
        )
        return batch.with_behavior_log_probs(log_probs)

    def sample_completions(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[list[int]]:
        prompts = [list(p) for p in prompt_ids for _ in range(num_samples)]
        completions, _ = self._sample(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k
        )
        return completions
