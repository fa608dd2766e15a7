"""
Train a causal language model with R2VPO through TRL's ``GRPOTrainer`` (``llm_adapter.trl.R2VPOTrainer``).

Every ``R2VPOConfig`` (= ``GRPOConfig`` + R2VPO) field is a command-line option, as in TRL's own scripts.

A tiny model and a toy digit task built locally, on CPU (a minute):

    python examples/trl_r2vpo.py --tiny --output_dir runs/trl-tiny --max_steps 20

A real model on 8 GPUs, generating with vLLM colocated with training:

    accelerate launch --num_processes 8 examples/trl_r2vpo.py \\
        --model_name_or_path Qwen/Qwen3-1.7B --dataset_file dapo_math_17k.jsonl --reward math \\
        --output_dir runs/r2vpo-qwen3 --use_vllm --vllm_mode colocate \\
        --per_device_train_batch_size 8 --gradient_accumulation_steps 2 --num_generations 8 \\
        --steps_per_generation 4 --max_completion_length 4096 --learning_rate 1e-6 --bf16 true

(add ``--config_file`` to ``accelerate launch`` for DeepSpeed ZeRO or FSDP). ``steps_per_generation`` larger than
``gradient_accumulation_steps`` (or ``--num_iterations 2``) gives several optimizer steps per generation, which is
what gives R2VPO's penalty something to act on.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch as th
from transformers import AutoTokenizer, HfArgumentParser

from llm_adapter.data import load_prompt_dataset
from llm_adapter.toy import TOY_ANSWER_LENGTH, build_char_tokenizer, build_tiny_qwen2, write_toy_prompts
from llm_adapter.trl import R2VPOConfig, R2VPOTrainer
from llm_adapter.trl.rewards import as_trl_reward


@dataclass
class ScriptArguments:
    """What to train on, besides the trainer's settings."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Local model directory or hub id"})
    dataset_file: str | None = field(default=None, metadata={"help": "Prompts: a local .jsonl, .json or .parquet"})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt"})
    reward: str = field(
        default="math", metadata={"help": "'math', 'toy_repeat_digit', 'package.module:function' or 'file.py:function'"}
    )
    tiny: bool = field(default=False, metadata={"help": "Build a tiny Qwen2 model and the toy digit task locally"})


# Settings for the tiny toy run, used where the command line leaves them unset (TRL's suit billion-parameter models).
TINY_DEFAULTS = {
    "learning_rate": 3e-3,
    "num_iterations": 2,
    "per_device_train_batch_size": 16,
    "num_generations": 8,
    "gradient_accumulation_steps": 2,
    "logging_steps": 1,
    "max_completion_length": TOY_ANSWER_LENGTH,
}


def tiny_setup(script: ScriptArguments, args: R2VPOConfig) -> None:
    """Write a tiny model and the toy prompts under ``output_dir/tiny_setup`` and point the script at them."""
    directory = Path(args.output_dir) / "tiny_setup"
    tokenizer = build_char_tokenizer()
    build_tiny_qwen2(len(tokenizer), seed=args.seed).save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    script.model_name_or_path = str(directory / "model")
    script.dataset_file = str(write_toy_prompts(directory / "prompts.jsonl", seed=args.seed))
    script.reward = "toy_repeat_digit"


def main(argv: list[str] | None = None) -> R2VPOTrainer:
    parser = HfArgumentParser((ScriptArguments, R2VPOConfig))
    cuda = th.cuda.is_available()
    # TRL defaults to bf16, which CPU runs cannot use.
    parser.set_defaults(bf16=cuda, use_cpu=not cuda)
    argv = sys.argv[1:] if argv is None else argv
    if "--tiny" in argv:
        parser.set_defaults(**TINY_DEFAULTS)  # before parsing: GRPOConfig derives its generation batch from them
    script, args = parser.parse_args_into_dataclasses(argv)
    if script.tiny:
        tiny_setup(script, args)
    if script.model_name_or_path is None or script.dataset_file is None:
        parser.error("--model_name_or_path and --dataset_file are required (or --tiny)")
    dataset = load_prompt_dataset(script.dataset_file, prompt_column=script.prompt_column)
    if script.prompt_column != "prompt":
        dataset = dataset.rename_column(script.prompt_column, "prompt")
    trainer = R2VPOTrainer(
        script.model_name_or_path,
        reward_funcs=as_trl_reward(script.reward),
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(script.model_name_or_path),
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(Path(args.output_dir) / "final"))
    if trainer.accelerator.is_main_process:
        for entry in trainer.state.log_history:
            if "r2vpo/lam" in entry:
                print({key: entry[key] for key in ("step", "reward", "r2vpo/lam", "r2vpo/ratio_var") if key in entry})
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
