"""Ratio statistics as mergeable sums, so they aggregate exactly over minibatches, micro-batches and processes."""

import math
from dataclasses import dataclass, fields

import torch as th

from sb3_r2vpo.core.ratio import NonFiniteRatioError

# PPO's default clip range: ``ratio_outside_fraction`` with this band is comparable to PPO's ``clip_fraction``.
DEFAULT_RATIO_BAND = 0.2


@dataclass
class RatioStats:
    """
    Sufficient statistics of a batch of importance ratios (all detached, 0-dim tensors).

    Keeping sums rather than means makes merging exact: the statistics of an optimizer step made of
    several micro-batches (or several processes, after an all-reduce of the sums) equal those of one
    big batch.

    :param count: number of (unmasked) samples
    :param sum_dev_one: ``sum(r - 1)``
    :param sum_sq_dev_one: ``sum((r - 1)^2)``, the ratio variance about 1 times ``count``
    :param sum_approx_kl: ``sum((r - 1) - log r)``, SB3's approximate KL times ``count``
    :param n_outside: number of samples with ``|r - 1| > band``
    :param ratio_min: smallest ratio
    :param ratio_max: largest ratio
    :param max_abs_log_ratio: largest ``|log r|`` (non-finite values show up here)
    :param band: the band used for ``n_outside``
    """

    count: th.Tensor
    sum_dev_one: th.Tensor
    sum_sq_dev_one: th.Tensor
    sum_approx_kl: th.Tensor
    n_outside: th.Tensor
    ratio_min: th.Tensor
    ratio_max: th.Tensor
    max_abs_log_ratio: th.Tensor
    band: float = DEFAULT_RATIO_BAND

    @classmethod
    def from_ratio(
        cls,
        ratio_minus_one: th.Tensor,
        *,
        log_ratio: th.Tensor | None = None,
        mask: th.Tensor | None = None,
        band: float = DEFAULT_RATIO_BAND,
    ) -> "RatioStats":
        """
        Compute the statistics of a batch.

        :param ratio_minus_one: ``r - 1`` for every sample (or token)
        :param log_ratio: ``log r`` if known (it stays finite where ``r`` underflows to 0); default ``log1p(r - 1)``
        :param mask: optional 0/1 (or bool) mask of the samples that count, same shape
        :param band: half-width of the band around 1 for ``n_outside``
        :return: the statistics
        """
        with th.no_grad():
            dev = ratio_minus_one.detach()
            log_ratio = th.log1p(dev) if log_ratio is None else log_ratio.detach()
            if dev.numel() == 0:
                zero = dev.new_zeros(())
                return cls(zero, zero, zero, zero, zero, dev.new_tensor(math.inf), dev.new_tensor(-math.inf), zero, band)
            if mask is not None:
                return cls._from_masked(dev, log_ratio, mask.detach().bool(), band)
            # Called once per minibatch in SB3's hot loop: few kernels, no synchronization.
            min_dev, max_dev = th.aminmax(dev)
            return cls(
                count=dev.new_tensor(float(dev.numel())),
                sum_dev_one=dev.sum(),
                sum_sq_dev_one=dev.square().sum(),
                sum_approx_kl=(dev - log_ratio).sum(),
                n_outside=(dev.abs() > band).sum(),
                ratio_min=min_dev + 1.0,
                ratio_max=max_dev + 1.0,
                # NaN propagates through max(), so a NaN ratio is never hidden here.
                max_abs_log_ratio=log_ratio.abs().max(),
                band=band,
            )

    @classmethod
    def _from_masked(cls, dev: th.Tensor, log_ratio: th.Tensor, valid: th.Tensor, band: float) -> "RatioStats":
        # th.where instead of boolean indexing: indexing would synchronize with the GPU for every micro-batch.
        zeros = th.zeros_like(dev)
        dev_valid = th.where(valid, dev, zeros)
        log_ratio_valid = th.where(valid, log_ratio, zeros)
        inf = th.full_like(dev, math.inf)
        return cls(
            count=valid.sum().to(dev.dtype),
            sum_dev_one=dev_valid.sum(),
            sum_sq_dev_one=dev_valid.square().sum(),
            sum_approx_kl=(dev_valid - log_ratio_valid).sum(),
            n_outside=((dev_valid.abs() > band) & valid).sum(),
            ratio_min=th.where(valid, dev, inf).min() + 1.0,
            ratio_max=th.where(valid, dev, -inf).max() + 1.0,
            max_abs_log_ratio=log_ratio_valid.abs().max(),
            band=band,
        )

    def merge(self, other: "RatioStats") -> "RatioStats":
        """
        Statistics of the union of two batches.

        :param other: statistics of the other batch (same band)
        :return: merged statistics
        """
        if other.band != self.band:
            raise ValueError(f"Cannot merge ratio statistics with different bands ({self.band} and {other.band})")
        return RatioStats(
            count=self.count + other.count,
            sum_dev_one=self.sum_dev_one + other.sum_dev_one,
            sum_sq_dev_one=self.sum_sq_dev_one + other.sum_sq_dev_one,
            sum_approx_kl=self.sum_approx_kl + other.sum_approx_kl,
            n_outside=self.n_outside + other.n_outside,
            ratio_min=th.minimum(self.ratio_min, other.ratio_min),
            ratio_max=th.maximum(self.ratio_max, other.ratio_max),
            max_abs_log_ratio=th.maximum(self.max_abs_log_ratio, other.max_abs_log_ratio),
            band=self.band,
        )

    @classmethod
    def tensor_names(cls) -> list[str]:
        """Names of the tensor fields, in order."""
        return [f.name for f in fields(cls) if f.name != "band"]

    def tensors(self) -> list[th.Tensor]:
        """The statistics as a list of tensors, in field order (for all-reduce or stacking)."""
        return [getattr(self, name) for name in self.tensor_names()]

    def summarize(self, *, context: str = "", extra: dict[str, th.Tensor] | None = None) -> dict[str, float]:
        """
        Reduce to Python floats with a single device synchronization, and check that they are finite.

        :param context: where this happens, for the error message (e.g. ``"epoch 3, minibatch 7"``)
        :param extra: more scalar tensors to fetch in the same synchronization (e.g. the loss); they
            are checked for finiteness too
        :return: ``ratio_var`` (second moment about 1), ``ratio_batch_var``, ``approx_kl``,
            ``ratio_mean``, ``ratio_min``, ``ratio_max``, ``ratio_outside`` (fraction), ``max_abs_log_ratio``,
            ``count``, and the ``extra`` entries
        :raises NonFiniteRatioError: if a ratio statistic or an extra value is NaN or infinite
        """
        extra = extra or {}
        # One stack and one transfer: a single device synchronization for all statistics and extras.
        stacked = th.stack([*self.tensors(), *extra.values()]).detach().double().tolist()
        names = self.tensor_names()
        raw = dict(zip(names, stacked[: len(names)], strict=True))
        extra_values = dict(zip(extra.keys(), stacked[len(names) :], strict=True))
        count = max(raw["count"], 1.0)
        mean_dev = raw["sum_dev_one"] / count
        second_moment = raw["sum_sq_dev_one"] / count
        summary = {
            "ratio_var": second_moment,
            # Var(r) = E[(r-1)^2] - (E[r]-1)^2: deviations from 1 avoid cancellation when r ~ 1.
            "ratio_batch_var": max(second_moment - mean_dev * mean_dev, 0.0),
            "approx_kl": raw["sum_approx_kl"] / count,
            "ratio_mean": 1.0 + mean_dev,
            "ratio_min": raw["ratio_min"],
            "ratio_max": raw["ratio_max"],
            "ratio_outside": raw["n_outside"] / count,
            "max_abs_log_ratio": raw["max_abs_log_ratio"],
            "count": raw["count"],
            **extra_values,
        }
        checked = {k: v for k, v in summary.items() if k not in ("ratio_min", "ratio_max") or raw["count"] > 0}
        bad = sorted(k for k, v in checked.items() if not math.isfinite(v))
        if bad:
            where = f" at {context}" if context else ""
            details = ", ".join(f"{k}={v:.6g}" for k, v in summary.items())
            raise NonFiniteRatioError(
                f"Non-finite {', '.join(bad)}{where}: {details}. The policy moved too far from the behavior policy "
                "(or a log-probability is -inf/NaN). Try a smaller learning_rate, a larger var_coef "
                "(or a smaller target_var), fewer n_epochs, or check the environment's observations and rewards."
            )
        return summary


def grouped_second_moment(ratio_minus_one: th.Tensor, group_ids: th.Tensor, n_groups: int) -> tuple[th.Tensor, th.Tensor]:
    """
    Per-group ``sum((r - 1)^2)`` and sample counts, e.g. the ratio variance by staleness in a replay.

    :param ratio_minus_one: ``r - 1`` for every sample (1-D)
    :param group_ids: integer group of every sample, in ``[0, n_groups)``
    :param n_groups: number of groups
    :return: ``(sum_sq_dev_one, count)``, each of shape ``[n_groups]``
    """
    with th.no_grad():
        dev = ratio_minus_one.detach().reshape(-1)
        groups = group_ids.reshape(-1).long()
        sums = th.zeros(n_groups, dtype=dev.dtype, device=dev.device).scatter_add_(0, groups, dev.square())
        counts = th.bincount(groups, minlength=n_groups)[:n_groups].to(dev.dtype)
        return sums, counts
