"""R2VPOTrainer inside TRL's real GRPOTrainer, with a tiny Qwen2 model built and saved in the test (CPU, no vLLM)."""

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch as th

pytest.importorskip("trl")

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from llm_adapter.toy import toy_repeat_digit_reward
from llm_adapter.trl import AGGREGATING_LOSS_TYPES, R2VPOConfig, R2VPOTrainer, aggregate_like_trl
from llm_adapter.trl.trainer import STATE_FILE
from sb3_r2vpo.core import NonFiniteRatioError, aggregate_loss, r2vpo_objective

CPU = {"use_cpu": True, "bf16": False, "report_to": "none", "disable_tqdm": True}


def make_config(output_dir: Path, **overrides: Any) -> R2VPOConfig:
    settings: dict[str, Any] = {
        **CPU,
        "per_device_train_batch_size": 16,
        "num_generations": 4,
        "gradient_accumulation_steps": 2,
        "num_iterations": 2,
        "max_completion_length": 8,
        "max_steps": 4,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "var_coef": "auto_0",
        "target_var": 0.001,
    }
    settings.update(overrides)
    return R2VPOConfig(str(output_dir), **settings)


@pytest.fixture(scope="module")
def toy_dataset() -> Dataset:
    rows = [{"prompt": f"digit {i % 10}", "answer": str(i % 10)} for i in range(64)]
    return Dataset.from_list(rows)


def make_trainer(model_dir: Path, dataset: Dataset, args: R2VPOConfig) -> R2VPOTrainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return R2VPOTrainer(
            str(model_dir),
            reward_funcs=toy_repeat_digit_reward,
            args=args,
            train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )


def r2vpo_logs(trainer: R2VPOTrainer) -> list[dict[str, float]]:
    return [entry for entry in trainer.state.log_history if "r2vpo/lam" in entry]


# --- configuration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"var_coef": "sometimes"}, "var_coef"),
        ({"var_coef": -1.0}, "var_coef"),
        ({"target_var": 0.0}, "target_var"),
        ({"var_coef_lr": -0.1}, "var_coef_lr"),
        ({"var_coef_max": 0.0}, "var_coef_max"),
        ({"loss_type": "cispo"}, "loss_type"),
        ({"loss_type": "sapo"}, "loss_type"),
        ({"loss_type": "token_soup"}, "loss_type"),
        ({"use_liger_kernel": True}, "use_liger_kernel"),
        ({"use_adaptive_entropy": True}, "use_adaptive_entropy"),
    ],
)
def test_bad_config_names_the_parameter(tmp_path: Path, overrides: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        R2VPOConfig(str(tmp_path), **CPU, **overrides)


def test_config_parses_from_the_command_line(tmp_path: Path) -> None:
    (args,) = HfArgumentParser(R2VPOConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", "--bf16", "false", "--var_coef", "0.25", "--target_var", "0.02"]
    )
    assert isinstance(args, R2VPOConfig)
    assert args.var_coef == 0.25 and args.target_var == 0.02
    controller = args.var_coef_controller()
    assert not controller.adaptive and controller.value == 0.25
    adaptive = R2VPOConfig(str(tmp_path), **CPU, var_coef="auto_0.5").var_coef_controller()
    assert adaptive.adaptive and adaptive.value == 0.5


def test_default_schedule_warns_that_the_ratio_is_one(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="ratio is exactly 1"):
        make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path, num_iterations=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for overrides in ({"num_iterations": 2}, {"num_iterations": 1, "steps_per_generation": 4}):
            make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path, **overrides))


def test_positional_arguments_as_grpo_trainer(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    args = make_config(tmp_path, max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = R2VPOTrainer(str(tiny_model_dir), toy_repeat_digit_reward, args, toy_dataset)
    assert trainer.train_dataset is toy_dataset


def test_args_must_be_an_r2vpo_config(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="R2VPOConfig"):
        R2VPOTrainer(str(tiny_model_dir), reward_funcs=toy_repeat_digit_reward, args=GRPOConfig(str(tmp_path), **CPU))


# --- training ------------------------------------------------------------------------------------------------


def test_training_steps_run_and_adaptive_lam_moves(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path))
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    logs = r2vpo_logs(trainer)
    assert len(logs) == 4
    for entry in logs:
        for key in ("r2vpo/ratio_var", "r2vpo/penalty", "r2vpo/ratio_mean", "r2vpo/approx_kl", "entropy", "loss"):
            assert key in entry
        assert entry["r2vpo/penalty"] == pytest.approx(entry["r2vpo/lam"] * entry["r2vpo/ratio_var"], rel=1e-6)
    assert "reward" in trainer.state.log_history[0]
    # The first step of each generation trains on the parameters that generated it (ratio 1); the second on
    # completions of the previous parameters, so its ratio moves.
    assert logs[0]["r2vpo/ratio_var"] == 0.0 and logs[2]["r2vpo/ratio_var"] == 0.0
    assert max(logs[1]["r2vpo/ratio_var"], logs[3]["r2vpo/ratio_var"]) > 0.001
    assert logs[0]["r2vpo/lam"] == 0.0 and trainer.var_coef_controller.value > 0.0
    assert trainer.var_coef_controller.n_steps == 4
    assert any(not th.equal(initial[name], p) for name, p in trainer.model.named_parameters())


def test_fixed_lam_stays_fixed(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path, var_coef="0.3", max_steps=2))
    trainer.train()
    assert [entry["r2vpo/lam"] for entry in r2vpo_logs(trainer)] == [0.3, 0.3]


def test_trl_loss_features_train_beside_the_penalty(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    features = {"beta": 0.04, "entropy_coef": 0.01, "top_entropy_quantile": 0.5, "off_policy_mask_threshold": 0.5}
    trainer = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path, max_steps=2, **features))
    trainer.train()
    logs = r2vpo_logs(trainer)
    assert len(logs) == 2 and all("kl" in entry and "policy_loss" in entry for entry in logs)
    assert logs[1]["r2vpo/ratio_var"] > 0.0


def test_checkpoint_saves_and_resume_restores_lam(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    args = make_config(tmp_path / "run", save_strategy="steps", save_steps=2)
    full = make_trainer(tiny_model_dir, toy_dataset, args)
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = json.loads((checkpoint / STATE_FILE).read_text())["var_coef"]
    assert saved["n_steps"] == 2 and saved["value"] > 0.0
    assert saved["value"] == pytest.approx(r2vpo_logs(full)[2]["r2vpo/lam"])

    continued = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path / "continued"))
    continued.train(resume_from_checkpoint=str(checkpoint))
    # The restored trainer state holds the first two steps' logs; step 3 is the first one trained after resuming.
    step_3 = next(entry for entry in r2vpo_logs(continued) if entry["step"] == 3)
    assert step_3["r2vpo/lam"] == pytest.approx(saved["value"])
    assert continued.var_coef_controller.n_steps == 4
    # Model, optimizer, RNG and lam all restored: the resumed run ends where the uninterrupted one did.
    assert continued.var_coef_controller.value == pytest.approx(full.var_coef_controller.value, rel=1e-6)


def test_resume_from_a_foreign_checkpoint_is_refused(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    trainer = make_trainer(
        tiny_model_dir, toy_dataset, make_config(tmp_path / "run", max_steps=2, save_steps=2, save_strategy="steps")
    )
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    (checkpoint / STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="lam cannot be restored"):
        make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path / "again")).train(
            resume_from_checkpoint=str(checkpoint)
        )


# --- the loss against the core -------------------------------------------------------------------------------


def _handmade_inputs(model: Any, seed: int = 0) -> tuple[dict[str, th.Tensor], th.Tensor]:
    """A micro-batch as TRL builds it (left-padded prompts, right-padded completions), and its reference log-probs."""
    generator = th.Generator().manual_seed(seed)
    batch, prompt_len, completion_len, vocab = 4, 5, 6, model.config.vocab_size
    prompt_ids = th.randint(3, vocab, (batch, prompt_len), generator=generator)
    completion_ids = th.randint(3, vocab, (batch, completion_len), generator=generator)
    prompt_mask = th.ones(batch, prompt_len, dtype=th.long)
    prompt_mask[0, :2] = 0
    completion_mask = th.ones(batch, completion_len, dtype=th.long)
    completion_mask[1, 3:] = 0
    completion_mask[2, 1:] = 0
    with th.no_grad():
        logits = model(
            input_ids=th.cat([prompt_ids, completion_ids], 1), attention_mask=th.cat([prompt_mask, completion_mask], 1)
        ).logits
    # Position t predicts token t + 1: the completion tokens are predicted by the positions before them.
    log_probs = th.log_softmax(logits[:, prompt_len - 1 : -1].float(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    old = log_probs + 0.3 * th.randn(log_probs.shape, generator=generator)
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": th.tensor([1.0, -0.5, 0.25, -1.0]),
        "old_per_token_logps": old,
        "num_items_in_batch": completion_mask.sum() * 2,  # the generation batch holds two such micro-batches
    }
    return inputs, log_probs


@pytest.mark.parametrize("loss_type", AGGREGATING_LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_loss_equals_the_core_objective(
    tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path, loss_type: str, level: str
) -> None:
    args = make_config(tmp_path, var_coef="0.7", loss_type=loss_type, importance_sampling_level=level, steps_per_generation=2)
    trainer = make_trainer(tiny_model_dir, toy_dataset, args)
    trainer.model.train()
    inputs, log_probs = _handmade_inputs(trainer.model)
    mask = inputs["completion_mask"].float()
    old, advantages = inputs["old_per_token_logps"], inputs["advantages"].unsqueeze(1)
    if level == "sequence":
        lengths = mask.sum(-1, keepdim=True)
        log_probs, old = (log_probs * mask).sum(-1, keepdim=True) / lengths, (old * mask).sum(-1, keepdim=True) / lengths
    per_token, _ = r2vpo_objective(log_probs, old, advantages, var_coef=0.7)
    per_token = per_token.expand_as(mask)
    trainer.current_gradient_accumulation_steps = 2
    batch = mask.shape[0]
    # TRL's aggregations in the core's terms, for a micro-batch of a two-micro-batch optimizer step.
    token_normalizer = {
        "dapo": inputs["num_items_in_batch"],
        "bnpo": 2 * mask.sum(),
        "dr_grpo": 2 * batch * args.max_completion_length,
        "luspo": 2 * batch,
    }
    if loss_type == "grpo":
        reference = aggregate_loss(per_token, mode="seq_mean_token_mean", mask=mask, normalizer=2 * batch)
    else:
        reference = aggregate_loss(per_token, mode="token_mean", mask=mask, normalizer=token_normalizer[loss_type])
    trainer.accelerator.gradient_state._set_sync_gradients(True)
    loss = trainer._compute_loss(trainer.model, inputs)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)


def test_dual_step_uses_the_statistics_of_every_micro_batch(
    tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path
) -> None:
    trainer = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path, var_coef="auto_0.5", target_var=0.01))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    batches = [_handmade_inputs(trainer.model, seed) for seed in (1, 2)]
    squared, count = 0.0, 0.0
    for inputs, log_probs in batches:
        mask = inputs["completion_mask"].bool()
        squared += float((th.expm1(log_probs - inputs["old_per_token_logps"])[mask] ** 2).sum())
        count += float(mask.sum())
    gradient_state = trainer.accelerator.gradient_state
    gradient_state._set_sync_gradients(False)
    trainer._compute_loss(trainer.model, batches[0][0])
    assert trainer.var_coef_controller.value == 0.5  # no dual step inside the accumulation window
    gradient_state._set_sync_gradients(True)
    trainer._compute_loss(trainer.model, batches[1][0])
    assert trainer._metrics["train"]["r2vpo/ratio_var"][-1] == pytest.approx(squared / count, rel=1e-4)
    assert trainer.var_coef_controller.value == pytest.approx(0.5 + squared / count - 0.01, rel=1e-4)


def test_non_finite_ratio_stops_before_the_optimizer_step(tiny_model_dir: Path, toy_dataset: Dataset, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_model_dir, toy_dataset, make_config(tmp_path))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs, _ = _handmade_inputs(trainer.model)
    inputs["old_per_token_logps"][0, 2] = float("nan")
    trainer.accelerator.gradient_state._set_sync_gradients(True)
    with pytest.raises(NonFiniteRatioError, match="optimizer step 1"):
        trainer._compute_loss(trainer.model, inputs)


def test_trl_aggregation_sums_over_micro_batches_to_the_step_loss() -> None:
    generator = th.Generator().manual_seed(0)
    per_token = th.randn(8, 5, generator=generator)
    mask = (th.rand(8, 5, generator=generator) > 0.3).float()
    mask[:, 0] = 1.0
    settings = {"num_processes": 1, "steps_per_generation": 2, "max_completion_length": 5, "num_items_in_batch": mask.sum()}
    for loss_type in ("dapo", "grpo", "dr_grpo", "luspo"):
        whole, _ = aggregate_like_trl(per_token, mask, loss_type, accumulation_steps=1, training=False, **settings)
        halves = [
            aggregate_like_trl(per_token[part], mask[part], loss_type, accumulation_steps=2, training=True, **settings)[0]
            for part in (slice(0, 4), slice(4, 8))
        ]
        assert float(sum(halves)) == pytest.approx(float(whole), rel=1e-6), loss_type
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_like_trl(per_token, mask, "cispo", accumulation_steps=1, training=True, **settings)


@pytest.mark.slow
def test_example_script_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(repo / "examples" / "trl_r2vpo.py"), "--tiny", "--output_dir", str(tmp_path), "--max_steps", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "r2vpo/lam" in result.stdout
    assert (tmp_path / "final" / "model.safetensors").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "final")
