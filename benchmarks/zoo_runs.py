"""
Training runs configured by RL Zoo hyperparameter files, cached as one JSON per (algorithm, env, seed) under
``results/runs`` so that every benchmark script reuses them and reruns skip finished runs. Each JSON stores the entry
it was trained with; a run whose entry has changed since is stale: it is trained again, never reported.
"""

import json
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from benchmarks.common import (
    HYPERPARAMS_DIR,
    RESULTS_DIR,
    load_zoo_entry,
    make_env,
    train_and_evaluate,
    versions,
    write_json,
    zoo_entry_to_kwargs,
)
from sb3_r2vpo import R2VPO, SPO, R2VPOOff
from sb3_r2vpo.core import RatioStats, clip_objective

RUNS_DIR = RESULTS_DIR / "runs"
#: R2VPO's penalty settings, which the clipped replay (``clip_off``) does not take.
PENALTY_SETTINGS = ("var_coef", "target_var", "var_coef_lr", "var_coef_max", "var_coef_update", "var_coef_min")


class ClipReplay(R2VPOOff):
    """
    R2VPO-OFF's replay trained with PPO's clipped surrogate (the core's ``clip_objective``) instead of the penalty:
    the staleness experiment's comparison (the paper's Fig. 4b), with everything but the objective equal.

    :param clip_range: PPO's clip range
    :param kwargs: R2VPOOff's other arguments (its penalty settings are not taken)
    """

    replaced_ppo_parameters: ClassVar[dict[str, str]] = {
        k: v for k, v in R2VPOOff.replaced_ppo_parameters.items() if k != "clip_range"
    }

    def __init__(self, *args: Any, clip_range: float = 0.2, **kwargs: Any) -> None:
        self.clip_range = clip_range
        super().__init__(*args, **{**kwargs, "var_coef": 0.0})

    def _policy_objective(self, log_prob: th.Tensor, advantages: th.Tensor, rollout_data: Any) -> tuple[th.Tensor, RatioStats]:
        return clip_objective(
            log_prob, rollout_data.old_log_prob, advantages, clip_range=self.clip_range, band=self.ratio_band
        )

    def _record_trust_region_settings(self) -> None:
        self.logger.record("train/clip_range", self.clip_range)


#: PPO settings for tasks rl_zoo3 has no PPO entry for (DeepMind Control).
LOCAL_PPO_HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams" / "ppo.yml"
#: R2VPO-OFF entries tuned for one task each (sample-efficiency and staleness benchmarks), not the shipped defaults.
TUNED_R2VPO_OFF_HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams" / "r2vpo_off_tuned.yml"
EVAL_FREQ = 5_000
#: The log-space dual update with its step size (per gradient step, on the relative violation ``V / target - 1``).
LOG_DUAL = {"var_coef_update": "log", "var_coef_lr": 0.01}
#: Algorithms whose entry's learning rate is decayed linearly to 0 (when the entry does not schedule it already).
LINEAR_LR_DECAY = {"ppo_lin_lr"}


def ppo_hyperparams_file() -> Path | None:
    """rl_zoo3's tuned PPO hyperparameters, when rl_zoo3 is installed (``pip install .[zoo]``)."""
    try:
        import rl_zoo3
    except ImportError:
        return None
    return Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"


def algorithm(name: str) -> tuple[type[BaseAlgorithm], Path | None, dict[str, Any]]:
    """
    The class, hyperparameter file and overrides of a benchmarked algorithm.

    ``r2vpo_off`` trains the shipped per-domain entries, ``r2vpo_off_tuned`` the entries tuned for one task each
    (:data:`TUNED_R2VPO_OFF_HYPERPARAMS`); ``r2vpo_off_stored`` is the tuned entry keeping the advantages computed at
    collection time, to measure the ``recompute_advantages`` default; ``r2vpo_off_capacity1`` is the tuned entry
    without replay; ``clip_off`` the tuned entry and replay with PPO's clip.
    ``r2vpo_ppo_settings`` is R2VPO with PPO's entry (its clip range dropped): the algorithm difference alone,
    without the difference between the two hyperparameter files (on the panel's DeepMind Control tasks, whose R2VPO
    entries are PPO's settings with ``target_var`` 0.005, it is the ``target_var`` 0.02 ablation).
    """
    table: dict[str, tuple[type[BaseAlgorithm], Path | None, dict[str, Any]]] = {
        "ppo": (PPO, ppo_hyperparams_file(), {}),
        "r2vpo": (R2VPO, HYPERPARAMS_DIR / "r2vpo.yml", {}),
        "r2vpo_off": (R2VPOOff, HYPERPARAMS_DIR / "r2vpo_off.yml", {}),
        "r2vpo_off_tuned": (R2VPOOff, TUNED_R2VPO_OFF_HYPERPARAMS, {}),
        "r2vpo_off_stored": (R2VPOOff, TUNED_R2VPO_OFF_HYPERPARAMS, {"recompute_advantages": False}),
        # The same short rollouts without replay (replay_capacity=1 is R2VPO-ON): isolates what the replay adds.
        "r2vpo_off_capacity1": (R2VPOOff, TUNED_R2VPO_OFF_HYPERPARAMS, {"replay_capacity": 1}),
        "r2vpo_ppo_settings": (R2VPO, ppo_hyperparams_file(), {}),
        "ppo_lin_lr": (PPO, ppo_hyperparams_file(), {}),
        # SPO's shipped entries: PPO's, its clip range as SPO's eps (Xie et al. transfer PPO's settings the same way).
        "spo": (SPO, HYPERPARAMS_DIR / "spo.yml", {}),
        # R2VPO-OFF's tuned entry and replay with PPO's clip (0.2) instead of the penalty: the staleness comparison.
        "clip_off": (ClipReplay, TUNED_R2VPO_OFF_HYPERPARAMS, {}),
        "r2vpo_log_dual": (R2VPO, HYPERPARAMS_DIR / "r2vpo.yml", LOG_DUAL),
        "r2vpo_off_log_dual": (R2VPOOff, HYPERPARAMS_DIR / "r2vpo_off.yml", LOG_DUAL),
    }
    base, at, variant = name.partition("@")
    if base not in table:
        raise ValueError(f"Unknown algorithm {base!r}; choose one of {sorted(table)} (a variant: name@key=value,...)")
    algo_class, hyperparams_file, overrides = table[base]
    return algo_class, hyperparams_file, {**overrides, **(parse_variant(variant) if at else {})}


def parse_variant(text: str) -> dict[str, Any]:
    """
    The overrides of a variant name ``algo@key=value,key=value`` (values read as YAML: numbers, strings, booleans),
    for probes of settings on tuning seeds without a new table entry.

    :param text: what follows the ``@``
    :return: the overrides
    """
    import yaml

    overrides = {}
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError(f"variant {text!r}: expected key=value pairs separated by commas")
        overrides[key] = yaml.safe_load(value)
    return overrides


def run_path(name: str, env_id: str, seed: int, n_timesteps: int | None = None, runs_dir: Path = RUNS_DIR) -> Path:
    """Where the run is cached; a budget other than the zoo entry's is part of the name."""
    budget = "" if n_timesteps is None else f"__{n_timesteps}steps"
    return runs_dir / f"{env_id.replace('/', '_')}__{name}__{seed}{budget}.json"


def linear_decay(learning_rate: float | str) -> str:
    """The zoo spelling of ``learning_rate`` decayed linearly to 0 (a ``lin_`` schedule is kept as it is)."""
    if isinstance(learning_rate, str):
        if learning_rate.startswith("lin_"):
            return learning_rate
        raise ValueError(f"learning_rate={learning_rate!r}: only a number or a lin_ schedule can be decayed linearly")
    return f"lin_{float(learning_rate):g}"


class StaleRunError(RuntimeError):
    """A cached run (in ``path``) was trained with other hyperparameters than its zoo entry now has."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class RunConfig(NamedTuple):
    """What a run of an algorithm on an env is trained with."""

    algo_class: type[BaseAlgorithm]
    entry: dict[str, Any]
    overrides: dict[str, Any]
    hyperparams_file: Path


def run_config(name: str, env_id: str) -> RunConfig:
    """The zoo entry (from which file) and the overrides a run of ``name`` on ``env_id`` is trained with."""
    algo_class, hyperparams_file, overrides = algorithm(name)
    if hyperparams_file is None:
        raise RuntimeError(f"{name} needs rl_zoo3 for its hyperparameters: pip install .[zoo]")
    uses_ppo_file = hyperparams_file == ppo_hyperparams_file()
    entry = load_zoo_entry(hyperparams_file, env_id, fallback=LOCAL_PPO_HYPERPARAMS if uses_ppo_file else None)
    if uses_ppo_file and algo_class not in (PPO, SPO):
        entry.pop("clip_range", None)  # the penalty replaces the clip
    if algo_class is ClipReplay:
        for key in PENALTY_SETTINGS:
            entry.pop(key, None)
    if name.partition("@")[0] in LINEAR_LR_DECAY:
        entry["learning_rate"] = linear_decay(entry.get("learning_rate", 3e-4))
    return RunConfig(algo_class, entry, overrides, hyperparams_file)


def cached_run(
    name: str,
    env_id: str,
    seed: int,
    n_timesteps: int | None = None,
    runs_dir: Path = RUNS_DIR,
    config: RunConfig | None = None,
) -> dict[str, Any] | None:
    """
    The cached run, if any: an explicit budget also accepts the run made with the zoo entry's own budget when the
    two are equal (so the learning-curve panel reuses the other benchmarks' runs).

    :param config: the run's current configuration, when the caller has it already (default: read it)

    :raises StaleRunError: when the only cached runs have hyperparameters that are not their entry's current ones
        (the entry was changed after the run), so that a changed entry is never reported with the old entry's results
    """
    candidates = [run_path(name, env_id, seed, n_timesteps, runs_dir)]
    if n_timesteps is not None:
        candidates.append(run_path(name, env_id, seed, None, runs_dir))
    stale: StaleRunError | None = None
    for path in candidates:
        if path.exists():
            payload = json.loads(path.read_text())
            # Runs cached before "n_timesteps" was stored carry only their entry's budget.
            stored = payload["n_timesteps"] if "n_timesteps" in payload else payload["hyperparams"]["n_timesteps"]
            budget = int(float(stored))
            if n_timesteps is None or budget == n_timesteps:
                config = config or run_config(name, env_id)
                try:
                    _check_config(payload, config, name, env_id, path)
                except StaleRunError as error:
                    stale = stale or error
                    continue
                return payload
    if stale is not None:
        raise stale
    return None


def _check_config(payload: dict[str, Any], config: RunConfig, name: str, env_id: str, path: Path) -> None:
    stored_entry = payload.get("hyperparams") or {}
    # Runs cached before "overrides" was stored had none.
    stored_overrides = payload.get("overrides", {})
    if (stored_entry, stored_overrides) != (config.entry, config.overrides):
        changed = sorted(
            key for key in set(config.entry) | set(stored_entry) if stored_entry.get(key) != config.entry.get(key)
        )
        raise StaleRunError(
            f"{path} was trained with other hyperparameters than {name}'s entry for {env_id} now has "
            f"(changed: {changed or 'overrides'})",
            path,
        )


def run(name: str, env_id: str, seed: int, n_timesteps: int | None = None, runs_dir: Path = RUNS_DIR) -> dict[str, Any]:
    """
    Train ``name`` on ``env_id`` with its zoo entry and evaluate it every :data:`EVAL_FREQ` steps (cached; a cached
    run whose entry has changed since is trained again and replaced).

    :param n_timesteps: training budget (default: the zoo entry's ``n_timesteps``)
    :param runs_dir: the cache folder
    :return: the run's JSON payload
    """
    config = run_config(name, env_id)
    kwargs, env_settings = zoo_entry_to_kwargs(config.entry)
    path = run_path(name, env_id, seed, n_timesteps, runs_dir)
    # The entry's own budget named explicitly also finds the runs the learning-curve panel cached under its name.
    try:
        cached = cached_run(name, env_id, seed, n_timesteps or int(env_settings["n_timesteps"]), runs_dir, config)
    except StaleRunError as stale:
        print(f"{stale}; training it again", flush=True)
        cached, path = None, stale.path  # the new run replaces the stale one, whichever name it was cached under
    if cached is not None:
        return cached
    if n_timesteps is not None:
        env_settings["n_timesteps"] = n_timesteps
    policy = kwargs.pop("policy")
    env = make_env(env_id, env_settings["n_envs"], seed, env_settings["normalize"], env_settings["env_wrapper"])
    model = config.algo_class(policy, env, seed=seed, **{**kwargs, **config.overrides})
    eval_freq = max(EVAL_FREQ, env_settings["n_timesteps"] // 20)
    result = train_and_evaluate(
        model, env_id, env_settings["n_timesteps"], seed, eval_freq, env_wrapper=env_settings["env_wrapper"]
    )
    payload = {
        "algo": name,
        "env_id": env_id,
        "seed": seed,
        "hyperparams": config.entry,
        "overrides": config.overrides,
        "n_timesteps": env_settings["n_timesteps"],
        "hyperparams_file": config.hyperparams_file.name,
        "versions": versions(),
        **result,
    }
    write_json(path, payload)
    final, wall_time = result["final_mean_reward"], result["wall_time_s"]
    print(f"{env_id:12s} {name:16s} seed {seed}: final {final:8.1f} ({wall_time:.0f}s)", flush=True)
    return payload
