"""Accumulation of per-minibatch training statistics into the values logged under ``train/*``."""

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MinibatchMetrics:
    """
    Running aggregates over the minibatches of one ``train()`` call.

    Ratio moments are weighted by minibatch size, so ``ratio_var`` is the second moment about 1 over
    every sample used in the call, whatever the minibatch sizes.
    """

    n_samples: float = 0.0
    sum_ratio_var: float = 0.0
    sum_ratio_batch_var: float = 0.0
    sum_outside: float = 0.0
    sum_var_penalty: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    policy_losses: list[float] = field(default_factory=list)
    value_losses: list[float] = field(default_factory=list)
    entropy_losses: list[float] = field(default_factory=list)
    epoch_approx_kls: list[float] = field(default_factory=list)
    last_loss: float = math.nan
    extra_sums: dict[str, float] = field(default_factory=dict)

    def start_epoch(self) -> None:
        """PPO logs the approximate KL of the last epoch only; reset it at each epoch."""
        self.epoch_approx_kls = []

    def add(self, summary: dict[str, float], var_coef: float, summed: Iterable[str] = ()) -> None:
        """
        Add one minibatch.

        :param summary: output of :meth:`sb3_r2vpo.core.RatioStats.summarize` with the loss terms as extras
        :param var_coef: ``lam`` used for this minibatch's loss
        :param summed: more keys of ``summary`` to sum over the minibatches into :attr:`extra_sums`
        """
        for key in summed:
            self.extra_sums[key] = self.extra_sums.get(key, 0.0) + summary[key]
        count = summary["count"]
        self.n_samples += count
        self.sum_ratio_var += summary["ratio_var"] * count
        self.sum_ratio_batch_var += summary["ratio_batch_var"] * count
        self.sum_outside += summary["ratio_outside"] * count
        self.sum_var_penalty += var_coef * summary["ratio_var"] * count
        self.ratio_min = min(self.ratio_min, summary["ratio_min"])
        self.ratio_max = max(self.ratio_max, summary["ratio_max"])
        self.policy_losses.append(summary["policy_loss"])
        self.value_losses.append(summary["value_loss"])
        self.entropy_losses.append(summary["entropy_loss"])
        self.epoch_approx_kls.append(summary["approx_kl"])
        self.last_loss = summary["loss"]

    def as_log_dict(self, band: float) -> dict[str, float]:
        """
        The ``train/*`` values (without the prefix).

        :param band: the band of ``ratio_outside`` (appears in the key)
        :return: key -> value
        """
        n = max(self.n_samples, 1.0)
        return {
            "entropy_loss": float(np.mean(self.entropy_losses)) if self.entropy_losses else math.nan,
            "policy_gradient_loss": float(np.mean(self.policy_losses)) if self.policy_losses else math.nan,
            "value_loss": float(np.mean(self.value_losses)) if self.value_losses else math.nan,
            "approx_kl": float(np.mean(self.epoch_approx_kls)) if self.epoch_approx_kls else math.nan,
            "loss": self.last_loss,
            "ratio_var": self.sum_ratio_var / n,
            "ratio_batch_var": self.sum_ratio_batch_var / n,
            "var_penalty": self.sum_var_penalty / n,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            f"ratio_outside_{band:g}": self.sum_outside / n,
        }
