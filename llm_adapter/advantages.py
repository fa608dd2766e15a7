"""Group-relative advantages (GRPO): each completion's reward compared with the other answers to its prompt."""

from typing import NamedTuple

import torch as th


class GroupAdvantages(NamedTuple):
    """Advantages and the group counts the metrics report."""

    advantages: th.Tensor
    n_groups: int
    n_zero_advantage_groups: int

    @property
    def zero_advantage_fraction(self) -> float:
        """Fraction of groups whose rewards were all equal (they carry no learning signal)."""
        return self.n_zero_advantage_groups / max(self.n_groups, 1)


def group_relative_advantages(
    rewards: th.Tensor,
    group_ids: th.Tensor,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> GroupAdvantages:
    """
    ``A_i = (R_i - mean_group(R)) / (std_group(R) + eps)`` (or without the division when ``scale_by_std=False``).

    The standard deviation is the unbiased one, as in GRPO/TRL. A group whose rewards are all equal gets exactly zero
    advantage (set explicitly: a float mean of equal rewards need not equal them exactly) and is counted in
    ``n_zero_advantage_groups``; so is a group of one completion.

    :param rewards: ``[B]`` rewards
    :param group_ids: ``[B]`` integer group of every completion (any values)
    :param scale_by_std: divide by the group's standard deviation
    :param eps: added to the standard deviation
    :return: advantages ``[B]`` and group counts
    """
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must be 1-D of one shape, got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    if not th.isfinite(rewards).all():
        raise ValueError(f"rewards contain NaN or inf: {rewards.tolist()}")
    if not eps > 0:
        raise ValueError(f"eps={eps} must be > 0")
    rewards = rewards.double()
    _, group_index = th.unique(group_ids, return_inverse=True)
    n_groups = int(group_index.max()) + 1
    counts = th.bincount(group_index, minlength=n_groups).double()
    sums = th.zeros(n_groups, dtype=th.float64).scatter_add_(0, group_index, rewards)
    means = sums / counts
    deviations = rewards - means[group_index]
    squared = th.zeros(n_groups, dtype=th.float64).scatter_add_(0, group_index, deviations.square())
    group_max = th.full((n_groups,), -th.inf, dtype=th.float64).scatter_reduce_(0, group_index, rewards, reduce="amax")
    group_min = th.full((n_groups,), th.inf, dtype=th.float64).scatter_reduce_(0, group_index, rewards, reduce="amin")
    constant = group_max == group_min
    if scale_by_std:
        std = (squared / (counts - 1).clamp(min=1)).sqrt()
        deviations = deviations / (std[group_index] + eps)
    advantages = th.where(constant[group_index], th.zeros_like(deviations), deviations)
    return GroupAdvantages(advantages.float(), n_groups, int(constant.sum()))
