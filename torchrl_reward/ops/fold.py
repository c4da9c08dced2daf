"""Folding eval-mode batch norms into the convolutions before them, for inference."""

from __future__ import annotations

from itertools import pairwise

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


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
