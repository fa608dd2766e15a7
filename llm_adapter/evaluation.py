"""Held-out evaluation: pass@k from ``n`` sampled completions per prompt (Chen et al., 2021, unbiased estimator)."""

import math
from collections.abc import Sequence


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """
    The probability that at least one of ``k`` completions drawn without replacement from ``num_samples`` (of which
    ``num_correct`` are correct) is correct: ``1 - C(n - c, k) / C(n, k)``.

    :param num_samples: completions sampled for the prompt (``n >= k``)
    :param num_correct: how many of them are correct
    :param k: completions allowed
    :return: the estimate in ``[0, 1]``
    """
    if not 1 <= k <= num_samples:
        raise ValueError(f"k={k} must be in [1, num_samples={num_samples}]")
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} must be in [0, num_samples={num_samples}]")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def evaluation_metrics(rewards: Sequence[float], num_samples: int, *, correct_above: float = 0.5) -> dict[str, float]:
    """
    pass@1 and pass@``num_samples`` (each averaged over prompts) and the mean reward of an evaluation.

    :param rewards: one reward per completion, ``num_samples`` consecutive completions per prompt
    :param num_samples: completions per prompt
    :param correct_above: a completion counts as correct when its reward is above this (1/0 rewards: 0.5)
    :return: ``{"eval_reward_mean", "eval_pass@1", "eval_pass@<n>", "eval_prompts"}``
    """
    if num_samples < 1 or len(rewards) == 0 or len(rewards) % num_samples:
        raise ValueError(f"{len(rewards)} rewards do not split into prompts of num_samples={num_samples} completions")
    groups = [rewards[start : start + num_samples] for start in range(0, len(rewards), num_samples)]
    correct = [sum(reward > correct_above for reward in group) for group in groups]
    metrics = {
        "eval_reward_mean": float(sum(rewards) / len(rewards)),
        "eval_pass@1": sum(pass_at_k(num_samples, c, 1) for c in correct) / len(groups),
        "eval_prompts": float(len(groups)),
    }
    metrics[f"eval_pass@{num_samples}"] = sum(pass_at_k(num_samples, c, num_samples) for c in correct) / len(groups)
    return metrics
