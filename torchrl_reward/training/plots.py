"""PNG reports of a training run: curves per epoch, the validation ROC, the worst mistakes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from torchrl_reward.viz import save_figure


def plot_training_curves(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """Loss, accuracy/F1, ROC-AUC and recall/FPR against the epoch."""
    epochs = [row["epoch"] for row in history]
    panels = (
        ("loss", ("train/loss", "val/loss")),
        ("accuracy / F1", ("train/accuracy", "val/accuracy", "val/f1")),
        ("ROC-AUC", ("val/roc_auc",)),
        ("recall / FPR", ("val/recall", "val/fpr")),
    )
    fig = Figure(figsize=(4 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(epochs, [row[key] for row in history], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_roc(
    fpr: torch.Tensor,
    tpr: torch.Tensor,
    auc: float,
    operating_point: tuple[float, float],
    target_fpr: float,
    path: str | os.PathLike,
) -> None:
    """The validation ROC curve (log FPR axis) with the chosen operating point."""
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.plot(fpr.numpy(), tpr.numpy(), label=f"ROC (AUC {auc:.4f})")
    op_fpr, op_tpr = operating_point
    ax.scatter(
        [op_fpr],
        [op_tpr],
        color="red",
        zorder=3,
        label=f"threshold: FPR {op_fpr:.4f}, recall {op_tpr:.3f}",
    )
    ax.axvline(target_fpr, color="gray", ls="--", lw=0.8, label=f"target FPR {target_fpr}")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (recall)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_worst(
    false_positives: tuple[torch.Tensor, list[str]],
    false_negatives: tuple[torch.Tensor, list[str]],
    path: str | os.PathLike,
) -> None:
    """Two rows of frames: the highest-scored failures and the lowest-scored successes."""
    rows = (("worst false positives", false_positives), ("worst false negatives", false_negatives))
    cols = max(1, *(images.shape[0] for _, (images, _) in rows))
    fig = Figure(figsize=(1.8 * cols, 4.2))
    axes = fig.subplots(2, cols, squeeze=False)
    for r, (name, (images, titles)) in enumerate(rows):
        axes[r, 0].set_ylabel(name, fontsize=8)
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < images.shape[0]:
                ax.imshow(images[c].numpy())
                ax.set_title(titles[c], fontsize=6)
            else:
                ax.axis("off")
    save_figure(fig, path)
