"""Convolution, bias, residual add and ReLU as one op, and a ResNet rewritten to use it.

After batch norm is folded (:func:`~torchrl_reward.ops.fold_batchnorm`), every
conv -> BN -> ReLU of a torchvision ResNet is ``relu(conv(x) + bias)`` and every block ends in
``relu(conv(x) + bias + identity)``. cuDNN computes both in the convolution's epilogue; unfused,
each one costs a separate pass over the activations (``torch.compile`` emits one pointwise
kernel per conv for the bias and ReLU). :func:`fuse_conv_relu` swaps those modules for ones
that call :func:`conv2d_relu`, a custom op (opaque to ``torch.compile``, with a fake kernel)
that runs ``torch.cudnn_convolution_relu`` / ``torch.cudnn_convolution_add_relu`` on CUDA and
the unfused ops elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


def _output_format(x: torch.Tensor) -> torch.memory_format:
    """The input's layout: channels-last when its strides say so unambiguously."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("torchrl_reward::conv2d_relu", mutates_args=())
def conv2d_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, ...) + residual)``, one cuDNN call on CUDA.

    ``residual`` is optional (``None``: no add). The result keeps ``x``'s memory format.
    Inference only: the op has no autograd formula.
    """
    if x.is_cuda and torch.backends.cudnn.is_available():
        if residual is None:
            out = torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)
        else:
            out = torch.cudnn_convolution_add_relu(
                x, weight, residual, 1.0, bias, stride, padding, dilation, groups
            )
    else:
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        if residual is not None:
            out = out + residual
        out = torch.relu(out)
    return out.contiguous(memory_format=_output_format(x))


@conv2d_relu.register_fake
def _conv2d_relu_fake(x, weight, bias, stride, padding, dilation, groups, residual):
    size = [x.shape[0], weight.shape[0]]
    for i in range(2):
        extent = dilation[i] * (weight.shape[2 + i] - 1) + 1
        size.append((x.shape[2 + i] + 2 * padding[i] - extent) // stride[i] + 1)
    return torch.empty(size, dtype=x.dtype, device=x.device, memory_format=_output_format(x))


def _conv_args(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(
            "fuse_conv_relu: convolutions must use explicit zero padding, got "
            f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
        )
    return list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups


class ConvReLU(nn.Module):
    """``relu(conv(x) [+ residual])`` through :func:`conv2d_relu`, sharing ``conv``'s weights."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = _conv_args(conv)
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return conv2d_relu(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            residual,
        )


class FusedBlock(nn.Module):
    """A folded torchvision ``BasicBlock`` or ``Bottleneck``: every conv but the block's last
    is a :class:`ConvReLU`; the last adds the identity (or its downsample) before the ReLU."""

    def __init__(self, block: BasicBlock | Bottleneck) -> None:
        super().__init__()
        names = ["conv1", "conv2"] + (["conv3"] if isinstance(block, Bottleneck) else [])
        for name in names:
            bn = getattr(block, name.replace("conv", "bn"))
            if not isinstance(bn, nn.Identity):
                raise ValueError(
                    "fuse_conv_relu: fold the batch norms first (ops.fold_batchnorm); "
                    f"found {type(bn).__name__} after {name}"
                )
        self.convs = nn.ModuleList(ConvReLU(getattr(block, name)) for name in names)
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, identity)


def fuse_conv_relu(resnet: ResNet) -> ResNet:
    """Rewrites a batch-norm-folded torchvision ResNet in place to fuse bias, residual add and
    ReLU into its convolutions; returns it. Same outputs, fewer passes over the activations.

    Raises:
        TypeError: ``resnet`` is not a torchvision ``ResNet``.
        ValueError: its batch norms are not folded yet.
    """
    if not isinstance(resnet, ResNet):
        raise TypeError(
            f"fuse_conv_relu: expected a torchvision ResNet, got {type(resnet).__name__}"
        )
    if not isinstance(resnet.bn1, nn.Identity):
        raise ValueError("fuse_conv_relu: fold the batch norms first (ops.fold_batchnorm)")
    resnet.conv1 = ConvReLU(resnet.conv1)
    resnet.relu = nn.Identity()
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for i, block in enumerate(layer if isinstance(layer, nn.Sequential) else ()):
            layer[i] = FusedBlock(block)
    return resnet
