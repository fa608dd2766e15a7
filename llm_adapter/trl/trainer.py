"""
``R2VPOTrainer``: TRL's ``GRPOTrainer`` with the clipped surrogate replaced by the shared core's R2VPO objective.

Generation, rewards, advantages, vLLM (colocate or server), accelerate/DeepSpeed/FSDP, logging and checkpoints stay
TRL's; only the per-token loss and the dual controller of ``lam`` are ours.
"""

import json
import os
import warnings
from typing import Any

import torch as th
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from llm_adapter.trl.aggregation import aggregate_like_trl
from llm_adapter.trl.config import R2VPOConfig
from sb3_r2vpo.core.dual import VarCoefController
from sb3_r2vpo.core.objectives import r2vpo_objective
from sb3_r2vpo.core.stats import RatioStats

STATE_FILE = "r2vpo_state.json"

# Model inputs besides the token ids that TRL's log-prob pass forwards (multimodal models).
_EXTRA_MODEL_INPUTS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


def ratio_is_always_one(args: R2VPOConfig) -> bool:
    """
    Whether TRL's schedule updates only on completions of the current parameters: generation every
    ``steps_per_generation * num_iterations`` micro-batches dividing the accumulation window means every gradient
    is taken before the first optimizer step on that generation, so ``old_per_token_logps`` equals the policy's.
    """
    # GRPOConfig.__post_init__ always sets steps_per_generation.
    generate_every = int(args.steps_per_generation or args.gradient_accumulation_steps) * args.num_iterations
    return args.gradient_accumulation_steps % generate_every == 0


class R2VPOTrainer(GRPOTrainer):
    """
    GRPO training with R2VPO's loss ``-r A + lam (r - 1)^2`` per token (``sb3_r2vpo.core.r2vpo_objective``).

    Takes the same arguments as ``trl.GRPOTrainer``, with an :class:`~llm_adapter.trl.R2VPOConfig` as ``args``.
    ``lam`` is fixed or adapted once per optimizer step from the ratio statistics of all its micro-batches on all
    processes; it is saved in every checkpoint (``r2vpo_state.json``) and restored on resume.

    The ratio is ``pi_theta / pi_old`` with ``pi_old`` TRL's ``old_per_token_logps`` (the trainer's own log-probs at
    generation time). With vLLM and ``vllm_importance_sampling_correction=True``, TRL's sampler correction
    (``pi_old / pi_vllm``, truncated or masked as configured) multiplies the whole per-token R2VPO loss, penalty
    included, exactly as it multiplies the clipped surrogate in GRPO: the correction reweights tokens drawn by the
    sampler, and the R2VPO ratio measures how far the update moved from ``pi_old``.

    Logged besides TRL's metrics: ``r2vpo/lam`` (the value used in the step), ``r2vpo/ratio_var`` (token mean of
    ``(r - 1)^2``), ``r2vpo/penalty`` (``lam * ratio_var``), ``r2vpo/ratio_mean``, ``r2vpo/ratio_max``,
    ``r2vpo/ratio_outside`` (fraction with ``|r - 1| > 0.2``) and ``r2vpo/approx_kl``.
    """

    _tag_names = ["trl", "r2vpo"]  # noqa: RUF012 (TRL's own convention, an instance variable of GRPOTrainer)
    _name = "R2VPO"

    def __init__(
        self, model: Any, reward_funcs: Any = None, args: R2VPOConfig | None = None, *positional: Any, **kwargs: Any
    ) -> None:
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = R2VPOConfig(f"{str(name).split('/')[-1]}-R2VPO")
        if not isinstance(args, R2VPOConfig):
            raise TypeError(f"args must be an R2VPOConfig (R2VPO's settings extend GRPOConfig), got {type(args).__name__}")
        self.var_coef_controller: VarCoefController = args.var_coef_controller()
        self._window_stats: RatioStats | None = None
        self._window_loss: th.Tensor | None = None
        if ratio_is_always_one(args):
            warnings.warn(
                f"With num_iterations={args.num_iterations}, steps_per_generation={args.steps_per_generation} and "
                f"gradient_accumulation_steps={args.gradient_accumulation_steps}, every gradient is taken on "
                "completions of the current parameters: the ratio is exactly 1 and R2VPO's penalty does nothing "
                "(the update is the plain policy gradient). Set num_iterations > 1 or steps_per_generation > "
                "gradient_accumulation_steps for several optimizer steps per generation.",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(model, reward_funcs, args, *positional, **kwargs)

    @property
    def r2vpo_args(self) -> R2VPOConfig:
        """``self.args``, typed as the :class:`R2VPOConfig` the constructor checked it is."""
        assert isinstance(self.args, R2VPOConfig)
        return self.args

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> th.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = th.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = th.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _EXTRA_MODEL_INPUTS},
        )
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()

        log_prob, behavior_log_prob, valid = self._ratio_inputs(per_token_logps, old_per_token_logps, mask)
        var_coef = self.var_coef_controller.value
        per_token_loss, stats = r2vpo_objective(log_prob, behavior_log_prob, advantages, mask=valid, var_coef=var_coef)

        if self.off_policy_mask_threshold is not None:
            per_token_loss = per_token_loss * self.get_off_policy_mask(
                advantages=advantages,
                per_token_logps=per_token_logps,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                mask=mask,
                off_policy_threshold=self.off_policy_mask_threshold,
            )
        entropy_mask = None
        if self.top_entropy_quantile < 1.0:
            entropy_mask = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
            per_token_loss = per_token_loss * entropy_mask
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        mode = "train" if model.training else "eval"
        if self.beta != 0.0:
            per_token_kl = self._reference_kl(inputs["ref_per_token_logps"], per_token_logps, log_prob, behavior_log_prob)
            per_token_loss = per_token_loss + self.beta * per_token_kl
            self._metrics[mode]["kl"].append(self._global_masked_mean(per_token_kl, mask))

        training = mode == "train"
        loss, policy_loss = aggregate_like_trl(
            per_token_loss,
            mask,
            self.loss_type,
            accumulation_steps=self.current_gradient_accumulation_steps,
            num_items_in_batch=inputs.get("num_items_in_batch"),
            num_processes=self.accelerator.num_processes,
            steps_per_generation=self.r2vpo_args.steps_per_generation or 1,
            max_completion_length=self.r2vpo_args.max_completion_length or 0,
            training=training,
        )
        accumulation = self.current_gradient_accumulation_steps if training else 1
        if self.entropy_coef != 0.0:
            effective_mask = mask if entropy_mask is None else mask * entropy_mask
            mean_entropy = (entropies * effective_mask).sum() / effective_mask.sum().clamp(min=1.0)
            loss = loss - self.entropy_coef * mean_entropy / accumulation
            self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy_loss).nanmean().item())
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        self._metrics[mode]["entropy"].append(self._global_masked_mean(entropies, mask))

        if training:
            self._accumulate_window(stats, loss.detach())
            if self.accelerator.sync_gradients:
                self._finish_optimizer_step(var_coef)
        return loss

    def _ratio_inputs(
        self, per_token_logps: th.Tensor, old_per_token_logps: th.Tensor, mask: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Token log-probs (``importance_sampling_level='token'``) or their per-sequence means (``'sequence'``)."""
        if self.importance_sampling_level == "token":
            return per_token_logps, old_per_token_logps, mask.bool()
        if self.importance_sampling_level == "sequence":
            lengths = mask.sum(-1, keepdim=True).clamp(min=1.0)
            return (
                (per_token_logps * mask).sum(-1, keepdim=True) / lengths,
                (old_per_token_logps * mask).sum(-1, keepdim=True) / lengths,
                mask.sum(-1, keepdim=True) > 0,
            )
        raise ValueError(
            f"importance_sampling_level={self.importance_sampling_level!r} is not understood: expected 'token' or 'sequence'"
        )

    def _reference_kl(
        self, ref_per_token_logps: th.Tensor, per_token_logps: th.Tensor, log_prob: th.Tensor, behavior: th.Tensor
    ) -> th.Tensor:
        """TRL's k3 estimate of ``KL(pi_theta || pi_ref)``, importance-weighted when ``use_bias_correction_kl``."""
        delta = ref_per_token_logps - per_token_logps
        per_token_kl = th.exp(delta) - delta - 1
        if self.r2vpo_args.use_bias_correction_kl:
            per_token_kl = per_token_kl * th.exp(log_prob - behavior)
        return per_token_kl

    def _global_masked_mean(self, values: th.Tensor, mask: th.Tensor) -> float:
        """Token mean over every process (TRL's metric convention)."""
        local = th.stack([(values * mask).sum(), mask.sum().to(values.dtype)]).detach()
        totals = self.accelerator.reduce(local, reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _accumulate_window(self, stats: RatioStats, loss: th.Tensor) -> None:
        self._window_stats = stats if self._window_stats is None else self._window_stats.merge(stats)
        self._window_loss = loss if self._window_loss is None else self._window_loss + loss

    def _finish_optimizer_step(self, var_coef: float) -> None:
        """Reduce the step's ratio statistics over processes, check them, log them and take the dual step."""
        assert self._window_stats is not None and self._window_loss is not None
        count, sums, min_log, max_log = self._window_stats.tensors()
        sums_and_loss = th.cat([count.reshape(1).to(sums.dtype), sums, self._window_loss.reshape(1).to(sums.dtype)])
        reduced = self.accelerator.reduce(sums_and_loss, reduction="sum")
        extremes = self.accelerator.gather(th.stack([min_log, -max_log]).reshape(1, 2)).reshape(-1, 2).min(dim=0).values
        step_stats = RatioStats(reduced[0], reduced[1:5], extremes[0], -extremes[1], self._window_stats.band)
        self._window_stats, self._window_loss = None, None
        summary = step_stats.summarize(
            context=f"optimizer step {self.state.global_step + 1} (lam={var_coef:.6g})", extra={"loss": reduced[5]}
        )
        self.var_coef_controller.step(summary["ratio_var"])
        metrics = self._metrics["train"]
        metrics["r2vpo/lam"].append(var_coef)
        metrics["r2vpo/penalty"].append(var_coef * summary["ratio_var"])
        for key in ("ratio_var", "ratio_mean", "ratio_max", "ratio_outside", "approx_kl"):
            metrics[f"r2vpo/{key}"].append(summary[key])

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"var_coef": self.var_coef_controller.state_dict()}, f, indent=2)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: {checkpoint} was not written by R2VPOTrainer, so lam cannot be restored"
            )
        with open(path) as f:
            self.var_coef_controller.load_state_dict(json.load(f)["var_coef"])
