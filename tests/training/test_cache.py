"""The memory-mapped frame cache built from recorded episodes."""

import shutil
import subprocess
import sys

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.data import list_episode_files, load_episode, write_episode
from torchrl_reward.envs.scripted import cube_goal_distance
from torchrl_reward.training import build_frame_cache

# The tests marked slow record episodes with the simulator (the reward_dataset fixture).


@pytest.fixture
def dataset_copy(reward_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(reward_dataset, root, ignore=shutil.ignore_patterns(".cache"))
    return root


@pytest.mark.slow
def test_cache_holds_every_frame_and_label(dataset_copy):
    cache = build_frame_cache(dataset_copy)
    files = list_episode_files(dataset_copy)
    episodes = [load_episode(path) for path in files]
    assert len(cache) == sum(ep.shape[0] for ep in episodes)
    assert cache.files == [str(path.relative_to(dataset_copy)) for path in files]
    assert cache.root.parent == dataset_copy / ".cache" and cache.skipped == []
    for i, episode in enumerate(episodes):
        mask = cache.episodes == i
        assert torch.equal(cache.pixels[mask], episode["pixels"])
        assert torch.equal(cache.labels[mask], episode["success"])
        assert torch.equal(cache.steps[mask], torch.arange(episode.shape[0]))
        assert bool(cache.episode_success[i]) == bool(episode["success"].any())
        distance = cube_goal_distance(episode["observation"])
        torch.testing.assert_close(cache.extra("cube_goal_distance")[mask], distance)


@pytest.mark.slow
def test_cache_is_reused_until_the_files_change(dataset_copy):
    first = build_frame_cache(dataset_copy)
    index_mtime = (first.root / "index.pt").stat().st_mtime_ns
    again = build_frame_cache(dataset_copy)
    assert again.root == first.root
    assert (again.root / "index.pt").stat().st_mtime_ns == index_mtime
    # A new episode changes the fingerprint: rebuilt, the stale cache removed, and so is
    # the leftover of a build that was killed.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    killed_build = first.root.parent / f".0123.building-{int(dead.stdout)}"
    killed_build.mkdir()
    episode = load_episode(list_episode_files(dataset_copy)[0])
    write_episode(dataset_copy / "success" / "episode_000100.pkl", episode)
    rebuilt = build_frame_cache(dataset_copy)
    assert rebuilt.fingerprint != first.fingerprint
    assert len(rebuilt) == len(first) + episode.shape[0]
    assert not first.root.exists() and not killed_build.exists()


def _write_tiny_episode(path, seed: int) -> None:
    """A 3-frame, 8 px episode: enough for the cache, no simulator needed."""
    g = torch.Generator().manual_seed(seed)
    flags = torch.zeros(3, dtype=torch.bool)
    episode = TensorDict(
        {
            "pixels": torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8, generator=g),
            "observation": torch.zeros(3, 4),
            "action": torch.zeros(3, 2),
            "reward": torch.zeros(3),
            **{key: flags for key in ("done", "success", "is_grasped")},
        },
        batch_size=[3],
    )
    write_episode(path, episode)


def test_corrupt_files_are_skipped_named_and_recorded(tmp_path):
    for i in range(3):
        _write_tiny_episode(tmp_path / "failure" / f"episode_{i:06d}.pkl", seed=i)
    victim = tmp_path / "failure" / "episode_000001.pkl"
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match=r"Skipped 1 unreadable .*: failure/episode_000001"):
        cache = build_frame_cache(tmp_path, cache_dir=tmp_path.parent / "cache")
    assert cache.skipped == ["failure/episode_000001.pkl"]
    assert cache.files == ["failure/episode_000000.pkl", "failure/episode_000002.pkl"]
    assert len(cache) == 6 and cache.root.parent == tmp_path.parent / "cache"
    for path in list_episode_files(tmp_path):
        path.write_bytes(b"not a pickle")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="No readable episode"):
        build_frame_cache(tmp_path, cache_dir=tmp_path.parent / "cache")


@pytest.mark.slow
def test_empty_and_mixed_size_datasets_raise(dataset_copy, tmp_path):
    empty = tmp_path / "empty"
    (empty / "success").mkdir(parents=True)
    (empty / "failure").mkdir()
    with pytest.raises(ValueError, match="No episode files"):
        build_frame_cache(empty)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_frame_cache(tmp_path / "absent")
    episode = load_episode(list_episode_files(dataset_copy)[0])
    small = episode["pixels"].permute(0, 3, 1, 2).float()
    small = torch.nn.functional.interpolate(small, size=(32, 32), mode="area")
    episode.set("pixels", small.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous())
    write_episode(dataset_copy / "success" / "episode_000100.pkl", episode)
    with pytest.raises(ValueError, match="one image size"):
        build_frame_cache(dataset_copy)
