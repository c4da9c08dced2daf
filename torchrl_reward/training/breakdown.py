"""Where a reward model's reward goes on recorded episodes, split by the simulator's truth.

A learned reward that pays near misses can be hacked: the policy learns to hover where the model
pays instead of succeeding, and evaluation success falls while the reward rises. Scoring a
policy's own recorded episodes and summing the reward by what each frame truly is (success;
placed but the robot moving; not placed, by cube-to-goal distance) shows where the reward goes
and which half of a factored model pays it; the frame and episode metrics at the threshold say
how well the model judges this policy's episodes (a threshold calibrated on one policy's recording
admits more false positives on another's). The simulator's state is read only to measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from torchrl_reward.envs.scripted import NEAR_MISS_DISTANCE
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.models.resnet import and_logit
from torchrl_reward.training.cache import DISTANCE_KEY, FrameCache
from torchrl_reward.training.dataset import proprio_inputs, recorded_views, select_views
from torchrl_reward.training.metrics import binary_metrics, confusion_metrics, roc_auc
from torchrl_reward.training.reward_trainer import predict_frames
from torchrl_reward.transforms.reward import OUTPUTS

# Cube-to-goal distances (metres) that bound the not-placed groups; PickCube's placed is 2.5 cm.
DISTANCE_EDGES = (NEAR_MISS_DISTANCE, 0.10)


@torch.no_grad()
def _factor_logits(
    model: ResNetRewardModel,
    cache: FrameCache,
    frames: torch.Tensor,
    views: list[int] | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``factored`` model's (image, proprio) logits ``[N]`` of the cached ``frames``."""
    if model.head_type != "factored":
        raise ValueError(f"predict_factors needs a head='factored' model, got {model.head_type!r}.")
    model.eval()
    proprio = proprio_inputs(cache, list(model.proprio))
    recorded = recorded_views(cache)
    logits = [
        model.factor_logits(select_views(cache.pixels[idx], views, recorded), proprio[idx])
        for idx in frames.split(chunk_size)
    ]
    placed, static = (torch.cat(factor).flatten() for factor in zip(*logits, strict=True))
    return placed, static


def predict_factors(
    model: ResNetRewardModel,
    cache: FrameCache,
    frames: torch.Tensor,
    views: list[int] | None,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``factored`` model's two probabilities (image: placed, proprio: static) ``[N]`` each, of
    the cached ``frames`` in their order, read ``chunk_size`` at a time from the memory map."""
    placed, static = _factor_logits(model, cache, frames, views, chunk_size)
    return placed.sigmoid(), static.sigmoid()


@dataclass(frozen=True)
class FrameGroup:
    """One kind of frame by the simulator's truth, and the reward the model paid it.

    ``mean_placed`` / ``mean_static`` are a factored model's two halves (``None`` otherwise).
    """

    name: str
    frames: int
    mean_reward: float
    share: float
    above_threshold: int
    mean_placed: float | None = None
    mean_static: float | None = None


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward of every recorded frame, summed by :class:`FrameGroup` and by episode.

    ``failure_episodes_paid`` counts failed episodes with a frame at or above the threshold:
    episodes a binary reward pays although they never succeed. ``frame_*`` judge each frame's
    P(success) against the simulator's ``success`` (recall and FPR at the threshold), and
    ``episode_balanced_accuracy`` calls an episode a success when any frame reaches the
    threshold; ``placed_roc_auc`` is a factored model's image half against ``is_obj_placed``
    (``None`` otherwise). Undefined ones (a class absent) are NaN.
    """

    output: str
    threshold: float
    groups: list[FrameGroup]
    success_episodes: int
    failure_episodes: int
    reward_per_success_episode: float
    reward_per_failure_episode: float
    failure_episodes_paid: int
    frame_roc_auc: float
    frame_recall: float
    frame_fpr: float
    episode_balanced_accuracy: float
    placed_roc_auc: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        """The groups as a markdown table, and the per-episode reward under it."""
        factored = self.groups[0].mean_placed is not None
        head = "| frames (by the simulator) | frames | mean reward | share | >= threshold |"
        rule = "|---|---|---|---|---|"
        if factored:
            head += " mean P(placed) | mean P(static) |"
            rule += "---|---|"
        lines = [head, rule]
        for g in self.groups:
            row = (
                f"| {g.name} | {g.frames:,} | {g.mean_reward:.3f} | {g.share:.0%} | "
                f"{g.above_threshold:,} |"
            )
            if factored:
                row += f" {g.mean_placed:.2f} | {g.mean_static:.2f} |"
            lines.append(row)
        lines.append("")
        lines.append(
            f"{self.output} reward (threshold {self.threshold:.3f}) per episode: "
            f"{self.reward_per_success_episode:.2f} in {self.success_episodes} successful, "
            f"{self.reward_per_failure_episode:.2f} in {self.failure_episodes} failed; "
            f"{self.failure_episodes_paid} of the failed have a frame at or above the threshold."
        )
        line = (
            f"Against the simulator's success: frame ROC-AUC {self.frame_roc_auc:.4f}, recall "
            f"{self.frame_recall:.3f} and FPR {self.frame_fpr:.4f} at the threshold, episode "
            f"balanced accuracy {self.episode_balanced_accuracy:.3f}"
        )
        if self.placed_roc_auc is not None:
            line += f"; the image half's ROC-AUC against is_obj_placed {self.placed_roc_auc:.4f}"
        lines.append(line + ".")
        return "\n".join(lines)


def _groups(placed: torch.Tensor, success: torch.Tensor, distance: torch.Tensor) -> dict:
    near, far = DISTANCE_EDGES
    return {
        "success (placed and static)": success,
        "placed, robot moving": placed & ~success,
        f"not placed, < {near * 100:.0f} cm": ~placed & (distance < near),
        f"not placed, {near * 100:.0f}-{far * 100:.0f} cm": ~placed
        & (distance >= near)
        & (distance < far),
        f"not placed, >= {far * 100:.0f} cm": ~placed & (distance >= far),
    }


def reward_breakdown(
    model: ResNetRewardModel,
    cache: FrameCache,
    *,
    output: str = "soft",
    threshold: float | None = None,
    views: list[int] | None = None,
    chunk_size: int = 256,
) -> RewardBreakdown:
    """Score every cached frame as :class:`~torchrl_reward.RewardTransform` would pay it and
    split the reward by the simulator's truth.

    Args:
        model (ResNetRewardModel): the reward model.
        cache (FrameCache): the recorded episodes (:func:`build_frame_cache`); they need the
            recorder's ``is_obj_placed``, ``is_robot_static`` and PickCube states.
        output (str, optional): ``"soft"`` pays P(success), ``"binary"`` P >= threshold, as the
            transform's ``output``. Defaults to ``"soft"``.
        threshold (float, optional): the decision threshold. Defaults to the model's.
        views (list of int, optional): the recorded views the model reads. Defaults to all.
        chunk_size (int, optional): frames per forward pass. Defaults to ``256``.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
    threshold = model.threshold if threshold is None else float(threshold)
    frames = torch.arange(len(cache))
    factors = None
    if model.head_type == "factored":
        # One pass: P(success) is the model's own product of its two halves (its forward).
        placed_logit, static_logit = _factor_logits(model, cache, frames, views, chunk_size)
        probs = and_logit(placed_logit, static_logit).sigmoid()
        factors = (placed_logit.sigmoid(), static_logit.sigmoid())
    else:
        proprio = proprio_inputs(cache, list(model.proprio))
        probs = predict_frames(
            model, cache, frames, chunk_size, torch.device("cpu"), views=views, proprio=proprio
        )
    paid = probs >= threshold
    reward = paid.float() if output == "binary" else probs
    distance = cache.extra(DISTANCE_KEY)
    placed = cache.extra("is_obj_placed")
    groups = _groups(placed, cache.labels, distance)
    total = float(reward.sum()) or 1.0
    rows = []
    for name, mask in groups.items():
        count = int(mask.sum())
        if not count:
            continue
        rows.append(
            FrameGroup(
                name=name,
                frames=count,
                mean_reward=float(reward[mask].mean()),
                share=float(reward[mask].sum()) / total,
                above_threshold=int(paid[mask].sum()),
                mean_placed=None if factors is None else float(factors[0][mask].mean()),
                mean_static=None if factors is None else float(factors[1][mask].mean()),
            )
        )
    num_episodes = len(cache.files)
    per_episode = torch.zeros(num_episodes).index_add_(0, cache.episodes, reward)
    paid_episode = torch.zeros(num_episodes, dtype=torch.bool).index_put_(
        (cache.episodes[paid],), torch.tensor(True)
    )
    succeeded = cache.episode_success
    frame = binary_metrics(probs, cache.labels, threshold)
    # An episode is called a success when any of its frames is paid (the trainer's rule).
    episode = confusion_metrics(paid_episode, succeeded)
    return RewardBreakdown(
        output=output,
        threshold=threshold,
        groups=rows,
        success_episodes=int(succeeded.sum()),
        failure_episodes=int((~succeeded).sum()),
        reward_per_success_episode=float(per_episode[succeeded].mean()) if succeeded.any() else 0.0,
        reward_per_failure_episode=float(per_episode[~succeeded].mean())
        if (~succeeded).any()
        else 0.0,
        failure_episodes_paid=int(episode["fp"]),
        frame_roc_auc=frame["roc_auc"],
        frame_recall=frame["recall"],
        frame_fpr=frame["fpr"],
        episode_balanced_accuracy=episode["balanced_accuracy"],
        placed_roc_auc=None if factors is None else roc_auc(factors[0], placed),
    )
