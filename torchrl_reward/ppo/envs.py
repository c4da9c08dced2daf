"""Training and evaluation envs for PPO, from the ``env`` config (:class:`EnvConfig`)."""

from __future__ import annotations

from functools import partial
from typing import Any

from torchrl.envs import EnvBase, EnvCreator, ParallelEnv

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.ppo.config import EnvConfig


def env_kwargs(
    env_cfg: EnvConfig,
    *,
    pixels: bool,
    render_frames: str = "all",
    render_window: int = 1,
    render_max_joint_speed: float | None = None,
) -> dict[str, Any]:
    """ManiSkillEnv keyword arguments from the ``env`` config."""
    return dict(
        env_id=env_cfg.env_id,
        pixels=pixels,
        render_frames=render_frames,
        render_window=render_window,
        render_max_joint_speed=render_max_joint_speed,
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
    render_frames: str = "all",
    render_window: int = 1,
    render_max_joint_speed: float | None = None,
    num_envs: int | None = None,
) -> EnvBase:
    """Build ``num_envs`` envs (default ``env_cfg.num_envs``).

    ``render_frames="done"`` renders only the frames that end an episode, or fall within
    ``render_window`` steps of the time limit; ``render_max_joint_speed`` only those where the
    robot is static within that joint speed (see :class:`~torchrl_reward.envs.ManiSkillEnv`).

    GPU physx holds them all in one simulation (batch ``[num_envs]``); the CPU simulator runs
    one env per process in a torchrl :class:`~torchrl.envs.ParallelEnv` (batch
    ``[num_envs, 1]``).
    """
    num_envs = env_cfg.num_envs if num_envs is None else num_envs
    kwargs = env_kwargs(
        env_cfg,
        pixels=pixels,
        render_frames=render_frames,
        render_window=render_window,
        render_max_joint_speed=render_max_joint_speed,
    )
    if env_cfg.sim_backend == "gpu":
        return ManiSkillEnv(num_envs=num_envs, **kwargs)
    if num_envs == 1:
        return ManiSkillEnv(num_envs=1, **kwargs)
    return ParallelEnv(num_envs, EnvCreator(partial(ManiSkillEnv, num_envs=1, **kwargs)))
