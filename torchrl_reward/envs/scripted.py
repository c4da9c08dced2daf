"""A scripted PickCube controller for ``pd_ee_delta_pos``: reach, descend, grasp, carry to goal.

ManiSkill's motion-planning solutions need mplib, whose planner crashes with numpy 2 here, so
demonstrations (success episodes) and near misses (hard failures) come from this controller. It
is stateless: each step's phase is read from the observation, so it batches over envs and
survives partial resets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

# PickCube-v1 state observation layout (obs_mode="state", 42 values).
IS_GRASPED = 18
_TCP_POS = slice(19, 22)
GOAL_POS = slice(26, 29)
CUBE_POS = slice(29, 32)
OBS_DIM = 42
PLACED_DISTANCE = 0.025  # metres: PickCube's is_obj_placed
NEAR_MISS_DISTANCE = 0.05  # metres: a cube left closer than this (not placed) is a near miss
CONTROL_MODE = "pd_ee_delta_pos"  # the action space the controller writes
# pd_ee_delta_pos maps an action of 1.0 to a 0.1 m end-effector translation.
_METRES_PER_ACTION = 0.1


def cube_goal_distance(obs: torch.Tensor) -> torch.Tensor:
    """Cube-to-goal distance (metres) of PickCube-v1 state observations ``[*B, 42]`` -> ``[*B]``."""
    return (obs[..., CUBE_POS] - obs[..., GOAL_POS]).norm(dim=-1)


class ScriptedPickPolicy(TensorDictModuleBase):
    """Reads ``"observation"`` (PickCube-v1 state ``[*B, 42]``), writes ``"action"`` ``[*B, 4]``.

    Phases, decided per step from the state: move above the cube with the gripper open; descend
    to it; close the gripper; once grasped, carry the cube to the goal (plus ``goal_offset``).

    Args:
        noise (float, optional): std of Gaussian noise added to the (normalised) action, for
            varied trajectories. Defaults to ``0.0``.
        goal_offset (sequence of 3 floats, optional): metres added to the goal; a non-zero
            offset gives near-miss failures (cube carried, but not to the goal). Defaults to
            no offset.
        gain (float, optional): proportional gain from position error to action.
            Defaults to ``1.0``.
        generator (torch.Generator, optional): RNG of the noise. Defaults to torch's global one.

    Examples:
        >>> env = ManiSkillEnv("PickCube-v1", control_mode="pd_ee_delta_pos")  # doctest: +SKIP
        >>> rollout = env.rollout(50, ScriptedPickPolicy())  # doctest: +SKIP
        >>> rollout["next", "success"].any()  # doctest: +SKIP
        tensor(True)
    """

    def __init__(
        self,
        noise: float = 0.0,
        goal_offset: Sequence[float] | None = None,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if noise < 0 or gain <= 0:
            raise ValueError(f"noise must be >= 0 and gain > 0, got noise={noise}, gain={gain}.")
        offset = (0.0, 0.0, 0.0) if goal_offset is None else tuple(goal_offset)
        if len(offset) != 3:
            raise ValueError(f"goal_offset needs 3 values (metres), got {goal_offset!r}.")
        self.in_keys = ["observation"]
        self.out_keys = ["action"]
        self.noise = noise
        self.gain = gain
        self.goal_offset = offset
        self.generator = generator

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get("observation")
        if obs.shape[-1] != OBS_DIM:
            raise ValueError(
                f"ScriptedPickPolicy reads PickCube-v1 state observations ({OBS_DIM} values), got "
                f"shape {tuple(obs.shape)}; build the env with obs_mode='state'."
            )
        tcp, cube = obs[..., _TCP_POS], obs[..., CUBE_POS]
        goal = obs[..., GOAL_POS] + obs.new_tensor(self.goal_offset)
        grasped = obs[..., IS_GRASPED : IS_GRASPED + 1] > 0.5

        to_cube = cube - tcp
        aligned = to_cube[..., :2].norm(dim=-1, keepdim=True) < 0.01
        at_cube = aligned & (to_cube[..., 2:].abs() < 0.01)
        above = cube + obs.new_tensor([0.0, 0.0, 0.05])
        # Not grasped: go above the cube until aligned, then down to it, then close there.
        target = torch.where(grasped, goal, torch.where(aligned, cube, above))
        close = grasped | at_cube
        move = ((target - tcp) * (self.gain / _METRES_PER_ACTION)).clamp(-1, 1)
        gripper = torch.where(
            close, -torch.ones_like(move[..., :1]), torch.ones_like(move[..., :1])
        )
        action = torch.cat([move, gripper], dim=-1)
        if self.noise:
            action = action + self.noise * torch.randn(
                action.shape, generator=self.generator, device=action.device
            )
        tensordict.set("action", action.clamp(-1, 1))
        return tensordict
