import io
import json
import pathlib
import zipfile

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_r2vpo import R2VPO, R2VPOOff


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
    model = R2VPO("MlpPolicy", IdentityEnvBox(eps=0.5), seed=0, verbose=0, var_coef_lr=5.0, **tiny_kwargs)
    model.learn(128)
    assert model.var_coef_value != 1.0
    model.save(tmp_path / "excluded.zip", exclude=["verbose", "var_coef_state"])
    loaded = R2VPO.load(tmp_path / "excluded.zip")
    assert loaded.verbose == 0  # default value since excluded
    assert loaded.var_coef_value == 1.0  # lam starts afresh from var_coef="auto" since its state was excluded

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


DATA = pathlib.Path(__file__).parent.parent / "data"
#: The controller pickled in tests/data/r2vpo_v0.1.0.zip (saved with these settings by 0.1.0 before the plain-data format).
LEGACY_STATE = {"value": 0.4980505347776556, "var_coef_lr": 3.0, "var_coef_max": 50.0, "n_steps": 8}


def _trained_adaptive(tiny_kwargs: dict) -> R2VPO:
    model = R2VPO("MlpPolicy", "Pendulum-v1", var_coef="auto_0.5", target_var=1e-4, var_coef_lr=3.0, seed=0, **tiny_kwargs)
    model.learn(128)
    assert model.var_coef_value != 0.5
    return model


def test_dual_state_is_saved_as_plain_data(tmp_path, tiny_kwargs: dict) -> None:
    model = _trained_adaptive(tiny_kwargs)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    assert "var_coef_controller" not in data
    assert data["var_coef_state"] == {
        "var_coef": "auto_0.5",
        "value": model.var_coef_value,
        "n_steps": model.var_coef_controller.n_steps,
    }
    assert data["var_coef_lr"] == 3.0 and data["var_coef_max"] == 100.0


@pytest.mark.parametrize("how", ["kwargs", "custom_objects"])
@pytest.mark.parametrize("source", ["current", "pickled controller (0.1.0)"])
def test_load_overrides_of_the_dual_settings_take_effect(tmp_path, tiny_kwargs: dict, how: str, source: str) -> None:
    if source == "current":
        path = tmp_path / "model.zip"
        _trained_adaptive(tiny_kwargs).save(path)
    else:
        path = DATA / "r2vpo_v0.1.0.zip"
    overrides = {"var_coef": 0.06, "var_coef_lr": 0.0, "var_coef_max": 5.0}
    if how == "kwargs":
        loaded = R2VPO.load(path, env=make_vec_env("Pendulum-v1", n_envs=1, seed=0), **overrides)
    else:
        loaded = R2VPO.load(path, env=make_vec_env("Pendulum-v1", n_envs=1, seed=0), custom_objects=overrides)
    controller = loaded.var_coef_controller
    assert (controller.value, controller.adaptive, controller.var_coef_lr, controller.var_coef_max) == (0.06, False, 0.0, 5.0)
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.var_coef_value == 0.06


def test_a_new_dual_step_size_continues_from_the_saved_lam(tmp_path, tiny_kwargs: dict) -> None:
    model = _trained_adaptive(tiny_kwargs)
    model.save(tmp_path / "model.zip")
    loaded = R2VPO.load(tmp_path / "model.zip", var_coef_lr=0.0)
    assert loaded.var_coef_value == model.var_coef_value and loaded.var_coef_controller.var_coef_lr == 0.0
    assert loaded.var_coef_controller.n_steps == model.var_coef_controller.n_steps


def test_a_var_coef_max_below_the_saved_lam_is_refused(tmp_path, tiny_kwargs: dict) -> None:
    model = _trained_adaptive(tiny_kwargs)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"saved lam=.* is above var_coef_max=0\.01"):
        R2VPO.load(tmp_path / "model.zip", var_coef_max=0.01)


@pytest.mark.parametrize("algorithm", [R2VPO, R2VPOOff])
def test_files_with_a_pickled_controller_still_load(tmp_path, algorithm: type[R2VPO]) -> None:
    name = "r2vpo_v0.1.0.zip" if algorithm is R2VPO else "r2vpo_off_v0.1.0.zip"
    loaded = algorithm.load(DATA / name, env=make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    controller = loaded.var_coef_controller
    assert controller.adaptive and controller.target_var == 1e-4
    assert (controller.var_coef_lr, controller.var_coef_max, controller.n_steps) == (3.0, 50.0, 8)
    assert controller.value == pytest.approx(LEGACY_STATE["value"], abs=1e-3)
    loaded.learn(64, reset_num_timesteps=False)
    assert controller.n_steps > 8
    # Saved again, the file holds plain data only and loads to the same lam.
    loaded.save(tmp_path / "resaved.zip")
    again = algorithm.load(tmp_path / "resaved.zip")
    assert again.var_coef_controller.state_dict() == controller.state_dict()


def test_r2vpo_off_load_overrides_take_effect(tmp_path) -> None:
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, replay_capacity=2, var_coef_lr=3.0, seed=0)
    model.learn(128)
    model.save(tmp_path / "off.zip")
    loaded = R2VPOOff.load(tmp_path / "off.zip", var_coef=0.06, var_coef_lr=0.0, var_coef_max=5.0)
    controller = loaded.var_coef_controller
    assert (controller.value, controller.adaptive, controller.var_coef_max) == (0.06, False, 5.0)
    continued = R2VPOOff.load(tmp_path / "off.zip", env=model.get_env())
    assert continued.var_coef_value == model.var_coef_value and continued.replay_capacity == 2
