import math

import pytest
import torch as th

from sb3_r2vpo.core import NonFiniteRatioError, RatioStats, importance_ratio, max_finite_log_ratio, r2vpo_objective


def test_ratio_precision_near_one() -> None:
    """r - 1 via expm1 keeps the tiny deviations that the penalty squares."""
    log_prob = th.tensor([1e-7, -3e-8], dtype=th.float32)
    th.testing.assert_close(importance_ratio(log_prob, th.zeros(2)).minus_one, th.tensor([1e-7, -3e-8]), rtol=1e-5, atol=0)


def test_half_precision_is_upcast() -> None:
    assert importance_ratio(th.zeros(3, dtype=th.bfloat16), th.zeros(3, dtype=th.bfloat16)).ratio.dtype == th.float32


@pytest.mark.parametrize("log_ratio", [5.0, 30.0, 0.9 * max_finite_log_ratio(th.float32)])
def test_large_log_ratio_gives_finite_loss(log_ratio: float) -> None:
    log_prob = th.tensor([log_ratio, 0.0], requires_grad=True)
    loss, stats = r2vpo_objective(log_prob, th.zeros(2), th.ones(2), var_coef=1.0)
    assert th.isfinite(loss).all()
    summary = stats.summarize(extra={"loss": loss.mean()})
    assert summary["max_abs_log_ratio"] == pytest.approx(log_ratio)


def test_ratio_underflowing_to_zero_is_not_an_error() -> None:
    """log r = -120 makes r exactly 0 in float32: the loss and every statistic stay finite."""
    log_prob = th.tensor([-120.0, 0.0], requires_grad=True)
    loss, stats = r2vpo_objective(log_prob, th.zeros(2), th.ones(2), var_coef=0.06)
    summary = stats.summarize(extra={"loss": loss.mean()})
    assert summary["ratio_min"] == pytest.approx(0.0, abs=1e-40)
    assert summary["max_abs_log_ratio"] == pytest.approx(120.0)
    assert summary["approx_kl"] == pytest.approx((-1.0 + 120.0) / 2)


@pytest.mark.parametrize("log_ratio", [100.0, math.inf, math.nan])
def test_overflowing_or_nan_ratio_is_a_clear_error(log_ratio: float) -> None:
    loss, stats = r2vpo_objective(th.tensor([log_ratio, 0.0]), th.zeros(2), th.ones(2), var_coef=1.0)
    with pytest.raises(NonFiniteRatioError, match="epoch 3, minibatch 1") as info:
        stats.summarize(context="epoch 3, minibatch 1", extra={"loss": loss.mean()})
    assert "max_abs_log_ratio" in str(info.value)


def test_nan_loss_is_caught_even_with_finite_ratios() -> None:
    _, stats = r2vpo_objective(th.zeros(3), th.zeros(3), th.ones(3))
    with pytest.raises(NonFiniteRatioError, match="value_loss"):
        stats.summarize(extra={"value_loss": th.tensor(math.nan)})


def test_statistics_values() -> None:
    ratio = th.tensor([0.5, 1.0, 1.1, 1.5, 2.0], dtype=th.float64)
    summary = RatioStats.from_ratio(ratio - 1, band=0.2).summarize()
    assert summary["ratio_var"] == pytest.approx(float(((ratio - 1) ** 2).mean()))
    assert summary["ratio_batch_var"] == pytest.approx(float(ratio.var(unbiased=False)))
    assert summary["approx_kl"] == pytest.approx(float(((ratio - 1) - th.log(ratio)).mean()))
    assert summary["ratio_min"] == 0.5 and summary["ratio_max"] == 2.0
    assert summary["ratio_outside"] == pytest.approx(3 / 5)
    assert summary["count"] == 5


def test_statistics_merge_equals_whole_batch_and_respects_mask() -> None:
    gen = th.Generator().manual_seed(0)
    dev = th.randn(100, generator=gen) * 0.3
    mask = th.rand(100, generator=gen) > 0.25
    whole = RatioStats.from_ratio(dev, mask=mask).summarize()
    merged = RatioStats.from_ratio(dev[:40], mask=mask[:40]).merge(RatioStats.from_ratio(dev[40:], mask=mask[40:])).summarize()
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value, rel=1e-5), key
    only_valid = RatioStats.from_ratio(dev[mask]).summarize()
    for key, value in only_valid.items():
        assert whole[key] == pytest.approx(value, rel=1e-5), key


def test_merge_refuses_different_bands() -> None:
    with pytest.raises(ValueError, match="different bands"):
        RatioStats.from_ratio(th.zeros(2), band=0.2).merge(RatioStats.from_ratio(th.zeros(2), band=0.3))


def test_non_finite_error_is_a_value_error() -> None:
    """rl_zoo3's Optuna objective prunes trials that raise ValueError (as torch's distributions do on NaN)."""
    _, stats = r2vpo_objective(th.tensor([math.nan]), th.zeros(1), th.ones(1))
    with pytest.raises(ValueError):
        stats.summarize()
