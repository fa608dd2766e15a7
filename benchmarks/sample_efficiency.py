"""
Sample efficiency of R2VPO-OFF: environment steps to reach PPO's final return, R2VPO-OFF vs R2VPO vs SB3 PPO,
each with its tuned hyperparameters (``r2vpo_off_tuned``: ``benchmarks/hyperparams/r2vpo_off_tuned.yml``, entries
tuned for these two tasks, not the shipped per-domain ones; ``hyperparams/r2vpo.yml``, rl_zoo3's
``ppo.yml`` or ``benchmarks/hyperparams/ppo.yml``), same seeds, same budget, deterministic evaluation on a separate
env every 5k steps (every budget / 20 steps when that is longer: 10k at 200k).
``r2vpo_off_stored`` is that R2VPO-OFF with ``recompute_advantages=False``: the comparison behind that default.
``r2vpo_off_capacity1`` is its configuration with ``replay_capacity=1`` (R2VPO-ON on the same short
rollouts): what the replay itself adds.

Threshold: the mean over seeds of PPO's final evaluation return. Steps-to-threshold of a run: the first
evaluation at or above it (inf if never). Target: median steps of R2VPO-OFF <= 0.5x median steps of PPO.

    python -m benchmarks.sample_efficiency --envs Pendulum-v1 --seeds 0 1 2

Needs rl_zoo3 for PPO's hyperparameters (``pip install .[zoo]``). Runs are cached in ``results/runs``; this
script writes ``results/sample_efficiency/<env>.json`` and ``<env>.png`` for each env.
"""

import argparse
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    curve_panels,
    finish_curve_panel,
    median_steps_to,
    plot_mean_curve,
    save_figure_and_json,
    steps_ratio,
    steps_to_threshold,
)
from benchmarks.zoo_runs import run

OUT_DIR = RESULTS_DIR / "sample_efficiency"
ALGOS = ["ppo", "r2vpo", "r2vpo_off_tuned", "r2vpo_off_stored", "r2vpo_off_capacity1"]


def summarize(env_id: str, seeds: list[int], algos: list[str]) -> dict[str, Any]:
    runs = {algo: [run(algo, env_id, seed) for seed in seeds] for algo in algos}
    threshold = float(np.mean([r["final_mean_reward"] for r in runs["ppo"]]))
    table: dict[str, Any] = {"threshold": threshold, "algos": {}}
    for algo, algo_runs in runs.items():
        steps = [steps_to_threshold(r["curve"], threshold) for r in algo_runs]
        table["algos"][algo] = {
            "steps_to_threshold": steps,
            "median_steps_to_threshold": median_steps_to([r["curve"] for r in algo_runs], threshold),
            "final_mean_rewards": [r["final_mean_reward"] for r in algo_runs],
            "curve_means": [float(np.mean([p["mean_reward"] for p in r["curve"]])) for r in algo_runs],
            "wall_time_s": [r["wall_time_s"] for r in algo_runs],
        }
    ppo_steps = table["algos"]["ppo"]["median_steps_to_threshold"]
    for row in table["algos"].values():
        row["steps_ratio_vs_ppo"] = steps_ratio(row["median_steps_to_threshold"], ppo_steps)
    table["runs"] = runs
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    args = parser.parse_args()
    if "ppo" not in args.algos:
        parser.error("the threshold is PPO's final return: keep 'ppo' in --algos")

    for env_id in args.envs:
        table = summarize(env_id, args.seeds, args.algos)
        runs = table.pop("runs")
        fig, (ax,) = curve_panels(1)
        for algo in args.algos:
            plot_mean_curve(ax, [r["curve"] for r in runs[algo]], algo)
        finish_curve_panel(ax, f"{env_id} ({len(args.seeds)} seeds)", table["threshold"], "PPO's final return")
        name = env_id.replace("/", "_")
        save_figure_and_json(fig, OUT_DIR, f"{name}.png", f"{name}.json", {"env_id": env_id, "seeds": args.seeds, **table})
        for algo, row in table["algos"].items():
            print(
                f"{env_id:12s} {algo:16s} steps to {table['threshold']:.1f}: {row['steps_to_threshold']} "
                f"(median {row['median_steps_to_threshold']:g}, {row['steps_ratio_vs_ppo']:.2f}x PPO); "
                f"final {np.round(row['final_mean_rewards'], 1).tolist()}"
            )


if __name__ == "__main__":
    main()
