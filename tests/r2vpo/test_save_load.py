import io

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_r2vpo import R2VPO


def _params_equal(a: dict, b: dict) -> bool:
    return all(th.equal(a[key], b[key]) for key in a)


def test_save_load_restores_policy_and_dual_state(tmp_path, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", var_coef="auto_0.5", target_var=1e-4, var_coef_lr=5.0, seed=0, **tiny_kwargs)
    model.learn(256)
    lam = model.var_coef_value
    assert lam != 0.5  # the dual variable moved
    obs = np.array([[0.01, -0.02, 0.03, 0.0]], dtype=np.float32)
    action, _ = model.predict(obs, deterministic=True)

    model.save(tmp_path / "model.zip")
    loaded = R2VPO.load(tmp_path / "model.zip", env=model.get_env())
    assert loaded.var_coef_value == lam
    assert loaded.var_coef_controller.state_dict() == model.var_coef_controller.state_dict()
    assert loaded.var_coef == "auto_0.5" and loaded.var_coef_controller.target_var == 1e-4
    assert _params_equal(model.policy.state_dict(), loaded.policy.state_dict())
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)

    # Training continues from where it stopped: counters and lam carry on.
    updates, steps = loaded._n_updates, loaded.num_timesteps
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded._n_updates > updates and loaded.num_timesteps == steps + 128
    assert loaded.var_coef_controller.n_steps > model.var_coef_controller.n_steps


def test_loaded_model_continues_exactly_like_the_original(tmp_path, tiny_kwargs: dict) -> None:
    """Same data, same lam: one train() call from the saved model equals one from the original."""
    model = R2VPO("MlpPolicy", "Pendulum-v1", var_coef="auto", var_coef_lr=1.0, seed=3, **tiny_kwargs)
    model.learn(128)
    model.save(tmp_path / "model.zip")
    loaded = R2VPO.load(tmp_path / "model.zip", env=model.get_env())
    loaded.rollout_buffer = model.rollout_buffer  # the buffer is not saved (as in SB3)
    loaded.set_logger(configure(None, []))
    for algorithm in (model, loaded):
        th.manual_seed(0)
        np.random.seed(0)  # the rollout buffer shuffles with numpy's global generator
        algorithm.train()
    assert loaded.var_coef_value == model.var_coef_value
    assert _params_equal(model.policy.state_dict(), loaded.policy.state_dict())


def test_get_set_parameters(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", IdentityEnv(3), seed=0, **tiny_kwargs)
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    other = R2VPO("MlpPolicy", IdentityEnv(3), seed=1, **tiny_kwargs)
    assert not _params_equal(other.policy.state_dict(), model.policy.state_dict())
    other.set_parameters(params, exact_match=True)
    assert _params_equal(other.policy.state_dict(), model.policy.state_dict())
    with pytest.raises(ValueError):
        other.set_parameters({"policy": params["policy"]}, exact_match=True)


def test_exclude_include(tmp_path, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", IdentityEnvBox(eps=0.5), seed=0, verbose=0, **tiny_kwargs)
    model.save(tmp_path / "excluded.zip", exclude=["verbose", "var_coef_controller"])
    loaded = R2VPO.load(tmp_path / "excluded.zip")
    assert loaded.verbose == 0  # default value since excluded
    assert loaded.var_coef_value == model.var_coef_value  # default controller (from the constructor) since excluded

    model.save(tmp_path / "included.zip", include=["rollout_buffer"])
    loaded = R2VPO.load(tmp_path / "included.zip")
    assert hasattr(loaded, "rollout_buffer") and loaded.rollout_buffer.buffer_size == model.rollout_buffer.buffer_size


def test_save_to_buffer(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **tiny_kwargs)
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    loaded = R2VPO.load(buffer)
    assert _params_equal(model.policy.state_dict(), loaded.policy.state_dict())


def test_policy_save_load(tmp_path, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny_kwargs)
    model.learn(64)
    obs = model.get_env().reset()
    action, _ = model.predict(obs, deterministic=True)
    model.policy.save(tmp_path / "policy.pkl")
    policy = ActorCriticPolicy.load(tmp_path / "policy.pkl")
    np.testing.assert_allclose(policy.predict(obs, deterministic=True)[0], action, rtol=1e-6)
