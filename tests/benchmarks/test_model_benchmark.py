"""Reward-model throughput: ``ResNetRewardModel.predict_proba`` against plain torchvision.

    pytest --benchmark-only tests/benchmarks/test_model_benchmark.py

The baseline is the seed system's path measured in the same run: a torchvision resnet18 on
``(x / 255 - mean) / std`` in the default memory format. ``ratio_to_baseline`` > 1 means faster.
"""

import resource
from collections.abc import Callable

import pytest
import torch
import torchvision

from torchrl_reward.models import IMAGENET_MEAN, IMAGENET_STD, ResNetRewardModel

BATCH = 32
SIZE = 128


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seed_pipeline(images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The seed's inference: torch-op permute/float/255/normalise, eager fp32 ResNet-18."""
    net = torchvision.models.resnet18(num_classes=1).eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def run() -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
        return torch.sigmoid(net(x))

    return run


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_predict_proba_throughput(benchmark, best_seconds, channels_last):
    images = torch.randint(0, 256, (BATCH, SIZE, SIZE, 3), dtype=torch.uint8)
    baseline = best_seconds(_seed_pipeline(images))
    model = ResNetRewardModel(image_size=SIZE).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.predict_proba(images)  # warm-up
    probs = benchmark.pedantic(model.predict_proba, args=(images,), rounds=3, iterations=1)
    assert probs.shape == (BATCH,)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.min
    benchmark.extra_info["baseline_images_per_s"] = BATCH / baseline
    benchmark.extra_info["ratio_to_baseline"] = baseline / benchmark.stats.stats.min
    benchmark.extra_info["peak_rss_mib"] = _peak_rss_mib()
