"""torchrl-reward: learned visual success rewards for robot learning with TorchRL."""

from torchrl_reward.envs import ManiSkillEnv

__all__ = ["ManiSkillEnv"]
__version__ = "0.1.0"
