"""A small real dataset recorded from ManiSkill PickCube-v1 at 64 px, shared by the tests.

Successes come from the scripted end-effector controller, failures from near misses (the cube
carried beside the goal) and random actions: 6 episodes of 30 steps, 180 frames.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_reward.data import write_episode

IMAGE_SIZE = 64
STEPS = 30
# (policy, noise, goal offset in metres) per episode.
EPISODES = (
    ("scripted", 0.0, None),
    ("scripted", 0.05, None),
    ("scripted", 0.0, None),
    ("scripted", 0.0, (0.08, 0.0, 0.0)),
    ("scripted", 0.0, (0.0, -0.08, 0.0)),
    ("random", 0.0, None),
)


def _write(rollout: TensorDictBase, root: Path, index: int, seed: int) -> None:
    """One episode file in the recorder's layout: each frame is the state after its action."""
    nxt = rollout["next"]
    episode = TensorDict(
        {
            "pixels": nxt["pixels"],
            "observation": nxt["observation"],
            "action": rollout["action"],
            "step": torch.arange(rollout.shape[0]),
            "qpos": nxt["qpos"],
            "qvel": nxt["qvel"],
            **{
                key: nxt[key].squeeze(-1)
                for key in (
                    "reward",
                    "done",
                    "success",
                    "is_grasped",
                    "is_obj_placed",
                    "is_robot_static",
                    "terminated",
                    "truncated",
                )
            },
        },
        batch_size=rollout.shape,
    )
    folder = "success" if bool(episode["success"].any()) else "failure"
    path = root / folder / f"episode_{index:06d}.pkl"
    write_episode(path, episode, episode_id=f"{folder}_{index:06d}", seed=seed)


@pytest.fixture(scope="session")
def reward_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the recorded dataset (``success/`` and ``failure/`` episode pickles)."""
    from torchrl_reward.envs import ManiSkillEnv
    from torchrl_reward.envs.scripted import ScriptedPickPolicy

    root = tmp_path_factory.mktemp("reward_dataset")
    env = ManiSkillEnv(
        "PickCube-v1",
        pixels=True,
        image_size=IMAGE_SIZE,
        max_episode_steps=STEPS,
        control_mode="pd_ee_delta_pos",
        ignore_terminations=True,
    )
    try:
        for index, (kind, noise, offset) in enumerate(EPISODES):
            env.set_seed(index)
            generator = torch.Generator().manual_seed(index)
            if kind == "scripted":
                policy = ScriptedPickPolicy(noise=noise, goal_offset=offset, generator=generator)
                rollout = env.rollout(STEPS, policy)
            else:
                torch.manual_seed(index)
                rollout = env.rollout(STEPS)  # random actions from the action spec
            _write(rollout[0], root, index, seed=index)
    finally:
        env.close()
    n_success = len(list((root / "success").glob("*.pkl")))
    assert n_success >= 2, f"the scripted policy succeeded in only {n_success} episodes"
    return root
