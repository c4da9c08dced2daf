"""Set a reward model's decision threshold for a target false-positive rate on a recording.

Training calibrates the threshold on its own validation split; a policy far from the one that
recorded it (a weak start) meets the model with another share of positives, and the same FPR
then buys another precision (BENCHMARKS.md, "What precision a weak start asks of the
classifier"). Calibrating on that policy's own recorded episodes sets the operating point where
the reward is used. The simulator's success labels are read only to calibrate.
"""

from __future__ import annotations

import torch

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training.cache import FrameCache
from torchrl_reward.training.dataset import proprio_inputs
from torchrl_reward.training.reward_trainer import metrics_at_fpr, predict_frames


def calibrate_threshold(
    model: ResNetRewardModel,
    cache: FrameCache,
    target_fpr: float,
    *,
    views: list[int] | None = None,
    chunk_size: int = 256,
) -> tuple[float, dict[str, float]]:
    """The threshold at which ``model`` calls at most ``target_fpr`` of the cached failure
    frames a success, and the frame and episode metrics there (every frame, fp32, on CPU).

    Args:
        model (ResNetRewardModel): the reward model, scored as loaded (eval mode).
        cache (FrameCache): the recording (:func:`build_frame_cache`), with both outcomes.
        target_fpr (float): the highest frame false-positive rate allowed, in [0, 1).
        views (list of int, optional): the recorded views the model reads. Defaults to all.
        chunk_size (int, optional): frames per forward pass. Defaults to ``256``.
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}.")
    positives = int(cache.labels.sum())
    if positives in (0, len(cache)):
        raise ValueError(
            f"Calibrating needs success and failure frames; the recording has {positives} "
            f"success frames of {len(cache)}."
        )
    frames = torch.arange(len(cache))
    proprio = proprio_inputs(cache, list(model.proprio))
    probs = predict_frames(
        model, cache, frames, chunk_size, torch.device("cpu"), views=views, proprio=proprio
    )
    threshold, metrics = metrics_at_fpr(probs, cache.labels, target_fpr, cache, frames)
    return threshold, {**metrics, "threshold": threshold}
