"""Env throughput on this machine: steps/s of ManiSkillEnv with and without pixels, and with
pixels only where the arm is still (``render_max_joint_speed``) under the weak policy.

pytest --benchmark-only tests/benchmarks/test_env_benchmark.py
"""

import resource
from functools import partial

import pytest
import torch
from torchrl.envs import ParallelEnv, SerialEnv

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.ppo.checkpoint import actor_from_state

STEPS = 50
WEAK_POLICY = "checkpoints/ppo_pickcube_weak_bc.pt"  # init=weak_bc: where learned-reward PPO starts


def _make(pixels: bool, num_workers: int, parallel: bool = True):
    make = partial(ManiSkillEnv, "PickCube-v1", pixels=pixels, max_episode_steps=STEPS)
    if num_workers == 1:
        return make()
    return (ParallelEnv if parallel else SerialEnv)(num_workers, make)


@pytest.mark.parametrize(
    ("pixels", "num_workers", "parallel"),
    [(False, 1, True), (True, 1, True), (False, 2, True), (False, 2, False), (True, 2, True)],
    ids=["state-1env", "pixels128-1env", "state-parallel2", "state-serial2", "pixels128-parallel2"],
)
def test_env_steps_per_second(benchmark, pixels, num_workers, parallel):
    env = _make(pixels, num_workers, parallel)
    env.set_seed(0)
    env.rollout(5)  # warm up renderer / workers

    def rollout():
        return env.rollout(STEPS, break_when_any_done=False)

    td = benchmark.pedantic(rollout, rounds=3, iterations=1)
    frames = td.numel()
    benchmark.extra_info["frames_per_round"] = frames
    benchmark.extra_info["steps_per_s"] = frames / benchmark.stats.stats.mean
    if pixels:
        assert td["next", "pixels"].dtype == torch.uint8
    env.close()


@pytest.mark.parametrize("max_joint_speed", [None, 0.4], ids=["every-frame", "still-arm-0.4"])
def test_static_gate_steps_per_second(benchmark, max_joint_speed):
    """One 50-step episode of the weak policy's stochastic actions (the learned-reward PPO
    start), every frame rendered against only those of a still arm: the renders a success
    reward needs. Same seeds, so both play the same episodes."""
    state = torch.load(WEAK_POLICY, weights_only=False)
    env = ManiSkillEnv(
        state["env_id"],
        control_mode=state["control_mode"],
        pixels=True,
        render_max_joint_speed=max_joint_speed,
        max_episode_steps=STEPS,
    )
    actor = actor_from_state(state, env.action_spec_unbatched)
    seeds = iter(range(100))

    def rollout():
        seed = next(seeds)
        env.set_seed(seed)
        torch.manual_seed(seed)
        with torch.no_grad():
            return env.rollout(STEPS, actor, break_when_any_done=False)

    rollout()  # warm up the renderer
    td = benchmark.pedantic(rollout, rounds=3, iterations=1)
    rendered = td["next"].get("rendered", torch.ones(td.shape, dtype=torch.bool))
    benchmark.extra_info["rendered_share"] = rendered.float().mean().item()
    benchmark.extra_info["steps_per_s"] = td.numel() / benchmark.stats.stats.mean
    benchmark.extra_info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env.close()
