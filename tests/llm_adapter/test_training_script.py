"""
What users of TRL's GRPOTrainer expect from the training script: learning-rate schedule with warmup, LoRA through
peft, held-out evaluation with pass@k, over-long prompts dropped at load, save_total_limit, math-verify, and a column
mapping for nested answers (DAPO-Math-17k's layout).
"""

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch as th

from llm_adapter.cli import build_parser
from llm_adapter.config import TrainConfig
from llm_adapter.data import load_prompt_dataset
from llm_adapter.engines.transformers_engine import TransformersEngine
from llm_adapter.engines.weights import engine_weights
from llm_adapter.evaluation import evaluation_metrics, pass_at_k
from llm_adapter.rewards import math_answer_reward
from llm_adapter.trainer import R2VPOLLMTrainer
from tests.llm_adapter.test_trainer import _config, _metrics


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ----- column mapping (DAPO-Math-17k) and math-verify --------------------------------------------------------------


def _dapo_rows() -> list[dict[str, Any]]:
    return [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": f"digit {digit}"}],
            "reward_model": {"ground_truth": str(digit), "style": "rule-lighteval/MATH_v2"},
        }
        for digit in range(6)
    ]


def test_column_mapping_reads_dapo_math_answers(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dapo.jsonl", _dapo_rows())
    dataset = load_prompt_dataset(path, column_mapping={"answer": ("reward_model", "ground_truth")})
    assert dataset["answer"] == [str(digit) for digit in range(6)]
    rewards = math_answer_reward([""] * 2, ["so \\boxed{3}", "\\boxed{4}"], answer=[dataset["answer"][3]] * 2)
    assert rewards == [1.0, 0.0]


def test_column_mapping_errors_name_the_setting(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dapo.jsonl", _dapo_rows())
    with pytest.raises(ValueError, match=r"column_mapping answer='reward_model.truth'.*found: \['ground_truth', 'style'\]"):
        load_prompt_dataset(path, column_mapping={"answer": ("reward_model", "truth")})
    with pytest.raises(ValueError, match="overwrite the existing column"):
        load_prompt_dataset(path, column_mapping={"data_source": ("reward_model", "style")})
    with pytest.raises(ValueError, match="column_mapping"):
        TrainConfig(model_name_or_path="m", train_file="f.jsonl", column_mapping={"answer": "reward_model..x"})


def test_column_mapping_from_the_command_line_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dapo.jsonl", _dapo_rows())
    args = vars(build_parser().parse_args(["train", "--column_mapping", "answer=reward_model.ground_truth"]))
    assert args["column_mapping"] == {"answer": "reward_model.ground_truth"}
    trainer = R2VPOLLMTrainer(
        _config(tiny_model_dir, path, tmp_path / "run", num_iterations=1, column_mapping=args["column_mapping"])
    )
    assert trainer.train()[0]["reward_mean"] >= 0.0  # the toy reward read the mapped answer column


def test_math_verify_is_installed_and_decides_equivalence() -> None:
    # Normalized strings cannot tell these apart; math-verify (in the [llm] extra) can.
    assert math_answer_reward(["", ""], ["\\boxed{2\\sqrt{2}}", "\\boxed{\\sqrt{8}}"], answer=["\\sqrt{8}", "2\\sqrt{2}"]) == [
        1.0,
        1.0,
    ]
    assert math_answer_reward([""], ["\\boxed{\\sqrt{7}}"], answer=["\\sqrt{8}"]) == [0.0]


# ----- over-long prompts ------------------------------------------------------------------------------------------


def test_long_prompts_are_dropped_at_load_with_a_count(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"digit {d}", "answer": str(d)} for d in range(8)] + [
        {"prompt": "digit 1" + " 1" * 200, "answer": "1"} for _ in range(3)
    ]
    path = _write_jsonl(tmp_path / "prompts.jsonl", rows)
    with pytest.warns(UserWarning, match=r"dropped 3 of 11 prompts longer than max_prompt_length=64"):
        trainer = R2VPOLLMTrainer(_config(tiny_model_dir, path, tmp_path / "run", max_prompt_length=64, num_iterations=3))
    assert len(trainer.dataset) == 8
    trainer.train()  # three iterations of 4 prompts cross an epoch of the 8 kept ones without error
    with pytest.raises(ValueError, match=r"Every prompt of train_file .* is longer than max_prompt_length=4"):
        R2VPOLLMTrainer(_config(tiny_model_dir, path, tmp_path / "run2", max_prompt_length=4))


# ----- checkpoints ------------------------------------------------------------------------------------------------


def test_save_total_limit_keeps_the_newest_checkpoints(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=4, save_steps=1, save_total_limit=2)).train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    with pytest.raises(ValueError, match="save_total_limit"):
        _config(tiny_model_dir, toy_prompts, tmp_path, save_total_limit=0)


# ----- learning-rate schedule -------------------------------------------------------------------------------------


def _expected_linear_with_warmup(step: int, peak: float, warmup: int, total: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based), written out by hand."""
    if step < warmup:
        return peak * step / warmup
    return peak * max(0.0, (total - step) / (total - warmup))


def test_linear_schedule_with_warmup(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    # 16 completions per iteration, 8 per optimizer step: 2 steps per iteration, 8 in all.
    config = _config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=4, lr_scheduler_type="linear", warmup_ratio=0.25)
    assert (config.total_optimizer_steps, config.num_warmup_steps) == (8, 2)
    trainer = R2VPOLLMTrainer(config)
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda optimizer, *_: seen.append(optimizer.param_groups[0]["lr"]))
    history = trainer.train()
    expected = [_expected_linear_with_warmup(step, 3e-3, 2, 8) for step in range(8)]
    assert seen == pytest.approx(expected)
    assert [m["learning_rate"] for m in history] == pytest.approx([*expected[2::2], 0.0])


def test_constant_schedule_with_warmup_steps(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, num_iterations=3, warmup_steps=3))
    history = trainer.train()
    assert [m["learning_rate"] for m in history] == pytest.approx([3e-3 * 2 / 3, 3e-3, 3e-3])


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"lr_scheduler_type": "step"}, "lr_scheduler_type"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"lora_r": 8}, "use_peft"),
        ({"use_peft": True, "lora_r": 0}, "lora_r"),
        ({"use_peft": True, "lora_dropout": 1.0}, "lora_dropout"),
        ({"eval_steps": 2}, "eval_file"),
        ({"eval_top_p": 0.0}, "eval_top_p"),
        ({"eval_num_samples": 0}, "eval_num_samples"),
        ({"engine": "sglang"}, "engine"),
    ],
)
def test_bad_script_settings(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TrainConfig(model_name_or_path="m", train_file="f.jsonl", **overrides)


# ----- LoRA -------------------------------------------------------------------------------------------------------


def test_lora_trains_only_adapters_and_resumes(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    settings: dict[str, Any] = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 3e-2}
    trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path / "a", num_iterations=2, save_steps=1, **settings))
    assert isinstance(trainer.model, peft.PeftModel)
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    adapters_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert all(th.equal(p, base_before[n]) for n, p in trainer.model.named_parameters() if n in base_before)
    assert any(not th.equal(p, adapters_before[n]) for n, p in trainer.model.named_parameters() if n in adapters_before)
    assert (tmp_path / "a" / "checkpoint-1" / "model" / "adapter_config.json").exists()

    resumed = R2VPOLLMTrainer(
        _config(
            tiny_model_dir,
            toy_prompts,
            tmp_path / "b",
            num_iterations=2,
            resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"),
            **settings,
        )
    )
    resumed.train()
    for (name, mine), (_, reference) in zip(
        resumed.model.state_dict().items(), trainer.model.state_dict().items(), strict=True
    ):
        assert th.equal(mine, reference), name


def test_engines_receive_merged_lora_weights_under_the_base_names(tiny_model_dir: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    def lora_model() -> Any:
        # init_lora_weights=False: random B, so the adapters change the merged weights
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        return peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)

    original = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    model, copy = lora_model(), lora_model()
    copy.load_state_dict(model.state_dict())
    reference = dict(copy.merge_and_unload(progressbar=False).named_parameters())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with engine_weights(model) as weights:
        sent = {name: tensor.clone() for name, tensor in weights}
    assert list(sent) == list(original)
    for name, tensor in sent.items():
        th.testing.assert_close(tensor, reference[name])
    assert any(not th.equal(sent[name], original[name]) for name in sent)
    # The adapters are unmerged again afterwards: training goes on from the same parameters.
    for name, p in model.named_parameters():
        th.testing.assert_close(p, before[name])  # merge then unmerge: equal up to float rounding


# ----- evaluation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(1, 1), (4, 1), (4, 2), (4, 4), (5, 3)])
def test_pass_at_k_matches_enumeration(n: int, k: int) -> None:
    for correct in range(n + 1):
        outcomes = [True] * correct + [False] * (n - correct)
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_at_k(n, correct, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_evaluation_metrics_per_prompt() -> None:
    metrics = evaluation_metrics([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], 4)
    assert metrics["eval_pass@1"] == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    assert metrics["eval_pass@4"] == pytest.approx(2 / 3)
    assert metrics["eval_reward_mean"] == pytest.approx(5 / 12) and metrics["eval_prompts"] == 3
    with pytest.raises(ValueError, match="num_samples=4"):
        evaluation_metrics([1.0, 0.0, 1.0], 4)


def test_held_out_evaluation_is_logged_and_leaves_training_unchanged(
    tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    held_out = _write_jsonl(tmp_path / "held_out.jsonl", [{"prompt": f"digit {d}", "answer": str(d)} for d in range(5)])
    plain = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path / "plain", num_iterations=3))
    plain_history = plain.train()
    evaluated = R2VPOLLMTrainer(
        _config(tiny_model_dir, toy_prompts, tmp_path / "eval", num_iterations=3, eval_file=str(held_out), eval_steps=2)
    )
    history = evaluated.train()
    assert [m["reward_mean"] for m in history] == [m["reward_mean"] for m in plain_history]
    for (name, mine), (_, reference) in zip(
        evaluated.model.state_dict().items(), plain.model.state_dict().items(), strict=True
    ):
        assert th.equal(mine, reference), name
    logged = {m["iteration"]: m for m in _metrics(tmp_path / "eval")}
    # after iteration index 1 (2 iterations done) and at the end
    assert "eval_pass@1" in logged[1] and "eval_pass@4" in logged[2] and "eval_pass@1" not in logged[0]
    assert logged[2]["eval_prompts"] == 5 and 0.0 <= logged[2]["eval_pass@1"] <= logged[2]["eval_pass@4"] <= 1.0


def test_evaluation_sampling_truncates_with_top_k(tiny_model: Any, tiny_tokenizer: Any) -> None:
    if tiny_tokenizer.pad_token is None:
        tiny_tokenizer.pad_token = tiny_tokenizer.eos_token
    engine = TransformersEngine(tiny_model, tiny_tokenizer)
    prompt = [tiny_tokenizer("digit 3")["input_ids"]]
    th.manual_seed(0)
    greedy = engine.sample_completions(prompt, num_samples=6, max_new_tokens=6, temperature=1.0, top_k=1)
    assert all(completion == greedy[0] for completion in greedy)  # top-k 1 is greedy: one completion only
    th.manual_seed(0)
    sampled = engine.sample_completions(prompt, num_samples=6, max_new_tokens=6, temperature=5.0)
    assert len({tuple(c) for c in sampled}) > 1


def test_warmup_ratio_rounds_up_and_warmup_steps_wins() -> None:
    config = TrainConfig(model_name_or_path="m", train_file="f.jsonl", num_iterations=10, warmup_ratio=0.05)
    assert config.num_warmup_steps == math.ceil(0.05 * config.total_optimizer_steps)
    config = TrainConfig(model_name_or_path="m", train_file="f.jsonl", warmup_ratio=0.5, warmup_steps=3)
    assert config.num_warmup_steps == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(model_name_or_path="m", train_file="f.jsonl", lr_scheduler_type="cosine")


def test_log_dual_update_reaches_the_controller(tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path) -> None:
    trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path, var_coef_update="log", var_coef_lr=0.1))
    assert trainer.var_coef.var_coef_update == "log"
    with pytest.raises(ValueError, match="var_coef_update='log' has no effect with objective='grpo'"):
        TrainConfig(model_name_or_path="m", train_file="f.jsonl", objective="grpo", var_coef_update="log")
