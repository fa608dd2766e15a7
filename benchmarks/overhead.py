"""
Cost of R2VPO's update against SB3 PPO's: ``R2VPO.train()`` vs ``PPO.train()`` on the *same* rollout buffer, the
same network, initial weights, optimizer state and minibatch order, interleaved in one process (ABBA order)
over repeated runs. Reports the median per-pair time ratio R2VPO / PPO (target: <= 1.02).

    python -m benchmarks.overhead --repeats 30

Writes ``results/overhead/overhead.json`` and ``overhead.png``.
"""

import argparse
import copy
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from benchmarks.common import RESULTS_DIR, make_env, save_figure_and_json, versions
from sb3_r2vpo import R2VPO

OUT_DIR = RESULTS_DIR / "overhead"

SETTINGS: dict[str, dict[str, Any]] = {
    # SB3's PPO defaults: 2048 steps, minibatches of 64, 10 epochs, 64x64 MLP.
    "CartPole-v1 (PPO defaults)": {"env_id": "CartPole-v1", "n_steps": 2048, "batch_size": 64, "n_epochs": 10},
    "Pendulum-v1 (PPO defaults)": {"env_id": "Pendulum-v1", "n_steps": 2048, "batch_size": 64, "n_epochs": 10},
    "Pendulum-v1 (256x256, batch 512)": {
        "env_id": "Pendulum-v1",
        "n_steps": 4096,
        "batch_size": 512,
        "n_epochs": 5,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
}


def _build(algo_class: type[OnPolicyAlgorithm], setting: dict[str, Any], seed: int) -> OnPolicyAlgorithm:
    setting = dict(setting)
    env = make_env(setting.pop("env_id"), 1, seed, False)
    model = algo_class("MlpPolicy", env, seed=seed, device="cpu", **setting)
    model.set_logger(configure(None, []))
    return model


def time_train(model: OnPolicyAlgorithm, initial_state: dict[str, Any], seed: int) -> float:
    """Restore the common starting point, then time one ``train()`` call."""
    model.policy.load_state_dict(copy.deepcopy(initial_state["policy"]))
    model.policy.optimizer.load_state_dict(copy.deepcopy(initial_state["optimizer"]))
    th.manual_seed(seed)
    np.random.seed(seed)  # the rollout buffer's minibatch permutation
    start = time.perf_counter()
    model.train()
    return time.perf_counter() - start


def measure(setting: dict[str, Any], repeats: int, seed: int = 0) -> dict[str, Any]:
    ppo = _build(PPO, setting, seed)
    r2vpo = _build(R2VPO, setting, seed)
    r2vpo.policy.load_state_dict(ppo.policy.state_dict())
    # One rollout collected by PPO, shared by both: identical data and behavior log-probs.
    ppo.learn(setting["n_steps"])
    r2vpo.rollout_buffer = ppo.rollout_buffer
    initial_state = {
        "policy": copy.deepcopy(ppo.policy.state_dict()),
        "optimizer": copy.deepcopy(ppo.policy.optimizer.state_dict()),
    }
    # Warm-up (allocator, first-call overheads), not recorded.
    time_train(ppo, initial_state, seed)
    time_train(r2vpo, initial_state, seed)

    ppo_times: list[float] = []
    r2vpo_times: list[float] = []
    for repeat in range(repeats):
        order = [(ppo, ppo_times), (r2vpo, r2vpo_times)]
        if repeat % 2:
            order.reverse()
        for model, times in order:
            times.append(time_train(model, initial_state, seed + repeat))
    ratios = np.array(r2vpo_times) / np.array(ppo_times)
    return {
        "setting": setting,
        "repeats": repeats,
        "ppo_train_s": ppo_times,
        "r2vpo_train_s": r2vpo_times,
        "median_ppo_s": float(np.median(ppo_times)),
        "median_r2vpo_s": float(np.median(r2vpo_times)),
        "median_ratio": float(np.median(ratios)),
        "ratio_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps the timing quiet)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    results = {}
    for name in args.settings:
        results[name] = measure(SETTINGS[name], args.repeats)
        row = results[name]
        print(
            f"{name:36s} PPO {row['median_ppo_s'] * 1e3:8.1f} ms  R2VPO {row['median_r2vpo_s'] * 1e3:8.1f} ms  "
            f"ratio {row['median_ratio']:.3f} (IQR {row['ratio_iqr'][0]:.3f}-{row['ratio_iqr'][1]:.3f})"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, row in results.items():
        ax.plot(np.array(row["r2vpo_train_s"]) / np.array(row["ppo_train_s"]), marker=".", label=name)
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.axhline(1.02, color="red", linestyle="--", linewidth=1, label="target 1.02")
    ax.set_xlabel("repeat")
    ax.set_ylabel("R2VPO.train() / PPO.train() time")
    ax.legend(fontsize=8)
    save_figure_and_json(
        fig, OUT_DIR, "overhead.png", "overhead.json", {"threads": args.threads, "versions": versions(), "results": results}
    )


if __name__ == "__main__":
    main()
