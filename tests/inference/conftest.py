"""Small real reward models and structured frames for the inference tests."""

import pytest
import torch

from torchrl_reward.inference import export_reward
from torchrl_reward.models import ResNetRewardModel

SIZE = 32


def make_frames(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """uint8 ``[n, size, size, 3]`` frames with structure (gradients and blocks), not pure noise."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = (ramp[:, None] * ramp[None, :] * 200).expand(n, 3, size, size).clone()
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        colour = torch.randint(0, 256, (3, 1, 1), generator=generator).float()
        base[i, :, top : top + size // 3, left : left + size // 3] = colour
    noise = torch.randint(0, 24, base.shape, generator=generator).float()
    return (base + noise).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="session")
def model() -> ResNetRewardModel:
    torch.manual_seed(0)
    return ResNetRewardModel(image_size=SIZE).eval()


@pytest.fixture(scope="session")
def frames() -> torch.Tensor:
    return make_frames(48)


@pytest.fixture(scope="session")
def export_dir(model, frames, tmp_path_factory):
    """A full export (fp32, int8, fp16) of ``model``: 24 calibration, 24 validation frames."""
    out = tmp_path_factory.mktemp("export")
    export_reward(model, out, frames[24:], calibration_frames=frames[:24], chunk_size=16)
    return out
