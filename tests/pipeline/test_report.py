"""The report's episode reading: example frames from readable episodes, corrupt files named."""

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.data import write_episode
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.pipeline.report import plot_example_frames


def _write_tiny_episode(path, success: bool) -> None:
    """A 3-frame, 32 px episode that succeeds on its last frame, or never."""
    flags = torch.tensor([False, False, success])
    episode = TensorDict(
        {
            "pixels": torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8),
            "observation": torch.zeros(3, 4),
            "action": torch.zeros(3, 2),
            "reward": torch.zeros(3),
            "done": flags,
            "success": flags,
            "is_grasped": flags,
        },
        batch_size=[3],
    )
    write_episode(path, episode)


def test_example_frames_skip_a_corrupt_episode_and_name_it(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        _write_tiny_episode(data / "success" / f"episode_{i:06d}.pkl", success=True)
    _write_tiny_episode(data / "failure" / "episode_000003.pkl", success=False)
    (data / "success" / "episode_000001.pkl").write_bytes(b"truncated")
    model = ResNetRewardModel(image_size=32).eval()
    with pytest.warns(RuntimeWarning, match=r"Skipped 1 .*: success/episode_000001\.pkl"):
        path = plot_example_frames(data, model, tmp_path / "frames.png", per_class=2)
    assert path.read_bytes()[:4] == b"\x89PNG"
