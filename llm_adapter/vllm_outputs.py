"""
Mapping vLLM's ``RequestOutput`` objects to a :class:`RolloutBatch`, token by token.

This module never imports vLLM: it reads the attributes vLLM's output classes have (``prompt_token_ids``,
``outputs[i].token_ids``, ``outputs[i].logprobs``, ``finish_reason``), so the mapping is testable without an
engine. Three logprob layouts are understood:

- ``list[dict[int, Logprob]]``, one dict per generated token (``Logprob`` from ``vllm.sequence`` in old
  releases, ``vllm.logprobs`` in newer ones: only its ``.logprob`` attribute is read; plain floats work too);
- ``FlatLogprobs`` with flat ``start_indices``/``end_indices``/``token_ids``/``logprobs`` columns, read directly;
- any other sequence container whose items are per-position dicts (newer columnar ``FlatLogprobs``).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from llm_adapter.rollouts import RolloutBatch

# vLLM finish reasons: "stop" (EOS or a stop string/token), "length" (max_tokens), "abort" (request cancelled).
_FINISHED_REASONS = ("stop", "length")


def _entry_log_prob(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def _has_flat_columns(logprobs: Any) -> bool:
    return all(
        isinstance(getattr(logprobs, name, None), list) for name in ("start_indices", "end_indices", "token_ids", "logprobs")
    )


def sampled_token_log_probs(logprobs: Any, token_ids: Sequence[int], *, request: str) -> list[float]:
    """
    The log-probability of every sampled token, from vLLM's per-position logprob container.

    :param logprobs: ``outputs[i].logprobs`` of a vLLM ``CompletionOutput``
    :param token_ids: ``outputs[i].token_ids``
    :param request: the request id and sample index, for error messages
    :return: one float per sampled token
    :raises ValueError: naming the request when logprobs are missing, have the wrong length, or lack a sampled token
    """
    if logprobs is None:
        raise ValueError(
            f"Request {request} has no logprobs: sample with SamplingParams(logprobs=0) (vLLM then returns the "
            "log-probability of every sampled token)"
        )
    if len(logprobs) != len(token_ids):
        raise ValueError(
            f"Request {request}: {len(logprobs)} logprob entries for {len(token_ids)} generated tokens; vLLM must return "
            "exactly one entry per generated token"
        )
    if _has_flat_columns(logprobs):
        flat_ids, flat_values = logprobs.token_ids, logprobs.logprobs
        values = []
        for position, token in enumerate(token_ids):
            start, end = logprobs.start_indices[position], logprobs.end_indices[position]
            try:
                offset = flat_ids[start:end].index(token)
            except ValueError:
                raise ValueError(
                    f"Request {request}: sampled token {token} missing from the logprobs of position {position}"
                ) from None
            values.append(float(flat_values[start + offset]))
        return values
    values = []
    for position, (entry, token) in enumerate(zip(logprobs, token_ids, strict=True)):
        if not isinstance(entry, Mapping) or token not in entry:
            raise ValueError(f"Request {request}: sampled token {token} missing from the logprobs of position {position}")
        values.append(_entry_log_prob(entry[token]))
    return values


def rollout_batch_from_vllm(
    request_outputs: Sequence[Any],
    *,
    policy_version: int,
    pad_token_id: int,
    group_ids: Sequence[int] | None = None,
) -> RolloutBatch:
    """
    Map vLLM's ``RequestOutput`` list (from ``LLM.generate``) to a :class:`RolloutBatch`.

    Every sample of a request (``SamplingParams(n=G)``) becomes one row; by default the samples of one request form
    one group. Pass ``group_ids`` (one per request) when the same prompt was sent as several requests.
    Empty completions (EOS sampled first) are kept with an empty mask; ``finish_reason == "length"`` marks a row
    truncated. Aborted requests are refused: their text is incomplete and their reward meaningless.

    :param request_outputs: vLLM's ``RequestOutput`` objects
    :param policy_version: the version of the weights the engine sampled with
    :param pad_token_id: padding id of the tokenizer
    :param group_ids: optional group id of every request
    :return: the batch (rewards and advantages zero until scored)
    """
    if group_ids is not None and len(group_ids) != len(request_outputs):
        raise ValueError(f"group_ids has {len(group_ids)} entries for {len(request_outputs)} requests")
    prompts: list[list[int]] = []
    completions: list[list[int]] = []
    log_probs: list[list[float]] = []
    groups: list[int] = []
    truncated: list[bool] = []
    for request_index, output in enumerate(request_outputs):
        request_id = getattr(output, "request_id", request_index)
        prompt = list(output.prompt_token_ids or [])
        if not prompt:
            raise ValueError(f"Request {request_id} has no prompt_token_ids")
        if not output.outputs:
            raise ValueError(f"Request {request_id} has no completions")
        for sample in output.outputs:
            name = f"{request_id!r} (sample {getattr(sample, 'index', '?')})"
            if sample.finish_reason not in _FINISHED_REASONS:
                raise ValueError(
                    f"Request {name} finished with finish_reason={sample.finish_reason!r}; only {_FINISHED_REASONS} "
                    "can be trained on"
                )
            tokens = list(sample.token_ids)
            prompts.append(prompt)
            completions.append(tokens)
            log_probs.append(sampled_token_log_probs(sample.logprobs, tokens, request=name))
            groups.append(request_index if group_ids is None else int(group_ids[request_index]))
            truncated.append(sample.finish_reason == "length")
    return RolloutBatch.from_sequences(
        prompts,
        completions,
        log_probs,
        group_ids=groups,
        truncated=truncated,
        policy_version=policy_version,
        pad_token_id=pad_token_id,
    )
