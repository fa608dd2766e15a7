"""Theorem 4.4: |E[r A] - E[clip(r, 1 - eps, 1 + eps) A]| <= A_max E[(r - 1)^2] / eps."""

import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.floats(min_value=1e-6, max_value=1e3, allow_nan=False),
    eps=st.floats(min_value=1e-3, max_value=0.99),
)
def test_pointwise_clipping_error_is_bounded_by_squared_deviation(ratio: float, eps: float) -> None:
    clipped = min(max(ratio, 1 - eps), 1 + eps)
    assert abs(ratio - clipped) <= (ratio - 1) ** 2 / eps * (1 + 1e-12) + 1e-15


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 512),
    eps=st.floats(min_value=0.01, max_value=0.5),
    log_ratio_scale=st.floats(min_value=1e-3, max_value=2.0),
    advantage_max=st.floats(min_value=1e-3, max_value=100.0),
)
def test_clipping_error_bound_on_random_batches(
    seed: int, n: int, eps: float, log_ratio_scale: float, advantage_max: float
) -> None:
    gen = th.Generator().manual_seed(seed)
    ratio = th.exp(th.randn(n, generator=gen, dtype=th.float64) * log_ratio_scale)
    advantages = (th.rand(n, generator=gen, dtype=th.float64) * 2 - 1) * advantage_max
    clipping_error = (ratio * advantages - th.clamp(ratio, 1 - eps, 1 + eps) * advantages).mean().abs()
    bound = advantages.abs().max() * ((ratio - 1) ** 2).mean() / eps
    assert float(clipping_error) <= float(bound) * (1 + 1e-9) + 1e-12
