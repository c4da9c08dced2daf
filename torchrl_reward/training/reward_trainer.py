"""Training loop of the ResNet success classifier.

cache -> episode split -> model -> AdamW (+ AMP on CUDA) -> resume -> epochs (train on
balanced, augmented batches with gradient accumulation; validate; best/last checkpoints; early
stopping) -> threshold at the target FPR -> reports. The last checkpoint holds the optimiser
and the history, so a killed run continues where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchrl.record.loggers import Logger, get_logger
from tqdm import tqdm

from torchrl_reward.hydra_configs import REPO_ROOT
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.models.resnet import and_logit, split_views, tile_views
from torchrl_reward.training.cache import FLAG_KEYS, FrameCache, build_frame_cache
from torchrl_reward.training.config import TrainConfig, make_config
from torchrl_reward.training.dataset import (
    MIN_EPISODES_PER_OUTCOME,
    FrameAugment,
    FrameBatches,
    balanced_indices,
    frame_labels,
    frames_of,
    proprio_inputs,
    recorded_views,
    split_episodes,
)
from torchrl_reward.training.metrics import (
    binary_metrics,
    roc_curve,
    threshold_at_fpr,
)
from torchrl_reward.training.plots import plot_roc, plot_training_curves, plot_worst
from torchrl_reward.utils import atomic_write, resolve_device, score_chunks

BEST_NAME = "reward_model_best.pt"
LAST_NAME = "reward_model_last.pt"
_POSTFIX_EVERY = 10  # optimiser steps between progress-bar loss updates
VAL_KEYS = ("accuracy", "balanced_accuracy", "precision", "recall", "fpr", "f1", "roc_auc")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        best_path (Path): the best checkpoint (with the chosen threshold).
        last_path (Path): the resumable last checkpoint.
        threshold (float): the decision threshold meeting ``target_fpr`` on validation.
        metrics (dict): validation metrics of the best model at ``threshold`` (frame level, plus
            ``episode_accuracy`` / ``episode_balanced_accuracy``).
        history (list of dict): per-epoch metrics.
        stopped_early (bool): whether early stopping ended the run.
        data (dict): episodes, frames, skipped (unreadable) files, split sizes, fingerprint.
    """

    best_path: Path
    last_path: Path
    threshold: float
    metrics: dict[str, float]
    history: list[dict[str, float]]
    stopped_early: bool
    data: dict[str, Any]


def train_reward_model(
    cfg: TrainConfig | Mapping[str, Any] | DictConfig | None = None,
) -> TrainResult:
    """Train, validate and calibrate a :class:`ResNetRewardModel` on recorded episodes.

    Args:
        cfg: a :class:`TrainConfig`, a mapping or a Hydra ``DictConfig`` (merged onto the
            defaults; see ``configs/train_reward.yaml``).

    Steps: frame cache -> episode split -> model (fresh, or ``init_from``'s weights, validated
    as epoch 0's candidate) -> optimiser -> resume (from the last checkpoint) -> per epoch:
    train, validate, checkpoint the best, early-stopping count, log, checkpoint the last ->
    calibrate the best model's threshold -> plots.

    Writes into ``save_dir``: ``reward_model_best.pt`` (best validation epoch, with the
    threshold meeting ``target_fpr``), ``reward_model_last.pt`` (for resume, with the history),
    the per-epoch metrics through the logger (``logger.backend``) under ``logs/`` and, with
    ``plots``, ``curves.png``, ``roc.png``, ``worst.png``. Both checkpoints record the
    validation episodes (``validation_episodes``: files relative to ``data_path``).
    """
    cfg = make_config(cfg)
    device = resolve_device(cfg.device, strict=True, owner="train_reward")
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = save_dir / BEST_NAME, save_dir / LAST_NAME

    cache = build_frame_cache(cfg.data_path, cfg.cache_dir)
    split = _split_data(cfg, cache)
    model = _make_model(cfg, split)
    learner = _make_learner(cfg, model, device)
    saved = None
    if cfg.resume:
        saved = _resume_state(last_path, model.config(), cache.fingerprint, _split_settings(cfg))
    progress = _restore(learner, saved)
    logger = _make_logger(cfg, save_dir, saved)
    if cfg.init_from is not None and saved is None:
        # Fine-tuning must earn its place: the starting model is epoch 0's candidate for best.
        _, val = _validate(cfg, learner, split)
        progress.best = list(_score(val, cfg.monitor))
        _save(best_path, _checkpoint(cfg, learner.model, split, -1, val=val))
        _log_scalars(logger, {f"val/{k}": val[k] for k in VAL_KEYS}, step=0)
    samples = cfg.samples_per_epoch or split.train_frames.numel()
    steps = max(1, samples // cfg.global_batch_size)

    for epoch in range(progress.epoch, cfg.epochs):
        if progress.stopped_early:
            break
        t0 = time.perf_counter()
        epoch_seed = cfg.seed * 1_000_003 + epoch  # a resumed run draws what an unbroken one would
        torch.manual_seed(epoch_seed)  # the augmentation
        loader = _epoch_loader(cfg, split, epoch_seed, steps, device)
        static_fit = _static_fit(cfg, split, epoch_seed, device)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress)
        loss, accuracy, seen = _train_epoch(learner, loader, bar, static_fit)
        train_time = time.perf_counter() - t0

        val_loss, val = _validate(cfg, learner, split)
        row = {
            "epoch": float(epoch + 1),
            "train/loss": loss,
            "train/accuracy": accuracy,
            "val/loss": val_loss,
            **{f"val/{k}": val[k] for k in VAL_KEYS},
            **_time_metrics(t0, train_time, seen),
        }
        progress.history.append(row)

        score = _score(val, cfg.monitor)
        if _improved(score, progress.best, cfg.min_delta):
            progress.best, progress.bad_epochs = list(score), 0
            _save(best_path, _checkpoint(cfg, learner.model, split, epoch, val=val))
        else:
            progress.bad_epochs += 1
        progress.stopped_early = progress.bad_epochs >= cfg.patience

        _log_scalars(logger, {k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        state = _training_state(learner, progress, epoch, cache.fingerprint, logger)
        _save(last_path, _checkpoint(cfg, learner.model, split, epoch, training_state=state))

    threshold, metrics, probs = _calibrate(cfg, split, device, best_path)
    if cfg.plots:
        _plot_reports(cfg, split, progress.history, probs, metrics)
    _log_scalars(logger, {f"final/{k}": v for k, v in metrics.items()}, step=len(progress.history))
    history, stopped_early = progress.history, progress.stopped_early
    return TrainResult(best_path, last_path, threshold, metrics, history, stopped_early, split.data)


@dataclass
class _Split:
    """The episode split and what training and validation read of it.

    ``inputs`` (``views``, ``proprio``) is what the model reads beside the pixels, in training
    and validation alike; ``data`` is the summary the result and the best checkpoint report.
    """

    cache: FrameCache
    labels: torch.Tensor  # of every cached frame
    # What the loss fits, per cached frame: the labels, or for a factored head
    # [success, placed, static] (float [F, 3]).
    targets: torch.Tensor
    train_frames: torch.Tensor
    val_frames: torch.Tensor
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    inputs: dict[str, Any]
    data: dict[str, Any]
    # Recorded in the checkpoints so that an export checks parity on frames never trained on.
    validation_episodes: list[str]


def _split_data(cfg: DictConfig, cache: FrameCache) -> _Split:
    """Split the episodes into training and validation; label and check both sides."""
    train_eps, val_eps = split_episodes(cache.episode_success, cfg.val_fraction, cfg.seed)
    train_frames, val_frames = frames_of(cache, train_eps), frames_of(cache, val_eps)
    labels = frame_labels(cache, cfg.frame_label)
    views = None if cfg.views is None else list(cfg.views)
    inputs = {"views": views, "proprio": proprio_inputs(cache, list(cfg.model.proprio))}
    train_labels, val_labels = labels[train_frames], labels[val_frames]
    _check_data(cache, labels, train_labels, val_labels)
    targets = labels
    if cfg.model.head == "factored":
        targets = torch.stack([labels, *(cache.extra(key) for key in FLAG_KEYS)], dim=-1)
    data = {
        "episodes": len(cache.files),
        "frames": len(cache),
        "skipped_files": len(cache.skipped),
        "train_episodes": train_eps.numel(),
        "val_episodes": val_eps.numel(),
        "train_frames": train_frames.numel(),
        "val_frames": val_frames.numel(),
        "fingerprint": cache.fingerprint,
    }
    validation_episodes = [cache.files[i] for i in val_eps.tolist()]
    return _Split(
        cache,
        labels,
        targets,
        train_frames,
        val_frames,
        train_labels,
        val_labels,
        inputs,
        data,
        validation_episodes,
    )


def _check_data(
    cache: FrameCache, labels: torch.Tensor, train_labels: torch.Tensor, val_labels: torch.Tensor
) -> None:
    """Both classes in the data, and in each side of the episode split."""
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(cache):
        only = "failure" if n_pos == 0 else "success"
        raise ValueError(
            f"The dataset has only {only} frames ({len(cache)} frames, {len(cache.files)} "
            "episodes); a success classifier needs both success and failure frames."
        )
    n_success_eps = int(cache.episode_success.sum())
    for side, labels in (("training", train_labels), ("validation", val_labels)):
        if labels.numel() == 0 or labels.all() or not labels.any():
            raise ValueError(
                f"The {side} episodes lack success or failure frames ({n_success_eps} success "
                f"and {len(cache.files) - n_success_eps} failure episodes); record at least "
                f"{MIN_EPISODES_PER_OUTCOME} episodes of each outcome."
            )


def _make_model(cfg: DictConfig, split: _Split) -> ResNetRewardModel:
    """A freshly (seeded) initialised model sized for the cached frames and the chosen inputs.

    Proprio inputs are normalised by the training frames' statistics, stored in the checkpoint.
    """
    cache, views = split.cache, split.inputs["views"]
    model_kwargs = OmegaConf.to_container(cfg.model)
    if model_kwargs["image_size"] is None:
        model_kwargs["image_size"] = cache.image_shape[0]
    model_kwargs["num_views"] = recorded_views(cache) if views is None else len(views)
    names = model_kwargs.pop("proprio")
    if names:
        train_proprio = split.inputs["proprio"][split.train_frames]
        model_kwargs["proprio"] = {n: cache.extra(n).shape[-1] for n in names}
        model_kwargs["proprio_mean"] = train_proprio.mean(0).tolist()
        model_kwargs["proprio_std"] = train_proprio.std(0).clamp_min(1e-3).tolist()
    torch.manual_seed(cfg.seed)  # the initial weights
    if cfg.init_from is not None:
        return _initial_model(cfg.init_from, model_kwargs)
    return ResNetRewardModel(**model_kwargs)


def _initial_model(init_from: str, model_kwargs: dict[str, Any]) -> ResNetRewardModel:
    """The ``init_from`` checkpoint's model, checked to be the one ``model.*`` asks for.

    It keeps its own proprio normalisation (its weights were fitted to it). A relative path not
    found from the working directory is looked up in the repository, as PPO's ``init`` paths.
    """
    path = Path(init_from)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    model = ResNetRewardModel.load(path)
    have = model.config()
    keys = ("arch", "stages", "image_size", "num_views", "proprio", "head")
    wrong = {
        k: (have[k], model_kwargs.get(k, {})) for k in keys if have[k] != model_kwargs.get(k, {})
    }
    if wrong:
        details = ", ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(
            f"init_from {str(path)!r} does not fit this run's model ({details}); set model.* to "
            "match it or init_from=null to train from scratch."
        )
    return model


@dataclass
class _Learner:
    """The model on its device, its optimiser, and what one optimiser step needs: the loss
    scaler, the augmentation, micro-batches per step (``accum``) and mixed precision."""

    model: ResNetRewardModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment: FrameAugment | None
    accum: int
    use_amp: bool
    device: torch.device


def _make_learner(cfg: DictConfig, model: ResNetRewardModel, device: torch.device) -> _Learner:
    """``model`` on ``device`` (channels-last) with a fused AdamW, a loss scaler (float16 AMP
    only) and, with ``augment.enabled``, the frame augmentation."""
    model = model.to(device, memory_format=torch.channels_last)
    # fused: one kernel for all parameters (4x faster than the per-tensor loop on CPU too).
    optimizer = torch.optim.AdamW(
        _param_groups(cfg, model), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    augment = None
    if cfg.augment.enabled:
        augment = FrameAugment(**{k: v for k, v in cfg.augment.items() if k != "enabled"})
    accum = cfg.global_batch_size // cfg.micro_batch_size
    return _Learner(model, optimizer, scaler, augment, accum, use_amp, device)


def _param_groups(cfg: DictConfig, model: ResNetRewardModel) -> list[dict[str, Any]]:
    """One group at ``lr``; a factored head's static factor (its proprio encoder and head, no
    image) in a second group at ``static_lr``: at the trunk's rate it lags far behind."""
    if model.head_type != "factored":
        return [{"params": list(model.parameters())}]
    static = [*model.proprio_encoder.parameters(), *model.proprio_head.parameters()]
    ids = {id(param) for param in static}
    rest = [param for param in model.parameters() if id(param) not in ids]
    return [{"params": rest}, {"params": static, "lr": cfg.static_lr}]


def _split_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that decide the validation split and the labels: a resume must share them."""
    return {
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "frame_label": cfg.frame_label,
        "views": None if cfg.views is None else list(cfg.views),
    }


def _resume_state(
    last_path: Path, model_config: dict[str, Any], fingerprint: str, split: dict[str, Any]
) -> dict[str, Any] | None:
    """The training state of ``last_path`` if there, after checking it fits this run."""
    if not last_path.is_file():
        return None
    try:
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
        saved, state = checkpoint["config"], checkpoint["training_state"]
        saved_config = checkpoint["metadata"]["training_config"]
        # Keys added since a checkpoint was written take their default.
        saved_split = {k: saved_config.get(k, getattr(TrainConfig, k)) for k in split}
    except Exception as err:
        raise ValueError(
            f"Cannot resume from {str(last_path)!r}: not a readable training checkpoint "
            f"({type(err).__name__}); delete it or set resume=false."
        ) from None
    if saved_split != split:
        raise ValueError(
            f"Cannot resume {str(last_path)!r}: it was trained with {saved_split}, this run asks "
            f"for {split} (another validation split or labels); use the same values, another "
            "save_dir, or resume=false."
        )
    # Keys older checkpoints lack take the image-only, one-view defaults.
    defaults = (("arch", None), ("image_size", None), ("num_views", 1), ("proprio", {}))
    for key, default in (*defaults, ("head", "joint"), ("stages", 4)):
        if saved.get(key, default) != model_config[key]:
            raise ValueError(
                f"Cannot resume {str(last_path)!r}: it was trained with "
                f"{key}={saved.get(key, default)!r} but "
                f"this run asks for {model_config[key]!r}; use the same setting, another "
                "save_dir, or resume=false."
            )
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"Cannot resume {str(last_path)!r}: the episode files changed since it was saved "
            "(the validation split would differ); use another save_dir or resume=false."
        )
    state["checkpoint"] = checkpoint
    return state


@dataclass
class _Progress:
    """How far a run is: the next epoch, the metrics of those done, the best ``(monitor, F1)``
    so far, the epochs since it, and whether early stopping ended the run."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: list[float] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False


def _restore(learner: _Learner, state: dict[str, Any] | None) -> _Progress:
    """Where the epochs start: from scratch, or where the last checkpoint's ``state`` stopped
    (its weights, optimiser and loss scale loaded into ``learner``)."""
    if state is None:
        return _Progress()
    learner.model.load_state_dict(state["checkpoint"]["state_dict"])
    learner.optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        learner.scaler.load_state_dict(state["scaler"])
    return _Progress(
        state["epoch"] + 1,
        state["history"],
        state["best"],
        state["bad_epochs"],
        state["stopped_early"],
    )


def _make_logger(cfg: DictConfig, save_dir: Path, state: dict[str, Any] | None) -> Logger | None:
    """The per-epoch metrics' logger under ``save_dir/logs`` (none without ``logger.backend``).

    A resumed run continues the saved logger; a new one records the config as hyperparameters.
    """
    logger = get_logger(
        cfg.logger.backend,
        logger_name=str(save_dir / "logs"),
        experiment_name=cfg.logger.exp_name,
        state_dict=None if state is None else state["logger"],
    )
    if logger is not None and state is None:
        logger.log_hparams(OmegaConf.to_container(cfg))
    return logger


def _epoch_loader(
    cfg: DictConfig, split: _Split, seed: int, steps: int, device: torch.device
) -> DataLoader:
    """``steps`` global batches of training frames drawn at ``failure_ratio`` with ``seed``,
    in micro-batches."""
    generator = torch.Generator().manual_seed(seed)
    picks = balanced_indices(
        split.train_labels, steps * cfg.global_batch_size, cfg.failure_ratio, generator
    )
    batches = list(split.train_frames[picks].split(cfg.micro_batch_size))
    return _loader(
        split.cache, batches, cfg.num_workers, device, labels=split.targets, **split.inputs
    )


def _loader(
    cache: FrameCache,
    batches: list[torch.Tensor],
    num_workers: int,
    device: torch.device,
    *,
    labels: torch.Tensor | None = None,
    views: list[int] | None = None,
    proprio: torch.Tensor | None = None,
) -> DataLoader:
    return DataLoader(
        FrameBatches(cache, batches, labels, views, proprio),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


@dataclass
class _StaticFit:
    """A factored head's static factor fitted on ``batch_size`` training frames' proprio inputs
    beside each micro-batch: no image, so it costs next to nothing, and the factor is sharp by
    the time the image half is."""

    proprio: torch.Tensor  # [T, D] of the training frames, on the training device
    static: torch.Tensor  # [T] float: their is_robot_static
    batch_size: int
    generator: torch.Generator

    def loss(self, model: ResNetRewardModel) -> torch.Tensor:
        picks = torch.randint(len(self.static), (self.batch_size,), generator=self.generator)
        picks = picks.to(self.static.device)
        logits = model.proprio_logit(self.proprio[picks])
        return F.binary_cross_entropy_with_logits(logits, self.static[picks])


def _static_fit(
    cfg: DictConfig, split: _Split, seed: int, device: torch.device
) -> _StaticFit | None:
    """The epoch's :class:`_StaticFit` (draws seeded by ``seed``), or None: joint head, or
    ``static_batch_size=0``."""
    if cfg.model.head != "factored" or not cfg.static_batch_size:
        return None
    frames = split.train_frames
    proprio = split.inputs["proprio"][frames].to(device)
    static = split.targets[frames, -1].float().to(device)  # [success, placed, static]
    generator = torch.Generator().manual_seed(seed)
    return _StaticFit(proprio, static, cfg.static_batch_size, generator)


def _train_epoch(
    learner: _Learner, loader: DataLoader, progress: tqdm, static_fit: _StaticFit | None = None
) -> tuple[float, float, int]:
    """One pass over ``loader``, an optimiser step every ``learner.accum`` micro-batches; with
    ``static_fit``, its loss joins each micro-batch's.

    Returns the mean training loss, the accuracy at logit 0 and the number of frames seen.
    """
    model, device, accum = learner.model, learner.device, learner.accum
    model.train()
    # Sums stay on the device: no host sync per micro-batch (only for the progress bar).
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for i, (pixels, proprio, targets) in enumerate(loader):
        pixels = pixels.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if learner.augment is not None:
            pixels = _augment_views(learner.augment, pixels, model.num_views)
        logits, loss = _logits_and_loss(learner, pixels, _to(proprio, device), targets)
        if static_fit is not None:
            loss = loss + static_fit.loss(model)
        labels = targets[:, 0] if targets.dim() == 2 else targets
        learner.scaler.scale(loss / accum).backward()
        loss_sum += loss.detach() * labels.numel()
        correct += ((logits.detach() >= 0) == labels.bool()).sum()
        seen += labels.numel()
        if (i + 1) % accum == 0:
            learner.scaler.step(learner.optimizer)
            learner.scaler.update()
            learner.optimizer.zero_grad(set_to_none=True)
            progress.update()
            if progress.n % _POSTFIX_EVERY == 0:
                progress.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
    progress.close()
    return loss_sum.item() / seen, correct.item() / seen, seen


def _logits_and_loss(
    learner: _Learner, pixels: torch.Tensor, proprio: torch.Tensor | None, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Success logits (float32) and the loss: BCE on the success label and, for a factored
    head (``targets`` ``[B, 3]``), the same on each factor's own label (placed, static)."""
    model = learner.model
    with _autocast(learner.device, learner.use_amp):
        if model.head_type == "factored":
            factors = [logit.float() for logit in model.factor_logits(pixels, proprio)]
        else:
            logits = model(pixels, proprio).float()
    if model.head_type != "factored":
        return logits, F.binary_cross_entropy_with_logits(logits, targets)
    logits = and_logit(*factors)
    loss = sum(
        F.binary_cross_entropy_with_logits(logit, targets[:, i])
        for i, logit in enumerate([logits, *factors])
    )
    return logits, loss


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _augment_views(augment: FrameAugment, pixels: torch.Tensor, num_views: int) -> torch.Tensor:
    """Augment each tiled view on its own (shifts stay inside a view)."""
    return tile_views(augment(split_views(pixels, num_views)), num_views)


def _to(value: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if value is None else value.to(device, non_blocking=True)


def _validate(cfg: DictConfig, learner: _Learner, split: _Split) -> tuple[float, dict[str, float]]:
    """The validation loss and metrics at probability 0.5 of the model as it trains (with the
    training's mixed precision)."""
    probs = predict_frames(
        learner.model,
        split.cache,
        split.val_frames,
        cfg.eval_batch_size,
        learner.device,
        learner.use_amp,
        num_workers=cfg.num_workers,
        **split.inputs,
    )
    labels = split.val_labels
    loss = F.binary_cross_entropy(probs.double().clamp(1e-7, 1 - 1e-7), labels.double()).item()
    return loss, binary_metrics(probs, labels, 0.5)


@torch.no_grad()
def predict_frames(
    model: ResNetRewardModel,
    cache: FrameCache,
    frames: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    *,
    num_workers: int = 0,
    views: list[int] | None = None,
    proprio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Probabilities (float32, CPU) of the cached ``frames``, in their given order.

    ``views`` and ``proprio`` (``[F, D]``, all cached frames) are what the model reads beside
    the pixels, as in training (see :class:`~torchrl_reward.training.FrameBatches`).
    """
    model.eval()

    def score(pixels: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        with _autocast(device, amp):
            logits = model(pixels.to(device, non_blocking=True), _to(values, device))
        return torch.sigmoid(logits.float())

    # Read in frame order (cache locality); scores stay on the device until the end.
    order = frames.argsort()
    batches = list(frames[order].split(batch_size))
    loader = _loader(cache, batches, num_workers, device, views=views, proprio=proprio)
    scored = score_chunks(score, ((p, v) for p, v, _ in loader), frames.numel())
    probs = torch.empty(frames.numel(), dtype=torch.float32)
    probs[order] = scored.cpu()
    return probs


def _score(metrics: Mapping[str, float], monitor: str) -> tuple[float, float]:
    return (metrics[monitor], metrics["f1"])


def _improved(score: tuple[float, float], best: list[float] | None, min_delta: float) -> bool:
    """Better by more than ``min_delta`` on the monitor, or equal on it (e.g. both AUC 1.0)
    and better on F1."""
    if best is None:
        return True
    return score[0] > best[0] + min_delta or (score[0] == best[0] and score[1] > best[1])


def _checkpoint(
    cfg: DictConfig,
    model: ResNetRewardModel,
    split: _Split,
    epoch: int,
    *,
    val: dict[str, float] | None = None,
    training_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Epoch ``epoch``'s checkpoint: the weights, the training config and the validation
    episodes. The best one adds its validation metrics ``val`` and the data summary; the last
    one the ``training_state`` a resume reads (see :func:`_training_state`)."""
    metadata: dict[str, Any] = {"training_config": OmegaConf.to_container(cfg), "epoch": epoch + 1}
    if val is not None:
        metadata.update(val_metrics=val, data=split.data)
    checkpoint = model.checkpoint(**metadata, validation_episodes=split.validation_episodes)
    if training_state is not None:
        checkpoint["training_state"] = training_state
    return checkpoint


def _training_state(
    learner: _Learner, progress: _Progress, epoch: int, fingerprint: str, logger: Logger | None
) -> dict[str, Any]:
    """What a resume needs beside the weights: the optimiser and loss scale, the progress after
    ``epoch``, the episode files' ``fingerprint`` (the split must not change) and the logger."""
    return {
        "epoch": epoch,
        "optimizer": learner.optimizer.state_dict(),
        "scaler": learner.scaler.state_dict(),
        "history": progress.history,
        "best": progress.best,
        "bad_epochs": progress.bad_epochs,
        "stopped_early": progress.stopped_early,
        "fingerprint": fingerprint,
        "logger": logger.state_dict() if logger is not None else None,
    }


def _save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` atomically: a run killed mid-write keeps the previous file."""
    with atomic_write(path) as f:
        torch.save(checkpoint, f)


def _log_scalars(logger: Logger | None, metrics: dict[str, float], step: int) -> None:
    """Log every metric at ``step`` (the epoch); no logger (``logger.backend=""``): none."""
    if logger is not None:
        for key, value in metrics.items():
            logger.log_scalar(key, value, step=step)


def _time_metrics(start: float, train_s: float, frames: int) -> dict[str, float]:
    """The epoch's training seconds, its seconds since ``start`` (validation included) and its
    training speed in frames per second."""
    return {
        "time/train": train_s,
        "time/epoch": time.perf_counter() - start,
        "time/train_fps": frames / train_s,
    }


def _calibrate(
    cfg: DictConfig, split: _Split, device: torch.device, best_path: Path
) -> tuple[float, dict[str, float], torch.Tensor]:
    """Threshold the best model at ``target_fpr`` on validation, scored as ``load`` returns it
    (fp32 in the default memory format: the same numbers a user of the saved model gets).

    Saves the threshold and its metrics into ``best_path``; returns them and the validation
    probabilities.
    """
    model = ResNetRewardModel.load(best_path, map_location=device)
    probs = predict_frames(
        model,
        split.cache,
        split.val_frames,
        cfg.eval_batch_size,
        device,
        num_workers=cfg.num_workers,
        **split.inputs,
    )
    threshold, metrics = metrics_at_fpr(
        probs, split.val_labels, cfg.target_fpr, split.cache, split.val_frames
    )
    metrics["threshold"] = threshold
    model.threshold = threshold
    model.save(
        best_path,
        target_fpr=cfg.target_fpr,
        val_metrics_at_threshold=metrics,
    )
    return threshold, metrics, probs


def metrics_at_fpr(
    probs: torch.Tensor,
    labels: torch.Tensor,
    target_fpr: float,
    cache: FrameCache,
    frames: torch.Tensor,
) -> tuple[float, dict[str, float]]:
    """The threshold for ``target_fpr`` on ``frames`` scored ``probs``, and the frame and episode
    metrics at it (how a trained model is calibrated)."""
    threshold = threshold_at_fpr(probs, labels, target_fpr)
    metrics = binary_metrics(probs, labels, threshold)
    metrics.update(episode_metrics(probs, cache, frames, threshold))
    return threshold, metrics


def episode_metrics(
    probs: torch.Tensor, cache: FrameCache, frames: torch.Tensor, threshold: float
) -> dict[str, float]:
    """Accuracy and balanced accuracy of the episodes of ``frames`` scored ``probs`` (any scores):
    an episode is called a success when any of its frames scores at or above ``threshold``."""
    episodes, inverse = torch.unique(cache.episodes[frames], return_inverse=True)
    top = torch.full((episodes.numel(),), -torch.inf).scatter_reduce(0, inverse, probs, "amax")
    metrics = binary_metrics(top, cache.episode_success[episodes], threshold)
    return {
        "episode_accuracy": metrics["accuracy"],
        "episode_balanced_accuracy": metrics["balanced_accuracy"],
    }


def _plot_reports(
    cfg: DictConfig,
    split: _Split,
    history: list[dict[str, float]],
    probs: torch.Tensor,
    metrics: dict[str, float],
) -> None:
    """``curves.png`` (per-epoch metrics), ``roc.png`` (validation ROC with the chosen point)
    and ``worst.png`` (the most wrongly scored validation frames) in ``save_dir``."""
    save_dir = Path(cfg.save_dir)
    plot_training_curves(history, save_dir / "curves.png")
    fpr, tpr, _ = roc_curve(probs, split.val_labels)
    plot_roc(
        fpr,
        tpr,
        metrics["roc_auc"],
        (metrics["fpr"], metrics["recall"]),
        cfg.target_fpr,
        save_dir / "roc.png",
    )
    cache, frames, labels, k = split.cache, split.val_frames, split.val_labels, cfg.num_worst
    plot_worst(
        _worst(cache, frames, probs, ~labels, descending=True, k=k),
        _worst(cache, frames, probs, labels, descending=False, k=k),
        save_dir / "worst.png",
    )


def _worst(
    cache: FrameCache,
    frames: torch.Tensor,
    probs: torch.Tensor,
    mask: torch.Tensor,
    *,
    descending: bool,
    k: int,
) -> tuple[torch.Tensor, list[str]]:
    """The ``k`` frames within ``mask`` scored most wrongly, with "episode:step p=.." titles."""
    candidates = mask.nonzero().squeeze(-1)
    order = probs[candidates].argsort(descending=descending)[:k]
    picked = candidates[order]
    idx = frames[picked]
    titles = [
        f"{Path(cache.files[int(cache.episodes[i])]).stem}:{int(cache.steps[i])}\n"
        f"p={float(probs[j]):.3f}"
        for i, j in zip(idx.tolist(), picked.tolist(), strict=True)
    ]
    return cache.pixels[idx], titles
