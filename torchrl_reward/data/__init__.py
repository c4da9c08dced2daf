"""Episode data: the recorder transform and the episode file writer/reader (RLinf layout)."""

from torchrl_reward.data.episode_io import (
    list_episode_files,
    load_episode,
    load_episodes,
    write_episode,
)
from torchrl_reward.data.recorder import EpisodeRecorder, make_recorder, record_until_done

__all__ = [
    "EpisodeRecorder",
    "list_episode_files",
    "load_episode",
    "load_episodes",
    "make_recorder",
    "record_until_done",
    "write_episode",
]
