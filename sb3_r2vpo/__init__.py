"""R2VPO (Ratio-Variance Regularized Policy Optimization) for Stable-Baselines3."""

from typing import TYPE_CHECKING, Any

from sb3_r2vpo.version import __version__

if TYPE_CHECKING:
    from sb3_r2vpo.r2vpo import R2VPO
    from sb3_r2vpo.r2vpo_off import R2VPOOff
    from sb3_r2vpo.spo import SPO

__all__ = ["R2VPO", "SPO", "R2VPOOff", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import sb3_r2vpo.core` (used by the LLM adapter) must not import Stable-Baselines3 or gymnasium.
    if name == "R2VPO":
        from sb3_r2vpo.r2vpo import R2VPO

        return R2VPO
    if name == "R2VPOOff":
        from sb3_r2vpo.r2vpo_off import R2VPOOff

        return R2VPOOff
    if name == "SPO":
        from sb3_r2vpo.spo import SPO

        return SPO
    raise AttributeError(f"module 'sb3_r2vpo' has no attribute {name!r}")
