"""uint8 camera frames -> normalised network input, as one fused op."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

from torchrl_reward.ops import _register
from torchrl_reward.ops._checks import check_preprocess_args


def _as_floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.tolist()]
    return [float(v) for v in values]


def _as_size(size: int | Sequence[int] | None) -> list[int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return [size, size]
    return [int(s) for s in size]


@lru_cache(maxsize=32)
def _affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale`` and ``bias`` of ``(x / 255 - mean) / std``, ``[1, 3, 1, 1]``.

    Cached per device: a CUDA graph cannot record the host-to-device copy that builds them, so
    the warm-up calls before a capture create them once.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device)
    return scale, bias.view(1, 3, 1, 1)


def preprocess(
    images: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int | Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Converts uint8 frames ``[N, H, W, 3]`` to normalised ``[N, 3, h, w]`` in one pass.

    ``out[n, c] = resize(images[n, ..., c]) * scale[c] + bias[c]`` with
    ``scale = 1 / (255 * std)`` and ``bias = -mean / std``: torchvision's ``Normalize`` of the
    image scaled to [0, 1], done as one multiply-add per value. The bilinear resize is
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` on the float image,
    applied before the normalisation (the two commute: bilinear weights sum to one).

    Runs the compiled op ``torch.ops.torchrl_reward.preprocess`` (vectorised C++ with OpenMP on
    CPU, one-pass kernel on the current stream on CUDA) and falls back to
    :func:`preprocess_torch` when the extension is not built or has no kernel for the device.
    Works under ``torch.compile(fullgraph=True)``.

    Args:
        images (torch.Tensor): uint8 ``[N, H, W, 3]``, contiguous, ``N > 0``.
        mean (sequence of float or torch.Tensor): per-channel mean of [0, 1] images.
        std (sequence of float or torch.Tensor): per-channel std of [0, 1] images, non-zero.
        size (int or (int, int), optional): output ``(h, w)``; an int gives a square.
            Defaults to ``None`` (no resize).
        dtype (torch.dtype, optional): ``torch.float32`` or ``torch.float16``.
            Defaults to ``torch.float32``.
        channels_last (bool, optional): return the result in ``torch.channels_last`` memory
            (``[N, h, w, 3]`` in memory, the input's order), the layout convolutions run fastest
            in, written directly instead of by a second pass. Defaults to ``False``.

    Returns:
        torch.Tensor: ``[N, 3, h, w]`` of ``dtype`` on the device of ``images``, contiguous or
        channels-last.

    Raises:
        TypeError: ``images`` not uint8 or ``dtype`` not float32/float16.
        ValueError: wrong shape or channel count, non-contiguous, empty batch, bad mean/std/size.

    Examples:
        >>> images = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8)
        >>> x = preprocess(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size=112)
        >>> x.shape, x.dtype
        (torch.Size([2, 3, 112, 112]), torch.float32)
    """
    mean = _as_floats(mean)
    std = _as_floats(std)
    size = _as_size(size)
    device_type = images.device.type
    if _register.has_ops() and (
        device_type == "cpu" or (device_type == "cuda" and _register.HAS_CUDA_KERNEL)
    ):
        return torch.ops.torchrl_reward.preprocess(images, mean, std, size, dtype, channels_last)
    return preprocess_torch(images, mean, std, size, dtype, channels_last)


def preprocess_torch(
    images: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int | Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Pure-torch :func:`preprocess` (same arguments, checks and result within float rounding).

    The fallback when the extension is not built, and the reference the op is tested against:
    permute + float, ``F.interpolate`` when the size changes, then one ``addcmul``.
    """
    mean = _as_floats(mean)
    std = _as_floats(std)
    size = _as_size(size)
    out_h, out_w = check_preprocess_args(images, mean, std, size, dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=memory_format)
    if (out_h, out_w) != (x.shape[2], x.shape[3]):
        x = F.interpolate(
            x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=False
        )
    scale, bias = _affine(tuple(mean), tuple(std), x.device)
    return torch.addcmul(bias, x, scale).to(dtype).contiguous(memory_format=memory_format)
