"""
The paper's staleness experiment (its Fig. 4b): final return against the replay's capacity ``K`` (how many past
rollouts are reused, so how stale the data get), for R2VPO-OFF and for the same replay trained with PPO's clip
(the core's ``clip_objective``; GRPO's clip on the LLM side), everything else equal. The paper's claim: the clip
degrades as data get staler and R2VPO does not.

- Stable-Baselines3: one DeepMind Control task with R2VPO-OFF's entry tuned for it, ``replay_capacity`` overridden
  (``r2vpo_off_tuned@replay_capacity=K`` against ``clip_off@replay_capacity=K``, runs cached under
  ``results/runs``); final deterministic evaluation return.
- LLM: the toy task of ``benchmarks.llm_toy_comparison`` with ``replay_capacity=K, utd_ratio=2`` for ``r2vpo`` and
  ``grpo``; final reward (mean of the last 20 generations).

    MUJOCO_GL=egl python -m benchmarks.staleness --parts sb3 --seeds 0 1 2 --jobs 2
    python -m benchmarks.staleness --parts llm --seeds 0 1 2 3 4 --out-dir benchmarks/results/staleness/llm

Writes ``results/staleness/staleness.json`` and ``staleness.png``.
"""

import argparse
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, save_figure_and_json, versions
from benchmarks.llm_toy_comparison import bootstrap_mean_interval, final_reward
from benchmarks.llm_toy_comparison import run as run_toy
from benchmarks.zoo_runs import RUNS_DIR
from benchmarks.zoo_runs import run as run_zoo
from llm_adapter.toy import write_toy_setup

OUT_DIR = RESULTS_DIR / "staleness"
CAPACITIES = [1, 2, 4, 8]
DEFAULT_TASK = "dm_control/cartpole-swingup-v0"
SB3_OBJECTIVES = {"r2vpo": "r2vpo_off_tuned", "clip": "clip_off"}
LLM_OBJECTIVES = {"r2vpo": "r2vpo", "clip": "grpo"}


def _sb3_job(job: tuple[str, str, int, str]) -> float:
    algo, task, seed, runs_dir = job
    import torch as th

    th.set_num_threads(1)
    return float(run_zoo(algo, task, seed, runs_dir=Path(runs_dir))["final_mean_reward"])


def _llm_job(job: tuple[str, int, int, int, str]) -> float:
    objective, capacity, seed, iterations, work_dir = job
    import torch as th

    th.set_num_threads(1)
    settings = {"objective": objective, "replay_capacity": capacity, "utd_ratio": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rewards = run_toy(f"{objective}_k{capacity}", seed, iterations, Path(work_dir) / "toy", Path(work_dir), settings)
    return final_reward(rewards)


def _summarize(finals: dict[str, dict[int, list[float]]]) -> dict[str, dict[str, Any]]:
    return {
        objective: {
            str(capacity): {"finals": values, "mean": float(np.mean(values)), "ci95": bootstrap_mean_interval(values)}
            for capacity, values in by_capacity.items()
            if values
        }
        for objective, by_capacity in finals.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--capacities", type=int, nargs="+", default=CAPACITIES)
    parser.add_argument("--task", default=DEFAULT_TASK, help="the Stable-Baselines3 task")
    parser.add_argument("--llm-iterations", type=int, default=150)
    parser.add_argument("--parts", nargs="+", default=["sb3", "llm"], choices=["sb3", "llm"])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one core each)")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, tempfile.TemporaryDirectory() as work_dir:
        if "sb3" in args.parts:
            jobs = [
                (f"{algo}@replay_capacity={k}", args.task, seed, str(args.runs_dir))
                for algo in SB3_OBJECTIVES.values()
                for k in args.capacities
                for seed in args.seeds
            ]
            finals: dict[str, dict[int, list[float]]] = {o: {k: [] for k in args.capacities} for o in SB3_OBJECTIVES}
            for job, final in zip(jobs, pool.map(_sb3_job, jobs), strict=True):
                objective = next(o for o, a in SB3_OBJECTIVES.items() if job[0].startswith(f"{a}@"))
                finals[objective][int(job[0].rsplit("=", 1)[1])].append(final)
                print(f"{job[1]} {job[0]} seed {job[2]}: final {final:.1f}", flush=True)
            results["sb3"] = {"task": args.task, "objectives": SB3_OBJECTIVES, "by_objective": _summarize(finals)}
        if "llm" in args.parts:
            write_toy_setup(Path(work_dir) / "toy", seed=0)  # the model every toy benchmark starts from
            llm_jobs = [
                (objective, k, seed, args.llm_iterations, work_dir)
                for objective in LLM_OBJECTIVES.values()
                for k in args.capacities
                for seed in args.seeds
            ]
            llm_finals: dict[str, dict[int, list[float]]] = {o: {k: [] for k in args.capacities} for o in LLM_OBJECTIVES}
            for llm_job, final in zip(llm_jobs, pool.map(_llm_job, llm_jobs), strict=True):
                name, capacity, seed = llm_job[:3]
                objective = next(o for o, n in LLM_OBJECTIVES.items() if n == name)
                llm_finals[objective][capacity].append(final)
                print(f"toy {name} K={capacity} seed {seed}: final reward {final:.3f}", flush=True)
            results["llm"] = {"objectives": LLM_OBJECTIVES, "by_objective": _summarize(llm_finals)}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (part, result) in zip(axes[0], results.items(), strict=True):
        for objective, by_capacity in result["by_objective"].items():
            capacities = [int(k) for k in by_capacity]
            means = [by_capacity[str(k)]["mean"] for k in capacities]
            low = [by_capacity[str(k)]["ci95"][0] for k in capacities]
            high = [by_capacity[str(k)]["ci95"][1] for k in capacities]
            label = f"{objective} ({result['objectives'][objective]})"
            ax.errorbar(
                capacities, means, yerr=[np.subtract(means, low), np.subtract(high, means)], marker="o", capsize=3, label=label
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.capacities, [str(k) for k in args.capacities])
        title = result["task"] if part == "sb3" else "LLM toy task"
        ylabel = "final evaluation return" if part == "sb3" else "final reward"
        ax.set(xlabel="replay capacity K (rollouts kept)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    payload = {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results, "versions": versions()}
    save_figure_and_json(fig, args.out_dir, "staleness.png", "staleness.json", payload)
    for part, result in results.items():
        for objective, by_capacity in result["by_objective"].items():
            cells = ", ".join(f"K={k}: {v['mean']:.3g}" for k, v in by_capacity.items())
            print(f"{part} {objective}: {cells}")
    return payload


if __name__ == "__main__":
    main()
