"""The benchmark scripts stay runnable: their CLIs parse, and their shared helpers compute the right things."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import load_zoo_entry, mean_curve, steps_to_threshold, zoo_entry_to_kwargs
from benchmarks.zoo_runs import algorithm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "classic_control",
    "defaults_sweep",
    "overhead",
    "sample_efficiency",
    "llm_logprob_memory",
    "llm_objective_overhead",
    "llm_toy_comparison",
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


def test_zoo_entries_build_the_shipped_algorithms() -> None:
    for name in ("r2vpo", "r2vpo_off"):
        algo_class, path, _ = algorithm(name)
        assert path is not None
        for env_id in ("CartPole-v1", "Pendulum-v1"):
            kwargs, env_settings = zoo_entry_to_kwargs(load_zoo_entry(path, env_id))
            kwargs.pop("policy")
            assert env_settings["n_timesteps"] == 100_000
            algo_class("MlpPolicy", env_id, **kwargs)


def _run_benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


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


def test_llm_toy_comparison_runs_small(tmp_path: Path) -> None:
    out = _run_benchmark(
        "llm_toy_comparison", "--seeds", "0", "--iterations", "12", "--variants", "r2vpo", "grpo", "--out-dir", str(tmp_path)
    )
    assert "r2vpo" in out and "grpo" in out
    assert (tmp_path / "toy.json").exists()
