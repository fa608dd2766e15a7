from sb3_r2vpo.r2vpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_r2vpo.spo.spo import SPO

__all__ = ["SPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
