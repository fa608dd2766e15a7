import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch as th

from llm_adapter.rollouts import RolloutBatch
from llm_adapter.vllm_outputs import rollout_batch_from_vllm, sampled_token_log_probs

# Objects shaped like vLLM's output classes (vllm cannot be installed without CUDA); the real classes are exercised
# by test_real_vllm_classes when vllm is importable.


@dataclass
class LookalikeLogprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class LookalikeCompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None


@dataclass
class LookalikeRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[LookalikeCompletionOutput]
    finished: bool = True
    prompt: str | None = None


@dataclass
class LookalikeFlatLogprobs:
    """vLLM's list-backed FlatLogprobs layout: per-position [start, end) ranges into flat columns."""

    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start_indices)


class ColumnarLogprobs(Sequence):
    """A container that only offers the Sequence API (like the newer numpy-backed FlatLogprobs)."""

    def __init__(self, positions: list[dict[int, LookalikeLogprob]]) -> None:
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: Any) -> Any:
        return self._positions[index]

    def __iter__(self) -> Iterator[dict[int, LookalikeLogprob]]:
        return iter(self._positions)


def _dict_logprobs(tokens: list[int], values: list[float], *, extra_top: bool = True) -> list[dict[int, LookalikeLogprob]]:
    # With SamplingParams(logprobs=k), vLLM adds the top-k candidates beside the sampled token.
    return [
        {token: LookalikeLogprob(value, rank=2), **({token + 1000: LookalikeLogprob(-0.01, rank=1)} if extra_top else {})}
        for token, value in zip(tokens, values, strict=True)
    ]


def _flat_logprobs(tokens: list[int], values: list[float]) -> LookalikeFlatLogprobs:
    flat = LookalikeFlatLogprobs()
    for token, value in zip(tokens, values, strict=True):
        flat.start_indices.append(len(flat.token_ids))
        flat.token_ids.extend([token + 1000, token])
        flat.logprobs.extend([-0.01, value])
        flat.end_indices.append(len(flat.token_ids))
    return flat


def _request(
    request_id: str, prompt: list[int], samples: list[tuple[list[int], list[float], str]], layout: str
) -> LookalikeRequestOutput:
    outputs = []
    for index, (tokens, values, reason) in enumerate(samples):
        if layout == "dict":
            logprobs: Any = _dict_logprobs(tokens, values)
        elif layout == "flat":
            logprobs = _flat_logprobs(tokens, values)
        else:
            logprobs = ColumnarLogprobs(_dict_logprobs(tokens, values))
        outputs.append(LookalikeCompletionOutput(index, "", tuple(tokens), sum(values), logprobs, reason))
    return LookalikeRequestOutput(request_id, prompt, outputs)


@pytest.mark.parametrize("layout", ["dict", "flat", "sequence"])
def test_vllm_outputs_map_token_by_token(layout: str) -> None:
    outputs = [
        _request("a", [5, 6, 7], [([10, 11, 2], [-0.5, -1.5, -0.1], "stop"), ([12], [-2.0], "length")], layout),
        _request("b", [8], [([], [], "stop"), ([13, 14], [-0.3, -0.7], "length")], layout),
    ]
    batch = rollout_batch_from_vllm(outputs, policy_version=3, pad_token_id=0)
    assert len(batch) == 4
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [5, 6, 7], [0, 0, 8], [0, 0, 8]]
    assert batch.completion_ids.tolist() == [[10, 11, 2], [12, 0, 0], [0, 0, 0], [13, 14, 0]]
    assert batch.completion_mask.sum(1).tolist() == [3, 1, 0, 2]
    expected = th.tensor([[-0.5, -1.5, -0.1], [-2.0, 0, 0], [0, 0, 0], [-0.3, -0.7, 0]])
    th.testing.assert_close(batch.behavior_log_probs, expected)
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert batch.truncated.tolist() == [False, True, False, True]
    assert batch.policy_version.tolist() == [3, 3, 3, 3]


def test_group_ids_override_for_repeated_requests() -> None:
    outputs = [_request(str(i), [4, 5], [([9], [-1.0], "stop")], "dict") for i in range(4)]
    batch = rollout_batch_from_vllm(outputs, policy_version=0, pad_token_id=0, group_ids=[7, 7, 9, 9])
    assert batch.group_ids.tolist() == [7, 7, 9, 9]


def test_length_mismatch_names_the_request() -> None:
    output = _request("req-42", [1], [([9, 10], [-1.0, -2.0], "stop")], "dict")
    output.outputs[0].logprobs = output.outputs[0].logprobs[:1]
    with pytest.raises(ValueError, match=r"req-42.*1 logprob entries for 2 generated tokens"):
        rollout_batch_from_vllm([output], policy_version=0, pad_token_id=0)


def test_missing_logprobs_and_sampled_token_errors() -> None:
    output = _request("r1", [1], [([9], [-1.0], "stop")], "dict")
    output.outputs[0].logprobs = None
    with pytest.raises(ValueError, match=r"r1.*SamplingParams\(logprobs=0\)"):
        rollout_batch_from_vllm([output], policy_version=0, pad_token_id=0)
    with pytest.raises(ValueError, match="sampled token 9 missing"):
        sampled_token_log_probs([{3: LookalikeLogprob(-1.0)}], [9], request="r2")
    with pytest.raises(ValueError, match="sampled token 9 missing"):
        sampled_token_log_probs(_flat_logprobs([3], [-1.0]), [9], request="r3")


def test_aborted_and_unfinished_requests_are_refused() -> None:
    for reason in ("abort", None):
        output = _request("r9", [1], [([9], [-1.0], "stop")], "dict")
        output.outputs[0].finish_reason = reason
        with pytest.raises(ValueError, match=r"r9.*finish_reason"):
            rollout_batch_from_vllm([output], policy_version=0, pad_token_id=0)


def test_plain_float_logprob_entries() -> None:
    assert sampled_token_log_probs([{4: -0.25}, {5: -1.0}], [4, 5], request="x") == [-0.25, -1.0]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (needs CUDA)")
def test_real_vllm_classes() -> None:
    from vllm.outputs import CompletionOutput, RequestOutput

    try:
        from vllm.logprobs import Logprob
    except ImportError:  # vLLM < 0.11 kept it in vllm.sequence
        from vllm.sequence import Logprob  # type: ignore[no-redef]
    sample = CompletionOutput(
        index=0,
        text="",
        token_ids=[10, 11],
        cumulative_logprob=-1.5,
        logprobs=[{10: Logprob(-0.5)}, {11: Logprob(-1.0)}],
        finish_reason="length",
    )
    output = RequestOutput(
        request_id="0", prompt=None, prompt_token_ids=[1, 2], prompt_logprobs=None, outputs=[sample], finished=True
    )
    batch = rollout_batch_from_vllm([output], policy_version=0, pad_token_id=0)
    th.testing.assert_close(batch.behavior_log_probs, th.tensor([[-0.5, -1.0]]))


def _batch() -> RolloutBatch:
    return RolloutBatch.from_sequences(
        [[1, 2, 3], [4]],
        [[5], [6, 7, 8]],
        [[-0.1], [-0.2, -0.3, -0.4]],
        group_ids=[0, 0],
        truncated=[False, True],
        policy_version=2,
        pad_token_id=0,
    )


def test_model_inputs_positions_skip_left_padding() -> None:
    input_ids, attention_mask, position_ids = _batch().model_inputs()
    assert input_ids.tolist() == [[1, 2, 3, 5, 0, 0], [0, 0, 4, 6, 7, 8]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert position_ids[1].tolist()[2:] == [0, 1, 2, 3]


def test_concat_select_trim_and_state_dict() -> None:
    other = RolloutBatch.from_sequences(
        [[9, 9, 9, 9, 9]], [[1]], [[-1.0]], group_ids=[1], truncated=[False], policy_version=3, pad_token_id=0
    )
    merged = RolloutBatch.concat([_batch(), other])
    assert merged.prompt_ids.shape == (3, 5) and merged.completion_ids.shape == (3, 3)
    assert merged.prompt_ids[0].tolist() == [0, 0, 1, 2, 3]
    assert merged.policy_version.tolist() == [2, 2, 3]
    picked = merged.select(th.tensor([2, 0])).trimmed()
    assert picked.prompt_ids.tolist() == [[9, 9, 9, 9, 9], [0, 0, 1, 2, 3]]
    assert picked.completion_ids.shape == (2, 1)
    restored = RolloutBatch.from_state_dict(merged.state_dict())
    for name, value in merged._tensor_fields().items():
        assert th.equal(value, getattr(restored, name))


def test_bad_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="completion 0 has 1 tokens but 2 behavior log-probs"):
        RolloutBatch.from_sequences(
            [[1]], [[2]], [[-1.0, -2.0]], group_ids=[0], truncated=[False], policy_version=0, pad_token_id=0
        )
    with pytest.raises(ValueError, match="non-finite behavior log-prob"):
        RolloutBatch.from_sequences(
            [[1]], [[2]], [[float("nan")]], group_ids=[0], truncated=[False], policy_version=0, pad_token_id=0
        )
    with pytest.raises(ValueError, match="rewards contains NaN"):
        _batch().with_scores(th.tensor([1.0, float("nan")]), th.zeros(2))
