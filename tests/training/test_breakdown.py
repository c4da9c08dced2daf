"""The reward breakdown on real recorded episodes: every frame in exactly one group by the
simulator's truth, the reward summed as the transform pays it, per episode too."""

import pytest
import torch

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import build_frame_cache
from torchrl_reward.training.breakdown import (
    DISTANCE_EDGES,
    predict_factors,
    reward_breakdown,
)


def _factored(placed_logit: float, static_logit: float, threshold: float) -> ResNetRewardModel:
    """A real factored model whose halves score every frame sigmoid(placed/static_logit)."""
    model = ResNetRewardModel(image_size=64, proprio={"qvel": 9}, head="factored").eval()
    with torch.no_grad():
        for head, logit in ((model.head, placed_logit), (model.proprio_head, static_logit)):
            head[-1].weight.zero_()
            head[-1].bias.fill_(logit)
    model.threshold = threshold
    return model


def test_groups_partition_frames_by_the_truth(reward_dataset):
    cache = build_frame_cache(reward_dataset)
    model = _factored(2.0, -1.0, threshold=0.5)
    breakdown = reward_breakdown(model, cache)
    groups = {g.name: g for g in breakdown.groups}
    assert sum(g.frames for g in groups.values()) == len(cache)
    assert sum(g.share for g in groups.values()) == pytest.approx(1.0)
    assert groups["success (placed and static)"].frames == int(cache.labels.sum())
    # The scripted carries that end 8 cm beside the goal fill the 5-10 cm group.
    near, far = DISTANCE_EDGES
    assert groups[f"not placed, {near * 100:.0f}-{far * 100:.0f} cm"].frames > 0
    placed, static = torch.sigmoid(torch.tensor([2.0, -1.0])).tolist()
    expected = placed * static
    for group in groups.values():
        assert group.mean_reward == pytest.approx(expected, rel=1e-4)
        assert group.mean_placed == pytest.approx(placed, rel=1e-4)
        assert group.mean_static == pytest.approx(static, rel=1e-4)
        assert group.share == pytest.approx(group.frames / len(cache), rel=1e-4)
    # Every frame pays the same: an episode earns its length times that.
    lengths = torch.bincount(cache.episodes).float()
    assert breakdown.reward_per_success_episode == pytest.approx(
        float(lengths[cache.episode_success].mean()) * expected, rel=1e-4
    )
    assert breakdown.success_episodes + breakdown.failure_episodes == len(cache.files)
    assert "| success (placed and static) |" in breakdown.markdown()
    # A model that scores every frame alike ranks nothing: both areas are one half.
    assert breakdown.frame_roc_auc == pytest.approx(0.5)
    assert breakdown.placed_roc_auc == pytest.approx(0.5)
    assert "frame ROC-AUC 0.5000" in breakdown.markdown()


def test_binary_pays_frames_at_or_above_the_threshold(reward_dataset):
    cache = build_frame_cache(reward_dataset)
    paid = reward_breakdown(_factored(3.0, 3.0, threshold=0.8), cache, output="binary")
    assert all(g.mean_reward == 1.0 and g.above_threshold == g.frames for g in paid.groups)
    assert paid.failure_episodes_paid == paid.failure_episodes
    # Every frame called a success: all recalled, all negatives false; episodes at chance.
    assert (paid.frame_recall, paid.frame_fpr, paid.episode_balanced_accuracy) == (1.0, 1.0, 0.5)
    unpaid = reward_breakdown(
        _factored(3.0, 3.0, threshold=0.8), cache, output="binary", threshold=0.95
    )
    assert all(g.mean_reward == 0.0 and g.above_threshold == 0 for g in unpaid.groups)
    assert unpaid.failure_episodes_paid == 0
    assert (unpaid.frame_recall, unpaid.frame_fpr, unpaid.episode_balanced_accuracy) == (
        0.0,
        0.0,
        0.5,
    )


def test_predict_factors_follow_the_recording(reward_dataset):
    cache = build_frame_cache(reward_dataset)
    frames = torch.arange(len(cache))
    placed, static = predict_factors(_factored(0.0, 1.0, 0.5), cache, frames, views=None)
    assert placed.shape == static.shape == (len(cache),)
    assert torch.allclose(placed, torch.full_like(placed, 0.5))


def test_bad_output_and_joint_factors_are_named(reward_dataset):
    cache = build_frame_cache(reward_dataset)
    with pytest.raises(ValueError, match="output must be one of"):
        reward_breakdown(_factored(0.0, 0.0, 0.5), cache, output="logit")
    joint = ResNetRewardModel(image_size=64).eval()
    with pytest.raises(ValueError, match="head='factored'"):
        predict_factors(joint, cache, torch.arange(4), views=None)
