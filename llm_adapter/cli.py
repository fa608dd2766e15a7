"""``r2vpo-llm`` / ``python -m llm_adapter``: ``train`` from a YAML config with command-line overrides, and ``toy-setup``."""

import argparse
import sys
from collections.abc import Sequence

from llm_adapter.config import TrainConfig, add_config_arguments
from llm_adapter.toy import TOY_TASKS


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``train`` and ``toy-setup`` subcommands)."""
    parser = argparse.ArgumentParser(prog="r2vpo-llm", description="GRPO-style LLM training with R2VPO (sb3-r2vpo)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="Train a causal LM on verifiable rewards")
    train.add_argument("--config", default=None, help="YAML file of TrainConfig fields (the options below override it)")
    add_config_arguments(train)
    toy = commands.add_parser("toy-setup", help="Write a tiny local model, tokenizer, prompts and config for a toy task")
    toy.add_argument("directory", help="Output directory")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument(
        "--task", choices=sorted(TOY_TASKS), default="repeat_digit", help="Which toy task (default: repeat_digit)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point.

    :param argv: arguments (default ``sys.argv[1:]``)
    :return: exit status
    """
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "toy-setup":
        from llm_adapter.toy import write_toy_setup

        path = write_toy_setup(args["directory"], seed=args["seed"], task=args["task"])
        print(f"Wrote {path}; train with: r2vpo-llm train --config {path}")
        return 0
    config_path = args.pop("config")
    try:
        config = (
            TrainConfig.from_yaml(config_path, **args) if config_path else TrainConfig.from_dict(args, source="command line")
        )
    except (ValueError, TypeError) as error:
        print(f"r2vpo-llm: error: {error}", file=sys.stderr)
        return 2
    from llm_adapter.trainer import R2VPOLLMTrainer

    try:
        trainer = R2VPOLLMTrainer(config)
    except (ValueError, OSError) as error:  # bad paths, an output_dir holding a run, a model that does not load
        print(f"r2vpo-llm: error: {error}", file=sys.stderr)
        return 2
    history = trainer.train()
    if history:
        first, last = history[0]["reward_mean"], history[-1]["reward_mean"]
        print(f"Trained {len(history)} iterations: reward_mean {first:.4f} -> {last:.4f}; outputs in {config.output_dir}")
    return 0
