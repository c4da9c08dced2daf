"""One reward model as a named Ray actor, and the :class:`RewardTransform` that scores through it.

The issue's RewardWorker: the model is loaded once, on the resources Ray gives the actor (a GPU
when the cluster has one), and every batch the learner collects is scored there in chunks of
``chunk_size`` by the same backends (:func:`~torchrl_reward.inference.make_backend`). The
transform on the learner keeps :class:`~torchrl_reward.transforms.RewardTransform`'s semantics
(modes, outputs, ``terminal_only``, the agreement metrics) and only sends the frames it scores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError

from torchrl_reward.inference import FrameScorer, make_backend
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.transforms import RewardTransform
from torchrl_reward.utils import resolve_device


class RewardModelActor:
    """Scores frames with a reward model on this process's device (the body of the Ray actor).

    Args:
        checkpoint_path (str or path): the reward model's checkpoint (on a path every node of
            the cluster sees).

    Keyword Args:
        device (str, optional): ``"cuda"`` on a GPU Ray assigned, else ``"cpu"``.
            Defaults to ``"cpu"``.
        chunk_size (int, optional): frames per backend call. Defaults to ``256``.
        backend_args: the rest of :func:`~torchrl_reward.inference.make_backend`'s options
            (``backend``, ``export_dir``, ``amp_dtype``, ...).
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        *,
        device: str = "cpu",
        chunk_size: int = 256,
        **backend_args: Any,
    ) -> None:
        self._device = resolve_device(device, strict=True, owner="RewardModelActor")
        self._chunk_size = int(chunk_size)
        self._backend_args = backend_args
        self._stats = {"calls": 0, "frames": 0, "chunks": 0, "largest_chunk": 0, "seconds": 0.0}
        self.load(checkpoint_path)

    def load(self, checkpoint_path: str | os.PathLike) -> dict[str, Any]:
        """Score with another checkpoint from now on (no restart); returns :meth:`info`."""
        model = ResNetRewardModel.load(checkpoint_path)
        backend = make_backend(
            model, device=self._device, chunk_size=self._chunk_size, **self._backend_args
        )
        self._scorer = FrameScorer(backend, self._chunk_size)
        self._checkpoint = str(checkpoint_path)
        return self.info()

    def info(self) -> dict[str, Any]:
        """The backend's name and device, the frame shape it takes, the checkpoint it runs."""
        backend = self._scorer.backend
        return {
            "backend": backend.name,
            "device": str(backend.device),
            "frame_shape": tuple(backend.frame_shape),
            "chunk_size": self._chunk_size,
            "checkpoint": self._checkpoint,
        }

    @torch.no_grad()
    def score(self, frames: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """P(success) float32 ``[N]`` on the CPU of uint8 frames ``[N, H, W, 3]``."""
        start = time.perf_counter()
        probs = self._scorer(frames, proprio).float().cpu()
        n = frames.shape[0]
        self._stats["calls"] += 1
        self._stats["frames"] += n
        self._stats["chunks"] += -(-n // self._chunk_size)
        self._stats["largest_chunk"] = max(self._stats["largest_chunk"], min(n, self._chunk_size))
        self._stats["seconds"] += time.perf_counter() - start
        return probs

    def stats(self) -> dict[str, float]:
        """Calls, frames and chunks scored so far, the largest chunk, seconds spent."""
        return dict(self._stats)


def _actor_gpus(setting: Any) -> float:
    """``reward_actor.num_gpus``: ``auto`` is one GPU when the cluster has one, else none."""
    if setting == "auto":
        return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    gpus = float(setting)
    if gpus < 0:
        raise ValueError(f"runner.reward_actor.num_gpus must be >= 0 or 'auto', got {setting}.")
    return gpus


def start_reward_actor(
    actor_cfg: Any,
    checkpoint_path: str | os.PathLike,
    *,
    chunk_size: int = 256,
    **backend_args: Any,
) -> ray.actor.ActorHandle:
    """Start the named reward model actor (``runner.reward_actor``) and wait until it is loaded.

    It gets ``num_gpus`` (one GPU, ``auto``, when the cluster has one) and ``num_cpus``, and is
    not restarted by Ray: its death is an error the learner reports (a restarted actor would
    score with a model the run did not choose). A bad checkpoint fails here, not mid-run.
    """
    gpus = _actor_gpus(actor_cfg.num_gpus)
    remote = ray.remote(RewardModelActor).options(
        name=actor_cfg.name, num_gpus=gpus, num_cpus=actor_cfg.num_cpus, max_restarts=0
    )
    actor = remote.remote(
        str(checkpoint_path),
        device="cuda" if gpus > 0 else "cpu",
        chunk_size=chunk_size,
        **backend_args,
    )
    _remote_call(actor, actor_cfg.name, "info", timeout_s=actor_cfg.timeout_s)
    return actor


def _remote_call(
    actor: ray.actor.ActorHandle, name: str, method: str, *args: Any, timeout_s: float
) -> Any:
    """``actor.method(*args)``; a dead actor or a call past ``timeout_s`` raises, naming it."""
    try:
        return ray.get(getattr(actor, method).remote(*args), timeout=timeout_s)
    except RayActorError as err:
        raise RuntimeError(
            f"The reward model actor {name!r} died ({type(err).__name__}); the run cannot "
            "score rewards. Fix the cause in its log above and resume with "
            "runner.resume_dir=<this run>."
        ) from err
    except GetTimeoutError as err:
        raise TimeoutError(
            f"The reward model actor {name!r} did not answer {method}() within {timeout_s} s "
            "(runner.reward_actor.timeout_s); is it starved of CPUs or its GPU?"
        ) from err


@dataclass(frozen=True)
class ActorBackend:
    """What :class:`RewardTransform` reads of a backend, for one that runs in the actor."""

    name: str
    device: torch.device
    frame_shape: tuple[int, int, int]


class RemoteScorer:
    """A :class:`~torchrl_reward.inference.FrameScorer` stand-in that scores in the actor.

    Only the selected frames (``index``) leave this process, in one call; the actor splits
    them into chunks of its ``chunk_size``.
    """

    def __init__(self, actor: ray.actor.ActorHandle, name: str, timeout_s: float) -> None:
        self.actor, self.name, self.timeout_s = actor, name, float(timeout_s)
        info = _remote_call(actor, name, "info", timeout_s=self.timeout_s)
        self.backend = ActorBackend(
            f"ray-{info['backend']}", torch.device(info["device"]), tuple(info["frame_shape"])
        )

    def __call__(
        self,
        frames: torch.Tensor,
        proprio: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if index is not None:
            frames = frames.index_select(0, index.to(frames.device))
            proprio = None if proprio is None else proprio.index_select(0, index)
        if frames.shape[0] == 0:
            return torch.zeros(0)
        proprio = None if proprio is None else proprio.cpu()
        return _remote_call(
            self.actor, self.name, "score", frames.cpu(), proprio, timeout_s=self.timeout_s
        )


class RemoteRewardTransform(RewardTransform):
    """:class:`RewardTransform` whose frames are scored by a :class:`RewardModelActor`.

    Same arguments and outputs as :class:`RewardTransform`; the checkpoint is read here only for
    its threshold, inputs and label (what the agreement metrics compare with), while the actor
    runs the network on its own device: ``device``, ``backend`` and ``backend_kwargs`` are the
    actor's business (:func:`start_reward_actor`) and ignored here.

    Args:
        actor (ray.actor.ActorHandle): the running reward model actor.
        checkpoint_path (str or path): the checkpoint the actor was started with.

    Keyword Args:
        name (str, optional): the actor's name, for error messages. Defaults to
            ``"reward_model"``.
        timeout_s (float, optional): longest wait for one scoring call. Defaults to ``300``.
        kwargs: :class:`RewardTransform`'s keyword arguments.

    Examples:
        >>> actor = start_reward_actor(cfg.runner.reward_actor, "reward.pt")  # doctest: +SKIP
        >>> transform = RemoteRewardTransform(actor, "reward.pt", output="binary")  # doctest: +SKIP
        >>> batch = transform(batch)  # doctest: +SKIP
    """

    def __init__(
        self,
        actor: ray.actor.ActorHandle,
        checkpoint_path: str | os.PathLike,
        *,
        name: str = "reward_model",
        timeout_s: float = 300.0,
        **kwargs: Any,
    ) -> None:
        # Read by set_reward_device, which RewardTransform.__init__ calls.
        self.__dict__["_remote"] = (actor, name, timeout_s)
        super().__init__(checkpoint_path, **kwargs)

    def set_reward_device(
        self, device: str | torch.device | int | None, *, strict: bool = False
    ) -> RemoteRewardTransform:
        """Connect to the actor: it scores on the device Ray placed it on, not ``device``."""
        self.__dict__["_scorer"] = RemoteScorer(*self.__dict__["_remote"])
        return self

    def _load_scorer(self, checkpoint_path: str | os.PathLike) -> None:
        """The actor loads the new checkpoint (no restart); every collector scores with it."""
        actor, name, timeout_s = self.__dict__["_remote"]
        _remote_call(actor, name, "load", str(checkpoint_path), timeout_s=timeout_s)
        self.set_reward_device(None)

    def actor_stats(self) -> dict[str, float]:
        """The actor's counters (:meth:`RewardModelActor.stats`)."""
        actor, name, timeout_s = self.__dict__["_remote"]
        return _remote_call(actor, name, "stats", timeout_s=timeout_s)
