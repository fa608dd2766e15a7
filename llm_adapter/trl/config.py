"""``R2VPOConfig``: TRL's ``GRPOConfig`` plus the settings of R2VPO's ratio-variance penalty."""

from dataclasses import dataclass, field

from trl import GRPOConfig

from llm_adapter.objectives import DEFAULT_TARGET_VAR, DEFAULT_VAR_COEF, DEFAULT_VAR_COEF_LR
from sb3_r2vpo.core.dual import VarCoefController

# TRL loss types that only choose how per-token losses are aggregated; the others replace the policy objective.
AGGREGATING_LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo", "luspo")
OBJECTIVE_LOSS_TYPES = ("cispo", "sapo", "vespo")


def _parse_var_coef_field(value: float | str) -> float | str:
    """Accept ``"0.5"`` from a command line as the number 0.5; keep ``"auto"`` forms as strings."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass
class R2VPOConfig(GRPOConfig):
    r"""
    Configuration of :class:`~llm_adapter.trl.R2VPOTrainer`: every ``GRPOConfig`` field, plus R2VPO's.

    R2VPO replaces the clipped surrogate with ``-r A + lam (r - 1)^2`` per token, where ``r`` is the ratio between
    the current policy and the policy that generated the completions (TRL's ``old_per_token_logps``). ``epsilon``
    and ``epsilon_high`` are not used. ``loss_type`` keeps its TRL meaning for the aggregations ``dapo`` (default),
    ``grpo``, ``bnpo``, ``dr_grpo`` and ``luspo``; ``cispo``, ``sapo`` and ``vespo`` are other objectives and are
    refused.

    The penalty only acts when the policy moves between generation and update: set ``num_iterations > 1`` or
    ``steps_per_generation > gradient_accumulation_steps``. With TRL's defaults the ratio is exactly 1 and R2VPO
    reduces to the plain policy gradient (the trainer warns).

    Parameters:
        var_coef (`str` or `float`, *optional*, defaults to `1.0`):
            ``lam``: a number ``>= 0`` (fixed), ``"auto"`` (adaptive from 1.0) or ``"auto_<init>"`` (adaptive from
            ``init``). The default, a fixed ``lam = 1``, is the native trainer's (``llm_adapter.TrainConfig``).
            Adaptive ``lam`` takes one projected dual-ascent step per optimizer step,
            ``lam <- clip(lam + var_coef_lr * (V - target_var), 0, var_coef_max)``, where ``V`` is the token-mean
            ``(r - 1)^2`` of the whole optimizer step, summed over micro-batches and all-reduced across processes.
        target_var (`float`, *optional*, defaults to `0.01`):
            Target token ratio variance ``E[(r - 1)^2]`` of the dual step (``> 0``).
        var_coef_lr (`float`, *optional*, defaults to `1.0`):
            Dual step size (``>= 0``).
        var_coef_max (`float`, *optional*, defaults to `100.0`):
            Upper bound of ``lam`` (``> 0``).
        var_coef_update (`str`, *optional*, defaults to `"additive"`):
            The dual update: ``"additive"`` (the step above, the paper's Eq. 10) or ``"log"`` (a step on ``log lam``,
            ``lam <- lam * exp(var_coef_lr * (V / target_var - 1))``, which cannot drive ``lam`` to 0).
        var_coef_min (`float`, *optional*, defaults to `0.0`):
            Lower bound of ``lam`` (the paper: 0).
    """

    var_coef: str = field(
        default=str(DEFAULT_VAR_COEF),
        metadata={"help": "R2VPO's lam: a number >= 0 (fixed), 'auto' or 'auto_<init>' (adaptive, dual ascent)."},
    )
    target_var: float = field(
        default=DEFAULT_TARGET_VAR, metadata={"help": "Target token ratio variance E[(r - 1)^2] of the dual step (> 0)."}
    )
    var_coef_lr: float = field(default=DEFAULT_VAR_COEF_LR, metadata={"help": "Dual step size for lam (>= 0)."})
    var_coef_max: float = field(default=100.0, metadata={"help": "Upper bound of lam (> 0)."})
    var_coef_update: str = field(default="additive", metadata={"help": "Dual update of lam: 'additive' or 'log'."})
    var_coef_min: float = field(default=0.0, metadata={"help": "Lower bound of lam (>= 0)."})

    def __post_init__(self) -> None:
        self.var_coef = _parse_var_coef_field(self.var_coef)  # type: ignore[assignment]
        self.var_coef_controller()  # validates the dual settings
        if self.loss_type in OBJECTIVE_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is a different policy objective, not an aggregation; R2VPOTrainer "
                f"accepts loss_type in {AGGREGATING_LOSS_TYPES} (use GRPOTrainer for {self.loss_type!r})"
            )
        if self.loss_type not in AGGREGATING_LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not understood: expected one of {AGGREGATING_LOSS_TYPES}")
        if self.use_liger_kernel:
            raise ValueError(
                "use_liger_kernel=True is not supported by R2VPOTrainer: Liger has no R2VPO loss, and TRL deprecates "
                "the flag. Use the Hub kernels instead (model_init_kwargs={'use_kernels': True}); the R2VPO loss "
                "runs on TRL's chunked log-probabilities either way."
            )
        if self.use_adaptive_entropy:
            raise ValueError(
                "use_adaptive_entropy=True is not supported by R2VPOTrainer (two coupled controllers); use a fixed "
                "entropy_coef or none"
            )
        super().__post_init__()

    def var_coef_controller(self) -> VarCoefController:
        """A fresh controller of ``lam`` with these settings."""
        return VarCoefController(
            self.var_coef,
            target_var=self.target_var,
            var_coef_lr=self.var_coef_lr,
            var_coef_max=self.var_coef_max,
            var_coef_update=self.var_coef_update,
            var_coef_min=self.var_coef_min,
        )
