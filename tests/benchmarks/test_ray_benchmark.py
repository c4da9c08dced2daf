"""Env frames/s of the Ray runner: 1 vs 2 remote collectors (1 env each), in one run.

pytest --benchmark-only tests/benchmarks/test_ray_benchmark.py
"""

import pytest
import torch

from torchrl_reward.distributed import ray_session
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.ray_runner import RayRollouts

pytestmark = [pytest.mark.slow, pytest.mark.ray]

STEPS = 50  # per env and batch


def _batches(cfg, num_collectors: int):
    """A RayRollouts of ``num_collectors`` collectors and its batch iterator."""
    cfg.runner.num_collectors = num_collectors
    rollouts = RayRollouts(cfg, pixels=False)
    spec = rollouts.env
    actor, _ = make_ppo_models(
        spec.observation_spec["observation"].shape[-1],
        spec.action_spec_unbatched,
        hidden_sizes=[64, 64],
        device=torch.device("cpu"),
    )
    rollouts.make_collector(actor, num_collectors * STEPS, torch.device("cpu"))
    return rollouts, rollouts.batches()


def test_ray_collector_frames_per_second(benchmark, best_seconds):
    cfg = load_config(
        "ppo", ["runner=ray", "runner.num_cpus=3", "runner.object_store_mb=200", "env.num_envs=1"]
    )
    with ray_session(cfg.runner):
        one, batches = _batches(cfg, 1)
        try:
            one_s = best_seconds(lambda: next(batches))
        finally:
            one.close()
        two, batches = _batches(cfg, 2)
        try:
            benchmark.pedantic(lambda: next(batches), rounds=3, iterations=1, warmup_rounds=1)
        finally:
            two.close()
    two_fps = 2 * STEPS / benchmark.stats.stats.min
    benchmark.extra_info["frames_per_s_1_collector"] = STEPS / one_s
    benchmark.extra_info["frames_per_s_2_collectors"] = two_fps
    benchmark.extra_info["speedup_2_vs_1"] = two_fps / (STEPS / one_s)
