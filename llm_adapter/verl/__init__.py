"""
R2VPO inside verl: importing this package registers the core's objectives in verl's policy-loss registry.

Select it with ``actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo`` and pass R2VPO's settings through
:class:`R2VPOPolicyLossConfig` (``actor_rollout_ref.actor.policy_loss._target_=llm_adapter.verl.R2VPOPolicyLossConfig``).
verl imports it in every process through the ``verl.plugins`` entry point that the ``[verl]`` install registers
(``VERL_USE_EXTERNAL_MODULES=llm_adapter.verl`` does the same by hand); see ``docs/guide/verl.md``.
"""

import importlib.util

if importlib.util.find_spec("verl") is None:
    raise ImportError("llm_adapter.verl needs verl: pip install 'sb3-r2vpo[verl]'")

from llm_adapter.verl.config import R2VPOPolicyLossConfig
from llm_adapter.verl.dual import DUAL_STATE_KEY, VerlDualState, dual_state
from llm_adapter.verl.losses import REGISTERED_LOSSES

__all__ = ["DUAL_STATE_KEY", "REGISTERED_LOSSES", "R2VPOPolicyLossConfig", "VerlDualState", "dual_state"]
