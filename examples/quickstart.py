"""
A short R2VPO training run: CartPole-v1 with the shipped RL Zoo hyperparameters, a progress bar, and a final
deterministic evaluation of the trained agent.

    python examples/quickstart.py [--timesteps 60000] [--seed 0]
"""

import argparse

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule

from sb3_r2vpo import R2VPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    # The `CartPole-v1` entry of hyperparams/r2vpo.yml.
    model = R2VPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
        var_coef="auto",
        target_var=LinearSchedule(0.02, 0.0, 1.0),  # annealed with the learning rate, as PPO anneals its clip
        seed=args.seed,
    )
    model.learn(args.timesteps, progress_bar=True)

    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
    mean_reward, std_reward = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(f"R2VPO on CartPole-v1 after {model.num_timesteps} steps: mean reward {mean_reward:.1f} +/- {std_reward:.1f}")
    print(f"final var_coef (lam) = {model.var_coef_value:.4f}")


if __name__ == "__main__":
    main()
