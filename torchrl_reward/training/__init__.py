"""Training of the learned success reward: frame cache, sampling, metrics, trainer."""

from torchrl_reward.training.cache import FrameCache, build_frame_cache
from torchrl_reward.training.calibrate import calibrate_threshold
from torchrl_reward.training.config import TrainConfig, make_config
from torchrl_reward.training.dataset import (
    MIN_EPISODES_PER_OUTCOME,
    FrameAugment,
    FrameBatches,
    balanced_indices,
    frame_labels,
    frames_of,
    split_episodes,
)
from torchrl_reward.training.metrics import binary_metrics, roc_auc, roc_curve, threshold_at_fpr
from torchrl_reward.training.reward_trainer import (
    TrainResult,
    episode_metrics,
    metrics_at_fpr,
    predict_frames,
    train_reward_model,
)

__all__ = [
    "MIN_EPISODES_PER_OUTCOME",
    "FrameAugment",
    "FrameBatches",
    "FrameCache",
    "TrainConfig",
    "TrainResult",
    "balanced_indices",
    "binary_metrics",
    "build_frame_cache",
    "calibrate_threshold",
    "episode_metrics",
    "frame_labels",
    "frames_of",
    "make_config",
    "metrics_at_fpr",
    "predict_frames",
    "roc_auc",
    "roc_curve",
    "split_episodes",
    "threshold_at_fpr",
    "train_reward_model",
]
