"""The benchmark scripts stay runnable: their CLIs parse, and their shared helpers compute the right things."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.common import (
    load_zoo_entry,
    mean_curve,
    median_steps_to,
    steps_ratio,
    steps_to_threshold,
    zoo_entry_to_kwargs,
)
from benchmarks.zoo_runs import algorithm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "classic_control",
    "defaults_sweep",
    "overhead",
    "sample_efficiency",
    "llm_logprob_memory",
    "llm_objective_overhead",
    "gpu_check",
    "llm_toy_comparison",
    "learning_curves",
    "replay_sampling",
    "staleness",
    "dual_trajectory",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_cli_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_steps_to_threshold_and_mean_curve() -> None:
    curve = [
        {"timesteps": 10, "mean_reward": -5.0},
        {"timesteps": 20, "mean_reward": 1.0},
        {"timesteps": 30, "mean_reward": 3.0},
    ]
    assert steps_to_threshold(curve, 1.0) == 20
    assert math.isinf(steps_to_threshold(curve, 4.0))
    steps, mean, std = mean_curve([curve, [{"timesteps": 10, "mean_reward": -3.0}, {"timesteps": 30, "mean_reward": 5.0}]])
    assert steps.tolist() == [10, 20, 30]
    assert mean.tolist() == [-4.0, 1.0, 4.0]
    assert std.tolist() == [1.0, 0.0, 1.0]


def test_steps_ratio_of_medians_says_when_the_reference_never_gets_there() -> None:
    def rising(step_at_level: int) -> list[dict[str, float]]:
        return [{"timesteps": t, "mean_reward": float(t >= step_at_level)} for t in (10, 20, 30)]

    never = [{"timesteps": 10, "mean_reward": 0.0}]
    assert median_steps_to([rising(10), rising(30), rising(20)], 1.0) == 20
    assert math.isinf(median_steps_to([rising(10), never, never], 1.0))
    assert steps_ratio(10.0, 20.0) == 0.5
    assert math.isinf(steps_ratio(math.inf, 20.0))
    assert math.isnan(steps_ratio(10.0, math.inf)) and math.isnan(steps_ratio(math.inf, math.inf))


def test_zoo_entries_build_the_shipped_algorithms() -> None:
    for name in ("r2vpo", "r2vpo_off"):
        algo_class, path, _ = algorithm(name)
        assert path is not None
        for env_id in ("CartPole-v1", "Pendulum-v1"):
            kwargs, env_settings = zoo_entry_to_kwargs(load_zoo_entry(path, env_id))
            kwargs.pop("policy")
            assert env_settings["n_timesteps"] == 100_000
            algo_class("MlpPolicy", env_id, **kwargs)


def test_r2vpo_with_ppo_settings_runs_ppo_entry_without_clip(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    from benchmarks.zoo_runs import run, run_path

    payload = run("r2vpo_ppo_settings", "CartPole-v1", seed=0, n_timesteps=1024, runs_dir=tmp_path)
    ppo_entry = load_zoo_entry(algorithm("ppo")[1], "CartPole-v1")
    assert "clip_range" in ppo_entry and "clip_range" not in payload["hyperparams"]
    assert payload["hyperparams"] == {k: v for k, v in ppo_entry.items() if k != "clip_range"}
    assert run_path("r2vpo_ppo_settings", "CartPole-v1", 0, 1024, tmp_path).exists()


def test_variants_and_the_linear_decay_of_ppo(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    from benchmarks.zoo_runs import run, run_config

    assert algorithm("r2vpo_log_dual@target_var=0.005,var_coef_lr=0.02")[2] == {
        "var_coef_update": "log",
        "var_coef_lr": 0.02,
        "target_var": 0.005,
    }
    with pytest.raises(ValueError, match="key=value"):
        algorithm("r2vpo@target_var")
    with pytest.raises(ValueError, match="Unknown algorithm 'sac'"):
        algorithm("sac@gamma=0.9")
    ppo_entry = run_config("ppo", "Pendulum-v1").entry
    assert run_config("ppo_lin_lr", "Pendulum-v1").entry == {
        **ppo_entry,
        "learning_rate": f"lin_{ppo_entry['learning_rate']:g}",
    }
    payload = run("r2vpo@var_coef_update=log,var_coef_lr=0.01", "CartPole-v1", seed=0, n_timesteps=512, runs_dir=tmp_path)
    assert payload["overrides"] == {"var_coef_update": "log", "var_coef_lr": 0.01}


def test_clipped_replay_runs_the_tuned_r2vpo_off_entry_without_the_penalty(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    import torch as th

    from benchmarks.zoo_runs import ClipReplay, run, run_config

    config = run_config("clip_off@replay_capacity=2", "Pendulum-v1")
    assert config.algo_class is ClipReplay and "var_coef" not in config.entry
    assert config.entry == {k: v for k, v in run_config("r2vpo_off_tuned", "Pendulum-v1").entry.items() if k != "var_coef"}
    payload = run("clip_off@replay_capacity=2", "Pendulum-v1", seed=0, n_timesteps=2048, runs_dir=tmp_path)
    assert payload["overrides"] == {"replay_capacity": 2}
    model = ClipReplay("MlpPolicy", "Pendulum-v1", n_steps=64, clip_range=0.1)
    from stable_baselines3.common.type_aliases import RolloutBufferSamples

    zeros = th.zeros(4)
    minibatch = RolloutBufferSamples(zeros, zeros, zeros, zeros, zeros, zeros)  # behavior log-probability 0
    loss, _ = model._policy_objective(zeros + 0.5, th.ones(4), minibatch)  # r = e^0.5, beyond the clip
    assert th.allclose(loss, th.full((4,), -1.1))


def test_run_without_budget_reuses_the_panel_run_of_the_entry_budget(tmp_path: Path) -> None:
    from benchmarks.zoo_runs import run, run_config, run_path

    # A run the learning-curve panel cached under the entry's own budget (100k for CartPole) named explicitly.
    _, entry, overrides, _ = run_config("r2vpo", "CartPole-v1")
    cached = {"algo": "r2vpo", "seed": 3, "n_timesteps": 100_000, "hyperparams": entry, "overrides": overrides}
    run_path("r2vpo", "CartPole-v1", 3, 100_000, tmp_path).write_text(json.dumps({**cached, "marker": "panel run"}))
    assert run("r2vpo", "CartPole-v1", 3, runs_dir=tmp_path)["marker"] == "panel run"


def test_run_cached_with_another_entry_is_stale_and_trained_again(tmp_path: Path) -> None:
    from benchmarks.learning_curves import load_runs
    from benchmarks.zoo_runs import StaleRunError, cached_run, run, run_config, run_path

    _, entry, overrides, _ = run_config("r2vpo", "CartPole-v1")
    old_entry = {**entry, "target_var": 0.5}
    path = run_path("r2vpo", "CartPole-v1", 0, 1024, tmp_path)
    path.write_text(json.dumps({"n_timesteps": 1024, "hyperparams": old_entry, "overrides": overrides}))
    with pytest.raises(StaleRunError, match="target_var"):
        cached_run("r2vpo", "CartPole-v1", 0, 1024, tmp_path)
    with pytest.raises(StaleRunError, match="train it again"):
        load_runs("CartPole-v1", "r2vpo", [0], 1024, tmp_path)
    payload = run("r2vpo", "CartPole-v1", seed=0, n_timesteps=1024, runs_dir=tmp_path)
    assert payload["hyperparams"] == entry and json.loads(path.read_text())["hyperparams"] == entry


def test_stale_run_under_the_other_name_gives_way_to_a_current_one_and_is_replaced(tmp_path: Path) -> None:
    from benchmarks.zoo_runs import cached_run, run, run_config, run_path

    _, entry, overrides, _ = run_config("r2vpo", "CartPole-v1")
    stale_path = run_path("r2vpo", "CartPole-v1", 0, None, tmp_path)
    stale_path.write_text(json.dumps({"n_timesteps": 1024, "hyperparams": {**entry, "target_var": 0.5}}))
    budget_path = run_path("r2vpo", "CartPole-v1", 0, 1024, tmp_path)
    budget_path.write_text(json.dumps({"n_timesteps": 1024, "hyperparams": entry, "overrides": overrides}))
    assert cached_run("r2vpo", "CartPole-v1", 0, 1024, tmp_path) == json.loads(budget_path.read_text())

    budget_path.unlink()
    run("r2vpo", "CartPole-v1", seed=0, n_timesteps=1024, runs_dir=tmp_path)
    assert not budget_path.exists() and json.loads(stale_path.read_text())["hyperparams"] == entry


def _run_benchmark(script: str, *args: str) -> str:
    """Run ``python -m benchmarks.<script> *args``; on a timeout its whole process group goes, pool workers included."""
    with subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{script}", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    return stdout


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tmp_path: Path) -> None:
    """The GPU check's code path at tiny sizes on CPU: it must run as prepared when a GPU session gets it."""
    out = _run_benchmark("gpu_check", "--device", "cpu", "--small", "--out-dir", str(tmp_path))
    payload = json.loads((tmp_path / "cpu_small.json").read_text())
    assert payload["gpu"] == "cpu" and "goals:" in out
    assert payload["training"]["behavior_vs_recomputed_abs_diff_mean"] < 1e-4  # the engine scores as the trainer does
    assert {"naive_peak_mb", "fused_peak_mb", "fused_memory_ratio"} <= set(payload["log_probs_and_loss"][0])


@pytest.mark.slow
def test_llm_logprob_memory_runs_small(tmp_path: Path) -> None:
    out = _run_benchmark(
        "llm_logprob_memory", "--batch-sizes", "1", "--seq", "64", "--vocab", "4096", "--hidden", "32",
        "--chunk-size", "16", "--repeats", "2", "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert "fused" in out
    assert (tmp_path / "cpu_float32.json").exists() and (tmp_path / "cpu_float32.png").exists()


def test_llm_objective_overhead_runs_small(tmp_path: Path) -> None:
    out = _run_benchmark(
        "llm_objective_overhead",
        "--repeats",
        "2",
        "--seq",
        "16",
        "--vocab",
        "512",
        "--hidden",
        "16",
        "--out-dir",
        str(tmp_path),
    )
    assert "R2VPO / GRPO step time" in out
    assert (tmp_path / "cpu.json").exists()


def test_llm_toy_comparison_compares_final_rewards_and_generations_to_the_references_final() -> None:
    from benchmarks.llm_toy_comparison import compare

    def rising(start: int, value: float) -> list[float]:
        return [0.0] * start + [value] * (40 - start)

    reference = [rising(19, 0.5)] * 3  # the 10-generation average reaches its final 0.5 at generation 29
    comparison = compare([rising(9, 0.8)] * 3, reference)  # 7 of 10 at 0.8 pass 0.5: generation 16
    assert comparison["generations_to_reference_final"] == [16.0] * 3
    assert comparison["reference_generations_to_own_final"] == [29.0] * 3
    assert comparison["generations_ratio"] == pytest.approx(16 / 29)
    assert comparison["final_reward_diff"] == pytest.approx(0.3) and comparison["verdict"] == "above"
    assert comparison["final_reward_diff_ci95"] == pytest.approx([0.3, 0.3])
    uneven = compare([rising(9, 0.8)] * 3, [rising(5, 0.0), rising(5, 0.0), rising(5, 0.9)])
    assert math.isnan(uneven["generations_ratio"])  # the reference's median run never reaches its mean final 0.3


def test_a_cached_toy_run_matches_when_only_a_setting_added_since_is_missing_at_its_default() -> None:
    from benchmarks.llm_toy_comparison import same_settings

    identity = {"var_coef": 1.0, "replay_capacity": 2, "var_coef_age_factor": 1.0}
    written_before_the_setting = {"var_coef": 1.0, "replay_capacity": 2}
    assert same_settings(written_before_the_setting, identity)
    assert not same_settings(written_before_the_setting, {**identity, "var_coef_age_factor": 0.5})
    assert not same_settings({**written_before_the_setting, "replay_capacity": 4}, identity)
    assert not same_settings({**identity, "removed_setting": 1}, identity)


@pytest.mark.slow
def test_llm_toy_comparison_runs_small(tmp_path: Path) -> None:
    args = ["--seeds", "0", "--iterations", "12", "--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    out = _run_benchmark("llm_toy_comparison", *args, "--variants", "r2vpo", "grpo")
    assert "r2vpo seed 0" in out and "grpo seed 0" in out and "cached" not in out
    first = json.loads((tmp_path / "toy.json").read_text())
    run_files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert run_files == ["repeat_digit__grpo__0__12.json", "repeat_digit__r2vpo__0__12.json"]
    # Again with one more variant: the two runs are reused, the new one trained.
    out = _run_benchmark("llm_toy_comparison", *args, "--variants", "r2vpo", "grpo", "r2vpo_off")
    assert "r2vpo seed 0: final reward" in out and out.count("(cached run)") == 2
    again = json.loads((tmp_path / "toy.json").read_text())
    assert again["curves"]["r2vpo"] == first["curves"]["r2vpo"] and len(again["curves"]["r2vpo_off"][0]) == 12


@pytest.mark.slow
def test_learning_curves_panel_runs_skips_and_reports(tmp_path: Path) -> None:
    args = [
        "--tasks", "CartPole-v1", "--seeds", "0", "1", "--budget", "2048", "--jobs", "2",
        "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--docs-page", str(tmp_path / "page.md"),
    ]  # fmt: skip
    out = _run_benchmark("learning_curves", *args)
    assert "8 runs to do" in out
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 8
    payload = json.loads(runs[0].read_text())
    assert {"seed", "versions", "curve", "wall_time_s", "hyperparams", "n_timesteps"} <= set(payload)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["tasks"]["CartPole-v1"]["algos"]
    assert summary["r2vpo"]["seeds"] == [0, 1] and set(summary["r2vpo"]["vs"]) == {"ppo", "spo"}
    assert set(summary["spo"]["vs"]) == {"ppo"} and set(summary["ppo"]["vs"]) == {"spo"}
    assert (tmp_path / "out" / "CartPole-v1.png").exists()
    page = (tmp_path / "page.md").read_text()
    assert "| CartPole-v1 (2k) | r2vpo | 2 |" in page and "| r2vpo | PPO reference | 1 |" in page
    assert "0 runs to do" in _run_benchmark("learning_curves", *args)  # finished runs are skipped


def test_learning_curves_statistics() -> None:
    from benchmarks.bootstrap import bootstrap_interval, iqm
    from benchmarks.learning_curves import normalized_auc

    assert iqm(np.array([1.0, 2.0, 3.0, 4.0])) == 2.5  # the middle two
    assert iqm(np.array([0.0, 10.0, 10.0, 10.0, 1000.0])) == 10.0  # outliers do not move it
    low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], np.mean, np.random.default_rng(0))
    assert 1.0 <= low < 3.0 < high <= 5.0
    curve = [{"timesteps": 50, "mean_reward": 1.0}, {"timesteps": 100, "mean_reward": 1.0}]
    assert normalized_auc(curve, 100) == 1.0


def test_staleness_llm_part_runs_small(tmp_path: Path) -> None:
    out = _run_benchmark(
        "staleness",
        "--parts",
        "llm",
        "--seeds",
        "0",
        "--capacities",
        "1",
        "2",
        "--llm-iterations",
        "2",
        "--out-dir",
        str(tmp_path),
    )
    payload = json.loads((tmp_path / "staleness.json").read_text())
    assert set(payload["results"]["llm"]["by_objective"]) == {"r2vpo", "clip"}
    assert set(payload["results"]["llm"]["by_objective"]["clip"]) == {"1", "2"}
    assert "llm clip: K=1" in out and (tmp_path / "staleness.png").exists()


def test_replay_sampling_runs_small(tmp_path: Path) -> None:
    _run_benchmark(
        "replay_sampling",
        "--seeds",
        "0",
        "--budgets",
        "256",
        "--variants",
        "r2vpo_off_newest_first",
        "--out-dir",
        str(tmp_path),
    )
    payload = json.loads((tmp_path / "identity.json").read_text())
    assert payload["summary"]["r2vpo_off_newest_first"]["256"]["seeds"] == 1


def _write_run(runs_dir: Path, algo: str, task: str, seed: int, steps: int, final: float) -> None:
    from benchmarks.zoo_runs import run_config, run_path

    _, entry, overrides, _ = run_config(algo, task)
    curve = [{"timesteps": steps // 2, "mean_reward": final / 2}, {"timesteps": steps, "mean_reward": final}]
    payload = {"n_timesteps": steps, "hyperparams": entry, "overrides": overrides, "curve": curve}
    payload.update(final_mean_reward=final, wall_time_s=10.0 + final / 100, gradient_steps=int(final))
    run_path(algo, task, seed, steps, runs_dir).write_text(json.dumps(payload))


def test_learning_curves_compare_with_the_tasks_ppo_reference_and_spo(tmp_path: Path) -> None:
    from benchmarks.learning_curves import PPO_REFERENCE, scoreboard, summarize_task

    task = "dm_control/ball_in_cup-catch-v0"
    assert PPO_REFERENCE[task] == "ppo_lin_lr"
    finals = {"r2vpo": 500.0, "ppo": 900.0, "ppo_lin_lr": 300.0, "spo": 100.0}
    for algo, final in finals.items():
        for seed in range(3):
            _write_run(tmp_path, algo, task, seed, 1000, final + seed)
    summary = summarize_task(task, ["r2vpo", "ppo", "spo"], [0, 1, 2], 1000, tmp_path, np.random.default_rng(0))
    assert summary["ppo_reference"] == "ppo_lin_lr" and set(summary["algos"]) == set(finals)
    against_ppo = summary["algos"]["r2vpo"]["vs"]["ppo"]
    assert against_ppo["reference"] == "ppo_lin_lr" and against_ppo["iqm_diff"] == pytest.approx(200.0)
    assert against_ppo["verdict"] == "above" and against_ppo["auc_diff"] > 0
    assert against_ppo["wall_time_ratio"] == pytest.approx(15.01 / 13.01)
    assert against_ppo["gradient_steps_ratio"] == pytest.approx(501 / 301)
    # ppo_lin_lr's mean final is 301: r2vpo's runs pass it at 1000 steps, the reference's median run at 1000 too.
    assert against_ppo["reference_mean_final"] == pytest.approx(301.0)
    assert against_ppo["steps_to_reference_final_ratio"] == pytest.approx(1.0)
    assert math.isinf(summary["algos"]["spo"]["vs"]["ppo"]["steps_to_reference_final_ratio"])
    assert summary["algos"]["spo"]["vs"]["ppo"]["verdict"] == "below"
    assert "ppo" not in summary["algos"]["ppo"].get("vs", {})  # rl_zoo3's entry is not compared with its variant
    board = scoreboard({task: summary})
    assert board["r2vpo"]["ppo"] == {
        "tasks": 1, "iqm_at_or_above": 1, "above": 1, "below": 0, "auc_at_or_above": 1, "steps_le_0.6x": 0
    }  # fmt: skip
    assert board["ppo"]["spo"]["above"] == 1


def test_panel_page_says_when_the_references_median_run_never_reaches_its_mean_final(tmp_path: Path) -> None:
    from benchmarks.learning_curves import markdown_report, summarize_task

    task = "dm_control/ball_in_cup-catch-v0"
    for seed, final in enumerate([0.0, 0.0, 900.0]):  # ppo_lin_lr's mean final, 300, is reached by one run in three
        _write_run(tmp_path, "ppo_lin_lr", task, seed, 1000, final)
        _write_run(tmp_path, "r2vpo", task, seed, 1000, 500.0)
    summary = summarize_task(task, ["r2vpo", "ppo"], [0, 1, 2], 1000, tmp_path, np.random.default_rng(0))
    assert math.isnan(summary["algos"]["r2vpo"]["vs"]["ppo"]["steps_to_reference_final_ratio"])
    page = markdown_report({task: summary}, {}, tmp_path, tmp_path / "page.md")
    (r2vpo_row,) = [line for line in page.splitlines() if line.startswith(f"| {task} (1k) | r2vpo |")]
    assert "reference never (median)" in r2vpo_row


@pytest.mark.parametrize(
    ("selection", "named"),
    [
        (["--runs-dir", "elsewhere"], "--runs-dir=elsewhere"),
        (["--budget", "5"], "--budget=5"),
        (["--seeds", "10"], "--seeds=[10]"),
    ],
)
def test_a_probe_that_would_overwrite_the_panels_report_is_refused_before_training(
    selection: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.learning_curves import main

    with pytest.raises(SystemExit) as stopped:
        main(["--tasks", "CartPole-v1", "--algos", "ppo", *selection])  # the default --out-dir and --docs-page
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert named in error and "pass --out-dir and --docs-page" in error


def test_the_panels_report_covers_the_whole_panel_whatever_part_was_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.learning_curves as panel

    for name in ("RUNS_DIR", "OUT_DIR", "DOCS_PAGE"):
        monkeypatch.setattr(panel, name, tmp_path / name.lower())
    panel.RUNS_DIR.mkdir()
    task = "dm_control/cheetah-run-v0"
    assert panel.task_algos(task, ["ppo"]) == ["ppo", "ppo@clip_range=0.3"]
    for algo in ("ppo", "ppo@clip_range=0.3", "r2vpo"):
        for seed in panel.PANEL_SEEDS:
            _write_run(panel.RUNS_DIR, algo, task, seed, 500_000, 300.0 + seed)
    summaries = panel.main(["--tasks", task, "--algos", "r2vpo", "--report-only"])
    assert set(summaries) == set(panel.CLASSIC_TASKS + panel.DMC_TASKS)
    assert summaries[task]["algos"]["r2vpo"]["vs"]["ppo"]["reference"] == "ppo@clip_range=0.3"
    page = (tmp_path / "docs_page").read_text()
    assert "| dm_control/cheetah-run-v0 (500k) | ppo@clip_range=0.3 (*ref*) | 5 |" in page
    assert "dm_control/walker-walk-v0 r2vpo" in page.split("## Missing runs")[1]  # unnamed parts still listed


def test_every_dm_control_entry_of_r2vpo_is_the_shared_one_except_where_ppos_settings_differ() -> None:
    import yaml

    from benchmarks.zoo_runs import LOCAL_PPO_HYPERPARAMS
    from sb3_r2vpo.zoo import hyperparams_path

    entries = yaml.safe_load(hyperparams_path("r2vpo").read_text())
    ppo_entries = yaml.safe_load(LOCAL_PPO_HYPERPARAMS.read_text())
    shared, ppo_shared = entries["dm_control/ball_in_cup-catch-v0"], ppo_entries["dm_control/ball_in_cup-catch-v0"]
    dmc_ids = [env_id for env_id in entries if env_id.startswith("dm_control/")]
    assert len(dmc_ids) == 10
    for env_id in dmc_ids:
        ppo = ppo_entries.get(env_id, ppo_shared)
        differs = {key for key in {*entries[env_id], *shared} if entries[env_id].get(key) != shared.get(key)}
        assert {key: entries[env_id][key] for key in differs} == {key: ppo.get(key) for key in differs}, env_id
        assert all(ppo.get(key) != ppo_shared.get(key) for key in differs), env_id


@pytest.mark.slow
def test_dual_trajectory_trains_missing_runs_and_plots_lam(tmp_path: Path) -> None:
    out = _run_benchmark(
        "dual_trajectory", "--tasks", "MountainCarContinuous-v0", "--seeds", "0", "--budget", "2048", "--jobs", "2",
        "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
    )  # fmt: skip
    payload = json.loads((tmp_path / "out" / "dual_trajectory.json").read_text())["tasks"]
    assert list(payload) == ["MountainCarContinuous-v0"]  # --tasks: only the task asked for is trained and plotted
    shipped = payload["MountainCarContinuous-v0"]["shipped (floor var_coef_min 1)"]
    log = shipped["logs"]["0"]
    assert shipped["seeds"] == [0] and len(log) > 1 and all(point["var_coef"] >= 1.0 for point in log)
    eq10 = payload["MountainCarContinuous-v0"]["Eq. 10 (var_coef_min 0)"]["logs"]["0"]
    assert eq10[-1]["var_coef"] < 1.0  # the variance stays under target in these small updates, and lam sinks
    assert "finals" in out and (tmp_path / "out" / "dual_trajectory.png").exists()


def test_classic_control_entries_of_r2vpo_are_ppos_with_one_set_of_penalty_settings() -> None:
    import yaml

    from benchmarks.zoo_runs import ppo_hyperparams_file
    from sb3_r2vpo.zoo import hyperparams_path

    entries = yaml.safe_load(hyperparams_path("r2vpo").read_text())
    ppo_entries = yaml.safe_load(ppo_hyperparams_file().read_text())
    penalty_keys = {"var_coef", "var_coef_min", "target_var"}
    for env_id in ("CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0", "Acrobot-v1"):
        entry = entries[env_id]
        assert {key: value for key, value in entry.items() if key not in penalty_keys} == {
            key: value for key, value in ppo_entries[env_id].items() if key != "clip_range"
        }, env_id
        assert entry.get("var_coef", "auto") == "auto" and entry["var_coef_min"] == 1.0, env_id
        # target_var differs only where PPO's clip_range does: annealed where it is annealed.
        annealed_clip = str(ppo_entries[env_id].get("clip_range", "")).startswith("lin_")
        assert entry.get("target_var", 0.02) == ("lin_0.02" if annealed_clip else 0.02), env_id


def _replay_form(r2vpo_entry: dict[str, Any], rollout_split: int) -> dict[str, Any]:
    """R2VPO's entry as R2VPO-OFF's domain rule turns it: PPO's rollout split in ``rollout_split``, a replay of 4
    rollouts, ``n_epochs`` as ``utd_ratio`` (SB3's defaults filled in where the entry leaves them)."""
    entry = {"n_steps": 2048, "batch_size": 64, "n_epochs": 10, **r2vpo_entry}
    entry["utd_ratio"] = entry.pop("n_epochs")
    entry["n_steps"] //= rollout_split
    entry["replay_capacity"] = 4
    return entry


@pytest.mark.parametrize(("prefix", "rollout_split"), [("dm_control/", 4), ("", 1)], ids=["dm_control", "classic_control"])
def test_r2vpo_off_entries_are_r2vpos_under_one_replay_rule_per_domain(prefix: str, rollout_split: int) -> None:
    import yaml

    from sb3_r2vpo.zoo import hyperparams_path

    r2vpo = yaml.safe_load(hyperparams_path("r2vpo").read_text())
    off = yaml.safe_load(hyperparams_path("r2vpo_off").read_text())
    classic = ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0", "Acrobot-v1"]
    env_ids = [env_id for env_id in r2vpo if env_id.startswith("dm_control/")] if prefix else classic
    assert len(env_ids) == (10 if prefix else 4)
    for env_id in env_ids:
        expected = _replay_form(r2vpo[env_id], rollout_split)
        assert {"n_steps": 2048, "batch_size": 64, **off[env_id]} == expected, env_id
