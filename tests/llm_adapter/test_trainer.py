import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch as th

from llm_adapter.config import TrainConfig
from llm_adapter.objectives import LLM_OBJECTIVES
from llm_adapter.trainer import R2VPOLLMTrainer


def _config(tiny_model_dir: Path, toy_prompts: Path, output_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "model_name_or_path": str(tiny_model_dir),
        "train_file": str(toy_prompts),
        "reward": "toy_repeat_digit",
        "output_dir": str(output_dir),
        "max_completion_length": 8,
        "num_iterations": 2,
        "prompts_per_iteration": 4,
        "group_size": 4,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3,
        "progress_bar": False,
        "report_to_tensorboard": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def _metrics(output_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_script_end_to_end_reward_rises(tmp_path: Path) -> None:
    """
    `r2vpo-llm toy-setup toy` then `cd toy && python -m llm_adapter train --config config.yaml`, as a new user runs it:
    the config's relative paths resolve from its folder, and the toy task's mean reward rises clearly.
    """
    subprocess.run([sys.executable, "-m", "llm_adapter", "toy-setup", "toy"], check=True, capture_output=True, cwd=tmp_path)
    toy = tmp_path / "toy"
    result = subprocess.run(
        [sys.executable, "-m", "llm_adapter", "train", "--config", "config.yaml", "--progress_bar", "false"],
        check=True,
        capture_output=True,
        text=True,
        cwd=toy,
    )
    assert "Trained 150 iterations" in result.stdout
    rewards = [m["reward_mean"] for m in _metrics(toy / "run")]
    assert len(rewards) == 150
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > 2.5 * first and last > first + 0.04, (first, last)
    assert list((toy / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (toy / "run" / "checkpoint-150" / "model" / "config.json").exists()

    # Started again over the finished run: refused with the ways out, nothing overwritten.
    again = subprocess.run(
        [sys.executable, "-m", "llm_adapter", "train", "--config", "config.yaml"], capture_output=True, text=True, cwd=toy
    )
    assert again.returncode == 2 and "already holds a run" in again.stderr and "overwrite_output_dir" in again.stderr
    assert len(_metrics(toy / "run")) == 150


def test_console_script_is_installed() -> None:
    executable = shutil.which("r2vpo-llm")
    assert executable is not None
    assert "toy-setup" in subprocess.run([executable, "--help"], check=True, capture_output=True, text=True).stdout


def test_cli_reports_bad_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_adapter",
            "train",
            "--model_name_or_path",
            "m",
            "--train_file",
            "t.jsonl",
            "--group_size",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "group_size" in result.stderr


def test_resume_continues_exactly(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    """4 iterations straight == 2 iterations, checkpoint, a new process state resumed, 2 more (replay, lam, RNG)."""
    settings = {
        "num_iterations": 4,
        "save_steps": 2,
        "replay_capacity": 2,
        "utd_ratio": 1.5,
        "var_coef": "auto_0",
        "target_var": 1e-4,
    }
    straight = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path / "a", **settings))
    straight.train()
    th.manual_seed(12345)  # the resumed run must not depend on the RNG state it starts with
    checkpoint = str(tmp_path / "a" / "checkpoint-2")
    resumed = R2VPOLLMTrainer(
        _config(tiny_model_dir, toy_prompts, tmp_path / "b", resume_from_checkpoint=checkpoint, **settings)
    )
    history = resumed.train()
    assert len(history) == 2 and resumed.iteration == 4
    for (name, mine), (_, reference) in zip(
        resumed.model.state_dict().items(), straight.model.state_dict().items(), strict=True
    ):
        assert th.equal(mine, reference), name
    assert resumed.var_coef.value == straight.var_coef.value > 0.0
    assert th.equal(resumed.replay.contents().completion_ids, straight.replay.contents().completion_ids)
    straight_metrics = [m["reward_mean"] for m in _metrics(tmp_path / "a")]
    assert [m["reward_mean"] for m in _metrics(tmp_path / "b")] == straight_metrics[2:]


def test_resume_latest_truncates_metrics_after_the_checkpoint(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=3, save_steps=2)).train()
    shutil.rmtree(tmp_path / "checkpoint-3")  # as if the run died after iteration 3 was logged
    trainer = R2VPOLLMTrainer(
        _config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=3, resume_from_checkpoint="latest")
    )
    trainer.train()
    assert [m["iteration"] for m in _metrics(tmp_path)] == [0, 1, 2]


def test_gradient_does_not_depend_on_the_micro_batch_split(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    """Token mean over the whole optimizer step: 4 micro-batches of 2 == 1 micro-batch of 8 (gradient accumulation)."""
    gradients = []
    for micro, accumulation, aggregation in (
        (2, 4, "token_mean"),
        (8, 1, "token_mean"),
        (2, 4, "seq_mean_token_mean"),
        (8, 1, "seq_mean_token_mean"),
    ):
        trainer = R2VPOLLMTrainer(
            _config(
                tiny_model_dir,
                toy_prompts,
                tmp_path,
                micro_batch_size=micro,
                gradient_accumulation_steps=accumulation,
                loss_aggregation=aggregation,
            )
        )
        th.manual_seed(0)
        batch, _ = trainer.generate_and_score()
        step_batch = batch.select(th.arange(8))
        trainer.accumulate_gradients(step_batch, th.zeros(8, dtype=th.long))
        gradients.append(th.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    th.testing.assert_close(gradients[0], gradients[1], rtol=1e-5, atol=1e-7)
    th.testing.assert_close(gradients[2], gradients[3], rtol=1e-5, atol=1e-7)


def test_per_age_lam_scales_the_penalty_of_stale_completions(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    """``var_coef_age_factor``: completions one generation old get ``lam * factor``, fresh ones ``lam``."""

    def gradient(ages: th.Tensor, **settings: Any) -> th.Tensor:
        trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, replay_capacity=2, **settings))
        th.manual_seed(0)
        batch, _ = trainer.generate_and_score()
        step_batch = batch.select(th.arange(8))
        # Ratios away from 1, so that the penalty has a gradient at all.
        step_batch = step_batch.with_behavior_log_probs(step_batch.behavior_log_probs - 0.3 * step_batch.completion_mask)
        trainer.accumulate_gradients(step_batch, ages)
        return th.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    stale, fresh = th.ones(8, dtype=th.long), th.zeros(8, dtype=th.long)
    scaled = gradient(stale, var_coef=1.0, var_coef_age_factor=0.25)
    th.testing.assert_close(scaled, gradient(stale, var_coef=0.25), rtol=1e-5, atol=1e-7)
    assert not th.allclose(scaled, gradient(stale, var_coef=1.0), rtol=1e-3, atol=1e-6)
    th.testing.assert_close(gradient(fresh, var_coef=1.0, var_coef_age_factor=0.25), gradient(fresh, var_coef=1.0))


@pytest.mark.parametrize("objective", sorted(LLM_OBJECTIVES))
def test_every_objective_trains(objective: str, tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, objective=objective))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.train()
    assert all(math.isfinite(v) for m in history for v in m.values())
    assert history[-1]["optimizer_steps"] == 2
    assert any(not th.equal(b, p) for b, p in zip(before, trainer.model.parameters(), strict=True))


def test_adaptive_lam_moves_and_fixed_lam_stays(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    adaptive = R2VPOLLMTrainer(
        _config(tiny_model_dir, toy_prompts, tmp_path, var_coef="auto_0", target_var=1e-6, utd_ratio=2.0)
    )
    history = adaptive.train()
    assert history[-1]["var_coef"] > 0.0 and adaptive.var_coef.n_steps == 8
    fixed = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path / "fixed", var_coef=0.06, utd_ratio=2.0))
    assert all(m["var_coef"] == 0.06 for m in fixed.train())


def test_replay_staleness_is_logged(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    trainer = R2VPOLLMTrainer(
        _config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=4, replay_capacity=3, utd_ratio=2.0)
    )
    history = trainer.train()
    assert [m["replay_size"] for m in history] == [16, 32, 48, 48]
    assert history[0]["mean_staleness"] == 0 and history[-1]["mean_staleness"] > 0.5
    assert {"ratio_var_age_0", "ratio_var_age_1", "ratio_var_age_2"} <= set(history[-1])
    # stale completions are further from the current policy than fresh ones
    assert history[-1]["ratio_var_age_2"] > history[-1]["ratio_var_age_0"]


def test_single_step_on_policy_warns_and_recompute_gives_ratio_one(
    tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    config = _config(
        tiny_model_dir,
        toy_prompts,
        tmp_path,
        micro_batch_size=16,
        gradient_accumulation_steps=1,
        behavior_log_probs="recompute",
    )
    with pytest.warns(UserWarning, match="importance ratio is 1"):
        trainer = R2VPOLLMTrainer(config)
    history = trainer.train()
    assert history[0]["sampler_log_prob_abs_diff"] < 1e-4  # generate's log-probs agree with the trainer's
    assert history[0]["ratio_var"] < 1e-10 and history[0]["ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_a_missing_local_model_path_says_so(toy_prompts: Path, tmp_path: Path) -> None:
    config = TrainConfig(model_name_or_path=str(tmp_path / "no_model"), train_file=str(toy_prompts), output_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"model_name_or_path=.*no_model.*: no such local directory"):
        R2VPOLLMTrainer(config)


def test_overwrite_output_dir_replaces_the_previous_run(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=2)).train()
    assert (tmp_path / "checkpoint-2").exists()
    with pytest.raises(FileExistsError, match="already holds a run"):
        R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=1))
    (tmp_path / "notes.txt").write_text("mine")
    R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=1, overwrite_output_dir=True)).train()
    assert not (tmp_path / "checkpoint-2").exists() and (tmp_path / "checkpoint-1").exists()
    assert len(_metrics(tmp_path)) == 1 and (tmp_path / "notes.txt").read_text() == "mine"
