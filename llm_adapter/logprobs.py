"""
Per-token log-probabilities of chosen tokens, computed in chunks from the last hidden states and ``lm_head``.

The naive path materializes ``[batch, time, vocab]`` logits (and their ``log_softmax`` and gradient): at Qwen's
vocabulary of 151,936 that is 0.6 GB per 1,024 tokens in float32, per copy. Here the logits of ``chunk_size`` rows
exist at a time, in the forward and again (recomputed) in the backward pass, and only the hidden states, the
chosen tokens and one log-sum-exp per row are kept for the backward pass.
"""

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch as th
from torch import nn

from sb3_r2vpo.core.stats import RatioStats

if TYPE_CHECKING:
    from llm_adapter.rollouts import RolloutBatch


def _chunk_logits(hidden: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, temperature: float) -> th.Tensor:
    # In place on the fresh product: one [chunk, V] buffer instead of three (none of these ops needs its output
    # for autograd, so the naive path may use it too).
    logits = hidden @ weight.T
    if bias is not None:
        logits += bias
    logits = logits.float()
    return logits.div_(temperature) if temperature != 1.0 else logits


def _grad_logits_(
    logits: th.Tensor, log_sum_exp: th.Tensor, targets: th.Tensor, grad: th.Tensor, temperature: float
) -> th.Tensor:
    # d(log_softmax(z)[y]) / dz = onehot(y) - softmax(z), times the incoming gradient, through z = x / T (in place).
    grad_logits = logits.sub_(log_sum_exp[:, None]).exp_().mul_(-grad[:, None])
    grad_logits.scatter_add_(1, targets[:, None], grad[:, None])
    return grad_logits.div_(temperature)


def _check_arguments(hidden_states: th.Tensor, target_ids: th.Tensor, temperature: float, chunk_size: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be an integer >= 1")
    if hidden_states.shape[:-1] != target_ids.shape:
        raise ValueError(f"hidden_states {tuple(hidden_states.shape)} and target_ids {tuple(target_ids.shape)} do not match")


class _ChunkedTokenLogProbs(th.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: th.Tensor,
        weight: th.Tensor,
        bias: th.Tensor | None,
        targets: th.Tensor,
        temperature: float,
        chunk_size: int,
    ) -> th.Tensor:
        log_sum_exp = th.empty(hidden.shape[0], dtype=th.float32, device=hidden.device)
        chosen = th.empty_like(log_sum_exp)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            logits = _chunk_logits(hidden[rows], weight, bias, temperature)
            log_sum_exp[rows] = th.logsumexp(logits, dim=-1)
            chosen[rows] = logits.gather(1, targets[rows, None]).squeeze(1)
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, log_sum_exp)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        # The backward pass recomputes the logits outside autocast (custom functions' backward runs without it):
        # it must use the dtype the forward's products had, or bf16 hidden states meet float32 weights.
        device_type = hidden.device.type
        ctx.compute_dtype = (
            th.get_autocast_dtype(device_type)
            if th.is_autocast_enabled(device_type)
            else th.promote_types(hidden.dtype, weight.dtype)
        )
        return chosen - log_sum_exp

    @staticmethod
    def backward(ctx: Any, grad_output: th.Tensor) -> tuple[th.Tensor | None, ...]:
        hidden, weight, bias, targets, log_sum_exp = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = th.empty_like(hidden) if need_hidden else None
        grad_weight = th.zeros(weight.shape, dtype=th.float32, device=weight.device) if need_weight else None
        grad_bias = th.zeros(weight.shape[0], dtype=th.float32, device=weight.device) if need_bias else None
        grad_output = grad_output.float()
        compute_weight = weight.to(ctx.compute_dtype)  # one cast per backward, as autocast caches it in the forward
        compute_bias = None if bias is None else bias.to(ctx.compute_dtype)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            logits = _chunk_logits(hidden[rows].to(ctx.compute_dtype), compute_weight, compute_bias, ctx.temperature)
            grad_logits = _grad_logits_(logits, log_sum_exp[rows], targets[rows], grad_output[rows], ctx.temperature)
            if grad_hidden is not None:
                grad_hidden[rows] = (grad_logits.to(ctx.compute_dtype) @ compute_weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T, hidden[rows].float())  # accumulates inside the GEMM: no [V, H] temporary
            if grad_bias is not None:
                grad_bias += grad_logits.sum(dim=0)
            del logits, grad_logits  # free this chunk's [chunk, V] buffer before the next one exists
        cast_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        cast_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        return grad_hidden, cast_weight, cast_bias, None, None, None


def chunked_token_log_probs(
    hidden_states: th.Tensor,
    lm_head: nn.Linear | th.Tensor,
    target_ids: th.Tensor,
    *,
    mask: th.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> th.Tensor:
    """
    ``log_softmax(lm_head(h) / temperature)[target]`` for every position, without ``[B, T, V]`` logits.

    Equal to :func:`naive_token_log_probs` in value and gradient (w.r.t. the hidden states and ``lm_head``).
    The log-probabilities are float32 whatever the model's dtype.

    :param hidden_states: ``[..., H]`` final hidden states (after the model's last norm)
    :param lm_head: the output projection (``model.get_output_embeddings()``) or its ``[V, H]`` weight
    :param target_ids: ``[...]`` the tokens whose log-probabilities are wanted
    :param mask: optional ``[...]`` bool mask: only these positions are computed (others are 0, with no gradient)
    :param temperature: sampling temperature the logits are divided by (> 0)
    :param chunk_size: rows (tokens) whose logits exist at once; memory ``chunk_size * V * 4`` bytes
    :return: ``[...]`` float32 log-probabilities
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be an integer >= 1")
    if hidden_states.shape[:-1] != target_ids.shape:
        raise ValueError(f"hidden_states {tuple(hidden_states.shape)} and target_ids {tuple(target_ids.shape)} do not match")
    weight, bias = (lm_head.weight, lm_head.bias) if isinstance(lm_head, nn.Linear) else (lm_head, None)
    flat_hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    flat_targets = target_ids.reshape(-1)
    if mask is None:
        log_probs = _ChunkedTokenLogProbs.apply(flat_hidden, weight, bias, flat_targets, temperature, chunk_size)
        return log_probs.reshape(target_ids.shape)
    rows = mask.reshape(-1).nonzero().squeeze(1)
    selected = _ChunkedTokenLogProbs.apply(flat_hidden[rows], weight, bias, flat_targets[rows], temperature, chunk_size)
    out = th.zeros(flat_targets.shape, dtype=th.float32, device=hidden_states.device)
    return out.index_put((rows,), selected).reshape(target_ids.shape)


class FusedObjectiveLoss(NamedTuple):
    """The aggregated loss (differentiable), the log-probs (detached, float32) and the ratio statistics."""

    loss: th.Tensor
    log_probs: th.Tensor
    stats: RatioStats


class _FusedObjective(th.autograd.Function):
    """
    Forward computes, chunk by chunk, the log-probs, the objective, and already the gradients w.r.t. the hidden
    states and ``lm_head`` (the objective is elementwise in the log-probs and the aggregation is a fixed weighting,
    so ``dLoss / dlog_prob`` of a chunk is known as soon as its log-probs are). Backward only scales them: three
    matrix products per chunk, as the naive path, and no recomputation.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: th.Tensor,
        weight: th.Tensor,
        bias: th.Tensor | None,
        targets: th.Tensor,
        behavior_log_probs: th.Tensor,
        advantages: th.Tensor,
        token_weights: th.Tensor,
        objective: Callable[..., tuple[th.Tensor, RatioStats]],
        coefficients: dict[str, Any],
        token_coefficients: dict[str, th.Tensor],
        temperature: float,
        chunk_size: int,
        stats_out: list[RatioStats],
    ) -> tuple[th.Tensor, th.Tensor]:
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = th.zeros_like(hidden) if need_hidden else None
        grad_weight = th.zeros(weight.shape, dtype=th.float32, device=weight.device) if need_weight else None
        grad_bias = th.zeros(weight.shape[0], dtype=th.float32, device=weight.device) if need_bias else None
        log_probs = th.empty(hidden.shape[0], dtype=th.float32, device=hidden.device)
        loss = th.zeros((), dtype=th.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            logits = _chunk_logits(hidden[rows], weight, bias, temperature)
            # A stable log-sum-exp whose exponentials are kept (in place): they become the softmax of the gradient,
            # which saves the second pass over [chunk, V] that logsumexp + exp would make.
            row_max = logits.amax(dim=1, keepdim=True)
            target_logits = logits.gather(1, targets[rows, None]).squeeze(1)
            exponentials = logits.sub_(row_max).exp_()
            sum_exp = exponentials.sum(dim=1)
            log_probs[rows] = target_logits - row_max.squeeze(1) - sum_exp.log()
            with th.enable_grad():
                leaf = log_probs[rows].detach().requires_grad_(True)
                chunk_coefficients = {**coefficients, **{k: v[rows] for k, v in token_coefficients.items()}}
                per_token, chunk_stats = objective(leaf, behavior_log_probs[rows], advantages[rows], **chunk_coefficients)
                chunk_loss = (per_token * token_weights[rows]).sum()
                (grad_log_probs,) = th.autograd.grad(chunk_loss, leaf)
            loss += chunk_loss.detach()
            stats_out.append(chunk_stats if not stats_out else stats_out.pop().merge(chunk_stats))
            grad_logits = exponentials.mul_((-grad_log_probs / sum_exp)[:, None])
            grad_logits.scatter_add_(1, targets[rows, None], grad_log_probs[:, None])
            if temperature != 1.0:
                grad_logits.div_(temperature)
            if grad_hidden is not None:
                grad_hidden[rows] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T, hidden[rows].float())  # accumulates inside the GEMM: no [V, H] temporary
            if grad_bias is not None:
                grad_bias += grad_logits.sum(dim=0)
            del logits, exponentials, grad_logits  # free this chunk's [chunk, V] buffer before the next one exists
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.backward_done = False
        ctx.mark_non_differentiable(log_probs)
        return loss, log_probs

    @staticmethod
    def backward(ctx: Any, grad_loss: th.Tensor, _grad_log_probs: th.Tensor) -> tuple[th.Tensor | None, ...]:
        if ctx.backward_done:
            raise RuntimeError("fused_objective_loss supports a single backward pass (its gradients are scaled in place)")
        ctx.backward_done = True
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_loss.float()
        # In place: a scaled copy of the [V, H] float32 weight gradient would double this step's peak memory.
        return (
            None if grad_hidden is None else grad_hidden.mul_(scale.to(grad_hidden.dtype)),
            None if grad_weight is None else grad_weight.mul_(scale).to(ctx.weight_dtype),
            None if grad_bias is None else grad_bias.mul_(scale).to(ctx.weight_dtype),
            *([None] * 10),
        )


def _split_token_coefficients(coefficients: dict[str, Any], shape: th.Size) -> tuple[dict[str, Any], dict[str, th.Tensor]]:
    """The coefficients that are one value, and the ``[B, T]`` per-token ones (any other tensor shape is an error)."""
    scalar: dict[str, Any] = {}
    per_token: dict[str, th.Tensor] = {}
    for name, value in coefficients.items():
        if isinstance(value, th.Tensor) and value.dim() > 0:
            if value.shape != shape:
                raise ValueError(
                    f"coefficient {name!r} has shape {tuple(value.shape)}: a tensor coefficient must be one value or "
                    f"one per token, {tuple(shape)}"
                )
            per_token[name] = value
        else:
            scalar[name] = value
    return scalar, per_token


def fused_objective_loss(
    hidden_states: th.Tensor,
    lm_head: nn.Linear | th.Tensor,
    target_ids: th.Tensor,
    behavior_log_probs: th.Tensor,
    advantages: th.Tensor,
    *,
    mask: th.Tensor,
    token_weights: th.Tensor,
    objective: Callable[..., tuple[th.Tensor, RatioStats]],
    coefficients: dict[str, Any] | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> FusedObjectiveLoss:
    """
    ``sum(objective(log_probs, behavior_log_probs, advantages) * token_weights)`` over the masked tokens, with the
    log-probs computed in chunks from the hidden states and ``lm_head`` and the gradient formed in the same pass.

    Equal in value and gradient to :func:`naive_token_log_probs` followed by the objective and the aggregation
    (``token_weights`` from :func:`sb3_r2vpo.core.aggregation.aggregation_weights`), without ``[B, T, V]`` logits
    and without recomputing the logits in the backward pass.

    :param hidden_states: ``[B, T, H]`` final hidden states
    :param lm_head: the output projection or its ``[V, H]`` weight
    :param target_ids: ``[B, T]`` sampled tokens
    :param behavior_log_probs: ``[B, T]`` behavior log-probs
    :param advantages: ``[B, T]`` per-token advantages
    :param mask: ``[B, T]`` bool mask of real tokens
    :param token_weights: ``[B, T]`` aggregation weights
    :param objective: a core objective (``sb3_r2vpo.core.OBJECTIVES``)
    :param coefficients: its keyword coefficients: numbers, or ``[B, T]`` tensors for a per-token coefficient (such
        as a ``var_coef`` that depends on each completion's age)
    :param temperature: sampling temperature
    :param chunk_size: tokens whose logits exist at once
    :return: the loss, the detached ``[B, T]`` log-probs (0 on padding) and the ratio statistics
    """
    _check_arguments(hidden_states, target_ids, temperature, chunk_size)
    weight, bias = (lm_head.weight, lm_head.bias) if isinstance(lm_head, nn.Linear) else (lm_head, None)
    rows = mask.reshape(-1).nonzero().squeeze(1)
    selected = [t.reshape(-1)[rows] for t in (target_ids, behavior_log_probs, advantages, token_weights)]
    flat_hidden = hidden_states.reshape(-1, hidden_states.shape[-1])[rows]
    scalar_coefficients, token_coefficients = _split_token_coefficients(coefficients or {}, target_ids.shape)
    stats_out: list[RatioStats] = []
    loss, selected_log_probs = _FusedObjective.apply(
        flat_hidden,
        weight,
        bias,
        *selected,
        objective,
        scalar_coefficients,
        {name: value.reshape(-1)[rows] for name, value in token_coefficients.items()},
        temperature,
        chunk_size,
        stats_out,
    )
    log_probs = th.zeros(target_ids.numel(), dtype=th.float32, device=hidden_states.device)
    log_probs = log_probs.index_put((rows,), selected_log_probs).reshape(target_ids.shape)
    stats = stats_out[0] if stats_out else RatioStats.from_ratio(selected_log_probs.new_zeros(0))
    return FusedObjectiveLoss(loss, log_probs, stats)


def naive_token_log_probs(
    hidden_states: th.Tensor,
    lm_head: nn.Linear | th.Tensor,
    target_ids: th.Tensor,
    *,
    temperature: float = 1.0,
) -> th.Tensor:
    """
    The reference path: full logits, ``log_softmax`` and a gather (what :func:`chunked_token_log_probs` avoids).

    :param hidden_states: ``[..., H]`` final hidden states
    :param lm_head: the output projection or its weight
    :param target_ids: ``[...]`` chosen tokens
    :param temperature: sampling temperature
    :return: ``[...]`` float32 log-probabilities
    """
    weight, bias = (lm_head.weight, lm_head.bias) if isinstance(lm_head, nn.Linear) else (lm_head, None)
    logits = _chunk_logits(hidden_states, weight, bias, temperature)
    return th.log_softmax(logits, dim=-1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


def completion_hidden_states(
    model: nn.Module, input_ids: th.Tensor, attention_mask: th.Tensor, position_ids: th.Tensor
) -> th.Tensor:
    """
    The final hidden states of a Hugging Face causal LM (its decoder stack, after the last norm), without logits.

    :param model: a ``transformers`` causal LM (``get_decoder()`` gives the backbone)
    :param input_ids: ``[B, L]``
    :param attention_mask: ``[B, L]``
    :param position_ids: ``[B, L]``
    :return: ``[B, L, H]``
    """
    backbone = model.get_decoder()  # type: ignore[operator]
    outputs = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return outputs.last_hidden_state


def rollout_completion_hidden(model: nn.Module, batch: "RolloutBatch") -> th.Tensor:
    """
    The final hidden states at the positions that predict a batch's completion tokens, ``[B, T, H]``.

    :param model: a Hugging Face causal LM
    :param batch: rollouts on the model's device, :meth:`RolloutBatch.trimmed`
    """
    input_ids, attention_mask, position_ids = batch.model_inputs()
    prompt_width = batch.prompt_ids.shape[1]
    hidden = completion_hidden_states(model, input_ids, attention_mask, position_ids)
    return hidden[:, prompt_width - 1 : prompt_width - 1 + batch.completion_ids.shape[1]]


@th.no_grad()
def rollout_log_probs(
    model: nn.Module,
    batch: "RolloutBatch",
    *,
    temperature: float,
    chunk_size: int = 1024,
    micro_batch_size: int | None = None,
    precision: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> th.Tensor:
    """
    The log-probs of a batch's completion tokens under ``model`` at ``temperature``, as the trainer computes them
    (final hidden states, then :func:`chunked_token_log_probs`), micro-batch by micro-batch, without gradients.

    :param model: a Hugging Face causal LM
    :param batch: the rollouts (any device: each micro-batch moves to the model's)
    :param temperature: sampling temperature
    :param chunk_size: tokens whose logits exist at once
    :param micro_batch_size: completions per forward pass (default: all)
    :param precision: the context the forward passes run in (the trainer's autocast)
    :return: ``[B, T]`` float32 log-probs on the batch's device, 0 on padding
    """
    device = next(model.parameters()).device
    step = micro_batch_size or max(len(batch), 1)
    out = th.zeros(batch.completion_ids.shape, dtype=th.float32)
    for start in range(0, len(batch), step):
        rows = th.arange(start, min(start + step, len(batch)))
        micro = batch.select(rows).trimmed().to(device)
        width = micro.completion_ids.shape[1]
        with precision():
            log_probs = chunked_token_log_probs(
                rollout_completion_hidden(model, micro),
                model.get_output_embeddings(),  # type: ignore[operator]
                micro.completion_ids,
                mask=micro.completion_mask,
                temperature=temperature,
                chunk_size=chunk_size,
            )
        out[rows, :width] = log_probs.cpu()
    return out.to(batch.completion_ids.device)
