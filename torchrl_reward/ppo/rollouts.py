"""Where PPO's batches come from: a runner's envs, collector and weight hand-over.

:func:`~torchrl_reward.ppo.train_ppo` only sees this interface, so the local runner (a torchrl
:class:`~torchrl.collectors.Collector` in this process) and the Ray runner
(:class:`~torchrl_reward.ppo.ray_runner.RayRollouts`) share one training loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from tensordict import TensorDictBase
from torchrl.collectors import BaseCollector, Collector
from torchrl.envs import EnvBase

from torchrl_reward.data import EpisodeRecorder


class Rollouts(Protocol):
    """What the training loop needs from a runner.

    Attributes:
        env (EnvBase): an env with the specs the actor and critic are sized from.
        recorder (EpisodeRecorder or None): the episode counts of ``collect.enabled``.
        num_envs (int): envs stepped per batch, the batch's leading size.
    """

    env: EnvBase
    recorder: EpisodeRecorder | None
    num_envs: int

    def make_collector(
        self, policy: torch.nn.Module, frames_per_batch: int, device: torch.device
    ) -> BaseCollector:
        """The collector over every env, running ``policy``."""

    def batches(self) -> Iterator[TensorDictBase]:
        """The collector's batches, one per iteration, without end."""

    def check_batch(self, data: TensorDictBase) -> None:
        """Raise if ``data`` was not collected by the policy the learner last handed over."""

    def publish_weights(self) -> None:
        """Hand the policy's new weights to the collectors after an update."""

    def close(self) -> None:
        """Stop collectors and envs, and flush the recorder."""


class LocalRollouts:
    """The envs stepped in this process, with its recorder, by a torchrl ``Collector``.

    The collector runs the learner's own policy object: weights need no hand-over.
    """

    def __init__(self, env: EnvBase, recorder: EpisodeRecorder | None) -> None:
        self.env, self.recorder = env, recorder
        self.num_envs = env.batch_size.numel()
        self._collector: Collector | None = None

    def make_collector(
        self, policy: torch.nn.Module, frames_per_batch: int, device: torch.device
    ) -> Collector:
        self._collector = Collector(
            self.env,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=-1,
            device=device,
            auto_register_policy_transforms=False,
        )
        return self._collector

    def batches(self) -> Iterator[TensorDictBase]:
        return iter(self._collector)

    def check_batch(self, data: TensorDictBase) -> None:
        return None

    def publish_weights(self) -> None:
        return None

    def close(self) -> None:
        if self._collector is not None:
            self._collector.shutdown()
        elif not self.env.is_closed:
            self.env.close()
        if self.recorder is not None:
            self.recorder.close()
