"""``RolloutBatch``: generated completions as padded tensors, ready for the loss core."""

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch as th


def _pad_rows(rows: Sequence[Sequence[float]], *, width: int, value: float, dtype: th.dtype, left: bool) -> th.Tensor:
    out = th.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        if len(row) == 0:
            continue
        values = th.as_tensor(list(row), dtype=dtype)
        if left:
            out[i, width - len(row) :] = values
        else:
            out[i, : len(row)] = values
    return out


def _pad_to_width(tensor: th.Tensor, width: int, value: float, *, left: bool) -> th.Tensor:
    missing = width - tensor.shape[1]
    if missing == 0:
        return tensor
    filler = th.full((tensor.shape[0], missing), value, dtype=tensor.dtype, device=tensor.device)
    return th.cat([filler, tensor] if left else [tensor, filler], dim=1)


@dataclass
class RolloutBatch:
    """
    A batch of sampled completions, one row per completion.

    Prompts are left-padded and completions right-padded, so ``cat([prompt_ids, completion_ids], 1)`` is a valid
    model input (with ``attention_mask``/``position_ids`` from :meth:`model_inputs`) whose logits at positions
    ``P - 1 ... P + T - 2`` predict the completion tokens.

    :param prompt_ids: ``[B, P]`` prompt token ids, left-padded with ``pad_token_id``
    :param prompt_mask: ``[B, P]`` bool, True on real prompt tokens
    :param completion_ids: ``[B, T]`` sampled token ids, right-padded
    :param completion_mask: ``[B, T]`` bool, True on sampled tokens
    :param behavior_log_probs: ``[B, T]`` float32 log-probabilities of the sampled tokens under the policy that
        sampled them (0 on padding)
    :param group_ids: ``[B]`` the prompt each completion answers (completions of one prompt form a group)
    :param rewards: ``[B]`` float32 rewards (0 until scored)
    :param advantages: ``[B]`` float32 advantages (0 until computed)
    :param truncated: ``[B]`` bool, True when generation stopped at the length limit
    :param policy_version: ``[B]`` int64, the number of optimizer updates the sampling policy had received
    :param pad_token_id: the padding id used in ``prompt_ids`` and ``completion_ids``
    """

    prompt_ids: th.Tensor
    prompt_mask: th.Tensor
    completion_ids: th.Tensor
    completion_mask: th.Tensor
    behavior_log_probs: th.Tensor
    group_ids: th.Tensor
    rewards: th.Tensor
    advantages: th.Tensor
    truncated: th.Tensor
    policy_version: th.Tensor
    pad_token_id: int = 0

    @classmethod
    def from_sequences(
        cls,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        behavior_log_probs: Sequence[Sequence[float]],
        *,
        group_ids: Sequence[int],
        truncated: Sequence[bool],
        policy_version: int,
        pad_token_id: int,
    ) -> "RolloutBatch":
        """
        Build a batch from token-id lists (one entry per completion; prompts repeated for every completion).

        :param prompts: the prompt token ids of every completion
        :param completions: the sampled token ids (may be empty)
        :param behavior_log_probs: one log-probability per sampled token
        :param group_ids: group (prompt) of every completion
        :param truncated: whether every completion hit the length limit
        :param policy_version: version of the sampling policy
        :param pad_token_id: padding id
        :return: the batch
        """
        n = len(completions)
        for name, values in (("prompts", prompts), ("behavior_log_probs", behavior_log_probs), ("group_ids", group_ids)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries but there are {n} completions")
        if len(truncated) != n:
            raise ValueError(f"truncated has {len(truncated)} entries but there are {n} completions")
        for i, (tokens, log_probs) in enumerate(zip(completions, behavior_log_probs, strict=True)):
            if len(tokens) != len(log_probs):
                raise ValueError(f"completion {i} has {len(tokens)} tokens but {len(log_probs)} behavior log-probs")
        if n == 0:
            raise ValueError("A RolloutBatch needs at least one completion")
        prompt_width = max(1, max(len(p) for p in prompts))
        completion_width = max(1, max(len(c) for c in completions))
        prompt_ids = _pad_rows(prompts, width=prompt_width, value=pad_token_id, dtype=th.long, left=True)
        prompt_mask = _pad_rows([[1] * len(p) for p in prompts], width=prompt_width, value=0, dtype=th.bool, left=True)
        completion_ids = _pad_rows(completions, width=completion_width, value=pad_token_id, dtype=th.long, left=False)
        completion_mask = _pad_rows(
            [[1] * len(c) for c in completions], width=completion_width, value=0, dtype=th.bool, left=False
        )
        padded_log_probs = _pad_rows(behavior_log_probs, width=completion_width, value=0.0, dtype=th.float32, left=False)
        if not th.isfinite(padded_log_probs).all():
            row = int(th.nonzero(~th.isfinite(padded_log_probs))[0, 0])
            raise ValueError(f"completion {row} has a non-finite behavior log-prob: {behavior_log_probs[row]}")
        return cls(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            behavior_log_probs=padded_log_probs,
            group_ids=th.as_tensor(list(group_ids), dtype=th.long),
            rewards=th.zeros(n),
            advantages=th.zeros(n),
            truncated=th.as_tensor(list(truncated), dtype=th.bool),
            policy_version=th.full((n,), policy_version, dtype=th.long),
            pad_token_id=pad_token_id,
        )

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def completion_lengths(self) -> th.Tensor:
        """``[B]`` number of sampled tokens of every completion."""
        return self.completion_mask.sum(dim=1)

    @property
    def num_tokens(self) -> int:
        """Total number of sampled tokens."""
        return int(self.completion_mask.sum())

    def completion_token_lists(self) -> list[list[int]]:
        """The sampled token ids of every completion, without padding."""
        lengths = self.completion_lengths.tolist()
        return [row[:length] for row, length in zip(self.completion_ids.tolist(), lengths, strict=True)]

    def model_inputs(self) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        ``(input_ids, attention_mask, position_ids)`` of prompt + completion, each ``[B, P + T]``.

        Position ids count only real tokens, so left padding does not shift the prompt's positions.
        """
        input_ids = th.cat([self.prompt_ids, self.completion_ids], dim=1)
        attention_mask = th.cat([self.prompt_mask, self.completion_mask], dim=1).long()
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return input_ids, attention_mask, position_ids

    def select(self, indices: th.Tensor) -> "RolloutBatch":
        """
        The rows ``indices`` (any order, repeats allowed).

        :param indices: 1-D integer tensor
        :return: a new batch
        """
        return replace(self, **{name: value[indices] for name, value in self._tensor_fields().items()})  # type: ignore[arg-type]

    def trimmed(self) -> "RolloutBatch":
        """A copy without the padding columns no row uses (after :meth:`select`, rows may be shorter than the width)."""
        prompt_start = min(int(self.prompt_mask.any(dim=0).int().argmax()), self.prompt_ids.shape[1] - 1)
        completion_width = max(1, int(self.completion_lengths.max()))
        return replace(
            self,
            prompt_ids=self.prompt_ids[:, prompt_start:],
            prompt_mask=self.prompt_mask[:, prompt_start:],
            completion_ids=self.completion_ids[:, :completion_width],
            completion_mask=self.completion_mask[:, :completion_width],
            behavior_log_probs=self.behavior_log_probs[:, :completion_width],
        )

    def with_scores(self, rewards: th.Tensor, advantages: th.Tensor) -> "RolloutBatch":
        """
        A copy with rewards and advantages set.

        :param rewards: ``[B]`` rewards
        :param advantages: ``[B]`` advantages
        :return: the scored batch
        """
        for name, value in (("rewards", rewards), ("advantages", advantages)):
            if value.shape != (len(self),):
                raise ValueError(f"{name} must have shape ({len(self)},), got {tuple(value.shape)}")
            if not th.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or inf: {value.tolist()}")
        return replace(self, rewards=rewards.float(), advantages=advantages.float())

    def with_behavior_log_probs(self, behavior_log_probs: th.Tensor) -> "RolloutBatch":
        """
        A copy whose behavior log-probs are replaced (e.g. recomputed by the trainer), zeroed on padding.

        :param behavior_log_probs: ``[B, T]`` log-probs
        :return: the new batch
        """
        if behavior_log_probs.shape != self.behavior_log_probs.shape:
            raise ValueError(
                f"behavior_log_probs must have shape {tuple(self.behavior_log_probs.shape)}, "
                f"got {tuple(behavior_log_probs.shape)}"
            )
        values = th.where(self.completion_mask, behavior_log_probs.float(), th.zeros((), dtype=th.float32))
        return replace(self, behavior_log_probs=values)

    def to(self, device: th.device | str) -> "RolloutBatch":
        """
        Move every tensor to ``device``.

        :param device: the target device
        :return: the moved batch
        """
        return replace(self, **{name: value.to(device) for name, value in self._tensor_fields().items()})  # type: ignore[arg-type]

    @staticmethod
    def concat(batches: Sequence["RolloutBatch"]) -> "RolloutBatch":
        """
        Stack batches (re-padding prompts on the left and completions on the right to the widest).

        :param batches: batches with the same ``pad_token_id``
        :return: one batch
        """
        if not batches:
            raise ValueError("concat needs at least one batch")
        pad = batches[0].pad_token_id
        if any(b.pad_token_id != pad for b in batches):
            raise ValueError("Cannot concatenate rollout batches with different pad_token_id")
        prompt_width = max(b.prompt_ids.shape[1] for b in batches)
        completion_width = max(b.completion_ids.shape[1] for b in batches)
        merged: dict[str, th.Tensor] = {}
        for name in batches[0]._tensor_fields():
            parts = [getattr(b, name) for b in batches]
            if name.startswith("prompt_") and name != "policy_version":
                fill = pad if name == "prompt_ids" else 0
                parts = [_pad_to_width(p, prompt_width, fill, left=True) for p in parts]
            elif name in ("completion_ids", "completion_mask", "behavior_log_probs"):
                fill = pad if name == "completion_ids" else 0
                parts = [_pad_to_width(p, completion_width, fill, left=False) for p in parts]
            merged[name] = th.cat(parts, dim=0)
        return RolloutBatch(**merged, pad_token_id=pad)

    def state_dict(self) -> dict[str, Any]:
        """The batch as a dict of CPU tensors (for checkpoints)."""
        state: dict[str, Any] = {name: value.cpu() for name, value in self._tensor_fields().items()}
        state["pad_token_id"] = self.pad_token_id
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "RolloutBatch":
        """
        Rebuild a batch saved by :meth:`state_dict`.

        :param state: the saved state
        :return: the batch
        """
        return cls(**state)

    def _tensor_fields(self) -> dict[str, th.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pad_token_id"}
