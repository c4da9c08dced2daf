"""Behaviour-cloning warm start: the actor imitates the scripted controller on the real env."""

import math

import pytest
import torch

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.ppo import make_ppo_models, train_ppo
from torchrl_reward.ppo.config import WarmstartConfig
from torchrl_reward.ppo.warmstart import (
    behaviour_clone,
    discounted_returns,
    record_demonstrations,
)


def test_discounted_returns_restart_at_episode_boundaries():
    reward = torch.tensor([1.0, 1.0, 2.0, 0.0, 4.0])
    episode = torch.tensor([1, 1, 1, 2, 2])
    returns = discounted_returns(reward, episode, gamma=0.5)
    torch.testing.assert_close(returns, torch.tensor([2.0, 2.0, 2.0, 2.0, 4.0]))


@pytest.mark.slow
def test_cloned_actor_imitates_the_scripted_controller():
    env = ManiSkillEnv(
        "PickCube-v1", num_envs=1, max_episode_steps=50, control_mode="pd_ee_delta_pos"
    )
    env.set_seed(0)
    try:
        demos, success_rate = record_demonstrations(
            env, num_episodes=6, noise=0.05, max_steps=50, generator=torch.Generator()
        )
    finally:
        env.close()
    assert success_rate > 0.5 and demos.numel() > 50
    torch.manual_seed(0)
    actor, critic = make_ppo_models(42, env.action_spec_unbatched, hidden_sizes=[64, 64])
    mean_net = actor.module[0].module[0]

    def action_error() -> float:
        with torch.no_grad():
            return (torch.tanh(mean_net(demos["observation"])) - demos["action"]).pow(2).mean()

    before = action_error()
    cfg = WarmstartConfig(epochs=60, lr=1e-3, batch_size=64, init_scale=0.3)
    metrics = behaviour_clone(actor, critic, demos, cfg, gamma=0.8)
    after = action_error()
    assert after < 0.1 < before  # the untrained actor's actions are near 0; the script's near ±1
    assert metrics["warmstart/action_mse"] == pytest.approx(after.item(), abs=0.02)
    scale = actor.module[0].module[1].state_independent_scale
    torch.testing.assert_close(scale.exp(), torch.full_like(scale, 0.3))
    assert math.isfinite(metrics["warmstart/value_mse"])


@pytest.mark.slow
def test_trainer_warm_start_logs_and_rejects_joint_control(tmp_path):
    small = [
        "env.num_envs=1",
        "env.max_episode_steps=20",
        "ppo.num_steps=10",
        "ppo.total_frames=10",
        "ppo.num_epochs=1",
        "ppo.num_minibatches=1",
        "ppo.hidden_sizes=[32]",
        "eval.interval=0",
        "runner.progress=false",
        "warmstart.enabled=true",
        "warmstart.episodes=2",
        "warmstart.epochs=1",
    ]
    with pytest.raises(ValueError, match=r"env\.control_mode=pd_ee_delta_pos"):
        train_ppo(load_config("ppo", small), tmp_path / "joint")
    train_ppo(load_config("ppo", [*small, "env.control_mode=pd_ee_delta_pos"]), tmp_path / "ee")
    rows = (tmp_path / "ee/logs/scalars/warmstart/action_mse.csv").read_text().splitlines()
    assert len(rows) == 1
