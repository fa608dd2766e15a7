"""
Optuna samplers for ``r2vpo`` and ``r2vpo_off`` in rl_zoo3's format.

Each sampler suggests *raw* parameters (``batch_size_pow``, ``one_minus_gamma``, ``var_coef_mode``, ...) and
returns them converted; the matching converter rebuilds the algorithm's keyword arguments from the raw names
alone, which is what ``--trial-id`` reloading hands it (``study.trials[i].params``).
"""

from typing import Any

import optuna
from rl_zoo3.hyperparams_opt import convert_onpolicy_params

from sb3_r2vpo.core import VAR_COEF_UPDATES
from sb3_r2vpo.core.replay_sampling import REPLAY_SAMPLINGS


def _sample_common(trial: optuna.Trial) -> dict[str, Any]:
    """PPO's on-policy knobs, sampled as rl_zoo3 samples them for PPO (without ``clip_range``)."""
    return {
        "batch_size_pow": trial.suggest_int("batch_size_pow", 2, 10),
        "n_steps_pow": trial.suggest_int("n_steps_pow", 5, 12),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True),
        "max_grad_norm": trial.suggest_float("max_grad_norm", 0.3, 2),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }


def _sample_penalty(trial: optuna.Trial) -> dict[str, Any]:
    """
    Fixed or adaptive ``lam``, with every scale on a log axis; the adaptive one with its update rule and a floor,
    sampled as a fraction of the initial ``lam`` (a floor above the start is invalid).
    """
    mode = trial.suggest_categorical("var_coef_mode", ["fixed", "adaptive"])
    if mode == "fixed":
        return {"var_coef_mode": mode, "var_coef": trial.suggest_float("var_coef", 1e-3, 10.0, log=True)}
    return {
        "var_coef_mode": mode,
        "var_coef_init": trial.suggest_float("var_coef_init", 1e-2, 10.0, log=True),
        "target_var": trial.suggest_float("target_var", 1e-3, 0.3, log=True),
        "var_coef_lr": trial.suggest_float("var_coef_lr", 1e-3, 10.0, log=True),
        "var_coef_update": trial.suggest_categorical("var_coef_update", list(VAR_COEF_UPDATES)),
        "var_coef_min_fraction": trial.suggest_categorical("var_coef_min_fraction", [0.0, 0.1, 0.5, 1.0]),
    }


def convert_r2vpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Raw Optuna parameters of :func:`sample_r2vpo_params` / :func:`sample_r2vpo_off_params` -> algorithm kwargs.

    :param sampled_params: raw parameters, as stored in the study
    :return: keyword arguments for ``R2VPO`` / ``R2VPOOff``
    """
    params = dict(sampled_params)
    mode = params.pop("var_coef_mode")
    if mode == "adaptive":
        init = params.pop("var_coef_init")
        params["var_coef"] = f"auto_{init!r}"
        # Studies from before the floor was sampled have no fraction: no floor, as they were trained.
        params["var_coef_min"] = init * params.pop("var_coef_min_fraction", 0.0)
    elif mode != "fixed":
        raise ValueError(f"var_coef_mode={mode!r} is not 'fixed' or 'adaptive'")
    return convert_onpolicy_params(params)


def _finish(trial: optuna.Trial, sampled: dict[str, Any]) -> dict[str, Any]:
    """Show the true values in the study (as rl_zoo3 does for PPO) and convert."""
    trial.set_user_attr("gamma", 1 - sampled["one_minus_gamma"])
    trial.set_user_attr("n_steps", 2 ** sampled["n_steps_pow"])
    trial.set_user_attr("batch_size", 2 ** sampled["batch_size_pow"])
    return convert_r2vpo_params(sampled)


def sample_r2vpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for R2VPO: PPO's knobs (``n_epochs`` included) plus the penalty.

    :param trial: the Optuna trial
    :param n_actions: number of actions (unused, rl_zoo3's signature)
    :param n_envs: number of envs (unused, rl_zoo3's signature)
    :param additional_args: rl_zoo3's extra arguments (unused)
    :return: R2VPO keyword arguments
    """
    sampled = {
        **_sample_common(trial),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 5, 10, 20]),
        **_sample_penalty(trial),
    }
    return _finish(trial, sampled)


def sample_r2vpo_off_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for R2VPO-OFF: R2VPO's knobs with ``utd_ratio`` in place of ``n_epochs``, plus ``replay_capacity`` and
    ``replay_sampling``.

    :param trial: the Optuna trial
    :param n_actions: number of actions (unused, rl_zoo3's signature)
    :param n_envs: number of envs (unused, rl_zoo3's signature)
    :param additional_args: rl_zoo3's extra arguments (unused)
    :return: R2VPOOff keyword arguments
    """
    sampled = {
        **_sample_common(trial),
        "replay_capacity": trial.suggest_categorical("replay_capacity", [1, 2, 4, 8]),
        "utd_ratio": trial.suggest_float("utd_ratio", 0.5, 20.0, log=True),
        "replay_sampling": trial.suggest_categorical("replay_sampling", list(REPLAY_SAMPLINGS)),
        **_sample_penalty(trial),
    }
    return _finish(trial, sampled)
