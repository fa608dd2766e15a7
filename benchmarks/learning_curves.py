"""
The learning-curve panel: R2VPO, R2VPO-OFF, SPO and SB3's PPO, each with its own RL Zoo hyperparameters (PPO's from
rl_zoo3's ``ppo.yml``, then ``benchmarks/hyperparams/ppo.yml`` for DeepMind Control tasks rl_zoo3 has no entry for:
PPO's defaults with flattened, normalized observations; SPO's from ``hyperparams/spo.yml``, the same values), on the
same seeds and the same env-step budget, evaluated on a separate env (deterministic policy, 10 episodes) every
budget / 20 steps. Where a PPO variant (a decaying learning rate, another clip range) won on tuning seeds
(:data:`PPO_REFERENCE`), it runs too and is the task's PPO reference.

    python -m benchmarks.learning_curves --tasks classic --seeds 0 1 2 3 4 --jobs 2
    MUJOCO_GL=egl python -m benchmarks.learning_curves --tasks dmc --seeds 0 1 2 3 4 --jobs 2
    python -m benchmarks.learning_curves --report-only        # aggregate whatever runs exist

Every run is one JSON under ``results/runs`` (config, seed, versions, eval curve, wall time); finished runs are
skipped, so the panel can be completed across sessions and machines. Per task and algorithm the report gives the
IQM and the mean of the final returns with 95% percentile-bootstrap intervals over seeds, the IQM difference to the
PPO reference and to SPO with its interval, the steps to a return threshold, the normalized area under the curve and
the wall time relative to PPO; a scoreboard counts, per algorithm, the tasks where it is at or above each reference.
It writes ``results/learning_curves/summary.json``, one PNG per task (mean with a bootstrap band) and the page
``docs/learning_curves.md``. Runs still missing are listed, not hidden. Those two always cover the whole panel
(every task, ``r2vpo r2vpo_off ppo spo``, seeds 0-4), whatever part ``--tasks``/``--algos`` trained; a probe (tuning
seeds, its own ``--runs-dir`` or ``--budget``) must name its own ``--out-dir`` and ``--docs-page``, and is refused
before training otherwise:

    python -m benchmarks.learning_curves --tasks Pendulum-v1 --algos ppo r2vpo --seeds 10 11 12 \
        --runs-dir benchmarks/results/tuning_runs --out-dir /tmp/probe --docs-page /tmp/probe/page.md
"""

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bootstrap import bootstrap_interval, difference_interval, iqm, resample_seeds, verdict
from benchmarks.common import RESULTS_DIR, curves_on_first_steps, median_steps_to, steps_ratio, steps_to_threshold, write_json
from benchmarks.zoo_runs import RUNS_DIR, StaleRunError, cached_run, run

OUT_DIR = RESULTS_DIR / "learning_curves"
DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "learning_curves.md"
ALGOS = ["r2vpo", "r2vpo_off", "ppo", "spo"]
#: Extra runs the panel can add (not in the default panel): see :func:`benchmarks.zoo_runs.algorithm`.
EXTRA_ALGOS = ["r2vpo_ppo_settings", "ppo_lin_lr", "clip_off", "r2vpo_log_dual", "r2vpo_off_log_dual"]
#: The PPO variant a task's runs are compared with where it is not rl_zoo3's entry (``ppo``): the best of ``ppo``,
#: ``ppo_lin_lr`` (the linear learning-rate decay R2VPO's entries were tried with) and a clip range around rl_zoo3's
#: (the counterpart of R2VPO's ``target_var`` probe) on tuning seeds, in ``results/tuning_runs``. Means over seeds
#: 10-11 at 250k: ball_in_cup-catch 813 constant, 888 decayed, 865 clip 0.1, 757 clip 0.3; cheetah-run 218 constant,
#: 174 decayed, 246 clip 0.1, 294 clip 0.3. MountainCarContinuous (seeds 10-14) kept rl_zoo3's entry against the
#: decay and clip 0.05 / 0.2. Tasks without a probe keep rl_zoo3's entry.
PPO_REFERENCE = {"dm_control/ball_in_cup-catch-v0": "ppo_lin_lr", "dm_control/cheetah-run-v0": "ppo@clip_range=0.3"}
#: The algorithms every other one is compared with: ``ppo`` stands for the task's PPO reference.
REFERENCES = ["ppo", "spo"]

CLASSIC_TASKS = ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0"]
DMC_TASKS = [
    "dm_control/cartpole-swingup-v0",
    "dm_control/cartpole-swingup_sparse-v0",
    "dm_control/ball_in_cup-catch-v0",
    "dm_control/cheetah-run-v0",
    "dm_control/walker-walk-v0",
]
#: Budgets: the ``n_timesteps`` of PPO's entry for classic tasks and for dm_control cartpole-swingup (4 envs, whose
#: runs the staleness benchmark shares); the other DMC tasks at least 500k (``--dmc-budget``).
FIXED_BUDGETS = {
    "CartPole-v1": 100_000,
    "Pendulum-v1": 100_000,
    "MountainCarContinuous-v0": 20_000,
    "dm_control/cartpole-swingup-v0": 200_000,
}
DEFAULT_DMC_BUDGET = 500_000
#: The reported seeds; tuning seeds (10 and up) go to their own runs directory and report.
PANEL_SEEDS = [0, 1, 2, 3, 4]
#: Return thresholds for steps-to-threshold: gymnasium's ``reward_threshold`` where it has one (CartPole 475,
#: MountainCarContinuous 90), -200 for Pendulum, and half the maximum return (1000) for DMC tasks.
THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "MountainCarContinuous-v0": 90.0}
DMC_THRESHOLD = 500.0


def _algorithm_name(text: str) -> str:
    base = text.partition("@")[0]
    if base not in ALGOS + EXTRA_ALGOS:
        raise argparse.ArgumentTypeError(f"unknown algorithm {base!r}: choose from {ALGOS + EXTRA_ALGOS}")
    return text


def threshold(task: str) -> float:
    """The steps-to-threshold return of ``task``."""
    return THRESHOLDS.get(task, DMC_THRESHOLD)


def budget(task: str, dmc_budget: int, override: int | None = None) -> int:
    """The env-step budget every algorithm gets on ``task`` (``override``: one budget for all tasks)."""
    return override if override is not None else FIXED_BUDGETS.get(task, dmc_budget)


def normalized_auc(curve: list[dict[str, float]], total_steps: int) -> float:
    """Area under the evaluation curve divided by the budget: the average eval return over training."""
    steps = np.array([0.0] + [p["timesteps"] for p in curve])
    values = np.array([curve[0]["mean_reward"]] + [p["mean_reward"] for p in curve])
    return float(np.trapezoid(values, steps) / max(total_steps, 1))


def _run_one(job: tuple[str, str, int, int, str]) -> str:
    algo, task, seed, steps, runs_dir = job
    import torch as th

    th.set_num_threads(1)  # one core per process; --jobs sets the parallelism
    run(algo, task, seed, n_timesteps=steps, runs_dir=Path(runs_dir))
    return f"{task} {algo} {seed}"


def task_algos(task: str, algos: list[str]) -> list[str]:
    """``algos`` on ``task``, with the task's PPO reference variant added where ``ppo`` is among them."""
    reference = PPO_REFERENCE.get(task)
    return [*algos, reference] if "ppo" in algos and reference and reference not in algos else list(algos)


def run_panel(
    tasks: list[str], algos: list[str], seeds: list[int], budgets: dict[str, int], jobs: int, runs_dir: Path
) -> None:
    """Train every missing (task, algorithm, seed) run, ``jobs`` processes at a time."""
    todo = [
        (algo, task, seed, budgets[task], str(runs_dir))
        for task in tasks
        for seed in seeds
        for algo in task_algos(task, algos)
        if not _is_current(algo, task, seed, budgets[task], runs_dir)
    ]
    print(f"{len(todo)} runs to do", flush=True)
    if jobs <= 1:
        for job in todo:
            print("done:", _run_one(job), flush=True)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for finished in pool.map(_run_one, todo):
            print("done:", finished, flush=True)


def _is_current(algo: str, task: str, seed: int, steps: int, runs_dir: Path) -> bool:
    """Whether a run is cached with its entry's current hyperparameters (a stale run is trained again)."""
    try:
        return cached_run(algo, task, seed, steps, runs_dir) is not None
    except StaleRunError:
        return False


def load_runs(task: str, algo: str, seeds: list[int], steps: int, runs_dir: Path) -> dict[int, dict[str, Any]]:
    """
    The finished runs of ``(task, algo)`` among ``seeds``.

    :raises StaleRunError: when a run was trained with hyperparameters its entry no longer has
    """
    found = {}
    for seed in seeds:
        try:
            payload = cached_run(algo, task, seed, steps, runs_dir)
        except StaleRunError as stale:
            raise StaleRunError(f"{stale}; run the panel without --report-only to train it again", stale.path) from stale
        if payload is not None:
            found[seed] = payload
    return found


def summarize_task(
    task: str, algos: list[str], seeds: list[int], steps: int, runs_dir: Path, rng: np.random.Generator
) -> dict[str, Any]:
    """
    Per-algorithm statistics of one task, and each algorithm's comparison with every reference of
    :data:`REFERENCES` that has runs (``ppo`` meaning the task's PPO reference variant): the IQM difference with its
    bootstrap interval and verdict, and the difference of the areas under the curve.
    """
    summary: dict[str, Any] = {
        "budget": steps,
        "threshold": threshold(task),
        "ppo_reference": PPO_REFERENCE.get(task, "ppo"),
        "algos": {},
    }
    finals_by_algo = {}
    for algo in task_algos(task, algos):
        runs = load_runs(task, algo, seeds, steps, runs_dir)
        if not runs:
            summary["algos"][algo] = {"seeds": [], "missing_seeds": seeds}
            continue
        finals = [runs[s]["final_mean_reward"] for s in sorted(runs)]
        finals_by_algo[algo] = finals
        reached = [steps_to_threshold(runs[s]["curve"], threshold(task)) for s in sorted(runs)]
        summary["algos"][algo] = {
            "seeds": sorted(runs),
            "missing_seeds": [s for s in seeds if s not in runs],
            "final_returns": finals,
            "iqm": iqm(np.array(finals)),
            "iqm_ci95": bootstrap_interval(finals, iqm, rng),
            "mean": float(np.mean(finals)),
            "mean_ci95": bootstrap_interval(finals, np.mean, rng),
            "steps_to_threshold": reached,
            "median_steps_to_threshold": float(np.median(reached)),
            "normalized_auc": float(np.mean([normalized_auc(runs[s]["curve"], steps) for s in sorted(runs)])),
            "wall_time_s": float(np.mean([runs[s]["wall_time_s"] for s in sorted(runs)])),
            # Runs made before the benchmark counted optimizer steps have none: the mean is of those that do.
            "gradient_steps": _mean_or_none([runs[s].get("gradient_steps") for s in sorted(runs)]),
            "curves": {str(s): runs[s]["curve"] for s in sorted(runs)},
        }
    for name in REFERENCES:
        reference = summary["ppo_reference"] if name == "ppo" else name
        if len(finals_by_algo.get(reference, [])) < 2:
            continue
        ref_entry = summary["algos"][reference]
        level = float(np.mean(finals_by_algo[reference]))
        ref_steps = median_steps_to(list(ref_entry["curves"].values()), level)
        for algo, finals in finals_by_algo.items():
            if algo in (reference, name) or len(finals) < 2:
                continue
            low, high = difference_interval(finals, finals_by_algo[reference], iqm, rng)
            entry = summary["algos"][algo]
            entry.setdefault("vs", {})[name] = {
                "reference": reference,
                "iqm_diff": entry["iqm"] - ref_entry["iqm"],
                "iqm_diff_ci95": [low, high],
                "verdict": verdict(low, high),
                "auc_diff": entry["normalized_auc"] - ref_entry["normalized_auc"],
                # The sample-efficiency measure: median env steps to the reference's mean final return, relative to
                # the reference's own median.
                "reference_mean_final": level,
                "steps_to_reference_final_ratio": steps_ratio(
                    median_steps_to(list(entry["curves"].values()), level), ref_steps
                ),
                "wall_time_ratio": entry["wall_time_s"] / ref_entry["wall_time_s"],
                "gradient_steps_ratio": (
                    entry["gradient_steps"] / ref_entry["gradient_steps"]
                    if entry["gradient_steps"] and ref_entry["gradient_steps"]
                    else None
                ),
            }
    return summary


def _mean_or_none(values: list[Any]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def scoreboard(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Per algorithm and reference, over the tasks where both have runs: on how many the IQM is at or above the
    reference's, significantly above, significantly below, the area under the curve at or above, and at most 0.6x
    the reference's env steps to the reference's mean final return (``steps_le_0.6x``, medians over seeds).
    """
    board: dict[str, dict[str, dict[str, Any]]] = {}
    for summary in summaries.values():
        for algo, entry in summary["algos"].items():
            for name, comparison in entry.get("vs", {}).items():
                row = board.setdefault(algo, {}).setdefault(
                    name,
                    {"tasks": 0, "iqm_at_or_above": 0, "above": 0, "below": 0, "auc_at_or_above": 0, "steps_le_0.6x": 0},
                )
                row["tasks"] += 1
                row["iqm_at_or_above"] += comparison["iqm_diff"] >= 0
                row["above"] += comparison["verdict"] == "above"
                row["below"] += comparison["verdict"] == "below"
                row["auc_at_or_above"] += comparison["auc_diff"] >= 0
                row["steps_le_0.6x"] += comparison["steps_to_reference_final_ratio"] <= 0.6
    return board


def plot_task(task: str, summary: dict[str, Any], out_dir: Path, rng: np.random.Generator) -> str | None:
    """Mean curve with a 95% bootstrap band per algorithm; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    plotted = False
    for algo, entry in summary["algos"].items():
        curves = list(entry.get("curves", {}).values())
        if not curves:
            continue
        steps, values = curves_on_first_steps(curves)
        rows = resample_seeds(values, rng, n_resamples=2000).mean(axis=1)
        ax.plot(steps, values.mean(axis=0), label=f"{algo} ({len(curves)} seeds)")
        ax.fill_between(steps, np.percentile(rows, 2.5, axis=0), np.percentile(rows, 97.5, axis=0), alpha=0.2)
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.axhline(summary["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set(title=task, xlabel="environment steps", ylabel="deterministic eval return (10 episodes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    name = f"{task.replace('/', '_')}.png"
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=100)
    plt.close(fig)
    return name


def _fmt(value: float) -> str:
    return "never" if not math.isfinite(value) else f"{value / 1000:.0f}k" if abs(value) >= 1000 else f"{value:.0f}"


def _comparison(entry: dict[str, Any], name: str) -> str:
    if name not in entry.get("vs", {}):
        return ""
    comparison = entry["vs"][name]
    low, high = comparison["iqm_diff_ci95"]
    return f"{comparison['iqm_diff']:+.1f} [{low:+.1f}, {high:+.1f}] ({comparison['verdict']})"


def _steps_ratio(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    ratio = comparison["steps_to_reference_final_ratio"]
    if math.isnan(ratio):
        return "reference never (median)"
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "never (median)"


def _cost(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    steps = comparison["gradient_steps_ratio"]
    return f"{comparison['wall_time_ratio']:.2f}x, " + ("steps not counted" if steps is None else f"{steps:.2f}x")


def markdown_report(summaries: dict[str, dict[str, Any]], figures: dict[str, str], out_dir: Path, page: Path) -> str:
    """The results page: one table row per task and algorithm, the scoreboard, the figures, and what is missing."""
    lines = [
        "# Learning curves: R2VPO, R2VPO-OFF and SPO against PPO",
        "",
        "Generated by `python -m benchmarks.learning_curves --report-only` from the runs under",
        "`benchmarks/results/runs`; rerun or extend a task with the commands below. Final return = the last",
        "deterministic evaluation (10 episodes on a separate env). IQM and mean over seeds with 95% percentile-bootstrap",
        "intervals; \"IQM - PPO\" is the difference of IQMs to the task's PPO reference (rl_zoo3's entry, or its",
        "variant, a decaying learning rate or another clip range, where that won on tuning seeds: marked *ref*) with",
        'its bootstrap interval (seeds resampled in each group), "IQM - SPO" the same against SPO; AUC is the average',
        "evaluation return over training; cost is the mean wall time per run (one core each) and the mean number of",
        "optimizer steps relative to the PPO reference's (steps where both sets of runs counted them). Wall times of runs",
        "cached at different times carry the machine's load then (one or two runs in parallel): a like-for-like cost of",
        "the update is `benchmarks/overhead.py`'s.",
        "",
        "```bash",
        "python -m benchmarks.learning_curves --tasks classic --seeds 0 1 2 3 4 --jobs 2",
        "MUJOCO_GL=egl python -m benchmarks.learning_curves --tasks dmc --seeds 0 1 2 3 4 --jobs 2",
        "```",
        "",
        "| task (budget) | algorithm | seeds | IQM final [95% CI] | mean final [95% CI] | IQM - PPO [95% CI] | "
        "IQM - SPO [95% CI] | steps to threshold (median) | AUC | steps to PPO's mean final, ratio | "
        "cost vs PPO (wall, steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for task, summary in summaries.items():
        for algo, entry in summary["algos"].items():
            label = f"{algo} (*ref*)" if algo == summary["ppo_reference"] else algo
            if entry["missing_seeds"]:
                missing.append(f"{task} {algo}: seeds {entry['missing_seeds']}")
            if not entry["seeds"]:
                lines.append(f"| {task} ({_fmt(summary['budget'])}) | {label} | 0 | not run | | | | | | | |")
                continue
            iqm_low, iqm_high = entry["iqm_ci95"]
            mean_low, mean_high = entry["mean_ci95"]
            reached = sum(math.isfinite(s) for s in entry["steps_to_threshold"])
            cost = _cost(entry.get("vs", {}).get("ppo"))
            lines.append(
                f"| {task} ({_fmt(summary['budget'])}) | {label} | {len(entry['seeds'])} | "
                f"{entry['iqm']:.1f} [{iqm_low:.1f}, {iqm_high:.1f}] | "
                f"{entry['mean']:.1f} [{mean_low:.1f}, {mean_high:.1f}] | "
                f"{_comparison(entry, 'ppo')} | {_comparison(entry, 'spo')} | "
                f"{reached}/{len(entry['seeds'])} reach {summary['threshold']:g} "
                f"({_fmt(entry['median_steps_to_threshold'])}) | {entry['normalized_auc']:.1f} | "
                f"{_steps_ratio(entry.get('vs', {}).get('ppo'))} | {cost} |"
            )
    lines += [
        "",
        "## Scoreboard",
        "",
        "Over the tasks where both have runs: IQM at or above the reference's, significantly above or below (the",
        "interval of the IQM difference excludes 0), AUC at or above, and env steps to the reference's mean final",
        "return at most 0.6x the reference's own (medians over seeds; the steps ratio per task is in the table).",
        "",
        "| algorithm | against | tasks | IQM >= | significantly above | significantly below | AUC >= | steps <= 0.6x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algo, rows in scoreboard(summaries).items():
        for name, row in rows.items():
            lines.append(
                f"| {algo} | {'PPO reference' if name == 'ppo' else name} | {row['tasks']} | {row['iqm_at_or_above']} | "
                f"{row['above']} | {row['below']} | {row['auc_at_or_above']} | {row['steps_le_0.6x']} |"
            )
    lines += ["", "## Missing runs", ""]
    lines += [f"- {item}" for item in missing] or ["None."]
    lines += ["", "## Curves", ""]
    relative = os.path.relpath(out_dir, page.parent)
    for task, name in figures.items():
        lines += [f"![{task}]({relative}/{name})", ""]
    return "\n".join(lines)


def report(
    tasks: list[str], algos: list[str], seeds: list[int], budgets: dict[str, int], runs_dir: Path, out_dir: Path, page: Path
) -> dict[str, Any]:
    """Aggregate the finished runs into the summary JSON, the figures and the docs page."""
    rng = np.random.default_rng(0)
    summaries = {task: summarize_task(task, algos, seeds, budgets[task], runs_dir, rng) for task in tasks}
    figures = {}
    for task, summary in summaries.items():
        name = plot_task(task, summary, out_dir, rng)
        if name is not None:
            figures[task] = name
    write_json(
        out_dir / "summary.json",
        {"seeds": seeds, "algos": algos, "tasks": summaries, "scoreboard": scoreboard(summaries)},
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown_report(summaries, figures, out_dir, page) + "\n")
    print(page.read_text())
    return summaries


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["all"], help="task ids, or 'classic', 'dmc', 'all'")
    parser.add_argument(
        "--algos",
        nargs="+",
        default=ALGOS,
        type=_algorithm_name,
        help=f"{ALGOS + EXTRA_ALGOS}, or a variant name@key=value,... (probes on tuning seeds)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=PANEL_SEEDS)
    parser.add_argument("--dmc-budget", type=int, default=DEFAULT_DMC_BUDGET, help="env steps on DMC tasks (>= 500k)")
    parser.add_argument("--budget", type=int, default=None, help="one budget for every task (quick looks, tests)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one core each)")
    parser.add_argument("--report-only", action="store_true", help="aggregate existing runs, train nothing")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--docs-page", type=Path, default=DOCS_PAGE)
    args = parser.parse_args(argv)
    groups = {"classic": CLASSIC_TASKS, "dmc": DMC_TASKS, "all": CLASSIC_TASKS + DMC_TASKS}
    tasks = [t for name in args.tasks for t in groups.get(name, [name])]
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: must be >= 1")
    if args.dmc_budget < DEFAULT_DMC_BUDGET and args.budget is None:
        parser.error(
            f"--dmc-budget={args.dmc_budget}: the panel needs >= {DEFAULT_DMC_BUDGET} (use --budget for a quick look)"
        )
    if args.budget is not None and args.budget < 1:
        parser.error(f"--budget={args.budget}: must be >= 1")
    writes_panel_outputs = args.out_dir == OUT_DIR or args.docs_page == DOCS_PAGE
    if writes_panel_outputs:
        _check_panel_selection(parser, args)
    if not args.report_only:
        budgets = {task: budget(task, args.dmc_budget, args.budget) for task in tasks}
        run_panel(tasks, args.algos, args.seeds, budgets, args.jobs, args.runs_dir)
    algos, seeds = args.algos, args.seeds
    if writes_panel_outputs:  # the panel's summary and page always cover the whole panel, not the part just trained
        tasks, algos, seeds = CLASSIC_TASKS + DMC_TASKS, ALGOS, PANEL_SEEDS
    budgets = {task: budget(task, args.dmc_budget, args.budget) for task in tasks}
    return report(tasks, algos, seeds, budgets, args.runs_dir, args.out_dir, args.docs_page)


def _check_panel_selection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any training, a run whose report would replace the panel's with runs the panel does not hold."""
    probe_hint = "; probes write their own report: pass --out-dir and --docs-page"
    if args.runs_dir != RUNS_DIR:
        parser.error(f"--runs-dir={args.runs_dir}: the panel's summary and page are built from {RUNS_DIR}{probe_hint}")
    if args.budget is not None:
        parser.error(f"--budget={args.budget}: the panel runs at its own budgets{probe_hint}")
    if not set(args.seeds) <= set(PANEL_SEEDS):
        parser.error(f"--seeds={args.seeds}: the panel reports seeds {PANEL_SEEDS} only{probe_hint}")


if __name__ == "__main__":
    main()
