"""The interface every inference backend implements, and the helpers they share.

A backend turns a chunk of uint8 frames into success probabilities. The reward transform only
sees this interface, so torch, ONNX Runtime and TensorRT are interchangeable behind it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import warnings

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

    @abc.abstractmethod
    def __call__(self, images: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """P(success) float32 ``[N]`` on :attr:`device` of uint8 frames ``[N, H, W, 3]`` (and
        the proprio values ``[N, D]`` for a model that has them)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


def resolve_device(
    device: str | torch.device | int | None, *, strict: bool = False, owner: str = "reward"
) -> torch.device:
    """The device a reward model can really run on, falling back with a warning.

    ``None`` means the first GPU when there is one, else the CPU. A GPU index beyond the
    visible GPUs falls back to ``cuda:0``, and any GPU without CUDA to the CPU, each with a
    warning, unless ``strict=True``, which raises instead (so a two-GPU plan fails loudly on a
    one-GPU machine).
    """
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{owner}: invalid device {device!r}: {err}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"{owner}: device must be 'cpu' or 'cuda[:i]', got {str(device)!r}.")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if device.index is None else device.index
    if index < count:
        return torch.device("cuda", index)
    fallback = torch.device("cuda:0") if count else torch.device("cpu")
    seen = f"{count} GPU{'s' if count != 1 else ''}"
    if strict:
        raise RuntimeError(
            f"{owner}: device {str(device)!r} is not available ({seen} visible) and "
            "strict=True; pick an available device or set strict=False to fall back to "
            f"{fallback}."
        )
    warnings.warn(
        f"{owner}: device {str(device)!r} is not available ({seen} visible); using "
        f"{fallback} instead (strict=True makes this an error).",
        stacklevel=3,
    )
    return fallback


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
