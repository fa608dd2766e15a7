"""Reducing per-sample or per-token losses to a scalar: a separate, named step after the objective."""

import torch as th

AGGREGATIONS = ("mean", "token_mean", "seq_mean_token_mean")


def aggregate_loss(
    per_sample_loss: th.Tensor,
    *,
    mode: str = "mean",
    mask: th.Tensor | None = None,
    normalizer: float | th.Tensor | None = None,
) -> th.Tensor:
    """
    Reduce a per-sample (1-D) or per-token (``[batch, time]``) loss.

    - ``"mean"``: mean over the (unmasked) samples of the minibatch (SB3).
    - ``"token_mean"``: ``sum(loss * mask) / normalizer``; pass the number of valid tokens of the whole
      optimizer step as ``normalizer`` so that gradient accumulation over micro-batches gives the same
      gradient as one big batch (default: the tokens of this batch).
    - ``"seq_mean_token_mean"``: the mean over sequences of each sequence's token mean; ``normalizer`` is the
      number of sequences in the optimizer step (default: this batch's).

    :param per_sample_loss: the loss of each sample or token
    :param mode: one of :data:`AGGREGATIONS`
    :param mask: 0/1 mask of valid samples or tokens, same shape
    :param normalizer: the denominator shared by all micro-batches of an optimizer step
    :return: the scalar loss
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation mode {mode!r}; choose one of {AGGREGATIONS}")
    if mask is None and normalizer is None and mode != "seq_mean_token_mean":
        return per_sample_loss.mean()
    weights = th.ones_like(per_sample_loss) if mask is None else mask.to(per_sample_loss.dtype)
    if mode == "seq_mean_token_mean":
        if per_sample_loss.dim() != 2:
            raise ValueError(f"seq_mean_token_mean needs a [batch, time] loss, got shape {tuple(per_sample_loss.shape)}")
        tokens_per_sequence = weights.sum(dim=1).clamp(min=1.0)
        sequence_means = (per_sample_loss * weights).sum(dim=1) / tokens_per_sequence
        denominator = per_sample_loss.shape[0] if normalizer is None else normalizer
        return sequence_means.sum() / denominator
    denominator = weights.sum().clamp(min=1.0) if normalizer is None else normalizer
    return (per_sample_loss * weights).sum() / denominator


def aggregation_weights(
    mask: th.Tensor,
    *,
    mode: str,
    normalizer: float | th.Tensor | None = None,
) -> th.Tensor:
    """
    The per-token weights ``w`` with ``aggregate_loss(x, mode=mode, mask=mask, normalizer=normalizer) == (x * w).sum()``.

    A fused loss that computes the gradient chunk by chunk (``llm_adapter.logprobs.fused_objective_loss``) needs the
    aggregation as weights, since it never holds the whole per-token loss at once.

    :param mask: ``[batch, time]`` (or 1-D) 0/1 mask of valid tokens
    :param mode: one of :data:`AGGREGATIONS`
    :param normalizer: as in :func:`aggregate_loss`
    :return: weights, same shape as ``mask``, float32
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation mode {mode!r}; choose one of {AGGREGATIONS}")
    weights = mask.to(th.float32)
    if mode == "seq_mean_token_mean":
        if weights.dim() != 2:
            raise ValueError(f"seq_mean_token_mean needs a [batch, time] mask, got shape {tuple(weights.shape)}")
        tokens_per_sequence = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        denominator = weights.shape[0] if normalizer is None else normalizer
        return weights / tokens_per_sequence / denominator
    denominator = weights.sum().clamp(min=1.0) if normalizer is None else normalizer
    return weights / denominator
