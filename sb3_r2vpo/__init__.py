"""R2VPO (Ratio-Variance Regularized Policy Optimization) for Stable-Baselines3."""

from sb3_r2vpo.r2vpo import R2VPO
from sb3_r2vpo.version import __version__

__all__ = ["R2VPO", "__version__"]
