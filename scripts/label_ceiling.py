"""What a perfect single-frame reader could score: a trained model's labels ranked by the truth.

    python scripts/label_ceiling.py save_dir=outputs/reward_model

On the model's own validation frames and labels (its checkpoint's data_path, split and
frame_label), frames are scored by privileged PickCube state, for measurement only: the true
cube-to-goal distance (all an image can show), and that distance with the robot's static flag
(what an image plus joint velocities can show). A ``head=factored`` model also has each of its
two factors scored against its own flag (placed, static), and is scored again with each factor
replaced by its true flag: which half limits it, frames and episodes. Writes
``label_ceiling.json`` beside the model.
"""

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import (
    FrameCache,
    build_frame_cache,
    frame_labels,
    frames_of,
    metrics_at_fpr,
    roc_auc,
    split_episodes,
)
from torchrl_reward.training.breakdown import predict_factors
from torchrl_reward.training.cache import DISTANCE_KEY


def _at_fpr(
    scores: torch.Tensor,
    labels: torch.Tensor,
    target_fpr: float,
    cache: FrameCache,
    frames: torch.Tensor,
) -> dict[str, float]:
    """Frame metrics of ``scores`` at the threshold for ``target_fpr``, and its episodes' at it."""
    _, metrics = metrics_at_fpr(scores, labels, target_fpr, cache, frames)
    return {k: metrics[k] for k in ("roc_auc", "recall", "fpr", "episode_balanced_accuracy")}


def _factors(
    model: ResNetRewardModel,
    cache: FrameCache,
    frames: torch.Tensor,
    views: list[int] | None,
    labels: torch.Tensor,
    target_fpr: float,
) -> dict[str, Any]:
    """A factored model's two factors, each ROC-AUC against its own flag on ``frames``, and the
    model with one factor replaced by its true flag (``true_static``: the image half alone)."""
    placed, static = predict_factors(model, cache, frames, views)
    placed_flag = cache.extra("is_obj_placed")[frames]
    static_flag = cache.extra("is_robot_static")[frames]
    return {
        "placed_roc_auc": roc_auc(placed, placed_flag),
        "static_roc_auc": roc_auc(static, static_flag),
        "true_static": _at_fpr(placed * static_flag, labels, target_fpr, cache, frames),
        "true_placed": _at_fpr(placed_flag * static, labels, target_fpr, cache, frames),
    }


@hydra.main(config_path="../configs", config_name="label_ceiling", version_base=None)
def main(cfg: DictConfig) -> None:
    save_dir = Path(cfg.save_dir)
    model = ResNetRewardModel.load(save_dir / "reward_model_best.pt")
    trained = model.checkpoint_metadata["training_config"]
    cache = build_frame_cache(trained["data_path"], trained["cache_dir"])
    _, val_eps = split_episodes(cache.episode_success, trained["val_fraction"], trained["seed"])
    frames = frames_of(cache, val_eps)
    labels = frame_labels(cache, trained["frame_label"])[frames]
    distance = cache.extra(DISTANCE_KEY)[frames]
    static = cache.extra("is_robot_static")[frames].float()
    target_fpr = model.checkpoint_metadata.get("target_fpr", 0.01)
    result = {
        "frame_label": trained["frame_label"],
        "val_frames": frames.numel(),
        "val_positives": int(labels.sum()),
        "distance": _at_fpr(-distance, labels, target_fpr, cache, frames),
        "distance_and_static": _at_fpr(static - distance, labels, target_fpr, cache, frames),
        "model": {
            k: model.checkpoint_metadata["val_metrics_at_threshold"][k]
            for k in ("roc_auc", "recall", "fpr", "episode_balanced_accuracy")
        },
    }
    if model.head_type == "factored":
        result["model"].update(_factors(model, cache, frames, trained["views"], labels, target_fpr))
    (save_dir / "label_ceiling.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
