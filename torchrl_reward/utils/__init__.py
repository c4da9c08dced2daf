"""Small shared utilities."""

from torchrl_reward.utils.io import atomic_write

__all__ = ["atomic_write"]
