"""Registration of ``r2vpo``, ``r2vpo_off`` and ``spo`` in rl_zoo3, which has no plugin hook of its own."""

import importlib.resources
import importlib.util
from pathlib import Path
from typing import Any

from rl_zoo3 import hyperparams_opt, utils
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import convert_onpolicy_params, sample_ppo_params
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

from sb3_r2vpo.r2vpo import R2VPO
from sb3_r2vpo.r2vpo_off import R2VPOOff
from sb3_r2vpo.spo import SPO
from sb3_r2vpo.zoo.samplers import convert_r2vpo_params, sample_r2vpo_off_params, sample_r2vpo_params

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"r2vpo": R2VPO, "r2vpo_off": R2VPOOff, "spo": SPO}
#: Hyperparameters that, like rl_zoo3's learning_rate or clip_range, may be written "lin_<value>" in a yml file.
SCHEDULE_KEYS = ("target_var",)


def hyperparams_path(algo: str) -> Path:
    """
    The yml file of RL Zoo hyperparameters shipped with the package for ``algo``.

    :param algo: ``"r2vpo"``, ``"r2vpo_off"`` or ``"spo"``
    :return: its path (inside the installed package)
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"No shipped hyperparameters for algo={algo!r}; choose one of {sorted(ALGORITHMS)}")
    return Path(str(importlib.resources.files("sb3_r2vpo.hyperparams").joinpath(f"{algo}.yml")))


def _preprocess_extra_schedules(hyperparams: dict[str, Any]) -> dict[str, Any]:
    for key in SCHEDULE_KEYS:
        value = hyperparams.get(key)
        if isinstance(value, str):
            kind, _, initial = value.partition("_")
            if kind != "lin":
                raise ValueError(f"{key}={value!r}: a schedule must be written 'lin_<initial value>'")
            hyperparams[key] = LinearSchedule(float(initial), 0.0, 1.0)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            hyperparams[key] = ConstantSchedule(float(value))
    return hyperparams


_original_preprocess_schedules = ExperimentManager._preprocess_schedules


def _preprocess_schedules(hyperparams: dict[str, Any]) -> dict[str, Any]:
    return _preprocess_extra_schedules(_original_preprocess_schedules(hyperparams))


def register() -> None:
    """
    Make rl_zoo3 know ``r2vpo``, ``r2vpo_off`` and ``spo``: the algorithms, their Optuna samplers and converters
    (SPO, with PPO's constructor, uses PPO's), and ``lin_<x>`` schedules for ``target_var``. Also registers the
    DeepMind Control ids (``dm_control/...``) when shimmy is installed. Idempotent; call it before building rl_zoo3's
    parsers (``rl_zoo3.train.train()``, ...).
    """
    utils.ALGOS.update(ALGORITHMS)
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(
        {"r2vpo": sample_r2vpo_params, "r2vpo_off": sample_r2vpo_off_params, "spo": sample_ppo_params}
    )
    hyperparams_opt.HYPERPARAMS_CONVERTER.update(
        {"r2vpo": convert_r2vpo_params, "r2vpo_off": convert_r2vpo_params, "spo": convert_onpolicy_params}
    )
    ExperimentManager._preprocess_schedules = staticmethod(_preprocess_schedules)  # type: ignore[method-assign]
    if importlib.util.find_spec("shimmy") is not None:
        import shimmy  # noqa: F401  (registers the dm_control/* environment ids)
