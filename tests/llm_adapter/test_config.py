from pathlib import Path
from typing import Any

import pytest

from llm_adapter.cli import build_parser
from llm_adapter.config import TrainConfig

REQUIRED = {"model_name_or_path": "m", "train_file": "t.jsonl"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("objective", "ppo", r"objective='ppo' must be one of \('r2vpo', 'grpo'"),
        ("engine", "sglang", "engine='sglang' must be one of"),
        ("loss_aggregation", "mean", "loss_aggregation='mean' must be one of"),
        ("behavior_log_probs", "old", "behavior_log_probs='old'"),
        ("thinking", "deep", "thinking='deep'"),
        ("var_coef", -1.0, "var_coef=-1.0 is out of range"),
        ("var_coef", "auto_x", "var_coef='auto_x' is malformed"),
        ("target_var", 0.0, "target_var"),
        ("group_size", 1, "group_size"),
        ("replay_capacity", 0, "replay_capacity"),
        ("utd_ratio", 0.0, "utd_ratio"),
        ("replay_sampling", "newest", r"replay_sampling='newest' must be one of \['uniform', 'newest_first'\]"),
        ("var_coef_age_factor", 0.0, r"var_coef_age_factor=0.0 is out of range: expected a finite number > 0"),
        ("clip_range", 1.5, r"clip_range=1.5 must be in \(0, 1\)"),
        ("temperature", 0.0, "temperature"),
        ("micro_batch_size", 0, "micro_batch_size"),
        ("learning_rate", float("nan"), "learning_rate"),
        ("adam_beta2", 1.0, r"adam_beta2=1.0 must be in \[0, 1\)"),
        ("vllm_gpu_memory_utilization", 1.5, "vllm_gpu_memory_utilization"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**REQUIRED, **{field: value})


def test_yaml_then_command_line_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ntrain_file: t.jsonl\nlearning_rate: 0.001\nvar_coef: auto\nbf16: false\n")
    args = vars(
        build_parser().parse_args(
            [
                "train",
                "--config",
                str(path),
                "--learning_rate",
                "3e-4",
                "--var_coef",
                "0.06",
                "--clip_range_high",
                "none",
                "--scale_rewards",
                "false",
            ]
        )
    )
    args.pop("command")
    config = TrainConfig.from_yaml(args.pop("config"), **args)
    assert config.learning_rate == 3e-4 and config.var_coef == 0.06 and config.bf16 is False
    assert config.clip_range_high is None and config.scale_rewards is False
    assert TrainConfig.from_yaml(path).var_coef == "auto"


def test_unknown_and_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ntrain_file: t.jsonl\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['learning_rat'\]"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['train_file'\]"):
        TrainConfig.from_dict({"model_name_or_path": "m"})


def test_derived_sizes() -> None:
    config = TrainConfig(
        **REQUIRED, prompts_per_iteration=4, group_size=8, micro_batch_size=4, gradient_accumulation_steps=2, utd_ratio=2.0
    )
    assert config.completions_per_iteration == 32 and config.optimizer_batch_size == 8
    assert config.optimizer_steps_per_iteration == 8


def test_paths_in_a_config_file_are_relative_to_it(tmp_path) -> None:
    folder = tmp_path / "toy"
    (folder / "model").mkdir(parents=True)
    (folder / "prompts.jsonl").write_text("")
    (folder / "config.yaml").write_text("model_name_or_path: model\ntrain_file: prompts.jsonl\noutput_dir: run\n")
    config = TrainConfig.from_yaml(folder / "config.yaml")
    assert (config.model_name_or_path, config.train_file, config.output_dir) == (
        str(folder / "model"),
        str(folder / "prompts.jsonl"),
        str(folder / "run"),
    )
    # A hub id (no such folder next to the file) stays as written; command-line overrides are not rebased.
    (folder / "hub.yaml").write_text("model_name_or_path: Qwen/Qwen3-1.7B\ntrain_file: prompts.jsonl\n")
    config = TrainConfig.from_yaml(folder / "hub.yaml", output_dir="elsewhere")
    assert config.model_name_or_path == "Qwen/Qwen3-1.7B" and config.output_dir == "elsewhere"


@pytest.mark.parametrize(
    ("objective", "setting", "value"),
    [
        ("grpo", "var_coef", 0.5),
        ("grpo_ch", "target_var", 0.05),
        ("r2vpo", "clip_range", 0.3),
        ("spo", "clip_range_high", 0.3),
    ],
)
def test_a_setting_the_objective_ignores_is_an_error(objective: str, setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"{setting}={value} has no effect with objective='{objective}'"):
        TrainConfig(model_name_or_path="m", train_file="f", objective=objective, **{setting: value})


def test_a_per_age_lam_needs_a_replay_and_the_penalty() -> None:
    with pytest.raises(ValueError, match=r"var_coef_age_factor=0.5 has no effect with replay_capacity=1"):
        TrainConfig(**REQUIRED, var_coef_age_factor=0.5)
    with pytest.raises(ValueError, match=r"var_coef_age_factor=0.5 has no effect with objective='grpo'"):
        TrainConfig(**REQUIRED, objective="grpo", replay_capacity=4, var_coef_age_factor=0.5)
    assert TrainConfig(**REQUIRED, replay_capacity=4, var_coef_age_factor=0.5).var_coef_age_factor == 0.5


def test_help_shows_the_defaults() -> None:
    from llm_adapter.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    text = train.format_help()
    assert "(default: 1e-06)" in text and "(default: r2vpo)" in text and "(required)" in text


def test_field_defaults_are_the_values_of_a_config_given_only_its_required_fields(tmp_path: Path) -> None:
    defaults = TrainConfig.field_defaults()
    assert "model_name_or_path" not in defaults and "train_file" not in defaults  # required: no default
    config = TrainConfig(model_name_or_path=str(tmp_path), train_file=str(tmp_path / "train.jsonl"))
    assert {name: getattr(config, name) for name in defaults} == defaults
