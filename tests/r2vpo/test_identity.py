"""The identity tasks of SB3's test suite: the policy must learn to repeat the observation, in every action space."""

import gymnasium as gym
import pytest
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_r2vpo import R2VPO, R2VPOOff

DIM = 4

#: The gradient passes PPO's n_epochs=10 gives each sample: R2VPOOff's utd_ratio is its counterpart.
ALGORITHMS = [(R2VPO, {}), (R2VPOOff, {"replay_capacity": 4, "utd_ratio": 10})]

pytestmark = [pytest.mark.slow, pytest.mark.parametrize(("algorithm", "extra"), ALGORITHMS, ids=["R2VPO", "R2VPOOff"])]


@pytest.mark.parametrize(
    "env",
    [IdentityEnv(DIM), IdentityEnvMultiDiscrete(DIM), IdentityEnvMultiBinary(DIM)],
    ids=["Discrete", "MultiDiscrete", "MultiBinary"],
)
def test_discrete_identity(env: gym.Env, algorithm: type[R2VPO], extra: dict) -> None:
    vec_env = DummyVecEnv([lambda: env])
    model = algorithm("MlpPolicy", vec_env, gamma=0.4, seed=3, n_steps=512, policy_kwargs={"net_arch": [32]}, **extra)
    model.learn(8_000)
    evaluate_policy(model, vec_env, n_eval_episodes=20, reward_threshold=90, warn=False)


def test_continuous_identity(algorithm: type[R2VPO], extra: dict) -> None:
    env = IdentityEnvBox(eps=0.5)
    model = algorithm(
        "MlpPolicy", env, gamma=0.95, seed=0, n_steps=512, learning_rate=1e-3, policy_kwargs={"net_arch": [64, 64]}, **extra
    )
    model.learn(6_000)
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=90, warn=False)
