"""Every bad hyperparameter raises ValueError naming it, before the environment is built."""

import math

import numpy as np
import pytest
import torch as th

from sb3_r2vpo import R2VPO
from sb3_r2vpo.core import NonFiniteRatioError

# An env id that does not exist: if validation ran after the env was built, gymnasium's error would win.
MISSING_ENV = "ThisEnvDoesNotExist-v0"

BAD_INPUTS = [
    ("var_coef", -0.1),
    ("var_coef", "0.1"),
    ("var_coef", None),
    ("var_coef", True),
    ("var_coef", math.nan),
    ("var_coef", math.inf),
    ("var_coef", "auto_x"),
    ("var_coef", "auto_"),
    ("var_coef", "auto_-0.5"),
    ("var_coef", "adaptive"),
    ("target_var", 0.0),
    ("target_var", -0.01),
    ("target_var", math.nan),
    ("target_var", "small"),
    ("var_coef_lr", -1e-3),
    ("var_coef_lr", math.inf),
    ("var_coef_lr", "fast"),
    ("var_coef_max", 0.0),
    ("var_coef_max", -1.0),
    ("learning_rate", -3e-4),
    ("learning_rate", 0.0),
    ("n_steps", 0),
    ("n_steps", 2.5),
    ("batch_size", 1),
    ("batch_size", "64"),
    ("n_epochs", 0),
    ("gamma", 1.5),
    ("gae_lambda", -0.1),
    ("clip_range_vf", -0.2),
    ("ent_coef", -0.01),
    ("vf_coef", math.nan),
    ("max_grad_norm", 0.0),
    ("target_kl", 0.0),
    ("stats_window_size", 0),
]


@pytest.mark.parametrize(("name", "value"), BAD_INPUTS, ids=[f"{n}={v!r}" for n, v in BAD_INPUTS])
def test_bad_hyperparameter(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name) as info:
        R2VPO("MlpPolicy", MISSING_ENV, **{name: value})
    assert "expected" in str(info.value) or "must" in str(info.value)


def test_initial_var_coef_above_max() -> None:
    with pytest.raises(ValueError, match="var_coef_max"):
        R2VPO("MlpPolicy", MISSING_ENV, var_coef="auto_5", var_coef_max=1.0)


def test_single_sample_buffer_with_normalized_advantage() -> None:
    with pytest.raises(ValueError, match="n_steps \\* n_envs"):
        R2VPO("MlpPolicy", "CartPole-v1", n_steps=1, batch_size=2)


def test_non_finite_ratio_during_training_is_reported_with_context(tiny_kwargs: dict) -> None:
    model = R2VPO("MlpPolicy", "CartPole-v1", seed=0, **tiny_kwargs)
    model.learn(tiny_kwargs["n_steps"])
    # A corrupt behavior log-probability (e.g. from a buggy custom buffer) makes the ratio overflow.
    model.rollout_buffer.log_probs[:] = np.float32(-1e4)
    params_before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    with pytest.raises(NonFiniteRatioError, match=r"epoch 0, minibatch 0") as info:
        model.train()
    assert "max_abs_log_ratio" in str(info.value)
    # The error fires before any gradient step: the weights are untouched.
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, params_before[key]), key


def test_target_var_schedule_is_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="target_var"):
        R2VPO("MlpPolicy", MISSING_ENV, target_var=lambda progress: -1.0)
