"""Custom ops: fused uint8 -> normalised preprocessing; folding batch norms into convolutions;
convolution with bias, residual add and ReLU in one call.

``preprocess`` runs the compiled ``torch.ops.torchrl_reward.preprocess`` (C++/CUDA, built by
``setup.py`` as ``torchrl_reward._C``) and falls back to pure torch when it is not built.
"""

from torchrl_reward.ops._register import has_ops
from torchrl_reward.ops.fold import fold_batchnorm
from torchrl_reward.ops.fused_conv import conv2d_relu, fuse_conv_relu
from torchrl_reward.ops.preprocess import preprocess, preprocess_torch

__all__ = [
    "conv2d_relu",
    "fold_batchnorm",
    "fuse_conv_relu",
    "has_ops",
    "preprocess",
    "preprocess_torch",
]
