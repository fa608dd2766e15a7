"""R2VPO-OFF's FIFO replay of the last ``capacity`` generations, sampled uniformly (METHOD.md, section 5)."""

import math
from collections import deque
from typing import Any

import torch as th

from llm_adapter.rollouts import RolloutBatch
from sb3_r2vpo.core.validation import check_int, check_positive


class RolloutReplay:
    """
    The completions of the last ``capacity`` iterations, each kept with the log-probs of the policy that sampled it.

    Each training phase draws ``round(utd_ratio * n_fresh)`` completions uniformly from everything stored: passes
    over a random permutation of the stored completions, without replacement inside a pass. With ``capacity=1``
    this is the on-policy loop, and ``utd_ratio`` plays the role of PPO's ``n_epochs``.

    :param capacity: number of generations kept (>= 1; the paper uses 4)
    :param utd_ratio: completions drawn per fresh completion (> 0; the paper uses 2)
    """

    def __init__(self, capacity: int = 4, utd_ratio: float = 2.0) -> None:
        self.capacity = check_int("replay_capacity", capacity, minimum=1)
        self.utd_ratio = check_positive("utd_ratio", utd_ratio)
        self._batches: deque[RolloutBatch] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches)

    @property
    def num_generations(self) -> int:
        """Number of generations stored."""
        return len(self._batches)

    def add(self, batch: RolloutBatch) -> None:
        """
        Store a fresh generation, evicting the oldest when full.

        :param batch: scored completions (rewards and advantages set)
        """
        self._batches.append(batch)

    def contents(self) -> RolloutBatch:
        """Everything stored, oldest generation first."""
        if not self._batches:
            raise ValueError("The replay is empty: add a generation first")
        return RolloutBatch.concat(list(self._batches))

    def num_draws(self) -> int:
        """Completions drawn for this training phase: ``round(utd_ratio * size of the newest generation)``, >= 1."""
        return max(1, round(self.utd_ratio * len(self._batches[-1])))

    def draw_indices(self, generator: th.Generator) -> th.Tensor:
        """
        Indices into :meth:`contents` for one training phase, uniform over all stored completions.

        :param generator: CPU random generator (part of the checkpointed state)
        :return: ``[num_draws()]`` indices
        """
        size, wanted = len(self), self.num_draws()
        passes = [th.randperm(size, generator=generator) for _ in range(math.ceil(wanted / size))]
        return th.cat(passes)[:wanted]

    def state_dict(self) -> dict[str, Any]:
        """The stored generations (CPU tensors) and settings, for checkpoints."""
        return {
            "capacity": self.capacity,
            "utd_ratio": self.utd_ratio,
            "batches": [b.state_dict() for b in self._batches],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """
        Restore a state from :meth:`state_dict` (capacity and UTD ratio must match the configuration).

        :param state: the saved state
        """
        if state["capacity"] != self.capacity or state["utd_ratio"] != self.utd_ratio:
            raise ValueError(
                f"Checkpointed replay has replay_capacity={state['capacity']}, utd_ratio={state['utd_ratio']} but the "
                f"trainer is configured with {self.capacity}, {self.utd_ratio}"
            )
        self._batches = deque((RolloutBatch.from_state_dict(b) for b in state["batches"]), maxlen=self.capacity)
