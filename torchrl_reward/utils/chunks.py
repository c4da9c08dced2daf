"""Chunking of frames with their optional per-frame proprio values, and the one chunked scorer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

Scorer = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def frame_chunks(
    frames: torch.Tensor, proprio: torch.Tensor | None, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(frames[i:i + size], proprio[i:i + size] or None)`` along the first dimension."""
    chunks = frames.split(size)
    values = [None] * len(chunks) if proprio is None else proprio.split(size)
    return zip(chunks, values, strict=True)


def score_chunks(
    score: Scorer, chunks: Iterable[tuple[torch.Tensor, torch.Tensor | None]], total: int
) -> torch.Tensor:
    """Scores ``[total]`` of ``(frames, proprio)`` chunks, in order, one chunk at a time.

    The one chunked scoring loop of the package (reward transform, parity checks, the model's
    ``predict_proba``, validation in training). Each chunk's scores are written into their
    slice of one result, allocated at the first chunk on its scores' device and dtype (a
    single chunk's scores are the result), so nothing is concatenated; ``score`` may run
    asynchronously (CUDA): nothing here waits for it. No chunk at all gives an empty float32
    CPU tensor.
    """
    out = None
    start = 0
    for frames, proprio in chunks:
        scores = score(frames, proprio)
        end = start + scores.shape[0]
        if end > total:
            raise ValueError(f"score_chunks: the chunks hold more than total={total} frames.")
        if out is None and end == total:
            out = scores
        else:
            if out is None:
                out = scores.new_empty(total)
            out[start:end].copy_(scores)
        start = end
    if start != total:
        raise ValueError(f"score_chunks: the chunks held {start} frames, not total={total}.")
    return torch.zeros(0) if out is None else out
