"""Learned reward models."""

from torchrl_reward.models.resnet import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNetRewardModel,
    imagenet_weights_path,
)

__all__ = ["ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "ResNetRewardModel", "imagenet_weights_path"]
