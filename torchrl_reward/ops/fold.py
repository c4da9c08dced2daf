"""Folding affine maps into convolutions: the input normalisation (for exported models) and
eval-mode batch norms (for inference)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class MeanPaddedConv2d(nn.Conv2d):
    """A ``Conv2d`` that pads its input with a per-channel value instead of zeros.

    The convolution itself runs unpadded; ``forward`` first pads each channel ``c`` of the input
    with ``pad_value[c]``. :func:`fold_normalization_into_conv` uses it so that a folded conv
    on raw pixels pads with the mean pixel, which is what zero padding of the normalised image
    amounts to.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as ``nn.Conv2d``.
        pad (tuple of 4 ints): ``(left, right, top, bottom)`` padding, as ``F.pad``.
        pad_value (torch.Tensor): ``[in_channels]`` value padded into each channel.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        pad: tuple[int, int, int, int],
        pad_value: torch.Tensor,
        stride: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.pad = tuple(pad)
        self.register_buffer(
            "pad_value", pad_value.detach().to(self.weight).reshape(1, in_channels, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x - self.pad_value, self.pad) + self.pad_value
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding of ``conv``, resolving ``"same"``/``"valid"``."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def fold_normalization_into_conv(
    conv: nn.Conv2d,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    *,
    max_value: float = 255.0,
) -> nn.Conv2d:
    """Returns a conv on raw pixels equal to ``conv`` on normalised images.

    ``folded(x) == conv((x / max_value - mean) / std)`` for ``x`` the float image in
    ``[0, max_value]`` (``images.permute(0, 3, 1, 2).float()`` with the default ``255.0``), so an
    exported model needs no normalisation step. The weights absorb ``1 / (max_value * std)`` and
    the bias absorbs ``-mean / std``.

    Padding: replicate/reflect/circular padding commutes with the per-channel affine map, so
    those convs (and unpadded ones) fold exactly into a plain ``nn.Conv2d``. Zero padding does
    not: zeros in the normalised image are the mean pixel in raw input, and a plain folded conv
    would pad raw zeros (wrong on a border band ``padding`` wide). Zero-padded convs are
    therefore returned as a :class:`MeanPaddedConv2d` (an ``nn.Conv2d`` subclass) padding raw
    input with ``mean * max_value``: exact everywhere, exports to ONNX as Sub-Pad-Add-Conv.

    Args:
        conv (nn.Conv2d): the first convolution, fed normalised images.
        mean (sequence of float or torch.Tensor): per-input-channel mean of [0, 1] images.
        std (sequence of float or torch.Tensor): per-input-channel std, non-zero.
        max_value (float, optional): raw value of a full-intensity pixel: ``255.0`` for uint8
            frames cast to float, ``1.0`` for [0, 1] input. Defaults to ``255.0``.

    Examples:
        >>> from torchvision.models import resnet18
        >>> net = resnet18()
        >>> folded = fold_normalization_into_conv(
        ...     net.conv1, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        ... )
        >>> raw = torch.randint(0, 256, (1, 3, 64, 64)).float()
        >>> mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        >>> std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        >>> torch.allclose(folded(raw), net.conv1((raw / 255 - mean) / std), atol=1e-4)
        True
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"fold_normalization_into_conv: expected an nn.Conv2d, got {type(conv).__name__}"
        )
    weight = conv.weight.detach()
    mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if mean_t.numel() != conv.in_channels or std_t.numel() != conv.in_channels:
        raise ValueError(
            f"fold_normalization_into_conv: conv has {conv.in_channels} input channels, got "
            f"{mean_t.numel()} mean and {std_t.numel()} std values"
        )
    if not bool(torch.isfinite(mean_t).all()) or not bool(
        (torch.isfinite(std_t) & (std_t != 0)).all()
    ):
        raise ValueError(
            "fold_normalization_into_conv: mean must be finite and std finite and non-zero, "
            f"got mean {mean_t.tolist()} and std {std_t.tolist()}"
        )
    if max_value <= 0:
        raise ValueError(f"fold_normalization_into_conv: max_value must be > 0, got {max_value}")

    # Input channel read by weight[o, j]: grouped convs see a slice of the channels.
    in_per_group = conv.in_channels // conv.groups
    out_per_group = conv.out_channels // conv.groups
    group = torch.arange(conv.out_channels) // out_per_group
    channel = group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    w64 = weight.to(torch.float64)
    scale = (1.0 / (max_value * std_t))[channel][..., None, None]
    shift = (mean_t / std_t)[channel][..., None, None]
    folded_weight = w64 * scale
    folded_bias = -(w64 * shift).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        folded_bias += conv.bias.detach().to(torch.float64)

    pad = _explicit_padding(conv)
    factory = {"device": weight.device, "dtype": weight.dtype}
    if conv.padding_mode != "zeros" or not any(pad):
        folded = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            **factory,
        )
    else:
        folded = MeanPaddedConv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            pad=pad,
            pad_value=mean_t * max_value,
            stride=conv.stride,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            **factory,
        )
    with torch.no_grad():
        folded.weight.copy_(folded_weight)
        folded.bias.copy_(folded_bias)
    return folded


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Folds each ``BatchNorm2d`` into the ``Conv2d`` just before it, in place; returns ``module``.

    An eval-mode BN is a per-channel affine map, so the conv absorbs it and one pass over the
    activations disappears per pair (inference only). Pairs are adjacent children in
    registration order, which is execution order in torchvision's ResNets (``conv1``/``bn1``,
    ``downsample = [conv, bn]``); a BN with no conv before it stays.
    """
    if module.training:
        raise ValueError("fold_batchnorm: the module must be in eval mode (call .eval() first).")
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return module
