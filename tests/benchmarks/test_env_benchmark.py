"""Env throughput on this machine: steps/s of ManiSkillEnv with and without pixels.

pytest --benchmark-only tests/benchmarks/test_env_benchmark.py
"""

from functools import partial

import pytest
import torch
from torchrl.envs import ParallelEnv, SerialEnv

from torchrl_reward.envs import ManiSkillEnv

STEPS = 50


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
