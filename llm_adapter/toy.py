"""
A toy verifiable task and a tiny model to run it on, all built locally (no model hub).

``write_toy_setup(directory)`` writes a character-level tokenizer with a ChatML chat template and a randomly
initialized tiny Qwen2 model (both through ``save_pretrained``, so they load with ``from_pretrained`` like any hub
model), a prompt file and a YAML config for ``r2vpo-llm train``. The task: the prompt names a digit, the reward is
the fraction of the first 8 generated characters that are that digit (``repeat_digit``). A second task of another
kind, on which no setting was chosen (``count_up``): the prompt names a digit, the completion must count up from
the next one, modulo 10 (``count 7`` -> ``89012345``), each character rewarded when it is one more than the one
before it.
"""

import json
import random
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHARACTERS = string.ascii_lowercase + string.digits + " \n.,:;?!+-*/=()[]{}\\$#_^'\""
TOY_ANSWER_LENGTH = 8


def build_char_tokenizer() -> Any:
    """
    A character-level fast tokenizer (``transformers.PreTrainedTokenizerFast``) with ChatML special tokens.

    :return: the tokenizer (pad ``<|endoftext|>``, eos ``<|im_end|>``)
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, "<unk>", *CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_qwen2(vocab_size: int, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Any:
    """
    A randomly initialized Qwen2 causal LM small enough for CPU tests.

    :param vocab_size: tokenizer vocabulary size
    :param seed: initialization seed
    :param hidden_size: model width
    :param num_layers: number of decoder layers
    :return: the model (float32)
    """
    import torch as th
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=SPECIAL_TOKENS.index("<|im_end|>"),
        pad_token_id=SPECIAL_TOKENS.index("<|endoftext|>"),
    )
    th.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def toy_repeat_digit_reward(
    prompts: Sequence[str], completions: Sequence[str], *, answer: Sequence[Any], **_: Any
) -> list[float]:
    """
    The toy task's reward: the fraction of the first 8 characters of the completion equal to the ``answer`` digit.

    :param prompts: prompts (unused)
    :param completions: completion text
    :param answer: the requested digit of every completion
    :return: rewards in [0, 1]
    """
    return [
        sum(char == str(digit) for char in completion[:TOY_ANSWER_LENGTH]) / TOY_ANSWER_LENGTH
        for completion, digit in zip(completions, answer, strict=True)
    ]


def toy_count_up_reward(prompts: Sequence[str], completions: Sequence[str], *, answer: Sequence[Any], **_: Any) -> list[float]:
    """
    The ``count_up`` task's reward: the fraction of the first 8 characters of the completion that are one more
    (modulo 10) than the character before them, the first one counted from the ``answer`` digit (``answer`` 7:
    ``89012345`` earns 1, ``90123456`` 7/8: a count is rewarded where it holds locally).

    :param prompts: prompts (unused)
    :param completions: completion text
    :param answer: the digit the count starts after, for every completion
    :return: rewards in [0, 1]
    """
    rewards = []
    for completion, digit in zip(completions, answer, strict=True):
        previous, hits = str(digit), 0
        for char in completion[:TOY_ANSWER_LENGTH]:
            hits += previous.isdigit() and char == str((int(previous) + 1) % 10)
            previous = char
        rewards.append(hits / TOY_ANSWER_LENGTH)
    return rewards


#: The toy tasks: the word the prompt starts with and the reward name (``resolve_reward`` knows both).
TOY_TASKS = {"repeat_digit": ("digit", "toy_repeat_digit"), "count_up": ("count", "toy_count_up")}


def write_toy_prompts(path: str | Path, *, n_prompts: int = 200, seed: int = 0, task: str = "repeat_digit") -> Path:
    """
    Write a toy task's prompts as JSON lines, ``{"prompt": "digit 7", "answer": "7"}`` (``count 7`` for ``count_up``).

    :param path: the ``.jsonl`` file to write
    :param n_prompts: number of rows
    :param seed: shuffling seed
    :param task: one of :data:`TOY_TASKS`
    :return: the path
    """
    if task not in TOY_TASKS:
        raise ValueError(f"task={task!r} must be one of {sorted(TOY_TASKS)}")
    word = TOY_TASKS[task][0]
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for _ in range(n_prompts):
            digit = rng.randrange(10)
            file.write(json.dumps({"prompt": f"{word} {digit}", "answer": str(digit)}) + "\n")
    return path


def write_toy_setup(directory: str | Path, *, seed: int = 0, task: str = "repeat_digit") -> Path:
    """
    Write a tiny model + tokenizer (``model/``), prompts (``prompts.jsonl``) and ``config.yaml`` for ``r2vpo-llm train``.

    :param directory: output directory
    :param seed: model initialization and data seed
    :param task: one of :data:`TOY_TASKS`
    :return: the path of ``config.yaml``
    """
    import yaml

    directory = Path(directory)
    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(len(tokenizer), seed=seed)
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    write_toy_prompts(directory / "prompts.jsonl", seed=seed, task=task)
    config = {
        # Relative to this file (TrainConfig.from_yaml resolves them so), wherever training is started from.
        "model_name_or_path": "model",
        "train_file": "prompts.jsonl",
        "reward": TOY_TASKS[task][1],
        "output_dir": "run",
        "max_completion_length": TOY_ANSWER_LENGTH,
        # The reward starts rising near iteration 80 (benchmarks/llm_toy_comparison.py runs 150).
        "num_iterations": 150,
        "prompts_per_iteration": 8,
        "group_size": 8,
        "micro_batch_size": 16,
        "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3,
        "seed": seed,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
