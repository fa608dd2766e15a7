"""TRL's per-``loss_type`` aggregation of per-token losses, with its gradient-accumulation normalization."""

import torch as th


def aggregate_like_trl(
    per_token_loss: th.Tensor,
    mask: th.Tensor,
    loss_type: str,
    *,
    accumulation_steps: int,
    num_items_in_batch: th.Tensor | None,
    num_processes: int,
    steps_per_generation: int,
    max_completion_length: int,
    training: bool,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Reduce a ``[batch, time]`` (or ``[batch, 1]`` for sequence-level ratios) per-token loss the way TRL's
    ``GRPOTrainer`` does for ``loss_type``, so that summing the returned losses of one accumulation window's
    micro-batches gives the loss of the whole optimizer step.

    :param per_token_loss: loss per token (already masked or not; the mask is applied here)
    :param mask: 0/1 completion mask, ``[batch, time]``
    :param loss_type: ``dapo`` (tokens of the whole generation batch), ``grpo`` (sequence mean, then batch mean),
        ``bnpo`` (tokens of the micro-batch), ``dr_grpo`` (``batch * max_completion_length``) or ``luspo``
        (sequence sum, then batch mean)
    :param accumulation_steps: micro-batches in the current optimizer step
    :param num_items_in_batch: active tokens of the generation batch over all processes (``dapo``)
    :param num_processes: number of data-parallel processes
    :param steps_per_generation: micro-batches per generation batch (``dapo``)
    :param max_completion_length: ``dr_grpo``'s constant
    :param training: False in evaluation (no accumulation)
    :return: ``(loss to back-propagate, the micro-batch's policy loss before accumulation scaling, detached)``
    """
    masked = per_token_loss * mask
    accumulation = accumulation_steps if training else 1
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = masked.sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "luspo":
        loss = masked.sum(-1).mean()
    elif loss_type == "dapo":
        if num_items_in_batch is None:
            raise ValueError("loss_type='dapo' needs num_items_in_batch (TRL puts it in the generation batch)")
        normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
        if training:
            # num_items_in_batch counts the whole generation batch; rescale it to one accumulation window.
            normalizer = normalizer * accumulation_steps / steps_per_generation
        loss = masked.sum() / normalizer
        return loss, loss.detach()
    else:
        raise ValueError(f"loss_type={loss_type!r} is not an aggregation R2VPOTrainer knows")
    return loss / accumulation, loss.detach()
