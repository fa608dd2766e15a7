import pytest
import torch as th

from llm_adapter.advantages import group_relative_advantages
from llm_adapter.replay import RolloutReplay
from llm_adapter.rollouts import RolloutBatch


def test_group_relative_advantages_formula() -> None:
    rewards = th.tensor([1.0, 0.0, 0.0, 0.5, 0.1, 0.1, 0.1, 2.0])
    groups = th.tensor([3, 3, 3, 3, 8, 8, 8, 5])
    result = group_relative_advantages(rewards, groups)
    first = rewards[:4]
    th.testing.assert_close(result.advantages[:4], ((first - first.mean()) / (first.std() + 1e-6)).float())
    assert (result.advantages[4:] == 0).all()  # all-equal group (0.1 is not exact in binary) and a singleton group
    assert (result.n_groups, result.n_zero_advantage_groups) == (3, 2)
    assert result.zero_advantage_fraction == pytest.approx(2 / 3)
    unscaled = group_relative_advantages(rewards, groups, scale_by_std=False)
    th.testing.assert_close(unscaled.advantages[:4], (first - first.mean()).float())


def test_advantages_refuse_bad_rewards() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        group_relative_advantages(th.tensor([1.0, float("inf")]), th.tensor([0, 0]))
    with pytest.raises(ValueError, match="1-D of one shape"):
        group_relative_advantages(th.zeros(3), th.zeros(2, dtype=th.long))


def _generation(version: int, size: int = 4) -> RolloutBatch:
    return RolloutBatch.from_sequences(
        [[1]] * size,
        [[version + 10]] * size,
        [[-1.0]] * size,
        group_ids=[version] * size,
        truncated=[False] * size,
        policy_version=version,
        pad_token_id=0,
    )


def test_fifo_eviction_and_staleness() -> None:
    replay = RolloutReplay(capacity=3, utd_ratio=2.0)
    for version in range(5):
        replay.add(_generation(version))
    contents = replay.contents()
    assert contents.policy_version.tolist() == [2] * 4 + [3] * 4 + [4] * 4  # the two oldest were evicted, oldest first
    assert contents.behavior_log_probs.unique().tolist() == [-1.0]
    assert len(replay) == 12 and replay.num_generations == 3


def test_draws_are_uniform_passes_over_the_whole_replay() -> None:
    replay = RolloutReplay(capacity=4, utd_ratio=2.0)
    for version in range(4):
        replay.add(_generation(version, size=5))
    generator = th.Generator().manual_seed(0)
    indices = replay.draw_indices(generator)
    assert len(indices) == 10 == replay.num_draws()
    assert len(set(indices.tolist())) == 10  # one pass over 20 stored completions: no repeats
    counts = th.zeros(20)
    for _ in range(2000):
        counts += th.bincount(replay.draw_indices(generator), minlength=20)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    small = RolloutReplay(capacity=1, utd_ratio=2.5)
    small.add(_generation(0, size=4))
    drawn = small.draw_indices(generator)
    assert len(drawn) == 10 and th.bincount(drawn, minlength=4).min() >= 2  # ceil(2.5) passes, cut to 10


def test_newest_first_draws_start_with_a_full_pass_over_the_newest_generation() -> None:
    replay = RolloutReplay(capacity=4, utd_ratio=2.0, sampling="newest_first")
    for version in range(4):
        replay.add(_generation(version, size=5))
    generator = th.Generator().manual_seed(0)
    newest = set(range(15, 20))  # contents() holds the newest generation last
    counts = th.zeros(20)
    for _ in range(2000):
        indices = replay.draw_indices(generator)
        assert len(indices) == 10 and set(indices[:5].tolist()) == newest  # one pass over the 5 fresh ones
        assert len(set(indices[5:].tolist())) == 5  # then 5 drawn without repeats from all 20
        counts += th.bincount(indices, minlength=20)
    # Fresh completions: 1 + 5/20 draws per phase; older ones: 5/20.
    assert counts[15:].mean() / 2000 == pytest.approx(1.25, abs=0.03)
    assert counts[:15].mean() / 2000 == pytest.approx(0.25, abs=0.03)
    fresh_only = RolloutReplay(capacity=1, utd_ratio=2.0, sampling="newest_first")
    fresh_only.add(_generation(0, size=4))
    assert th.bincount(fresh_only.draw_indices(generator), minlength=4).tolist() == [2, 2, 2, 2]


def test_replay_state_round_trip_and_bad_input() -> None:
    replay = RolloutReplay(capacity=2, utd_ratio=1.0)
    replay.add(_generation(0))
    restored = RolloutReplay(capacity=2, utd_ratio=1.0)
    restored.load_state_dict(replay.state_dict())
    assert th.equal(restored.contents().completion_ids, replay.contents().completion_ids)
    with pytest.raises(ValueError, match=r"replay_capacity=2, utd_ratio=1\.0, .* but the trainer is configured with 3"):
        RolloutReplay(capacity=3, utd_ratio=1.0).load_state_dict(replay.state_dict())
    with pytest.raises(ValueError, match=r"replay_sampling='uniform' but .* 'newest_first'"):
        RolloutReplay(capacity=2, utd_ratio=1.0, sampling="newest_first").load_state_dict(replay.state_dict())
    with pytest.raises(ValueError, match=r"replay_sampling='newest' must be one of \['uniform', 'newest_first'\]"):
        RolloutReplay(capacity=2, sampling="newest")
    with pytest.raises(ValueError, match="replay_capacity"):
        RolloutReplay(capacity=0)
    with pytest.raises(ValueError, match="utd_ratio"):
        RolloutReplay(capacity=1, utd_ratio=0.0)
    with pytest.raises(ValueError, match="empty"):
        RolloutReplay().contents()
