"""Training and evaluation envs for PPO, from the ``env`` config (:class:`EnvConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torchrl.envs import EnvBase, EnvCreator, ParallelEnv

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.ppo.config import EnvConfig


@dataclass(frozen=True)
class RenderOptions:
    """Which step frames a pixel env renders, the others left black: ManiSkillEnv's
    ``render_frames``, ``render_window`` and ``render_max_joint_speed``, carried as one from
    the reward config to the local and Ray runners' envs."""

    frames: str = "all"
    window: int = 1
    max_joint_speed: float | None = None


ALL_FRAMES = RenderOptions()


def env_kwargs(
    env_cfg: EnvConfig, *, pixels: bool, render: RenderOptions = ALL_FRAMES
) -> dict[str, Any]:
    """ManiSkillEnv keyword arguments from the ``env`` config."""
    return dict(
        env_id=env_cfg.env_id,
        pixels=pixels,
        render_frames=render.frames,
        render_window=render.window,
        render_max_joint_speed=render.max_joint_speed,
        max_episode_steps=env_cfg.max_episode_steps,
        image_size=env_cfg.image_size,
        views=list(env_cfg.views),
        control_mode=env_cfg.control_mode,
        reward_mode=env_cfg.reward_mode,
        sim_backend=env_cfg.sim_backend,
        render_backend=env_cfg.render_backend,
        ignore_terminations=env_cfg.ignore_terminations,
        reward_window=env_cfg.reward_window,
    )


def make_env(
    env_cfg: EnvConfig,
    *,
    pixels: bool = False,
    render: RenderOptions = ALL_FRAMES,
    num_envs: int | None = None,
) -> EnvBase:
    """Build ``num_envs`` envs (default ``env_cfg.num_envs``).

    ``render`` picks the frames rendered: ``frames="done"`` only those that end an episode, or
    fall within ``window`` steps of the time limit; ``max_joint_speed`` only those where the
    robot is static within that joint speed (see :class:`~torchrl_reward.envs.ManiSkillEnv`).

    GPU physx holds them all in one simulation (batch ``[num_envs]``); the CPU simulator runs
    one env per process in a torchrl :class:`~torchrl.envs.ParallelEnv` (batch
    ``[num_envs, 1]``).
    """
    num_envs = env_cfg.num_envs if num_envs is None else num_envs
    kwargs = env_kwargs(env_cfg, pixels=pixels, render=render)
    if env_cfg.sim_backend == "gpu":
        return ManiSkillEnv(num_envs=num_envs, **kwargs)
    if num_envs == 1:
        return ManiSkillEnv(num_envs=1, **kwargs)
    return ParallelEnv(num_envs, EnvCreator(partial(ManiSkillEnv, num_envs=1, **kwargs)))
