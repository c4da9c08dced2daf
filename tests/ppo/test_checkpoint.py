"""PPO checkpoints: a policy rebuilt from a run folder acts as the one saved, and a checkpoint
that does not fit says why."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs import ExplorationType, set_exploration_type

from torchrl_reward.ppo.checkpoint import checkpoint_path, load_actor, save_checkpoint
from torchrl_reward.ppo.models import make_ppo_models

OBS_DIM, HIDDEN = 8, [16, 16]
SPEC = Bounded(-torch.ones(4), torch.ones(4), shape=(4,))


def _deterministic_actions(actor, observations: torch.Tensor) -> torch.Tensor:
    td = TensorDict({"observation": observations}, batch_size=[len(observations)])
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        return actor(td)["action"]


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    actor, _ = make_ppo_models(OBS_DIM, SPEC, HIDDEN)
    state = {"actor": actor.state_dict(), "obs_dim": OBS_DIM, "hidden_sizes": HIDDEN}
    save_checkpoint(checkpoint_path(tmp_path), state)
    return tmp_path, actor


def test_load_actor_from_a_run_folder_acts_as_the_saved_policy(run_dir):
    folder, saved = run_dir
    loaded = load_actor(folder, SPEC)
    observations = torch.randn(32, OBS_DIM)
    torch.testing.assert_close(
        _deterministic_actions(loaded, observations), _deterministic_actions(saved, observations)
    )


def test_load_actor_names_the_mismatch(run_dir):
    folder, _ = run_dir
    with pytest.raises(ValueError, match="obs_dim=8 but this run has obs_dim=9"):
        load_actor(folder, SPEC, expect={"obs_dim": 9})


def test_load_actor_rejects_a_file_that_is_not_a_ppo_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="not a PPO checkpoint"):
        load_actor(path, SPEC)
