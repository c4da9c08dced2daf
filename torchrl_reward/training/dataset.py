"""Episode-level split, class-balanced sampling and batched augmentation of cached frames.

Frames of one episode are near duplicates, so the split is by episode (a frame split leaks
validation into training, as the seed system's did). Success frames are rarer than failure
frames and false positives are what RL exploits, so training draws failures and successes at a
set ratio (the seed's failure:success 2:1). Augmentation touches training frames only and
returns uint8, so the model's own preprocessing stays the single path to its input.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from torchrl_reward.models.resnet import split_views, tile_views
from torchrl_reward.training.cache import FrameCache
from torchrl_reward.training.config import FRAME_LABELS

# Episodes of each outcome the split needs to hold one out for validation and train on the rest.
MIN_EPISODES_PER_OUTCOME = 2


def split_episodes(
    episode_success: torch.Tensor, val_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/validation split of episode indices, stratified by episode outcome.

    Each outcome (success episodes, failure episodes) gives ``round(val_fraction * n)`` of its
    ``n`` episodes to validation, at least one and at most ``n - 1`` when ``n >= 2``, so both
    splits see both classes whenever the data allows it. Returns sorted index tensors.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for outcome in (True, False):
        ids = (episode_success == outcome).nonzero().squeeze(-1)
        ids = ids[torch.randperm(ids.numel(), generator=generator)]
        n = ids.numel()
        n_val = min(max(round(val_fraction * n), 1), n - 1) if n >= MIN_EPISODES_PER_OUTCOME else 0
        val.append(ids[:n_val])
        train.append(ids[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def frame_labels(cache: FrameCache, rule: str = "success") -> torch.Tensor:
    """Each cached frame's label (bool ``[F]``) under ``rule``.

    ``"success"`` is the frame's own ``success``. ``"success_once"`` (ManiSkill's term) is true
    from an episode's first success on: PickCube's success also asks for a static robot, a
    joint velocity no single frame shows, so a policy that keeps moving at the goal flickers
    between labels on near-identical frames after its first success; this rule removes that
    flicker (frames placed but moving *before* the first success stay negative).
    ``"placed"`` is the frame's own ``is_obj_placed`` (cube within reach of the goal), the half
    of PickCube's success an image shows; episode files without it raise, naming one.
    """
    if rule not in FRAME_LABELS:
        raise ValueError(f"frame label rule must be one of {FRAME_LABELS}, got {rule!r}.")
    if rule == "success":
        return cache.labels
    if rule == "placed":
        return cache.extra("is_obj_placed")
    never = torch.iinfo(torch.int64).max
    first = torch.full((len(cache.files),), never, dtype=torch.int64)
    first.scatter_reduce_(0, cache.episodes[cache.labels], cache.steps[cache.labels], "amin")
    return cache.steps >= first[cache.episodes]


def frames_of(cache: FrameCache, episode_ids: torch.Tensor) -> torch.Tensor:
    """Indices (sorted) of every frame belonging to ``episode_ids``."""
    return torch.isin(cache.episodes, episode_ids).nonzero().squeeze(-1)


def balanced_indices(
    labels: torch.Tensor,
    num_samples: int,
    failure_ratio: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """``num_samples`` positions into ``labels`` for one epoch.

    With ``failure_ratio=r``, each draw is a failure with probability ``r / (1 + r)`` and a
    uniform pick (with replacement) within its class. With ``None``, a plain shuffle of the
    natural class mix (without replacement, repeated if ``num_samples > len(labels)``).
    """
    n = labels.numel()
    if failure_ratio is None:
        reps = -(-num_samples // n)
        perm = torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])
        return perm[:num_samples]
    if failure_ratio <= 0:
        raise ValueError(f"failure_ratio must be > 0 (or None), got {failure_ratio}.")
    pos = labels.nonzero().squeeze(-1)
    neg = (~labels).nonzero().squeeze(-1)
    is_neg = torch.rand(num_samples, generator=generator) < failure_ratio / (1 + failure_ratio)
    pick_neg = neg[torch.randint(neg.numel(), (num_samples,), generator=generator)]
    pick_pos = pos[torch.randint(pos.numel(), (num_samples,), generator=generator)]
    return torch.where(is_neg, pick_neg, pick_pos)


def recorded_views(cache: FrameCache) -> int:
    """How many square views the cached frames tile side by side (``W // H``)."""
    height, width, _ = cache.image_shape
    if width % height:
        raise ValueError(
            f"Cached frames are {height}x{width}: not square views tiled side by side."
        )
    return width // height


def select_views(pixels: torch.Tensor, views: list[int] | None, recorded: int) -> torch.Tensor:
    """Keep ``views`` (indices, in that order) of frames ``[N, H, recorded * H, 3]``."""
    if views is None or list(views) == list(range(recorded)):
        return pixels
    if max(views) >= recorded:
        raise ValueError(f"views {list(views)} asked for, but the frames tile {recorded}.")
    n, h, w, c = pixels.shape
    kept = split_views(pixels, recorded).reshape(n, recorded, h, w // recorded, c)[:, list(views)]
    return tile_views(kept.reshape(n * len(views), h, w // recorded, c), len(views))


def proprio_inputs(cache: FrameCache, names: list[str]) -> torch.Tensor | None:
    """The named per-frame robot-state inputs, concatenated (float32 ``[F, D]``), or ``None``."""
    if not names:
        return None
    return torch.cat([cache.extra(name).float() for name in names], dim=-1)


class FrameBatches(Dataset):
    """Batches of cached frames: item ``i`` is ``(pixels uint8 [B, H, W, 3], proprio float
    [B, D] or None, labels float [B] or [B, K])``.

    Each batch reads only its own frames from the memory map (sorted, for locality), so the
    dataset never sits in RAM; use it with ``DataLoader(batch_size=None)`` for worker prefetch.
    ``labels`` (bool ``[F]``, e.g. from :func:`frame_labels`, or ``[F, K]`` for several
    targets per frame) defaults to each frame's own ``success``; ``views`` picks tiled views
    (:func:`select_views`); ``proprio`` (``[F, D]``, from :func:`proprio_inputs`) comes along
    when given.
    """

    def __init__(
        self,
        cache: FrameCache,
        batches: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        views: list[int] | None = None,
        proprio: torch.Tensor | None = None,
    ) -> None:
        self.cache = cache
        self.batches = batches
        self.labels = cache.labels if labels is None else labels
        self.views = views
        self.recorded = recorded_views(cache)
        self.proprio = proprio

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        idx = self.batches[i].sort().values
        pixels = select_views(self.cache.pixels[idx], self.views, self.recorded)
        proprio = None if self.proprio is None else self.proprio[idx]
        return pixels, proprio, self.labels[idx].float()


class FrameAugment(torch.nn.Module):
    """Random shifts and colour jitter of a uint8 ``[N, H, W, 3]`` batch, per image, on device.

    Args:
        shift (int, optional): maximal translation in pixels; borders repeat the edge pixels
            (DrQ-style pad-and-crop without the pad). Defaults to ``4``.
        brightness / contrast / saturation (float, optional): jitter strengths; factors are
            drawn uniformly in ``[1 - s, 1 + s]``. Defaults to ``0.2`` each.

    Returns uint8 of the same shape, so the model's preprocessing runs unchanged.
    """

    def __init__(
        self,
        shift: int = 4,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
    ) -> None:
        super().__init__()
        if shift < 0 or min(brightness, contrast, saturation) < 0:
            raise ValueError(
                "FrameAugment strengths must be >= 0, got "
                f"shift={shift}, brightness={brightness}, contrast={contrast}, "
                f"saturation={saturation}."
            )
        self.shift = shift
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation

    def _factor(self, strength: float, n: int, device: torch.device) -> torch.Tensor:
        return 1 + strength * (2 * torch.rand(n, 1, 1, 1, device=device) - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"FrameAugment expects uint8 [N, H, W, 3], got {images.dtype} "
                f"{tuple(images.shape)}."
            )
        n, h, w, _ = images.shape
        device = images.device
        if self.shift:
            s = self.shift
            dy = torch.randint(-s, s + 1, (n, 1), device=device)
            dx = torch.randint(-s, s + 1, (n, 1), device=device)
            rows = (torch.arange(h, device=device) + dy).clamp_(0, h - 1)
            cols = (torch.arange(w, device=device) + dx).clamp_(0, w - 1)
            batch = torch.arange(n, device=device)[:, None, None]
            images = images[batch, rows[:, :, None], cols[:, None, :]]
        if not (self.brightness or self.contrast or self.saturation):
            return images
        x = images.float()
        x = x * self._factor(self.brightness, n, device)
        gray = (x * x.new_tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * self._factor(self.contrast, n, device)
        gray = (x * x.new_tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
        x = gray + (x - gray) * self._factor(self.saturation, n, device)
        return x.round_().clamp_(0, 255).to(torch.uint8)
