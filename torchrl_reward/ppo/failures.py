"""Where a PickCube policy's failed episodes end, on one seeded set of deterministic episodes.

A success rate says how often a policy fails, not how. A learned reward that cannot resolve the
last centimetres leaves policies that carry the cube and park it next to the goal; a policy that
never learned to grasp fails elsewhere. Each failed episode (no success in its time limit) is
read at its last step from the state observation: the cube-goal distance and the grasp flag.
The simulator's state is read only to measure.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchrl.envs import EnvBase

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.envs.scripted import (
    IS_GRASPED,
    NEAR_MISS_DISTANCE,
    OBS_DIM,
    PLACED_DISTANCE,
    cube_goal_distance,
)
from torchrl_reward.ppo.checkpoint import actor_from_state, load_checkpoint
from torchrl_reward.ppo.trainer import deterministic_episodes


@dataclass(frozen=True)
class EpisodeEnd:
    """One deterministic episode: did it succeed, and where it left the cube (metres)."""

    success: bool
    distance: float
    grasped: bool


def episode_ends(
    actor: torch.nn.Module, env: EnvBase, num_episodes: int, seed: int
) -> list[EpisodeEnd]:
    """``num_episodes`` seeded deterministic PickCube episodes, each read at its last step."""
    ends = []
    for rollout in deterministic_episodes(actor, env, num_episodes, seed):
        obs = rollout["next", "observation"].reshape(-1, rollout["next", "observation"].shape[-1])
        if obs.shape[-1] != OBS_DIM:
            raise ValueError(
                f"Failure modes read PickCube-v1 state observations ({OBS_DIM} values), got "
                f"{obs.shape[-1]}."
            )
        last = obs[-1]
        ends.append(
            EpisodeEnd(
                success=bool(rollout["next", "success"].any()),
                distance=float(cube_goal_distance(last)),
                grasped=bool(last[IS_GRASPED] > 0.5),
            )
        )
    return ends


@dataclass(frozen=True)
class FailureModes:
    """Success and failures by where they end: placed (the arm never still), near miss
    (``PLACED_DISTANCE``-``NEAR_MISS_DISTANCE`` off), farther with the cube grasped or not."""

    episodes: int
    success: int
    placed: int
    near_miss: int
    far_grasped: int
    far_not_grasped: int
    near_miss_median_cm: float | None

    @classmethod
    def of(cls, ends: Sequence[EpisodeEnd]) -> FailureModes:
        failed = [e for e in ends if not e.success]
        near = [e.distance for e in failed if PLACED_DISTANCE <= e.distance < NEAR_MISS_DISTANCE]
        far = [e for e in failed if e.distance >= NEAR_MISS_DISTANCE]
        return cls(
            episodes=len(ends),
            success=len(ends) - len(failed),
            placed=sum(e.distance < PLACED_DISTANCE for e in failed),
            near_miss=len(near),
            far_grasped=sum(e.grasped for e in far),
            far_not_grasped=sum(not e.grasped for e in far),
            near_miss_median_cm=100 * statistics.median(near) if near else None,
        )


def checkpoint_failure_modes(
    path: str | Path, num_episodes: int, seed: int, max_episode_steps: int = 50
) -> FailureModes:
    """A ``scripts/ppo.py`` checkpoint (or run folder) on the env it was trained on."""
    state = load_checkpoint(path, expect={})
    if state["env_id"] != "PickCube-v1":
        raise ValueError(
            f"Failure modes are PickCube-v1's; {path} was trained on {state['env_id']}."
        )
    env = ManiSkillEnv(
        state["env_id"], control_mode=state["control_mode"], max_episode_steps=max_episode_steps
    )
    try:
        actor = actor_from_state(state, env.action_spec_unbatched)
        return FailureModes.of(episode_ends(actor, env, num_episodes, seed))
    finally:
        env.close()


def markdown_table(rows: Mapping[str, FailureModes]) -> str:
    """One row per policy: success rate and its failures by where they end."""
    lines = [
        "| policy | success | failures | placed, arm not still | near miss, 2.5-5 cm "
        "(median) | >= 5 cm, grasped | >= 5 cm, not grasped |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        median = f" ({m.near_miss_median_cm:.1f} cm)" if m.near_miss_median_cm is not None else ""
        lines.append(
            f"| {name} | {m.success / m.episodes:.3f} | {m.episodes - m.success} | {m.placed} | "
            f"{m.near_miss}{median} | {m.far_grasped} | {m.far_not_grasped} |"
        )
    return "\n".join(lines)
