"""Typed configuration of a PPO run (``configs/ppo.yaml`` and its groups mirror it).

The YAML stays where presets are chosen (``env=gpu``, ``init=weak_bc``, ``reward=resnet``...);
:func:`make_ppo_config` turns a composed config into a :class:`PPORunConfig`, which is all
:func:`~torchrl_reward.ppo.train_ppo` reads. The defaults are those of the default composition
(``env=cpu reward=dense runner=local init=scratch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from torchrl_reward.training.config import LoggerConfig


@dataclass
class EnvConfig:
    """The ManiSkill envs PPO steps (``configs/env/``): :func:`~torchrl_reward.ppo.make_env`."""

    env_id: str = "PickCube-v1"
    num_envs: int = 4
    sim_backend: str = "cpu"  # cpu: one env per process (ParallelEnv) | gpu: one simulation
    render_backend: str = "auto"  # auto: the GPU when CUDA is there, else lavapipe
    max_episode_steps: int = 50
    control_mode: str = "pd_joint_delta_pos"
    reward_mode: str = "normalized_dense"
    ignore_terminations: bool = False
    image_size: int = 128
    # Reward cameras, tiled side by side: goal | front | {eye, target, fov}.
    views: list[Any] = field(default_factory=lambda: ["goal"])
    # Pay the env reward only in the last N steps of each episode (None: every step): with
    # reward_mode=sparse, the control arm of a reward.final_steps=N learned reward.
    reward_window: int | None = None


@dataclass
class PPOHyperparams:
    """The PPO loop and its update (``ppo``): ManiSkill's baseline hyperparameters."""

    total_frames: int = 200_000
    num_steps: int = 50  # rollout length per env and iteration
    num_epochs: int = 8
    num_minibatches: int = 4
    gamma: float = 0.8
    gae_lambda: float = 0.9
    clip_epsilon: float = 0.2
    lr: float = 3.0e-4
    max_grad_norm: float = 0.5
    entropy_coef: float = 0.0
    critic_coef: float = 0.5
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    target_kl: float | None = None  # stop an update's epochs once the policy moved this far
    critic_warmup_frames: int = 0  # frames at this run's start in which only the critic learns
    bootstrap_success: bool = True  # as ManiSkill's baseline: a success keeps its value


@dataclass
class WarmstartConfig:
    """Behaviour cloning of the scripted controller before PPO starts (``warmstart``)."""

    enabled: bool = False  # init=scripted_bc turns it on (needs control_mode=pd_ee_delta_pos)
    episodes: int = 100  # scripted episodes recorded (state only; the successful ones cloned)
    noise: float = 0.1  # action noise of the scripted controller
    epochs: int = 60
    lr: float = 1.0e-3
    batch_size: int = 256
    init_scale: float = 0.2  # the actor's exploration std (before tanh) after cloning


@dataclass
class EvalConfig:
    """Deterministic evaluation episodes on a separate env (``eval``)."""

    interval: int = 10  # iterations between evaluations (0: off)
    num_episodes: int = 4
    seed: int | None = 1234  # every evaluation plays the same episodes; None: new ones each time


@dataclass
class CollectConfig:
    """Recording labelled episodes while PPO trains (``collect``): the reward model's data."""

    enabled: bool = False
    save_dir: str = "data/pickcube"
    target_success: int = 5000
    target_failure: int = 5000
    stop_when_done: bool = True  # end the run when both targets are met (false: keep training)
    frames_after_success: int = 10  # with env.ignore_terminations: positives kept past success
    compress: bool = False  # zlib-compressed frames (~1.6x smaller, still plain pickle)


@dataclass
class ResNetCheckpointConfig:
    """The trained success classifier ``reward=resnet`` scores with."""

    checkpoint_path: str | None = None


@dataclass
class RefreshConfig:
    """Refreshing the learned reward on the policy's own episodes as PPO moves it
    (``reward.refresh``): :class:`~torchrl_reward.ppo.refresh.RewardRefresh`.

    A model trained on one policy's episodes ages as PPO moves the policy into frames it never
    saw (BENCHMARKS.md, "Hard negatives from the policy's own run"). At each of ``at_frames``
    the run records episodes of its current stochastic policy, labelled by the simulator as
    every recording is, fine-tunes the model it scores with on all of the run's refresh
    recordings, re-exports it when the run scores through an export, and scores with it from
    the next batch. The policy and critic never see those labels.
    """

    at_frames: list[int] = field(default_factory=list)  # empty: never
    target_success: int = 30  # episodes recorded per refresh (added to the earlier ones)
    target_failure: int = 90
    frames_after_success: int = 50
    num_envs: int | None = None  # envs the refresh records on (None: env.num_envs)
    max_rounds: int = 100  # rounds a refresh records at most; short, it fine-tunes on what it has
    # Merged onto configs/train_reward.yaml (its data, save_dir, init_from and model.* are the
    # refresh's own: the model scoring now, fine-tuned). The fine-tune of the hand refreshes.
    train: dict[str, Any] = field(
        default_factory=lambda: {
            "epochs": 4,
            "samples_per_epoch": 2560,
            "micro_batch_size": 32,
            "global_batch_size": 32,
            "lr": 1.0e-4,
        }
    )
    # Merged onto configs/export_reward.yaml, when the run scores through an export.
    export: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardConfig:
    """The reward PPO optimises (``configs/reward/``): the env's own, or the learned one.

    ``reward=dense`` sets only ``use_reward_model=false``; the other fields are those of
    ``reward=resnet`` (a :class:`~torchrl_reward.transforms.RewardTransform` on every batch).
    """

    use_reward_model: bool = False
    reward_model_type: str = "resnet"
    mode: str = "replace"  # replace: model reward only | add: env_weight*env + model_weight*model
    output: str = "soft"  # soft: P(success) | binary: P(success) >= threshold
    threshold: float | None = None  # None: the checkpoint's (calibrated for its target FPR)
    terminal_only: bool = False  # score only the final frame of each episode (harder to hack)
    final_steps: int = 1  # with terminal_only: score the last N frames of each episode
    # Render and score only frames where every arm joint is under this speed (rad/s); the rest
    # are paid 0. Success needs a static arm (PickCube: 0.2), so a success model loses nothing.
    render_max_joint_speed: float | None = None
    env_weight: float = 1.0
    model_weight: float = 1.0
    chunk_size: int = 256  # frames per inference call
    device: str = "cuda:1"  # the model's own device; falls back to cuda:0 / cpu with a warning
    strict: bool = False  # raise instead of falling back
    backend: str = "auto"  # auto | torch | onnxruntime | tensorrt
    export_dir: str | None = None  # scripts/export_reward.py output, for onnxruntime / tensorrt
    reload_on_change: bool = False  # a checkpoint renamed over checkpoint_path is scored next batch
    # make_backend options; on a GPU amp_dtype=float16 compile=true cuda_graph=true scores a
    # 256-frame chunk in about 1 ms (BENCHMARKS.md); float16 and cuda_graph need CUDA;
    # fused_conv (conv + bias + ReLU in one cuDNN call) None: on CUDA only.
    backend_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "amp_dtype": None,
            "compile": False,
            "cuda_graph": False,
            "fused_conv": None,
        }
    )
    resnet: ResNetCheckpointConfig = field(default_factory=ResNetCheckpointConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)


@dataclass
class RewardActorConfig:
    """The one Ray actor that scores the learned reward (``runner=ray`` with ``reward=resnet``)."""

    name: str = "reward_model"
    num_gpus: str | float = "auto"  # auto: 1 when the cluster has a GPU, else 0 (CPU actor)
    num_cpus: float = 1
    timeout_s: float = 300  # a scoring call that takes longer is an error, never a hang


@dataclass
class RunnerConfig:
    """Where the run's envs step and where it starts (``configs/runner/``).

    ``name="local"``: a torchrl Collector in this process; ``name="ray"``: ``num_collectors``
    remote collectors on a Ray cluster (the other fields are the Ray runner's alone).
    """

    name: str = "local"  # local | ray
    resume_dir: str | None = None  # a run directory (or its checkpoint) to continue from
    init_from: str | None = None  # a PPO checkpoint whose weights start a new run
    save_interval: int = 10  # iterations between checkpoints
    progress: bool = True
    num_collectors: int = 2
    address: str | None = None  # None: start a local cluster; auto or <head-ip>:6379: join one
    namespace: str = "torchrl_reward"  # named actors (the reward model) live here
    # Local cluster only: CPUs it offers (None: the machine's, raised to what the collectors
    # and the reward actor reserve).
    num_cpus: int | None = None
    object_store_mb: int = 512  # local cluster only: a bounded object store (MiB)
    collector_cpus: float = 1  # Ray CPUs reserved by each collector actor
    collector_gpus: float = 0  # Ray GPUs reserved by each collector (0.25 for GPU physx envs)
    start_timeout_s: float = 600  # longest wait for the collectors to build their envs
    reward_actor: RewardActorConfig = field(default_factory=RewardActorConfig)


@dataclass
class PPORunConfig:
    """Everything :func:`~torchrl_reward.ppo.train_ppo` reads (``configs/ppo.yaml``)."""

    seed: int = 1
    device: str = "auto"  # policy/loss device: auto | cpu | cuda
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOHyperparams = field(default_factory=PPOHyperparams)
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(exp_name="ppo_PickCube-v1"))
    collect: CollectConfig = field(default_factory=CollectConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)


def make_ppo_config(cfg: PPORunConfig | Mapping[str, Any] | DictConfig) -> PPORunConfig:
    """Merge ``cfg`` (a composed ``ppo`` config, a mapping or a :class:`PPORunConfig`) onto the
    typed defaults, interpolations resolved; unknown keys or bad types raise, naming the key."""
    merged = OmegaConf.merge(OmegaConf.structured(PPORunConfig), cfg)
    return OmegaConf.to_object(merged)
