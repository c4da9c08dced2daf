"""Stage 1 with the scripted controller: success episodes and near misses, until the targets.

With action noise the scripted ``pd_ee_delta_pos`` controller mostly succeeds; aimed a few
centimetres off the goal it carries the cube to the wrong place (the hardest negatives for the
classifier). The tiny preset (tests) records it because it needs no policy; the CPU and GPU
presets record PPO's own episodes, as the seed does (``collect.policy=ppo``).
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torchrl.envs import TransformedEnv

from torchrl_reward.data import EpisodeRecorder, record_until_done
from torchrl_reward.envs.scripted import ScriptedPickPolicy
from torchrl_reward.ppo.config import EnvConfig
from torchrl_reward.ppo.envs import make_env


def _near_miss_offset(distance: float, generator: torch.Generator) -> tuple[float, float, float]:
    """A random direction in the horizontal plane, ``distance`` metres long."""
    angle = torch.rand((), generator=generator).item() * 2 * math.pi
    return (distance * math.cos(angle), distance * math.sin(angle), 0.0)


def collect_scripted(cfg: DictConfig, env_cfg: EnvConfig, save_dir: str, seed: int) -> dict:
    """Record scripted episodes into ``save_dir`` until both targets are met; return counts.

    Each round plays one episode per env with the behaviour the emptier class needs: a noisy
    pick-and-place for successes, a near miss for failures.
    """
    recorder = EpisodeRecorder(
        save_dir,
        target_success=cfg.target_success,
        target_failure=cfg.target_failure,
        frames_after_success=cfg.frames_after_success,
        seed=seed,
    )
    env = TransformedEnv(make_env(env_cfg, pixels=True, num_envs=cfg.num_envs), recorder)
    env.set_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    def next_policy() -> ScriptedPickPolicy:
        counts = recorder.counts
        missing_success = cfg.target_success - counts["success"]
        missing_failure = cfg.target_failure - counts["failure"]
        offset = None
        if missing_failure > missing_success:
            offset = _near_miss_offset(cfg.near_miss_offset, generator)
        return ScriptedPickPolicy(noise=cfg.noise, goal_offset=offset, generator=generator)

    try:
        record_until_done(env, recorder, next_policy, env_cfg.max_episode_steps)
    finally:
        recorder.close()
        env.close()
    return recorder.counts
