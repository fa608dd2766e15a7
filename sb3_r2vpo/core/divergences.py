"""f-divergences and their ratio-variance scale ``c_f = f''(1) / 2`` (METHOD.md, section 3, Table 1)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch as th


@dataclass(frozen=True)
class FDivergence:
    """
    An f-divergence ``D_f(pi || mu) = E_mu[f(r)]`` with ``f(1) = 0``.

    :param name: table name
    :param generator: ``f``, applied elementwise to ratios ``r > 0``
    :param variance_scale: ``c_f = f''(1) / 2``, so that ``D_f ~= c_f * Var_mu(r)`` near ``r = 1``
    """

    name: str
    generator: Callable[[th.Tensor], th.Tensor]
    variance_scale: float


def alpha_divergence(alpha: float) -> FDivergence:
    """
    The alpha-divergence with generator ``(t^a - a t - (1 - a)) / (a (a - 1))``; ``c_f = 1/2`` for every ``a``.

    :param alpha: any real number except 0 and 1 (the KL limits)
    :return: the divergence
    """
    if alpha in (0.0, 1.0):
        raise ValueError(f"alpha={alpha} is not allowed: the alpha-divergence needs alpha not in {{0, 1}} (use a KL)")
    return FDivergence(
        f"alpha_{alpha:g}",
        lambda t: (t.pow(alpha) - alpha * t - (1.0 - alpha)) / (alpha * (alpha - 1.0)),
        0.5,
    )


def _jensen_shannon(t: th.Tensor) -> th.Tensor:
    return 0.5 * (th.xlogy(t, t) - (1.0 + t) * th.log((1.0 + t) / 2.0))


F_DIVERGENCES: dict[str, FDivergence] = {
    "reverse_kl": FDivergence("reverse_kl", lambda t: -th.log(t), 0.5),
    "forward_kl": FDivergence("forward_kl", lambda t: th.xlogy(t, t), 0.5),
    "jensen_shannon": FDivergence("jensen_shannon", _jensen_shannon, 0.125),
    "squared_hellinger": FDivergence("squared_hellinger", lambda t: (th.sqrt(t) - 1.0).square(), 0.25),
    "chi_squared": FDivergence("chi_squared", lambda t: (t - 1.0).square(), 1.0),
    "alpha": alpha_divergence(0.5),
}


def get_divergence(name: str) -> FDivergence:
    """
    Look up a divergence of the table.

    :param name: one of :data:`F_DIVERGENCES`
    :return: the divergence
    """
    try:
        return F_DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"Unknown divergence {name!r}; choose one of {sorted(F_DIVERGENCES)}") from None


def f_divergence(name: str, ratio: th.Tensor, weights: th.Tensor | None = None) -> th.Tensor:
    """
    Exact ``E_mu[f(r)]``, with samples drawn from ``mu`` (or with probability ``weights`` under ``mu``).

    :param name: the divergence
    :param ratio: ratios ``pi / mu``
    :param weights: ``mu``'s probabilities of each entry (for an exact expectation over a finite space)
    :return: the divergence estimate (0-dim)
    """
    values = get_divergence(name).generator(ratio)
    return values.mean() if weights is None else (weights * values).sum()


def target_var_from_divergence(budget: float, name: str) -> float:
    """
    Translate a divergence budget (e.g. a KL of 0.01) into the matching ratio-variance target ``delta``.

    :param budget: the divergence budget, > 0
    :param name: the divergence
    :return: ``budget / c_f``
    """
    if not budget > 0:
        raise ValueError(f"budget={budget!r} must be > 0")
    return budget / get_divergence(name).variance_scale
