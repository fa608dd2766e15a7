import pytest
import torch as th

from sb3_r2vpo.core import F_DIVERGENCES, alpha_divergence, f_divergence, target_var_from_divergence
from sb3_r2vpo.core.divergences import get_divergence


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_variance_scale_is_half_second_derivative(name: str) -> None:
    """c_f in the table equals f''(1) / 2, checked by a central finite difference of the generator."""
    f = get_divergence(name).generator
    h = 1e-4
    t = th.tensor([1.0 - h, 1.0, 1.0 + h], dtype=th.float64)
    values = f(t)
    assert float(values[1]) == pytest.approx(0.0, abs=1e-12)  # f(1) = 0
    second_derivative = float(values[0] - 2 * values[1] + values[2]) / h**2
    assert get_divergence(name).variance_scale == pytest.approx(second_derivative / 2, rel=1e-5)


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_divergence_matches_scaled_variance_to_second_order(name: str) -> None:
    """Prop. 4.1: D_f(pi || mu) = c_f Var_mu(r) + O(eps^3), so the relative error shrinks linearly with eps."""
    gen = th.Generator().manual_seed(0)
    mu = th.softmax(th.randn(50, generator=gen, dtype=th.float64), dim=0)
    direction = th.randn(50, generator=gen, dtype=th.float64)
    relative_errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        pi = mu * th.exp(eps * direction)
        pi = pi / pi.sum()
        ratio = pi / mu
        exact = float(f_divergence(name, ratio, weights=mu))
        variance = float((mu * (ratio - 1) ** 2).sum())  # E_mu[r] = 1 exactly here
        approx = get_divergence(name).variance_scale * variance
        relative_errors.append(abs(exact - approx) / approx)
    assert relative_errors[1] < 0.2 * relative_errors[0] + 1e-9
    assert relative_errors[2] < 0.2 * relative_errors[1] + 1e-9
    assert relative_errors[2] < 1e-2


@pytest.mark.parametrize("alpha", [-1.0, 0.3, 2.0])
def test_alpha_family_has_scale_one_half(alpha: float) -> None:
    divergence = alpha_divergence(alpha)
    t = th.tensor([0.999, 1.0, 1.001], dtype=th.float64)
    values = divergence.generator(t)
    assert float(values[0] - 2 * values[1] + values[2]) / 1e-6 / 2 == pytest.approx(divergence.variance_scale, rel=1e-4)


def test_alpha_rejects_kl_limits() -> None:
    with pytest.raises(ValueError, match="alpha=1"):
        alpha_divergence(1.0)


def test_target_var_from_kl_budget() -> None:
    assert target_var_from_divergence(0.01, "reverse_kl") == pytest.approx(0.02)
    assert target_var_from_divergence(0.01, "chi_squared") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="budget"):
        target_var_from_divergence(0.0, "reverse_kl")
    with pytest.raises(ValueError, match="Unknown divergence"):
        target_var_from_divergence(0.1, "wasserstein")
