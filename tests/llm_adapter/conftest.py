from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model and a character-level tokenizer, built here and saved with save_pretrained."""
    from llm_adapter.toy import build_char_tokenizer, build_tiny_qwen2

    directory = tmp_path_factory.mktemp("tiny_qwen2")
    tokenizer = build_char_tokenizer()
    build_tiny_qwen2(len(tokenizer), seed=0).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def toy_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm_adapter.toy import write_toy_prompts

    return write_toy_prompts(tmp_path_factory.mktemp("toy_data") / "prompts.jsonl", n_prompts=40)
