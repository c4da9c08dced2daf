"""Argument checks of ``torchrl_reward::preprocess`` for the Python paths (fallback, fake kernel).

They mirror ``csrc/ops/preprocess_plan.h`` so the compiled op, the fake kernel used by
``torch.compile`` and the pure-torch fallback reject the same inputs with the same errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_preprocess_args(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    size: Sequence[int] | None,
    dtype: torch.dtype,
) -> tuple[int, int]:
    """Raises a one-line TypeError/ValueError for bad input; returns the output ``(h, w)``."""
    if images.dtype != torch.uint8:
        raise TypeError(
            f"preprocess: images must be uint8 [N, H, W, 3], got dtype {images.dtype}; "
            "pass the raw camera frames"
        )
    if images.dim() != 4 or images.shape[3] != 3:
        raise ValueError(
            "preprocess: images must have shape [N, H, W, 3] (channels last, RGB), got "
            f"{list(images.shape)}; for [N, 3, H, W] use images.permute(0, 2, 3, 1).contiguous()"
        )
    if not images.is_contiguous():
        raise ValueError(
            f"preprocess: images must be contiguous, got shape {list(images.shape)} with strides "
            f"{list(images.stride())}; call images.contiguous()"
        )
    if images.numel() == 0:
        raise ValueError(
            f"preprocess: images of shape {list(images.shape)} hold no pixels; "
            "pass a non-empty batch"
        )
    if dtype not in (torch.float32, torch.float16):
        raise TypeError(f"preprocess: dtype must be torch.float32 or torch.float16, got {dtype}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(
            "preprocess: mean and std need one value per RGB channel, got "
            f"{list(mean)} and {list(std)}"
        )
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s != 0 for s in std):
        raise ValueError(
            "preprocess: mean must be finite and std finite and non-zero, got mean "
            f"{list(mean)} and std {list(std)}"
        )
    if size is None:
        return images.shape[1], images.shape[2]
    if len(size) != 2 or size[0] <= 0 or size[1] <= 0:
        raise ValueError(
            f"preprocess: size must be [height, width] with positive values, got {list(size)}"
        )
    return size[0], size[1]
