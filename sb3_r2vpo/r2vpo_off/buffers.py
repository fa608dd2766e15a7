"""FIFO replay of whole past rollouts for R2VPO-OFF, stored in preallocated arrays."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.preprocessing import get_action_dim, get_obs_shape, is_image_space

from sb3_r2vpo.core.replay_sampling import permutation_passes

TensorObs = th.Tensor | dict[str, th.Tensor]
NumpyObs = np.ndarray | dict[str, np.ndarray]


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class InputNormalization:
    """
    How the replay's stored raw inputs become what the policy and the critic see now.

    The replay keeps raw observations and rewards (as SB3's off-policy ``ReplayBuffer`` does with ``VecNormalize``)
    and normalizes them when they are used, with the current statistics, so that stale data are evaluated on the
    inputs today's normalization gives them.

    :param observations: raw observation batch (array, or dict of arrays) -> normalized batch
    :param rewards: raw rewards -> normalized rewards
    """

    observations: Callable[[NumpyObs], NumpyObs] = _identity
    rewards: Callable[[np.ndarray], np.ndarray] = _identity

    @classmethod
    def of(cls, vec_normalize: Any | None) -> "InputNormalization":
        """The current statistics of a ``VecNormalize`` wrapper (None: no normalization)."""
        if vec_normalize is None:
            return cls()
        return cls(observations=vec_normalize.normalize_obs, rewards=vec_normalize.normalize_reward)


NO_NORMALIZATION = InputNormalization()


class ReplayBufferSamples(NamedTuple):
    """
    A minibatch from the replay: the fields of SB3's ``RolloutBufferSamples``, each sample's staleness, and the
    log-probability under the policy at the start of the current update (for ``target_kl``; zeros when not recorded).
    """

    observations: TensorObs
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    ages: th.Tensor
    update_start_log_prob: th.Tensor


@dataclass
class TimeoutRecord:
    """
    Episodes of one rollout that were cut by a time limit, needed to re-bootstrap them with a newer critic.

    SB3 adds ``gamma * V(terminal_observation)`` to the reward of a truncated step at collection time; the replay
    stores rewards without it and adds the current critic's value of the (raw, then currently normalized) terminal
    observation whenever it recomputes the advantages.

    :param steps: step index of each truncation
    :param envs: env index of each truncation
    :param observations: the raw terminal observations (array, or dict of arrays), one row per truncation
    """

    steps: np.ndarray
    envs: np.ndarray
    observations: np.ndarray | dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.steps)


def generalized_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    GAE(lambda) for a batch of rollouts at once, with the conventions of SB3's ``RolloutBuffer``.

    :param rewards: ``[rollouts, n_steps, n_envs]`` rewards (time-limit bootstraps included)
    :param values: ``[rollouts, n_steps, n_envs]`` critic values of the observations
    :param episode_starts: ``[rollouts, n_steps, n_envs]`` 1 where an episode starts at that step
    :param last_values: ``[rollouts, n_envs]`` values of the observations after each rollout's last step
    :param last_dones: ``[rollouts, n_envs]`` whether the last step ended its episode
    :param gamma: discount
    :param gae_lambda: GAE's lambda
    :return: ``(advantages, returns)``, same shape as ``rewards``
    """
    advantages = np.zeros_like(rewards)
    last_gae = np.zeros_like(last_values)
    n_steps = rewards.shape[1]
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - last_dones.astype(np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[:, step + 1]
            next_values = values[:, step + 1]
        delta = rewards[:, step] + gamma * next_values * next_non_terminal - values[:, step]
        last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
        advantages[:, step] = last_gae
    return advantages, advantages + values


def _observation_layout(observation_space: spaces.Space) -> dict[str | None, tuple[tuple[int, ...], np.dtype]]:
    """Shape and storage dtype of each observation array (key None for non-Dict spaces)."""
    subspaces = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {None: observation_space}
    layout: dict[str | None, tuple[tuple[int, ...], np.dtype]] = {}
    for key, subspace in subspaces.items():
        # Images stay uint8 (4x smaller than SB3's float32 rollout storage); they become float32 when sampled.
        dtype = np.dtype(np.uint8) if is_image_space(subspace, check_channels=False) else np.dtype(np.float32)
        layout[key] = (tuple(get_obs_shape(subspace)), dtype)  # type: ignore[arg-type]
    return layout


def replay_nbytes(
    capacity: int, n_steps: int, n_envs: int, observation_space: spaces.Space, action_space: spaces.Space
) -> int:
    """Bytes the replay's arrays will take (observations, actions and 8 float32 columns per transition, 7 used)."""
    obs_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in _observation_layout(observation_space).values())
    per_transition = obs_bytes + 4 * get_action_dim(action_space) + 4 * 8
    return capacity * n_envs * (n_steps * per_transition + obs_bytes + 1)


def available_memory_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """
    Memory available for new allocations without swapping, or None where the OS does not tell.

    On Linux this is ``MemAvailable`` (free memory plus the page cache and other memory the kernel can reclaim);
    free pages alone (``SC_AVPHYS_PAGES``) leave out the page cache and refuse replays that would fit.

    :param meminfo: the file to read ``MemAvailable`` from
    """
    try:
        with open(meminfo) as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def minibatch_sizes(
    n_samples: int, n_stored: int, batch_size: int, *, sampling: str = "uniform", n_newest: int = 0
) -> list[int]:
    """
    Sizes of the minibatches :meth:`RolloutReplayBuffer.minibatch_indices` yields: each permutation pass
    (:func:`permutation_passes`) cut into ``batch_size`` chunks.

    :param n_samples: total number of samples drawn
    :param n_stored: number of stored transitions
    :param batch_size: minibatch size
    :param sampling: one of :data:`sb3_r2vpo.core.replay_sampling.REPLAY_SAMPLINGS`
    :param n_newest: transitions of the newest rollout (``"newest_first"``)
    """
    sizes: list[int] = []
    for _, take in permutation_passes(n_samples, n_stored, sampling=sampling, n_newest=n_newest):
        sizes += [batch_size] * (take // batch_size) + ([take % batch_size] if take % batch_size else [])
    return sizes


class RolloutReplayBuffer:
    """
    FIFO of the last ``capacity`` rollouts (iterations) of an on-policy algorithm, for R2VPO-OFF.

    Every transition keeps the log-probability of the policy that collected it (``log_probs``), so stale
    data is always weighted against its true behavior policy. Observations and rewards are stored raw (before
    ``VecNormalize``, and rewards without SB3's time-limit bootstrap) and normalized when used
    (:class:`InputNormalization`). All storage is preallocated as
    ``[capacity, n_steps, n_envs, ...]`` arrays. Flat indices follow SB3's ``RolloutBuffer``
    (``slot * n_steps * n_envs + env * n_steps + step``), so with one slot the minibatches are the same.

    :param capacity: number of rollouts kept
    :param n_steps: steps per env in a rollout
    :param n_envs: number of envs
    :param observation_space: observation space
    :param action_space: action space
    :param device: device of the sampled tensors
    """

    def __init__(
        self,
        capacity: int,
        n_steps: int,
        n_envs: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "cpu",
    ) -> None:
        self.capacity = capacity
        self.n_steps = n_steps
        self.n_envs = n_envs
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = th.device(device)
        self.action_dim = get_action_dim(action_space)
        self._layout = _observation_layout(observation_space)
        shape = (capacity, n_steps, n_envs)
        self.observations = {
            key: np.zeros((*shape, *obs_shape), dtype=dtype) for key, (obs_shape, dtype) in self._layout.items()
        }
        self.last_observations = {
            key: np.zeros((capacity, n_envs, *obs_shape), dtype=dtype) for key, (obs_shape, dtype) in self._layout.items()
        }
        self.actions = np.zeros((*shape, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.episode_starts = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.advantages = np.zeros(shape, dtype=np.float32)
        self.returns = np.zeros(shape, dtype=np.float32)
        self.update_start_log_probs = np.zeros(shape, dtype=np.float32)
        self.last_dones = np.zeros((capacity, n_envs), dtype=bool)
        self.iterations = np.full(capacity, -1, dtype=np.int64)
        self.timeouts: list[TimeoutRecord | None] = [None] * capacity
        self.next_slot = 0
        self.n_rollouts = 0
        self.format_version = self.FORMAT_VERSION

    #: 2: raw observations and rewards without the time-limit bootstrap (1, before: as the rollout buffer held them).
    FORMAT_VERSION = 2

    @property
    def transitions_per_rollout(self) -> int:
        return self.n_steps * self.n_envs

    def size(self) -> int:
        """Number of stored transitions."""
        return self.n_rollouts * self.transitions_per_rollout

    def slots_oldest_first(self) -> list[int]:
        """Indices of the filled slots, from the oldest rollout to the newest."""
        return [int(slot) for slot in np.argsort(self.iterations) if self.iterations[slot] >= 0]

    def add(
        self,
        rollout_buffer: RolloutBuffer,
        *,
        observations: NumpyObs,
        last_observation: NumpyObs,
        rewards: np.ndarray,
        last_dones: np.ndarray,
        timeouts: TimeoutRecord,
        iteration: int,
    ) -> int:
        """
        Copy a complete rollout in, evicting the oldest one when full.

        :param rollout_buffer: SB3's rollout buffer, full, before its first ``get()`` (not yet flattened): actions,
            episode starts, values, behavior log-probabilities, advantages and returns come from it
        :param observations: the rollout's raw observations, ``[n_steps, n_envs, ...]`` (dict of arrays for Dict spaces)
        :param last_observation: raw observation after the last step (to bootstrap the rollout's end)
        :param rewards: the raw rewards, ``[n_steps, n_envs]``, without the time-limit bootstrap
        :param last_dones: whether each env's last step ended its episode
        :param timeouts: the rollout's time-limit truncations
        :param iteration: the training iteration that collected it (staleness is measured against it)
        :return: the slot written
        """
        if not rollout_buffer.full or rollout_buffer.generator_ready:
            raise ValueError("add() needs a full rollout buffer that has not been flattened by get() yet")
        slot = self.next_slot
        source_obs = observations if isinstance(observations, dict) else {None: observations}
        last_obs = last_observation if isinstance(last_observation, dict) else {None: last_observation}
        for key in self._layout:
            self.observations[key][slot] = np.asarray(source_obs[key]).reshape(self.observations[key][slot].shape)  # type: ignore[index]
            self.last_observations[key][slot] = np.asarray(last_obs[key]).reshape(self.last_observations[key][slot].shape)  # type: ignore[index]
        self.actions[slot] = rollout_buffer.actions.reshape(self.actions[slot].shape)
        self.rewards[slot] = rewards
        for name in ("episode_starts", "values", "log_probs", "advantages", "returns"):
            getattr(self, name)[slot] = getattr(rollout_buffer, name)
        self.last_dones[slot] = last_dones
        self.iterations[slot] = iteration
        self.timeouts[slot] = timeouts
        self.next_slot = (slot + 1) % self.capacity
        self.n_rollouts = min(self.n_rollouts + 1, self.capacity)
        return slot

    def recompute_advantages(
        self,
        policy: Any,
        gamma: float,
        gae_lambda: float,
        normalization: InputNormalization = NO_NORMALIZATION,
        chunk_size: int = 4096,
    ) -> None:
        """
        Re-evaluate every stored observation with the current critic and recompute GAE advantages and returns.

        Observations and rewards are normalized with ``normalization`` (today's statistics); each time-limit
        truncation's reward gets ``gamma * V(terminal_observation)`` from the current critic.

        :param policy: an SB3 actor-critic policy (``predict_values``), in evaluation mode
        :param gamma: discount
        :param gae_lambda: GAE's lambda
        :param normalization: how raw inputs are normalized now
        :param chunk_size: observations per critic forward pass
        """
        slots = np.array(self.slots_oldest_first())
        if len(slots) == 0:
            return
        values = self._predict_values(policy, {k: v[slots] for k, v in self.observations.items()}, normalization, chunk_size)
        last_observations = {k: v[slots] for k, v in self.last_observations.items()}
        last_values = self._predict_values(policy, last_observations, normalization, chunk_size)
        rewards = normalization.rewards(self.rewards[slots]).astype(np.float32)
        for row, slot in enumerate(slots):
            record = self.timeouts[slot]
            if record is not None and len(record) > 0:
                observations = record.observations if isinstance(record.observations, dict) else {None: record.observations}
                bootstrap = self._predict_values(policy, observations, normalization, chunk_size)
                rewards[row, record.steps, record.envs] += gamma * bootstrap
        advantages, returns = generalized_advantages(
            rewards, values, self.episode_starts[slots], last_values, self.last_dones[slots], gamma, gae_lambda
        )
        self.values[slots] = values
        self.advantages[slots] = advantages
        self.returns[slots] = returns

    def record_update_start(
        self,
        log_prob: Callable[[TensorObs, th.Tensor | None], th.Tensor],
        normalization: InputNormalization = NO_NORMALIZATION,
        chunk_size: int = 4096,
    ) -> None:
        """
        Keep every stored action's log-probability under the current policy, before an update changes it.

        :param log_prob: ``(observations, actions) -> log-probabilities`` of the current policy
        :param normalization: how raw observations are normalized now
        :param chunk_size: transitions per forward pass
        """
        slots = np.array(self.slots_oldest_first())
        if len(slots) == 0:
            return
        observations = {key: value[slots] for key, value in self.observations.items()}
        self.update_start_log_probs[slots] = self._evaluate(
            log_prob, observations, normalization, chunk_size, actions=self.actions[slots]
        )

    def _normalized(self, observations: dict[str | None, np.ndarray], normalization: InputNormalization) -> TensorObs:
        """A flat batch of raw observations, normalized and as tensors."""
        raw: NumpyObs = observations[None] if None in observations else {str(k): v for k, v in observations.items()}
        normalized = normalization.observations(raw)
        as_dict = normalized if isinstance(normalized, dict) else {None: normalized}
        return self._to_tensor_obs(as_dict)  # type: ignore[arg-type]

    def _predict_values(
        self,
        policy: Any,
        observations: dict[str | None, np.ndarray],
        normalization: InputNormalization,
        chunk_size: int,
    ) -> np.ndarray:
        return self._evaluate(lambda obs, _: policy.predict_values(obs), observations, normalization, chunk_size)

    def _evaluate(
        self,
        function: Callable[[TensorObs, th.Tensor | None], th.Tensor],
        observations: dict[str | None, np.ndarray],
        normalization: InputNormalization,
        chunk_size: int,
        actions: np.ndarray | None = None,
    ) -> np.ndarray:
        """
        ``function(observations, actions)`` (one value per transition) over a batch of stored raw observations of
        any leading shape, normalized now, ``chunk_size`` transitions per forward pass, without gradients.
        """
        first = next(iter(observations.values()))
        batch_shape = first.shape[: first.ndim - len(self._layout[next(iter(observations))][0])]
        flat = {key: value.reshape(-1, *self._layout[key][0]) for key, value in observations.items()}
        flat_actions = None if actions is None else actions.reshape(-1, self.action_dim)
        n = next(iter(flat.values())).shape[0]
        out = np.empty(n, dtype=np.float32)
        with th.no_grad():
            for start in range(0, n, chunk_size):
                chunk = {key: value[start : start + chunk_size] for key, value in flat.items()}
                chunk_actions = (
                    None
                    if flat_actions is None
                    else th.as_tensor(flat_actions[start : start + chunk_size], device=self.device)
                )
                result = function(self._normalized(chunk, normalization), chunk_actions)
                out[start : start + chunk_size] = result.flatten().cpu().numpy()
        return out.reshape(batch_shape)

    def _to_tensor_obs(self, observations: dict[str | None, np.ndarray]) -> TensorObs:
        tensors = {key: th.as_tensor(value, device=self.device).float() for key, value in observations.items()}
        return tensors[None] if None in tensors else {str(key): value for key, value in tensors.items()}

    def ages(self, iteration: int) -> np.ndarray:
        """Staleness in iterations of each slot (-1 for empty slots)."""
        return np.where(self.iterations >= 0, iteration - self.iterations, -1)

    def minibatch_indices(self, n_samples: int, batch_size: int, *, sampling: str = "uniform") -> Iterator[np.ndarray]:
        """
        Minibatches of ``n_samples`` indices in all: successive random permutations of the stored indices (of the
        newest rollout's for the first pass of ``"newest_first"``), cut into ``batch_size`` chunks.

        :param n_samples: total number of samples to draw
        :param batch_size: minibatch size
        :param sampling: one of :data:`sb3_r2vpo.core.replay_sampling.REPLAY_SAMPLINGS`
        """
        slots = np.flatnonzero(self.iterations >= 0)
        per_rollout = np.arange(self.transitions_per_rollout)[None, :]
        stored = (slots[:, None] * self.transitions_per_rollout + per_rollout).reshape(-1)
        newest = int(np.argmax(self.iterations)) * self.transitions_per_rollout + per_rollout.reshape(-1)
        passes = permutation_passes(n_samples, len(stored), sampling=sampling, n_newest=len(newest))
        for newest_only, take in passes:
            source = newest if newest_only else stored
            permutation = source[np.random.permutation(len(source))][:take]
            for start in range(0, take, batch_size):
                yield permutation[start : start + batch_size]

    def get_samples(
        self, flat_indices: np.ndarray, iteration: int, normalization: InputNormalization = NO_NORMALIZATION
    ) -> ReplayBufferSamples:
        """
        The transitions at ``flat_indices`` as tensors, observations normalized with today's statistics.

        :param flat_indices: indices ``slot * n_steps * n_envs + env * n_steps + step``
        :param iteration: the current iteration, for the ages
        :param normalization: how raw observations are normalized now
        """
        slot, within = np.divmod(flat_indices, self.transitions_per_rollout)
        env, step = np.divmod(within, self.n_steps)

        def take(array: np.ndarray) -> th.Tensor:
            return th.as_tensor(array[slot, step, env], device=self.device)

        raw = {key: value[slot, step, env] for key, value in self.observations.items()}
        observations = self._normalized(raw, normalization)
        return ReplayBufferSamples(
            observations=observations,
            actions=take(self.actions),
            old_values=take(self.values),
            old_log_prob=take(self.log_probs),
            advantages=take(self.advantages),
            returns=take(self.returns),
            ages=th.as_tensor(iteration - self.iterations[slot], device=self.device),
            update_start_log_prob=take(self.update_start_log_probs),
        )
