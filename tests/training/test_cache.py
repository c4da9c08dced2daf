"""The memory-mapped frame cache built from real recorded episodes."""

import shutil
import subprocess
import sys

import pytest
import torch

from torchrl_reward.data import list_episode_files, load_episode, write_episode
from torchrl_reward.training import build_frame_cache

pytestmark = pytest.mark.slow  # records episodes with the simulator


@pytest.fixture
def dataset_copy(reward_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(reward_dataset, root, ignore=shutil.ignore_patterns(".cache"))
    return root


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


def test_corrupt_files_are_skipped_and_counted(dataset_copy):
    victim = list_episode_files(dataset_copy)[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    with pytest.warns(RuntimeWarning, match="Skipped 1 unreadable"):
        cache = build_frame_cache(dataset_copy, cache_dir=dataset_copy.parent / "cache")
    assert cache.skipped == [str(victim.relative_to(dataset_copy))]
    assert len(cache.files) == len(list_episode_files(dataset_copy)) - 1
    assert cache.root.parent == dataset_copy.parent / "cache"


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
