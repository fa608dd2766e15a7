import csv

import numpy as np
import torch as th
from stable_baselines3.common.logger import configure

from sb3_r2vpo import R2VPO


def _train(seed: int, folder, tiny_kwargs: dict) -> tuple[R2VPO, list[dict]]:
    model = R2VPO("MlpPolicy", "Pendulum-v1", var_coef="auto", var_coef_lr=1.0, seed=seed, **tiny_kwargs)
    model.set_logger(configure(str(folder), ["csv"]))
    model.learn(256)
    with open(folder / "progress.csv") as file:
        rows = [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(file)]
    return model, rows


def test_seeded_runs_are_identical(tmp_path, tiny_kwargs: dict) -> None:
    first, first_log = _train(7, tmp_path / "a", tiny_kwargs)
    second, second_log = _train(7, tmp_path / "b", tiny_kwargs)
    for key, value in first.policy.state_dict().items():
        assert th.equal(value, second.policy.state_dict()[key]), key
    assert first.var_coef_value == second.var_coef_value
    assert first_log == second_log
    obs = np.zeros((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(first.predict(obs, deterministic=True)[0], second.predict(obs, deterministic=True)[0])

    other, _ = _train(8, tmp_path / "c", tiny_kwargs)
    assert any(not th.equal(v, other.policy.state_dict()[k]) for k, v in first.policy.state_dict().items())
