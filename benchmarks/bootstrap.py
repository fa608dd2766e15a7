"""Statistics over seeds shared by the benchmarks: the IQM, percentile-bootstrap intervals and their verdict."""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000

Statistic = Callable[[np.ndarray], Any]


def iqm(values: Any) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's definition, with fractional end weights)."""
    values = np.sort(np.asarray(values, dtype=float))
    n = len(values)
    # Each sample covers [i/n, (i+1)/n] of the distribution; weight = its overlap with [0.25, 0.75].
    lower, upper = np.arange(n) / n, np.arange(1, n + 1) / n
    weights = np.clip(np.minimum(upper, 0.75) - np.maximum(lower, 0.25), 0.0, None)
    return float(np.sum(weights * values) / np.sum(weights))


def resample_seeds(values: Any, rng: np.random.Generator, n_resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """``n_resamples`` bootstrap resamples of the per-seed ``values`` (seeds along the first axis)."""
    data = np.asarray(values, dtype=float)
    return data[rng.integers(0, len(data), size=(n_resamples, len(data)))]


def bootstrap_interval(values: Sequence[float], statistic: Statistic, rng: np.random.Generator) -> list[float]:
    """95% percentile-bootstrap interval of ``statistic`` over resampled seeds."""
    stats = np.array([statistic(row) for row in resample_seeds(values, rng)])
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def difference_interval(
    values: Sequence[float], reference: Sequence[float], statistic: Statistic, rng: np.random.Generator
) -> list[float]:
    """
    95% percentile-bootstrap interval of ``statistic(values) - statistic(reference)``, the seeds of each group
    resampled independently.
    """
    rows_a, rows_b = resample_seeds(values, rng), resample_seeds(reference, rng)
    diffs = np.array([statistic(x) - statistic(y) for x, y in zip(rows_a, rows_b, strict=True)])
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def verdict(low: float, high: float) -> str:
    """What a 95% interval of a difference says: ``"above"`` or ``"below"`` when it excludes 0."""
    return "above" if low > 0 else "below" if high < 0 else "not significant"
