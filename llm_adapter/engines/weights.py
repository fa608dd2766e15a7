"""The trainer's weights as an inference engine loads them: the base model's names, LoRA adapters merged in."""

import contextlib
from collections.abc import Iterator

import torch as th
from torch import nn


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft`` model (checked without importing peft)."""
    return hasattr(model, "merge_adapter") and hasattr(model, "get_base_model")


def _base_parameter_name(name: str) -> str:
    """A parameter name of a peft-wrapped model with peft's parts removed: the name the base model has."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


@contextlib.contextmanager
def engine_weights(model: nn.Module) -> Iterator[Iterator[tuple[str, th.Tensor]]]:
    """
    ``(name, tensor)`` for every weight of the model an engine serves. For a ``peft`` model the adapters are merged
    into the base weights while the context is open (and unmerged after), the adapter tensors themselves are left
    out, and names are the base model's, as vLLM's ``load_weights`` and TRL's server expect.

    :param model: the trained model
    :return: a context whose value iterates over the weights (detached)
    """
    if not is_peft_model(model):
        yield ((name, parameter.detach()) for name, parameter in model.named_parameters())
        return
    with th.no_grad():
        model.merge_adapter()  # type: ignore[operator]
        try:
            yield (
                (_base_parameter_name(name), parameter.detach())
                for name, parameter in model.named_parameters()
                if "lora_" not in name and ".original_module." not in name
            )
        finally:
            model.unmerge_adapter()  # type: ignore[operator]
