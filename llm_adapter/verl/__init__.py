"""
R2VPO inside verl: importing this package registers the core's objectives in verl's policy-loss registry.

Select it with ``actor_rollout_ref.actor.policy_loss.loss_mode=r2vpo`` and pass R2VPO's settings through
:class:`R2VPOPolicyLossConfig` (``actor_rollout_ref.actor.policy_loss._target_=llm_adapter.verl.R2VPOPolicyLossConfig``).
Ray workers import it through ``VERL_USE_EXTERNAL_MODULES=llm_adapter.verl``; see ``docs/guide/verl.md``.
"""

from llm_adapter.verl.config import R2VPOPolicyLossConfig
from llm_adapter.verl.dual import DUAL_STATE_KEY, VerlDualState, dual_state
from llm_adapter.verl.losses import REGISTERED_LOSSES

__all__ = ["DUAL_STATE_KEY", "REGISTERED_LOSSES", "R2VPOPolicyLossConfig", "VerlDualState", "dual_state"]
