"""Shared test settings: small, deterministic, CPU."""

import pytest
import torch

from torchrl_reward.models import ResNetRewardModel

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def constant_reward_model():
    """``make(logit, image_size=64, threshold=0.5, **model_kwargs)``: a real
    :class:`ResNetRewardModel` that scores every frame ``sigmoid(logit)``, so the rewards it
    gives are recognisable wherever they end up."""

    def make(
        logit: float, *, image_size: int = 64, threshold: float = 0.5, **model_kwargs
    ) -> ResNetRewardModel:
        model = ResNetRewardModel(image_size=image_size, **model_kwargs)
        with torch.no_grad():
            model.head[-1].weight.zero_()
            model.head[-1].bias.fill_(logit)
        model.threshold = threshold
        return model

    return make
