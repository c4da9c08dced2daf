"""The PPO actor: its log-probabilities survive a saturated mean (the clone's gripper)."""

import math

import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs import ExplorationType, set_exploration_type

from torchrl_reward.ppo.models import LOC_BOUND, bounded_mean, make_ppo_models


def _log_prob_error(bounded: bool) -> float:
    """Largest |stored - recomputed| log-prob of a clone-like actor's own sampled actions."""
    torch.manual_seed(0)
    spec = Bounded(-torch.ones(4), torch.ones(4), shape=(4,))
    actor, _ = make_ppo_models(8, spec, hidden_sizes=[16])
    actor.module[-1].distribution_kwargs["tanh_loc"] = bounded
    policy_net = actor.module[0].module
    with torch.no_grad():
        policy_net[0][-1].bias[3] = 8.0  # where cloning drove the gripper's mean (7-8)
        policy_net[1].state_independent_scale.fill_(math.log(0.2))  # the clone's exploration
    td = TensorDict({"observation": torch.randn(512, 8)}, batch_size=[512])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        actor(td)
        recomputed = actor.get_dist(td.clone()).log_prob(td["action"])
    return (recomputed - td["action_log_prob"]).abs().max().item()


def test_log_prob_of_its_own_actions_survives_a_saturated_mean():
    # Unbounded, float32 tanh loses the sample: PPO's first ratio is off by whole nats.
    assert _log_prob_error(bounded=False) > 0.5
    assert _log_prob_error(bounded=True) < 1e-2


def test_bounded_mean_is_the_deterministic_action():
    torch.manual_seed(0)
    spec = Bounded(-torch.ones(4), torch.ones(4), shape=(4,))
    actor, _ = make_ppo_models(8, spec, hidden_sizes=[16])
    td = TensorDict({"observation": torch.randn(32, 8)}, batch_size=[32])
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        actor(td)
    torch.testing.assert_close(td["action"], bounded_mean(td["loc"]))
    assert bounded_mean(torch.tensor([100.0])) <= torch.tanh(torch.tensor(LOC_BOUND))
