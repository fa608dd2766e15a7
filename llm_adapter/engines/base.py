"""The one interface every rollout engine follows."""

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import nn

from llm_adapter.rollouts import RolloutBatch


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

    def update_weights(self, model: nn.Module) -> None:  # noqa: B027 (optional hook; engines sharing the model need nothing)
        """
        Load the trainer's current weights into the engine (after each update).

        :param model: the trained model
        """

    def sleep(self) -> None:  # noqa: B027 (optional hook)
        """Release the engine's accelerator memory while the trainer runs (when supported)."""

    def wake_up(self) -> None:  # noqa: B027 (optional hook)
        """Take back the memory released by :meth:`sleep`."""
