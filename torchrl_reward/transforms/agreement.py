"""Agreement of the learned success detector with the simulator's true success, for RL logs."""

from __future__ import annotations

import torch


def _as_bool(values: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"agreement: {name} must be a tensor, got {type(values).__name__}.")
    if values.dtype.is_floating_point or values.is_complex():
        raise TypeError(
            f"agreement: {name} must be bool (or 0/1 integers), got {values.dtype}; threshold "
            "probabilities first, e.g. probs >= transform.threshold."
        )
    return values.reshape(-1).bool()


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def agreement(pred_success: torch.Tensor, true_success: torch.Tensor) -> dict[str, float | int]:
    """Precision, recall, false-positive rate and accuracy of predicted vs true success.

    Every frame counts once, whatever the batch shape. A ratio whose denominator is zero (no
    predicted positives for precision, no true positives for recall, no true negatives for the
    FPR) is ``nan``: undefined, not perfect. False positives are what a policy exploits, so the
    FPR is the number to watch during RL.

    Args:
        pred_success (torch.Tensor): bool, the model's success decisions (probability at or
            above the threshold).
        true_success (torch.Tensor): bool, the simulator's ``success``; same number of elements.

    Returns:
        dict: ``precision``, ``recall``, ``fpr``, ``accuracy`` (floats) and the counts ``tp``,
        ``fp``, ``fn``, ``tn``, ``n``.

    Examples:
        >>> pred = torch.tensor([True, True, False, False])
        >>> true = torch.tensor([True, False, True, False])
        >>> m = agreement(pred, true)
        >>> m["precision"], m["recall"], m["fpr"], m["accuracy"]
        (0.5, 0.5, 0.5, 0.5)
    """
    pred = _as_bool(pred_success, "pred_success")
    true = _as_bool(true_success, "true_success").to(pred.device)
    if pred.numel() != true.numel():
        raise ValueError(
            f"agreement: pred_success has {pred.numel()} elements but true_success has "
            f"{true.numel()}; pass the same frames."
        )
    counts = torch.stack(
        [(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum(), (~pred & ~true).sum()]
    ).tolist()
    tp, fp, fn, tn = counts
    n = tp + fp + fn + tn
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "accuracy": _ratio(tp + tn, n),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": n,
    }
