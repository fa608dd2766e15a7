"""R2VPO's settings as a verl policy-loss config (verl's config dataclasses are frozen and take no unknown keys)."""

from dataclasses import dataclass

from verl.workers.config import PolicyLossConfig

from llm_adapter.objectives import DEFAULT_TARGET_VAR, DEFAULT_VAR_COEF, DEFAULT_VAR_COEF_LR
from sb3_r2vpo.core.dual import VarCoefController, parse_var_coef
from sb3_r2vpo.core.validation import check_positive


@dataclass
class R2VPOPolicyLossConfig(PolicyLossConfig):
    """
    verl's ``PolicyLossConfig`` plus R2VPO's settings; verl builds it from ``policy_loss._target_``.

    :param var_coef: ``lam``: a number >= 0 (fixed; the default 1.0 is the native trainer's), ``"auto"`` (adaptive,
        from 1.0) or ``"auto_<init>"``
    :param target_var: the target ratio variance ``E[(r - 1)^2]`` of the adaptive mode (> 0)
    :param var_coef_lr: the dual step size, applied once per optimizer step
    :param var_coef_max: the upper end of ``lam``'s projection
    :param var_coef_update: the dual update, ``"additive"`` (Eq. 10) or ``"log"`` (a step on ``log lam``)
    :param var_coef_min: the lower end of ``lam``'s projection (the paper: 0)
    :param topr_truncation: TOPR's truncation of the importance weight of negative samples (``loss_mode=topr``)
    """

    loss_mode: str = "r2vpo"
    var_coef: float | str = DEFAULT_VAR_COEF
    target_var: float = DEFAULT_TARGET_VAR
    var_coef_lr: float = DEFAULT_VAR_COEF_LR
    var_coef_max: float = 100.0
    var_coef_update: str = "additive"
    var_coef_min: float = 0.0
    topr_truncation: float = 1.0

    def __post_init__(self) -> None:
        # Validated when verl builds the config, on the driver, before any worker starts.
        parse_var_coef(self.var_coef)
        self.controller()
        check_positive("topr_truncation", self.topr_truncation)

    def controller(self) -> VarCoefController:
        """A fresh controller of ``lam`` with these settings."""
        return VarCoefController(
            self.var_coef,
            target_var=self.target_var,
            var_coef_lr=self.var_coef_lr,
            var_coef_max=self.var_coef_max,
            var_coef_update=self.var_coef_update,
            var_coef_min=self.var_coef_min,
        )
