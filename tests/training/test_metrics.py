"""Classification metrics against hand counts and brute-force definitions."""

import math

import pytest
import torch

from torchrl_reward.training import binary_metrics, roc_auc, roc_curve, threshold_at_fpr
from torchrl_reward.training.metrics import confusion_metrics


def _pairwise_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def test_binary_metrics_counts():
    probs = torch.tensor([0.9, 0.8, 0.4, 0.7, 0.2, 0.1])
    labels = torch.tensor([True, True, True, False, False, False])
    m = binary_metrics(probs, labels, threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(_pairwise_auc(probs, labels))


def test_undefined_ratios_are_nan_and_defined_ones_are_not():
    no_calls = binary_metrics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([True, False, True]))
    assert math.isnan(no_calls["precision"])  # nothing called a success
    assert (no_calls["recall"], no_calls["f1"], no_calls["fpr"]) == (0.0, 0.0, 0.0)
    only_negatives = confusion_metrics(torch.tensor([True, False]), torch.tensor([False, False]))
    assert math.isnan(only_negatives["recall"]) and math.isnan(only_negatives["balanced_accuracy"])
    assert only_negatives["fpr"] == 0.5 and only_negatives["f1"] == 0.0
    empty = confusion_metrics(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    assert all(math.isnan(empty[k]) for k in ("accuracy", "precision", "recall", "fpr", "f1"))


def test_confusion_metrics_ignore_shape_and_match_binary_metrics():
    probs = torch.tensor([0.9, 0.8, 0.4, 0.7, 0.2, 0.1])
    labels = torch.tensor([True, True, True, False, False, False])
    from_probs = binary_metrics(probs, labels, 0.5)
    from_calls = confusion_metrics((probs >= 0.5).view(3, 2, 1), labels.view(2, 3))
    assert from_calls == {k: v for k, v in from_probs.items() if k != "roc_auc"}


def test_roc_auc_matches_pairwise_definition_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (500,), generator=generator).float() / 20
    labels = torch.rand(500, generator=generator) < scores * 0.8 + 0.1
    # torchmetrics computes the rates in float32.
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-6)
    assert roc_auc(labels.float(), labels) == 1.0
    assert roc_auc(1 - labels.float(), labels) == 0.0
    assert math.isnan(roc_auc(scores, torch.ones(500, dtype=torch.bool)))


def test_roc_curve_known_points_with_a_tie():
    scores = torch.tensor([1.0, 0.8, 0.8, 0.3, 0.1])
    labels = torch.tensor([True, True, False, False, True])
    fpr, tpr, thresholds = roc_curve(scores, labels)
    # The first point passes nothing, not even the score of exactly 1.0.
    assert thresholds[0] == float("inf")
    assert thresholds[1:].tolist() == pytest.approx([1.0, 0.8, 0.3, 0.1])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert tpr.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 2 / 3, 1.0])


def test_roc_curve_rate_of_an_absent_class_is_nan(recwarn):
    fpr, tpr, _ = roc_curve(torch.tensor([0.2, 0.7]), torch.tensor([True, True]))
    assert torch.isnan(fpr).all() and tpr.tolist() == [0.0, 0.5, 1.0]
    fpr, tpr, _ = roc_curve(torch.tensor([0.2, 0.7]), torch.tensor([False, False]))
    assert torch.isnan(tpr).all() and fpr.tolist() == [0.0, 0.5, 1.0]
    assert not recwarn.list  # torchmetrics' zero-rate warnings are not passed on


def test_roc_curve_spans_unit_square_and_is_monotone():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(200, generator=generator)
    labels = torch.rand(200, generator=generator) < 0.3
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert (fpr.diff() >= 0).all() and (tpr.diff() >= 0).all() and (thresholds.diff() < 0).all()


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2])
def test_threshold_meets_fpr_target_with_best_recall(target):
    generator = torch.Generator().manual_seed(2)
    labels = torch.rand(2000, generator=generator) < 0.3
    probs = torch.sigmoid(torch.randn(2000, generator=generator) + 2.0 * labels).float()
    probs[:20] = probs[20]  # ties among scores
    t = threshold_at_fpr(probs, labels, target)
    metrics = binary_metrics(probs, labels, t)
    assert metrics["fpr"] <= target
    # Best recall: recalling one more positive breaks the target.
    next_positive = probs[labels & (probs < t)].max().item()
    assert binary_metrics(probs, labels, next_positive)["fpr"] > target
    # No false positive for nothing: nothing scores between the threshold and the lowest
    # recalled positive, and the threshold sits midway in the gap below that positive.
    first = probs[labels & (probs >= t)].min()
    assert not ((probs >= t) & (probs < first)).any()
    below = probs[probs < t].max()
    assert below < t <= first
    torch.testing.assert_close(torch.tensor(t), (below + first) / 2)


def test_threshold_of_a_perfect_ranking_admits_no_false_positive():
    """The whole FPR budget is not spent when a gap separates the classes: the threshold sits in
    the gap, so every positive is recalled and no negative (no failure episode) is called."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.95])
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    t = threshold_at_fpr(probs, labels, 0.5)
    assert t == pytest.approx(0.75)
    metrics = binary_metrics(probs, labels, t)
    assert metrics["recall"] == 1.0 and metrics["fpr"] == 0.0
    # With no positive above the allowed negatives, the lowest threshold under the cap.
    assert threshold_at_fpr(probs, torch.zeros(8, dtype=torch.bool), 0.5) == pytest.approx(
        torch.nextafter(torch.tensor(0.4), torch.tensor(1.0)).item()
    )


def test_threshold_needs_negatives_and_valid_target():
    with pytest.raises(ValueError, match="negative"):
        threshold_at_fpr(torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_at_fpr(torch.rand(5), torch.zeros(5, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="same number"):
        binary_metrics(torch.rand(5), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="got 5 and 4"):
        confusion_metrics(torch.ones(5, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
