"""``RewardTransform``: a learned success classifier as a TorchRL reward transform."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.utils import unravel_key
from torchrl.data import Bounded, TensorSpec, Unbounded
from torchrl.envs.transforms import Transform

from torchrl_reward.inference import FrameScorer, RewardBackend, make_backend, resolve_device
from torchrl_reward.models import ResNetRewardModel

log = logging.getLogger(__name__)
MODES = ("replace", "add")
OUTPUTS = ("soft", "binary")


def _file_identity(path: Path | None) -> tuple[int, int, int] | None:
    """Inode, size and mtime of ``path``: a file renamed over it changes the inode at least.

    ``None`` when there is no path or no file (mid-replacement is impossible: renames are
    atomic, so a missing file keeps the model that is loaded).
    """
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class RewardTransform(Transform):
    """Rewards from a learned success classifier P(success | image), scored in batches.

    Reads the frame observed *after* each action (``("next", "pixels")`` in a rollout, the
    same alignment as the training labels), scores it on the reward model's own device and
    writes, next to it:

    - ``reward``: the model reward (``mode="replace"``) or
      ``env_weight * env_reward + model_weight * model_reward`` (``mode="add"``), where the
      model reward is the probability (``output="soft"``) or ``1.0`` when the probability is
      at or above the threshold (``output="binary"``);
    - ``env_reward``: the environment's own reward, kept;
    - ``model_success_prob``: the model's probability (``0`` where nothing was scored).

    In an env (``TransformedEnv(env, RewardTransform(...))``) it scores each step's frames;
    applied to a collected batch (``transform(rollout)``) it relabels every frame of the batch
    in chunks of ``chunk_size``, from ``env_reward`` when the batch was already relabelled.
    ``env_reward`` and ``model_success_prob`` are registered as observations (zero at reset).
    The model never follows ``env.to(...)``: it stays on ``device``; frames move there and
    rewards come back to the frames' device. Host frames cross to a GPU once, through pinned
    buffers kept across calls and non-blocking copies (a
    :class:`~torchrl_reward.inference.FrameScorer`); the one wait is for the probabilities.

    Args:
        checkpoint_path (str or path, optional): a checkpoint written by
            :meth:`ResNetRewardModel.save` (or :meth:`save_checkpoint`). Exclusive with
            ``model``.

    Keyword Args:
        model (ResNetRewardModel, optional): a model object instead of a checkpoint.
        in_keys (sequence of NestedKey, optional): the one image key, uint8
            ``[..., H, W, 3]`` or ``[..., 3, H, W]``. Defaults to ``["pixels"]``.
        reward_key, env_reward_key, prob_key, done_key (NestedKey, optional): the keys
            written and read. Default to ``"reward"``, ``"env_reward"``,
            ``"model_success_prob"`` and ``"done"``.
        mode (str, optional): ``"replace"`` or ``"add"``. Defaults to ``"replace"``.
        output (str, optional): ``"soft"`` or ``"binary"``. Defaults to ``"soft"``.
        threshold (float, optional): the binary decision threshold. Defaults to ``None``: the
            checkpoint's (calibrated for a target false-positive rate at training).
        env_weight (float, optional): weight of the env reward in ``"add"`` mode.
            Defaults to ``1.0``.
        model_weight (float, optional): weight of the model reward in ``"add"`` mode.
            Defaults to ``1.0``.
        terminal_only (bool, optional): score only frames where ``done`` is set (the final
            observation); other steps get a model reward of 0. Per-step learned rewards are
            easier for a policy to exploit. Defaults to ``False``.
        score_key (NestedKey, optional): score only frames where this bool key is set (others
            get a model reward of 0), e.g. ``"rendered"`` from
            ``ManiSkillEnv(render_frames="done", render_window=K)`` to score each episode's last
            ``K`` frames. ``terminal_only=True`` is ``score_key=done_key``. Defaults to ``None``.
        chunk_size (int, optional): frames per backend call, so memory stays bounded.
            Defaults to ``256``.
        device (str or torch.device, optional): the reward model's device, e.g. ``"cuda:1"``
            for a second GPU. An unavailable GPU falls back to ``cuda:0`` (one GPU) or the CPU
            (none) with a warning. Defaults to ``None`` (first GPU, else CPU).
        strict (bool, optional): raise instead of falling back. Defaults to ``False``.
        backend (str, optional): ``"auto"``, ``"torch"``, ``"onnxruntime"`` or
            ``"tensorrt"``, see :func:`~torchrl_reward.inference.make_backend`.
            Defaults to ``"auto"``.
        export_dir (str or path, optional): the checkpoint's ``scripts/export_reward.py``
            output, for the accelerated backends. Defaults to ``None``.
        backend_kwargs (dict, optional): more options of
            :func:`~torchrl_reward.inference.make_backend` (``amp_dtype``, ``compile``,
            ``cuda_graph``, ``threads``, ``cache_dir``). Defaults to ``None``.
        reload_on_change (bool, optional): when ``checkpoint_path`` is replaced on disk (a new
            file renamed over it, as every checkpoint here is written), score with the new one
            from the next call on (:meth:`load_checkpoint`), without a restart. Defaults to
            ``False``.

    Examples:
        >>> from torchrl.envs import TransformedEnv
        >>> from torchrl_reward.envs import ManiSkillEnv
        >>> env = TransformedEnv(
        ...     ManiSkillEnv("PickCube-v1", pixels=True),
        ...     RewardTransform("reward.pt", device="cuda:1", output="binary"),
        ... )  # doctest: +SKIP
        >>> rollout = env.rollout(50)  # doctest: +SKIP
        >>> rollout["next", "model_success_prob"].shape  # doctest: +SKIP
        torch.Size([50, 1, 1])
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike | None = None,
        *,
        model: ResNetRewardModel | None = None,
        in_keys: Sequence[NestedKey] | None = None,
        reward_key: NestedKey = "reward",
        env_reward_key: NestedKey = "env_reward",
        prob_key: NestedKey = "model_success_prob",
        done_key: NestedKey = "done",
        mode: str = "replace",
        output: str = "soft",
        threshold: float | None = None,
        env_weight: float = 1.0,
        model_weight: float = 1.0,
        terminal_only: bool = False,
        score_key: NestedKey | None = None,
        chunk_size: int = 256,
        device: str | torch.device | int | None = None,
        strict: bool = False,
        backend: str = "auto",
        export_dir: str | os.PathLike | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        reload_on_change: bool = False,
    ) -> None:
        if in_keys is None:
            in_keys = ["pixels"]
        if isinstance(in_keys, (str, tuple)):
            in_keys = [in_keys]
        if len(in_keys) != 1:
            raise ValueError(f"RewardTransform reads one image key, got in_keys={in_keys}.")
        super().__init__(in_keys=in_keys, out_keys=[reward_key, env_reward_key, prob_key])
        if (checkpoint_path is None) == (model is None):
            raise ValueError(
                "RewardTransform needs exactly one of checkpoint_path or model, got "
                f"checkpoint_path={checkpoint_path!r} and model={type(model).__name__}."
            )
        if reload_on_change and checkpoint_path is None:
            raise ValueError("RewardTransform: reload_on_change needs a checkpoint_path to watch.")
        if model is None:
            model = ResNetRewardModel.load(checkpoint_path)
        elif not isinstance(model, ResNetRewardModel):
            raise TypeError(
                f"RewardTransform: model must be a ResNetRewardModel, got {type(model).__name__}."
            )
        if mode not in MODES:
            raise ValueError(f"RewardTransform: mode must be one of {MODES}, got {mode!r}.")
        if output not in OUTPUTS:
            raise ValueError(f"RewardTransform: output must be one of {OUTPUTS}, got {output!r}.")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"RewardTransform: threshold must be in [0, 1], got {threshold}.")
        if chunk_size < 1:
            raise ValueError(f"RewardTransform: chunk_size must be >= 1, got {chunk_size}.")
        self.image_key = self.in_keys[0]
        self.reward_key, self.env_reward_key, self.prob_key = self.out_keys
        self.done_key = unravel_key(done_key)
        self.mode = mode
        self.output = output
        self._fixed_threshold = None if threshold is None else float(threshold)
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.env_weight = float(env_weight)
        self.model_weight = float(model_weight)
        self.terminal_only = terminal_only
        self.score_key = unravel_key(score_key) if score_key is not None else None
        self.chunk_size = int(chunk_size)
        self._backend_args = {
            "backend": backend,
            "export_dir": export_dir,
            "chunk_size": self.chunk_size,
            **(backend_kwargs or {}),
        }
        # Plain attributes, not submodules: env.to(...) must not move the reward model.
        self.__dict__["_model"] = model
        self.set_reward_device(device, strict=strict)
        self.stats = {"frames": 0, "chunks": 0, "seconds": 0.0, "reloads": 0}
        watched = Path(checkpoint_path) if reload_on_change else None
        self.__dict__["_watch"] = (watched, _file_identity(watched))

    @property
    def model(self) -> ResNetRewardModel:
        """The reward model (the backend runs its own copy on :attr:`reward_device`)."""
        return self.__dict__["_model"]

    @property
    def backend(self) -> RewardBackend:
        """The inference backend that scores the frames."""
        return self.__dict__["_scorer"].backend

    @property
    def reward_device(self) -> torch.device:
        """Where the reward model runs."""
        return self.backend.device

    def set_reward_device(
        self, device: str | torch.device | int | None, *, strict: bool = False
    ) -> RewardTransform:
        """(Re)build the backend on ``device`` (same fallback rules as the constructor)."""
        device = resolve_device(device, strict=strict, owner="RewardTransform")
        backend = make_backend(self.model, device=device, **self._backend_args)
        self.__dict__["_scorer"] = FrameScorer(backend, self.chunk_size)
        return self

    def load_checkpoint(
        self, checkpoint_path: str | os.PathLike, export_dir: str | os.PathLike | None = None
    ) -> RewardTransform:
        """Score with another checkpoint from now on, on the same device and backend options.

        The new model must take the inputs the current one takes (frame shape, proprio
        inputs): the env and the tensordicts stay as they are. The threshold becomes the new
        checkpoint's unless one was given to the constructor. ``export_dir``: the new
        checkpoint's export, for a transform that scores through one (the old export holds
        the old weights).
        """
        model = ResNetRewardModel.load(checkpoint_path)
        old = self.model
        inputs = (model.frame_shape, list(model.proprio.items()))
        if inputs != (old.frame_shape, list(old.proprio.items())):
            raise ValueError(
                f"RewardTransform: {str(checkpoint_path)!r} takes frames {model.frame_shape} and "
                f"proprio {dict(model.proprio)}, but this transform scores frames "
                f"{old.frame_shape} and proprio {dict(old.proprio)}; a reward model that takes "
                "other inputs needs a new transform (and env)."
            )
        self.__dict__["_model"] = model
        if self._fixed_threshold is None:
            self.threshold = model.threshold
        if export_dir is not None:
            self._backend_args["export_dir"] = export_dir
        self._load_scorer(checkpoint_path)
        self.stats["reloads"] += 1
        log.info("RewardTransform: now scoring with %s", checkpoint_path)
        return self

    def _load_scorer(self, checkpoint_path: str | os.PathLike) -> None:
        """Rebuild the backend for the model just loaded, where the current one runs."""
        self.set_reward_device(self.reward_device, strict=True)

    def _reload_if_changed(self) -> None:
        """With ``reload_on_change``: load the checkpoint again if a new file replaced it."""
        path, identity = self.__dict__["_watch"]
        if path is None:
            return
        now = _file_identity(path)
        if now is not None and now != identity:
            self.load_checkpoint(path)
            self.__dict__["_watch"] = (path, now)

    def save_checkpoint(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Atomically write the reward model's checkpoint (``metadata``: plain data)."""
        return self.model.save(path, **metadata)

    def _frames(self, images: torch.Tensor) -> torch.Tensor:
        """Checks frames and returns them as ``[*B, s, s, 3]`` (a view when possible)."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(
                f"RewardTransform: {self.image_key!r} must be uint8 frames (0-255), got {got}; "
                "pass the raw rendered frames."
            )
        if images.dim() >= 3 and images.shape[-1] == 3:
            frames = images
        elif images.dim() >= 3 and images.shape[-3] == 3:
            frames = images.movedim(-3, -1)
        else:
            raise ValueError(
                f"RewardTransform: {self.image_key!r} must be shaped [..., H, W, 3] or "
                f"[..., 3, H, W], got {tuple(images.shape)}."
            )
        height, width, _ = self.backend.frame_shape
        if tuple(frames.shape[-3:-1]) != (height, width):
            views = self.model.num_views
            raise ValueError(
                f"RewardTransform: frames are {frames.shape[-3]}x{frames.shape[-2]} but the "
                f"checkpoint scores {height}x{width} ({views} view{'s' * (views > 1)} of "
                f"{height}x{height} side by side); render them so, e.g. "
                f"ManiSkillEnv(..., image_size={height}, views=<{views} views>)."
            )
        return frames

    def _proprio(self, tensordict: TensorDictBase, batch: torch.Size) -> torch.Tensor | None:
        """The model's proprio inputs ``[*batch, D]`` from their keys (``None``: image only)."""
        names = list(self.model.proprio)
        if not names:
            return None
        missing = [name for name in names if name not in tensordict]
        if missing:
            raise KeyError(
                f"RewardTransform: the reward model reads proprio inputs {names}, but the "
                f"tensordict lacks {missing}; ManiSkillEnv writes 'qpos' and 'qvel'."
            )
        values = []
        for name, width in self.model.proprio.items():
            value = tensordict.get(name)
            if not value.is_floating_point() or tuple(value.shape) != (*batch, width):
                raise ValueError(
                    f"RewardTransform: proprio input {name!r} must be float [*B, {width}] with "
                    f"B={list(batch)}, got {value.dtype} {list(value.shape)}."
                )
            values.append(value)
        return (values[0] if len(values) == 1 else torch.cat(values, dim=-1)).float()

    def _bad_proprio_message(self) -> str:
        return f"RewardTransform: proprio inputs {list(self.model.proprio)} hold NaN or inf values."

    @torch.no_grad()
    def success_prob(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """P(success) float32 ``[*B]`` of uint8 frames ``[*B, H, W, 3]`` or ``[*B, 3, H, W]``.

        Frames are flattened (a view), sent to the reward device ``chunk_size`` at a time by a
        :class:`~torchrl_reward.inference.FrameScorer` (host frames through its reused pinned
        buffers, non-blocking), and the probabilities come back to the frames' device in one
        copy. With a bool ``mask`` of shape ``[*B]`` only the selected frames are scored (and
        copied); the others get 0. An empty batch gives an empty result. A model with proprio
        inputs also needs their values ``[*B, D]``.
        """
        frames = self._frames(images)
        batch = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        if self.model.proprio_width:
            if proprio is None or tuple(proprio.shape) != (*batch, self.model.proprio_width):
                got = None if proprio is None else list(proprio.shape)
                raise ValueError(
                    f"RewardTransform: the reward model needs its proprio inputs "
                    f"{list(self.model.proprio)} as [*B, {self.model.proprio_width}] with "
                    f"B={list(batch)}, got {got}."
                )
            proprio = proprio.reshape(flat.shape[0], -1)
        index = None
        if mask is not None:
            index = mask.reshape(-1).to(images.device).nonzero().squeeze(-1)
        count = flat.shape[0] if index is None else index.numel()
        if count == 0:
            return torch.zeros(batch, dtype=torch.float32, device=images.device)
        scored = self._score(flat, proprio, index)
        if index is None:
            return scored.reshape(batch)
        probs = torch.zeros(flat.shape[0], dtype=torch.float32, device=images.device)
        probs[index] = scored
        return probs.reshape(batch)

    def _score(
        self, flat: torch.Tensor, proprio: torch.Tensor | None, index: torch.Tensor | None
    ) -> torch.Tensor:
        """P(success) of ``flat[index]`` on the frames' device, checked to be finite, as are
        the proprio inputs."""
        start = time.perf_counter()
        scorer = self.__dict__["_scorer"]
        on_gpu = proprio is not None and proprio.device.type != "cpu"
        if proprio is not None and not on_gpu and not bool(torch.isfinite(proprio).all()):
            raise ValueError(self._bad_proprio_message())
        # The one wait for the reward device: its probabilities coming back (and the check of
        # GPU-resident proprio inputs, made in the same wait; nothing is written before it).
        probs = scorer(flat, proprio, index).to(flat.device, torch.float32)
        finite = torch.isfinite(probs).all()
        if on_gpu:
            finite &= torch.isfinite(proprio).all().to(finite.device)
        if not bool(finite):
            if on_gpu and not bool(torch.isfinite(proprio).all()):
                raise ValueError(self._bad_proprio_message())
            raise RuntimeError(
                f"RewardTransform: the {scorer.backend.name} backend returned NaN/inf "
                "probabilities; the checkpoint weights or the export are broken (re-train or "
                "re-export)."
            )
        self.stats["frames"] += probs.shape[0]
        self.stats["chunks"] += -(-probs.shape[0] // self.chunk_size)
        self.stats["seconds"] += time.perf_counter() - start
        return probs

    def _missing_image_message(self, tensordict: TensorDictBase) -> str:
        keys = sorted(str(k) for k in tensordict.keys(True, True))
        return (
            f"RewardTransform: no image {self.image_key!r} in the tensordict (keys: {keys}); "
            "render frames with ManiSkillEnv(..., pixels=True) or set in_keys to the image key."
        )

    def _relabel(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Writes reward, env reward and probability into a post-step tensordict."""
        self._reload_if_changed()
        images = tensordict.get(self.image_key, None)
        if images is None:
            raise KeyError(self._missing_image_message(tensordict))
        # An already relabelled batch keeps the env's reward under env_reward_key.
        env_reward = tensordict.get(self.env_reward_key, None)
        if env_reward is None:
            env_reward = tensordict.get(self.reward_key, None)
        if env_reward is None and self.mode == "add":
            raise KeyError(
                f"RewardTransform(mode='add') needs the env reward {self.reward_key!r}, which "
                "the tensordict lacks; use mode='replace' or keep the env's reward."
            )
        batch = images.shape[:-3]
        mask = self.scored_frames(tensordict)
        if mask is not None:
            mask = mask.reshape(batch)
        probs = self.success_prob(images, mask, self._proprio(tensordict, batch))
        shape = env_reward.shape if env_reward is not None else (*batch, 1)
        probs = probs.reshape(shape)
        if self.output == "soft":
            model_reward = probs
        else:
            model_reward = (probs >= self.threshold).to(torch.float32)
        if mask is not None:
            model_reward = torch.where(mask.reshape(shape), model_reward, 0.0)
        if self.mode == "replace":
            reward = model_reward
        else:
            reward = self.env_weight * env_reward + self.model_weight * model_reward
        tensordict.set(self.prob_key, probs)
        if env_reward is not None:
            tensordict.set(self.env_reward_key, env_reward)
        tensordict.set(self.reward_key, reward.to(torch.float32))
        return tensordict

    def scored_frames(self, tensordict: TensorDictBase) -> torch.Tensor | None:
        """Bool mask of the frames this transform scores (``score_key``, else ``done`` with
        ``terminal_only``), or ``None`` when it scores every frame."""
        key = self.score_key
        if key is None and self.terminal_only:
            key = self.done_key
        if key is None:
            return None
        mask = tensordict.get(key, None)
        if mask is None:
            raise KeyError(
                f"RewardTransform scores only the frames marked by {key!r} (terminal_only / "
                "score_key), but the tensordict lacks it."
            )
        return mask.bool()

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._relabel(next_tensordict)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Relabels a collected batch: its ``"next"`` entry when there is one, else itself."""
        next_tensordict = tensordict.get("next", None)
        if isinstance(next_tensordict, TensorDictBase):
            tensordict.set("next", self._relabel(next_tensordict))
            return tensordict
        return self._relabel(tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # No reward at reset, but the two observation entries must exist in every step.
        zero = self.parent.full_reward_spec[self.reward_key].zero()
        tensordict_reset.set(self.env_reward_key, zero)
        tensordict_reset.set(self.prob_key, zero.to(torch.float32))
        return tensordict_reset

    def _check_image_spec(self, observation_spec: TensorSpec) -> None:
        if self.image_key not in observation_spec.keys(True, True):
            raise KeyError(
                f"RewardTransform: the env has no {self.image_key!r} observation; render frames "
                "with ManiSkillEnv(..., pixels=True) or set in_keys to the image key."
            )
        spec = observation_spec[self.image_key]
        h, w, _ = self.backend.frame_shape
        if spec.dtype != torch.uint8 or (tuple(spec.shape[-3:]) not in ((h, w, 3), (3, h, w))):
            raise ValueError(
                f"RewardTransform: the env's {self.image_key!r} is {spec.dtype} "
                f"{tuple(spec.shape)} but the checkpoint needs uint8 frames of {h}x{w}x3 "
                f"({self.model.num_views} view(s) of {h}x{h}); use ManiSkillEnv(..., "
                f"pixels=True, image_size={h}) with as many views."
            )
        missing = [k for k in self.model.proprio if k not in observation_spec]
        if missing:
            raise KeyError(
                f"RewardTransform: the reward model reads proprio inputs "
                f"{list(self.model.proprio)}, but the env has no {missing} observation."
            )

    def transform_observation_spec(self, observation_spec: TensorSpec) -> TensorSpec:
        self._check_image_spec(observation_spec)
        env_reward = self.parent.full_reward_spec[self.reward_key]
        observation_spec[self.env_reward_key] = env_reward.clone()
        observation_spec[self.prob_key] = Bounded(
            0.0, 1.0, shape=env_reward.shape, dtype=torch.float32, device=env_reward.device
        )
        return observation_spec

    def transform_reward_spec(self, reward_spec: TensorSpec) -> TensorSpec:
        env = reward_spec[self.reward_key]
        kwargs = {"shape": env.shape, "dtype": torch.float32, "device": env.device}
        if self.mode == "replace":
            reward_spec[self.reward_key] = Bounded(0.0, 1.0, **kwargs)
        elif isinstance(env, Bounded):
            # Interval arithmetic: w * [lo, hi] is [w lo, w hi] or [w hi, w lo] by the sign.
            low, high = env.space.low.float(), env.space.high.float()
            env_low = torch.minimum(self.env_weight * low, self.env_weight * high)
            env_high = torch.maximum(self.env_weight * low, self.env_weight * high)
            reward_spec[self.reward_key] = Bounded(
                env_low + min(0.0, self.model_weight),
                env_high + max(0.0, self.model_weight),
                **kwargs,
            )
        else:
            reward_spec[self.reward_key] = Unbounded(**kwargs)
        return reward_spec

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_key={self.image_key!r}, mode={self.mode!r}, "
            f"output={self.output!r}, threshold={self.threshold:.4g}, "
            f"terminal_only={self.terminal_only}, score_key={self.score_key!r}, "
            f"backend={self.backend.name!r}, "
            f"device={self.reward_device}, chunk_size={self.chunk_size})"
        )
