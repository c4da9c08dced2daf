"""TorchRL transforms: the learned success reward, and its agreement with true success."""

from torchrl_reward.transforms.agreement import agreement
from torchrl_reward.transforms.reward import RewardTransform

__all__ = ["RewardTransform", "agreement"]
