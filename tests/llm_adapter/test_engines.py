import importlib.util
from typing import Any

import pytest
import torch as th

from llm_adapter.engines import TransformersEngine, VLLMEngine, vllm_sampling_kwargs
from llm_adapter.logprobs import chunked_token_log_probs, completion_hidden_states


def _recomputed(model: Any, batch: Any, temperature: float) -> th.Tensor:
    """The completion tokens' log-probs as the trainer computes them, written out from the model's hidden states."""
    input_ids, attention_mask, position_ids = batch.model_inputs()
    with th.no_grad():
        hidden = completion_hidden_states(model, input_ids, attention_mask, position_ids)
        width = batch.prompt_ids.shape[1]
        return chunked_token_log_probs(
            hidden[:, width - 1 : -1],
            model.get_output_embeddings(),
            batch.completion_ids,
            mask=batch.completion_mask,
            temperature=temperature,
        )


def test_transformers_engine_log_probs_match_the_trainer(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """The engine's reported log-probs are log_softmax(logits / T) of the sampled tokens: what the trainer recomputes."""
    th.manual_seed(0)
    engine = TransformersEngine(tiny_model, tiny_tokenizer)
    prompts = [tiny_tokenizer("digit 3")["input_ids"], tiny_tokenizer("go")["input_ids"]]
    batch = engine.generate(prompts, group_size=3, max_new_tokens=6, temperature=0.7, policy_version=5, group_offset=10)
    assert len(batch) == 6 and batch.group_ids.tolist() == [10, 10, 10, 11, 11, 11]
    assert batch.policy_version.tolist() == [5] * 6
    lengths = batch.completion_lengths.tolist()
    for row, tokens in enumerate(batch.completion_token_lists()):
        ends_with_eos = len(tokens) > 0 and tokens[-1] == tiny_tokenizer.eos_token_id
        assert batch.truncated[row].item() == (not ends_with_eos)
        assert ends_with_eos or lengths[row] == 6
        assert tiny_tokenizer.eos_token_id not in tokens[:-1]
    th.testing.assert_close(_recomputed(tiny_model, batch, 0.7), batch.behavior_log_probs, rtol=0, atol=1e-4)
    tiny_model.train()
    engine.generate(prompts, group_size=1, max_new_tokens=2, temperature=1.0, policy_version=0)
    assert tiny_model.training


def test_engine_ignores_the_models_sampling_defaults(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """A generation_config with top_k=1 would make sampling greedy; training sampling must stay pure temperature."""
    tiny_model.generation_config.top_k = 1
    tiny_model.generation_config.do_sample = False
    th.manual_seed(1)
    batch = TransformersEngine(tiny_model, tiny_tokenizer).generate(
        [tiny_tokenizer("ab")["input_ids"]], group_size=16, max_new_tokens=3, temperature=1.0, policy_version=0
    )
    assert len({tuple(t) for t in batch.completion_token_lists()}) > 1


def test_the_models_generation_config_never_reaches_sampling(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """
    An instruct model's generation_config (repetition_penalty, top_k, top_p, temperature, no_repeat_ngram_size) must
    not leak into training sampling: generate() fills whatever it is not given from it.
    """
    defaults = tiny_model.generation_config
    defaults.repetition_penalty, defaults.no_repeat_ngram_size = 100.0, 1
    defaults.top_k, defaults.top_p, defaults.temperature, defaults.do_sample = 2, 0.05, 0.05, True
    th.manual_seed(2)
    engine = TransformersEngine(tiny_model, tiny_tokenizer)
    batch = engine.generate(
        [tiny_tokenizer("ab")["input_ids"]], group_size=16, max_new_tokens=10, temperature=1.0, policy_version=0
    )
    completions = batch.completion_token_lists()
    # Under no_repeat_ngram_size=1 (or the penalty) no token would repeat within a completion; pure sampling of
    # 10 tokens from this small vocabulary repeats some, and top_k=2 / top_p would leave a handful of distinct ones.
    assert any(len(set(tokens)) < len(tokens) for tokens in completions)
    assert len({token for tokens in completions for token in tokens}) > 4
    assert tiny_model.generation_config is defaults and defaults.repetition_penalty == 100.0  # restored
    # The reported log-probs are the trainer's recomputation of the same tokens (fp32 tolerance).
    th.testing.assert_close(_recomputed(tiny_model, batch, 1.0), batch.behavior_log_probs, rtol=0, atol=1e-5)


def test_generation_runs_in_the_trainers_precision(tiny_model: Any, tiny_tokenizer: Any) -> None:
    entered = []

    def precision():
        entered.append(True)
        return th.autocast("cpu", dtype=th.bfloat16)

    engine = TransformersEngine(tiny_model, tiny_tokenizer, precision=precision)
    batch = engine.generate(
        [tiny_tokenizer("go")["input_ids"]], group_size=2, max_new_tokens=3, temperature=1.0, policy_version=0
    )
    assert len(entered) == 2  # generation, then scoring
    assert batch.behavior_log_probs.dtype == th.float32 and th.isfinite(batch.behavior_log_probs).all()


def test_vllm_sampling_settings() -> None:
    kwargs = vllm_sampling_kwargs(group_size=8, max_new_tokens=128, temperature=1.0)
    assert kwargs["n"] == 8 and kwargs["top_p"] == 1.0 and kwargs["top_k"] == -1 and kwargs["logprobs"] == 0
    assert kwargs["max_tokens"] == 128


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_engine_names_the_extra_when_vllm_is_missing() -> None:
    with pytest.raises(ImportError, match=r"pip install 'sb3-r2vpo\[vllm\]'"):
        VLLMEngine("some/model", pad_token_id=0)


def test_importing_the_adapter_does_not_import_vllm_or_trl() -> None:
    import subprocess
    import sys

    code = (
        "import sys, llm_adapter, llm_adapter.engines, llm_adapter.trainer; "
        "assert not {'vllm', 'trl'} & set(sys.modules), sorted({'vllm', 'trl'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(importlib.util.find_spec("verl") is not None, reason="verl is installed")
def test_the_verl_adapter_without_verl_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install 'sb3-r2vpo\[verl\]'"):
        importlib.import_module("llm_adapter.verl")
