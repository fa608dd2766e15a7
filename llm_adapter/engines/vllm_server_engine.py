"""
A separate vLLM server as the rollout engine, through TRL's ``VLLMClient`` (HTTP for generation, NCCL for weights).

Generation and training then run on different GPUs, the decoupled actor/learner layout the paper describes for
R2VPO-OFF. TRL is imported only when the engine is built.
"""

import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch as th
from torch import nn

from llm_adapter.engines.base import RolloutEngine
from llm_adapter.engines.weights import engine_weights
from llm_adapter.rollouts import RolloutBatch

#: How to start a server this engine can drive (TRL's client docs): development endpoints for the weight sync, the
#: NCCL weight-transfer engine, and log-probs of the distribution actually sampled from.
SERVER_COMMAND = (
    'VLLM_SERVER_DEV_MODE=1 vllm serve <model> --weight-transfer-config \'{"backend": "nccl"}\' '
    "--logprobs-mode processed_logprobs"
)


def make_vllm_client(*, base_url: str | None, host: str, server_port: int, group_port: int, timeout: float) -> Any:
    """
    TRL's ``VLLMClient`` connected to a running server (it waits up to ``timeout`` seconds for it).

    :param base_url: the server's URL (takes precedence over ``host``/``server_port``)
    :param host: the server's host
    :param server_port: its HTTP port
    :param group_port: the port of the weight-update group
    :param timeout: seconds to wait for the server
    :return: the client
    """
    try:
        module = importlib.import_module("trl.generation.vllm_client")
    except ImportError as error:
        raise ImportError(
            "engine='vllm_server' talks to the server through TRL's VLLMClient: pip install 'sb3-r2vpo[trl,vllm]'"
        ) from error
    try:
        return module.VLLMClient(
            base_url=base_url, host=host, server_port=server_port, group_port=group_port, connection_timeout=timeout
        )
    except OSError as error:  # requests' ConnectionError is one
        where = base_url or f"http://{host}:{server_port}"
        raise ConnectionError(
            f"engine='vllm_server': no vLLM server answered at {where} within vllm_server_timeout={timeout} s "
            f"(vllm_server_base_url, or vllm_server_host and vllm_server_port); start one with: {SERVER_COMMAND}"
        ) from error


def _sampled_log_probs(
    tokens: Sequence[int], logprobs: Sequence[Sequence[float]], logprob_ids: Sequence[Sequence[int]], *, row: int
) -> list[float]:
    """The log-prob of each sampled token, looked up by id among the entries the server returned for its position."""
    if len(logprobs) != len(tokens) or len(logprob_ids) != len(tokens):
        raise ValueError(f"Completion {row}: {len(logprobs)} logprob entries for {len(tokens)} generated tokens")
    values = []
    for position, token in enumerate(tokens):
        try:
            value = logprobs[position][list(logprob_ids[position]).index(token)]
        except ValueError:
            raise ValueError(
                f"Completion {row}: sampled token {token} missing from the logprobs of position {position}"
            ) from None
        if value is None:
            raise ValueError(f"Completion {row}: the server returned NaN as the log-prob of position {position}")
        values.append(float(value))
    return values


class VLLMServerEngine(RolloutEngine):
    """
    Rollouts from a vLLM server started apart from the trainer (:data:`SERVER_COMMAND`), through TRL's
    ``VLLMClient``: completions and their log-probs over HTTP (pure temperature sampling, one log-prob per sampled
    token), and after every update the trainer's weights broadcast over NCCL (the client's weight-update group,
    opened at the first update), then the server's prefix cache reset.

    The server must sample what the trainer scores: start it with ``--logprobs-mode processed_logprobs`` (log-probs
    after temperature) and without a model-specific repetition penalty. ``behavior_log_probs="recompute"`` in the
    trainer replaces the server's log-probs by the trainer's before the first update (vLLM's kernels differ from the
    trainer's by ~1e-3-1e-2 per token).

    :param pad_token_id: the tokenizer's padding id
    :param eos_token_ids: ids that end a completion (a completion without one at its end that reaches
        ``max_new_tokens`` is marked truncated)
    :param weights_dtype: dtype the weights are sent in (the server's dtype)
    :param client: a connected ``VLLMClient`` (default: built by :func:`make_vllm_client` from ``client_kwargs``)
    :param client_kwargs: keyword arguments of :func:`make_vllm_client`
    """

    def __init__(
        self,
        *,
        pad_token_id: int,
        eos_token_ids: Sequence[int],
        weights_dtype: th.dtype = th.bfloat16,
        client: Any = None,
        **client_kwargs: Any,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("eos_token_ids is empty: the engine could not tell finished completions from truncated ones")
        self.pad_token_id = pad_token_id
        self.eos_token_ids = set(eos_token_ids)
        self.weights_dtype = weights_dtype
        self.client = client if client is not None else make_vllm_client(**client_kwargs)
        self._communicator_open = False

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
        output = self.client.generate(
            prompts=[list(ids) for ids in prompt_ids],
            n=group_size,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            max_tokens=max_new_tokens,
            logprobs=0,
        )
        completions = [list(tokens) for tokens in output["completion_ids"]]
        expected = len(prompt_ids) * group_size
        if len(completions) != expected:
            raise ValueError(f"The vLLM server returned {len(completions)} completions for {expected} requested")
        if output.get("logprobs") is None:
            raise ValueError("The vLLM server returned no logprobs: the engine asks for logprobs=0 on every request")
        log_probs = [
            _sampled_log_probs(tokens, output["logprobs"][row], output["logprob_token_ids"][row], row=row)
            for row, tokens in enumerate(completions)
        ]
        return RolloutBatch.from_sequences(
            [list(prompt_ids[row // group_size]) for row in range(expected)],
            completions,
            log_probs,
            group_ids=[group_offset + row // group_size for row in range(expected)],
            truncated=[
                not (tokens and tokens[-1] in self.eos_token_ids) and len(tokens) >= max_new_tokens for tokens in completions
            ],
            policy_version=policy_version,
            pad_token_id=self.pad_token_id,
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
        output = self.client.generate(
            prompts=[list(ids) for ids in prompt_ids],
            n=num_samples,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_new_tokens,
            logprobs=None,
        )
        return [list(tokens) for tokens in output["completion_ids"]]

    def update_weights(self, model: nn.Module) -> None:
        if not self._communicator_open:
            self.client.init_communicator(device=next(model.parameters()).device)
            self._communicator_open = True
        with th.no_grad(), engine_weights(model) as weights:
            named = list(weights)
            metadata = [(name, str(self.weights_dtype).removeprefix("torch."), list(tensor.shape)) for name, tensor in named]

            def cast(pairs: list[tuple[str, th.Tensor]]) -> Iterator[tuple[str, th.Tensor]]:
                for name, tensor in pairs:  # one tensor at a time in the sent dtype
                    yield name, tensor.to(self.weights_dtype)

            with self.client.weight_update():
                self.client.update_named_params(metadata, cast(named))
        self.client.reset_prefix_cache()
