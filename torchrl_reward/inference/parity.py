"""Parity of an accelerated backend with the float32 torch reference, on real frames."""

from __future__ import annotations

import dataclasses

import torch

from torchrl_reward.inference.base import RewardBackend
from torchrl_reward.inference.scoring import score_frames

MIN_AGREEMENT = 0.995


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """How closely ``candidate`` follows ``reference`` on a set of frames.

    Attributes:
        candidate (str): the backend checked.
        reference (str): the backend it is checked against.
        frames (int): number of frames compared.
        agreement (float): fraction of frames whose success label (probability at or above
            the threshold) is the same.
        max_abs_diff (float): largest absolute difference of the probabilities.
        threshold (float): the decision threshold used for labels.
        min_agreement (float): the agreement required to pass.
    """

    candidate: str
    reference: str
    frames: int
    agreement: float
    max_abs_diff: float
    threshold: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def check_parity(
    candidate: RewardBackend,
    reference: RewardBackend,
    frames: torch.Tensor,
    *,
    threshold: float,
    min_agreement: float = MIN_AGREEMENT,
    proprio: torch.Tensor | None = None,
) -> ParityReport:
    """Compare the success labels and probabilities of two backends on the same frames (and,
    for a model with proprio inputs, the same proprio values).

    Use frames rendered from the task (recorded episodes), not noise: quantisation error is
    only meaningful on the input distribution the model sees.
    """
    if frames.shape[0] == 0:
        raise ValueError("check_parity needs at least one frame.")
    got = score_frames(candidate, frames, proprio)
    want = score_frames(reference, frames, proprio)
    agreement = ((got >= threshold) == (want >= threshold)).float().mean().item()
    diff = (got - want).abs().max().item()
    return ParityReport(
        candidate=candidate.name,
        reference=reference.name,
        frames=int(frames.shape[0]),
        agreement=agreement if diff == diff else 0.0,  # NaN probabilities never agree
        max_abs_diff=diff,
        threshold=float(threshold),
        min_agreement=float(min_agreement),
    )
