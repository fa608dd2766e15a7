"""
``lam`` over training: the dual variable of R2VPO's shipped controller against the paper's Eq. 10 (and other
candidates), with the ratio variance that drives it, from the learning-curve runs' per-update ``train_log``.

    python -m benchmarks.dual_trajectory --jobs 2
    python -m benchmarks.dual_trajectory --report-only

For every task of :data:`CONTROLLERS`, the named runs (shared with ``benchmarks.learning_curves``: same cache, same
budgets) are trained where missing; the figure has one column per task, ``lam`` on top and the mean ratio variance
``E[(r - 1)^2]`` of each update below (log scale, the target dashed), mean over seeds with each seed thin. The JSON
holds, per task and controller, the curves and the final returns.
"""

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, write_json
from benchmarks.learning_curves import DEFAULT_DMC_BUDGET, budget, load_runs, run_panel
from benchmarks.zoo_runs import RUNS_DIR

OUT_DIR = RESULTS_DIR / "dual_trajectory"
#: Per task, the controllers compared (learning-curve algorithm names): the shipped entry first.
CONTROLLERS = {
    "MountainCarContinuous-v0": {
        "shipped (floor var_coef_min 1)": "r2vpo",
        "Eq. 10 (var_coef_min 0)": "r2vpo@var_coef_min=0.0",
        "log-space update (var_coef_min 0)": "r2vpo_log_dual@var_coef_min=0.0",
    },
    "dm_control/cartpole-swingup-v0": {
        "shipped (Eq. 10)": "r2vpo",
        "floor var_coef_min 1": "r2vpo@var_coef_min=1.0",
    },
}


def trajectories(task: str, algo: str, seeds: list[int], steps: int, runs_dir: Path) -> dict[str, Any]:
    """The per-update ``lam``, ratio variance and target of each finished run of ``algo`` that has a train log."""
    runs = load_runs(task, algo, seeds, steps, runs_dir)
    logged = {seed: run for seed, run in runs.items() if run.get("train_log")}
    return {
        "seeds": sorted(logged),
        "final_returns": [logged[s]["final_mean_reward"] for s in sorted(logged)],
        "logs": {str(s): logged[s]["train_log"] for s in sorted(logged)},
    }


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """``lam`` (top row) and the ratio variance with its target (bottom row), one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 6.5), squeeze=False)
    for column, (task, by_controller) in enumerate(results.items()):
        lam_ax, var_ax = axes[0][column], axes[1][column]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, (label, entry) in enumerate(by_controller.items()):
            color = colors[index % len(colors)]
            logs = list(entry["logs"].values())
            if not logs:
                continue
            length = min(len(log) for log in logs)
            steps = np.array([p["timesteps"] for p in logs[0][:length]])
            lam = np.array([[p["var_coef"] for p in log[:length]] for log in logs])
            var = np.array([[p["ratio_var"] for p in log[:length]] for log in logs])
            for row in lam:
                lam_ax.plot(steps, row, color=color, alpha=0.25, linewidth=0.7)
            mean_final = np.mean(entry["final_returns"])
            lam_ax.plot(steps, lam.mean(axis=0), color=color, label=f"{label}: final {mean_final:.0f}")
            var_ax.plot(steps, var.mean(axis=0), color=color)
            var_ax.plot(steps, [p["target_var"] for p in logs[0][:length]], color=color, linestyle="--", linewidth=1)
        # symlog: lam at 0 (Eq. 10's collapse) and the log update's spikes to tens in one view.
        lam_ax.set_yscale("symlog", linthresh=0.05)
        lam_ax.set(title=task, ylabel="lam (var_coef), symlog")
        lam_ax.legend(fontsize=7)
        var_ax.set(xlabel="environment steps", ylabel="ratio variance (dashed: target)", yscale="log")
        for ax in (lam_ax, var_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(CONTROLLERS), default=list(CONTROLLERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one core each)")
    parser.add_argument("--budget", type=int, default=None, help="one budget for every task (quick looks, tests)")
    parser.add_argument("--report-only", action="store_true", help="plot existing runs, train nothing")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: must be >= 1")
    budgets = {task: budget(task, DEFAULT_DMC_BUDGET, args.budget) for task in args.tasks}
    if not args.report_only:
        for task in args.tasks:
            run_panel([task], list(CONTROLLERS[task].values()), args.seeds, budgets, args.jobs, args.runs_dir)
    results: dict[str, dict[str, dict[str, Any]]] = {
        task: {
            label: {"algo": algo, **trajectories(task, algo, args.seeds, budgets[task], args.runs_dir)}
            for label, algo in CONTROLLERS[task].items()
        }
        for task in args.tasks
    }
    for task, task_results in results.items():
        for label, entry in task_results.items():
            finals = ", ".join(f"{value:.1f}" for value in entry["final_returns"]) or "no run with a train log"
            print(f"{task} {label} ({entry['algo']}): seeds {entry['seeds']}, finals {finals}")
    write_json(args.out_dir / "dual_trajectory.json", {"seeds": args.seeds, "budgets": budgets, "tasks": results})
    plot(results, args.out_dir / "dual_trajectory.png")
    return results


if __name__ == "__main__":
    main()
