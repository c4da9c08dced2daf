"""Agreement of the learned success detector with the simulator's truth, for RL logs."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training.metrics import confusion_metrics

# The env key holding each frame's truth for a checkpoint's ``frame_label``. ``success_once``
# (success from an episode's first success on) has no per-frame key: ``success`` is closest.
TRUTH_KEYS = {"success": "success", "success_once": "success", "placed": "is_obj_placed"}


def _as_bool(values: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"agreement: {name} must be a tensor, got {type(values).__name__}.")
    if values.dtype.is_floating_point or values.is_complex():
        raise TypeError(
            f"agreement: {name} must be bool (or 0/1 integers), got {values.dtype}; threshold "
            "probabilities first, e.g. probs >= transform.threshold."
        )
    return values.bool()


def agreement(pred_success: torch.Tensor, true_success: torch.Tensor) -> dict[str, float]:
    """Precision, recall, false-positive rate and accuracy of predicted vs true success.

    Every frame counts once, whatever the batch shape. These are
    :func:`~torchrl_reward.training.metrics.confusion_metrics`, the validation metrics of
    training, so an undefined ratio (no predicted positives for precision, no true positives
    for recall, no true negatives for the FPR) is ``nan`` here too. False positives are what a
    policy exploits, so the FPR is the number to watch during RL.

    Args:
        pred_success (torch.Tensor): bool, the model's success decisions (probability at or
            above the threshold).
        true_success (torch.Tensor): bool, the truth (see :func:`truth`); same number of
            elements.

    Returns:
        dict: ``precision``, ``recall``, ``fpr``, ``accuracy``, ``balanced_accuracy``, ``f1``
        and the counts ``tp``, ``fp``, ``fn``, ``tn`` (floats).

    Examples:
        >>> pred = torch.tensor([True, True, False, False])
        >>> true = torch.tensor([True, False, True, False])
        >>> m = agreement(pred, true)
        >>> m["precision"], m["recall"], m["fpr"], m["accuracy"]
        (0.5, 0.5, 0.5, 0.5)
    """
    return confusion_metrics(
        _as_bool(pred_success, "pred_success"), _as_bool(true_success, "true_success")
    )


def frame_label(model: ResNetRewardModel) -> str:
    """What ``model`` was trained to detect (its training config's ``frame_label``); a model
    without a training config (built in code, not by the trainer) counts as ``success``."""
    return model.checkpoint_metadata.get("training_config", {}).get("frame_label", "success")


def truth_key(model: ResNetRewardModel) -> str:
    """The env key that holds what ``model`` was trained to detect, from its ``frame_label``.

    ``placed`` models are judged against ``is_obj_placed``, ``success`` (and
    ``success_once``) models against ``success``; a model without a training config (built
    in code, not by the trainer) counts as ``success``.
    """
    label = frame_label(model)
    if label not in TRUTH_KEYS:
        raise ValueError(
            f"agreement: the reward model was trained on frame_label={label!r}, which has no "
            f"truth key; known labels: {sorted(TRUTH_KEYS)}."
        )
    return TRUTH_KEYS[label]


def truth(tensordict: TensorDictBase, model: ResNetRewardModel) -> torch.Tensor:
    """The truth ``model``'s decisions are compared with: ``tensordict[truth_key(model)]``.

    Pass the post-step entries (a rollout's ``"next"``), the frames the model scores.
    """
    key = truth_key(model)
    value = tensordict.get(key, None)
    if value is None:
        raise KeyError(
            f"agreement: the reward model detects {key!r} (its frame_label), but the "
            f"tensordict lacks {key!r} (keys: {sorted(map(str, tensordict.keys()))}); "
            "ManiSkillEnv writes 'success' and 'is_obj_placed' for every step."
        )
    return value
