import csv
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from sb3_r2vpo import R2VPO, R2VPOOff
from sb3_r2vpo.r2vpo_off.buffers import (
    InputNormalization,
    RolloutReplayBuffer,
    available_memory_bytes,
    generalized_advantages,
    minibatch_sizes,
    replay_nbytes,
)

TINY = {"n_steps": 64, "batch_size": 32, "policy_kwargs": {"net_arch": [16]}}


def _same_parameters(a: th.nn.Module, b: th.nn.Module) -> bool:
    return all(th.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("env_id", "sizes"),
    [
        ("CartPole-v1", TINY),
        ("Pendulum-v1", TINY),
        # A minibatch larger than the rollout (rl_zoo3's MountainCarContinuous entry: n_steps 8, batch 256): PPO
        # takes one truncated minibatch per epoch, and so must the replay, not one minibatch in all.
        ("Pendulum-v1", {**TINY, "n_steps": 8, "batch_size": 256}),
    ],
)
def test_capacity_one_is_exactly_r2vpo_on(env_id: str, sizes: dict) -> None:
    """replay_capacity=1 with utd_ratio=n_epochs gives R2VPO-ON's update, bit for bit, over several iterations."""
    # Seeding happens at construction and the global RNGs are shared: build and train one model, then the other.
    on = R2VPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), n_epochs=3, var_coef="auto", seed=0, **sizes)
    initial = {k: v.clone() for k, v in on.policy.state_dict().items()}
    on.learn(3 * 128)
    off = R2VPOOff("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), replay_capacity=1, utd_ratio=3, seed=0, **sizes)
    assert all(th.equal(initial[k], v) for k, v in off.policy.state_dict().items())
    off.learn(3 * 128)
    assert not all(th.equal(initial[k], v) for k, v in off.policy.state_dict().items())
    assert _same_parameters(on.policy, off.policy)
    assert on.var_coef_value == off.var_coef_value
    assert on._n_updates == off._n_updates


def test_fifo_eviction_order() -> None:
    model = R2VPOOff("MlpPolicy", "CartPole-v1", replay_capacity=3, utd_ratio=1, seed=0, **TINY)
    model.learn(5 * 64)
    buffer = model.replay_buffer
    assert buffer.n_rollouts == 3 and buffer.size() == 3 * 64
    # Iterations 1..5 were stored; 1 and 2 were evicted, oldest first.
    assert sorted(buffer.iterations.tolist()) == [3, 4, 5]
    assert [int(buffer.iterations[s]) for s in buffer.slots_oldest_first()] == [3, 4, 5]
    assert buffer.ages(5).tolist() == [(5 - i) for i in buffer.iterations.tolist()]


def test_behavior_log_probs_are_kept_for_stale_data() -> None:
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=3, utd_ratio=2, learning_rate=3e-3, seed=0, **TINY)
    model.learn(64)
    first_log_probs = model.rollout_buffer.log_probs.copy()  # not flattened: train() stores before get()
    first_observations = model.replay_buffer.observations[None][0].copy()
    first_actions = model.replay_buffer.actions[0].copy()
    model.learn(2 * 64, reset_num_timesteps=False)

    slot = int(np.where(model.replay_buffer.iterations == 1)[0][0])
    np.testing.assert_array_equal(model.replay_buffer.log_probs[slot], first_log_probs)
    # The current policy gives these actions other log-probabilities: sampling must return the stored ones.
    samples = model.replay_buffer.get_samples(np.arange(slot * 64, slot * 64 + 64), iteration=3)
    assert th.all(samples.ages == 2)
    with th.no_grad():
        _, current_log_prob, _ = model.policy.evaluate_actions(
            th.as_tensor(first_observations.reshape(64, -1)), th.as_tensor(first_actions.reshape(64, -1))
        )
    stored = th.as_tensor(first_log_probs.reshape(64))
    assert not th.allclose(current_log_prob, stored)
    th.testing.assert_close(th.sort(samples.old_log_prob).values, th.sort(stored).values)


def test_gae_matches_stable_baselines3() -> None:
    rng = np.random.default_rng(0)
    n_steps, n_envs, gamma, gae_lambda = 17, 3, 0.97, 0.9
    buffer = RolloutBuffer(
        n_steps, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), n_envs=n_envs, gamma=gamma, gae_lambda=gae_lambda
    )
    buffer.rewards[:] = rng.normal(size=(n_steps, n_envs))
    buffer.values[:] = rng.normal(size=(n_steps, n_envs))
    buffer.episode_starts[:] = rng.random((n_steps, n_envs)) < 0.2
    last_values = rng.normal(size=n_envs).astype(np.float32)
    dones = rng.random(n_envs) < 0.5
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), dones)
    advantages, returns = generalized_advantages(
        buffer.rewards[None],
        buffer.values[None],
        buffer.episode_starts[None],
        last_values[None],
        dones[None],
        gamma,
        gae_lambda,
    )
    np.testing.assert_allclose(advantages[0], buffer.advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns[0], buffer.returns, rtol=1e-5, atol=1e-6)


class SnapshotAtRolloutEnd(BaseCallback):
    """Keeps the policy's weights as they were when the rollout was collected (before train())."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.state = {k: v.clone() for k, v in self.model.policy.state_dict().items()}


def _recompute_model(callback: BaseCallback | None = None) -> R2VPOOff:
    # Pendulum episodes end only by the 200-step time limit: every episode end is a truncation.
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", n_steps=256, batch_size=64, replay_capacity=2, utd_ratio=1, gamma=0.9, seed=0)
    model.learn(256, callback=callback)
    assert len(model.replay_buffer.timeouts[0]) == 1  # one truncation at step 199
    return model


def test_recompute_with_the_collection_critic_reproduces_stored_advantages() -> None:
    snapshot = SnapshotAtRolloutEnd()
    model = _recompute_model(snapshot)
    model.policy.load_state_dict(snapshot.state)
    model.policy.set_training_mode(False)
    buffer = model.replay_buffer
    stored = buffer.advantages[0].copy(), buffer.returns[0].copy()
    buffer.recompute_advantages(model.policy, model.gamma, model.gae_lambda)
    np.testing.assert_allclose(buffer.advantages[0], stored[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(buffer.returns[0], stored[1], rtol=1e-4, atol=1e-4)


def test_recompute_rebootstraps_time_limit_truncations() -> None:
    """Shift the critic by c: with truncations re-bootstrapped, every TD error moves by exactly -(1 - gamma) c."""
    model = _recompute_model()
    buffer = model.replay_buffer
    gamma, gae_lambda, shift = model.gamma, model.gae_lambda, 5.0

    def td_errors() -> np.ndarray:
        adv, starts = buffer.advantages[0], buffer.episode_starts[0]
        next_non_terminal = np.concatenate([1.0 - starts[1:], (1.0 - buffer.last_dones[0])[None].astype(np.float32)])
        next_adv = np.concatenate([adv[1:], np.zeros_like(adv[:1])])
        return adv - gamma * gae_lambda * next_non_terminal * next_adv

    buffer.recompute_advantages(model.policy, gamma, gae_lambda)
    before = td_errors()
    with th.no_grad():
        model.policy.value_net.bias += shift
    buffer.recompute_advantages(model.policy, gamma, gae_lambda)
    np.testing.assert_allclose(td_errors() - before, -(1 - gamma) * shift, atol=1e-3)


def test_logged_staleness_keys(tmp_path) -> None:
    model = R2VPOOff("MlpPolicy", "CartPole-v1", replay_capacity=3, utd_ratio=2, seed=0, **TINY)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(5 * 64)
    with open(tmp_path / "progress.csv") as file:
        last = list(csv.DictReader(file))[-1]
    assert float(last["train/replay_size"]) == 3 * 64
    assert 0.0 < float(last["train/mean_staleness"]) <= 2.0
    for key in (
        "train/ratio_var_age_0",
        "train/ratio_var_age_1",
        "train/ratio_var_age_2",
        "train/var_coef",
        "train/ratio_var",
    ):
        assert np.isfinite(float(last[key])), key


@pytest.mark.parametrize(
    "env",
    [IdentityEnv(4), IdentityEnvBox(eps=0.5), IdentityEnvMultiDiscrete(3), IdentityEnvMultiBinary(3), SimpleMultiObsEnv()],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary", "Dict"],
)
def test_all_spaces(env: gym.Env) -> None:
    policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    model = R2VPOOff(policy, env, replay_capacity=2, seed=0, **TINY)
    model.learn(3 * 64)
    assert model.replay_buffer.n_rollouts == 2


def test_save_load_model_and_replay(tmp_path) -> None:
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=8, seed=0, **TINY)
    model.learn(3 * 64)
    model.save(tmp_path / "big.zip")
    small = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=1, seed=0, **TINY)
    small.learn(3 * 64)
    small.save(tmp_path / "small.zip")
    # The replay is not in the model file.
    assert abs(os.path.getsize(tmp_path / "big.zip") - os.path.getsize(tmp_path / "small.zip")) < 2048

    model.save_replay_buffer(tmp_path / "replay.pkl")
    loaded = R2VPOOff.load(tmp_path / "big.zip", env=model.get_env())
    assert loaded.replay_buffer.n_rollouts == 0
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    for name in ("actions", "rewards", "log_probs", "advantages", "iterations"):
        np.testing.assert_array_equal(getattr(loaded.replay_buffer, name), getattr(model.replay_buffer, name))
    assert loaded._replay_iteration == model._replay_iteration == 3
    assert loaded.var_coef_value == model.var_coef_value
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.replay_buffer.n_rollouts == 4

    with pytest.raises(ValueError, match="replay_capacity"):
        small.load_replay_buffer(tmp_path / "replay.pkl")


MISSING_ENV = "ThisEnvDoesNotExist-v0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("replay_capacity", 0),
        ("replay_capacity", 1.5),
        ("replay_capacity", "4"),
        ("utd_ratio", 0.0),
        ("utd_ratio", -1.0),
        ("utd_ratio", "2"),
    ],
)
def test_bad_input(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        R2VPOOff("MlpPolicy", MISSING_ENV, **{name: value})


def test_replay_larger_than_memory_is_refused_before_allocation() -> None:
    with pytest.raises(ValueError, match=r"replay_capacity=100000000 needs .* GiB"):
        R2VPOOff("MlpPolicy", "CartPole-v1", replay_capacity=10**8)


def test_replay_buffer_type_check(tmp_path) -> None:
    from stable_baselines3.common.save_util import save_to_pkl

    save_to_pkl(tmp_path / "other.pkl", {"not": "a replay"})
    model = R2VPOOff("MlpPolicy", "CartPole-v1", **TINY)
    with pytest.raises(TypeError, match="RolloutReplayBuffer"):
        model.load_replay_buffer(tmp_path / "other.pkl")
    assert isinstance(model.replay_buffer, RolloutReplayBuffer)


class _TimeLimitedDictEnv(SimpleMultiObsEnv):
    """SB3's Dict-observation grid, cut by a time limit (SimpleMultiObsEnv truncates at max_count)."""

    def __init__(self) -> None:
        super().__init__(random_start=True)
        self.max_count = 20


@pytest.mark.parametrize(
    "env",
    [IdentityEnv(4), IdentityEnvMultiDiscrete(3), IdentityEnvMultiBinary(3), _TimeLimitedDictEnv()],
    ids=["Discrete", "MultiDiscrete", "MultiBinary", "Dict"],
)
def test_many_truncations_in_one_rollout_are_stored_and_rebootstrapped(env: gym.Env) -> None:
    """IdentityEnv's episodes end by truncation only: a 256-step rollout holds several (issue 20, item 1)."""
    policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    model = R2VPOOff(policy, env, n_steps=256, batch_size=64, replay_capacity=2, utd_ratio=1, seed=0)
    model.learn(512)
    buffer = model.replay_buffer
    assert all(record is not None and len(record) >= 2 for record in buffer.timeouts)
    # The recomputed targets with the collection-time critic include every truncation's re-bootstrap.
    buffer.recompute_advantages(model.policy, model.gamma, model.gae_lambda)
    assert np.isfinite(buffer.advantages).all()


def _saved_with_replay(tmp_path, iterations: int) -> R2VPOOff:
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=2, seed=0, **TINY)
    model.learn(iterations * 64)
    model.save(tmp_path / f"model_{iterations}.zip")
    model.save_replay_buffer(tmp_path / f"replay_{iterations}.pkl")
    return model


def test_a_replay_newer_than_the_model_is_refused_at_load(tmp_path) -> None:
    _saved_with_replay(tmp_path, 5)
    model = R2VPOOff.load(tmp_path / "model_5.zip")
    model.load_replay_buffer(tmp_path / "replay_5.pkl")  # saved together: fine
    early = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=2, seed=0, **TINY).learn(2 * 64)
    with pytest.raises(ValueError, match=r"iterations 4\.\.5, but this model is at iteration 2"):
        early.load_replay_buffer(tmp_path / "replay_5.pkl")
    late = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=2, seed=0, **TINY).learn(8 * 64)
    with pytest.raises(ValueError, match=r"iterations 4\.\.5, but this model is at iteration 8"):
        late.load_replay_buffer(tmp_path / "replay_5.pkl")
    # Refused before anything changed: training goes on with the model's own replay.
    late.learn(64, reset_num_timesteps=False)


def test_the_memory_check_uses_the_loaded_configuration(tmp_path, monkeypatch) -> None:
    import sb3_r2vpo.r2vpo_off.r2vpo_off as module

    model = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=1, seed=0, **TINY)
    model.save(tmp_path / "small.zip")
    env = model.get_env()
    needed = replay_nbytes(1, 64, 1, env.observation_space, env.action_space)
    default_needed = replay_nbytes(4, 2048, 1, env.observation_space, env.action_space)
    monkeypatch.setattr(module, "available_memory_bytes", lambda: 2 * needed)
    assert default_needed > 2 * needed
    # The saved replay fits; the constructor's defaults (which load() starts from) would not.
    loaded = R2VPOOff.load(tmp_path / "small.zip", env=env)
    assert loaded.replay_buffer.capacity == 1
    with pytest.raises(ValueError, match=r"replay_capacity=4 needs"):
        R2VPOOff.load(tmp_path / "small.zip", env=env, replay_capacity=4, n_steps=2048)


def test_available_memory_counts_reclaimable_page_cache(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:          500000 kB\nMemAvailable:   12000000 kB\n")
    assert available_memory_bytes(str(meminfo)) == 12000000 * 1024
    assert available_memory_bytes(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("n_steps", "batch_size", "replay_capacity", "utd_ratio", "truncated"),
    [
        (48, 32, 4, 2.0, False),  # R2VPO would warn (48 % 32), but 96 samples of 192 stored split into 3 minibatches
        (64, 48, 4, 2.0, True),  # 128 samples: 2 of 48 and one of 32
        (64, 32, 1, 3.0, False),  # R2VPO-ON's case
        (8, 256, 1, 3.0, True),  # a minibatch larger than the replay
    ],
)
def test_batch_size_warning_matches_the_minibatches_drawn(
    n_steps: int, batch_size: int, replay_capacity: int, utd_ratio: float, truncated: bool
) -> None:
    kwargs = {"n_steps": n_steps, "batch_size": batch_size, "replay_capacity": replay_capacity, "utd_ratio": utd_ratio}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = R2VPOOff("MlpPolicy", "Pendulum-v1", seed=0, policy_kwargs={"net_arch": [16]}, **kwargs)
    messages = [str(w.message) for w in caught if "batch" in str(w.message)]
    assert bool(messages) == truncated, messages
    assert not any("rollout buffer is of size" in m for m in messages)  # R2VPO-ON's warning does not apply

    # What the warning predicts is what a full replay draws.
    model.learn(replay_capacity * n_steps)
    drawn = [len(batch) for batch in model.replay_buffer.minibatch_indices(round(utd_ratio * n_steps), batch_size)]
    assert drawn == minibatch_sizes(round(utd_ratio * n_steps), replay_capacity * n_steps, batch_size)
    assert any(size < batch_size for size in drawn) == truncated


class RawRecorder(VecEnvWrapper):
    """Below VecNormalize: keeps every raw observation, reward and time-limit terminal observation it passes up."""

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self.observations, self.rewards, self.terminals = [obs.copy()], [], []
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.observations.append(obs.copy())
        self.rewards.append(rewards.copy())
        for index, done in enumerate(dones):
            if done and infos[index].get("TimeLimit.truncated", False):
                self.terminals.append(np.array(infos[index]["terminal_observation"], copy=True))
        return obs, rewards, dones, infos


def test_vec_normalize_replay_keeps_raw_inputs_and_normalizes_with_current_statistics() -> None:
    recorder = RawRecorder(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    env = VecNormalize(recorder, gamma=0.9)
    model = R2VPOOff("MlpPolicy", env, n_steps=256, batch_size=64, replay_capacity=2, utd_ratio=1, gamma=0.9, seed=0)
    model.learn(512)
    buffer = model.replay_buffer
    slot = int(np.where(buffer.iterations == 1)[0][0])

    # Stored raw: what the env produced before VecNormalize, step by step, and the raw terminal observation.
    np.testing.assert_array_equal(buffer.observations[None][slot, :, 0], np.concatenate(recorder.observations[:256]))
    np.testing.assert_array_equal(buffer.last_observations[None][slot, 0], recorder.observations[256][0])
    np.testing.assert_allclose(buffer.rewards[slot, :, 0], np.concatenate(recorder.rewards[:256]), rtol=1e-6)
    record = buffer.timeouts[slot]
    assert record is not None and record.steps.tolist() == [199]
    np.testing.assert_allclose(record.observations[0], recorder.terminals[0], rtol=1e-5, atol=1e-5)

    # Normalized when used, with today's statistics (SB3's formula written out, clip at 10 standard deviations).
    mean, var = env.obs_rms.mean, env.obs_rms.var
    raw = buffer.observations[None][slot, :8, 0]
    expected_obs = np.clip((raw - mean) / np.sqrt(var + env.epsilon), -env.clip_obs, env.clip_obs)
    normalization = InputNormalization.of(env)
    samples = buffer.get_samples(slot * 256 + np.arange(8), iteration=2, normalization=normalization)
    np.testing.assert_allclose(samples.observations.numpy(), expected_obs, rtol=1e-5, atol=1e-6)

    # Recomputed targets equal SB3's GAE on the currently normalized rewards and observations, with the truncation
    # re-bootstrapped by the current critic on the currently normalized terminal observation.
    model.policy.set_training_mode(False)
    buffer.recompute_advantages(model.policy, model.gamma, model.gae_lambda, normalization)
    with th.no_grad():
        normalized = np.clip((buffer.observations[None][slot, :, 0] - mean) / np.sqrt(var + env.epsilon), -10, 10)
        values = model.policy.predict_values(th.as_tensor(normalized, dtype=th.float32)).numpy().reshape(256, 1)
        last = np.clip((buffer.last_observations[None][slot] - mean) / np.sqrt(var + env.epsilon), -10, 10)
        last_value = model.policy.predict_values(th.as_tensor(last, dtype=th.float32)).flatten()
        terminal = np.clip((record.observations - mean) / np.sqrt(var + env.epsilon), -10, 10)
        bootstrap = float(model.policy.predict_values(th.as_tensor(terminal, dtype=th.float32))[0, 0])
    rewards = np.clip(buffer.rewards[slot] / np.sqrt(env.ret_rms.var + env.epsilon), -env.clip_reward, env.clip_reward)
    rewards[199, 0] += model.gamma * bootstrap
    reference = RolloutBuffer(256, env.observation_space, env.action_space, n_envs=1, gamma=0.9, gae_lambda=model.gae_lambda)
    reference.rewards[:], reference.values[:] = rewards, values
    reference.episode_starts[:] = buffer.episode_starts[slot]
    reference.compute_returns_and_advantage(last_value, buffer.last_dones[slot])
    np.testing.assert_allclose(buffer.advantages[slot], reference.advantages, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(buffer.returns[slot], reference.returns, rtol=1e-4, atol=1e-4)


def test_a_replay_saved_in_the_old_format_is_refused(tmp_path) -> None:
    model = R2VPOOff("MlpPolicy", "Pendulum-v1", replay_capacity=2, seed=0, **TINY)
    model.learn(64)
    model.replay_buffer.format_version = 1
    model.save_replay_buffer(tmp_path / "old.pkl")
    with pytest.raises(ValueError, match=r"format 1 .* reads format 2"):
        model.load_replay_buffer(tmp_path / "old.pkl")


def test_target_kl_bounds_the_update_not_the_distance_to_stale_behavior_policies() -> None:
    """Stale data are far from their behavior policies before the update starts; early stopping must not fire then."""
    # lam fixed at 0 but "adaptive" with a zero step: its step counter counts the gradient steps.
    model = R2VPOOff(
        "MlpPolicy",
        "Pendulum-v1",
        replay_capacity=4,
        utd_ratio=4,
        learning_rate=3e-3,
        var_coef="auto_0",
        var_coef_lr=0.0,
        seed=0,
        **TINY,
    )
    model.learn(4 * 64)  # four rollouts of policies that moved apart
    model.target_kl = 0.01
    model.set_logger(configure(None, []))
    steps_before = model.var_coef_controller.n_steps
    model.learn(64, reset_num_timesteps=False)
    # Against the behavior policies, the update was past 1.5 * target_kl before its first gradient step ...
    buffer = model.replay_buffer
    stale = buffer.update_start_log_probs - buffer.log_probs
    assert float(np.mean(np.expm1(stale) - stale)) > 1.5 * model.target_kl
    # ... but it starts at KL 0 from itself: it takes gradient steps until it has moved by about target_kl.
    assert model.var_coef_controller.n_steps > steps_before
    assert 0.0 < model.logger.name_to_value["train/update_kl"] <= 1.5 * model.target_kl


def test_vec_normalize_with_dict_observations_and_truncations() -> None:
    env = VecNormalize(DummyVecEnv([_TimeLimitedDictEnv]), norm_obs_keys=["vec"])
    model = R2VPOOff("MultiInputPolicy", env, replay_capacity=2, utd_ratio=1, seed=0, **TINY)
    model.learn(3 * 64)
    buffer = model.replay_buffer
    assert buffer.observations["img"].dtype == np.uint8  # images stay raw bytes
    assert all(record is not None and len(record) >= 2 for record in buffer.timeouts)
    samples = buffer.get_samples(np.arange(8), iteration=3, normalization=InputNormalization.of(env))
    raw_vec = buffer.observations["vec"][0, :8, 0]
    expected = np.clip((raw_vec - env.obs_rms["vec"].mean) / np.sqrt(env.obs_rms["vec"].var + env.epsilon), -10, 10)
    np.testing.assert_allclose(samples.observations["vec"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_newest_first_sampling_passes_over_the_fresh_rollout_first() -> None:
    n_steps, capacity, utd_ratio, batch_size = 64, 4, 2.0, 16
    model = R2VPOOff(
        "MlpPolicy", "Pendulum-v1", n_steps=n_steps, batch_size=batch_size, replay_capacity=capacity, utd_ratio=utd_ratio,
        replay_sampling="newest_first", seed=0, policy_kwargs={"net_arch": [16]},
    )  # fmt: skip
    model.learn(5 * n_steps)  # the replay is full and has wrapped around once
    buffer = model.replay_buffer
    newest = int(np.argmax(buffer.iterations))
    batches = list(buffer.minibatch_indices(round(utd_ratio * n_steps), batch_size, sampling="newest_first"))
    drawn = np.concatenate(batches)
    assert len(drawn) == utd_ratio * n_steps
    first_pass = np.concatenate(batches[: n_steps // batch_size])
    assert sorted(first_pass // n_steps) == [newest] * n_steps  # the whole newest rollout, each transition once
    assert sorted(first_pass % n_steps) == list(range(n_steps))
    rest = drawn[n_steps:]
    assert len(set((rest // n_steps).tolist())) > 1  # then uniform over every slot
    sizes = minibatch_sizes(
        round(utd_ratio * n_steps), capacity * n_steps, batch_size, sampling="newest_first", n_newest=n_steps
    )
    assert [len(b) for b in batches] == sizes
    # Over the update the fresh rollout gets 1 + (utd - 1) / capacity passes in expectation; uniform gives utd / capacity.
    assert np.mean(drawn // n_steps == newest) * utd_ratio >= 1.0


def test_bad_replay_sampling() -> None:
    with pytest.raises(ValueError, match=r"replay_sampling='fifo' must be one of \['uniform', 'newest_first'\]"):
        R2VPOOff("MlpPolicy", "Pendulum-v1", replay_sampling="fifo")


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf"), "0.5"])
def test_bad_var_coef_age_factor(value: object) -> None:
    with pytest.raises(ValueError, match="var_coef_age_factor"):
        R2VPOOff("MlpPolicy", MISSING_ENV, var_coef_age_factor=value)


def test_var_coef_age_factor_without_stale_data_is_refused() -> None:
    with pytest.raises(ValueError, match=r"var_coef_age_factor=0.5 has no effect with replay_capacity=1"):
        R2VPOOff("MlpPolicy", MISSING_ENV, replay_capacity=1, var_coef_age_factor=0.5)


def test_var_coef_age_factor_weights_the_penalty_by_age(tmp_path) -> None:
    """The per-sample loss is lam * factor**age * (r - 1)^2 - r A, checked by hand on a minibatch of every age."""
    model = R2VPOOff(
        "MlpPolicy", "Pendulum-v1", replay_capacity=3, utd_ratio=2, learning_rate=3e-3, var_coef=0.7,
        var_coef_age_factor=0.5, seed=0, **TINY,
    )  # fmt: skip
    model.learn(3 * 64)
    buffer = model.replay_buffer
    samples = buffer.get_samples(np.arange(3 * 64), iteration=3)
    assert sorted(set(samples.ages.tolist())) == [0, 1, 2]
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(samples.observations, samples.actions)
    advantages = samples.advantages
    loss, _ = model._policy_objective(log_prob, advantages, samples)
    ratio = th.exp(log_prob - samples.old_log_prob)
    expected = 0.7 * 0.5 ** samples.ages.double() * (ratio - 1) ** 2 - ratio * advantages
    th.testing.assert_close(loss.double(), expected.double(), rtol=1e-5, atol=1e-6)
    assert not th.allclose(loss, 0.7 * (ratio - 1) ** 2 - ratio * advantages)  # the stale samples weigh less

    model.save(tmp_path / "model")
    loaded = R2VPOOff.load(tmp_path / "model")
    assert loaded.var_coef_age_factor == 0.5
    # One lam for every age (the default) is the controller's lam on every sample.
    assert R2VPOOff("MlpPolicy", "Pendulum-v1", var_coef=0.7, **TINY)._var_coef_of(samples) == 0.7
