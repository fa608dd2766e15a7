"""In-process vLLM (``vllm.LLM``) as the rollout engine. vLLM is imported here only, when the engine is built."""

import importlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from llm_adapter.engines.base import RolloutEngine
from llm_adapter.rollouts import RolloutBatch
from llm_adapter.vllm_outputs import rollout_batch_from_vllm


def _import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise ImportError(
            "VLLMEngine needs vLLM (and a CUDA GPU): pip install 'sb3-r2vpo[vllm]'; or use engine='transformers'"
        ) from error


def vllm_sampling_kwargs(
    *, group_size: int, max_new_tokens: int, temperature: float, seed: int | None = None
) -> dict[str, Any]:
    """
    ``SamplingParams`` for training rollouts (METHOD.md, section 6): pure temperature sampling, one logprob per token.

    ``top_p=1`` and ``top_k=-1`` keep the sampling distribution the full softmax the trainer recomputes;
    ``logprobs=0`` returns the log-probability of the sampled token only.

    :param group_size: completions per prompt (``n``)
    :param max_new_tokens: ``max_tokens``
    :param temperature: sampling temperature
    :param seed: optional per-request seed
    :return: keyword arguments of ``vllm.SamplingParams``
    """
    return {
        "n": group_size,
        "temperature": temperature,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": max_new_tokens,
        "logprobs": 0,
        "seed": seed,
    }


class VLLMEngine(RolloutEngine):
    """
    Colocated ``vllm.LLM`` with ``logprobs_mode="processed_logprobs"``: the reported log-probs are those of the
    distribution actually sampled from (after temperature), which is what the trainer recomputes.

    After each update :meth:`update_weights` loads the trainer's weights into the engine and resets the prefix cache
    (cached KV blocks were computed with the old weights). With ``enable_sleep_mode=True`` the engine releases its
    GPU memory between generations (:meth:`sleep`/:meth:`wake_up`).

    Sampler/trainer mismatch: vLLM's kernels (bf16, other reduction orders) give log-probs that differ from the
    trainer's by ~1e-3-1e-2 per token, so fresh data has ``r != 1`` exactly. ``behavior_log_probs="recompute"`` in
    the trainer replaces them with the trainer's own log-probs before the first update.

    :param model_name_or_path: local model directory (or hub id where the hub is reachable)
    :param pad_token_id: the tokenizer's padding id
    :param seed: engine seed
    :param gpu_memory_utilization: fraction of GPU memory vLLM may take
    :param tensor_parallel_size: tensor parallel degree
    :param max_model_len: context length (prompt + completion)
    :param dtype: weights dtype in the engine
    :param enable_sleep_mode: allow :meth:`sleep`
    :param llm_kwargs: more ``vllm.LLM`` arguments
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        pad_token_id: int,
        seed: int = 0,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str = "bfloat16",
        enable_sleep_mode: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self.vllm = vllm
        self.pad_token_id = pad_token_id
        self.enable_sleep_mode = enable_sleep_mode
        self.llm = vllm.LLM(
            model=model_name_or_path,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            dtype=dtype,
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode="processed_logprobs",
            **llm_kwargs,
        )

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        policy_version: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        params = self.vllm.SamplingParams(
            **vllm_sampling_kwargs(group_size=group_size, max_new_tokens=max_new_tokens, temperature=temperature)
        )
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return rollout_batch_from_vllm(
            outputs,
            policy_version=policy_version,
            pad_token_id=self.pad_token_id,
            group_ids=[group_offset + i for i in range(len(outputs))],
        )

    def update_weights(self, model: nn.Module) -> None:
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        else:  # older releases: reach the single in-process worker's model
            self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.model.load_weights(weights)
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.enable_sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.enable_sleep_mode:
            self.llm.wake_up()
