"""Sampling with ``transformers``' ``generate``, sharing the trainer's model (no weight copy)."""

from collections.abc import Sequence
from typing import Any

import torch as th
from torch import nn

from llm_adapter.engines.base import RolloutEngine
from llm_adapter.rollouts import RolloutBatch


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("Neither the model's generation_config nor the tokenizer defines an eos_token_id")
    return ids


class TransformersEngine(RolloutEngine):
    """
    Pure-sampling ``generate`` (temperature only: ``top_k=0``, ``top_p=1``, no repetition penalty), whatever the
    model's ``generation_config`` says; the log-probs are ``log_softmax(raw_logits / temperature)`` of the sampled
    tokens, the same meaning as vLLM's ``processed_logprobs`` under the same settings.

    :param model: the trained causal LM (shared: the engine always samples from the current weights)
    :param tokenizer: its tokenizer (``pad_token_id`` and ``eos_token_id`` are used)
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad_token_id: set tokenizer.pad_token before training")
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = _eos_ids(model, tokenizer)

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
        from transformers import GenerationConfig

        pad = int(self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        prompts = [list(p) for p in prompt_ids for _ in range(group_size)]
        width = max(len(p) for p in prompts)
        input_ids = th.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = th.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        config = GenerationConfig(
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)  # type: ignore[operator]
        finally:
            self.model.train(was_training)
        generated = output.sequences[:, width:]
        log_probs = th.stack(
            [
                th.log_softmax(step_logits.float() / temperature, dim=-1).gather(1, generated[:, step, None]).squeeze(1)
                for step, step_logits in enumerate(output.logits)
            ],
            dim=1,
        )
        completions, completion_log_probs, truncated = [], [], []
        for tokens, values in zip(generated.tolist(), log_probs.tolist(), strict=True):
            end = next((i + 1 for i, token in enumerate(tokens) if token in self.eos_token_ids), None)
            truncated.append(end is None)
            end = len(tokens) if end is None else end
            completions.append(tokens[:end])
            completion_log_probs.append(values[:end])
        return RolloutBatch.from_sequences(
            prompts,
            completions,
            completion_log_probs,
            group_ids=[group_offset + i // group_size for i in range(len(prompts))],
            truncated=truncated,
            policy_version=policy_version,
            pad_token_id=pad,
        )
