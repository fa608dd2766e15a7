import csv

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_r2vpo import R2VPO, R2VPOOff
from sb3_r2vpo.r2vpo import CnnPolicy, MlpPolicy, MultiInputPolicy

EXPECTED_TRAIN_KEYS = {
    "train/entropy_loss",
    "train/policy_gradient_loss",
    "train/value_loss",
    "train/approx_kl",
    "train/loss",
    "train/explained_variance",
    "train/n_updates",
    "train/learning_rate",
    "train/var_coef",
    "train/ratio_var",
    "train/ratio_batch_var",
    "train/var_penalty",
    "train/ratio_min",
    "train/ratio_max",
    "train/ratio_outside_0.2",
}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("var_coef", [0.06, "auto", "auto_0.1"])
def test_run(env_id: str, var_coef: float | str, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", env_id, var_coef=var_coef, seed=0, **tiny_kwargs)
    model.learn(256)
    assert model.num_timesteps >= 256


@pytest.mark.parametrize(
    "env",
    [IdentityEnv(4), IdentityEnvBox(eps=0.5), IdentityEnvMultiDiscrete(3), IdentityEnvMultiBinary(3)],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary"],
)
def test_all_action_spaces(env: gym.Env, tiny_kwargs: dict) -> None:
    R2VPO("MlpPolicy", env, seed=1, **tiny_kwargs).learn(128)


def test_logged_keys_are_finite(tmp_path, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny_kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(3 * tiny_kwargs["n_steps"])
    with open(tmp_path / "progress.csv") as file:
        rows = list(csv.DictReader(file))
    missing = (EXPECTED_TRAIN_KEYS | {"train/std"}) - set(rows[0])
    assert not missing, missing
    last = {key: float(value) for key, value in rows[-1].items() if value != ""}
    for key in EXPECTED_TRAIN_KEYS:
        assert np.isfinite(last[key]), key
    # ratio_var is the second moment about 1 and bounds the centred batch variance
    assert last["train/ratio_var"] >= last["train/ratio_batch_var"] - 1e-12
    assert last["train/ratio_min"] <= 1.0 <= last["train/ratio_max"] or last["train/ratio_var"] > 0
    assert last["train/var_penalty"] == pytest.approx(last["train/var_coef"] * last["train/ratio_var"], rel=0.5)


def test_adaptive_var_coef_moves_towards_target(tiny_kwargs: dict) -> None:
    """With a tiny target the measured ratio variance is above it, so lam must rise; with a huge one, fall."""
    high = R2VPO(
        "MlpPolicy",
        "CartPole-v1",
        var_coef="auto_1.0",
        target_var=1e-6,
        var_coef_lr=10.0,
        learning_rate=1e-2,
        seed=0,
        **tiny_kwargs,
    )
    high.learn(256)
    assert high.var_coef_value > 1.0
    low = R2VPO("MlpPolicy", "CartPole-v1", var_coef="auto_1.0", target_var=10.0, var_coef_lr=0.01, seed=0, **tiny_kwargs)
    low.learn(256)
    assert low.var_coef_value < 1.0
    fixed = R2VPO("MlpPolicy", "CartPole-v1", var_coef=1.0, var_coef_lr=10.0, seed=0, **tiny_kwargs)
    fixed.learn(256)
    assert fixed.var_coef_value == 1.0


def test_policy_aliases() -> None:
    assert R2VPO.policy_aliases["MlpPolicy"] is MlpPolicy
    assert R2VPO.policy_aliases["CnnPolicy"] is CnnPolicy
    assert R2VPO.policy_aliases["MultiInputPolicy"] is MultiInputPolicy


def _settings(algorithm: type[R2VPO], tiny_kwargs: dict) -> dict:
    """The tiny settings for either algorithm: R2VPOOff takes utd_ratio (with a replay of two rollouts) for n_epochs."""
    if algorithm is R2VPO:
        return tiny_kwargs
    n_epochs = tiny_kwargs.pop("n_epochs")
    return {**tiny_kwargs, "utd_ratio": n_epochs, "replay_capacity": 2}


BOTH = pytest.mark.parametrize("algorithm", [R2VPO, R2VPOOff])


@BOTH
def test_dict_observations(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    env = SimpleMultiObsEnv(random_start=False)
    algorithm("MultiInputPolicy", env, seed=0, **_settings(algorithm, tiny_kwargs)).learn(128)


@BOTH
def test_cnn_policy(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    tiny_kwargs["policy_kwargs"] = {"features_extractor_kwargs": {"features_dim": 16}}
    algorithm("CnnPolicy", env, seed=0, **_settings(algorithm, tiny_kwargs)).learn(128)


@BOTH
def test_gsde(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    model = algorithm("MlpPolicy", "Pendulum-v1", use_sde=True, sde_sample_freq=4, seed=0, **_settings(algorithm, tiny_kwargs))
    model.learn(128)
    assert model.use_sde


@BOTH
def test_subproc_vec_env_and_callbacks(tmp_path, algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=5)
    callbacks = CallbackList(
        [
            CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt"), name_prefix="r2vpo"),
            EvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, log_path=str(tmp_path / "eval")),
        ]
    )
    model = algorithm("MlpPolicy", env, seed=0, **_settings(algorithm, tiny_kwargs))
    model.learn(256, callback=callbacks)
    assert list((tmp_path / "ckpt").glob("r2vpo_*_steps.zip"))
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    env.close()


@BOTH
def test_progress_bar_and_tensorboard(tmp_path, algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = _settings(algorithm, tiny_kwargs)
    model = algorithm("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), seed=0, **settings)
    model.learn(192, progress_bar=True, tb_log_name="run")
    (run_dir,) = list(tmp_path.iterdir())
    assert run_dir.name == "run_1"
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    assert {"train/var_coef", "train/ratio_var", "train/ratio_outside_0.2"} <= set(accumulator.Tags()["scalars"])


def test_stats_window_size(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", stats_window_size=7, **tiny_kwargs)
    model.learn(256)
    assert model.ep_info_buffer is not None and model.ep_info_buffer.maxlen == 7
    assert model.ep_success_buffer is not None and model.ep_success_buffer.maxlen == 7


@BOTH
def test_target_kl_early_stop(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    tiny_kwargs["n_epochs"] = 50
    settings = _settings(algorithm, tiny_kwargs)
    model = algorithm("MlpPolicy", "CartPole-v1", target_kl=1e-6, learning_rate=1e-2, var_coef=0.0, seed=0, **settings)
    model.learn(tiny_kwargs["n_steps"])
    assert model._n_updates < 50


@BOTH
def test_clip_range_vf(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    algorithm("MlpPolicy", "CartPole-v1", clip_range_vf=0.2, **_settings(algorithm, tiny_kwargs)).learn(128)


@BOTH
def test_set_env(algorithm: type[R2VPO], tiny_kwargs: dict) -> None:
    model = algorithm("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), **_settings(algorithm, tiny_kwargs))
    model.learn(64)
    new_env = make_vec_env("CartPole-v1", n_envs=1, seed=7)
    model.set_env(new_env)
    assert model.get_env() is new_env
    model.learn(128, reset_num_timesteps=False)
    assert model.num_timesteps == 192


def test_target_var_schedule(tmp_path, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", target_var=lambda progress: 0.02 * progress, seed=0, **tiny_kwargs)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(4 * tiny_kwargs["n_steps"])
    with open(tmp_path / "progress.csv") as file:
        targets = [float(row["train/target_var"]) for row in csv.DictReader(file) if row["train/target_var"]]
    # train() runs after each of the 4 rollouts, at progress_remaining 0.75, 0.5, 0.25 and 0.
    assert targets == pytest.approx([0.015, 0.01, 0.005])
    assert model.var_coef_controller.target_var == 0.0


def test_target_var_schedule_going_negative_is_reported(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", target_var=lambda progress: progress - 0.5, seed=0, **tiny_kwargs)
    with pytest.raises(ValueError, match=r"target_var \(at progress_remaining=0\.\d+\)"):
        model.learn(4 * tiny_kwargs["n_steps"])
