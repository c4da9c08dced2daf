"""ManiSkill tasks as TorchRL environments."""

from torchrl_reward.envs._vulkan import select_vulkan_driver
from torchrl_reward.envs.maniskill import VIEWS, CameraView, ManiSkillEnv, ManiSkillWrapper

__all__ = ["VIEWS", "CameraView", "ManiSkillEnv", "ManiSkillWrapper", "select_vulkan_driver"]
