"""agreement(): precision, recall, FPR of predicted vs true success on hand-made batches."""

import math

import pytest
import torch

from torchrl_reward.transforms import agreement


def test_hand_made_batch():
    # 3 TP, 1 FP, 2 FN, 4 TN, shaped like rollout entries [T, N, 1].
    pred = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool).view(5, 2, 1)
    true = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool).view(5, 2, 1)
    m = agreement(pred, true)
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["n"]) == (3, 1, 2, 4, 10)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["fpr"] == pytest.approx(1 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)


def test_undefined_ratios_are_nan():
    m = agreement(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    assert math.isnan(m["precision"]) and math.isnan(m["recall"])
    assert m["fpr"] == 0.0 and m["accuracy"] == 1.0
    empty = agreement(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])


def test_integer_labels_are_accepted():
    m = agreement(torch.tensor([1, 0]), torch.tensor([[1], [1]]))
    assert (m["tp"], m["fn"]) == (1, 1)


def test_bad_inputs():
    with pytest.raises(TypeError, match="threshold probabilities first"):
        agreement(torch.tensor([0.9, 0.1]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="3 elements but true_success has 2"):
        agreement(torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
