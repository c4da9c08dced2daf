"""The interface every inference backend implements, and the helpers they share.

A backend turns a chunk of uint8 frames into success probabilities. The reward transform only
sees this interface, so torch, ONNX Runtime and TensorRT are interchangeable behind it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os

import torch

from torchrl_reward.models import ResNetRewardModel


class RewardBackend(abc.ABC):
    """Scores frames: uint8 ``[N, H, W, 3]`` on :attr:`device` -> P(success) float32 ``[N]``.

    Backends score at most :attr:`chunk_size` frames per call (the caller chunks) and expect
    frames of :attr:`frame_shape`, the checkpoint's views of side :attr:`image_size` tiled side
    by side. They never resize. A model with proprio inputs also takes their values, float
    ``[N, D]``.

    Attributes:
        name (str): what runs the network, e.g. ``"torch"``, ``"onnxruntime-int8"``.
        device (torch.device): where the input frames must be and the probabilities come back.
        image_size (int): side of the frames the network was trained on.
        chunk_size (int): the largest batch one call accepts.
    """

    name: str
    device: torch.device
    image_size: int
    chunk_size: int

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of the frames a call takes."""
        return (self.image_size, self.num_views * self.image_size, 3)

    num_views: int = 1

    def input_buffer(self, n: int) -> torch.Tensor | None:
        """A uint8 ``[n, H, W, 3]`` tensor on :attr:`device` that a caller may fill with a chunk
        and pass to :meth:`__call__`: frames copied from the host land in the network's own
        input (a CUDA graph's static batch) instead of being copied there once more. ``None``:
        this backend has no such buffer. Its contents are only valid until the next call."""
        return None

    @abc.abstractmethod
    def __call__(self, images: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """P(success) float32 ``[N]`` on :attr:`device` of uint8 frames ``[N, H, W, 3]`` (and
        the proprio values ``[N, D]`` for a model that has them)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


def model_fingerprint(model: ResNetRewardModel) -> str:
    """SHA-256 of a model's config and weights: ties exported files to their checkpoint."""
    digest = hashlib.sha256(json.dumps(model.config(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
