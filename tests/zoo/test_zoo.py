"""The rl_zoo3 integration, through the real ``r2vpo-zoo`` command line (subprocesses) and rl_zoo3's own objects."""

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import optuna
import pytest
import yaml

from sb3_r2vpo import R2VPO, SPO, R2VPOOff
from sb3_r2vpo.zoo import convert_r2vpo_params, hyperparams_path, register, sample_r2vpo_off_params, sample_r2vpo_params
from sb3_r2vpo.zoo.registration import _preprocess_extra_schedules

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "MPLBACKEND": "Agg"}


def zoo(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sb3_r2vpo.zoo", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def zoo_ok(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = zoo(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train_quickly(algo: str, env_id: str, cwd: Path) -> subprocess.CompletedProcess:
    """Train the shipped entry for one tiny rollout and update (rl_zoo3's -params shrinks it)."""
    shrink = ["n_steps:16", "utd_ratio:1" if algo == "r2vpo_off" else "n_epochs:1"]
    return zoo_ok(
        "train", "--algo", algo, "--env", env_id, "-n", "16", "-f", "logs", "--eval-freq", "-1", "-params", *shrink, cwd=cwd
    )


def test_register_adds_algorithms_samplers_and_converters() -> None:
    from rl_zoo3 import hyperparams_opt, utils

    register()
    register()  # idempotent
    assert utils.ALGOS["r2vpo"] is R2VPO and utils.ALGOS["r2vpo_off"] is R2VPOOff and utils.ALGOS["spo"] is SPO
    assert hyperparams_opt.HYPERPARAMS_SAMPLER["r2vpo"] is sample_r2vpo_params
    assert hyperparams_opt.HYPERPARAMS_CONVERTER["r2vpo_off"] is convert_r2vpo_params
    assert hyperparams_opt.HYPERPARAMS_SAMPLER["spo"] is hyperparams_opt.HYPERPARAMS_SAMPLER["ppo"]
    for algo in ("r2vpo", "r2vpo_off", "spo"):
        entries = yaml.safe_load(hyperparams_path(algo).read_text())
        assert {"CartPole-v1", "Pendulum-v1", "default"} <= set(entries)


def test_a_study_from_before_the_floor_was_sampled_converts_without_one() -> None:
    raw = {"var_coef_mode": "adaptive", "var_coef_init": 0.5, "target_var": 0.01, "var_coef_lr": 0.1}
    raw.update(batch_size_pow=6, n_steps_pow=8, one_minus_gamma=0.01, one_minus_gae_lambda=0.05, learning_rate=3e-4)
    raw.update(ent_coef=1e-3, max_grad_norm=0.5, net_arch="small", activation_fn="tanh")
    kwargs = convert_r2vpo_params(raw)
    assert kwargs["var_coef"] == "auto_0.5" and kwargs["var_coef_min"] == 0.0 and "var_coef_update" not in kwargs


@pytest.mark.parametrize("sampler", [sample_r2vpo_params, sample_r2vpo_off_params])
def test_raw_parameters_survive_trial_reloading(sampler) -> None:
    """What --trial-id hands the converter (the study's raw params) rebuilds exactly the sampled kwargs."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        kwargs = sampler(trial, n_actions=1, n_envs=1, additional_args={})
        assert convert_r2vpo_params(trial.params) == kwargs
        assert "clip_range" not in kwargs
        var_coef = kwargs["var_coef"]
        assert (isinstance(var_coef, float) and var_coef > 0) or var_coef.startswith("auto_")
        algo_class = R2VPO if sampler is sample_r2vpo_params else R2VPOOff
        model = algo_class("MlpPolicy", "CartPole-v1", **kwargs)  # every sampled combination is valid
        if isinstance(var_coef, str):
            assert 0.0 <= kwargs["var_coef_min"] <= model.var_coef_controller.value
            assert model.var_coef_controller.var_coef_update == kwargs["var_coef_update"]
        study.tell(trial, 0.0)


def test_target_var_schedules_in_yml() -> None:
    converted = _preprocess_extra_schedules({"target_var": "lin_0.02"})
    assert converted["target_var"](1.0) == pytest.approx(0.02) and converted["target_var"](0.0) == 0.0
    assert _preprocess_extra_schedules({"target_var": 0.05})["target_var"](0.3) == 0.05
    with pytest.raises(ValueError, match=r"target_var='exp_0\.1'"):
        _preprocess_extra_schedules({"target_var": "exp_0.1"})


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["r2vpo", "r2vpo_off"])
@pytest.mark.parametrize(("env_id", "enjoy_steps"), [("CartPole-v1", "600"), ("dm_control/cartpole-swingup-v0", "1001")])
def test_train_enjoy_and_plot(algo: str, env_id: str, enjoy_steps: str, tmp_path: Path) -> None:
    """The shipped entry trains for real (no shrinking), then rl_zoo3's enjoy and plot_train read the run back."""
    train = zoo_ok(
        "train", "--algo", algo, "--env", env_id, "-n", "2048", "-f", "logs", "--seed", "0", "--eval-freq", "-1", cwd=tmp_path
    )
    assert f"Loading hyperparameters from: {hyperparams_path(algo)}" in train.stdout  # the packaged default
    name = env_id.replace("/", "-")
    assert (tmp_path / "logs" / algo / f"{name}_1" / f"{name}.zip").exists()
    enjoy = zoo_ok(
        "enjoy", "--algo", algo, "--env", env_id, "-f", "logs", "--exp-id", "1", "-n", enjoy_steps, "--no-render", cwd=tmp_path
    )
    assert "Mean reward" in enjoy.stdout
    zoo_ok("plot_train", "--algo", algo, "--env", env_id, "-f", "logs", cwd=tmp_path)


def test_dm_control_episode_end_is_a_truncation() -> None:
    import shimmy  # noqa: F401

    env = gym.make("dm_control/cartpole-swingup-v0")
    env.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    # A truncation, which SB3 bootstraps with the value function (TimeLimit.truncated), not a terminal state.
    assert truncated and not terminated and steps == 1000


@pytest.mark.slow
def test_optimize_with_journal_storage_then_reload_a_trial(tmp_path: Path) -> None:
    common = ["--algo", "r2vpo", "--env", "Pendulum-v1", "-f", "logs", "--storage", "study.log", "--study-name", "s"]
    optimize = zoo(
        "train", *common, "-n", "1024", "-optimize", "--n-trials", "2", "--sampler", "tpe", "--pruner", "median",
        "--n-evaluations", "1", "--eval-episodes", "2", "--seed", "0", cwd=tmp_path,
    )  # fmt: skip
    assert optimize.returncode == 0, optimize.stderr[-3000:]
    assert "Number of finished trials:  2" in optimize.stdout
    assert (tmp_path / "study.log").exists()

    reload = zoo("train", *common, "-n", "512", "--trial-id", "1", "--eval-freq", "-1", cwd=tmp_path)
    assert reload.returncode == 0, reload.stderr[-3000:]
    assert "Loading from Optuna study" in reload.stdout
    assert "var_coef" in reload.stdout


def test_unknown_env_id_is_a_clear_error(tmp_path: Path) -> None:
    result = zoo("train", "--algo", "r2vpo", "--env", "NoSuchEnv-v0", "-n", "64", cwd=tmp_path)
    assert result.returncode != 0
    assert "NoSuchEnv-v0 not found in gym registry" in result.stderr


def test_malformed_yml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("CartPole-v1:\n  n_steps: [32\n")
    result = zoo("train", "--algo", "r2vpo", "--env", "CartPole-v1", "-n", "64", "-conf", "bad.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "bad.yml" in result.stderr and "while parsing" in result.stderr
    (tmp_path / "unknown.yml").write_text("CartPole-v1:\n  n_timesteps: 64\n  policy: MlpPolicy\n  clip_range: 0.2\n")
    result = zoo("train", "--algo", "r2vpo", "--env", "CartPole-v1", "-n", "64", "-conf", "unknown.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "clip_range" in result.stderr


def test_cli_usage(tmp_path: Path) -> None:
    assert "usage: r2vpo-zoo" in zoo("--help", cwd=tmp_path).stdout
    bad = zoo("dance", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown script 'dance'" in bad.stderr


SHIPPED_ENTRIES = sorted(k for k in yaml.safe_load(hyperparams_path("r2vpo").read_text()) if k != "default")
SPO_ENTRIES = sorted(k for k in yaml.safe_load(hyperparams_path("spo").read_text()) if k != "default")


@pytest.mark.parametrize("algo", ["r2vpo", "r2vpo_off"])
# One entry stays in the fast loop; the CLI start-up makes each of the others a few seconds.
@pytest.mark.parametrize(
    "env_id",
    [env_id if env_id == "CartPole-v1" else pytest.param(env_id, marks=pytest.mark.slow) for env_id in SHIPPED_ENTRIES],
)
def test_every_shipped_entry_builds_and_trains(algo: str, env_id: str, tmp_path: Path) -> None:
    """
    Every shipped entry builds (wrappers, normalization, policy kwargs, constructor) and completes an update through
    the real CLI, MuJoCo and DeepMind Control included.
    """
    assert "Saving to" in train_quickly(algo, env_id, tmp_path).stdout


@pytest.mark.parametrize(
    "env_id",
    [env_id if env_id == "CartPole-v1" else pytest.param(env_id, marks=pytest.mark.slow) for env_id in SPO_ENTRIES],
)
def test_every_spo_entry_builds_and_trains(env_id: str, tmp_path: Path) -> None:
    assert "Saving to" in train_quickly("spo", env_id, tmp_path).stdout


def test_spo_entries_are_ppos_own() -> None:
    """
    SPO's shipped entries are PPO's settings unchanged: rl_zoo3's, else the benchmarks' DeepMind Control ones (the
    shared one for a dm_control id the benchmarks have no entry for).
    """
    from benchmarks.zoo_runs import LOCAL_PPO_HYPERPARAMS, ppo_hyperparams_file

    rl_zoo3_ppo = yaml.safe_load(ppo_hyperparams_file().read_text())
    local_ppo = yaml.safe_load(LOCAL_PPO_HYPERPARAMS.read_text())
    for env_id, entry in yaml.safe_load(hyperparams_path("spo").read_text()).items():
        fallback = local_ppo["dm_control/ball_in_cup-catch-v0"] if env_id.startswith("dm_control/") else None
        assert entry == rl_zoo3_ppo.get(env_id, local_ppo.get(env_id, fallback or rl_zoo3_ppo["default"])), env_id


@pytest.mark.skipif(
    ctypes.util.find_library("EGL") is None, reason="headless MuJoCo rendering needs libEGL (apt-get install libegl1)"
)
@pytest.mark.slow
def test_record_video_headless_dm_control(tmp_path: Path) -> None:
    env_id = "dm_control/cartpole-swingup-v0"
    train_quickly("r2vpo", env_id, tmp_path)
    zoo_ok(
        "record_video",
        "--algo",
        "r2vpo",
        "--env",
        env_id,
        "-f",
        "logs",
        "--exp-id",
        "1",
        "-n",
        "50",
        "-o",
        "videos",
        cwd=tmp_path,
    )
    assert list((tmp_path / "videos").glob("*.mp4"))


NAN_ENV_MODULE = '''
import math

import gymnasium as gym


class NanOnceCartPole(gym.Wrapper):
    """CartPole whose very first instance in the process returns one NaN reward at its 40th step."""

    poisoned = False

    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == 40 and not NanOnceCartPole.poisoned:
            NanOnceCartPole.poisoned = True
            reward = math.nan
        return obs, reward, terminated, truncated, info


gym.register("NanOnceCartPole-v0", entry_point=lambda **kwargs: NanOnceCartPole(gym.make("CartPole-v1", **kwargs)))
'''


@pytest.mark.slow
def test_a_diverging_trial_is_pruned_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "nan_once_env.py").write_text(NAN_ENV_MODULE)
    (tmp_path / "conf.yml").write_text("NanOnceCartPole-v0:\n  n_timesteps: 256\n  policy: MlpPolicy\n")
    result = subprocess.run(
        [sys.executable, "-m", "sb3_r2vpo.zoo", "train", "--algo", "r2vpo", "--env", "NanOnceCartPole-v0",
         "--gym-packages", "nan_once_env", "-conf", "conf.yml", "-n", "256", "-optimize", "--n-trials", "2",
         "--sampler", "random", "--pruner", "none", "--n-evaluations", "1", "--eval-episodes", "1", "-f", "logs"],
        cwd=tmp_path, env={**ENV, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Non-finite" in result.stdout  # our error, printed by rl_zoo3 before pruning
    assert "Trial 0 pruned" in result.stderr
    assert "Number of finished trials:  2" in result.stdout
