"""ManiSkill tasks as batched TorchRL environments.

TorchRL's ``GymEnv`` misreads ManiSkill's batched ``num_envs`` (every ManiSkill env is already a
batch), so this wrapper maps it directly: batch size ``[num_envs]``, partial resets from TorchRL's
``"_reset"`` mask, and RGB frames from one or more reward views, cameras framed on the workspace
that show the goal marker (ManiSkill hides ``goal_site`` from sensor cameras; its human render
cameras see it), tiled side by side into one frame.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from torchrl_reward.envs._vulkan import select_vulkan_driver

MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class CameraView:
    """A reward camera: ``look_at`` eye and target in metres, vertical field of view in rad."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fov: float


# Named views of PickCube's workspace. "goal": from the side (+y); cube and goal span ~6-10 px
# at 128 px and the arm, which comes from -x, rarely hides the goal. "front": from +x, a line of
# sight orthogonal to "goal"'s, which resolves the offsets "goal" sees along its own axis.
VIEWS = {
    "goal": CameraView(eye=(0.15, 0.55, 0.38), target=(-0.02, 0.0, 0.12), fov=1.0),
    "front": CameraView(eye=(0.55, -0.05, 0.38), target=(-0.02, 0.0, 0.12), fov=1.0),
}
DEFAULT_VIEWS = ("goal",)
RENDER_FRAMES = ("all", "done")

# Per-step flags from ManiSkill's ``evaluate()`` (False where a task has no such flag), and the
# robot's proprioception (joint positions and velocities), available on a real robot too.
_INFO_KEYS = ("success", "is_grasped", "is_obj_placed", "is_robot_static")
PROPRIO_KEYS = ("qpos", "qvel")


def resolve_views(views: Sequence[str | Mapping[str, Any] | CameraView] | None) -> list[CameraView]:
    """Views from names of :data:`VIEWS`, ``{eye, target, fov}`` mappings or :class:`CameraView`."""
    views = DEFAULT_VIEWS if views is None else views
    if isinstance(views, (str, Mapping, CameraView)) or not len(views):
        raise ValueError(f"views must be a non-empty list of views, got {views!r}.")
    resolved = []
    for view in views:
        if isinstance(view, str):
            if view not in VIEWS:
                raise ValueError(f"Unknown view {view!r}; named views: {sorted(VIEWS)}.")
            view = VIEWS[view]
        elif isinstance(view, Mapping):
            try:
                view = CameraView(tuple(view["eye"]), tuple(view["target"]), float(view["fov"]))
            except KeyError as err:
                raise ValueError(
                    f"A view mapping needs eye, target and fov; {view!r} lacks {err}."
                ) from None
        if len(view.eye) != 3 or len(view.target) != 3 or not 0 < view.fov < math.pi:
            raise ValueError(f"A view needs 3-d eye and target and 0 < fov < pi, got {view}.")
        resolved.append(view)
    return resolved


def _register_view_env(env_id: str, views: list[CameraView], image_size: int) -> str:
    """Register (once per process) ``env_id`` with one human render camera per view.

    ManiSkill renders and tiles every human render camera side by side (goal marker shown), but
    its kwargs can only restyle the task's own camera, so the views come from a subclass whose
    default render cameras are the views. Returns the registered id.
    """
    from mani_skill.sensors.camera import CameraConfig
    from mani_skill.utils import sapien_utils
    from mani_skill.utils.registration import REGISTERED_ENVS, register_env

    key = json.dumps([env_id, image_size, [asdict(v) for v in views]])
    uid = f"{env_id}-views-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if uid in REGISTERED_ENVS:
        return uid
    base = REGISTERED_ENVS[env_id]

    def cameras(self: Any) -> list:
        return [
            CameraConfig(
                f"reward_view_{i}",
                sapien_utils.look_at(eye=list(v.eye), target=list(v.target)),
                image_size,
                image_size,
                v.fov,
                0.01,
                100,
            )
            for i, v in enumerate(views)
        ]

    cls = type(
        f"{base.cls.__name__}RewardViews",
        (base.cls,),
        {"_default_human_render_camera_configs": property(cameras)},
    )
    register_env(uid, max_episode_steps=base.max_episode_steps, **base.default_kwargs)(cls)
    return uid


def _resolve_backends(sim_backend: str, render_backend: str, num_envs: int) -> tuple[str, str]:
    """ManiSkill's own defaults: GPU physx for batched envs when CUDA is there, CPU physx for one
    env; rendering on the GPU whenever CUDA is there (lavapipe on the CPU otherwise)."""
    has_cuda = torch.cuda.is_available()
    if sim_backend == "auto":
        sim_backend = "gpu" if has_cuda and num_envs > 1 else "cpu"
    if sim_backend not in ("cpu", "gpu"):
        raise ValueError(f"sim_backend must be 'auto', 'cpu' or 'gpu', got {sim_backend!r}.")
    if sim_backend == "gpu" and not has_cuda:
        raise RuntimeError(
            "sim_backend='gpu' needs a CUDA device and none is visible; use sim_backend='cpu' "
            "(one env per process, parallelised with torchrl's ParallelEnv)."
        )
    if sim_backend == "cpu" and num_envs != 1:
        raise ValueError(
            f"The CPU simulator runs one env per process, got num_envs={num_envs}; use "
            "torchrl.envs.ParallelEnv(n, lambda: ManiSkillEnv(..., num_envs=1)) for more."
        )
    if render_backend == "auto":
        render_backend = "gpu" if has_cuda else "cpu"
    if render_backend not in ("cpu", "gpu"):
        raise ValueError(f"render_backend must be 'auto', 'cpu' or 'gpu', got {render_backend!r}.")
    return sim_backend, render_backend


def _time_limit(env: Any) -> int | None:
    """Episode length set by ManiSkill's ``TimeLimitWrapper`` (or gymnasium's spec), if any."""
    limit = getattr(env, "_max_episode_steps", None)
    if limit is None and env.spec is not None:
        limit = env.spec.max_episode_steps
    return limit


class ManiSkillWrapper(EnvBase):
    """Wraps a built ManiSkill gym env (batched) as a TorchRL env.

    Args:
        env: the env returned by ``gymnasium.make`` for a ManiSkill task, with
            ``obs_mode="state"``; ``render_mode="rgb_array"`` when ``pixels=True``.
        pixels (bool, optional): write the human render camera's RGB frame under ``"pixels"``
            (uint8 ``[num_envs, H, W, 3]``), rendered after each step and reset.
            Defaults to ``False``.
        render_frames (str, optional): ``"all"`` renders every frame; ``"done"`` renders only
            the frames that end an episode and leaves the others black, for a reward that
            scores only final frames (``RewardTransform(terminal_only=True)``): rendering costs
            ~36 ms a frame on a CPU, ~20x a physics step. Defaults to ``"all"``.
        render_window (int, optional): with ``render_frames="done"``, also render the frames of
            the last ``render_window`` steps before the time limit (``1``: only the frames that
            end an episode), for a reward that scores an episode's final steps. The bool key
            ``"rendered"`` then marks the real frames. Defaults to ``1``.
        render_max_joint_speed (float, optional): render only the step frames where the robot
            is static within this joint speed (rad/s, ManiSkill's ``agent.is_static``; reset
            frames are not rendered), leave the others black and mark the real ones under
            ``"rendered"``: a success reward pays nothing where the arm moves (PickCube's
            success needs every arm joint under 0.2 rad/s), and most of a moving policy's
            frames move. With ``render_frames="done"`` both must hold. Defaults to ``None``.
        reward_window (int, optional): pay the env's reward only at the steps that end an
            episode or lie within ``reward_window`` steps of the time limit (0 elsewhere): the
            simulator's own signal at exactly the steps a final-steps learned reward scores
            (``render_window`` with ``RewardTransform(score_key="rendered")``), the control arm
            that tells the classifier's errors from the cost of paying only final steps.
            Defaults to ``None`` (every step).
        ignore_terminations (bool, optional): report ``terminated=False`` so episodes run on
            past success until truncation (more positive frames per success episode).
            Defaults to ``False``.
        device (torch.device, optional): where the tensordicts live. Defaults to the
            simulator's device.

    Keys: ``observation`` (state vector), ``qpos`` and ``qvel`` (the robot's joint positions
    and velocities), ``reward``, ``done``, ``terminated``, ``truncated``, the task's flags
    ``success``, ``is_grasped``, ``is_obj_placed``, ``is_robot_static`` (``[num_envs, 1]``) and
    ``pixels`` (every render camera, tiled side by side).
    """

    def __init__(
        self,
        env: Any,
        *,
        pixels: bool = False,
        render_frames: str = "all",
        render_window: int = 1,
        render_max_joint_speed: float | None = None,
        reward_window: int | None = None,
        ignore_terminations: bool = False,
        device: Any = None,
    ) -> None:
        if render_frames not in RENDER_FRAMES:
            raise ValueError(
                f"render_frames must be one of {RENDER_FRAMES}, got {render_frames!r}."
            )
        for name, window in (("render_window", render_window), ("reward_window", reward_window)):
            if window is not None and window < 1:
                raise ValueError(f"{name} must be >= 1 steps, got {window}.")
        if render_max_joint_speed is not None and not render_max_joint_speed > 0:
            raise ValueError(
                f"render_max_joint_speed must be > 0 rad/s, got {render_max_joint_speed}."
            )
        base = env.unwrapped
        sim_device = torch.device(str(base.device))
        super().__init__(
            device=sim_device if device is None else device,
            batch_size=torch.Size([base.num_envs]),
        )
        self._env = env
        self.pixels = pixels
        self.render_frames = render_frames
        self.render_window = render_window
        self.render_max_joint_speed = render_max_joint_speed
        self.reward_window = reward_window
        self._time_limit = _time_limit(env)
        if max(render_window, reward_window or 1) > 1 and self._time_limit is None:
            raise ValueError(
                "render_window or reward_window > 1 needs the env's time limit (make it with "
                "max_episode_steps)."
            )
        self.ignore_terminations = ignore_terminations
        if pixels and env.render_mode != "rgb_array":
            raise ValueError(
                "pixels=True needs the ManiSkill env made with render_mode='rgb_array'."
            )
        self._seed: int | None = None
        self._make_specs()

    @property
    def base_env(self) -> Any:
        """ManiSkill's own env (``env.unwrapped``): scene, agent, cube, goal."""
        return self._env.unwrapped

    def _make_specs(self) -> None:
        n = self.batch_size
        obs_dim = self._env.unwrapped.single_observation_space.shape
        act_space = self._env.unwrapped.single_action_space
        dof = self.base_env.agent.robot.get_qpos().shape[-1]
        observation = {
            "observation": Unbounded(shape=(*n, *obs_dim), dtype=torch.float32),
            **{k: Unbounded(shape=(*n, dof), dtype=torch.float32) for k in PROPRIO_KEYS},
            **{k: Categorical(2, shape=(*n, 1), dtype=torch.bool) for k in _INFO_KEYS},
        }
        if self.pixels:
            cameras = [c.camera for c in self.base_env.scene.human_render_cameras.values()]
            height, width = cameras[0].height, sum(c.width for c in cameras)
            observation["pixels"] = Bounded(0, 255, shape=(*n, height, width, 3), dtype=torch.uint8)
            if self._selects_frames:
                observation["rendered"] = Categorical(2, shape=(*n, 1), dtype=torch.bool)
        self.observation_spec = Composite(observation, shape=n)
        self.action_spec = Bounded(
            torch.as_tensor(act_space.low, dtype=torch.float32).expand(*n, -1),
            torch.as_tensor(act_space.high, dtype=torch.float32).expand(*n, -1),
            shape=(*n, *act_space.shape),
            dtype=torch.float32,
        )
        self.reward_spec = Unbounded(shape=(*n, 1), dtype=torch.float32)
        self.done_spec = Composite(
            {
                k: Categorical(2, shape=(*n, 1), dtype=torch.bool)
                for k in ("done", "terminated", "truncated")
            },
            shape=n,
        )

    def _column(self, value: Any, dtype: torch.dtype) -> torch.Tensor:
        value = torch.as_tensor(value, device=self.device).to(dtype)
        return value.expand(self.batch_size.numel()).reshape(*self.batch_size, 1)

    def _observe(
        self, obs: torch.Tensor, info: dict, done: torch.Tensor | None = None
    ) -> TensorDict:
        robot = self.base_env.agent.robot
        td = TensorDict(
            {
                "observation": obs.to(self.device, torch.float32),
                "qpos": robot.get_qpos().to(self.device, torch.float32),
                "qvel": robot.get_qvel().to(self.device, torch.float32),
            },
            batch_size=self.batch_size,
            device=self.device,
        )
        for key in _INFO_KEYS:
            td.set(key, self._column(info.get(key, False), torch.bool))
        if self.pixels:
            if not self._selects_frames:
                td.set("pixels", self._env.render().to(self.device, torch.uint8))
            else:
                rendered = self._render_mask(done)
                td.set("pixels", self._frame(rendered))
                td.set("rendered", rendered)
        return td

    @property
    def _selects_frames(self) -> bool:
        """Whether only some frames are rendered (the others black, ``"rendered"`` marks)."""
        return self.render_frames == "done" or self.render_max_joint_speed is not None

    def _render_mask(self, done: torch.Tensor | None) -> torch.Tensor:
        """The frames to render ``[num_envs, 1]``: in the final-steps window
        (``render_frames="done"``) and with the robot static (``render_max_joint_speed``);
        none at a reset."""
        shape = (*self.batch_size, 1)
        if self.render_frames == "done":
            mask = self._in_window(done, self.render_window)
        else:
            mask = torch.full(shape, done is not None, dtype=torch.bool, device=self.device)
        if self.render_max_joint_speed is not None:
            static = self.base_env.agent.is_static(self.render_max_joint_speed)
            mask = mask & self._column(static, torch.bool)
        return mask

    def _in_window(self, done: torch.Tensor | None, steps: int) -> torch.Tensor:
        """Envs that ended an episode or are within ``steps`` steps of the time limit
        (``[num_envs, 1]``, bool): the frames ``render_frames="done"`` renders
        (``render_window``) and the steps ``reward_window`` pays."""
        shape = (*self.batch_size, 1)
        if done is None:  # a reset: no episode ends here
            return torch.zeros(shape, dtype=torch.bool, device=self.device)
        window = done.reshape(shape).to(self.device)
        if steps > 1:
            elapsed = self._column(self.base_env.elapsed_steps, torch.long)
            window = window | (elapsed > self._time_limit - steps)
        return window

    def _frame(self, rendered: torch.Tensor) -> torch.Tensor:
        """The rendered frame where ``rendered`` is set, black elsewhere (nothing is rendered
        when no env needs a frame)."""
        shape = self.observation_spec["pixels"].shape
        if not rendered.any():
            return torch.zeros(shape, dtype=torch.uint8, device=self.device)
        frame = self._env.render().to(self.device, torch.uint8)
        return frame * rendered.reshape(*self.batch_size, 1, 1, 1)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = tensordict.get("_reset", None) if tensordict is not None else None
        options = {}
        if reset is not None and not reset.all():
            env_idx = reset.reshape(-1).nonzero().squeeze(-1)
            options["env_idx"] = env_idx.to(self.base_env.device)
        seed, self._seed = self._seed, None
        obs, info = self._env.reset(seed=seed, options=options)
        td = self._observe(obs, info)
        if "env_idx" in options:
            # ManiSkill reports info only for the envs it reset; keep the others' flags clear.
            for key in _INFO_KEYS:
                td.set(key, td.get(key) & reset.reshape(*self.batch_size, 1).to(self.device))
        return td

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        obs, reward, terminated, truncated, info = self._env.step(action)
        terminated = self._column(terminated, torch.bool)
        if self.ignore_terminations:
            terminated = torch.zeros_like(terminated)
        truncated = self._column(truncated, torch.bool)
        done = terminated | truncated
        td = self._observe(obs, info, done=done)
        reward = self._column(reward, torch.float32)
        if self.reward_window is not None:
            reward = reward * self._in_window(done, self.reward_window)
        td.set("reward", reward)
        td.set("terminated", terminated)
        td.set("truncated", truncated)
        td.set("done", done)
        return td

    def _set_seed(self, seed: int | None) -> None:
        # ManiSkill seeds its main RNG on the next reset; a single env's later episodes follow
        # from it (enhanced_determinism), a batch's from torch's global RNG.
        self._seed = seed

    def close(self, *, raise_if_closed: bool = True) -> None:
        self._env.close()
        super().close(raise_if_closed=raise_if_closed)


class ManiSkillEnv(ManiSkillWrapper):
    """Builds a ManiSkill task and wraps it as a TorchRL env.

    Args:
        env_id (str): a registered ManiSkill task, e.g. ``"PickCube-v1"``.
        pixels (bool, optional): render RGB frames under ``"pixels"``. Defaults to ``False``.
        render_frames (str, optional): ``"all"``, or ``"done"`` to render only the frames that
            end an episode (the others are black). Defaults to ``"all"``.
        render_window (int, optional): with ``render_frames="done"``, also render the last
            ``render_window`` steps before the time limit. Defaults to ``1``.
        render_max_joint_speed (float, optional): render only the frames where the robot is
            static within this joint speed (rad/s), see :class:`ManiSkillWrapper`.
            Defaults to ``None``.
        reward_window (int, optional): pay the env's reward only at the steps that end an
            episode or lie within ``reward_window`` steps of the time limit, see
            :class:`ManiSkillWrapper`. Defaults to ``None`` (every step).
        num_envs (int, optional): parallel envs in one GPU simulation. The CPU simulator runs
            one env per process: parallelise it with :class:`~torchrl.envs.ParallelEnv`.
            Defaults to ``1``.
        max_episode_steps (int, optional): episode length before truncation. Defaults to ``50``.
        image_size (int, optional): side of the square RGB frame. Defaults to ``128``.
        control_mode (str, optional): ManiSkill controller. Defaults to ``"pd_joint_delta_pos"``.
        reward_mode (str, optional): ``"normalized_dense"``, ``"dense"`` or ``"sparse"``.
            Defaults to ``"normalized_dense"``.
        sim_backend / render_backend (str, optional): ``"auto"``, ``"cpu"`` or ``"gpu"``;
            ``"auto"`` simulates on the GPU when CUDA is there and ``num_envs > 1``, and renders
            on the GPU whenever CUDA is there. Defaults to ``"auto"``.
        ignore_terminations (bool, optional): keep stepping after success (episodes end only by
            truncation). Defaults to ``False``.
        views (sequence, optional): the reward cameras, each a name of :data:`VIEWS`
            (``"goal"``, ``"front"``), an ``{eye, target, fov}`` mapping or a
            :class:`CameraView`; each renders ``image_size`` square, all show the goal marker,
            and ``pixels`` tiles them side by side (``[H, len(views) * H, 3]``).
            Defaults to ``("goal",)``.
        seed (int, optional): seeds the first reset, like :meth:`set_seed`. Defaults to ``None``.
        device (torch.device, optional): where the tensordicts live. Defaults to the sim's.

    Examples:
        >>> env = ManiSkillEnv("PickCube-v1", pixels=True)  # doctest: +SKIP
        >>> env.rollout(3)["next", "pixels"].shape  # doctest: +SKIP
        torch.Size([1, 3, 128, 128, 3])
    """

    def __init__(
        self,
        env_id: str = "PickCube-v1",
        *,
        pixels: bool = False,
        render_frames: str = "all",
        render_window: int = 1,
        render_max_joint_speed: float | None = None,
        reward_window: int | None = None,
        num_envs: int = 1,
        max_episode_steps: int = 50,
        image_size: int = 128,
        control_mode: str = "pd_joint_delta_pos",
        reward_mode: str = "normalized_dense",
        sim_backend: str = "auto",
        render_backend: str = "auto",
        ignore_terminations: bool = False,
        views: Sequence[str | Mapping[str, Any] | CameraView] | None = None,
        seed: int | None = None,
        device: Any = None,
        **make_kwargs: Any,
    ) -> None:
        select_vulkan_driver()  # before SAPIEN is imported, in this process
        self._check_kwargs(env_id, num_envs, image_size, max_episode_steps)
        sim_backend, render_backend = _resolve_backends(sim_backend, render_backend, num_envs)
        self.env_id = env_id
        self.sim_backend = sim_backend
        env = self._build_env(
            env_id,
            pixels=pixels,
            num_envs=num_envs,
            max_episode_steps=max_episode_steps,
            image_size=image_size,
            control_mode=control_mode,
            reward_mode=reward_mode,
            sim_backend=sim_backend,
            render_backend=render_backend,
            views=resolve_views(views),
            **make_kwargs,
        )
        super().__init__(
            env,
            pixels=pixels,
            render_frames=render_frames,
            render_window=render_window,
            render_max_joint_speed=render_max_joint_speed,
            reward_window=reward_window,
            ignore_terminations=ignore_terminations,
            device=device,
        )

    @staticmethod
    def _check_kwargs(env_id: str, num_envs: int, image_size: int, max_episode_steps: int) -> None:
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the tasks)

        if env_id not in gym.registry:
            close = [k for k in gym.registry if k.split("-")[0].lower() in env_id.lower()]
            raise ValueError(
                f"Unknown ManiSkill env id {env_id!r}"
                + (f"; did you mean {close[0]!r}?" if close else "; e.g. 'PickCube-v1'.")
            )
        if not 16 <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be in [16, {MAX_IMAGE_SIZE}] pixels, got {image_size}."
            )
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(
                f"num_envs and max_episode_steps must be >= 1, got {num_envs} and "
                f"{max_episode_steps}."
            )

    @staticmethod
    def _build_env(
        env_id: str,
        *,
        pixels: bool,
        num_envs: int,
        max_episode_steps: int,
        image_size: int,
        control_mode: str,
        reward_mode: str,
        sim_backend: str,
        render_backend: str,
        views: list[CameraView],
        **make_kwargs: Any,
    ) -> Any:
        import gymnasium as gym

        kwargs: dict[str, Any] = dict(
            obs_mode="state",
            control_mode=control_mode,
            reward_mode=reward_mode,
            num_envs=num_envs,
            max_episode_steps=max_episode_steps,
            sim_backend="physx_cuda" if sim_backend == "gpu" else "physx_cpu",
            render_backend="sapien_cuda" if render_backend == "gpu" else "sapien_cpu",
            # Unseeded resets otherwise draw the episode (PickCube's cube and goal) from torch's
            # global RNG, which the policy and PPO also consume: set_seed would fix only the
            # first episode. With this, each reset seeds its episode from ManiSkill's own
            # stream. Single env only: ManiSkill seeds a partial reset of a batch with env 0's
            # episode seed, which would repeat the other envs' episodes.
            enhanced_determinism=num_envs == 1,
        )
        if pixels:
            kwargs["render_mode"] = "rgb_array"
            env_id = _register_view_env(env_id, views, image_size)
        kwargs.update(make_kwargs)
        try:
            return gym.make(env_id, **kwargs)
        except RuntimeError as err:
            if "device" in str(err).lower() or "vulkan" in str(err).lower():
                raise RuntimeError(
                    f"ManiSkill could not create a render device ({err}). On a machine without "
                    "an NVIDIA GPU, install Mesa >= 24.3 (run scripts/setup_system.sh)."
                ) from None
            raise
