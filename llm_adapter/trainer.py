"""
GRPO-style training loop with R2VPO (on-policy, or off-policy with a FIFO replay of past generations).

One iteration: draw prompts, sample ``group_size`` completions each (the engine reports the sampled tokens'
log-probs), score them, compute group-relative advantages, store the generation in the replay, then take
optimizer steps on completions drawn from the replay. Each optimizer step accumulates gradients over
micro-batches with a step-wide normalizer, clips the gradient norm, and feeds the whole step's ratio statistics to
the dual controller of ``lam``.
"""

import contextlib
import json
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from transformers import PreTrainedModel

from llm_adapter.advantages import group_relative_advantages
from llm_adapter.config import TrainConfig, parse_column_mapping
from llm_adapter.data import PromptSampler, drop_long_prompts, format_prompt, load_prompt_dataset
from llm_adapter.engines.base import RolloutEngine, eos_token_ids
from llm_adapter.evaluation import evaluation_metrics
from llm_adapter.logprobs import fused_objective_loss, rollout_completion_hidden, rollout_log_probs
from llm_adapter.metrics_log import MetricsLogger
from llm_adapter.objectives import LLM_OBJECTIVES
from llm_adapter.replay import RolloutReplay
from llm_adapter.rewards import RewardFunction, resolve_reward, score_completions
from llm_adapter.rollouts import RolloutBatch
from sb3_r2vpo.core.aggregation import aggregation_weights
from sb3_r2vpo.core.dual import VarCoefController, var_coef_by_age
from sb3_r2vpo.core.ratio import NonFiniteRatioError
from sb3_r2vpo.core.stats import RatioStats, grouped_second_moment

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.pt"


@dataclass
class StepAccumulation:
    """What one optimizer step's micro-batches add up to."""

    stats: RatioStats | None
    loss: th.Tensor
    age_sums: th.Tensor
    age_counts: th.Tensor
    tokens: int


def resolve_device(device: str) -> th.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if device == "auto":
        return th.device("cuda" if th.cuda.is_available() else "cpu")
    resolved = th.device(device)
    if resolved.type == "cuda" and not th.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return resolved


def numbered_checkpoints(output_dir: str | Path) -> list[Path]:
    """
    The ``checkpoint-<iteration>`` directories of ``output_dir``, oldest first.

    :param output_dir: the run directory
    :return: their paths, by iteration
    """
    found = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path:
    """
    The complete checkpoint with the highest iteration in ``output_dir``.

    :param output_dir: the run directory
    :return: its path
    """
    complete = [p for p in numbered_checkpoints(output_dir) if (p / TRAINER_STATE).exists()]
    if not complete:
        raise ValueError(f"resume_from_checkpoint='latest' but {output_dir} has no complete checkpoint")
    return complete[-1]


def _check_local_path(name: str, location: str | Path) -> None:
    """A location written as a local path (absolute, ``./``, ``~``, or deeper than a hub id's ``org/name``) must exist."""
    text = str(location)
    path = Path(text).expanduser()
    if not path.exists() and (path.is_absolute() or text.startswith((".", "~")) or text.strip("/").count("/") > 1):
        raise FileNotFoundError(
            f"{name}={text!r}: no such local directory (relative paths are taken from {Path.cwd()}, or from the config "
            "file's folder for paths written in one); a hub id has the form 'org/name'"
        )


class R2VPOLLMTrainer:
    """
    Trains a causal LM with one of the :data:`llm_adapter.objectives.LLM_OBJECTIVES` on verifiable rewards.

    :param config: the configuration
    :param model: a ``transformers`` causal LM (default: ``from_pretrained(config.model_name_or_path)``)
    :param tokenizer: its tokenizer (default: ``from_pretrained``)
    :param reward_fn: reward function (default: ``resolve_reward(config.reward)``)
    :param engine: rollout engine (default: built from ``config.engine``)
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: PreTrainedModel | None = None,
        tokenizer: Any = None,
        reward_fn: RewardFunction | None = None,
        engine: RolloutEngine | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self._prepare_output_dir()
        self.device = resolve_device(config.device)
        self.bf16 = self.device.type == "cuda" if config.bf16 is None else config.bf16
        if self.bf16 and self.device.type == "cuda" and not th.cuda.is_bf16_supported():
            raise ValueError("bf16=True but this GPU does not support bfloat16")
        self._seed_everything(config.seed)
        self.tokenizer = tokenizer if tokenizer is not None else self._load_tokenizer()
        self.model: PreTrainedModel = model if model is not None else self._load_model(config.model_name_or_path)
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers wraps .to with a decorator mypy misreads
        if getattr(self.model.config, "final_logit_softcapping", None):
            raise ValueError("Models with final_logit_softcapping are not supported by the chunked log-prob path")
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if config.use_peft:
            self.model = self._with_lora_adapters(self.model)
        self.model.train()
        self.reward_fn = reward_fn if reward_fn is not None else resolve_reward(config.reward)
        self.dataset = self._load_prompts(config.train_file, "train_file")
        self.eval_dataset = self._load_prompts(config.eval_file, "eval_file") if config.eval_file is not None else None
        self.prompt_sampler = PromptSampler(self.dataset, seed=config.seed)
        self.objective = LLM_OBJECTIVES[config.objective]
        self.var_coef: VarCoefController = config.var_coef_controller()
        self.replay = RolloutReplay(config.replay_capacity, config.utd_ratio, config.replay_sampling)
        self.optimizer = th.optim.AdamW(
            [parameter for parameter in self.model.parameters() if parameter.requires_grad],
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.lr_scheduler = self._build_lr_scheduler()
        self.replay_generator = th.Generator().manual_seed(config.seed)
        self.engine = engine if engine is not None else self._build_engine()
        self.iteration = 0
        self._warn_if_ratio_is_one()

    # ----- construction -----------------------------------------------------------------------------------------

    #: What a run writes in ``output_dir`` (``overwrite_output_dir`` removes these, nothing else).
    RUN_OUTPUTS = ("metrics.jsonl", "tensorboard")

    def _prepare_output_dir(self) -> None:
        """Refuse to start a fresh run over another one, unless ``overwrite_output_dir`` says to replace it."""
        config, directory = self.config, Path(self.config.output_dir)
        if config.resume_from_checkpoint is not None or not directory.is_dir():
            return
        previous = sorted(
            p.name for p in directory.iterdir() if p.name in self.RUN_OUTPUTS or p.name.startswith(CHECKPOINT_PREFIX)
        )
        if not previous:
            return
        if not config.overwrite_output_dir:
            raise FileExistsError(
                f"output_dir={str(directory)!r} already holds a run ({', '.join(previous[:6])}): resume it with "
                "resume_from_checkpoint='latest', choose another output_dir, or set overwrite_output_dir=True to replace it"
            )
        for name in previous:
            path = directory / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _with_lora_adapters(self, model: PreTrainedModel) -> Any:
        """The model with LoRA adapters (``peft``): only the adapters train; the engines get merged weights."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as error:
            raise ImportError("use_peft=True needs peft: pip install 'sb3-r2vpo[llm]'") from error
        config = self.config
        modules = config.lora_target_modules.strip()
        targets: str | list[str] = (
            modules if modules == "all-linear" else [name.strip() for name in modules.split(",") if name.strip()]
        )
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        if config.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks need an input with grad
        return get_peft_model(model, lora)

    def _load_prompts(self, path: str, name: str) -> Any:
        """A prompt file with ``column_mapping`` applied and the prompts longer than ``max_prompt_length`` dropped."""
        config = self.config
        mapping = parse_column_mapping(config.column_mapping) if config.column_mapping is not None else None
        dataset = load_prompt_dataset(path, prompt_column=config.prompt_column, column_mapping=mapping, name=name)
        return drop_long_prompts(
            dataset, lambda row: len(self._prompt_tokens(row)[1]), config.max_prompt_length, name=f"{name} {path}"
        )

    def _build_lr_scheduler(self) -> th.optim.lr_scheduler.LRScheduler:
        from transformers import get_scheduler

        config = self.config
        name = config.lr_scheduler_type
        if name == "constant" and config.num_warmup_steps:
            name = "constant_with_warmup"
        return get_scheduler(
            name,
            self.optimizer,
            num_warmup_steps=config.num_warmup_steps,
            num_training_steps=config.total_optimizer_steps,
        )

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        th.manual_seed(seed)

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        location = self.config.tokenizer_name_or_path or self.config.model_name_or_path
        _check_local_path("tokenizer_name_or_path" if self.config.tokenizer_name_or_path else "model_name_or_path", location)
        tokenizer = AutoTokenizer.from_pretrained(location)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("The tokenizer has neither a pad_token nor an eos_token to pad with")
            # Padding is always masked out, so the EOS id is a safe filler (as TRL does).
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @staticmethod
    def _load_model(location: str | Path) -> PreTrainedModel:
        from transformers import AutoModelForCausalLM

        _check_local_path("model_name_or_path", location)
        try:
            # float32 master weights; bf16 (on GPU) is autocast in the forward pass.
            return AutoModelForCausalLM.from_pretrained(location, dtype=th.float32)
        except OSError as error:
            raise OSError(
                f"model_name_or_path={str(location)!r} is not a local directory (relative to {Path.cwd()}) and could "
                f"not be loaded from the hub: {error}"
            ) from error

    def _build_engine(self) -> RolloutEngine:
        config = self.config
        if config.engine == "vllm_server":
            from llm_adapter.engines.vllm_server_engine import VLLMServerEngine

            return VLLMServerEngine(
                pad_token_id=int(self.tokenizer.pad_token_id),
                eos_token_ids=sorted(eos_token_ids(self.model, self.tokenizer)),
                base_url=config.vllm_server_base_url,
                host=config.vllm_server_host,
                server_port=config.vllm_server_port,
                group_port=config.vllm_group_port,
                timeout=config.vllm_server_timeout,
            )
        if self.config.engine == "vllm":
            from llm_adapter.engines.vllm_engine import VLLMEngine

            return VLLMEngine(
                self.config.model_name_or_path,
                pad_token_id=int(self.tokenizer.pad_token_id),
                seed=self.config.seed,
                gpu_memory_utilization=self.config.vllm_gpu_memory_utilization,
                tensor_parallel_size=self.config.vllm_tensor_parallel_size,
                max_model_len=self.config.max_prompt_length + self.config.max_completion_length,
                enable_sleep_mode=self.config.vllm_enable_sleep_mode,
            )
        from llm_adapter.engines.transformers_engine import TransformersEngine

        return TransformersEngine(
            self.model,
            self.tokenizer,
            precision=self._autocast,
            logprob_chunk_size=self.config.logprob_chunk_size,
            micro_batch_size=self.config.micro_batch_size,
        )

    def _warn_if_ratio_is_one(self) -> None:
        if self.config.replay_capacity == 1 and self.config.optimizer_steps_per_iteration == 1:
            warnings.warn(
                "One optimizer step per generation with no replay: every update is taken at the sampling policy, so the "
                "importance ratio is 1 (up to sampler/trainer numerics) and the objective reduces to plain policy "
                "gradient: R2VPO's penalty (and any clip) does nothing. Take several optimizer steps per generation "
                "(utd_ratio > 1, or micro_batch_size * gradient_accumulation_steps < prompts_per_iteration * "
                "group_size) or use the replay (replay_capacity > 1).",
                UserWarning,
                stacklevel=3,
            )

    # ----- log-probabilities ------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.bf16:
            return contextlib.nullcontext()
        return th.autocast(device_type=self.device.type, dtype=th.bfloat16)

    def recompute_behavior_log_probs(self, batch: RolloutBatch) -> RolloutBatch:
        """
        The batch with its behavior log-probs replaced by the trainer's (``behavior_log_probs="recompute"``).

        :param batch: a fresh generation (CPU)
        :return: the updated batch
        """
        log_probs = rollout_log_probs(
            self.model,
            batch,
            temperature=self.config.temperature,
            chunk_size=self.config.logprob_chunk_size,
            micro_batch_size=self.config.micro_batch_size,
            precision=self._autocast,
        )
        return batch.with_behavior_log_probs(log_probs)

    # ----- one iteration ----------------------------------------------------------------------------------------

    def _prompt_tokens(self, row: dict[str, Any]) -> tuple[str, list[int]]:
        """The formatted prompt text of a row and its token ids."""
        text = format_prompt(
            self.tokenizer,
            row[self.config.prompt_column],
            use_chat_template=self.config.use_chat_template,
            system_prompt=self.config.system_prompt,
            thinking=self.config.thinking,
        )
        return text, self.tokenizer(text, add_special_tokens=not self.config.use_chat_template)["input_ids"]

    def _tokenize_prompts(self, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[int]]]:
        pairs = [self._prompt_tokens(row) for row in rows]
        return [text for text, _ in pairs], [tokens for _, tokens in pairs]

    def _score(self, rows: list[dict[str, Any]], prompt_texts: list[str], completions: list[str], repeats: int) -> th.Tensor:
        """The rewards of ``repeats`` consecutive completions per row, with the rows' other columns passed along."""
        repeated = [row for row in rows for _ in range(repeats)]
        columns = {k: [row[k] for row in repeated] for k in rows[0] if k != self.config.prompt_column}
        prompts = [text for text in prompt_texts for _ in range(repeats)]
        return th.tensor(score_completions(self.reward_fn, prompts, completions, columns))

    def generate_and_score(self) -> tuple[RolloutBatch, dict[str, float]]:
        """
        Sample a generation for the next prompts, score it and compute advantages.

        :return: the scored batch (CPU) and its metrics
        """
        config = self.config
        rows = self.prompt_sampler.next_rows(config.prompts_per_iteration)
        prompt_texts, prompt_ids = self._tokenize_prompts(rows)
        start = time.perf_counter()
        self.engine.wake_up()
        batch = self.engine.generate(
            prompt_ids,
            group_size=config.group_size,
            max_new_tokens=config.max_completion_length,
            temperature=config.temperature,
            policy_version=self.iteration,
            group_offset=self.iteration * config.prompts_per_iteration,
        ).to("cpu")
        self.engine.sleep()
        generation_time = time.perf_counter() - start
        completions = self.tokenizer.batch_decode(batch.completion_token_lists(), skip_special_tokens=True)
        rewards = self._score(rows, prompt_texts, completions, config.group_size)
        advantages = group_relative_advantages(rewards, batch.group_ids, scale_by_std=config.scale_rewards)
        batch = batch.with_scores(rewards, advantages.advantages)
        lengths = batch.completion_lengths.float()
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "completion_length_mean": float(lengths.mean()),
            "completion_length_max": float(lengths.max()),
            "truncated_fraction": float(batch.truncated.float().mean()),
            "zero_advantage_fraction": advantages.zero_advantage_fraction,
            "generation_tokens_per_second": batch.num_tokens / max(generation_time, 1e-9),
        }
        if config.behavior_log_probs == "recompute":
            recomputed = self.recompute_behavior_log_probs(batch)
            difference = (recomputed.behavior_log_probs - batch.behavior_log_probs).abs()[batch.completion_mask]
            metrics["sampler_log_prob_abs_diff"] = float(difference.mean()) if difference.numel() else 0.0
            batch = recomputed
        return batch, metrics

    def accumulate_gradients(self, step_batch: RolloutBatch, step_ages: th.Tensor) -> StepAccumulation:
        """
        Forward and backward passes over the micro-batches of one optimizer step, leaving the summed gradient in
        ``.grad``. The loss normalizer is the whole step's (tokens for ``token_mean``, sequences for
        ``seq_mean_token_mean``), so the gradient does not depend on how the step is split into micro-batches.

        :param step_batch: the completions of the optimizer step (CPU)
        :param step_ages: ``[len(step_batch)]`` staleness of every completion, in iterations
        :return: the step's ratio statistics, loss, per-age sums of ``(r - 1)^2`` and token count
        """
        config = self.config
        if config.loss_aggregation == "token_mean":
            normalizer = float(max(step_batch.num_tokens, 1))
        else:
            normalizer = float(len(step_batch))
        n_ages = config.replay_capacity
        result = StepAccumulation(
            stats=None,
            loss=th.zeros((), device=self.device),
            age_sums=th.zeros(n_ages, dtype=th.float64),
            age_counts=th.zeros(n_ages, dtype=th.float64),
            tokens=0,
        )
        for micro_start in range(0, len(step_batch), config.micro_batch_size):
            rows = th.arange(micro_start, min(micro_start + config.micro_batch_size, len(step_batch)))
            micro = step_batch.select(rows).trimmed().to(self.device)
            weights = aggregation_weights(micro.completion_mask, mode=config.loss_aggregation, normalizer=normalizer)
            var_coef: float | th.Tensor = self.var_coef.value
            if config.var_coef_age_factor != 1.0:  # one lam per completion: lam * factor ** age
                lam_by_age = var_coef_by_age(self.var_coef.value, config.var_coef_age_factor, step_ages[rows])
                var_coef = lam_by_age.float().to(self.device)[:, None].expand(micro.completion_ids.shape)
            coefficients = self.objective.coefficients(
                var_coef=var_coef, clip_range=config.clip_range, clip_range_high=config.clip_range_high
            )
            with self._autocast():
                fused = fused_objective_loss(
                    rollout_completion_hidden(self.model, micro),
                    self.model.get_output_embeddings(),
                    micro.completion_ids,
                    micro.behavior_log_probs,
                    micro.advantages[:, None].expand(micro.completion_ids.shape),
                    mask=micro.completion_mask,
                    token_weights=weights,
                    objective=self.objective.function,
                    coefficients=coefficients,
                    temperature=config.temperature,
                    chunk_size=config.logprob_chunk_size,
                )
            fused.loss.backward()
            log_probs, micro_stats = fused.log_probs, fused.stats
            result.loss += fused.loss.detach()
            result.stats = micro_stats if result.stats is None else result.stats.merge(micro_stats)
            with th.no_grad():
                deviation = th.expm1(log_probs.detach() - micro.behavior_log_probs)[micro.completion_mask]
                token_ages = step_ages[rows].to(self.device)[:, None].expand_as(log_probs)[micro.completion_mask]
                sums, counts = grouped_second_moment(deviation.double(), token_ages, n_ages)
                result.age_sums += sums.cpu()
                result.age_counts += counts.cpu()
            result.tokens += micro.num_tokens
        return result

    def train_phase(self) -> dict[str, float]:
        """
        Optimizer steps on completions drawn from the replay; ``lam``'s dual step after each, from the
        ratio statistics of the whole step.

        :return: the phase's metrics
        """
        config = self.config
        contents = self.replay.contents()
        indices = self.replay.draw_indices(self.replay_generator)
        ages = (self.iteration - contents.policy_version).clamp(min=0)
        n_ages = config.replay_capacity
        age_sums, age_counts = th.zeros(n_ages, dtype=th.float64), th.zeros(n_ages, dtype=th.float64)
        phase_stats: RatioStats | None = None
        losses, grad_norms, trained_tokens = [], [], 0
        for step, step_start in enumerate(range(0, len(indices), config.optimizer_batch_size)):
            step_indices = indices[step_start : step_start + config.optimizer_batch_size]
            accumulated = self.accumulate_gradients(contents.select(step_indices), ages[step_indices])
            assert accumulated.stats is not None
            grad_norm = th.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            summary = accumulated.stats.summarize(
                context=f"iteration {self.iteration}, optimizer step {step}",
                extra={"loss": accumulated.loss, "grad_norm": grad_norm.detach().float()},
            )
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.var_coef.step(summary["ratio_var"])
            losses.append(summary["loss"])
            grad_norms.append(summary["grad_norm"])
            age_sums += accumulated.age_sums
            age_counts += accumulated.age_counts
            trained_tokens += accumulated.tokens
            phase_stats = accumulated.stats if phase_stats is None else phase_stats.merge(accumulated.stats)
        assert phase_stats is not None
        ratio = phase_stats.summarize(context=f"iteration {self.iteration}")
        metrics = {
            key: ratio[key]
            for key in ("ratio_var", "ratio_batch_var", "approx_kl", "ratio_mean", "ratio_max", "ratio_outside")
        }
        metrics.update(
            {
                "loss": float(np.mean(losses)),
                "grad_norm": float(np.mean(grad_norms)),
                "var_coef": self.var_coef.value,
                "learning_rate": float(self.lr_scheduler.get_last_lr()[0]),
                "optimizer_steps": float(len(losses)),
                "replay_size": float(len(self.replay)),
                "mean_staleness": float(ages[indices].float().mean()),
                "trained_tokens": float(trained_tokens),
            }
        )
        for age in range(n_ages):
            if age_counts[age] > 0:
                metrics[f"ratio_var_age_{age}"] = float(age_sums[age] / age_counts[age])
        return metrics

    def step(self) -> dict[str, float]:
        """
        One iteration: generate, score, store, train, push the new weights to the engine.

        :return: the iteration's metrics
        """
        start = time.perf_counter()
        batch, metrics = self.generate_and_score()
        self.replay.add(batch)
        metrics.update(self.train_phase())
        self.iteration += 1
        self.engine.update_weights(self.model)
        elapsed = time.perf_counter() - start
        metrics["iteration_seconds"] = elapsed
        metrics["tokens_per_second"] = (batch.num_tokens + metrics["trained_tokens"]) / max(elapsed, 1e-9)
        return metrics

    def evaluate(self) -> dict[str, float]:
        """
        Sample ``eval_num_samples`` completions for each held-out prompt at the evaluation sampling (``eval_temperature``,
        ``eval_top_p``, ``eval_top_k``), score them with the reward and report pass@1 and pass@k (k =
        ``eval_num_samples``). It draws from its own random stream, so training is the same with or without it.

        :return: the ``eval_*`` metrics
        """
        if self.eval_dataset is None:
            raise ValueError("evaluate() needs eval_file")
        config = self.config
        count = (
            len(self.eval_dataset) if config.eval_max_prompts is None else min(config.eval_max_prompts, len(self.eval_dataset))
        )
        rewards: list[float] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with th.random.fork_rng(devices=devices):
            th.manual_seed(config.seed + 1_000_003 * (self.iteration + 1))
            self.engine.wake_up()
            for start in range(0, count, config.prompts_per_iteration):
                rows = [self.eval_dataset[index] for index in range(start, min(start + config.prompts_per_iteration, count))]
                prompt_texts, prompt_ids = self._tokenize_prompts(rows)
                completion_ids = self.engine.sample_completions(
                    prompt_ids,
                    num_samples=config.eval_num_samples,
                    max_new_tokens=config.max_completion_length,
                    temperature=config.eval_temperature,
                    top_p=config.eval_top_p,
                    top_k=config.eval_top_k,
                )
                completions = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
                rewards.extend(self._score(rows, prompt_texts, completions, config.eval_num_samples).tolist())
            self.engine.sleep()
        return evaluation_metrics(rewards, config.eval_num_samples)

    def _evaluation_due(self) -> bool:
        config = self.config
        if self.eval_dataset is None:
            return False
        periodic = config.eval_steps > 0 and self.iteration % config.eval_steps == 0
        return periodic or self.iteration == config.num_iterations

    def train(self) -> list[dict[str, float]]:
        """
        Run (or resume, with ``resume_from_checkpoint``) until ``num_iterations``; checkpoint every ``save_steps``
        iterations and at the end.

        :return: the metrics of every iteration run by this call
        """
        from tqdm.auto import tqdm

        config = self.config
        if config.resume_from_checkpoint is not None:
            location = config.resume_from_checkpoint
            self.load_checkpoint(latest_checkpoint(config.output_dir) if location == "latest" else location)
        history = []
        with MetricsLogger(
            config.output_dir, tensorboard=config.report_to_tensorboard, resume_iteration=self.iteration
        ) as logger:
            progress = tqdm(
                total=config.num_iterations, initial=self.iteration, disable=not config.progress_bar, desc="r2vpo-llm"
            )
            while self.iteration < config.num_iterations:
                iteration = self.iteration
                try:
                    metrics = self.step()
                except NonFiniteRatioError as error:
                    raise NonFiniteRatioError(f"{error} (objective={config.objective}, lr={config.learning_rate})") from error
                evaluated = self._evaluation_due()
                if evaluated:
                    metrics.update(self.evaluate())
                history.append(metrics)
                if evaluated or iteration % config.logging_steps == 0 or self.iteration == config.num_iterations:
                    logger.log(metrics, iteration)
                progress.set_postfix(MetricsLogger.console_summary(metrics))
                progress.update(1)
                if config.save_steps and self.iteration % config.save_steps == 0:
                    self.save_checkpoint()
            progress.close()
        self.save_checkpoint()
        return history

    # ----- checkpoints ------------------------------------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """
        Save model, tokenizer, optimizer, ``lam``, replay, data position and every RNG, for an exact resume.

        :param directory: target (default ``output_dir/checkpoint-<iteration>``)
        :return: the checkpoint directory
        """
        path = (
            Path(directory) if directory is not None else Path(self.config.output_dir) / f"{CHECKPOINT_PREFIX}{self.iteration}"
        )
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path / "model")
        self.tokenizer.save_pretrained(path / "model")
        state = {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "var_coef": self.var_coef.state_dict(),
            "replay": self.replay.state_dict(),
            "prompt_sampler": self.prompt_sampler.state_dict(),
            "replay_generator": self.replay_generator.get_state(),
            "torch_rng": th.get_rng_state(),
            "cuda_rng": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
        }
        th.save(state, path / TRAINER_STATE)
        (path / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        if directory is None:
            self._delete_old_checkpoints()
        return path

    def _delete_old_checkpoints(self) -> None:
        """Keep the ``save_total_limit`` newest checkpoints of ``output_dir``."""
        limit = self.config.save_total_limit
        if limit is None:
            return
        checkpoints = numbered_checkpoints(self.config.output_dir)
        for old in checkpoints[: max(len(checkpoints) - limit, 0)]:
            shutil.rmtree(old)

    def _load_weights(self, directory: Path) -> None:
        """The trained weights saved in ``directory``: all of them, or the LoRA adapters with ``use_peft``."""
        if self.config.use_peft:
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            result: Any = set_peft_model_state_dict(self.model, load_peft_weights(str(directory)))
            if result.unexpected_keys:
                raise ValueError(f"{directory}: adapter weights this model has no place for: {result.unexpected_keys[:5]}")
            return
        saved = self._load_model(directory)
        self.model.load_state_dict(saved.state_dict())

    def load_checkpoint(self, directory: str | Path) -> None:
        """
        Restore a checkpoint written by :meth:`save_checkpoint` (the configuration must be compatible).

        :param directory: the checkpoint directory
        """
        path = Path(directory)
        if not (path / TRAINER_STATE).exists():
            raise ValueError(f"resume_from_checkpoint={str(path)!r} is not a checkpoint (no {TRAINER_STATE})")
        self._load_weights(path / "model")
        # Our own file: it holds Python/NumPy RNG states, which need full unpickling.
        state = th.load(path / TRAINER_STATE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if "lr_scheduler" in state:  # checkpoints written before schedules existed trained at a constant rate
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.var_coef.load_state_dict(state["var_coef"])
        self.replay.load_state_dict(state["replay"])
        self.prompt_sampler.load_state_dict(state["prompt_sampler"])
        self.replay_generator.set_state(state["replay_generator"])
        th.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and th.cuda.is_available():
            th.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        self.iteration = int(state["iteration"])
        self.engine.update_weights(self.model)
