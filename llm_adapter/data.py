"""Prompts from local JSON lines / parquet files (through ``datasets``), chat-formatted, drawn in seeded epochs."""

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch as th

THINKING_MODES = ("none", "slow", "fast")
# The paper (footnote 2, after the Qwen3 report): appending "<think>" starts long reasoning ("slow thinking"),
# appending an empty "<think></think>" block makes the model answer directly ("fast thinking").
THINKING_SUFFIXES = {"none": "", "slow": "<think>\n", "fast": "<think>\n\n</think>\n\n"}
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_prompt_dataset(
    path: str | Path,
    *,
    prompt_column: str = "prompt",
    column_mapping: Mapping[str, tuple[str, ...]] | None = None,
    name: str = "train_file",
) -> Any:
    """
    Load a local ``.jsonl``/``.json``/``.parquet`` file as a ``datasets.Dataset`` (no hub access).

    :param path: the file
    :param prompt_column: the column holding the prompt (a string, or a list of chat messages)
    :param column_mapping: columns to add from (nested) columns, ``{name: path parts}``: ``{"answer":
        ("reward_model", "ground_truth")}`` reads DAPO-Math-17k's answers as the ``answer`` column
    :param name: the setting that named the file, for error messages
    :return: the dataset
    """
    import datasets

    path = Path(path)
    if path.suffix not in _FORMATS:
        raise ValueError(f"{name}={str(path)!r}: expected one of {sorted(_FORMATS)} files")
    if not path.is_file():
        raise ValueError(f"{name}={str(path)!r} does not exist")
    dataset = datasets.load_dataset(_FORMATS[path.suffix], data_files=str(path), split="train")
    if prompt_column not in dataset.column_names:
        raise ValueError(f"prompt_column={prompt_column!r} is not a column of {path}; columns: {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError(f"{name}={str(path)!r} has no rows")
    if column_mapping:
        dataset = _map_columns(dataset, column_mapping, source=str(path))
    return dataset


def _nested_value(row: Mapping[str, Any], parts: tuple[str, ...], *, column: str, source: str, index: int) -> Any:
    value: Any = row
    for depth, part in enumerate(parts):
        if not isinstance(value, Mapping) or part not in value:
            found = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ValueError(
                f"column_mapping {column}={'.'.join(parts)!r}: row {index} of {source} has no "
                f"{'.'.join(parts[: depth + 1])!r} (found: {found})"
            )
        value = value[part]
    return value


def _map_columns(dataset: Any, mapping: Mapping[str, tuple[str, ...]], *, source: str) -> Any:
    clashes = sorted(set(mapping) & set(dataset.column_names))
    if clashes:
        raise ValueError(f"column_mapping would overwrite the existing column(s) {clashes} of {source}: map to another name")

    def add_columns(row: dict[str, Any], index: int) -> dict[str, Any]:
        return {
            column: _nested_value(row, parts, column=column, source=source, index=index) for column, parts in mapping.items()
        }

    return dataset.map(add_columns, with_indices=True)


def drop_long_prompts(
    dataset: Any, prompt_length: Callable[[dict[str, Any]], int], max_prompt_length: int, *, name: str = "train_file"
) -> Any:
    """
    The rows whose tokenized prompt fits ``max_prompt_length``, with a warning that counts the rows dropped.

    :param dataset: the prompt dataset
    :param prompt_length: the number of prompt tokens of a row (chat template and thinking switch applied)
    :param max_prompt_length: the longest prompt kept
    :param name: the setting that named the file, for messages
    :return: the kept rows
    :raises ValueError: when no prompt fits
    """
    lengths = [prompt_length(row) for row in dataset]
    keep = [index for index, length in enumerate(lengths) if length <= max_prompt_length]
    dropped = len(lengths) - len(keep)
    if not keep:
        raise ValueError(
            f"Every prompt of {name} is longer than max_prompt_length={max_prompt_length} (shortest: {min(lengths)} "
            "tokens): raise max_prompt_length"
        )
    if dropped:
        warnings.warn(
            f"{name}: dropped {dropped} of {len(lengths)} prompts longer than max_prompt_length={max_prompt_length} "
            f"tokens (longest: {max(lengths)})",
            UserWarning,
            stacklevel=2,
        )
        dataset = dataset.select(keep)
    return dataset


def format_prompt(
    tokenizer: Any,
    prompt: str | list[dict[str, str]],
    *,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    thinking: str = "none",
) -> str:
    """
    The text the model is conditioned on: the chat template with the generation prompt, then the thinking switch.

    :param tokenizer: a ``transformers`` tokenizer (with ``chat_template`` when ``use_chat_template``)
    :param prompt: a user message, or a list of ``{"role", "content"}`` messages
    :param use_chat_template: apply the tokenizer's chat template (else the raw prompt string is used)
    :param system_prompt: optional system message put first
    :param thinking: ``"none"``, ``"slow"`` (append ``<think>``) or ``"fast"`` (append an empty think block)
    :return: the formatted prompt text
    """
    if thinking not in THINKING_MODES:
        raise ValueError(f"thinking={thinking!r} must be one of {THINKING_MODES}")
    if not use_chat_template:
        if not isinstance(prompt, str):
            raise ValueError("A list of chat messages needs use_chat_template=True")
        text = prompt if system_prompt is None else f"{system_prompt}\n{prompt}"
    else:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("The tokenizer has no chat_template: set use_chat_template=False or give it a template")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None:
            messages = [{"role": "system", "content": system_prompt}, *messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    suffix = THINKING_SUFFIXES[thinking]
    return text if text.endswith(suffix) else text + suffix


class PromptSampler:
    """
    Draws prompt rows in epochs, each a fresh seeded permutation of the dataset; its state resumes exactly.

    :param dataset: the prompt dataset
    :param seed: permutation seed
    """

    def __init__(self, dataset: Any, *, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _permutation(self) -> list[int]:
        generator = th.Generator().manual_seed(self.seed + self.epoch)
        return th.randperm(len(self.dataset), generator=generator).tolist()

    def next_rows(self, count: int) -> list[dict[str, Any]]:
        """
        The next ``count`` rows (crossing into the next epoch when needed).

        :param count: number of rows
        :return: the rows as dicts
        """
        rows: list[dict[str, Any]] = []
        while len(rows) < count:
            order = self._permutation()
            take = order[self.position : self.position + count - len(rows)]
            rows.extend(self.dataset[index] for index in take)
            self.position += len(take)
            if self.position >= len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return rows

    def state_dict(self) -> dict[str, int]:
        """Epoch and position."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """
        Restore :meth:`state_dict`.

        :param state: the saved state
        """
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
