"""A small real reward checkpoint on disk and frames for the transform tests."""

import pytest
import torch

from torchrl_reward.models import ResNetRewardModel

SIZE = 32


@pytest.fixture(scope="session")
def model() -> ResNetRewardModel:
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=SIZE).eval()
    # A calibrated threshold inside the range of the scores, so binary outputs are mixed.
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (64, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)
    model.threshold = float(model.predict_proba(frames).median())
    return model


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("ckpt") / "reward.pt", step=7)
