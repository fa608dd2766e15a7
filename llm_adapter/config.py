"""The training configuration: a documented dataclass, loaded from YAML and overridden from the command line."""

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_adapter.data import THINKING_MODES
from llm_adapter.objectives import (
    DEFAULT_TARGET_VAR,
    DEFAULT_VAR_COEF,
    DEFAULT_VAR_COEF_LR,
    LLM_OBJECTIVES,
    OBJECTIVE_SETTINGS,
)
from sb3_r2vpo.core.aggregation import AGGREGATIONS
from sb3_r2vpo.core.dual import VAR_COEF_UPDATES, VarCoefController, check_var_coef_age_factor
from sb3_r2vpo.core.replay_sampling import check_replay_sampling
from sb3_r2vpo.core.validation import check_int, check_positive

ENGINES = ("transformers", "vllm", "vllm_server")
LR_SCHEDULERS = ("constant", "linear", "cosine")
BEHAVIOR_LOG_PROBS = ("rollout", "recompute")
LLM_AGGREGATIONS = tuple(mode for mode in AGGREGATIONS if mode != "mean")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """
    Everything ``r2vpo-llm train`` needs. Every field is a ``--field value`` command-line option; a YAML file
    (``--config``) sets fields first and the command line overrides it.
    """

    model_name_or_path: str = field(
        metadata=_help("Local model directory (from_pretrained), or a hub id when the hub is reachable")
    )
    train_file: str = field(metadata=_help("Prompts: a local .jsonl, .json or .parquet file"))
    reward: str = field(
        default="math",
        metadata=_help("Reward: 'math', 'toy_repeat_digit', 'toy_count_up', 'package.module:function' or 'file.py:function'"),
    )
    output_dir: str = field(default="r2vpo-llm-output", metadata=_help("Checkpoints, metrics.jsonl and tensorboard logs"))
    overwrite_output_dir: bool = field(
        default=False, metadata=_help("Start a fresh run in an output_dir that already holds one (default: refuse)")
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata=_help("Tokenizer location (default: the model's)"))
    prompt_column: str = field(default="prompt", metadata=_help("Column holding the prompt (text or chat messages)"))
    column_mapping: dict[str, str] | None = field(
        default=None,
        metadata=_help(
            "Reward columns taken from other (nested) columns, 'name=path' pairs separated by commas, e.g. "
            "'answer=reward_model.ground_truth' for DAPO-Math-17k"
        ),
    )
    eval_file: str | None = field(default=None, metadata=_help("Held-out prompts (.jsonl/.json/.parquet) for evaluation"))
    eval_steps: int = field(default=0, metadata=_help("Evaluate on eval_file every this many iterations (0: at the end only)"))
    eval_num_samples: int = field(default=4, metadata=_help("Completions per evaluation prompt: pass@1 and pass@k, k = this"))
    eval_max_prompts: int | None = field(
        default=None, metadata=_help("Evaluate on the first this many prompts (default: all)")
    )
    eval_temperature: float = field(default=0.6, metadata=_help("Evaluation sampling temperature (the paper's 0.6)"))
    eval_top_p: float = field(default=0.95, metadata=_help("Evaluation nucleus sampling (the paper's 0.95)"))
    eval_top_k: int = field(default=20, metadata=_help("Evaluation top-k sampling (the paper's 20; 0: off)"))
    use_chat_template: bool = field(default=True, metadata=_help("Apply the tokenizer's chat template to prompts"))
    system_prompt: str | None = field(default=None, metadata=_help("Optional system message"))
    thinking: str = field(
        default="none", metadata=_help("'slow' appends <think>, 'fast' an empty think block, 'none' nothing")
    )
    engine: str = field(
        default="transformers",
        metadata=_help("Rollout engine: 'transformers' (generate), 'vllm' (in-process) or 'vllm_server' (trl vllm-serve)"),
    )
    objective: str = field(default="r2vpo", metadata=_help(f"Policy objective, one of {sorted(LLM_OBJECTIVES)}"))
    # A fixed lam = 1: on the toy task's tuning seeds (10-19) it had the highest final reward of every setting tried,
    # the adaptive ones included (docs/guide/llm.md, "How the default was chosen"; benchmarks/llm_toy_comparison.py).
    var_coef: float | str = field(
        default=DEFAULT_VAR_COEF,
        metadata=_help("R2VPO's lam: a number >= 0 (fixed), 'auto' or 'auto_<init>' (dual ascent)"),
    )
    target_var: float = field(
        default=DEFAULT_TARGET_VAR, metadata=_help("Target token ratio variance E[(r-1)^2] of the dual update (> 0)")
    )
    var_coef_lr: float = field(default=DEFAULT_VAR_COEF_LR, metadata=_help("Dual step size for lam (>= 0)"))
    var_coef_max: float = field(default=100.0, metadata=_help("Upper bound of lam (> 0)"))
    var_coef_update: str = field(
        default="additive", metadata=_help(f"Dual update of lam, one of {VAR_COEF_UPDATES} (additive: the paper's Eq. 10)")
    )
    var_coef_min: float = field(default=0.0, metadata=_help("Lower bound of lam (>= 0; the paper: 0)"))
    var_coef_age_factor: float = field(
        default=1.0,
        metadata=_help(
            "With a replay: completions k generations old are penalized with lam * factor**k (> 0; 1: one lam for "
            "every age, the paper's)"
        ),
    )
    clip_range: float = field(default=0.2, metadata=_help("Lower clip range (grpo, grpo_ch, gppo) and SPO's epsilon"))
    clip_range_high: float | None = field(
        default=None, metadata=_help("Upper clip range (default: grpo/gppo 0.2, grpo_ch 0.28)")
    )
    loss_aggregation: str = field(default="token_mean", metadata=_help(f"One of {LLM_AGGREGATIONS}, over the optimizer step"))
    scale_rewards: bool = field(default=True, metadata=_help("Divide group-centred rewards by the group's std"))
    num_iterations: int = field(default=100, metadata=_help("Generations (each followed by a training phase)"))
    prompts_per_iteration: int = field(default=8, metadata=_help("Prompts per generation"))
    group_size: int = field(default=8, metadata=_help("Completions per prompt (>= 2)"))
    max_prompt_length: int = field(
        default=512, metadata=_help("Longest tokenized prompt: longer ones are dropped when the data is loaded (counted)")
    )
    max_completion_length: int = field(default=256, metadata=_help("Completion length limit"))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature, matched by the trainer's log-probs"))
    replay_capacity: int = field(
        default=1, metadata=_help("Generations kept (1: on-policy R2VPO-ON; 4: the paper's R2VPO-OFF)")
    )
    utd_ratio: float = field(default=1.0, metadata=_help("Completions trained on per fresh completion (the paper's OFF: 2)"))
    replay_sampling: str = field(
        default="uniform",
        metadata=_help(
            "How completions are drawn from the replay: 'uniform' over all stored (the paper's), or 'newest_first' "
            "(a full pass over the newest generation, then uniform)"
        ),
    )
    behavior_log_probs: str = field(
        default="rollout", metadata=_help("'rollout' (the engine's log-probs) or 'recompute' (the trainer's, before updating)")
    )
    micro_batch_size: int = field(default=8, metadata=_help("Completions per forward/backward pass"))
    gradient_accumulation_steps: int = field(default=2, metadata=_help("Micro-batches per optimizer step"))
    learning_rate: float = field(default=1e-6, metadata=_help("AdamW learning rate"))
    lr_scheduler_type: str = field(
        default="constant", metadata=_help(f"Learning-rate schedule after warmup, one of {LR_SCHEDULERS}")
    )
    warmup_ratio: float = field(default=0.0, metadata=_help("Linear warmup over this fraction of all optimizer steps"))
    warmup_steps: int = field(
        default=0, metadata=_help("Linear warmup over this many optimizer steps (overrides warmup_ratio)")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient-norm clip"))
    bf16: bool | None = field(default=None, metadata=_help("bf16 autocast (default: on when training on CUDA)"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Trade compute for activation memory"))
    use_peft: bool = field(default=False, metadata=_help("Train LoRA adapters (peft) instead of all weights"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scale alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    lora_target_modules: str = field(
        default="all-linear", metadata=_help("Modules given adapters: 'all-linear' or comma-separated names (q_proj,v_proj)")
    )
    logprob_chunk_size: int = field(default=256, metadata=_help("Tokens whose logits exist at once in the log-prob pass"))
    device: str = field(default="auto", metadata=_help("'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ..."))
    seed: int = field(default=0, metadata=_help("Seed of sampling, data order and replay draws"))
    save_steps: int = field(default=0, metadata=_help("Checkpoint every this many iterations (0: only at the end)"))
    save_total_limit: int | None = field(
        default=None, metadata=_help("Keep at most this many checkpoints, deleting the oldest (default: keep all)")
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata=_help("A checkpoint directory, or 'latest' in output_dir")
    )
    logging_steps: int = field(default=1, metadata=_help("Log metrics every this many iterations"))
    report_to_tensorboard: bool = field(
        default=True, metadata=_help("Write tensorboard event files in output_dir/tensorboard")
    )
    progress_bar: bool = field(default=True, metadata=_help("Show a progress bar"))
    vllm_gpu_memory_utilization: float = field(default=0.5, metadata=_help("vLLM engine: GPU memory fraction"))
    vllm_tensor_parallel_size: int = field(
        default=1, metadata=_help("vLLM engine: tensor parallel degree (1: vLLM runs in the trainer's process)")
    )
    vllm_enable_sleep_mode: bool = field(default=False, metadata=_help("vLLM engine: release GPU memory while training"))
    vllm_server_base_url: str | None = field(
        default=None, metadata=_help("vllm_server engine: the server's URL (default: http://vllm_server_host:port)")
    )
    vllm_server_host: str = field(default="0.0.0.0", metadata=_help("vllm_server engine: host of `trl vllm-serve`"))
    vllm_server_port: int = field(default=8000, metadata=_help("vllm_server engine: its HTTP port"))
    vllm_group_port: int = field(default=51216, metadata=_help("vllm_server engine: its weight-update (NCCL) port"))
    vllm_server_timeout: float = field(default=240.0, metadata=_help("vllm_server engine: seconds to wait for the server"))

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """Every field's default value, by name (fields without a default are left out)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    def _check_settings_belong_to_the_objective(self) -> None:
        """A setting the chosen objective ignores is an error, not a silent no-op (e.g. ``var_coef`` with GRPO)."""
        defaults = self.field_defaults()
        used = LLM_OBJECTIVES[self.objective].settings
        for name in OBJECTIVE_SETTINGS:
            if name not in used and getattr(self, name) != defaults[name]:
                users = sorted(key for key, objective in LLM_OBJECTIVES.items() if name in objective.settings)
                raise ValueError(
                    f"{name}={getattr(self, name)!r} has no effect with objective={self.objective!r}: it is a setting of "
                    f"{users}; remove it or choose one of those objectives"
                )

    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the field, its value and the allowed range."""
        for name, allowed in (
            ("engine", ENGINES),
            ("objective", tuple(LLM_OBJECTIVES)),
            ("loss_aggregation", LLM_AGGREGATIONS),
            ("behavior_log_probs", BEHAVIOR_LOG_PROBS),
            ("thinking", THINKING_MODES),
            ("lr_scheduler_type", LR_SCHEDULERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {allowed}")
        self.var_coef_controller()
        check_positive("clip_range", self.clip_range)
        if self.clip_range >= 1.0:
            raise ValueError(f"clip_range={self.clip_range} must be in (0, 1)")
        if self.clip_range_high is not None:
            check_positive("clip_range_high", self.clip_range_high)
        check_int("num_iterations", self.num_iterations, minimum=1)
        check_int("prompts_per_iteration", self.prompts_per_iteration, minimum=1)
        check_int("group_size", self.group_size, minimum=2)
        check_int("max_prompt_length", self.max_prompt_length, minimum=1)
        check_int("max_completion_length", self.max_completion_length, minimum=1)
        check_positive("temperature", self.temperature)
        check_int("replay_capacity", self.replay_capacity, minimum=1)
        check_positive("utd_ratio", self.utd_ratio)
        check_replay_sampling(self.replay_sampling)
        check_var_coef_age_factor(self.var_coef_age_factor, self.replay_capacity)
        check_int("micro_batch_size", self.micro_batch_size, minimum=1)
        check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, minimum=1)
        check_positive("learning_rate", self.learning_rate)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and 0.0 <= value < 1.0):
                raise ValueError(f"{name}={value!r} must be in [0, 1)")
        check_positive("max_grad_norm", self.max_grad_norm, allow_inf=True)
        check_int("logprob_chunk_size", self.logprob_chunk_size, minimum=1)
        check_int("save_steps", self.save_steps, minimum=0)
        check_int("logging_steps", self.logging_steps, minimum=1)
        if self.save_total_limit is not None:
            check_int("save_total_limit", self.save_total_limit, minimum=1)
        if not (isinstance(self.warmup_ratio, float | int) and 0.0 <= self.warmup_ratio < 1.0):
            raise ValueError(f"warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        self._validate_peft()
        self._validate_eval()
        if self.column_mapping is not None:
            parse_column_mapping(self.column_mapping)
        check_int("vllm_server_port", self.vllm_server_port, minimum=1)
        check_int("vllm_group_port", self.vllm_group_port, minimum=1)
        check_positive("vllm_server_timeout", self.vllm_server_timeout, allow_zero=True)
        if not (0.0 < self.vllm_gpu_memory_utilization <= 1.0):
            raise ValueError(f"vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization} must be in (0, 1]")
        check_int("vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, minimum=1)
        if self.engine == "vllm" and self.vllm_tensor_parallel_size != 1:
            raise ValueError(
                f"vllm_tensor_parallel_size={self.vllm_tensor_parallel_size}: this trainer runs vLLM in its own single "
                "process (1 only); for several GPUs use llm_adapter.trl or llm_adapter.verl"
            )
        self._check_settings_belong_to_the_objective()

    def _validate_peft(self) -> None:
        check_int("lora_r", self.lora_r, minimum=1)
        check_int("lora_alpha", self.lora_alpha, minimum=1)
        if not (isinstance(self.lora_dropout, float | int) and 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        if not self.lora_target_modules.strip(", "):
            raise ValueError("lora_target_modules='' names no module: use 'all-linear' or names such as 'q_proj,v_proj'")
        defaults = self.field_defaults()
        if not self.use_peft:
            changed = [
                name
                for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
                if getattr(self, name) != defaults[name]
            ]
            if changed:
                raise ValueError(f"{changed} set but use_peft=False: set use_peft=True to train LoRA adapters")

    def _validate_eval(self) -> None:
        check_int("eval_steps", self.eval_steps, minimum=0)
        check_int("eval_num_samples", self.eval_num_samples, minimum=1)
        if self.eval_max_prompts is not None:
            check_int("eval_max_prompts", self.eval_max_prompts, minimum=1)
        check_positive("eval_temperature", self.eval_temperature)
        if not (isinstance(self.eval_top_p, float | int) and 0.0 < self.eval_top_p <= 1.0):
            raise ValueError(f"eval_top_p={self.eval_top_p!r} must be in (0, 1]")
        check_int("eval_top_k", self.eval_top_k, minimum=0)
        if self.eval_file is None and self.eval_steps:
            raise ValueError(f"eval_steps={self.eval_steps} but no eval_file: give the held-out prompts to evaluate on")

    def var_coef_controller(self) -> VarCoefController:
        """A fresh controller of ``lam`` with these settings (it validates them)."""
        return VarCoefController(
            self.var_coef,
            target_var=self.target_var,
            var_coef_lr=self.var_coef_lr,
            var_coef_max=self.var_coef_max,
            var_coef_update=self.var_coef_update,
            var_coef_min=self.var_coef_min,
        )

    @property
    def optimizer_batch_size(self) -> int:
        """Completions per optimizer step: ``micro_batch_size * gradient_accumulation_steps``."""
        return self.micro_batch_size * self.gradient_accumulation_steps

    @property
    def completions_per_iteration(self) -> int:
        """Fresh completions per generation: ``prompts_per_iteration * group_size``."""
        return self.prompts_per_iteration * self.group_size

    @property
    def optimizer_steps_per_iteration(self) -> int:
        """Optimizer steps of one training phase (the last one may be smaller)."""
        draws = max(1, round(self.utd_ratio * self.completions_per_iteration))
        return math.ceil(draws / self.optimizer_batch_size)

    @property
    def total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole run: what the learning-rate schedule spans."""
        return self.num_iterations * self.optimizer_steps_per_iteration

    @property
    def num_warmup_steps(self) -> int:
        """Warmup length in optimizer steps: ``warmup_steps`` when set, else ``warmup_ratio`` of all steps."""
        return self.warmup_steps if self.warmup_steps else math.ceil(self.warmup_ratio * self.total_optimizer_steps)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """
        Load a YAML file of fields, then apply ``overrides``.

        :param path: the YAML file
        :param overrides: fields that take precedence
        :return: the validated config
        """
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
        return cls.from_dict({**_resolve_paths(values, Path(path).parent), **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """
        Build from a dict, refusing unknown keys (a typo must not be ignored silently).

        :param values: field values
        :param source: where they come from, for error messages
        :return: the validated config
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}; known fields: {sorted(known)}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values)
        if missing:
            raise ValueError(f"{source}: missing required field(s) {missing}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (saved next to checkpoints)."""
        return dataclasses.asdict(self)


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """
    Paths in a config file are relative to that file: ``output_dir`` always, the inputs where such a file exists
    there (``model_name_or_path`` may also be a hub id; a ``file.py:function`` reward's file counts).
    """
    resolved = dict(values)
    for name in (
        "model_name_or_path",
        "tokenizer_name_or_path",
        "train_file",
        "eval_file",
        "resume_from_checkpoint",
        "reward",
    ):
        value = resolved.get(name)
        if not isinstance(value, str) or value == "latest":
            continue
        file_part, colon, function = value.partition(":") if name == "reward" else (value, "", "")
        candidate = base / Path(file_part).expanduser()
        if not Path(file_part).expanduser().is_absolute() and candidate.exists():
            resolved[name] = f"{candidate}{colon}{function}"
    output_dir = resolved.get("output_dir")
    if isinstance(output_dir, str) and not Path(output_dir).expanduser().is_absolute():
        resolved["output_dir"] = str(base / output_dir)
    return resolved


def parse_column_mapping(mapping: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """
    Check ``column_mapping`` and split every source path at its dots.

    :param mapping: ``{reward column: source path}``, e.g. ``{"answer": "reward_model.ground_truth"}``
    :return: ``{reward column: path parts}``
    :raises ValueError: naming ``column_mapping`` when a name or path is empty or not a string
    """
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"column_mapping={mapping!r} must be a non-empty mapping of column name to source path")
    parsed = {}
    for name, path in mapping.items():
        parts = tuple(path.split(".")) if isinstance(path, str) else ()
        if not isinstance(name, str) or not name or not parts or not all(parts):
            raise ValueError(
                f"column_mapping entry {name!r}: {path!r} is not a column path such as 'reward_model.ground_truth'"
            )
        parsed[name] = parts
    return parsed


def _parse_mapping(text: str) -> dict[str, str]:
    pairs = [pair for pair in text.split(",") if pair.strip()]
    mapping = {}
    for pair in pairs:
        name, equals, path = pair.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"expected name=path pairs separated by commas, got {text!r}")
        mapping[name.strip()] = path.strip()
    return mapping


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional(parse: Any) -> Any:
    def parser(text: str) -> Any:
        return None if text.lower() in ("none", "null") else parse(text)

    return parser


def _parse_var_coef(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _argument_type(annotation: Any) -> Any:
    if annotation == float | str:
        return _parse_var_coef
    if annotation == dict[str, str] | None:
        return _parse_optional(_parse_mapping)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = isinstance(annotation, types.UnionType) and len(args) < len(typing.get_args(annotation))
    base = args[0] if optional else annotation
    parse = _parse_bool if base is bool else base
    return _parse_optional(parse) if optional else parse


def _default_text(config_field: dataclasses.Field) -> str:
    return " (required)" if config_field.default is dataclasses.MISSING else f" (default: {config_field.default})"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """
    One ``--field`` option per config field (default: not given, so YAML values are kept).

    :param parser: the parser to extend
    """
    hints = typing.get_type_hints(TrainConfig)
    for config_field in dataclasses.fields(TrainConfig):
        parser.add_argument(
            f"--{config_field.name}",
            type=_argument_type(hints[config_field.name]),
            default=argparse.SUPPRESS,
            help=f"{config_field.metadata.get('help', '')}{_default_text(config_field)}",
        )
