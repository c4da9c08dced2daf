"""Small shared utilities."""

from torchrl_reward.utils.chunks import frame_chunks, score_chunks
from torchrl_reward.utils.device import resolve_device
from torchrl_reward.utils.io import atomic_write

__all__ = ["atomic_write", "frame_chunks", "resolve_device", "score_chunks"]
