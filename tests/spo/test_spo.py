"""SPO (the comparison algorithm): SB3's checks for PPO, and the one thing it changes, the per-sample penalty."""

from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.utils import LinearSchedule

from sb3_r2vpo import R2VPO, SPO
from sb3_r2vpo.core import spo_objective


def _minibatch(behavior_log_prob: th.Tensor) -> RolloutBufferSamples:
    """A minibatch whose only field the objective reads is the behavior log-probability."""
    zeros = th.zeros_like(behavior_log_prob)
    return RolloutBufferSamples(zeros, zeros, zeros, behavior_log_prob, zeros, zeros)


@pytest.mark.slow
def test_discrete_and_continuous_identity() -> None:
    model = SPO("MlpPolicy", IdentityEnv(4), gamma=0.4, seed=3, n_steps=512, policy_kwargs={"net_arch": [32]})
    model.learn(8_000)
    evaluate_policy(model, model.get_env(), n_eval_episodes=20, reward_threshold=90, warn=False)
    env = IdentityEnvBox(eps=0.5)
    model = SPO("MlpPolicy", env, gamma=0.95, seed=0, n_steps=512, learning_rate=1e-3, policy_kwargs={"net_arch": [64, 64]})
    model.learn(6_000)
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=90, warn=False)


def test_the_penalty_holds_ratios_at_the_clip_boundary_where_no_penalty_does_not() -> None:
    """Many passes over one rollout: SPO's ratios end near 1 +- eps; R2VPO with lam = 0 (plain PG) runs past it."""
    settings = {"n_steps": 256, "batch_size": 256, "n_epochs": 60, "learning_rate": 3e-3, "seed": 0}
    spo = SPO("MlpPolicy", "CartPole-v1", clip_range=0.1, **settings)
    spo.learn(256)
    unpenalized = R2VPO("MlpPolicy", "CartPole-v1", var_coef=0.0, **settings)
    unpenalized.learn(256)
    spo_max, free_max = spo.logger.name_to_value["train/ratio_max"], unpenalized.logger.name_to_value["train/ratio_max"]
    assert spo_max < 1.1 + 0.05 < free_max
    assert spo.logger.name_to_value["train/clip_range"] == 0.1


def test_the_loss_is_the_cores() -> None:
    model = SPO("MlpPolicy", "CartPole-v1", clip_range=0.3, n_steps=64, seed=0)
    log_prob, behavior, advantages = th.randn(16), th.randn(16), th.randn(16)
    loss, stats = model._policy_objective(log_prob, advantages, _minibatch(behavior))
    reference, reference_stats = spo_objective(log_prob, behavior, advantages, clip_range=0.3)
    assert th.equal(loss, reference)
    assert th.equal(stats.sums, reference_stats.sums)


def test_clip_range_schedule_to_zero_stops_the_policy_not_the_critic() -> None:
    model = SPO("MlpPolicy", "CartPole-v1", clip_range=LinearSchedule(0.2, 0.0, 1.0), n_steps=64, batch_size=64, seed=0)
    model._current_progress_remaining = 0.0
    log_prob = th.randn(8, requires_grad=True)
    loss, _ = model._policy_objective(log_prob, th.randn(8), _minibatch(th.randn(8)))
    loss.sum().backward()
    assert th.isfinite(loss).all() and log_prob.grad is not None and th.all(log_prob.grad == 0)
    model.learn(128)  # the last update of an annealed clip range trains without NaN


def test_save_load_keeps_predictions_and_eps(tmp_path: Path) -> None:
    model = SPO("MlpPolicy", "Pendulum-v1", clip_range=0.15, n_steps=64, batch_size=32, seed=0)
    model.learn(128)
    observations = np.stack([model.observation_space.sample() for _ in range(5)])
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "spo")
    loaded = SPO.load(tmp_path / "spo")
    assert loaded.clip_range == 0.15
    np.testing.assert_allclose(loaded.predict(observations, deterministic=True)[0], actions)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, float("nan"), "0.2"])
def test_bad_clip_range(bad: object) -> None:
    with pytest.raises(ValueError, match="clip_range"):
        SPO("MlpPolicy", "CartPole-v1", clip_range=bad)  # type: ignore[arg-type]


def test_r2vpo_settings_are_not_spos() -> None:
    with pytest.raises(TypeError, match="var_coef"):
        SPO("MlpPolicy", "CartPole-v1", var_coef="auto")  # type: ignore[call-arg]
