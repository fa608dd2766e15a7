"""
VLLMServerEngine (a separate vLLM server through TRL's VLLMClient). vLLM needs a CUDA GPU, so the server is a
stand-in: (1) a recording client with VLLMClient's surface, driven by the real trainer, checks the update order
(weight-update group opened once; every weight sent in the server's dtype under the base model's names, inside one
weight update; prefix cache reset; next generation); (2) TRL's real VLLMClient against a local HTTP server that
answers like vLLM's OpenAI endpoints checks the requests the engine makes and how the answer becomes a RolloutBatch.
"""

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch as th

from llm_adapter.engines.vllm_server_engine import VLLMServerEngine, make_vllm_client
from llm_adapter.trainer import R2VPOLLMTrainer
from tests.llm_adapter.test_trainer import _config

EOS = 2


def _answer(prompt: list[int], sample: int, max_tokens: int) -> tuple[list[int], list[float]]:
    """A deterministic completion: even samples end with EOS, odd ones run to max_tokens."""
    tokens = [5 + (sample + i) % 3 for i in range(max_tokens)]
    if sample % 2 == 0:
        tokens = [*tokens[:2], EOS]
    return tokens, [-0.5 - 0.1 * i for i in range(len(tokens))]


class RecordingClient:
    """``trl.generation.vllm_client.VLLMClient``'s surface that VLLMServerEngine uses."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.weights: dict[str, th.Tensor] = {}
        self.in_update = False

    def generate(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("generate", request))
        completions, logprobs, ids = [], [], []
        for prompt in request["prompts"]:
            for sample in range(request["n"]):
                tokens, values = _answer(prompt, sample, request["max_tokens"])
                completions.append(tokens)
                logprobs.append([[v] for v in values])
                ids.append([[t] for t in tokens])
        return {
            "prompt_ids": request["prompts"],
            "completion_ids": completions,
            "logprobs": logprobs,
            "logprob_token_ids": ids,
        }

    def init_communicator(self, device: Any) -> None:
        self.calls.append(("init_communicator", str(device)))

    @contextlib.contextmanager
    def weight_update(self) -> Iterator[None]:
        self.calls.append(("start_weight_update",))
        self.in_update = True
        yield
        self.in_update = False
        self.calls.append(("finish_weight_update",))

    def update_named_params(
        self, metadata: list[tuple[str, str, list[int]]], named_params: Iterator[tuple[str, th.Tensor]]
    ) -> None:
        assert self.in_update, "weights sent outside a weight update"
        received = list(named_params)
        assert [(name, list(t.shape)) for name, t in received] == [(name, shape) for name, _, shape in metadata]
        assert all(
            str(t.dtype).removeprefix("torch.") == dtype for (_, t), (_, dtype, _) in zip(received, metadata, strict=True)
        )
        self.calls.append(("update_named_params", [name for name, _, _ in metadata]))
        self.weights.update({name: tensor.clone() for name, tensor in received})

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache",))


def _server_config(tiny_model_dir: Path, toy_prompts: Path, output_dir: Path, **overrides: Any) -> Any:
    return _config(
        tiny_model_dir, toy_prompts, output_dir, engine="vllm_server", max_completion_length=4, prompts_per_iteration=2,
        group_size=2, micro_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2, **overrides,
    )  # fmt: skip


def test_the_server_gets_every_update_before_the_next_generation(
    tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    client = RecordingClient()
    config = _server_config(tiny_model_dir, toy_prompts, tmp_path)
    trainer = R2VPOLLMTrainer(config, engine=VLLMServerEngine(pad_token_id=0, eos_token_ids=[EOS], client=client))
    trainer.train()
    names = [call[0] for call in client.calls]
    update = ["start_weight_update", "update_named_params", "finish_weight_update", "reset_prefix_cache"]
    assert names == ["generate", "init_communicator", *update, "generate", *update]
    parameters = dict(trainer.model.named_parameters())
    assert client.calls[3][1] == list(parameters)
    assert all(t.dtype == th.bfloat16 for t in client.weights.values())
    for name, parameter in parameters.items():
        assert th.equal(client.weights[name], parameter.detach().to(th.bfloat16)), name

    request = client.calls[0][1]
    assert request["n"] == config.group_size and request["max_tokens"] == config.max_completion_length
    # pure temperature sampling, one log-prob per sampled token: what the trainer recomputes
    assert (request["temperature"], request["top_p"], request["top_k"], request["min_p"]) == (1.0, 1.0, 0, 0.0)
    assert request["repetition_penalty"] == 1.0 and request["logprobs"] == 0
    assert all(isinstance(token, int) for prompt in request["prompts"] for token in prompt)


def test_a_server_answer_becomes_a_rollout_batch() -> None:
    engine = VLLMServerEngine(pad_token_id=0, eos_token_ids=[EOS], client=RecordingClient())
    batch = engine.generate([[3, 4], [7]], group_size=2, max_new_tokens=4, temperature=0.7, policy_version=3, group_offset=10)
    assert batch.group_ids.tolist() == [10, 10, 11, 11]
    assert batch.truncated.tolist() == [False, True, False, True]  # EOS last, or max_new_tokens without one
    assert batch.completion_token_lists()[0] == [5, 6, EOS]
    assert batch.behavior_log_probs[1, :4].tolist() == pytest.approx([-0.5, -0.6, -0.7, -0.8])
    assert int(batch.policy_version[0]) == 3


def test_server_answers_that_cannot_be_trained_on_are_refused() -> None:
    class NoLogprobs(RecordingClient):
        def generate(self, **request: Any) -> dict[str, Any]:
            return {**super().generate(**request), "logprobs": None}

    class MissingToken(RecordingClient):
        def generate(self, **request: Any) -> dict[str, Any]:
            answer = super().generate(**request)
            answer["logprob_token_ids"][0][0] = [99]
            return answer

    with pytest.raises(ValueError, match="no logprobs"):
        VLLMServerEngine(pad_token_id=0, eos_token_ids=[EOS], client=NoLogprobs()).generate(
            [[3]], group_size=2, max_new_tokens=4, temperature=1.0, policy_version=0
        )
    with pytest.raises(ValueError, match="sampled token 5 missing"):
        VLLMServerEngine(pad_token_id=0, eos_token_ids=[EOS], client=MissingToken()).generate(
            [[3]], group_size=2, max_new_tokens=4, temperature=1.0, policy_version=0
        )
    with pytest.raises(ValueError, match="eos_token_ids"):
        VLLMServerEngine(pad_token_id=0, eos_token_ids=[], client=RecordingClient())


# ----- TRL's real client against a local stand-in of vLLM's HTTP endpoints ------------------------------------------


class _VLLMLikeHandler(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def _reply(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply({"data": [{"id": "tiny"}]} if self.path == "/v1/models" else {})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **request})
        choices = []
        for prompt in request["prompt"]:
            for sample in range(request["n"]):
                tokens, values = _answer(prompt, sample, request["max_tokens"])
                logprobs = None
                if request.get("logprobs") is not None:
                    names = [f"token_id:{t}" for t in tokens]
                    logprobs = {
                        "tokens": names,
                        "token_logprobs": values,
                        "top_logprobs": [{n: v} for n, v in zip(names, values, strict=True)],
                    }
                choices.append({"prompt_token_ids": prompt, "token_ids": tokens, "logprobs": logprobs})
        self._reply({"choices": choices})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vllm_like_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    client_module = pytest.importorskip("trl.generation.vllm_client")
    # TRL's client refuses to start without vLLM installed; what it sends does not depend on it.
    monkeypatch.setattr(client_module, "is_vllm_available", lambda *args, **kwargs: True)
    _VLLMLikeHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VLLMLikeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_trl_client_requests_and_the_trainer_generates_over_http(
    vllm_like_server: str, tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path
) -> None:
    config = _server_config(
        tiny_model_dir, toy_prompts, tmp_path, vllm_server_base_url=vllm_like_server, vllm_server_timeout=5.0
    )
    trainer = R2VPOLLMTrainer(config)
    assert isinstance(trainer.engine, VLLMServerEngine)
    batch, metrics = trainer.generate_and_score()
    (request,) = _VLLMLikeHandler.requests
    assert request["path"] == "/v1/completions" and request["model"] == "tiny"
    assert (request["n"], request["temperature"], request["top_p"], request["top_k"], request["logprobs"]) == (
        2,
        1.0,
        1.0,
        0,
        0,
    )
    assert request["repetition_penalty"] == 1.0 and request["max_tokens"] == 4
    assert request["return_token_ids"] is True  # token ids, not text: what is scored is what was sampled
    assert len(request["prompt"]) == 2 and all(isinstance(t, int) for t in request["prompt"][0])
    assert len(batch) == 4 and batch.truncated.tolist() == [False, True, False, True]
    assert batch.behavior_log_probs[0, :3].tolist() == pytest.approx([-0.5, -0.6, -0.7])
    assert "reward_mean" in metrics

    completions = trainer.engine.sample_completions(
        [[3, 4]], num_samples=3, max_new_tokens=4, temperature=0.6, top_p=0.95, top_k=20
    )
    evaluation = _VLLMLikeHandler.requests[-1]
    assert (evaluation["temperature"], evaluation["top_p"], evaluation["top_k"], evaluation["n"]) == (0.6, 0.95, 20, 3)
    assert evaluation["logprobs"] is None and len(completions) == 3


def test_an_unreachable_server_fails_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    client_module = pytest.importorskip("trl.generation.vllm_client")
    monkeypatch.setattr(client_module, "is_vllm_available", lambda *args, **kwargs: True)
    with pytest.raises(
        ConnectionError, match=re.escape("no vLLM server answered at http://127.0.0.1:9 within vllm_server_timeout=0.0")
    ):
        make_vllm_client(base_url="http://127.0.0.1:9", host="", server_port=0, group_port=51216, timeout=0.0)
