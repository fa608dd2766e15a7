from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, RolloutBufferSamples, Schedule

from sb3_r2vpo.core import RatioStats, spo_objective
from sb3_r2vpo.core.validation import check_schedule, check_schedule_value
from sb3_r2vpo.r2vpo.r2vpo import R2VPO

SelfSPO = TypeVar("SelfSPO", bound="SPO")


class SPO(R2VPO):
    """
    Simple Policy Optimization (SPO), the nearest published peer of R2VPO, for comparison.

    Paper: https://arxiv.org/abs/2401.16025 (Xie et al., 2024). PPO's loop with the clipped surrogate replaced by
    ``-(r A - |A| / (2 eps) (r - 1)^2)``: the same quadratic penalty as R2VPO, with a per-sample weight
    ``|A| / (2 eps)`` fixed by the clip range instead of one ``lam`` tuned towards a target ratio variance. The
    penalized objective of each sample is largest exactly at PPO's clip boundary ``r = 1 + eps sign(A)``. The loss is
    the core's :func:`sb3_r2vpo.core.spo_objective`; everything else (rollouts, value loss, ratio statistics,
    ``target_kl``, the checks for non-finite values) is :class:`sb3_r2vpo.R2VPO`'s, with ``lam`` unused.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size
    :param n_epochs: Number of epochs when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: SPO's ``eps`` (where each sample's penalized objective peaks, as PPO's clip range), in
        ``(0, 1)``; it can be a function of the current progress remaining (from 1 to 0), which may end at 0 (the
        policy then stays where it is)
    :param clip_range_vf: Clipping parameter for the value function (as PPO's; ``None``: no clipping)
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: only at the rollout start)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (early stop, as PPO). By default, there is no limit.
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    replaced_ppo_parameters: ClassVar[dict[str, str]] = {}

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
        clip_range: float | Schedule = 0.2,
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
        check_schedule("clip_range", clip_range)
        _check_eps(check_schedule_value("clip_range", clip_range, 1.0, allow_zero=False))
        self.clip_range = clip_range
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            var_coef=0.0,  # SPO's weight is per sample: lam is not used
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _current_eps(self) -> float:
        progress = self._current_progress_remaining
        eps = check_schedule_value("clip_range", self.clip_range, progress, allow_zero=True)
        return 0.0 if eps == 0.0 else _check_eps(eps)

    def _policy_objective(
        self, log_prob: th.Tensor, advantages: th.Tensor, rollout_data: RolloutBufferSamples
    ) -> tuple[th.Tensor, RatioStats]:
        behavior_log_prob = rollout_data.old_log_prob
        eps = self._current_eps()
        if eps == 0.0:
            # The end of an annealed clip range (rl_zoo3's lin_0.2): an infinite penalty weight, whose limit is a
            # policy that does not move; the value function still trains. The statistics do not depend on eps.
            per_sample_loss, stats = spo_objective(log_prob, behavior_log_prob, advantages, band=self.ratio_band)
            return per_sample_loss * 0.0, stats
        return spo_objective(log_prob, behavior_log_prob, advantages, clip_range=eps, band=self.ratio_band)

    def _record_trust_region_settings(self) -> None:
        self.logger.record("train/clip_range", self._current_eps())


def _check_eps(eps: float) -> float:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"clip_range={eps!r} is out of range: SPO's eps must be in (0, 1)")
    return eps
