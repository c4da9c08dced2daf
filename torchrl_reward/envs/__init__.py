"""ManiSkill tasks as TorchRL environments."""

from torchrl_reward.envs._vulkan import select_vulkan_driver

select_vulkan_driver()

from torchrl_reward.envs.maniskill import ManiSkillEnv, ManiSkillWrapper  # noqa: E402

__all__ = ["ManiSkillEnv", "ManiSkillWrapper", "select_vulkan_driver"]
