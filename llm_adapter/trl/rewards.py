"""Our reward functions (``fn(prompts, completions, **columns)`` on text) as TRL reward functions."""

import functools
from collections.abc import Callable, Sequence
from typing import Any

from llm_adapter.rewards import resolve_reward


def message_text(item: str | Sequence[dict[str, Any]]) -> str:
    """The text of a prompt or completion: a string as is, a conversation as its last message's content."""
    if isinstance(item, str):
        return item
    if not item:
        return ""
    content = item[-1].get("content", "")
    if isinstance(content, list):  # multimodal content blocks
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return str(content)


def as_trl_reward(spec: str | Callable[..., list[float]]) -> Callable[..., list[float]]:
    """
    Wrap a reward of this package for TRL, which passes conversational prompts and completions as message lists
    (and adds ``completion_ids``, ``trainer_state``, ... to the keyword arguments).

    :param spec: a callable, or a name ``resolve_reward`` understands (``"math"``, ``"toy_repeat_digit"``,
        ``"package.module:function"``, ``"file.py:function"``)
    :return: a TRL reward function, named after the wrapped one (TRL logs ``rewards/<name>/mean``)
    """
    function = resolve_reward(spec) if isinstance(spec, str) else spec

    @functools.wraps(function)
    def reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        return function([message_text(p) for p in prompts], [message_text(c) for c in completions], **columns)

    return reward
