"""train() runs in training mode (BatchNorm statistics move, dropout active); rollouts and predict() in eval mode."""

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_r2vpo import R2VPO


class BatchNormDropoutExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: gym.spaces.Box) -> None:
        super().__init__(observation_space, features_dim=16)
        self.net = nn.Sequential(
            nn.Linear(int(np.prod(observation_space.shape)), 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU()
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


def _batch_norm(model: R2VPO) -> nn.BatchNorm1d:
    return next(m for m in model.policy.modules() if isinstance(m, nn.BatchNorm1d))


def test_train_and_eval_modes(tiny_kwargs: dict) -> None:
    tiny_kwargs["policy_kwargs"] = {"features_extractor_class": BatchNormDropoutExtractor, "share_features_extractor": True}
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **tiny_kwargs)
    batch_norm = _batch_norm(model)
    before = batch_norm.running_mean.clone()
    tracked_before = int(batch_norm.num_batches_tracked)

    model.learn(tiny_kwargs["n_steps"])
    minibatches = tiny_kwargs["n_epochs"] * (tiny_kwargs["n_steps"] // tiny_kwargs["batch_size"])
    # Only train() moves the statistics: one update per minibatch forward, none during the rollout.
    assert int(batch_norm.num_batches_tracked) - tracked_before == minibatches
    assert not th.equal(before, batch_norm.running_mean)

    after_training = batch_norm.running_mean.clone()
    obs = model.get_env().reset()
    actions = [model.predict(obs, deterministic=True)[0] for _ in range(5)]
    assert all(np.array_equal(actions[0], a) for a in actions)  # dropout is off in eval mode
    assert th.equal(after_training, batch_norm.running_mean)
    assert not model.policy.training
