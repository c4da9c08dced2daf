"""Training loop of the ResNet success classifier.

cache -> episode split -> model -> AdamW (+ AMP on CUDA) -> epochs of balanced, augmented
batches with gradient accumulation -> validation metrics -> best/last checkpoints -> early
stopping -> threshold at the target FPR -> reports. The last checkpoint holds the optimiser
and the history, so a killed run continues where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchrl.record.loggers import get_logger
from tqdm import tqdm

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.models.resnet import split_views, tile_views
from torchrl_reward.training.cache import FrameCache, build_frame_cache
from torchrl_reward.training.config import TrainConfig, make_config
from torchrl_reward.training.dataset import (
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


def _loader(
    cache: FrameCache,
    batches: list[torch.Tensor],
    num_workers: int,
    device: torch.device,
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


def _train_epoch(
    model: ResNetRewardModel,
    loader: DataLoader,
    augment: FrameAugment | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    accum: int,
    use_amp: bool,
    device: torch.device,
    progress: tqdm,
) -> tuple[float, float, int]:
    """One pass over ``loader``, an optimiser step every ``accum`` micro-batches.

    Returns the mean training loss, the accuracy at logit 0 and the number of frames seen.
    """
    model.train()
    # Sums stay on the device: no host sync per micro-batch (only for the progress bar).
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for i, (pixels, proprio, labels) in enumerate(loader):
        pixels = pixels.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if augment is not None:
            pixels = _augment_views(augment, pixels, model.num_views)
        with _autocast(device, use_amp):
            logits = model(pixels, _to(proprio, device))
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        scaler.scale(loss / accum).backward()
        loss_sum += loss.detach() * labels.numel()
        correct += ((logits.detach() >= 0) == labels.bool()).sum()
        seen += labels.numel()
        if (i + 1) % accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.update()
            if progress.n % _POSTFIX_EVERY == 0:
                progress.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
    progress.close()
    return loss_sum.item() / seen, correct.item() / seen, seen


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
    loader = _loader(cache, batches, num_workers, device, None, views, proprio)
    scored = score_chunks(score, ((p, v) for p, v, _ in loader), frames.numel())
    probs = torch.empty(frames.numel(), dtype=torch.float32)
    probs[order] = scored.cpu()
    return probs


def _episode_metrics(
    probs: torch.Tensor, cache: FrameCache, frames: torch.Tensor, threshold: float
) -> dict[str, float]:
    """An episode is called a success when any of its frames scores at or above ``threshold``."""
    episodes, inverse = torch.unique(cache.episodes[frames], return_inverse=True)
    top = torch.full((episodes.numel(),), -1.0).scatter_reduce(0, inverse, probs, "amax")
    metrics = binary_metrics(top, cache.episode_success[episodes], threshold)
    return {
        "episode_accuracy": metrics["accuracy"],
        "episode_balanced_accuracy": metrics["balanced_accuracy"],
    }


def _score(metrics: Mapping[str, float], monitor: str) -> tuple[float, float]:
    return (metrics[monitor], metrics["f1"])


def _improved(score: tuple[float, float], best: list[float] | None, min_delta: float) -> bool:
    """Better by more than ``min_delta`` on the monitor, or equal on it (e.g. both AUC 1.0)
    and better on F1."""
    if best is None:
        return True
    return score[0] > best[0] + min_delta or (score[0] == best[0] and score[1] > best[1])


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
                f"and {len(cache.files) - n_success_eps} failure episodes); record at least 2 "
                "episodes of each outcome."
            )


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
    for key, default in (("arch", None), ("image_size", None), ("num_views", 1), ("proprio", {})):
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


def train_reward_model(
    cfg: TrainConfig | Mapping[str, Any] | DictConfig | None = None,
) -> TrainResult:
    """Train, validate and calibrate a :class:`ResNetRewardModel` on recorded episodes.

    Args:
        cfg: a :class:`TrainConfig`, a mapping or a Hydra ``DictConfig`` (merged onto the
            defaults; see ``configs/train_reward.yaml``).

    Writes into ``save_dir``: ``reward_model_best.pt`` (best validation epoch, with the
    threshold meeting ``target_fpr``), ``reward_model_last.pt`` (for resume, with the history),
    the per-epoch metrics through the logger (``logger.backend``) under ``logs/`` and, with
    ``plots``, ``curves.png``, ``roc.png``, ``worst.png``.
    """
    cfg = make_config(cfg)
    device = resolve_device(cfg.device, strict=True, owner="train_reward")
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = save_dir / BEST_NAME, save_dir / LAST_NAME

    cache = build_frame_cache(cfg.data_path, cfg.cache_dir)
    train_eps, val_eps = split_episodes(cache.episode_success, cfg.val_fraction, cfg.seed)
    train_frames, val_frames = frames_of(cache, train_eps), frames_of(cache, val_eps)
    labels = frame_labels(cache, cfg.frame_label)
    views = None if cfg.views is None else list(cfg.views)
    # What the model reads beside the pixels, in training and validation alike.
    inputs = {"views": views, "proprio": proprio_inputs(cache, list(cfg.model.proprio))}
    train_labels, val_labels = labels[train_frames], labels[val_frames]
    _check_data(cache, labels, train_labels, val_labels)

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
    model_kwargs = OmegaConf.to_container(cfg.model)
    if model_kwargs["image_size"] is None:
        model_kwargs["image_size"] = cache.image_shape[0]
    model_kwargs["num_views"] = recorded_views(cache) if views is None else len(views)
    names = model_kwargs.pop("proprio")
    if names:
        # Normalised by the training frames' statistics, stored in the checkpoint.
        train_proprio = inputs["proprio"][train_frames]
        model_kwargs["proprio"] = {n: cache.extra(n).shape[-1] for n in names}
        model_kwargs["proprio_mean"] = train_proprio.mean(0).tolist()
        model_kwargs["proprio_std"] = train_proprio.std(0).clamp_min(1e-3).tolist()
    torch.manual_seed(cfg.seed)  # the initial weights
    model = ResNetRewardModel(**model_kwargs)
    split = {
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "frame_label": cfg.frame_label,
        "views": views,
    }
    state = (
        _resume_state(last_path, model.config(), cache.fingerprint, split) if cfg.resume else None
    )
    if state is not None:
        model.load_state_dict(state["checkpoint"]["state_dict"])
    model = model.to(device, memory_format=torch.channels_last)

    # fused: one kernel for all parameters (4x faster than the per-tensor loop on CPU too).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    augment = None
    if cfg.augment.enabled:
        augment = FrameAugment(**{k: v for k, v in cfg.augment.items() if k != "enabled"})
    accum = cfg.global_batch_size // cfg.micro_batch_size
    samples = cfg.samples_per_epoch or train_frames.numel()
    steps = max(1, samples // cfg.global_batch_size)
    train_config = OmegaConf.to_container(cfg)

    history: list[dict[str, float]] = []
    best: list[float] | None = None
    start_epoch, bad_epochs, stopped_early = 0, 0, False
    logger_state = None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        history, best = state["history"], state["best"]
        start_epoch, bad_epochs = state["epoch"] + 1, state["bad_epochs"]
        stopped_early, logger_state = state["stopped_early"], state["logger"]
    logger = get_logger(
        cfg.logger.backend,
        logger_name=str(save_dir / "logs"),
        experiment_name=cfg.logger.exp_name,
        state_dict=logger_state,
    )
    if logger is not None and state is None:
        logger.log_hparams(train_config)

    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # augmentation: resume-deterministic
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        picks = balanced_indices(
            train_labels, steps * cfg.global_batch_size, cfg.failure_ratio, generator
        )
        batches = list(train_frames[picks].split(cfg.micro_batch_size))
        loader = _loader(cache, batches, cfg.num_workers, device, labels, **inputs)
        progress = tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress
        )
        loss, accuracy, seen = _train_epoch(
            model, loader, augment, optimizer, scaler, accum, use_amp, device, progress
        )
        train_time = time.perf_counter() - t0

        val_probs = predict_frames(
            model,
            cache,
            val_frames,
            cfg.eval_batch_size,
            device,
            use_amp,
            num_workers=cfg.num_workers,
            **inputs,
        )
        val_loss = F.binary_cross_entropy(
            val_probs.double().clamp(1e-7, 1 - 1e-7), val_labels.double()
        ).item()
        val = binary_metrics(val_probs, val_labels, 0.5)
        row = {
            "epoch": float(epoch + 1),
            "train/loss": loss,
            "train/accuracy": accuracy,
            "val/loss": val_loss,
            **{f"val/{k}": val[k] for k in VAL_KEYS},
            "time/train": train_time,
            "time/epoch": time.perf_counter() - t0,
            "time/train_fps": seen / train_time,
        }
        history.append(row)

        score = _score(val, cfg.monitor)
        if _improved(score, best, cfg.min_delta):
            best, bad_epochs = list(score), 0
            model.save(
                best_path,
                training_config=train_config,
                epoch=epoch + 1,
                val_metrics=val,
                data=data,
            )
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= cfg.patience

        if logger is not None:
            for key, value in row.items():
                if key != "epoch":
                    logger.log_scalar(key, value, step=epoch + 1)
        checkpoint = model.checkpoint(training_config=train_config, epoch=epoch + 1)
        checkpoint["training_state"] = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
            "best": best,
            "bad_epochs": bad_epochs,
            "stopped_early": stopped_early,
            "fingerprint": cache.fingerprint,
            "logger": logger.state_dict() if logger is not None else None,
        }
        with atomic_write(last_path) as f:
            torch.save(checkpoint, f)

    threshold, metrics = _finalize(
        cfg, cache, val_frames, val_labels, inputs, device, best_path, history
    )
    if logger is not None:
        for key, value in metrics.items():
            logger.log_scalar(f"final/{key}", value, step=len(history))
    return TrainResult(best_path, last_path, threshold, metrics, history, stopped_early, data)


def _finalize(
    cfg: DictConfig,
    cache: FrameCache,
    val_frames: torch.Tensor,
    val_labels: torch.Tensor,
    inputs: dict[str, Any],
    device: torch.device,
    best_path: Path,
    history: list[dict[str, float]],
) -> tuple[float, dict[str, float]]:
    """Threshold the best model at ``target_fpr`` on validation, scored as ``load`` returns it.

    fp32 in the default memory format: the same numbers a user of the saved model gets.
    """
    model = ResNetRewardModel.load(best_path, map_location=device)
    probs = predict_frames(
        model,
        cache,
        val_frames,
        cfg.eval_batch_size,
        device,
        num_workers=cfg.num_workers,
        **inputs,
    )
    threshold = threshold_at_fpr(probs, val_labels, cfg.target_fpr)
    metrics = binary_metrics(probs, val_labels, threshold)
    metrics.update(_episode_metrics(probs, cache, val_frames, threshold))
    metrics["threshold"] = threshold
    model.threshold = threshold
    model.save(
        best_path,
        target_fpr=cfg.target_fpr,
        val_metrics_at_threshold=metrics,
    )

    if cfg.plots:
        save_dir = Path(cfg.save_dir)
        plot_training_curves(history, save_dir / "curves.png")
        fpr, tpr, _ = roc_curve(probs, val_labels)
        plot_roc(
            fpr,
            tpr,
            metrics["roc_auc"],
            (metrics["fpr"], metrics["recall"]),
            cfg.target_fpr,
            save_dir / "roc.png",
        )
        plot_worst(
            _worst(cache, val_frames, probs, ~val_labels, descending=True, k=cfg.num_worst),
            _worst(cache, val_frames, probs, val_labels, descending=False, k=cfg.num_worst),
            save_dir / "worst.png",
        )
    return threshold, metrics


def _worst(
    cache: FrameCache,
    frames: torch.Tensor,
    probs: torch.Tensor,
    mask: torch.Tensor,
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
