"""agreement(): precision, recall, FPR of predicted vs true success on hand-made batches;
truth(): the env key a checkpoint is judged against follows its frame_label."""

import copy
import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import binary_metrics
from torchrl_reward.transforms import agreement
from torchrl_reward.transforms.agreement import truth, truth_key


def test_hand_made_batch():
    # 3 TP, 1 FP, 2 FN, 4 TN, shaped like rollout entries [T, N, 1].
    pred = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool).view(5, 2, 1)
    true = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool).view(5, 2, 1)
    m = agreement(pred, true)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 2, 4)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["fpr"] == pytest.approx(1 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)


def test_undefined_ratios_are_nan():
    m = agreement(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    assert math.isnan(m["precision"]) and math.isnan(m["recall"])
    assert m["fpr"] == 0.0 and m["accuracy"] == 1.0
    empty = agreement(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    assert math.isnan(empty["accuracy"])


def test_same_numbers_as_the_validation_metrics():
    """``reward_model/*`` and ``val/*`` are one computation: equal, NaN where undefined."""
    probs = torch.tensor([0.1, 0.3, 0.2, 0.4])
    labels = torch.tensor([True, False, True, False])
    online = agreement(probs >= 0.5, labels)
    val = binary_metrics(probs, labels, 0.5)
    assert math.isnan(online["precision"]) and math.isnan(val["precision"])
    for key in ("recall", "fpr", "accuracy", "tp", "fp", "fn", "tn"):
        assert online[key] == val[key], key


def test_integer_labels_are_accepted():
    m = agreement(torch.tensor([1, 0]), torch.tensor([[1], [1]]))
    assert (m["tp"], m["fn"]) == (1, 1)


def test_bad_inputs():
    with pytest.raises(TypeError, match="threshold probabilities first"):
        agreement(torch.tensor([0.9, 0.1]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="got 3 and 2"):
        agreement(torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))


def _trained_on(model: ResNetRewardModel, frame_label: str | None) -> ResNetRewardModel:
    """A shallow copy of ``model`` whose metadata holds ``frame_label`` as the trainer's does."""
    model = copy.copy(model)
    model.checkpoint_metadata = (
        {} if frame_label is None else {"training_config": {"frame_label": frame_label}}
    )
    return model


def test_truth_follows_the_frame_label(model):
    step = TensorDict(
        {
            "success": torch.tensor([[True], [False]]),
            "is_obj_placed": torch.tensor([[True], [True]]),
        },
        batch_size=[2],
    )
    assert truth_key(_trained_on(model, None)) == "success"  # no training config
    assert truth_key(_trained_on(model, "success_once")) == "success"
    assert torch.equal(truth(step, _trained_on(model, "placed")), step["is_obj_placed"])
    assert torch.equal(truth(step, _trained_on(model, "success")), step["success"])
    with pytest.raises(KeyError, match="lacks 'is_obj_placed'"):
        truth(step.exclude("is_obj_placed"), _trained_on(model, "placed"))
    with pytest.raises(ValueError, match="frame_label='grasped'"):
        truth_key(_trained_on(model, "grasped"))


def test_truth_of_a_saved_checkpoint(model, tmp_path):
    """The frame_label the trainer stores in the checkpoint survives save and load."""
    path = model.save(tmp_path / "placed.pt", training_config={"frame_label": "placed"})
    assert truth_key(ResNetRewardModel.load(path)) == "is_obj_placed"
