"""
RL Zoo and Optuna integration: ``register()`` adds ``r2vpo``, ``r2vpo_off`` and ``spo`` to rl_zoo3, and the
``r2vpo-zoo`` command (also ``python -m sb3_r2vpo.zoo``) is rl_zoo3's CLI with them registered. Needs the ``zoo``
extra.
"""

from sb3_r2vpo.zoo.registration import hyperparams_path, register
from sb3_r2vpo.zoo.samplers import convert_r2vpo_params, sample_r2vpo_off_params, sample_r2vpo_params

__all__ = ["convert_r2vpo_params", "hyperparams_path", "register", "sample_r2vpo_off_params", "sample_r2vpo_params"]
