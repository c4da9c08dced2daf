"""Episode split, class-balanced sampling and augmentation."""

import pytest
import torch

from torchrl_reward.training import (
    FrameAugment,
    FrameBatches,
    FrameCache,
    balanced_indices,
    frame_labels,
    split_episodes,
)
from torchrl_reward.training.dataset import select_views


def test_split_is_by_episode_seeded_and_stratified():
    success = torch.tensor([True] * 10 + [False] * 20)
    train, val = split_episodes(success, val_fraction=0.2, seed=3)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(30))
    assert (int(success[val].sum()), int((~success[val]).sum())) == (2, 4)
    again, _ = split_episodes(success, val_fraction=0.2, seed=3)
    other, _ = split_episodes(success, val_fraction=0.2, seed=4)
    assert torch.equal(train, again) and not torch.equal(train, other)


def test_split_keeps_both_classes_on_tiny_data():
    train, val = split_episodes(torch.tensor([True, True, False, False, False]), 0.1, seed=0)
    assert val.numel() == 2 and train.numel() == 3


def test_success_once_labels_every_frame_from_the_first_success_on():
    # Episode 0 flickers after its first success (step 2), episode 1 never succeeds.
    success = torch.tensor([0, 0, 1, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    cache = FrameCache(
        root=None,
        pixels=torch.zeros(9, 2, 2, 3, dtype=torch.uint8),
        labels=success,
        episodes=torch.tensor([0] * 6 + [1] * 3),
        steps=torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2]),
        files=["success/a.pkl", "failure/b.pkl"],
        episode_success=torch.tensor([True, False]),
        skipped=[],
        fingerprint="",
        lacking={"is_obj_placed": "failure/b.pkl"},
    )
    assert torch.equal(frame_labels(cache, "success"), success)
    once = frame_labels(cache, "success_once")
    assert once.tolist() == [False, False, True, True, True, True, False, False, False]
    with pytest.raises(ValueError, match="frame label rule"):
        frame_labels(cache, "sticky")
    # Batches carry the labels of the rule they are given, not the cache's own.
    batches = FrameBatches(cache, [torch.tensor([4, 3, 0])], once)
    pixels, proprio, labels = batches[0]
    assert labels.tolist() == [0.0, 1.0, 1.0] and proprio is None and pixels.shape == (3, 2, 2, 3)
    # "placed" reads the recorded is_obj_placed; a cache without it names a file that lacks it.
    with pytest.raises(ValueError, match=r"failure/b\.pkl has no per-frame 'is_obj_placed'"):
        frame_labels(cache, "placed")
    cache.extras["is_obj_placed"] = success | once
    assert torch.equal(frame_labels(cache, "placed"), success | once)
    assert FrameBatches(cache, [torch.tensor([4, 3, 0])])[0][2].tolist() == [0.0, 0.0, 1.0]


def test_balanced_indices_follow_the_failure_ratio():
    labels = torch.tensor([True] * 10 + [False] * 990)
    generator = torch.Generator().manual_seed(0)
    picks = balanced_indices(labels, 30_000, failure_ratio=2.0, generator=generator)
    share = labels[picks].float().mean().item()
    assert share == pytest.approx(1 / 3, abs=0.02)
    assert len(set(picks[labels[picks]].tolist())) == 10


def test_natural_sampling_is_a_permutation():
    labels = torch.tensor([True, False, False, True, False])
    picks = balanced_indices(labels, 7, None, torch.Generator().manual_seed(0))
    assert sorted(picks[:5].tolist()) == list(range(5)) and picks.numel() == 7
    with pytest.raises(ValueError, match="failure_ratio"):
        balanced_indices(labels, 4, 0.0, torch.Generator())


def test_augment_shifts_within_the_image_and_keeps_uint8():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    shifted = FrameAugment(shift=3, brightness=0, contrast=0, saturation=0)(images)
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    assert not torch.equal(shifted, images)
    # Replicate-padded translation: the centre of each output is a window of its own input.
    for img, out in zip(images, shifted, strict=True):
        windows = img.unfold(0, 10, 1).unfold(1, 10, 1)  # [7, 7, 3, 10, 10]
        centre = out[3:13, 3:13].permute(2, 0, 1)
        assert (windows == centre).flatten(2).all(-1).any()


def test_augment_colour_jitter_and_identity():
    images = torch.full((4, 8, 8, 3), 100, dtype=torch.uint8)
    assert torch.equal(FrameAugment(0, 0, 0, 0)(images), images)
    torch.manual_seed(0)
    bright = FrameAugment(shift=0, brightness=0.5, contrast=0, saturation=0)(images)
    values = bright.flatten(1).float()
    assert (values.std(1) == 0).all() and values[:, 0].unique().numel() == 4
    assert ((values >= 50) & (values <= 150)).all()
    with pytest.raises(ValueError, match="uint8"):
        FrameAugment()(images.float())


def test_select_views_keeps_the_asked_views_in_order():
    frames = torch.arange(2 * 4 * 12 * 3, dtype=torch.int64).reshape(2, 4, 12, 3).to(torch.uint8)
    left, middle, right = frames[:, :, :4], frames[:, :, 4:8], frames[:, :, 8:]
    assert torch.equal(select_views(frames, [2, 0], 3), torch.cat([right, left], dim=2))
    assert torch.equal(select_views(frames, [1], 3), middle)
    assert select_views(frames, None, 3) is frames
    with pytest.raises(ValueError, match="frames tile 3"):
        select_views(frames, [3], 3)
