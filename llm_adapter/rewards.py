"""
Reward functions ``fn(prompts, completions, **columns) -> list[float]``, and the built-in math-answer reward.

``columns`` are the dataset's other columns (e.g. ``answer``), one value per completion, as in TRL.
"""

import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RewardFunction = Callable[..., list[float]]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FINAL_ANSWER = re.compile(r"(?:final answer|answer)\s*(?:is|:)?\s*\$?([^\n$]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def last_boxed_answer(text: str) -> str | None:
    """
    The content of the last ``\\boxed{...}`` (nested braces balanced), or None.

    :param text: the completion
    :return: the boxed content
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    depth = 1
    for position in range(start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[start:position]
    return None


def extract_answer(text: str) -> str | None:
    """
    The final answer of a completion: the last ``\\boxed{}``, else ``#### x``, else "the answer is x", else the last number.

    :param text: the completion
    :return: the answer, or None when there is none
    """
    boxed = last_boxed_answer(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    final = _FINAL_ANSWER.findall(text)
    if final:
        return final[-1].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize_answer(answer: str) -> str:
    """
    A canonical form for string comparison: no spaces, ``$``, ``\\left``/``\\right``, ``\\text{}``, trailing period;
    ``\\dfrac``/``\\tfrac`` as ``\\frac``; thousands separators removed; numbers in a canonical float form.

    :param answer: an extracted answer
    :return: its normalized form
    """
    text = answer.strip()
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("$", ""), ("\\!", "")):
        text = text.replace(old, new)
    text = re.sub(r"\s+", "", text).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    frac = re.fullmatch(r"(-?)\\frac\{?(-?\d+)\}?\{?(\d+)\}?", text)
    if frac:
        text = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    value = _as_number(text)
    if value is not None:
        return repr(round(value, 9))
    return text


def _as_number(text: str) -> float | None:
    try:
        if re.fullmatch(r"-?\d+/\d+", text):
            numerator, denominator = text.split("/")
            return int(numerator) / int(denominator) if int(denominator) != 0 else None
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        return None


def _math_verify_equal(answer: str, reference: str) -> bool | None:
    if importlib.util.find_spec("math_verify") is None:
        return None
    import math_verify

    try:
        return bool(math_verify.verify(math_verify.parse(f"${reference}$"), math_verify.parse(f"${answer}$")))
    except Exception:  # math-verify raises on unparsable input; fall back to string comparison
        return None


def math_answer_reward(prompts: Sequence[str], completions: Sequence[str], *, answer: Sequence[Any], **_: Any) -> list[float]:
    """
    1.0 when the completion's final answer equals the reference ``answer`` column, else 0.0.

    The answer is the last ``\\boxed{}`` (or a ``####``/"the answer is"/last-number fallback). With ``math-verify``
    installed it decides equivalence (``1/2`` vs ``0.5``, ``\\frac{1}{2}``); otherwise normalized strings are compared.

    :param prompts: the prompts (unused)
    :param completions: the completions' text
    :param answer: the reference answers, one per completion
    :return: one reward per completion
    """
    rewards = []
    for completion, reference in zip(completions, answer, strict=True):
        predicted = extract_answer(completion)
        if predicted is None:
            rewards.append(0.0)
            continue
        verified = _math_verify_equal(predicted, str(reference))
        if verified is None:
            verified = normalize_answer(predicted) == normalize_answer(str(reference))
        rewards.append(1.0 if verified else 0.0)
    return rewards


BUILTIN_REWARDS: dict[str, RewardFunction] = {"math": math_answer_reward}


def resolve_reward(spec: str) -> RewardFunction:
    """
    A reward function from its name: a built-in (``"math"``, ``"toy_repeat_digit"``, ``"toy_count_up"``),
    ``package.module:function``
    or ``path/to/file.py:function``.

    :param spec: the reward specification
    :return: the callable
    """
    from llm_adapter.toy import toy_count_up_reward, toy_repeat_digit_reward

    builtins = {**BUILTIN_REWARDS, "toy_repeat_digit": toy_repeat_digit_reward, "toy_count_up": toy_count_up_reward}
    if spec in builtins:
        return builtins[spec]
    if ":" not in spec:
        raise ValueError(
            f"reward={spec!r}: expected one of {sorted(builtins)}, 'package.module:function' or 'file.py:function'"
        )
    location, _, attribute = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise ValueError(f"reward={spec!r}: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"r2vpo_reward_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"reward={spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"reward={spec!r}: {location} has no callable {attribute!r}")
    return function


def score_completions(
    reward_fn: RewardFunction, prompts: list[str], completions: list[str], columns: dict[str, list[Any]]
) -> list[float]:
    """
    Call a reward function and check what it returns: one finite float per completion.

    :param reward_fn: the reward function
    :param prompts: prompt text per completion
    :param completions: completion text
    :param columns: other dataset columns, one value per completion
    :return: the rewards
    """
    name = getattr(reward_fn, "__name__", repr(reward_fn))
    rewards = reward_fn(prompts, completions, **columns)
    if len(rewards) != len(completions):
        raise ValueError(f"Reward function {name} returned {len(rewards)} rewards for {len(completions)} completions")
    values = []
    for index, reward in enumerate(rewards):
        value = float(reward)
        if not math.isfinite(value):
            raise ValueError(f"Reward function {name} returned {reward!r} for completion {index}: {completions[index]!r}")
        values.append(value)
    return values
