"""Chunking of frames together with their optional per-frame proprio values."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def frame_chunks(
    frames: torch.Tensor, proprio: torch.Tensor | None, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(frames[i:i + size], proprio[i:i + size] or None)`` along the first dimension."""
    chunks = frames.split(size)
    values = [None] * len(chunks) if proprio is None else proprio.split(size)
    return zip(chunks, values, strict=True)
