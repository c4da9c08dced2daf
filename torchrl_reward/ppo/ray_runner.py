"""``runner=ray``: PPO's batches from remote collectors on a Ray cluster.

Each of ``runner.num_collectors`` Ray actors is a torchrl
:class:`~torchrl.collectors.Collector` (through torchrl's
:class:`~torchrl.collectors.distributed.RayCollector`, synchronous) stepping its own batch of
``env.num_envs`` envs; the learner stays in the driver. After every update the policy
weights go to every collector (torchrl's ``RayWeightSyncScheme``), and each collector's
:class:`~torchrl.envs.llm.transforms.PolicyVersion` stamps the steps it collects, so a batch
from a stale policy is an error. With ``collect.enabled`` every collector records into the one
``collect.save_dir``: the :class:`~torchrl_reward.data.EpisodeRecorder` s share ids and
targets through the folder's lock (one machine, or a shared filesystem with ``flock``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError
from tensordict import TensorDict, TensorDictBase
from torch.distributed import DistError
from torchrl.collectors.distributed import RayCollector
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.llm.transforms.policy_version import PolicyVersion

from torchrl_reward.data import EpisodeRecorder, make_recorder
from torchrl_reward.ppo.config import CollectConfig, EnvConfig, PPORunConfig
from torchrl_reward.ppo.envs import ALL_FRAMES, RenderOptions, make_env

log = logging.getLogger(__name__)
VERSION_KEY = ("next", "policy_version")
SEED_STRIDE = 1000  # collector i seeds its envs from seed + i * SEED_STRIDE


def worker_env(
    env_cfg: EnvConfig,
    collect_cfg: CollectConfig | None,
    seed: int,
    *,
    pixels: bool,
    render: RenderOptions = ALL_FRAMES,
) -> EnvBase:
    """One collector's envs (and recorder), built in its Ray actor from the pickled configs."""
    env = make_env(env_cfg, pixels=pixels, render=render)
    if collect_cfg is not None:
        env = TransformedEnv(env, make_recorder({**asdict(collect_cfg), "seed": seed}))
    env.set_seed(seed)
    return env


@contextlib.contextmanager
def _collector_faults() -> Iterator[None]:
    """A collector that died (while collecting, or while taking the weights over Ray and Gloo)
    becomes one error that says how to resume."""
    try:
        yield
    except (RayActorError, DistError) as err:
        raise RuntimeError(
            f"A Ray collector died ({type(err).__name__}: {err}); the run stops. Its episodes "
            "on disk are complete; resume from the last checkpoint with "
            "runner.resume_dir=<this run>."
        ) from err


class RayRollouts:
    """The Ray runner's envs: ``runner.num_collectors`` remote collectors of ``env.num_envs``.

    Call it inside :func:`~torchrl_reward.distributed.ray_session`. The driver builds one
    state-only env for the specs (closed once the collectors exist) and, with
    ``collect.enabled``, a recorder that only reads the shared folder's counts.

    Args:
        cfg (PPORunConfig): the run's config, with ``runner.name == "ray"``.

    Keyword Args:
        pixels (bool): render frames (for the learned reward or the recorder).
        render (RenderOptions, optional): the frames rendered, see
            :func:`~torchrl_reward.ppo.make_env`. Defaults to every frame.
    """

    def __init__(
        self,
        cfg: PPORunConfig,
        *,
        pixels: bool,
        render: RenderOptions = ALL_FRAMES,
    ) -> None:
        num_collectors = cfg.runner.num_collectors
        if num_collectors < 1:
            raise ValueError(f"runner.num_collectors must be >= 1, got {num_collectors}.")
        if not ray.is_initialized():
            raise RuntimeError("RayRollouts runs inside ray_session(cfg.runner); Ray is not up.")
        self._cfg = cfg
        self._render = {"pixels": pixels, "render": render}
        self.num_collectors = num_collectors
        self.num_envs = num_collectors * cfg.env.num_envs
        self.env = make_env(cfg.env, num_envs=1)
        self.recorder: EpisodeRecorder | None = None
        if cfg.collect.enabled:
            self.recorder = make_recorder({**asdict(cfg.collect), "seed": cfg.seed})
        self.version = 0
        self._collector: RayCollector | None = None

    def make_collector(
        self, policy: torch.nn.Module, frames_per_batch: int, device: torch.device
    ) -> RayCollector:
        """Start the remote collectors with ``policy``'s current weights (version 1)."""
        cfg = self._cfg
        if frames_per_batch % self.num_collectors:
            raise ValueError(
                f"{frames_per_batch} frames per batch do not split over "
                f"{self.num_collectors} collectors."
            )
        makers = [
            partial(
                worker_env,
                cfg.env,
                cfg.collect if cfg.collect.enabled else None,
                cfg.seed + i * SEED_STRIDE,
                **self._render,
            )
            for i in range(self.num_collectors)
        ]
        self.env.close()  # the specs are read; the collectors step their own envs
        self._policy = policy
        self._collector = RayCollector(
            makers,
            copy.deepcopy(policy).to("cpu"),  # what each actor unpickles; weights follow
            frames_per_batch=frames_per_batch,
            total_frames=2**62,  # the training loop decides when to stop
            sync=True,
            remote_configs={
                "num_cpus": cfg.runner.collector_cpus,
                "num_gpus": cfg.runner.collector_gpus or None,
            },
            collector_kwargs={
                "track_policy_version": PolicyVersion(),
                "auto_register_policy_transforms": False,
            },
        )
        self._wait_until_started(cfg.runner.start_timeout_s)
        self.publish_weights()
        return self._collector

    def _wait_until_started(self, timeout_s: float) -> None:
        """Wait for every collector actor to have built its envs.

        The first weight hand-over opens a Gloo group that gives its members 60 s to join;
        collectors still building ManiSkill envs on a loaded machine miss it, so they are
        waited for first, with the run's own limit.
        """
        actors = self._collector.remote_collectors
        try:
            ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=timeout_s)
        except GetTimeoutError as err:
            raise RuntimeError(
                f"The {len(actors)} Ray collectors did not start within {timeout_s} s "
                "(runner.start_timeout_s): is the cluster short of CPUs for "
                "runner.num_collectors x runner.collector_cpus (`ray status`)?"
            ) from err

    def batches(self) -> Iterator[TensorDictBase]:
        """The collector's batches; a dead collector is an error that says how to resume."""
        with _collector_faults():
            yield from self._collector

    def publish_weights(self) -> None:
        """Send the policy's weights to every collector; they stamp steps with the version."""
        weights = TensorDict.from_module(self._policy).data.to("cpu")
        with _collector_faults():
            self._collector.update_policy_weights_(weights)
        self.version += 1

    def check_batch(self, data: TensorDictBase) -> None:
        versions = data.get(VERSION_KEY)
        if not bool((versions == self.version).all()):
            seen = sorted(set(versions.reshape(-1).tolist()))
            raise RuntimeError(
                f"Ray collectors stepped with policy versions {seen}, but the learner "
                f"published version {self.version}: the weight hand-over failed."
            )

    def worker_versions(self) -> list[int]:
        """The policy version each collector holds now."""
        stats = self._collector.stats(workers="per_worker")
        return [stats.get(f"worker_{i}/policy_version", -1) for i in range(self.num_collectors)]

    def close(self) -> None:
        """Stop the collectors, letting each flush its recorder first."""
        if self._collector is not None:
            try:
                self._collector.map_fn("shutdown")  # closes their envs: recorders flush
            except RayActorError as err:
                log.warning("A Ray collector was gone at shutdown: %s", err)
            self._collector.shutdown()
        elif not self.env.is_closed:
            self.env.close()
        if self.recorder is not None:
            self.recorder.close()
