"""The scripted PickCube controller on the real simulator."""

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.envs.scripted import ScriptedPickPolicy


@pytest.fixture(scope="module")
def env():
    env = ManiSkillEnv("PickCube-v1", control_mode="pd_ee_delta_pos", max_episode_steps=40)
    yield env
    env.close()


@pytest.mark.slow
def test_observation_layout_matches_the_simulator(env):
    env.set_seed(0)
    obs = env.reset()["observation"][0]
    base = env.base_env
    torch.testing.assert_close(obs[19:22], base.agent.tcp.pose.p[0])
    torch.testing.assert_close(obs[26:29], base.goal_site.pose.p[0])
    torch.testing.assert_close(obs[29:32], base.cube.pose.p[0])


@pytest.mark.slow
def test_scripted_policy_succeeds_and_offset_misses(env):
    env.set_seed(1)
    rollout = env.rollout(40, ScriptedPickPolicy(), break_when_any_done=False)
    assert rollout["action"].shape == (1, 40, 4)
    assert rollout["next", "success"].any()
    env.set_seed(1)
    miss = env.rollout(40, ScriptedPickPolicy(goal_offset=(0.08, 0.0, 0.0)))
    assert miss["next", "is_grasped"].any() and not miss["next", "success"].any()


def test_noise_is_seeded_and_bad_input_raises():
    obs = TensorDict({"observation": torch.zeros(3, 42)}, batch_size=[3])
    a = ScriptedPickPolicy(noise=0.1, generator=torch.Generator().manual_seed(0))(obs.clone())
    b = ScriptedPickPolicy(noise=0.1, generator=torch.Generator().manual_seed(0))(obs.clone())
    assert torch.equal(a["action"], b["action"]) and a["action"].abs().max() <= 1
    with pytest.raises(ValueError, match="42 values"):
        ScriptedPickPolicy()(TensorDict({"observation": torch.zeros(2, 8)}, batch_size=[2]))
    with pytest.raises(ValueError, match="goal_offset"):
        ScriptedPickPolicy(goal_offset=(0.1, 0.0))
