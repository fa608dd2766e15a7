"""Shared helpers of the benchmark scripts: evaluation curves, run files that survive reruns, RL Zoo-style configs."""

import functools
import importlib
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

import sb3_r2vpo

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HYPERPARAMS_DIR = Path(__file__).resolve().parents[1] / "hyperparams"


def versions() -> dict[str, str]:
    """Library versions recorded in every result file."""
    return {
        "python": platform.python_version(),
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gym.__version__,
        "sb3_r2vpo": sb3_r2vpo.__version__,
    }


def load_zoo_entry(path: Path, env_id: str, fallback: Path | None = None) -> dict[str, Any]:
    """
    Read one RL Zoo hyperparameter entry: from ``path``, else from ``fallback``, else ``path``'s ``default``.

    :param path: the yml file
    :param env_id: the environment id
    :param fallback: a second yml file to look in before ``default``
    :return: a copy of the entry
    """
    with open(path) as file:
        entries = yaml.safe_load(file)
    if env_id not in entries and fallback is not None:
        with open(fallback) as file:
            extra = yaml.safe_load(file)
        if env_id in extra:
            return dict(extra[env_id])
    if env_id in entries:
        return dict(entries[env_id])
    if "default" not in entries:
        raise KeyError(f"{path} has no entry for {env_id} and no default entry")
    return dict(entries["default"])


def _schedule(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[len("lin_") :]), 0.0, 1.0)
    return value


def zoo_entry_to_kwargs(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split a zoo entry into algorithm kwargs and environment settings, as rl_zoo3's ExpManager does for the
    keys these benchmarks use (``lin_`` schedules, ``policy_kwargs`` strings, ``normalize``, ``n_envs``).

    :param entry: the zoo entry
    :return: ``(algo_kwargs, env_settings)`` with env settings ``n_envs``, ``n_timesteps``, ``normalize`` and
        ``env_wrapper`` (a list of dotted class paths)
    """
    entry = dict(entry)
    wrappers = entry.pop("env_wrapper", [])
    env_settings = {
        "n_envs": int(entry.pop("n_envs", 1)),
        "n_timesteps": int(float(entry.pop("n_timesteps"))),
        "normalize": entry.pop("normalize", False),
        "env_wrapper": [wrappers] if isinstance(wrappers, str) else list(wrappers),
    }
    kwargs = {key: _schedule(value) for key, value in entry.items()}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"dict": dict, "nn": nn})
    return kwargs, env_settings


def _import_class(dotted_path: str) -> Any:
    module_name, class_name = dotted_path.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name)


def _wrap(env: gym.Env, wrapper_paths: list[str]) -> gym.Env:
    for path in wrapper_paths:
        env = _import_class(path)(env)
    return env


def make_env(
    env_id: str, n_envs: int, seed: int, normalize: bool | dict[str, Any], env_wrapper: list[str] | None = None
) -> VecEnv:
    """
    A seeded vectorized env, optionally with gymnasium wrappers (rl_zoo3's ``env_wrapper``) and VecNormalize.

    :param env_id: environment id (``dm_control/...`` ids need ``import shimmy``, done here when shimmy is installed)
    :param n_envs: number of copies
    :param seed: seed of the first copy
    :param normalize: False, True or VecNormalize kwargs
    :param env_wrapper: dotted paths of wrapper classes applied to each copy, in order
    :return: the env
    """
    if env_id.startswith("dm_control/"):
        import shimmy  # noqa: F401  (registers the dm_control/* ids)
    wrappers = list(env_wrapper or [])
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=functools.partial(_wrap, wrapper_paths=wrappers))
    if normalize:
        env = VecNormalize(env, **(normalize if isinstance(normalize, dict) else {}))
    return env


class EvalCurveCallback(BaseCallback):
    """
    Evaluate the deterministic policy on a separate env every ``eval_freq`` environment steps.

    The untrained policy is evaluated once before training (``initial_mean_reward``), outside the curve: a
    deterministic random network can score well on some tasks (CartPole) and must not count as "reached".

    :param eval_env_id: id of the evaluation env
    :param eval_freq: evaluation period, in total environment steps
    :param n_eval_episodes: episodes per evaluation
    :param seed: seed of the evaluation env
    """

    def __init__(
        self, eval_env_id: str, eval_freq: int, n_eval_episodes: int, seed: int, env_wrapper: list[str] | None = None
    ) -> None:
        super().__init__()
        self.eval_env_id = eval_env_id
        self.env_wrapper = env_wrapper
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.seed = seed
        self.curve: list[dict[str, float]] = []
        self.initial_mean_reward = float("nan")
        self._next_eval = eval_freq

    def _on_training_start(self) -> None:
        self.initial_mean_reward = self._run_evaluation()[0]

    def evaluate(self) -> float:
        """Run one evaluation now and append it to the curve."""
        mean_reward, std_reward = self._run_evaluation()
        self.curve.append({"timesteps": int(self.num_timesteps), "mean_reward": mean_reward, "std": std_reward})
        return mean_reward

    def _run_evaluation(self) -> tuple[float, float]:
        eval_env = make_env(self.eval_env_id, 1, self.seed + 10_000, False, self.env_wrapper)
        train_env = self.model.get_env()
        if isinstance(train_env, VecNormalize):
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
            eval_env.obs_rms = train_env.obs_rms
        # Without return_episode_rewards, evaluate_policy returns two floats.
        mean_reward, std_reward = cast(
            tuple[float, float], evaluate_policy(self.model, eval_env, n_eval_episodes=self.n_eval_episodes)
        )
        eval_env.close()
        return float(mean_reward), float(std_reward)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self.evaluate()
            self._next_eval += self.eval_freq
        return True


#: The ``train/*`` values a run keeps per update (those an algorithm logs): the dual variable and what drives it.
TRAIN_LOG_KEYS = ("var_coef", "target_var", "ratio_var", "approx_kl", "clip_fraction")
#: At most this many updates are kept per run (evenly spaced), so that long runs stay small files.
TRAIN_LOG_POINTS = 250


class TrainLogCallback(BaseCallback):
    """
    Keep the :data:`TRAIN_LOG_KEYS` an update logged, read from the logger before the next dump (an update's values
    stay there until the dump after the next rollout), for every ``stride``-th update; and count the optimizer's
    steps (``gradient_steps``), the compute an algorithm spends whatever its epochs, replay or early stopping.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log: list[dict[str, float]] = []
        self.gradient_steps = 0
        self._stride = 1
        self._updates_seen = 0

    def _count_step(self, *_: Any) -> None:
        self.gradient_steps += 1

    def _on_training_start(self) -> None:
        per_update = getattr(self.model, "n_steps", 1) * self.model.n_envs
        expected = max(1, self.model._total_timesteps // max(per_update, 1))
        self._stride = max(1, math.ceil(expected / TRAIN_LOG_POINTS))
        self._hook = self.model.policy.optimizer.register_step_post_hook(self._count_step)

    def _on_training_end(self) -> None:
        self._record()
        self._hook.remove()

    def _record(self) -> None:
        values = self.logger.name_to_value
        if not any(f"train/{key}" in values for key in TRAIN_LOG_KEYS):
            return  # no update since the last dump
        self._updates_seen += 1
        if (self._updates_seen - 1) % self._stride == 0:
            point = {"timesteps": float(self.num_timesteps)}
            point.update({key: float(values[f"train/{key}"]) for key in TRAIN_LOG_KEYS if f"train/{key}" in values})
            self.log.append(point)

    def _on_rollout_start(self) -> None:
        self._record()

    def _on_step(self) -> bool:
        return True


def train_and_evaluate(
    model: BaseAlgorithm,
    env_id: str,
    total_timesteps: int,
    seed: int,
    eval_freq: int,
    n_eval_episodes: int = 10,
    env_wrapper: list[str] | None = None,
) -> dict[str, Any]:
    """
    Train with an evaluation curve and a final evaluation.

    :return: ``initial_mean_reward``, ``curve``, ``final_mean_reward``, ``wall_time_s`` (training only),
        ``gradient_steps`` and ``train_log`` (see :class:`TrainLogCallback`)
    """
    callback = EvalCurveCallback(env_id, eval_freq, n_eval_episodes, seed, env_wrapper)
    train_log = TrainLogCallback()
    start = time.perf_counter()
    model.learn(total_timesteps, callback=CallbackList([callback, train_log]))
    wall_time = time.perf_counter() - start
    if not callback.curve or callback.curve[-1]["timesteps"] < model.num_timesteps:
        callback.evaluate()
    return {
        "initial_mean_reward": callback.initial_mean_reward,
        "curve": callback.curve,
        "final_mean_reward": callback.curve[-1]["mean_reward"],
        "wall_time_s": wall_time,
        "gradient_steps": train_log.gradient_steps,
        "train_log": train_log.log,
    }


def steps_to_threshold(curve: list[dict[str, float]], threshold: float) -> float:
    """First evaluation step whose mean reward reaches ``threshold`` (inf when never)."""
    for point in curve:
        if point["mean_reward"] >= threshold:
            return float(point["timesteps"])
    return math.inf


def median_steps_to(curves: list[list[dict[str, float]]], level: float) -> float:
    """Median over runs of the first evaluation step reaching ``level`` (inf when the median run never does)."""
    return float(np.median([steps_to_threshold(curve, level) for curve in curves]))


def steps_ratio(steps: float, reference_steps: float) -> float:
    """
    ``steps / reference_steps``: the sample-efficiency ratio of two medians from :func:`median_steps_to`; inf when
    only the algorithm never gets there, nan when the reference itself never does (there is no ratio to give).
    """
    return steps / reference_steps if math.isfinite(reference_steps) else math.nan


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as pretty JSON, creating folders (inf is written as the string "inf")."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def _clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: _clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [_clean(v) for v in value]
        if isinstance(value, np.generic):
            return _clean(value.item())
        return value

    path.write_text(json.dumps(_clean(payload), indent=2) + "\n")


def curves_on_first_steps(curves: list[list[dict[str, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Several evaluation curves on the first curve's steps (linear interpolation): ``(steps, values[curve, step])``."""
    steps = np.array([p["timesteps"] for p in curves[0]], dtype=float)
    values = np.array(
        [np.interp(steps, [p["timesteps"] for p in c], [p["mean_reward"] for p in c]) for c in curves], dtype=float
    )
    return steps, values


def mean_curve(curves: list[list[dict[str, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of several evaluation curves on the first curve's steps (linear interpolation)."""
    steps, values = curves_on_first_steps(curves)
    return steps, values.mean(axis=0), values.std(axis=0)


def curve_panels(n_panels: int) -> tuple[Any, np.ndarray]:
    """A row of ``n_panels`` learning-curve axes (headless matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(6 * n_panels, 4), squeeze=False)
    return fig, axes[0]


def plot_mean_curve(ax: Any, curves: list[list[dict[str, float]]], label: str) -> None:
    """Mean evaluation curve over seeds with a one-standard-deviation band."""
    steps, mean, std = mean_curve(curves)
    ax.plot(steps, mean, label=label)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.15)


def finish_curve_panel(ax: Any, title: str, threshold: float | None = None, threshold_label: str | None = None) -> None:
    """Title, axis labels, optional threshold line and legend of a learning-curve panel."""
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=threshold_label)
    ax.set_title(title)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic eval return (10 episodes)")
    ax.legend(fontsize=8)


def save_figure_and_json(fig: Any, out_dir: Path, figure_name: str, json_name: str, payload: dict[str, Any]) -> None:
    """Save a benchmark's figure (PNG) and figures (JSON) side by side."""
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / figure_name, dpi=100)
    write_json(out_dir / json_name, payload)
