"""Regressions of the failures a PPO user hit (issue 20): non-finite gradients, schedules, PPO's parameter names."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.utils import LinearSchedule

from sb3_r2vpo import R2VPO, R2VPOOff
from sb3_r2vpo.core import NonFiniteRatioError

MISSING_ENV = "ThisEnvDoesNotExist-v0"


def _snapshot(model: R2VPO) -> dict[str, th.Tensor]:
    return {key: value.clone() for key, value in model.policy.state_dict().items()}


def test_non_finite_gradient_never_reaches_the_weights(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **tiny_kwargs)
    model.learn(tiny_kwargs["n_steps"])
    before = _snapshot(model)
    optimizer_state = {key: value.clone() for key, value in model.policy.optimizer.state_dict()["state"][0].items()}
    # The loss stays finite; only the critic's gradient overflows (as a float16 overflow or a custom layer would).
    model.policy.value_net.weight.register_hook(lambda grad: grad * math.inf)
    with pytest.raises(NonFiniteRatioError, match=r"gradient norm .* epoch 0, minibatch 0.*not taken"):
        model.train()
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, before[key]), key
    for key, value in model.policy.optimizer.state_dict()["state"][0].items():
        assert th.equal(value, optimizer_state[key]), key


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("learning_rate", lambda progress: 3e-4 if progress >= 0.5 else -3e-4),
        ("learning_rate", lambda progress: 3e-4 if progress >= 0.5 else math.nan),
        ("clip_range_vf", lambda progress: 0.2 if progress >= 0.5 else -0.2),
        ("target_var", lambda progress: 0.02 if progress >= 0.5 else math.inf),
    ],
    ids=["learning_rate-negative", "learning_rate-nan", "clip_range_vf-negative", "target_var-inf"],
)
def test_a_schedule_that_turns_bad_is_caught_where_it_is_evaluated(name: str, schedule, tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **{**tiny_kwargs, name: schedule})
    # Four rollouts: train() runs at progress 0.75 and 0.5 (valid), then at 0.25, where the schedule turns bad.
    with pytest.raises(ValueError, match=rf"{name} \(at progress_remaining=0\.25\)=.*expected"):
        model.learn(4 * tiny_kwargs["n_steps"])
    assert model._n_updates == 2 * tiny_kwargs["n_epochs"]


def test_schedules_end_at_zero_when_the_last_rollout_overshoots(tiny_kwargs: dict) -> None:
    """SB3's progress goes below 0 when a rollout passes total_timesteps; a linear rate must not turn negative."""
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, learning_rate=LinearSchedule(1e-3, 0.0, 1.0), **tiny_kwargs)
    model.learn(tiny_kwargs["n_steps"] // 4)  # one rollout of 4x the budget: SB3's progress would be -3
    assert model._current_progress_remaining == 0.0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize(
    ("algorithm", "name", "value", "advice"),
    [
        (R2VPO, "clip_range", 0.2, r"var_coef.*target_var"),
        (R2VPOOff, "clip_range", 0.2, r"var_coef.*target_var"),
        (R2VPOOff, "n_epochs", 10, r"utd_ratio.*replay_capacity=1"),
    ],
)
def test_a_ppo_parameter_says_what_to_use_instead(algorithm: type, name: str, value: object, advice: str) -> None:
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'\. .*{advice}"):
        algorithm("MlpPolicy", MISSING_ENV, **{name: value})


@pytest.mark.parametrize("name", ["target_var", "learning_rate", "clip_range_vf"])
def test_a_zoo_schedule_string_in_python_points_to_schedules(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}='lin_0\.02' .*schedule.*LinearSchedule.*RL Zoo"):
        R2VPO("MlpPolicy", MISSING_ENV, **{name: "lin_0.02"})


def test_n_epochs_stays_r2vpo_on_parameter(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **{**tiny_kwargs, "n_epochs": 3})
    model.learn(tiny_kwargs["n_steps"])
    assert model._n_updates == 3
    assert np.isfinite(model.var_coef_value)


def test_log_dual_update_is_selectable_saved_and_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="var_coef_update='exp'"):
        R2VPO("MlpPolicy", "CartPole-v1", var_coef_update="exp")
    with pytest.raises(ValueError, match="var_coef_update='log'"):
        R2VPOOff("MlpPolicy", "CartPole-v1", var_coef="auto_0", var_coef_update="log")
    # A target far above what these updates reach: lam shrinks every step; additive would reach 0, log stays above.
    model = R2VPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=64,
        batch_size=16,
        n_epochs=4,
        var_coef_update="log",
        var_coef_lr=0.5,
        target_var=10.0,
        seed=0,
    )
    model.learn(128)
    controller = model.var_coef_controller
    assert controller.var_coef_update == "log" and 0.0 < controller.floor <= controller.value < 1.0
    model.save(tmp_path / "log_dual")
    loaded = R2VPO.load(tmp_path / "log_dual")
    assert loaded.var_coef_controller.var_coef_update == "log"
    assert loaded.var_coef_controller.value == controller.value
