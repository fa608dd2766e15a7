import math
import pathlib
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_r2vpo.core import check_positive, grouped_second_moment, importance_ratio
from sb3_r2vpo.core.dual import check_var_coef_age_factor, var_coef_by_age
from sb3_r2vpo.core.replay_sampling import check_replay_sampling
from sb3_r2vpo.core.validation import check_int
from sb3_r2vpo.r2vpo.metrics import MinibatchMetrics
from sb3_r2vpo.r2vpo.r2vpo import R2VPO
from sb3_r2vpo.r2vpo_off.buffers import (
    InputNormalization,
    ReplayBufferSamples,
    RolloutReplayBuffer,
    TimeoutRecord,
    available_memory_bytes,
    minibatch_sizes,
    replay_nbytes,
)

SelfR2VPOOff = TypeVar("SelfR2VPOOff", bound="R2VPOOff")


class R2VPOOff(R2VPO):
    """
    R2VPO-OFF: R2VPO with a FIFO replay of the last ``replay_capacity`` rollouts (Algorithm 2 of the paper).

    After each rollout, minibatches are drawn uniformly from every stored transition, fresh and stale. Each
    transition keeps the log-probability of the policy that collected it, and the ratio of stale data is
    taken against that behavior log-probability: the variance penalty ``lam (r - 1)^2`` softly down-weights
    data that the policy has moved away from, where PPO's clip would zero its gradient.

    ``utd_ratio`` (update-to-data) is the number of gradient passes per fresh sample per iteration: each
    iteration draws ``utd_ratio * n_steps * n_envs`` samples from the replay, in minibatches of
    ``batch_size``. It replaces PPO's ``n_epochs``: with ``replay_capacity=1`` it *is* ``n_epochs``, and the
    algorithm is exactly R2VPO-ON.

    Stale rollouts' advantages and value targets are recomputed with the current critic before each update
    (GAE over the stored trajectory, re-bootstrapping rollout ends and time-limit truncations), or kept as
    they were at collection (``recompute_advantages=False``). Recomputing costs one critic pass over the replay per
    iteration; the measurements behind it being the default are in the documentation's Results section
    (``docs/modules/r2vpo_off.md``).

    Paper: "Ratio-Variance Regularized Policy Optimization", https://arxiv.org/abs/2605.26784

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update (rollout length)
    :param batch_size: Minibatch size
    :param replay_capacity: How many past rollouts (iterations) the FIFO keeps, the newest included (paper: 4)
    :param utd_ratio: Gradient passes per fresh sample per iteration (paper: 2); plays the role of ``n_epochs``
    :param recompute_advantages: Recompute stale rollouts' values, advantages and returns with the current critic
        before each update (True), or keep those computed at collection time (False)
    :param replay_sampling: How minibatches are drawn: ``"uniform"`` over every stored transition (the paper's
        Algorithm 2: the fresh rollout gets ``utd_ratio / replay_capacity`` passes in the update right after it was
        collected), or ``"newest_first"``: one full pass over the newest rollout, then the rest of the
        ``utd_ratio * n_steps * n_envs`` samples uniformly over all (``1 + (utd_ratio - 1) / replay_capacity`` passes
        for fresh data, the same number of samples per update)
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param var_coef: ``lam``, the weight of the ratio-variance penalty (see :class:`sb3_r2vpo.R2VPO`)
    :param target_var: The target ratio variance of the adaptive mode (float or schedule)
    :param var_coef_lr: The dual step size
    :param var_coef_max: Upper bound of the projection of ``lam``
    :param var_coef_update: The dual update rule, ``"additive"`` (Eq. 10) or ``"log"`` (see :class:`sb3_r2vpo.R2VPO`)
    :param var_coef_min: Lower bound of the projection of ``lam`` (see :class:`sb3_r2vpo.R2VPO`)
    :param var_coef_age_factor: Samples ``k`` iterations old are penalized with ``lam * var_coef_age_factor**k``
        (> 0; 1: one ``lam`` for every age, the paper's). The controller steps ``lam`` as before; needs
        ``replay_capacity > 1``
    :param clip_range_vf: Clipping parameter for the value function (None: no clipping)
    :param normalize_advantage: Whether to normalize or not the advantage (per minibatch)
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between the policy at the start of each update and the policy being
        trained (early stop of the update when a minibatch's approximate KL exceeds ``1.5 * target_kl``, as in PPO).
        It is not measured against the behavior policies of the stored rollouts, which stale data are far from
        before any step is taken; setting it costs one actor pass over the replay per iteration.
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    replay_buffer: RolloutReplayBuffer
    policy_aliases: ClassVar = R2VPO.policy_aliases
    replaced_ppo_parameters: ClassVar[dict[str, str]] = {
        **R2VPO.replaced_ppo_parameters,
        "n_epochs": (
            "R2VPOOff draws utd_ratio * n_steps * n_envs samples from its replay per iteration: use utd_ratio "
            "(with replay_capacity=1, utd_ratio=n_epochs is R2VPO's update with n_epochs exactly)"
        ),
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        replay_capacity: int = 4,
        utd_ratio: float = 2.0,
        recompute_advantages: bool = True,
        replay_sampling: str = "uniform",
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        var_coef: float | str = "auto",
        target_var: float | Schedule = 0.02,
        var_coef_lr: float = 0.1,
        var_coef_max: float = 100.0,
        var_coef_update: str = "additive",
        var_coef_min: float = 0.0,
        var_coef_age_factor: float = 1.0,
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
        self.replay_capacity = check_int("replay_capacity", replay_capacity, 1)
        self.utd_ratio = check_positive("utd_ratio", utd_ratio)
        self.recompute_advantages = bool(recompute_advantages)
        self.replay_sampling = check_replay_sampling(replay_sampling)
        self.var_coef_age_factor = check_var_coef_age_factor(var_coef_age_factor, self.replay_capacity)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            # SB3 counts updates in epochs; an epoch here is n_steps * n_envs samples drawn from the replay.
            n_epochs=max(1, math.ceil(self.utd_ratio)),
            gamma=gamma,
            gae_lambda=gae_lambda,
            var_coef=var_coef,
            target_var=target_var,
            var_coef_lr=var_coef_lr,
            var_coef_max=var_coef_max,
            var_coef_update=var_coef_update,
            var_coef_min=var_coef_min,
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
            _init_setup_model=False,
        )
        self._replay_iteration = 0
        if _init_setup_model:
            self._setup_model()

    @property
    def _replay_sampling(self) -> str:
        # Files saved before replay_sampling existed drew uniformly.
        return getattr(self, "replay_sampling", "uniform")

    def _warn_about_truncated_minibatches(self, n_envs: int) -> None:
        fresh = n_envs * self.n_steps
        # Once the replay is full, an iteration draws successive permutations of the stored transitions.
        sizes = minibatch_sizes(
            self._samples_per_iteration(n_envs),
            self.replay_capacity * fresh,
            self.batch_size,
            sampling=self._replay_sampling,
            n_newest=fresh,
        )
        smaller = [size for size in sizes if size < self.batch_size]
        if smaller:
            stored = self.replay_capacity * fresh
            cause = (
                f"batch_size is larger than the full replay ({stored} transitions)"
                if self.batch_size > stored
                else f"utd_ratio * n_steps * n_envs = {self._samples_per_iteration(n_envs)} samples drawn from "
                f"{stored} stored ones do not split into whole minibatches"
            )
            warnings.warn(
                f"With batch_size={self.batch_size}, {len(smaller)} of the {len(sizes)} minibatches of each train() call "
                f"(replay full) are smaller than batch_size (sizes {sorted(set(smaller))}): {cause}. We recommend a "
                "batch_size that divides both the samples drawn per iteration and the replay's size."
            )

    def _samples_per_iteration(self, n_envs: int) -> int:
        return max(1, round(self.utd_ratio * self.n_steps * n_envs))

    def _check_replay_memory(self) -> None:
        needed = replay_nbytes(self.replay_capacity, self.n_steps, self.n_envs, self.observation_space, self.action_space)
        available = available_memory_bytes()
        if available is not None and needed > available:
            raise ValueError(
                f"replay_capacity={self.replay_capacity} needs {needed / 2**30:.2f} GiB for "
                f"{self.replay_capacity} rollouts of n_steps * n_envs = {self.n_steps * self.n_envs} transitions, "
                f"but only {available / 2**30:.2f} GiB of memory is available: lower replay_capacity or n_steps"
            )

    def _setup_model(self) -> None:
        # Checked here, not in __init__: load() sets the saved configuration between the two.
        self._check_replay_memory()
        super()._setup_model()
        self.replay_buffer = RolloutReplayBuffer(
            self.replay_capacity, self.n_steps, self.n_envs, self.observation_space, self.action_space, self.device
        )
        self._pending_timeouts: list[tuple[int, int, Any, float]] = []
        self._raw_observations: list[Any] = []
        self._raw_rewards: list[np.ndarray] = []

    def _excluded_save_params(self) -> list[str]:
        # The replay is saved separately (save_replay_buffer), as SB3's off-policy algorithms do.
        return [*super()._excluded_save_params(), "replay_buffer", "_pending_timeouts", "_raw_observations", "_raw_rewards"]

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        self._pending_timeouts = []
        self._raw_rewards = []
        # With VecNormalize the replay keeps raw inputs (as SB3's off-policy algorithms do): the raw observation
        # before each step, kept here step by step, is normalized with the statistics of the time it is used.
        vec_normalize = self._vec_normalize_env
        self._raw_observations = [] if vec_normalize is None else [vec_normalize.get_original_obs()]
        return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        if dones is None:
            return
        vec_normalize = self._vec_normalize_env
        if vec_normalize is not None:
            self._raw_observations.append(vec_normalize.get_original_obs())
            self._raw_rewards.append(vec_normalize.get_original_reward())
        # Keep what SB3 is about to bootstrap a time-limit truncation with, so the replay can re-bootstrap it later.
        for env_index, done in enumerate(dones):
            info = infos[env_index]
            if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
                terminal_obs = info["terminal_observation"]
                with th.no_grad():
                    value = float(self.policy.predict_values(self.policy.obs_to_tensor(terminal_obs)[0])[0].item())
                if vec_normalize is not None:
                    # VecNormalize replaced the raw terminal observation by its normalization with this step's
                    # statistics; invert it (exact unless an entry was clipped at clip_obs standard deviations).
                    terminal_obs = vec_normalize.unnormalize_obs(terminal_obs)
                self._pending_timeouts.append((self.rollout_buffer.pos, env_index, terminal_obs, value))

    def _timeout_record(self) -> TimeoutRecord:
        steps = np.array([t[0] for t in self._pending_timeouts], dtype=np.int64)
        envs = np.array([t[1] for t in self._pending_timeouts], dtype=np.int64)
        observations: np.ndarray | dict[str, np.ndarray]
        # get_obs_shape, as SB3's buffers: a Discrete observation is stored as shape (1,), not ().
        if isinstance(self.observation_space, spaces.Dict):
            observations = {
                key: np.array([t[2][key] for t in self._pending_timeouts]).reshape(len(steps), *get_obs_shape(subspace))
                for key, subspace in self.observation_space.spaces.items()
            }
        else:
            observations = np.array([t[2] for t in self._pending_timeouts]).reshape(
                len(steps), *get_obs_shape(self.observation_space)
            )
        return TimeoutRecord(steps, envs, observations)

    def _raw_rollout(self) -> tuple[Any, Any, np.ndarray]:
        """The fresh rollout's raw observations, raw last observation and rewards without time-limit bootstraps."""
        vec_normalize = self._vec_normalize_env
        if vec_normalize is None:
            rewards = self.rollout_buffer.rewards.copy()
            for step, env_index, _, value in self._pending_timeouts:
                rewards[step, env_index] -= self.gamma * value  # SB3 added gamma * V(terminal) at collection
            return self.rollout_buffer.observations, self._last_obs, rewards
        if len(self._raw_observations) != self.n_steps + 1:
            raise RuntimeError(
                f"R2VPOOff kept {len(self._raw_observations)} raw observations for a rollout of n_steps={self.n_steps}: "
                "collect_rollouts() was bypassed"
            )
        first = self._raw_observations[0]
        if isinstance(first, dict):
            observations: Any = {key: np.stack([obs[key] for obs in self._raw_observations[:-1]]) for key in first}
        else:
            observations = np.stack(self._raw_observations[:-1])
        return observations, self._raw_observations[-1], np.stack(self._raw_rewards).astype(np.float32)

    def train(self) -> None:
        """
        Store the fresh rollout in the replay, refresh the stale rollouts' advantages, then update the policy on
        minibatches drawn uniformly from the replay.
        """
        self._replay_iteration += 1
        assert self._last_obs is not None and self._last_episode_starts is not None, "train() needs a collected rollout"
        observations, last_observation, rewards = self._raw_rollout()
        self.replay_buffer.add(
            self.rollout_buffer,
            observations=observations,
            last_observation=last_observation,
            rewards=rewards,
            last_dones=self._last_episode_starts,
            timeouts=self._timeout_record(),
            iteration=self._replay_iteration,
        )
        normalization = InputNormalization.of(self._vec_normalize_env)
        self.policy.set_training_mode(False)
        if self.recompute_advantages and self.replay_buffer.n_rollouts > 1:
            self.replay_buffer.recompute_advantages(self.policy, self.gamma, self.gae_lambda, normalization)
        if self.target_kl is not None:
            # target_kl bounds how far this update moves the policy, as PPO's does: the KL is taken against the
            # policy at the start of the update, not against the mix of older behavior policies that filled the replay.
            self.replay_buffer.record_update_start(self._log_prob_of_stored_actions, normalization)
        super().train()

    def _log_prob_of_stored_actions(self, observations: Any, actions: th.Tensor | None) -> th.Tensor:
        assert actions is not None, "the replay passes the stored actions"
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        return self.policy.evaluate_actions(observations, actions)[1]

    def _training_epochs(self) -> Iterator[Iterator[ReplayBufferSamples]]:  # type: ignore[override]
        fresh = self.n_steps * self.n_envs
        n_samples = self._samples_per_iteration(self.n_envs)
        iteration = self._replay_iteration
        normalization = InputNormalization.of(self._vec_normalize_env)
        # Every drawn minibatch is used. A minibatch never spans two permutation passes, so with fewer stored
        # transitions than batch_size they are smaller than batch_size (as PPO's when its buffer is smaller),
        # and there are more of them; an "epoch" (for SB3's counters and target_kl) is ~ one fresh rollout's worth.
        epoch: list[np.ndarray] = []
        in_epoch = 0
        for batch in self.replay_buffer.minibatch_indices(n_samples, self.batch_size, sampling=self._replay_sampling):
            epoch.append(batch)
            in_epoch += len(batch)
            if in_epoch >= fresh:
                yield (self.replay_buffer.get_samples(indices, iteration, normalization) for indices in epoch)
                epoch, in_epoch = [], 0
        if epoch:
            yield (self.replay_buffer.get_samples(indices, iteration, normalization) for indices in epoch)

    def _var_coef_of(self, rollout_data: Any) -> float | th.Tensor:
        lam = self.var_coef_controller.value
        factor = getattr(self, "var_coef_age_factor", 1.0)  # files saved before it existed: one lam for every age
        if factor == 1.0:
            return lam
        return var_coef_by_age(lam, factor, rollout_data.ages).to(rollout_data.old_log_prob.dtype)

    def _extra_minibatch_stats(self, log_prob: th.Tensor, rollout_data: Any) -> dict[str, th.Tensor]:
        ratio = importance_ratio(log_prob.detach(), rollout_data.old_log_prob)
        sums, counts = grouped_second_moment(ratio.minus_one, rollout_data.ages, self.replay_capacity)
        extras = {}
        for age in range(self.replay_capacity):
            extras[f"age_{age}_sum_sq"] = sums[age]
            extras[f"age_{age}_count"] = counts[age]
        if self.target_kl is not None:
            since_start = importance_ratio(log_prob.detach(), rollout_data.update_start_log_prob)
            extras["update_kl"] = (since_start.minus_one - since_start.log).mean()
        return extras

    def _record_train_metrics(self, metrics: MinibatchMetrics, clip_range_vf: float | None) -> None:
        super()._record_train_metrics(metrics, clip_range_vf)
        sums = metrics.extra_sums
        counts = np.array([sums.get(f"age_{age}_count", 0.0) for age in range(self.replay_capacity)])
        self.logger.record("train/replay_size", self.replay_buffer.size())
        self.logger.record(
            "train/mean_staleness", float((np.arange(self.replay_capacity) * counts).sum() / max(counts.sum(), 1))
        )
        for age in range(self.replay_capacity):
            if counts[age] > 0:
                self.logger.record(f"train/ratio_var_age_{age}", sums[f"age_{age}_sum_sq"] / counts[age])
        if "update_kl" in sums:
            self.logger.record("train/update_kl", sums["update_kl"] / max(len(metrics.policy_losses), 1))

    def save_replay_buffer(self, path: str | pathlib.Path) -> None:
        """
        Save the replay (all stored rollouts) as a pickle file.

        :param path: where to save
        """
        save_to_pkl(path, self.replay_buffer, self.verbose)

    def load_replay_buffer(self, path: str | pathlib.Path) -> None:
        """
        Load a replay saved by :meth:`save_replay_buffer`; it must match this model's replay layout.

        :param path: the saved file
        :raises ValueError: if its layout differs from this model's, or it holds rollouts newer than the model
        """
        buffer = load_from_pkl(path, self.verbose)
        if not isinstance(buffer, RolloutReplayBuffer):
            raise TypeError(f"{path} holds a {type(buffer).__name__}, not a RolloutReplayBuffer")
        saved_format = getattr(buffer, "format_version", 1)
        if saved_format != RolloutReplayBuffer.FORMAT_VERSION:
            raise ValueError(
                f"The replay in {path} was saved in format {saved_format} (rewards with SB3's time-limit bootstrap, "
                f"observations as normalized at collection); this version reads format "
                f"{RolloutReplayBuffer.FORMAT_VERSION} (raw observations and rewards): train without it, it refills"
            )
        expected = (self.replay_capacity, self.n_steps, self.n_envs, self.observation_space, self.action_space)
        found = (buffer.capacity, buffer.n_steps, buffer.n_envs, buffer.observation_space, buffer.action_space)
        names = ("replay_capacity", "n_steps", "n_envs", "observation_space", "action_space")
        for name, mine, theirs in zip(names, expected, found, strict=True):
            if mine != theirs:
                raise ValueError(f"The replay in {path} has {name}={theirs}, this model has {name}={mine}")
        stored = buffer.iterations[buffer.iterations >= 0]
        if len(stored) > 0:
            oldest, newest = int(stored.min()), int(stored.max())
            # Each rollout's age (iterations since it was collected) must lie in [0, replay_capacity) at the next
            # train() call's statistics: a replay saved at another point of training breaks that, so refuse it.
            if newest > self._replay_iteration or self._replay_iteration - oldest >= self.replay_capacity:
                raise ValueError(
                    f"The replay in {path} holds rollouts of iterations {oldest}..{newest}, but this model is at "
                    f"iteration {self._replay_iteration} (it keeps the last replay_capacity={self.replay_capacity}): "
                    "load the model file that was saved together with this replay"
                )
        buffer.device = self.device
        self.replay_buffer = buffer

    def learn(
        self: SelfR2VPOOff,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "R2VPOOff",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfR2VPOOff:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
