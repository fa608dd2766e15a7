"""R2VPO-OFF's FIFO replay of the last ``capacity`` generations (METHOD.md, section 5)."""

from collections import deque
from typing import Any

import torch as th

from llm_adapter.rollouts import RolloutBatch
from sb3_r2vpo.core.replay_sampling import check_replay_sampling, permutation_passes
from sb3_r2vpo.core.validation import check_int, check_positive


class RolloutReplay:
    """
    The completions of the last ``capacity`` iterations, each kept with the log-probs of the policy that sampled it.

    Each training phase draws ``round(utd_ratio * n_fresh)`` completions in passes over random permutations, without
    replacement inside a pass: with ``"uniform"`` sampling every pass is over everything stored (the paper's
    Algorithm 2), with ``"newest_first"`` the first pass is over the newest generation only, the SB3 replay's two
    schemes (:mod:`sb3_r2vpo.core.replay_sampling`). With ``capacity=1`` this is the on-policy loop, and
    ``utd_ratio`` plays the role of PPO's ``n_epochs``.

    :param capacity: number of generations kept (>= 1; the paper uses 4)
    :param utd_ratio: completions drawn per fresh completion (> 0; the paper uses 2)
    :param sampling: ``"uniform"`` or ``"newest_first"``
    """

    def __init__(self, capacity: int = 4, utd_ratio: float = 2.0, sampling: str = "uniform") -> None:
        self.capacity = check_int("replay_capacity", capacity, minimum=1)
        self.utd_ratio = check_positive("utd_ratio", utd_ratio)
        self.sampling = check_replay_sampling(sampling)
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
        Indices into :meth:`contents` for one training phase, in the order of the replay's sampling scheme.

        :param generator: CPU random generator (part of the checkpointed state)
        :return: ``[num_draws()]`` indices
        """
        size, n_newest = len(self), len(self._batches[-1])
        passes = []
        for newest_only, take in permutation_passes(self.num_draws(), size, sampling=self.sampling, n_newest=n_newest):
            # contents() puts the newest generation last.
            offset, length = (size - n_newest, n_newest) if newest_only else (0, size)
            passes.append(offset + th.randperm(length, generator=generator)[:take])
        return th.cat(passes)

    def state_dict(self) -> dict[str, Any]:
        """The stored generations (CPU tensors) and settings, for checkpoints."""
        return {
            "capacity": self.capacity,
            "utd_ratio": self.utd_ratio,
            "sampling": self.sampling,
            "batches": [b.state_dict() for b in self._batches],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """
        Restore a state from :meth:`state_dict` (capacity, UTD ratio and sampling must match the configuration).

        :param state: the saved state
        """
        saved = (state["capacity"], state["utd_ratio"], state.get("sampling", "uniform"))  # older checkpoints: uniform
        if saved != (self.capacity, self.utd_ratio, self.sampling):
            raise ValueError(
                f"Checkpointed replay has replay_capacity={saved[0]}, utd_ratio={saved[1]}, replay_sampling={saved[2]!r} "
                f"but the trainer is configured with {self.capacity}, {self.utd_ratio}, {self.sampling!r}"
            )
        self._batches = deque((RolloutBatch.from_state_dict(b) for b in state["batches"]), maxlen=self.capacity)
