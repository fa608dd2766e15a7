"""
Learning check of R2VPO on CartPole-v1 and Pendulum-v1 with the shipped hyperparameters (``hyperparams/r2vpo.yml``),
with SB3 PPO on rl_zoo3's tuned ``ppo.yml`` entry beside it when rl_zoo3 is installed (``pip install .[zoo]``).

Targets: CartPole-v1 reaches a mean deterministic evaluation return of 500 within 100k steps for every seed;
Pendulum-v1 reaches >= -200 within 100k steps.

    python -m benchmarks.classic_control --seeds 0 1 2

Runs are cached in ``results/runs`` (one JSON each, reruns skip finished runs); this script writes
``results/classic_control/summary.json`` and ``curves.png``.
"""

import argparse
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    curve_panels,
    finish_curve_panel,
    plot_mean_curve,
    save_figure_and_json,
    steps_to_threshold,
)
from benchmarks.zoo_runs import ppo_hyperparams_file, run

THRESHOLDS = {"CartPole-v1": 500.0, "Pendulum-v1": -200.0}
OUT_DIR = RESULTS_DIR / "classic_control"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-ppo", action="store_true", help="skip the PPO baseline")
    args = parser.parse_args()

    algos = ["r2vpo"]
    if not args.no_ppo:
        if ppo_hyperparams_file() is None:
            print("rl_zoo3 is not installed: skipping the PPO baseline (pip install .[zoo])")
        else:
            algos.append("ppo")

    summary: dict[str, Any] = {"seeds": args.seeds, "thresholds": THRESHOLDS, "results": {}}
    fig, axes = curve_panels(len(args.envs))
    for ax, env_id in zip(axes, args.envs, strict=True):
        for algo in algos:
            runs = [run(algo, env_id, seed) for seed in args.seeds]
            reached = [steps_to_threshold(run["curve"], THRESHOLDS[env_id]) for run in runs]
            finals = [run["final_mean_reward"] for run in runs]
            summary["results"].setdefault(env_id, {})[algo] = {
                "final_mean_rewards": finals,
                "best_mean_rewards": [max(p["mean_reward"] for p in run["curve"]) for run in runs],
                "steps_to_threshold": reached,
                "seeds_reaching_threshold": int(sum(np.isfinite(reached))),
                "wall_time_s": [run["wall_time_s"] for run in runs],
            }
            plot_mean_curve(ax, [run["curve"] for run in runs], f"{algo} ({len(runs)} seeds)")
        finish_curve_panel(ax, env_id, THRESHOLDS[env_id], "target")
    save_figure_and_json(fig, OUT_DIR, "curves.png", "summary.json", summary)
    for env_id, table in summary["results"].items():
        for algo, row in table.items():
            print(
                f"{env_id:12s} {algo:6s} reached {THRESHOLDS[env_id]:g} in "
                f"{row['seeds_reaching_threshold']}/{len(args.seeds)} seeds at steps {row['steps_to_threshold']}; "
                f"final {np.round(row['final_mean_rewards'], 1).tolist()}"
            )


if __name__ == "__main__":
    main()
