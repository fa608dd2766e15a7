"""The LLM objectives by name, each a core objective (``sb3_r2vpo.core``) with its coefficients."""

from collections.abc import Callable
from dataclasses import dataclass

import torch as th

from sb3_r2vpo.core.objectives import get_objective
from sb3_r2vpo.core.stats import RatioStats

# DAPO's clip-higher upper range, the paper's GRPO-CH baseline.
CLIP_HIGHER_RANGE = 0.28

#: The penalty's defaults on the LLM side, shared by the native trainer, ``llm_adapter.trl`` and
#: ``llm_adapter.verl``: a fixed ``lam = 1`` (chosen on the toy task's tuning seeds, docs/guide/llm.md); the target
#: and the dual step size apply when ``var_coef`` is ``"auto"``.
DEFAULT_VAR_COEF = 1.0
DEFAULT_TARGET_VAR = 0.01
DEFAULT_VAR_COEF_LR = 1.0


#: The ``TrainConfig`` fields of R2VPO's penalty and of the clip objectives; each objective reads some of them
#: (:attr:`LLMObjective.settings`), and setting one that the chosen objective does not read is an error.
PENALTY_SETTINGS = (
    "var_coef",
    "target_var",
    "var_coef_lr",
    "var_coef_max",
    "var_coef_update",
    "var_coef_min",
    "var_coef_age_factor",
)
CLIP_SETTINGS = ("clip_range", "clip_range_high")
OBJECTIVE_SETTINGS = PENALTY_SETTINGS + CLIP_SETTINGS


@dataclass(frozen=True)
class LLMObjective:
    """
    A named objective: which core function, and which of the trainer's settings it takes.

    :param core_name: name in ``sb3_r2vpo.core.OBJECTIVES``
    :param default_clip_range_high: upper clip range when the config leaves it unset (clip objectives)
    """

    core_name: str
    default_clip_range_high: float | None = None

    @property
    def function(self) -> Callable[..., tuple[th.Tensor, RatioStats]]:
        """The core objective."""
        return get_objective(self.core_name)

    @property
    def settings(self) -> frozenset[str]:
        """The ``TrainConfig`` fields this objective reads (the others of its kind have no effect on it)."""
        if self.core_name == "r2vpo":
            return frozenset(PENALTY_SETTINGS)
        if self.core_name == "spo":
            return frozenset({"clip_range"})
        if self.core_name == "topr":
            return frozenset()
        return frozenset(CLIP_SETTINGS)

    def coefficients(
        self, *, var_coef: float | th.Tensor, clip_range: float, clip_range_high: float | None
    ) -> dict[str, float | th.Tensor | None]:
        """
        The keyword coefficients of the core call.

        :param var_coef: current ``lam`` (R2VPO): one value, or one per token (a ``lam`` that depends on the age)
        :param clip_range: lower clip range, or SPO's epsilon
        :param clip_range_high: configured upper clip range (None: this objective's default)
        :return: keyword arguments
        """
        if self.core_name == "r2vpo":
            return {"var_coef": var_coef}
        if self.core_name == "spo":
            return {"clip_range": clip_range}
        if self.core_name == "topr":
            return {}
        high = self.default_clip_range_high if clip_range_high is None else clip_range_high
        return {"clip_range": clip_range, "clip_range_high": high}


LLM_OBJECTIVES: dict[str, LLMObjective] = {
    "r2vpo": LLMObjective("r2vpo"),
    "grpo": LLMObjective("clip"),
    "grpo_ch": LLMObjective("clip", default_clip_range_high=CLIP_HIGHER_RANGE),
    "gppo": LLMObjective("gppo"),
    "topr": LLMObjective("topr"),
    "spo": LLMObjective("spo"),
}
