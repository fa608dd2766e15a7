from sb3_r2vpo.r2vpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_r2vpo.r2vpo.r2vpo import R2VPO

__all__ = ["R2VPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
