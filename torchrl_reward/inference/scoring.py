"""Scoring any number of frames with a backend: chunks, and their one trip to its device."""

from __future__ import annotations

import torch

from torchrl_reward.inference.base import RewardBackend
from torchrl_reward.utils import score_chunks

# Host frames reach a GPU in pieces of at most this size through two pinned buffers: the host
# gathers one piece while the previous one is copied. A 256-frame chunk at 128 px (12.6 MB) is
# one piece: on an H200 host, one multi-threaded gather then one copy took 0.35 ms, and pieces
# of 42 frames 0.49 ms (the per-piece waits cost more than the overlap saves).
_PIECE_BYTES = 16 << 20

Rows = slice | torch.Tensor  # a range of frames, or the indices of the frames to score


class FrameScorer:
    """Scores uint8 frames ``[N, H, W, 3]`` with ``backend``, ``chunk_size`` at a time.

    The chunked scoring path of the reward transform and the parity checks. Frames may live on
    any device and have any strides (e.g. a ``[N, 3, H, W]`` batch seen as ``[N, H, W, 3]``);
    an ``index`` picks the frames to score without gathering them first. Each frame crosses to
    the backend's device once:

    - on the backend's device: views of the frames (a gather per chunk with an ``index``);
    - host to GPU: pinned, contiguous frames are copied straight to the device; others are
      gathered, a piece at a time, into two pinned staging buffers that this scorer keeps
      across calls, so the host fills one while the other's copy runs. The copies are
      non-blocking and land in the backend's :meth:`~RewardBackend.input_buffer` when it has
      one (a CUDA graph's static batch), else in a fresh device tensor.

    Nothing waits for the GPU here: the probabilities, float32 ``[M]`` on the backend's device,
    are ready once the caller reads them.

    Args:
        backend (RewardBackend): what scores each chunk.
        chunk_size (int, optional): frames per backend call, at most the backend's.
            Defaults to ``None`` (the backend's :attr:`~RewardBackend.chunk_size`).

    Examples:
        >>> scorer = FrameScorer(TorchBackend(ResNetRewardModel(image_size=64)))
        >>> scorer(torch.zeros(300, 64, 64, 3, dtype=torch.uint8)).shape
        torch.Size([300])
    """

    def __init__(self, backend: RewardBackend, chunk_size: int | None = None) -> None:
        chunk_size = backend.chunk_size if chunk_size is None else int(chunk_size)
        if not 1 <= chunk_size <= backend.chunk_size:
            raise ValueError(
                f"FrameScorer: chunk_size must be in [1, {backend.chunk_size}] (the "
                f"{backend.name} backend's chunk size), got {chunk_size}."
            )
        self.backend = backend
        self.chunk_size = chunk_size
        self._slots: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event] = []
        self._turn = 0

    def __call__(
        self,
        frames: torch.Tensor,
        proprio: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """P(success) float32 ``[M]`` on the backend's device of ``frames[index]`` (all
        ``M = N`` frames without ``index``), with their proprio values ``[N, D]`` when the
        model reads some."""
        self._check(frames, proprio, index)
        if index is not None:
            index = index.to(frames.device)
            rows = list(index.split(self.chunk_size))
        else:
            bounds = range(0, frames.shape[0], self.chunk_size)
            rows = [slice(i, min(i + self.chunk_size, frames.shape[0])) for i in bounds]
        total = frames.shape[0] if index is None else index.numel()
        if total == 0:
            return torch.zeros(0, device=self.backend.device)
        chunks = ((self.to_device(frames, r), self._proprio(proprio, r)) for r in rows)
        return score_chunks(self.backend, chunks, total)

    def _check(
        self, frames: torch.Tensor, proprio: torch.Tensor | None, index: torch.Tensor | None
    ) -> None:
        shape = tuple(self.backend.frame_shape)
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
            got = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise TypeError(f"FrameScorer: frames must be uint8 [N, *{shape}], got {got}.")
        if frames.dim() != 4 or tuple(frames.shape[1:]) != shape:
            raise ValueError(
                f"FrameScorer: frames must be uint8 [N, *{shape}] (the {self.backend.name} "
                f"backend's frames), got {tuple(frames.shape)}."
            )
        if proprio is not None and (proprio.dim() != 2 or proprio.shape[0] != frames.shape[0]):
            raise ValueError(
                f"FrameScorer: proprio must be [N, D] with N={frames.shape[0]} (one row per "
                f"frame), got {tuple(proprio.shape)}."
            )
        if index is not None and (index.dim() != 1 or index.dtype != torch.long):
            raise ValueError(
                f"FrameScorer: index must be a 1-D int64 tensor of frame rows, got "
                f"{index.dtype} {tuple(index.shape)}."
            )

    def _proprio(self, proprio: torch.Tensor | None, rows: Rows) -> torch.Tensor | None:
        if proprio is None:
            return None
        values = proprio[rows] if isinstance(rows, slice) else proprio[rows.to(proprio.device)]
        return values.to(self.backend.device, non_blocking=True)

    def to_device(self, frames: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``frames[rows]`` on the backend's device, copied (or gathered) once.

        ``rows`` is a slice of step 1 or int64 indices on the frames' device. From the host
        the copy is non-blocking (ordered on the current CUDA stream) and lands in the
        backend's :meth:`~RewardBackend.input_buffer` when it has one.
        """
        if isinstance(rows, slice):
            start, stop, step = rows.indices(frames.shape[0])
            if step != 1:
                raise ValueError(f"FrameScorer: rows must be a slice of step 1, got {rows}.")
            rows = slice(start, max(start, stop))
        device = self.backend.device
        picked = frames[rows] if isinstance(rows, slice) else None
        if frames.device == device:
            return picked if picked is not None else frames.index_select(0, rows)
        n = picked.shape[0] if picked is not None else rows.numel()
        out = self.backend.input_buffer(n)
        if out is None:
            out = torch.empty((n, *frames.shape[1:]), dtype=torch.uint8, device=device)
        if device.type == "cuda" and frames.device.type == "cpu":
            if picked is not None and picked.is_contiguous() and picked.is_pinned():
                out.copy_(picked, non_blocking=True)
            else:
                self._stage(frames, rows, out)
        else:  # between GPUs, or back to a CPU backend: one copy
            out.copy_(picked if picked is not None else frames.index_select(0, rows))
        return out

    def _stage(self, frames: torch.Tensor, rows: Rows, out: torch.Tensor) -> None:
        """Host ``frames[rows]`` -> ``out`` on the GPU through the two pinned buffers."""
        if not self._slots:  # frames always have the backend's shape: allocated once
            piece = min(max(1, _PIECE_BYTES // frames[0].numel()), self.chunk_size)
            shape = (piece, *frames.shape[1:])
            self._slots = [torch.empty(shape, dtype=torch.uint8, pin_memory=True) for _ in "ab"]
            self._events = [torch.cuda.Event(), torch.cuda.Event()]
        piece = self._slots[0].shape[0]
        stream = torch.cuda.current_stream(out.device)
        for start in range(0, out.shape[0], piece):
            end = min(start + piece, out.shape[0])
            slot, event = self._slots[self._turn], self._events[self._turn]
            event.synchronize()  # this buffer's previous copy has left it
            staged = slot[: end - start]
            if isinstance(rows, slice):
                staged.copy_(frames[rows.start + start : rows.start + end])
            else:
                torch.index_select(frames, 0, rows[start:end], out=staged)
            out[start:end].copy_(staged, non_blocking=True)
            event.record(stream)
            self._turn = 1 - self._turn


def score_frames(
    backend: RewardBackend, frames: torch.Tensor, proprio: torch.Tensor | None = None
) -> torch.Tensor:
    """P(success) float32 ``[N]`` on the CPU of uint8 frames ``[N, H, W, 3]`` (and their
    proprio values ``[N, D]`` for a model with proprio inputs), chunk by chunk."""
    return FrameScorer(backend)(frames, proprio).float().cpu()
