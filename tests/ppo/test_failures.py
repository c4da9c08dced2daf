"""Failure modes: episode ends sorted by where they leave the cube; a real policy, real env."""

import pytest

from torchrl_reward.hydra_configs import REPO_ROOT
from torchrl_reward.ppo.failures import (
    EpisodeEnd,
    FailureModes,
    checkpoint_failure_modes,
    markdown_table,
)


def test_failures_are_sorted_by_where_they_end():
    ends = [
        EpisodeEnd(success=True, distance=0.01, grasped=True),
        EpisodeEnd(success=True, distance=0.04, grasped=False),  # succeeded earlier
        EpisodeEnd(success=False, distance=0.0249, grasped=True),
        EpisodeEnd(success=False, distance=0.025, grasped=True),
        EpisodeEnd(success=False, distance=0.045, grasped=True),
        EpisodeEnd(success=False, distance=0.05, grasped=True),
        EpisodeEnd(success=False, distance=0.20, grasped=False),
    ]
    m = FailureModes.of(ends)
    assert (m.episodes, m.success, m.placed, m.near_miss) == (7, 2, 1, 2)
    assert (m.far_grasped, m.far_not_grasped) == (1, 1)
    assert m.near_miss_median_cm == pytest.approx(3.5)
    row = markdown_table({"p": m}).splitlines()[-1]
    assert row == "| p | 0.286 | 5 | 1 | 2 (3.5 cm) | 1 | 1 |"


def test_no_near_miss_has_no_median():
    m = FailureModes.of([EpisodeEnd(success=False, distance=0.3, grasped=False)])
    assert m.near_miss_median_cm is None
    assert "| 0 | 0 | 1 |" in markdown_table({"p": m})


@pytest.mark.slow
def test_a_kept_policy_replays_the_same_episodes():
    weak = REPO_ROOT / "checkpoints" / "ppo_pickcube_weak_bc.pt"
    first = checkpoint_failure_modes(weak, num_episodes=3, seed=5, max_episode_steps=20)
    assert first.episodes == 3
    failed = first.placed + first.near_miss + first.far_grasped + first.far_not_grasped
    assert first.success + failed == 3
    assert checkpoint_failure_modes(weak, num_episodes=3, seed=5, max_episode_steps=20) == first


def test_a_checkpoint_that_is_not_ppos_says_so(tmp_path):
    bad = tmp_path / "ppo_last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        checkpoint_failure_modes(bad, num_episodes=1, seed=0)
