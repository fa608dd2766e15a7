"""
VLLMEngine's calls into vLLM, against a recording stand-in of vLLM's API (vLLM needs a CUDA GPU): the in-process
engine, tensor-by-tensor weight loading in the engine's dtype, and the sleep-mode order (wake the weights, load,
reset the prefix cache, wake the KV cache, generate) driven by the real trainer.
"""

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch as th

from llm_adapter.config import TrainConfig
from llm_adapter.trainer import R2VPOLLMTrainer
from tests.llm_adapter.test_rollouts import LookalikeCompletionOutput, LookalikeLogprob, LookalikeRequestOutput
from tests.llm_adapter.test_trainer import _config as trainer_config


class RecordingModel:
    """The model inside vLLM's worker: ``load_weights`` writes into weights that must be mapped (awake)."""

    def __init__(self, engine: "RecordingLLM") -> None:
        self.engine = engine

    def load_weights(self, weights: list[tuple[str, th.Tensor]]) -> set[str]:
        assert "weights" not in self.engine.asleep, "load_weights() into unmapped (sleeping) weights"
        for name, tensor in weights:
            self.engine.calls.append(("load_weights", name, tensor.dtype))
            self.engine.weights[name] = tensor.clone()
        return {name for name, _ in weights}


class RecordingLLM:
    """``vllm.LLM``'s surface that VLLMEngine uses, with level-1 sleep semantics (weights backed up to CPU)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[Any, ...]] = []
        self.weights: dict[str, th.Tensor] = {}
        self.backup: dict[str, th.Tensor] = {}
        self.asleep: set[str] = set()
        self.weights_at_generation: list[dict[str, th.Tensor]] = []
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=RecordingModel(self)))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        RECORDED.append(self)

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        self.backup = {name: tensor.clone() for name, tensor in self.weights.items()}
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", tuple(tags) if tags else None))
        woken = set(tags) if tags else {"weights", "kv_cache"}
        if "weights" in woken and "weights" in self.asleep:
            self.weights = {name: tensor.clone() for name, tensor in self.backup.items()}  # level 1 restores the backup
        self.asleep -= woken

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True

    def generate(self, requests: list[dict], params: "RecordingSamplingParams", use_tqdm: bool = False) -> list:
        assert not self.asleep, f"generate() with {self.asleep} asleep"
        self.calls.append(("generate", len(requests)))
        self.weights_at_generation.append({name: tensor.clone() for name, tensor in self.weights.items()})
        outputs = []
        for index, request in enumerate(requests):
            completions = [
                LookalikeCompletionOutput(
                    index=sample,
                    text="",
                    token_ids=[5, 6, 7],
                    cumulative_logprob=None,
                    logprobs=[{token: LookalikeLogprob(-1.0)} for token in (5, 6, 7)],
                    finish_reason="length",
                )
                for sample in range(params.kwargs["n"])
            ]
            outputs.append(LookalikeRequestOutput(str(index), list(request["prompt_token_ids"]), completions))
        return outputs


class RecordingSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


RECORDED: list[RecordingLLM] = []


@pytest.fixture
def recording_vllm(monkeypatch: pytest.MonkeyPatch) -> list[RecordingLLM]:
    module = types.ModuleType("vllm")
    module.LLM = RecordingLLM  # type: ignore[attr-defined]
    module.SamplingParams = RecordingSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    RECORDED.clear()
    return RECORDED


def _config(tiny_model_dir: Path, toy_prompts: Path, output_dir: Path, **overrides: Any) -> TrainConfig:
    small = {"max_completion_length": 3, "prompts_per_iteration": 2, "group_size": 2, "micro_batch_size": 2}
    return trainer_config(
        tiny_model_dir, toy_prompts, output_dir, engine="vllm", gradient_accumulation_steps=1, learning_rate=1e-2,
        **{**small, **overrides},
    )  # fmt: skip


@pytest.mark.parametrize("sleep_mode", [False, True], ids=["awake", "sleep_mode"])
def test_the_engine_generates_with_the_weights_of_the_last_update(
    recording_vllm: list[RecordingLLM], tiny_model_dir: Path, toy_prompts: Path, tmp_path: Path, sleep_mode: bool
) -> None:
    trainer = R2VPOLLMTrainer(_config(tiny_model_dir, toy_prompts, tmp_path / "run", vllm_enable_sleep_mode=sleep_mode))
    trainer.train()
    (llm,) = recording_vllm
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"  # in-process: no serialized closures
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["enable_sleep_mode"] == sleep_mode

    # The second generation sees the weights after the first update, in the engine's dtype.
    assert len(llm.weights_at_generation) == 2
    second = llm.weights_at_generation[1]
    assert set(second) == {name for name, _ in trainer.model.named_parameters()}
    # (the trainer stepped again after the second generation: compare with what it loaded then)
    loads = [call for call in llm.calls if call[0] == "load_weights"]
    assert all(dtype == th.bfloat16 for _, _, dtype in loads)
    assert len(loads) == 2 * len(second)  # one tensor per call, after each of the two updates
    assert not all(th.equal(second[name], llm.weights[name]) for name in second)  # the second update changed them
    final = {name: parameter.detach().to(th.bfloat16) for name, parameter in trainer.model.named_parameters()}
    assert all(th.equal(llm.weights[name], final[name]) for name in final)

    order = [call[0] if call[0] != "wake_up" else f"wake_up{call[1]}" for call in llm.calls if call[0] != "load_weights"]
    if sleep_mode:
        # generate, sleep; train; wake the weights, load (omitted), reset the prefix cache; wake the KV cache; generate
        assert order[:6] == [
            "generate",
            "sleep",
            "wake_up('weights',)",
            "reset_prefix_cache",
            "wake_up('kv_cache',)",
            "generate",
        ]
    else:
        assert order[:3] == ["generate", "reset_prefix_cache", "generate"]


def test_generating_while_asleep_is_refused(recording_vllm: list[RecordingLLM]) -> None:
    from llm_adapter.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine("model", pad_token_id=0, enable_sleep_mode=True)
    engine.sleep()
    with pytest.raises(RuntimeError, match=r"asleep: call wake_up\(\) first"):
        engine.generate([[1, 2]], group_size=1, max_new_tokens=3, temperature=1.0, policy_version=0)
    engine.wake_up()  # without an update in between, the full wake-up restores the weights' CPU backup
    assert recording_vllm[0].calls[-1] == ("wake_up", None)
    engine.generate([[1, 2]], group_size=1, max_new_tokens=3, temperature=1.0, policy_version=0)


def test_tensor_parallel_in_process_is_refused_before_any_work(recording_vllm: list[RecordingLLM], tmp_path) -> None:
    from llm_adapter.engines.vllm_engine import VLLMEngine

    with pytest.raises(ValueError, match=r"tensor_parallel_size=2: .*llm_adapter\.trl"):
        VLLMEngine("model", pad_token_id=0, tensor_parallel_size=2)
    assert recording_vllm == []
    with pytest.raises(ValueError, match="vllm_tensor_parallel_size=2"):
        TrainConfig(
            model_name_or_path="m", train_file="f", output_dir=str(tmp_path), engine="vllm", vllm_tensor_parallel_size=2
        )
