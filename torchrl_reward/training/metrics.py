"""Binary classification metrics in pure torch: confusion counts, ROC, threshold at a target FPR.

A success classifier used as a reward is judged by its false-positive rate first (false
successes are what RL exploits), so the decision threshold is chosen from an FPR target.
"""

from __future__ import annotations

import torch


def _check(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64, copy=False)
    labels = torch.as_tensor(labels).detach().reshape(-1).to(torch.bool)
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels need the same number of elements, got {scores.numel()} and "
            f"{labels.numel()}."
        )
    return scores.cpu(), labels.cpu()


def roc_curve(
    scores: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score, from (0, 0) to (1, 1).

    Point ``i`` is the rule ``score >= thresholds[i]``; the first point's threshold is ``+inf``.
    Tied scores form one point, so the curve (and its area) does not depend on the order of ties.
    """
    scores, labels = _check(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    scores, labels = scores[order], labels[order]
    tps = torch.cumsum(labels, 0, dtype=torch.float64)
    fps = torch.cumsum(~labels, 0, dtype=torch.float64)
    # The last index of each run of equal scores.
    last = torch.ones_like(labels)
    last[:-1] = scores[1:] != scores[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    tps = torch.cat([zero, tps[last]])
    fps = torch.cat([zero, fps[last]])
    thresholds = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), scores[last]])
    n_pos, n_neg = labels.sum().item(), (~labels).sum().item()
    tpr = tps / n_pos if n_pos else torch.full_like(tps, float("nan"))
    fpr = fps / n_neg if n_neg else torch.full_like(fps, float("nan"))
    return fpr, tpr, thresholds


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (ties count one half); NaN when one class is absent."""
    fpr, tpr, _ = roc_curve(scores, labels)
    if torch.isnan(fpr).any() or torch.isnan(tpr).any():
        return float("nan")
    return torch.trapezoid(tpr, fpr).item()


def confusion_metrics(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Confusion counts and the ratios built on them, from bool decisions and bool labels.

    Returns ``accuracy``, ``balanced_accuracy``, ``precision``, ``recall``, ``fpr``, ``f1`` and
    the counts ``tp``, ``fp``, ``tn``, ``fn`` (floats); every element counts once, whatever the
    shape. A ratio with an empty denominator (no predicted positives for precision, no
    positives for recall, no negatives for the FPR) is NaN: undefined, neither perfect nor
    worst, where 0 would read as "every call was wrong" and drag averages down. Loggers write
    NaN as is; readers skip it (the pipeline report prints ``n/a``). F1 is
    ``2 tp / (2 tp + fp + fn)``, so it is 0, not NaN, when there are positives but no hits.
    """
    pred, labels = pred.reshape(-1).bool(), labels.reshape(-1).bool()
    if pred.shape != labels.shape:
        raise ValueError(
            f"pred and labels need the same number of elements, got {pred.numel()} and "
            f"{labels.numel()}."
        )
    labels = labels.to(pred.device)
    # One host sync for the four counts.
    tp, fp, fn, tn = torch.stack(
        [
            (pred & labels).sum(),
            (pred & ~labels).sum(),
            (~pred & labels).sum(),
            (~pred & ~labels).sum(),
        ]
    ).tolist()
    recall, fpr = _ratio(tp, tp + fn), _ratio(fp, fp + tn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "balanced_accuracy": (recall + 1.0 - fpr) / 2,
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "fpr": fpr,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def binary_metrics(
    probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5
) -> dict[str, float]:
    """:func:`confusion_metrics` of the rule ``probs >= threshold``, plus ``roc_auc``.

    Undefined ratios are NaN, as there.
    """
    probs, labels = _check(probs, labels)
    return {**confusion_metrics(probs >= threshold, labels), "roc_auc": roc_auc(probs, labels)}


def threshold_at_fpr(probs: torch.Tensor, labels: torch.Tensor, target_fpr: float = 0.01) -> float:
    """The lowest threshold whose rule ``probs >= t`` has FPR <= ``target_fpr`` on this data.

    With ``k = floor(target_fpr * negatives)`` false positives allowed, ``t`` is the float32
    just above the ``(k+1)``-th highest negative score: lowest means best recall under the cap.
    Capped at 1.0 (a negative scored exactly 1.0 then stays a false positive).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}.")
    probs, labels = _check(probs, labels)
    negatives = probs[~labels].to(torch.float32)
    if negatives.numel() == 0:
        raise ValueError("threshold_at_fpr needs at least one negative (failure) example.")
    allowed = int(target_fpr * negatives.numel() + 1e-9)
    kth = torch.topk(negatives, allowed + 1).values[-1]
    above = torch.nextafter(kth, torch.tensor(float("inf"), dtype=torch.float32))
    return min(above.item(), 1.0)
