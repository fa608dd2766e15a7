import pytest
import torch as th

from sb3_r2vpo.core import aggregate_loss, clip_objective, get_objective, r2vpo_objective


def _linear_policy_batch(seed: int = 0, n: int = 32, n_actions: int = 5):
    """A tiny softmax policy, its behavior log-probs (a perturbed copy) and random advantages, in float64."""
    gen = th.Generator().manual_seed(seed)
    obs = th.randn(n, 4, generator=gen, dtype=th.float64)
    weight = th.randn(4, n_actions, generator=gen, dtype=th.float64, requires_grad=True)
    actions = th.randint(n_actions, (n,), generator=gen)
    with th.no_grad():
        behavior_weight = weight + 0.3 * th.randn(4, n_actions, generator=gen, dtype=th.float64)
        behavior_log_prob = th.log_softmax(obs @ behavior_weight, dim=-1).gather(1, actions[:, None]).squeeze(1)
    advantages = th.randn(n, generator=gen, dtype=th.float64)

    def log_prob_fn() -> th.Tensor:
        return th.log_softmax(obs @ weight, dim=-1).gather(1, actions[:, None]).squeeze(1)

    return weight, log_prob_fn, behavior_log_prob, advantages


@pytest.mark.parametrize("var_coef", [0.0, 0.06, 1.0, 7.5])
def test_r2vpo_gradient_is_regularized_advantage(var_coef: float) -> None:
    """Eq. 8: grad of sum_i loss_i equals sum_i -grad(r_i) (A_i - 2 lam (r_i - 1)), w.r.t. the policy parameters."""
    weight, log_prob_fn, behavior_log_prob, advantages = _linear_policy_batch()
    loss, _ = r2vpo_objective(log_prob_fn(), behavior_log_prob, advantages, var_coef=var_coef)
    (autograd_grad,) = th.autograd.grad(loss.sum(), weight)

    ratio = th.exp(log_prob_fn() - behavior_log_prob)
    expected = th.zeros_like(weight)
    for i in range(len(ratio)):
        (grad_ratio_i,) = th.autograd.grad(ratio[i], weight, retain_graph=True)
        expected += -grad_ratio_i * (advantages[i] - 2 * var_coef * (ratio[i].detach() - 1))
    th.testing.assert_close(autograd_grad, expected, rtol=1e-10, atol=1e-12)


def test_r2vpo_loss_value() -> None:
    log_prob = th.tensor([0.0, 0.1, -0.2])
    behavior = th.tensor([0.0, 0.0, 0.0])
    adv = th.tensor([1.0, -2.0, 0.5])
    loss, _ = r2vpo_objective(log_prob, behavior, adv, var_coef=0.5)
    ratio = th.exp(log_prob)
    th.testing.assert_close(loss, -ratio * adv + 0.5 * (ratio - 1) ** 2)


def test_penalty_is_soft_not_a_clip() -> None:
    """Far from r = 1 the gradient is attenuated (and reversed past r* = 1 + A / 2 lam), never exactly zero."""
    behavior = th.zeros(1)
    adv = th.ones(1)
    grads = []
    for log_ratio in (0.0, 0.5, 0.69314718, 1.5):
        log_prob = th.tensor([log_ratio], requires_grad=True)
        loss, _ = r2vpo_objective(log_prob, behavior, adv, var_coef=0.5)
        (grad,) = th.autograd.grad(loss.sum(), log_prob)
        grads.append(float(grad))
    assert grads[0] == pytest.approx(-1.0)  # plain policy gradient at r = 1
    assert grads[0] < grads[1] < 0.0  # attenuated
    assert abs(grads[2]) < 1e-6  # r = 2 = 1 + A / (2 lam): the stationary point
    assert grads[3] > 0.0  # pulled back beyond it


def test_clip_objective_matches_ppo_formula() -> None:
    gen = th.Generator().manual_seed(1)
    log_prob, behavior, adv = th.randn(64, generator=gen) * 0.3, th.zeros(64), th.randn(64, generator=gen)
    loss, stats = clip_objective(log_prob, behavior, adv, clip_range=0.2)
    ratio = th.exp(log_prob)
    expected = -th.min(ratio * adv, th.clamp(ratio, 0.8, 1.2) * adv)
    th.testing.assert_close(loss, expected)
    summary = stats.summarize()
    assert summary["ratio_outside"] == pytest.approx(float(((ratio - 1).abs() > 0.2).float().mean()))
    loss_high, _ = clip_objective(log_prob, behavior, adv, clip_range=0.2, clip_range_high=0.28)
    th.testing.assert_close(loss_high, -th.min(ratio * adv, th.clamp(ratio, 0.8, 1.28) * adv))


def test_objective_registry() -> None:
    assert get_objective("r2vpo") is r2vpo_objective
    with pytest.raises(ValueError, match="Unknown objective 'nope'"):
        get_objective("nope")


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        r2vpo_objective(th.zeros(3), th.zeros(4), th.zeros(3))


def test_token_mean_is_exact_under_gradient_accumulation() -> None:
    """Summing micro-batch losses normalized by the step's token count gives the full-batch gradient."""
    gen = th.Generator().manual_seed(2)
    log_prob = (th.randn(6, 10, generator=gen, dtype=th.float64) * 0.1).requires_grad_(True)
    behavior = th.zeros(6, 10, dtype=th.float64)
    adv = th.randn(6, 1, generator=gen, dtype=th.float64).expand(6, 10)
    mask = (th.rand(6, 10, generator=gen) > 0.3).double()

    full, _ = r2vpo_objective(log_prob, behavior, adv, mask=mask, var_coef=0.3)
    (full_grad,) = th.autograd.grad(aggregate_loss(full, mode="token_mean", mask=mask), log_prob)

    total_tokens = mask.sum()
    accumulated = th.zeros_like(log_prob)
    for rows in (slice(0, 2), slice(2, 6)):
        part, _ = r2vpo_objective(log_prob[rows], behavior[rows], adv[rows], mask=mask[rows], var_coef=0.3)
        (grad,) = th.autograd.grad(aggregate_loss(part, mode="token_mean", mask=mask[rows], normalizer=total_tokens), log_prob)
        accumulated += grad
    th.testing.assert_close(accumulated, full_grad)


def test_seq_mean_token_mean() -> None:
    loss = th.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = th.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(aggregate_loss(loss, mode="seq_mean_token_mean", mask=mask)) == pytest.approx((2.0 + 2.0) / 2)
    assert float(aggregate_loss(loss, mode="token_mean", mask=mask)) == pytest.approx(6.0 / 3)
    with pytest.raises(ValueError, match="Unknown aggregation"):
        aggregate_loss(loss, mode="sum")
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        aggregate_loss(loss[0], mode="seq_mean_token_mean")


def _log_prob_leaf_batch(n: int = 400, seed: int = 1) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Log-ratios spread over [-1, 1] (well outside any clip range) and advantages of both signs, float64."""
    gen = th.Generator().manual_seed(seed)
    behavior = -th.rand(n, generator=gen, dtype=th.float64) * 3.0
    log_prob = (behavior + 2.0 * th.rand(n, generator=gen, dtype=th.float64) - 1.0).requires_grad_(True)
    advantages = th.randn(n, generator=gen, dtype=th.float64)
    return log_prob, behavior, advantages


def _grad_wrt_log_prob(name: str, **coefs: float) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    log_prob, behavior, advantages = _log_prob_leaf_batch()
    loss, _ = get_objective(name)(log_prob, behavior, advantages, **coefs)
    (grad,) = th.autograd.grad(loss.sum(), log_prob)
    ratio = th.exp(log_prob.detach() - behavior)
    return loss.detach(), grad, ratio, advantages


@pytest.mark.parametrize(("low", "high"), [(0.2, None), (0.2, 0.28)])
def test_gppo_value_is_ppo_and_gradient_is_preserved(low: float, high: float | None) -> None:
    """GPPO: the clipped loss value, but d loss / d log pi = -(1 +- eps) A where the clip binds (PPO's is 0)."""
    loss, grad, ratio, adv = _grad_wrt_log_prob("gppo", clip_range=low, clip_range_high=high)
    log_prob, behavior, _ = _log_prob_leaf_batch()
    ppo_loss, _ = clip_objective(log_prob, behavior, adv, clip_range=low, clip_range_high=high)
    th.testing.assert_close(loss, ppo_loss.detach())
    upper = 1.0 + (low if high is None else high)
    clipped_high = (adv > 0) & (ratio > upper)
    clipped_low = (adv < 0) & (ratio < 1.0 - low)
    expected = th.where(clipped_high, -upper * adv, th.where(clipped_low, -(1.0 - low) * adv, -ratio * adv))
    assert clipped_high.any() and clipped_low.any()
    th.testing.assert_close(grad, expected)


def test_topr_gradient() -> None:
    """TOPR: -A grad(log pi) for A >= 0, -min(r, 1) A grad(log pi) for A < 0."""
    loss, grad, ratio, adv = _grad_wrt_log_prob("topr")
    expected = th.where(adv >= 0, -adv, -ratio.clamp(max=1.0) * adv)
    assert ((adv < 0) & (ratio > 1.0)).any() and ((adv < 0) & (ratio < 1.0)).any()
    th.testing.assert_close(grad, expected)
    th.testing.assert_close(loss, expected)  # value -A (resp. -min(r, 1) A): the same scale as r A at r = 1


def test_spo_gradient() -> None:
    """SPO: d/d log pi of -(r A - |A| (r - 1)^2 / (2 eps)) = -r (A - |A| (r - 1) / eps)."""
    loss, grad, ratio, adv = _grad_wrt_log_prob("spo", clip_range=0.2)
    th.testing.assert_close(grad, -ratio * (adv - adv.abs() * (ratio - 1.0) / 0.2))
    th.testing.assert_close(loss, -(ratio * adv - adv.abs() / 0.4 * (ratio - 1.0) ** 2))


@pytest.mark.parametrize("name", ["r2vpo", "clip", "gppo", "topr", "spo"])
def test_every_objective_is_registered_with_the_shared_signature(name: str) -> None:
    log_prob, behavior, adv = _log_prob_leaf_batch(n=8)
    mask = th.tensor([1, 1, 1, 1, 1, 1, 0, 0], dtype=th.bool)
    loss, stats = get_objective(name)(log_prob, behavior, adv, mask=mask)
    assert loss.shape == adv.shape
    assert stats.count == 6


@pytest.mark.parametrize("mode", ["mean", "token_mean", "seq_mean_token_mean"])
@pytest.mark.parametrize("normalizer", [None, 37.0])
def test_aggregation_weights_reproduce_aggregate_loss(mode: str, normalizer: float | None) -> None:
    from sb3_r2vpo.core import aggregation_weights

    gen = th.Generator().manual_seed(0)
    loss = th.randn(5, 7, generator=gen)
    mask = th.rand(5, 7, generator=gen) > 0.3
    weights = aggregation_weights(mask, mode=mode, normalizer=normalizer)
    expected = aggregate_loss(loss, mode=mode, mask=mask, normalizer=normalizer)
    th.testing.assert_close((loss * weights).sum(), expected)
