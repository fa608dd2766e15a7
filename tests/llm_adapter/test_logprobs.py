from typing import Any

import pytest
import torch as th
from torch import nn

from llm_adapter.logprobs import chunked_token_log_probs, completion_hidden_states, naive_token_log_probs


def _inputs(vocab: int = 97, hidden: int = 16, shape: tuple[int, int] = (3, 11), bias: bool = False, seed: int = 0):
    gen = th.Generator().manual_seed(seed)
    hidden_states = th.randn(*shape, hidden, generator=gen, requires_grad=True)
    head = nn.Linear(hidden, vocab, bias=bias)
    with th.no_grad():
        head.weight.copy_(th.randn(vocab, hidden, generator=gen))
        if bias:
            head.bias.copy_(th.randn(vocab, generator=gen))
    targets = th.randint(vocab, shape, generator=gen)
    return hidden_states, head, targets


def _value_and_grads(fn: Any, hidden_states: th.Tensor, head: nn.Linear, targets: th.Tensor, **kwargs: Any):
    upstream = th.linspace(-1.0, 2.0, targets.numel()).reshape(targets.shape)
    values = fn(hidden_states, head, targets, **kwargs)
    grads = th.autograd.grad((values * upstream).sum(), [hidden_states, *head.parameters()])
    return values.detach(), grads


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 33, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_naive_in_value_and_gradient(chunk_size: int, temperature: float, bias: bool) -> None:
    hidden_states, head, targets = _inputs(bias=bias)
    naive, naive_grads = _value_and_grads(naive_token_log_probs, hidden_states, head, targets, temperature=temperature)
    chunked, chunked_grads = _value_and_grads(
        chunked_token_log_probs, hidden_states, head, targets, temperature=temperature, chunk_size=chunk_size
    )
    assert chunked.dtype == th.float32
    th.testing.assert_close(chunked, naive, rtol=0, atol=1e-5)
    for mine, reference in zip(chunked_grads, naive_grads, strict=True):
        th.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_mask_computes_only_valid_positions() -> None:
    hidden_states, head, targets = _inputs()
    mask = th.rand(targets.shape, generator=th.Generator().manual_seed(3)) > 0.4
    chunked = chunked_token_log_probs(hidden_states, head, targets, mask=mask, chunk_size=5)
    naive = naive_token_log_probs(hidden_states, head, targets)
    th.testing.assert_close(chunked[mask], naive[mask], rtol=0, atol=1e-5)
    assert (chunked[~mask] == 0).all()
    (grad,) = th.autograd.grad(chunked.sum(), hidden_states)
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_on_a_real_tiny_model(tiny_model: Any) -> None:
    """Hidden states of the decoder + lm_head give the model's own logits' log-softmax."""
    input_ids = th.randint(5, tiny_model.config.vocab_size, (2, 9))
    attention_mask = th.ones_like(input_ids)
    position_ids = th.arange(9).expand(2, 9)
    hidden = completion_hidden_states(tiny_model, input_ids, attention_mask, position_ids)
    logits = tiny_model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = input_ids[:, 1:]
    expected = th.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    actual = chunked_token_log_probs(hidden[:, :-1], tiny_model.get_output_embeddings(), targets, chunk_size=4)
    th.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_bad_arguments() -> None:
    hidden_states, head, targets = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        chunked_token_log_probs(hidden_states, head, targets, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_log_probs(hidden_states, head, targets, chunk_size=0)
    with pytest.raises(ValueError, match="do not match"):
        chunked_token_log_probs(hidden_states, head, targets[:, :-1])


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_close_to_float32() -> None:
    hidden_states, head, targets = _inputs(vocab=4096, hidden=64, shape=(4, 64))
    reference = naive_token_log_probs(hidden_states.double(), head.double(), targets).float()
    head = head.cuda().bfloat16()
    hidden = hidden_states.detach().cuda().bfloat16().requires_grad_(True)
    values = chunked_token_log_probs(hidden, head, targets.cuda(), chunk_size=64)
    values.sum().backward()
    assert values.dtype == th.float32 and hidden.grad is not None and hidden.grad.dtype == th.bfloat16
    th.testing.assert_close(values.cpu(), reference, rtol=0, atol=0.1)


@pytest.mark.parametrize("objective_name", ["r2vpo", "r2vpo_per_token_lam", "clip", "gppo", "topr", "spo"])
@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_fused_objective_equals_naive_path(objective_name: str, mode: str) -> None:
    """
    Fused log-probs + objective + aggregation == naive log-probs, then the core objective and aggregate_loss; a
    ``[B, T]`` coefficient (one ``lam`` per completion here) is applied token by token, across chunk boundaries.
    """
    from llm_adapter.logprobs import fused_objective_loss
    from sb3_r2vpo.core import aggregate_loss, aggregation_weights, get_objective

    hidden_states, head, targets = _inputs(bias=True)
    gen = th.Generator().manual_seed(5)
    mask = th.rand(targets.shape, generator=gen) > 0.25
    with th.no_grad():
        behavior = naive_token_log_probs(hidden_states, head, targets, temperature=0.8) + 0.3 * th.randn(
            targets.shape, generator=gen
        )
    advantages = th.randn(targets.shape[0], 1, generator=gen).expand(targets.shape)
    objective = get_objective(objective_name.removesuffix("_per_token_lam"))
    coefficients: dict[str, Any] = {"var_coef": 0.7} if objective_name == "r2vpo" else {}
    if objective_name == "r2vpo_per_token_lam":
        coefficients = {"var_coef": th.linspace(0.3, 1.1, targets.shape[0])[:, None].expand(targets.shape)}
    params = [hidden_states, *head.parameters()]

    naive_log_probs = naive_token_log_probs(hidden_states, head, targets, temperature=0.8)
    per_token, naive_stats = objective(naive_log_probs, behavior, advantages, mask=mask, **coefficients)
    naive_loss = aggregate_loss(per_token, mode=mode, mask=mask, normalizer=11.0)
    naive_grads = th.autograd.grad(naive_loss, params)

    weights = aggregation_weights(mask, mode=mode, normalizer=11.0)
    fused = fused_objective_loss(
        hidden_states,
        head,
        targets,
        behavior,
        advantages,
        mask=mask,
        token_weights=weights,
        objective=objective,
        coefficients=coefficients,
        temperature=0.8,
        chunk_size=5,
    )
    fused_grads = th.autograd.grad(fused.loss * 2.0, params)  # the upstream gradient scales the stored one
    th.testing.assert_close(fused.loss, naive_loss.detach(), rtol=1e-5, atol=1e-6)
    th.testing.assert_close(fused.log_probs[mask], naive_log_probs.detach()[mask], rtol=0, atol=1e-5)
    assert (fused.log_probs[~mask] == 0).all()
    # Per-token lam up to 1.1 gives larger gradients: both float32 paths stay within 1e-5 of a float64 reference.
    atol = 1e-5 if objective_name == "r2vpo_per_token_lam" else 1e-6
    for mine, reference in zip(fused_grads, naive_grads, strict=True):
        th.testing.assert_close(mine, 2.0 * reference, rtol=1e-5, atol=atol)
    assert float(fused.stats.count) == float(naive_stats.count)
    th.testing.assert_close(fused.stats.sums, naive_stats.sums, rtol=1e-5, atol=1e-6)


def test_fused_objective_refuses_a_coefficient_of_another_shape() -> None:
    from llm_adapter.logprobs import fused_objective_loss
    from sb3_r2vpo.core import get_objective

    hidden_states, head, targets = _inputs(bias=True)
    mask = th.ones(targets.shape, dtype=th.bool)
    with pytest.raises(ValueError, match=r"coefficient 'var_coef' has shape \(3,\)"):
        fused_objective_loss(
            hidden_states, head, targets, th.zeros(targets.shape), th.ones(targets.shape), mask=mask,
            token_weights=th.ones(targets.shape), objective=get_objective("r2vpo"),
            coefficients={"var_coef": th.ones(3)},
        )  # fmt: skip


def test_chunked_backward_under_autocast_with_float32_weights() -> None:
    """bf16 autocast over float32 master weights (the trainer on GPU): the backward recomputes in the forward's dtype."""
    th.manual_seed(0)
    head = th.nn.Linear(16, 50, bias=False)
    targets = th.randint(0, 50, (3, 5))
    hidden_source = th.randn(3, 5, 8, requires_grad=True)
    projection = th.nn.Linear(8, 16)

    def run(fn) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        head.zero_grad()
        hidden_source.grad = None
        with th.autocast("cpu", dtype=th.bfloat16):
            hidden = projection(hidden_source)  # bf16 hidden states, as an autocast decoder gives
            log_probs = fn(hidden, head, targets)
        assert hidden.dtype == th.bfloat16 and head.weight.dtype == th.float32
        (log_probs * th.linspace(-1, 1, log_probs.numel()).reshape(log_probs.shape)).sum().backward()
        return log_probs.detach(), head.weight.grad.clone(), hidden_source.grad.clone()

    chunked = run(lambda h, w, t: chunked_token_log_probs(h, w, t, chunk_size=4))
    naive = run(naive_token_log_probs)
    for ours, reference in zip(chunked, naive, strict=True):
        th.testing.assert_close(ours, reference, rtol=2e-2, atol=2e-2)
