"""The one interface every rollout engine follows."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from torch import nn

from llm_adapter.rollouts import RolloutBatch


def eos_token_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """
    The ids that end a completion: the model's ``generation_config.eos_token_id`` (one or several) and the tokenizer's.

    :param model: a ``transformers`` causal LM
    :param tokenizer: its tokenizer
    :return: the ids
    """
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("Neither the model's generation_config nor the tokenizer defines an eos_token_id")
    return ids


class RolloutEngine(ABC):
    """
    Samples ``group_size`` completions per prompt and reports, for every sampled token, its log-probability under
    the sampling distribution: ``log_softmax(logits / temperature)`` with no top-k/top-p truncation, the quantity
    the trainer recomputes, so that the importance ratio is 1 up to numerics for fresh data.
    """

    @abstractmethod
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
        """
        Sample completions.

        :param prompt_ids: token ids of every prompt
        :param group_size: completions per prompt (one group)
        :param max_new_tokens: length limit of a completion
        :param temperature: sampling temperature (> 0)
        :param policy_version: version of the weights the engine holds (stored with every row)
        :param group_offset: group id of the first prompt (the rest follow consecutively)
        :return: one row per completion, prompts in order, ``group_size`` consecutive rows per prompt
        """

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
        """
        Sample completions for evaluation, with nucleus/top-k truncation allowed and no log-probs.

        :param prompt_ids: token ids of every prompt
        :param num_samples: completions per prompt
        :param max_new_tokens: length limit of a completion
        :param temperature: sampling temperature (> 0)
        :param top_p: nucleus sampling mass (1: off)
        :param top_k: top-k truncation (0: off)
        :return: the completions' token ids, ``num_samples`` consecutive ones per prompt, prompts in order
        """
        raise NotImplementedError(f"{type(self).__name__} cannot sample evaluation completions")

    def update_weights(self, model: nn.Module) -> None:  # noqa: B027 (optional hook; engines sharing the model need nothing)
        """
        Load the trainer's current weights into the engine (after each update).

        :param model: the trained model
        """

    def sleep(self) -> None:  # noqa: B027 (optional hook)
        """Release the engine's accelerator memory while the trainer runs (when supported)."""

    def wake_up(self) -> None:  # noqa: B027 (optional hook)
        """Take back the memory released by :meth:`sleep`."""
