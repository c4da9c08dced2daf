"""Typed configuration of reward-model training (``configs/train_reward.yaml`` mirrors it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from torchrl_reward.data.episode_io import PROPRIO_KEYS
from torchrl_reward.models.resnet import HEADS

MONITORS = ("roc_auc", "f1", "balanced_accuracy", "accuracy")
FRAME_LABELS = ("success", "success_once", "placed")
PROPRIO_INPUTS = PROPRIO_KEYS  # robot state only: object and goal positions are privileged


@dataclass
class ModelConfig:
    """Arguments of :class:`~torchrl_reward.models.ResNetRewardModel`."""

    arch: str = "resnet18"
    stages: int = 4  # residual stages kept: resnet18 with 2 is the kept 2.9 MB model
    image_size: int | None = None  # None: the recorded frames' size
    pretrained_weights: str | None = None  # a state dict path or "imagenet"; never downloaded
    dropout: float = 0.1
    hidden_dim: int = 256
    proprio: list[str] = field(default_factory=list)  # robot-state inputs: qpos, qvel
    head: str = "joint"  # joint | factored: P(placed | image) * P(static | proprio)


@dataclass
class AugmentConfig:
    """Arguments of :class:`~torchrl_reward.training.FrameAugment` (training frames only)."""

    enabled: bool = True
    shift: int = 4
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


@dataclass
class LoggerConfig:
    """TorchRL logger (``torchrl.record.loggers.get_logger``) under ``<save_dir>/logs``."""

    backend: str = "csv"
    exp_name: str = "reward_model"


@dataclass
class TrainConfig:
    """Everything :func:`~torchrl_reward.training.train_reward_model` reads."""

    data_path: str = "data/pickcube"
    save_dir: str = "outputs/reward_model"
    cache_dir: str | None = None  # None: <data_path>/.cache
    epochs: int = 100
    micro_batch_size: int = 64
    global_batch_size: int = 64  # a multiple of micro_batch_size: gradient accumulation
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-4
    samples_per_epoch: int | None = None  # None: the number of training frames
    val_fraction: float = 0.2
    failure_ratio: float | None = 2.0  # failure frames drawn per success frame; None: natural
    # head=factored: the static factor (proprio only) learns at static_lr, on static_batch_size
    # more training frames beside each micro-batch (no image: cheap; 0: the micro-batch only)
    static_lr: float = 3.0e-3
    static_batch_size: int = 256
    # a reward-model checkpoint whose weights start training (fine-tuning a model trained on
    # more episodes); it must fit model.*: None trains from scratch
    init_from: str | None = None
    frame_label: str = "success"  # success | success_once (from the first on) | placed
    views: list[int] | None = None  # which tiled views of the recorded frames; None: all
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + scaling)
    num_workers: int = 0
    eval_batch_size: int = 256
    monitor: str = "roc_auc"  # validation metric that picks the best epoch; F1 breaks ties
    patience: int = 10  # epochs without improvement before stopping
    min_delta: float = 0.0
    target_fpr: float = 0.01
    resume: bool = True  # continue from <save_dir>/reward_model_last.pt if there
    progress: bool = True
    plots: bool = True
    num_worst: int = 8
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def make_config(
    cfg: TrainConfig | Mapping[str, Any] | DictConfig | None = None, **overrides: Any
) -> DictConfig:
    """Merge ``cfg`` and ``overrides`` onto the typed defaults; unknown keys or bad types raise."""
    merged = OmegaConf.merge(
        OmegaConf.structured(TrainConfig),
        cfg if cfg is not None else {},
        overrides,
    )
    _validate(merged)
    return merged


def _validate(cfg: DictConfig) -> None:
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}.")
    if cfg.micro_batch_size < 1 or cfg.global_batch_size % cfg.micro_batch_size:
        raise ValueError(
            "global_batch_size must be a positive multiple of micro_batch_size, got "
            f"global_batch_size={cfg.global_batch_size}, micro_batch_size={cfg.micro_batch_size}."
        )
    if cfg.lr <= 0 or cfg.static_lr <= 0:
        raise ValueError(f"lr and static_lr must be > 0, got {cfg.lr} and {cfg.static_lr}.")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}.")
    if not 0.0 <= cfg.target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {cfg.target_fpr}.")
    if cfg.frame_label not in FRAME_LABELS:
        raise ValueError(f"frame_label must be one of {FRAME_LABELS}, got {cfg.frame_label!r}.")
    unknown = [name for name in cfg.model.proprio if name not in PROPRIO_INPUTS]
    if unknown:
        raise ValueError(
            f"model.proprio takes robot-state inputs {PROPRIO_INPUTS}, got {unknown} (object and "
            "goal positions are privileged and never model inputs)."
        )
    if cfg.static_batch_size < 0:
        raise ValueError(f"static_batch_size must be >= 0, got {cfg.static_batch_size}.")
    if cfg.model.head not in HEADS:
        raise ValueError(f"model.head must be one of {HEADS}, got {cfg.model.head!r}.")
    if cfg.model.head == "factored" and (not cfg.model.proprio or cfg.frame_label != "success"):
        raise ValueError(
            "model.head=factored fits success = placed AND static, the static half from proprio "
            "inputs: it needs frame_label=success and model.proprio (e.g. [qvel]), got "
            f"frame_label={cfg.frame_label!r} and model.proprio={list(cfg.model.proprio)}."
        )
    if cfg.views is not None and (
        not len(cfg.views) or min(cfg.views) < 0 or len(set(cfg.views)) != len(cfg.views)
    ):
        raise ValueError(f"views must list distinct view indices >= 0, got {list(cfg.views)}.")
    if cfg.monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {cfg.monitor!r}.")
