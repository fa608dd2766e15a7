"""In-process vLLM (``vllm.LLM``) as the rollout engine. vLLM is imported here only, when the engine is built."""

import importlib
import os
import socket
from collections.abc import Sequence
from typing import Any

import torch as th
from torch import nn

from llm_adapter.engines.base import RolloutEngine
from llm_adapter.engines.weights import engine_weights
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


def _set_single_process_launch_env() -> None:
    """The torch.distributed variables vLLM's ``external_launcher`` backend reads, for one process (kept if set)."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)


class VLLMEngine(RolloutEngine):
    """
    vLLM (``vllm.LLM``) in the trainer's own process, with ``logprobs_mode="processed_logprobs"``: the reported
    log-probs are those of the distribution actually sampled from (after temperature), which is what the trainer
    recomputes.

    The engine runs with vLLM's ``external_launcher`` executor, as TRL's colocate mode does: no engine-core process,
    so :meth:`update_weights` hands the trainer's parameters to the engine's model one tensor at a time, cast to the
    engine's dtype (no closure or full state dict goes through vLLM's serializer), then resets the prefix cache
    (cached KV blocks were computed with the old weights).

    With ``enable_sleep_mode=True`` the trainer's :meth:`sleep` after each generation releases the engine's GPU memory
    (level 1: the weights move to CPU memory, the KV cache is dropped). :meth:`update_weights` then wakes the weights
    before loading the new ones into them, and :meth:`wake_up` before the next generation wakes only what is still
    asleep (the KV cache), so the engine never generates with the weights of its CPU backup once an update was loaded.

    Sampler/trainer mismatch: vLLM's kernels (bf16, other reduction orders) give log-probs that differ from the
    trainer's by ~1e-3-1e-2 per token, so fresh data has ``r != 1`` exactly. ``behavior_log_probs="recompute"`` in
    the trainer replaces them with the trainer's own log-probs before the first update.

    :param model_name_or_path: local model directory (or hub id where the hub is reachable)
    :param pad_token_id: the tokenizer's padding id
    :param seed: engine seed
    :param gpu_memory_utilization: fraction of GPU memory vLLM may take
    :param tensor_parallel_size: tensor parallel degree; 1 (the engine shares the trainer's single process: for
        several GPUs use ``llm_adapter.trl`` or ``llm_adapter.verl``)
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
        if tensor_parallel_size != 1:
            raise ValueError(
                f"tensor_parallel_size={tensor_parallel_size}: the in-process vLLM engine runs in the trainer's single "
                "process (1 only); for tensor-parallel generation use llm_adapter.trl (vLLM server or colocate on "
                "several GPUs) or llm_adapter.verl"
            )
        if not hasattr(th, dtype) or not isinstance(getattr(th, dtype), th.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype name (e.g. 'bfloat16', 'float16', 'float32')")
        vllm = _import_vllm()
        self.vllm = vllm
        self.pad_token_id = pad_token_id
        self.enable_sleep_mode = enable_sleep_mode
        self.weights_dtype: th.dtype = getattr(th, dtype)
        self._asleep: set[str] = set()  # of "weights", "kv_cache"
        _set_single_process_launch_env()
        self.llm = vllm.LLM(
            model=model_name_or_path,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=1,
            max_model_len=max_model_len,
            dtype=dtype,
            enable_sleep_mode=enable_sleep_mode,
            distributed_executor_backend="external_launcher",
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
        if self._asleep:
            raise RuntimeError(f"VLLMEngine.generate() while {sorted(self._asleep)} are asleep: call wake_up() first")
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

    def sample_completions(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[list[int]]:
        if self._asleep:
            raise RuntimeError(f"VLLMEngine.sample_completions() while {sorted(self._asleep)} are asleep: wake_up() first")
        params = self.vllm.SamplingParams(
            n=num_samples, temperature=temperature, top_p=top_p, top_k=top_k or -1, max_tokens=max_new_tokens
        )
        outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
        return [list(sample.token_ids) for output in outputs for sample in output.outputs]

    def _engine_model(self) -> Any:
        """The model inside vLLM's in-process worker (its attribute path moved between releases)."""
        worker = self.llm.llm_engine.model_executor.driver_worker
        for runner_owner in (worker, getattr(worker, "worker", None)):
            runner = getattr(runner_owner, "model_runner", None)
            if runner is not None and hasattr(runner, "model"):
                return runner.model
        raise RuntimeError(
            "Cannot reach the model of vLLM's in-process worker (llm_engine.model_executor.driver_worker"
            "[.worker].model_runner.model): this vLLM release is not supported by VLLMEngine.update_weights"
        )

    def update_weights(self, model: nn.Module) -> None:
        if "weights" in self._asleep:
            # Load into mapped memory: a sleeping engine's weights are unmapped (level 1 keeps a CPU copy of the old
            # ones, which a later full wake-up would restore over the new weights).
            self.llm.wake_up(tags=["weights"])
            self._asleep.discard("weights")
        engine_model = self._engine_model()
        with th.no_grad(), engine_weights(model) as weights:
            for name, tensor in weights:
                engine_model.load_weights([(name, tensor.to(self.weights_dtype))])
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def wake_up(self) -> None:
        if not self._asleep:
            return
        if self._asleep == {"kv_cache"}:
            self.llm.wake_up(tags=["kv_cache"])
        else:
            self.llm.wake_up()
        self._asleep = set()
