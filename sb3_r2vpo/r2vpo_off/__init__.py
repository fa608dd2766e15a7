from sb3_r2vpo.r2vpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_r2vpo.r2vpo_off.buffers import ReplayBufferSamples, RolloutReplayBuffer
from sb3_r2vpo.r2vpo_off.r2vpo_off import R2VPOOff

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "R2VPOOff", "ReplayBufferSamples", "RolloutReplayBuffer"]
