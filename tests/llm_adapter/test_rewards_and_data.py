import json
from pathlib import Path
from typing import Any

import pytest

from llm_adapter.data import PromptSampler, format_prompt, load_prompt_dataset
from llm_adapter.rewards import (
    extract_answer,
    last_boxed_answer,
    math_answer_reward,
    normalize_answer,
    resolve_reward,
    score_completions,
)


def test_boxed_extraction_balances_braces() -> None:
    assert last_boxed_answer(r"so \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed_answer(r"\boxed{unclosed") is None
    assert extract_answer("work... #### 42\n") == "42"
    assert extract_answer("The final answer is 7.") == "7."
    assert extract_answer("we get 3 and then 15 apples") == "15"
    assert extract_answer("no digits") is None


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [("1,000", "1000"), (r"\dfrac{1}{2}", "0.5"), (r"\text{ 12 }", "12"), ("$-3$", "-3"), ("7.", "7"), ("2.50", "2.5")],
)
def test_normalization_equates(predicted: str, reference: str) -> None:
    assert normalize_answer(predicted) == normalize_answer(reference)


def test_math_answer_reward() -> None:
    completions = [r"... \boxed{42}", r"\boxed{41}", "nothing", r"\boxed{\frac{3}{4}}"]
    assert math_answer_reward(["p"] * 4, completions, answer=["42", "42", "42", "0.75"]) == [1.0, 0.0, 0.0, 1.0]


def test_resolve_reward_from_module_and_file(tmp_path: Path) -> None:
    assert resolve_reward("math") is math_answer_reward
    assert resolve_reward("llm_adapter.rewards:math_answer_reward") is math_answer_reward
    file = tmp_path / "my_reward.py"
    file.write_text("def length_reward(prompts, completions, **columns):\n    return [float(len(c)) for c in completions]\n")
    assert resolve_reward(f"{file}:length_reward")(["a"], ["xyz"]) == [3.0]
    for bad, message in (("nope", "expected one of"), (f"{file}:missing", "no callable"), ("/no/such.py:f", "does not exist")):
        with pytest.raises(ValueError, match=message):
            resolve_reward(bad)


def test_score_completions_checks_the_reward_function() -> None:
    def short(prompts: Any, completions: Any, **_: Any) -> list[float]:
        return [1.0]

    def nan(prompts: Any, completions: Any, **_: Any) -> list[float]:
        return [float("nan")] * len(completions)

    with pytest.raises(ValueError, match="short returned 1 rewards for 2 completions"):
        score_completions(short, ["p", "p"], ["a", "b"], {})
    with pytest.raises(ValueError, match="nan returned nan for completion 0"):
        score_completions(nan, ["p"], ["a"], {})


def test_format_prompt_thinking_switch(tiny_tokenizer: Any) -> None:
    plain = format_prompt(tiny_tokenizer, "2+2?")
    assert plain == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(tiny_tokenizer, "2+2?", thinking="slow") == plain + "<think>\n"
    assert format_prompt(tiny_tokenizer, "2+2?", thinking="fast") == plain + "<think>\n\n</think>\n\n"
    system = format_prompt(tiny_tokenizer, [{"role": "user", "content": "hi"}], system_prompt="be brief")
    assert system.startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi")
    assert format_prompt(tiny_tokenizer, "raw", use_chat_template=False) == "raw"
    with pytest.raises(ValueError, match="thinking="):
        format_prompt(tiny_tokenizer, "x", thinking="medium")
    tiny_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        format_prompt(tiny_tokenizer, "x")


def test_datasets_from_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(7)]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_prompt_dataset(jsonl)
    dataset.to_parquet(str(tmp_path / "data.parquet"))
    assert load_prompt_dataset(tmp_path / "data.parquet")[3] == rows[3]
    with pytest.raises(ValueError, match="prompt_column='question'"):
        load_prompt_dataset(jsonl, prompt_column="question")
    with pytest.raises(ValueError, match="expected one of"):
        load_prompt_dataset(tmp_path / "data.csv")

    sampler = PromptSampler(dataset, seed=1)
    first_epoch = [r["prompt"] for r in sampler.next_rows(5)] + [r["prompt"] for r in sampler.next_rows(2)]
    assert sorted(first_epoch) == sorted(r["prompt"] for r in rows)  # an epoch visits every row once
    state = sampler.state_dict()
    expected = sampler.next_rows(10)
    resumed = PromptSampler(dataset, seed=99)
    resumed.load_state_dict(state)
    assert resumed.next_rows(10) == expected


def test_count_up_toy_reward_and_setup(tmp_path: Path) -> None:
    from llm_adapter.cli import main
    from llm_adapter.config import TrainConfig
    from llm_adapter.rewards import resolve_reward
    from llm_adapter.toy import toy_count_up_reward

    reward = resolve_reward("toy_count_up")
    assert reward is toy_count_up_reward
    completions = ["89012345", "90123456", "8x0123", "77777777"]
    assert reward([""] * 4, completions, answer=["7"] * 4) == [1.0, 7 / 8, 4 / 8, 0.0]
    assert main(["toy-setup", str(tmp_path / "toy"), "--task", "count_up"]) == 0
    config = TrainConfig.from_yaml(tmp_path / "toy" / "config.yaml")
    assert config.reward == "toy_count_up"
    first = json.loads(Path(config.train_file).read_text().splitlines()[0])
    assert first["prompt"] == f"count {first['answer']}"
