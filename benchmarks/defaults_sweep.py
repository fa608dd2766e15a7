"""
How the default ``var_coef`` / ``target_var`` / ``var_coef_lr`` of :class:`sb3_r2vpo.R2VPO` were chosen.

Every R2VPO setting except the penalty's is SB3's PPO default, and PPO with its own defaults runs beside
it, on CartPole-v1 and Pendulum-v1. Each run writes one JSON under ``results/defaults_sweep/runs`` (reruns
skip finished runs); the summary is ``results/defaults_sweep/summary.json`` and ``curves.png``.

    python benchmarks/defaults_sweep.py --seeds 0 1 2 --timesteps 100000
"""

import argparse
import json
from typing import Any

import numpy as np
from stable_baselines3 import PPO

from benchmarks.common import (
    RESULTS_DIR,
    curve_panels,
    finish_curve_panel,
    make_env,
    plot_mean_curve,
    save_figure_and_json,
    train_and_evaluate,
    versions,
    write_json,
)
from sb3_r2vpo import R2VPO

CONFIGS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "fixed_0.06": {"var_coef": 0.06},
    "fixed_1": {"var_coef": 1.0},
    "auto": {"var_coef": "auto", "target_var": 0.02, "var_coef_lr": 0.1},
    "auto_target_0.05": {"var_coef": "auto", "target_var": 0.05, "var_coef_lr": 0.1},
}
OUT_DIR = RESULTS_DIR / "defaults_sweep"


def run_one(env_id: str, config: str, seed: int, timesteps: int, eval_freq: int) -> dict[str, Any]:
    path = OUT_DIR / "runs" / f"{env_id}__{config}__{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    algo = PPO if config == "ppo" else R2VPO
    model = algo("MlpPolicy", make_env(env_id, 1, seed, False), seed=seed, **CONFIGS[config])
    result = train_and_evaluate(model, env_id, timesteps, seed, eval_freq)
    payload = {"env_id": env_id, "config": config, "kwargs": CONFIGS[config], "seed": seed, "versions": versions(), **result}
    write_json(path, payload)
    print(f"{env_id:14s} {config:18s} seed {seed}: final {result['final_mean_reward']:8.1f} ({result['wall_time_s']:.0f}s)")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--eval-freq", type=int, default=10_000)
    args = parser.parse_args()

    summary: dict[str, Any] = {"timesteps": args.timesteps, "seeds": args.seeds, "results": {}}
    fig, axes = curve_panels(len(args.envs))
    for ax, env_id in zip(axes, args.envs, strict=True):
        for config in args.configs:
            runs = [run_one(env_id, config, seed, args.timesteps, args.eval_freq) for seed in args.seeds]
            finals = [run["final_mean_reward"] for run in runs]
            aucs = [float(np.mean([p["mean_reward"] for p in run["curve"]])) for run in runs]
            summary["results"].setdefault(env_id, {})[config] = {
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "finals": finals,
                "curve_mean": float(np.mean(aucs)),
            }
            plot_mean_curve(ax, [run["curve"] for run in runs], config)
        finish_curve_panel(ax, f"{env_id} (SB3 PPO defaults, {len(args.seeds)} seeds)")
    save_figure_and_json(fig, OUT_DIR, "curves.png", "summary.json", summary)
    for env_id, table in summary["results"].items():
        for config, row in table.items():
            print(
                f"{env_id:14s} {config:18s} final {row['final_mean']:8.1f} +- {row['final_std']:6.1f}  "
                f"curve mean {row['curve_mean']:8.1f}"
            )


if __name__ == "__main__":
    main()
