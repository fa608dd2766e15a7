import io
import pathlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from torch.nn import functional as F

from sb3_r2vpo.core import (
    DEFAULT_RATIO_BAND,
    NonFiniteRatioError,
    RatioStats,
    VarCoefController,
    aggregate_loss,
    check_positive,
    r2vpo_objective,
)
from sb3_r2vpo.core.validation import check_int, check_schedule, check_schedule_value, check_unit_interval
from sb3_r2vpo.r2vpo.metrics import MinibatchMetrics

SelfR2VPO = TypeVar("SelfR2VPO", bound="R2VPO")


class R2VPO(OnPolicyAlgorithm):
    """
    Ratio-Variance Regularized Policy Optimization (R2VPO-ON).

    PPO's loop with the clipped surrogate replaced by a quadratic penalty on the importance ratio:
    each sample's policy loss is ``-r A + lam (r - 1)^2``, whose gradient ``-grad(r) (A - 2 lam (r - 1))``
    is the plain policy gradient near ``r = 1`` and is attenuated smoothly, never zeroed, as the ratio
    moves away. ``lam`` (``var_coef``) is fixed, or tuned by projected dual ascent towards a target ratio
    variance ``target_var`` (the way SAC tunes ``ent_coef``).

    Paper: "Ratio-Variance Regularized Policy Optimization", https://arxiv.org/abs/2605.26784

    Every PPO-common default is PPO's. The measurements behind the penalty's defaults and the learning curves
    against PPO are in the documentation's Results section (``docs/modules/r2vpo.md``). When the learning rate is
    annealed, anneal ``target_var`` too (e.g. ``LinearSchedule(0.02, 0, 1)``): with a constant target, ``lam`` falls
    to 0 late in training.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
        NOTE: n_steps * n_envs must be greater than 1 (because of the advantage normalization)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epochs when optimizing the surrogate loss. With a single epoch and a single
        minibatch every ratio is exactly 1 and the penalty does nothing.
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param var_coef: ``lam``, the weight of the ratio-variance penalty ``lam (r - 1)^2``. A number >= 0 keeps it
        fixed (the paper uses 0.06 on continuous control); ``"auto"`` adapts it by dual ascent starting from 1.0,
        ``"auto_0.1"`` starting from 0.1.
    :param target_var: The target ratio variance ``delta = E[(r - 1)^2]`` of the adaptive mode, or a function of
        the current progress remaining (from 1 to 0), like PPO's ``clip_range``: a schedule that anneals the target
        tightens the trust region as the learning rate decays. To think in a divergence budget instead, use
        :func:`sb3_r2vpo.core.target_var_from_divergence` (KL budget / 0.5).
    :param var_coef_lr: The dual step size: after each gradient step,
        ``lam <- clip(lam + var_coef_lr * (ratio_var - target_var), 0, var_coef_max)`` (``var_coef_update="additive"``)
        or ``lam <- clip(lam * exp(var_coef_lr * (ratio_var / target_var - 1)), floor, var_coef_max)`` (``"log"``)
    :param var_coef_max: Upper bound of the projection of ``lam``
    :param var_coef_min: Lower bound of the projection of ``lam`` (the paper: 0). Above 0, a penalty of at least this
        weight stays while the ratio variance is under target, and the dual step adds to it when it overshoots.
    :param var_coef_update: The dual update of the adaptive mode: ``"additive"`` (the paper's Eq. 10) or ``"log"``
        (a step on ``log lam``, as SAC's ``log_ent_coef``, which cannot drive ``lam`` to 0); see
        :class:`sb3_r2vpo.core.VarCoefController`
    :param clip_range_vf: Clipping parameter for the value function,
        it can be a function of the current progress remaining (from 1 to 0).
        This is a parameter specific to the OpenAI implementation. If None is passed (default),
        no clipping will be done on the value function.
        IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (early stop of the epoch loop when the
        approximate KL of a minibatch exceeds ``1.5 * target_kl``, as in PPO). By default, there is no limit.
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    #: PPO's parameters that R2VPO does not take, and what to use instead (the TypeError for them says so).
    replaced_ppo_parameters: ClassVar[dict[str, str]] = {
        "clip_range": (
            "R2VPO has no ratio clip: its trust region is the penalty var_coef * (r - 1)^2. Use var_coef=<number> for a "
            "fixed lam, or var_coef='auto' with target_var (the target E[(r - 1)^2], about 2 * the KL budget: see "
            "sb3_r2vpo.core.target_var_from_divergence) for a lam tuned by dual ascent"
        ),
    }

    def __new__(cls, *args: Any, **kwargs: Any) -> "R2VPO":
        # Runs before __init__ with the same arguments: a PPO parameter gets an explanation instead of a bare TypeError.
        for name, advice in cls.replaced_ppo_parameters.items():
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}. {advice}.")
        return super().__new__(cls)

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    #: Half-width of the band of the ``train/ratio_outside_<band>`` statistic (PPO's default clip range).
    ratio_band: ClassVar[float] = DEFAULT_RATIO_BAND

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        var_coef: float | str = "auto",
        target_var: float | Schedule = 0.02,
        var_coef_lr: float = 0.1,
        var_coef_max: float = 100.0,
        var_coef_update: str = "additive",
        var_coef_min: float = 0.0,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        # Validate everything before the environment is built or any memory is allocated.
        initial_target_var = check_schedule_value("target_var", target_var, 1.0, allow_zero=False)
        VarCoefController(
            var_coef,
            target_var=initial_target_var,
            var_coef_lr=var_coef_lr,
            var_coef_max=var_coef_max,
            var_coef_update=var_coef_update,
            var_coef_min=var_coef_min,
        )
        check_schedule("learning_rate", learning_rate)
        n_steps = check_int("n_steps", n_steps, 1)
        batch_size = check_int("batch_size", batch_size, 2 if normalize_advantage else 1)
        n_epochs = check_int("n_epochs", n_epochs, 1)
        check_unit_interval("gamma", gamma)
        check_unit_interval("gae_lambda", gae_lambda)
        if clip_range_vf is not None:
            check_schedule("clip_range_vf", clip_range_vf)
        check_positive("ent_coef", ent_coef, allow_zero=True)
        check_positive("vf_coef", vf_coef, allow_zero=True)
        check_positive("max_grad_norm", max_grad_norm, allow_inf=True)
        if target_kl is not None:
            check_positive("target_kl", target_kl)
        check_int("stats_window_size", stats_window_size, 1)

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(
                spaces.Box,
                spaces.Discrete,
                spaces.MultiDiscrete,
                spaces.MultiBinary,
            ),
        )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.var_coef = var_coef
        self.target_var = target_var
        self.var_coef_lr = float(var_coef_lr)
        self.var_coef_max = float(var_coef_max)
        self.var_coef_update = var_coef_update
        self.var_coef_min = float(var_coef_min)
        #: ``lam`` and its step count as plain data, written by :meth:`save` (``None``: start from ``var_coef``).
        self.var_coef_state: dict[str, Any] | None = None
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        if self.env is not None:
            self._check_buffer_size(self.env.num_envs)

        if _init_setup_model:
            self._setup_model()

    def _check_buffer_size(self, n_envs: int) -> None:
        if self.normalize_advantage and n_envs * self.n_steps <= 1:
            raise ValueError(
                f"n_steps * n_envs must be > 1 when normalize_advantage=True (advantage normalization), "
                f"got n_steps={self.n_steps} and n_envs={n_envs}"
            )
        self._warn_about_truncated_minibatches(n_envs)

    def _warn_about_truncated_minibatches(self, n_envs: int) -> None:
        buffer_size = n_envs * self.n_steps
        if buffer_size % self.batch_size > 0:
            warnings.warn(
                f"You have specified a mini-batch size of {self.batch_size}, but because the rollout buffer is of size "
                f"n_steps * n_envs = {buffer_size}, after every {buffer_size // self.batch_size} untruncated mini-batches, "
                f"there will be a truncated mini-batch of size {buffer_size % self.batch_size}.\n"
                f"We recommend using a batch_size that is a factor of n_steps * n_envs "
                f"(n_steps={self.n_steps} and n_envs={n_envs})."
            )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.target_var = FloatSchedule(self.target_var)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        self._setup_var_coef_controller()

    def _setup_var_coef_controller(self) -> None:
        """
        Build the controller of ``lam`` from ``var_coef``, ``var_coef_lr`` and ``var_coef_max``, and continue from the
        saved ``lam`` when the model was loaded with the same ``var_coef`` (a different one, given to ``load()``,
        starts ``lam`` afresh from it; new ``var_coef_lr`` / ``var_coef_max`` apply to the saved ``lam``).
        """
        overrides: dict[str, Any] = self.__dict__.pop("_load_overrides", {})
        legacy = self.__dict__.pop("var_coef_controller", None)
        if isinstance(legacy, VarCoefController):
            # Files saved by 0.1.0 before this format pickled the controller: take its settings and state as plain
            # data (custom_objects for settings such a file lacks are applied here; SB3 applies only those it holds).
            for name in ("var_coef_lr", "var_coef_max"):
                setattr(self, name, overrides[name] if name in overrides else getattr(legacy, name))
            if "var_coef_state" not in overrides:
                saved_var_coef = None if "var_coef" in overrides else self.var_coef
                self.var_coef_state = {"var_coef": saved_var_coef, "value": legacy.value, "n_steps": legacy.n_steps}
        state = self.var_coef_state
        resume = state is not None and state["var_coef"] == self.var_coef
        self.var_coef_controller = VarCoefController(
            self.var_coef,
            target_var=check_schedule_value("target_var", self.target_var, 1.0, allow_zero=False),
            var_coef_lr=self.var_coef_lr,
            var_coef_max=self.var_coef_max,
            # Files saved before the log-space update existed used the additive one.
            var_coef_update=getattr(self, "var_coef_update", "additive"),
            var_coef_min=getattr(self, "var_coef_min", 0.0),
            resume_from=(state["value"], state["n_steps"]) if resume and state is not None else None,
        )

    def _var_coef_state_now(self) -> dict[str, Any]:
        controller = self.var_coef_controller
        return {"var_coef": self.var_coef, "value": controller.value, "n_steps": controller.n_steps}

    def _excluded_save_params(self) -> list[str]:
        # lam is saved as plain data (var_coef_state), not as a pickled controller object.
        return [*super()._excluded_save_params(), "var_coef_controller"]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        self.var_coef_state = self._var_coef_state_now()
        super().save(path, exclude=exclude, include=include)

    @classmethod
    def load(
        cls: type[SelfR2VPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfR2VPO:
        # SB3 sets every keyword argument as an attribute before _setup_model(): pass on what was overridden, so that
        # the settings of a file that pickled the controller apply only where the caller did not override them.
        overrides = {**(custom_objects or {}), **kwargs}
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            _load_overrides=overrides,
            **kwargs,
        )

    @property
    def var_coef_value(self) -> float:
        """The current ``lam``."""
        return self.var_coef_controller.value

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # Schedules are functions of the progress remaining from 1 to 0, but the last rollout can overshoot
        # total_timesteps (SB3 then gives a negative progress, and a linear schedule a negative learning rate, i.e.
        # gradient ascent): the progress stops at 0, the end of the schedules' domain.
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = max(self._current_progress_remaining, 0.0)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # A schedule is checked where it is evaluated: a negative learning rate would be gradient ascent.
        check_schedule_value("learning_rate", self.lr_schedule, self._current_progress_remaining, allow_zero=True)
        super()._update_learning_rate(optimizers)

    def _training_epochs(self) -> Iterator[Iterator[RolloutBufferSamples]]:
        """The minibatches of one ``train()`` call, epoch by epoch (R2VPO-OFF draws them from its replay)."""
        for _ in range(self.n_epochs):
            yield self.rollout_buffer.get(self.batch_size)

    def _policy_objective(
        self, log_prob: th.Tensor, advantages: th.Tensor, rollout_data: RolloutBufferSamples
    ) -> tuple[th.Tensor, RatioStats]:
        """The per-sample policy loss of a minibatch and its ratio statistics: R2VPO's, at the current ``lam``."""
        return r2vpo_objective(
            log_prob, rollout_data.old_log_prob, advantages, var_coef=self._var_coef_of(rollout_data), band=self.ratio_band
        )

    def _var_coef_of(self, rollout_data: RolloutBufferSamples) -> float | th.Tensor:
        """``lam`` for a minibatch's samples: the controller's (R2VPO-OFF may weight it by the samples' age)."""
        return self.var_coef_controller.value

    def _extra_minibatch_stats(self, log_prob: th.Tensor, rollout_data: RolloutBufferSamples) -> dict[str, th.Tensor]:
        """
        More scalar tensors, summed over the minibatches of a ``train()`` call into ``MinibatchMetrics.extra_sums``
        and fetched in the same device transfer as the ratio statistics (R2VPO-OFF: ratio moments by staleness).
        """
        return {}

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        self.var_coef_controller.target_var = check_schedule_value("target_var", self.target_var, progress, allow_zero=True)
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = check_schedule_value("clip_range_vf", self.clip_range_vf, progress, allow_zero=True)

        metrics = MinibatchMetrics()
        iteration = self._n_updates // max(self.n_epochs, 1)
        continue_training = True
        for epoch, minibatches in enumerate(self._training_epochs()):
            metrics.start_epoch()
            for minibatch, rollout_data in enumerate(minibatches):
                context = f"train() call {iteration}, epoch {epoch}, minibatch {minibatch}"
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see SB3 GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # The penalized surrogate -r A + lam (r - 1)^2 replaces PPO's clipped one.
                lam = self.var_coef_controller.value
                per_sample_loss, ratio_stats = self._policy_objective(log_prob, advantages, rollout_data)
                policy_loss = aggregate_loss(per_sample_loss, mode="mean")

                if clip_range_vf is None:
                    values_pred = values
                else:
                    # Clip the difference between old and new value (depends on the reward scaling)
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(rollout_data.returns, values_pred)

                # Approximate entropy when no analytical form
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                # One device transfer for everything logged, checked for NaN/inf before any gradient is taken.
                extra_stats = self._extra_minibatch_stats(log_prob, rollout_data)
                summary = ratio_stats.summarize(
                    context=context,
                    extra={
                        "policy_loss": policy_loss,
                        "value_loss": value_loss,
                        "entropy_loss": entropy_loss,
                        "loss": loss,
                        **extra_stats,
                    },
                )
                metrics.add(summary, lam, summed=extra_stats.keys())

                # Approximate reverse KL for early stopping, as PPO (SB3 issue #417): between the policy now and at the
                # start of this update (R2VPO-OFF provides it; on-policy it is the KL to the behavior policy).
                update_kl = summary.get("update_kl", summary["approx_kl"])
                if self.target_kl is not None and update_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {update_kl:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                if not th.isfinite(grad_norm):
                    raise NonFiniteRatioError(
                        f"Non-finite gradient norm ({grad_norm.item()}) at {context}: the loss was finite but its "
                        "gradient overflowed; the step was not taken. Try a smaller learning_rate or a larger "
                        "var_coef / smaller target_var."
                    )
                self.policy.optimizer.step()
                self.var_coef_controller.step(summary["ratio_var"])

            self._n_updates += 1
            if not continue_training:
                break

        self._record_train_metrics(metrics, clip_range_vf)

    def _record_train_metrics(self, metrics: MinibatchMetrics, clip_range_vf: float | None) -> None:
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        for key, value in metrics.as_log_dict(self.ratio_band).items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self._record_trust_region_settings()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _record_trust_region_settings(self) -> None:
        """Log what sets the trust region in this update: ``lam`` and its target."""
        self.logger.record("train/var_coef", self.var_coef_controller.value)
        self.logger.record("train/target_var", self.var_coef_controller.target_var)

    def learn(
        self: SelfR2VPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "R2VPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfR2VPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
