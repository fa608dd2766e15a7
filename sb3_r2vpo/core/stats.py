"""Ratio statistics as mergeable sums, so they aggregate exactly over minibatches, micro-batches and processes."""

import math
from dataclasses import dataclass

import torch as th

from sb3_r2vpo.core.ratio import NonFiniteRatioError

# PPO's default clip range: ``ratio_outside`` with this band is comparable to PPO's ``clip_fraction``.
DEFAULT_RATIO_BAND = 0.2


def _exp(value: float) -> float:
    """``exp`` that saturates to inf instead of raising OverflowError (and keeps NaN)."""
    return math.exp(value) if value < 709.0 or math.isnan(value) else math.inf


@dataclass
class RatioStats:
    """
    Sufficient statistics of a batch of importance ratios (detached tensors).

    Keeping sums rather than means makes merging exact: the statistics of an optimizer step made of
    several micro-batches (or several processes, after an all-reduce of :meth:`tensors`) equal those of one
    big batch. The extremes are kept as log-ratios: they stay finite where the ratio under- or overflows.

    :param count: number of (unmasked) samples (a Python number when known without looking at the data)
    :param sums: ``[sum(r - 1), sum((r - 1)^2), sum((r - 1) - log r), #{|r - 1| > band}]``; the second is the
        ratio variance about 1 times ``count``, the third SB3's approximate KL times ``count``
    :param min_log_ratio: smallest ``log r`` (NaN propagates here)
    :param max_log_ratio: largest ``log r`` (NaN propagates here)
    :param band: the band used for the outside count
    """

    count: th.Tensor | float
    sums: th.Tensor
    min_log_ratio: th.Tensor
    max_log_ratio: th.Tensor
    band: float = DEFAULT_RATIO_BAND

    @classmethod
    def from_ratio(
        cls,
        ratio_minus_one: th.Tensor,
        *,
        log_ratio: th.Tensor | None = None,
        squared_deviation: th.Tensor | None = None,
        mask: th.Tensor | None = None,
        band: float = DEFAULT_RATIO_BAND,
    ) -> "RatioStats":
        """
        Compute the statistics of a batch.

        :param ratio_minus_one: ``r - 1`` for every sample (or token)
        :param log_ratio: ``log r`` if known (it stays finite where ``r`` underflows to 0); default ``log1p(r - 1)``
        :param squared_deviation: ``(r - 1)^2`` if already computed (the penalty computes it)
        :param mask: optional 0/1 (or bool) mask of the samples that count, same shape
        :param band: half-width of the band around 1 for the outside count
        :return: the statistics
        """
        # Everything below works on detached tensors: no autograd bookkeeping (and no no_grad() context cost).
        dev = ratio_minus_one.detach()
        log_ratio = th.log1p(dev) if log_ratio is None else log_ratio.detach()
        squared = dev.square() if squared_deviation is None else squared_deviation.detach()
        if dev.numel() == 0:
            return cls(0.0, dev.new_zeros(4), dev.new_tensor(math.inf), dev.new_tensor(-math.inf), band)
        if mask is None:
            count: th.Tensor | float = float(dev.numel())
            min_log, max_log = th.aminmax(log_ratio)
        else:
            valid = mask.detach().bool()
            # th.where instead of boolean indexing: indexing would synchronize with the GPU for every micro-batch.
            count = valid.sum().to(dev.dtype)
            inf = th.full_like(log_ratio, math.inf)
            min_log, max_log = th.where(valid, log_ratio, inf).min(), th.where(valid, log_ratio, -inf).max()
            zeros = th.zeros_like(dev)
            dev, squared, log_ratio = (th.where(valid, x, zeros) for x in (dev, squared, log_ratio))
        # One fused reduction: this runs once per minibatch in SB3's hot loop.
        # (stack promotes the boolean row to the floating dtype)
        columns = th.stack([dev, squared, dev - log_ratio, dev.abs() > band])
        return cls(count, columns.reshape(4, -1).sum(dim=1), min_log, max_log, band)

    def merge(self, other: "RatioStats") -> "RatioStats":
        """
        Statistics of the union of two batches.

        :param other: statistics of the other batch (same band)
        :return: merged statistics
        """
        if other.band != self.band:
            raise ValueError(f"Cannot merge ratio statistics with different bands ({self.band} and {other.band})")
        return RatioStats(
            self.count + other.count,
            self.sums + other.sums,
            th.minimum(self.min_log_ratio, other.min_log_ratio),
            th.maximum(self.max_log_ratio, other.max_log_ratio),
            self.band,
        )

    def tensors(self) -> list[th.Tensor]:
        """``[count, sums, min_log_ratio, max_log_ratio]``: across processes, sum-reduce the first two, min/max the others."""
        count = self.count if isinstance(self.count, th.Tensor) else self.sums.new_tensor(self.count)
        return [count, self.sums, self.min_log_ratio, self.max_log_ratio]

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
        scalars = [self.min_log_ratio, self.max_log_ratio, *extra.values()]
        if isinstance(self.count, th.Tensor):
            scalars.append(self.count)
        # One stack, one concatenation and one transfer: a single device synchronization for everything.
        values = th.cat([self.sums, th.stack(scalars)]).tolist()
        sum_dev, sum_sq, sum_kl, n_outside, min_log, max_log = values[:6]
        count = values[-1] if isinstance(self.count, th.Tensor) else self.count
        extra_values = values[6 : 6 + len(extra)]
        n = max(count, 1.0)
        mean_dev, second_moment = sum_dev / n, sum_sq / n
        summary = {
            "ratio_var": second_moment,
            # Var(r) = E[(r-1)^2] - (E[r]-1)^2: deviations from 1 avoid cancellation when r ~ 1.
            "ratio_batch_var": max(second_moment - mean_dev * mean_dev, 0.0),
            "approx_kl": sum_kl / n,
            "ratio_mean": 1.0 + mean_dev,
            "ratio_min": _exp(min_log),
            "ratio_max": _exp(max_log),
            "ratio_outside": n_outside / n,
            "max_abs_log_ratio": max(-min_log, max_log) if count > 0 else 0.0,
            "count": count,
        }
        summary.update(zip(extra, extra_values, strict=True))
        checked = values if count > 0 else [*values[:4], *extra_values]
        if not all(map(math.isfinite, checked)):
            self._raise_non_finite(summary, context)
        return summary

    @staticmethod
    def _raise_non_finite(summary: dict[str, float], context: str) -> None:
        bad = sorted(k for k, v in summary.items() if not math.isfinite(v) and k not in ("ratio_min",))
        where = f" at {context}" if context else ""
        details = ", ".join(f"{k}={v:.6g}" for k, v in summary.items())
        raise NonFiniteRatioError(
            f"Non-finite {', '.join(bad) or 'ratio statistics'}{where}: {details}. The policy moved too far from the "
            "behavior policy (or a log-probability is -inf/NaN). Try a smaller learning_rate, a larger var_coef "
            "(or a smaller target_var), fewer n_epochs, or check the environment's observations and rewards."
        )


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
