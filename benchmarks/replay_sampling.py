"""
Fresh-data dilution in R2VPO-OFF (issue 18, defect 2), on Stable-Baselines3's continuous identity task: does drawing
the replay uniformly (the paper's Algorithm 2, the fresh rollout gets ``utd_ratio / replay_capacity`` passes in the
update after it was collected) learn slower than ``replay_sampling="newest_first"`` (one full pass over the newest
rollout, then uniform), at the same number of gradient samples? PPO and R2VPO (on-policy, ``n_epochs = utd_ratio``)
with the same settings beside them.

The settings are the ones a new user takes from SB3's identity test (``n_steps=256``, ``learning_rate=1e-3``,
``utd_ratio = n_epochs = 4``); the mean reward of 20 deterministic evaluation episodes (target 90) after each budget.

    python -m benchmarks.replay_sampling --seeds 10 11 12 13 14 --budgets 1000 3000

Writes ``results/replay_sampling/identity.json`` and ``identity.png``.
"""

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.envs import IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy

from benchmarks.common import RESULTS_DIR, save_figure_and_json, versions
from sb3_r2vpo import R2VPO, R2VPOOff

OUT_DIR = RESULTS_DIR / "replay_sampling"
COMMON = {"n_steps": 256, "learning_rate": 1e-3}
VARIANTS: dict[str, tuple[type, dict[str, Any]]] = {
    "ppo": (PPO, {"n_epochs": 4}),
    "r2vpo": (R2VPO, {"n_epochs": 4}),
    "r2vpo_off_uniform": (R2VPOOff, {"utd_ratio": 4, "replay_capacity": 4, "replay_sampling": "uniform"}),
    "r2vpo_off_newest_first": (R2VPOOff, {"utd_ratio": 4, "replay_capacity": 4, "replay_sampling": "newest_first"}),
}


def evaluate(variant: str, seed: int, budget: int) -> dict[str, float]:
    """Train ``variant`` for ``budget`` steps on the identity task and evaluate it (20 deterministic episodes)."""
    algo_class, settings = VARIANTS[variant]
    env = IdentityEnvBox(eps=0.5)
    start = time.perf_counter()
    model = algo_class("MlpPolicy", env, seed=seed, **COMMON, **settings)
    model.learn(budget)
    wall_time = time.perf_counter() - start
    rewards, _ = evaluate_policy(
        model, IdentityEnvBox(eps=0.5), n_eval_episodes=20, deterministic=True, return_episode_rewards=True
    )
    return {"mean_reward": float(np.mean(rewards)), "wall_time_s": wall_time}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    th.set_num_threads(1)

    results: dict[str, dict[str, list[dict[str, float]]]] = {v: {str(b): [] for b in args.budgets} for v in args.variants}
    for budget in args.budgets:
        for seed in args.seeds:
            for variant in args.variants:
                outcome = evaluate(variant, seed, budget)
                results[variant][str(budget)].append({"seed": seed, **outcome})
                print(f"{budget:6d} steps {variant:24s} seed {seed}: {outcome['mean_reward']:7.2f}", flush=True)
    summary = {
        variant: {
            budget: {
                "mean_reward": float(np.mean([r["mean_reward"] for r in runs])),
                "reached_90": int(sum(r["mean_reward"] >= 90 for r in runs)),
                "seeds": len(runs),
            }
            for budget, runs in by_budget.items()
        }
        for variant, by_budget in results.items()
    }
    for variant, by_budget in summary.items():
        cells = ", ".join(f"{b}: {s['mean_reward']:.1f} ({s['reached_90']}/{s['seeds']} >= 90)" for b, s in by_budget.items())
        print(f"{variant:24s} {cells}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(args.variants)
    for index, variant in enumerate(args.variants):
        for position, budget in enumerate(args.budgets):
            values = [r["mean_reward"] for r in results[variant][str(budget)]]
            x = position + (index - (len(args.variants) - 1) / 2) * width
            ax.bar(x, np.mean(values), width, color=f"C{index}", label=variant if position == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.axhline(90, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(args.budgets)), [f"{b} steps" for b in args.budgets])
    ax.set(ylabel="mean evaluation reward (20 episodes)", title="IdentityEnvBox: replay sampling")
    ax.legend(fontsize=8)
    payload = {
        "settings": {"seeds": args.seeds, "budgets": args.budgets, "common": COMMON},
        "variants": {name: {"class": VARIANTS[name][0].__name__, **VARIANTS[name][1]} for name in args.variants},
        "summary": summary,
        "runs": results,
        "versions": versions(),
    }
    save_figure_and_json(fig, args.out_dir, "identity.png", "identity.json", payload)
    return payload


if __name__ == "__main__":
    main()
