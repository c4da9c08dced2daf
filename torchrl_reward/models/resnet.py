"""ResNet success classifier: P(success | frame[, proprioception]) from uint8 RGB frames.

The model owns its preprocessing (uint8 -> float, /255, resize, normalise), so training and
inference cannot disagree on it; the seed system normalised twice. A frame may tile several
camera views side by side (``num_views``): each view goes through the same ResNet trunk and the
features are concatenated. Named low-dimensional robot inputs (``proprio``, e.g. the joint
velocities that tell a static arm from a moving one) join after the trunk. The checkpoint
carries everything needed to rebuild the model: architecture, input size, views, proprio
inputs and their normalisation, threshold and free-form metadata.

PickCube's success is "cube placed AND arm static". The ``factored`` head follows that
definition: one logit for the half the image shows (placed), one for the half the robot's
state shows (static), combined as P(success) = P(placed) * P(static). Each half then learns
from its own per-frame label, which policy data holds ~17x (placed) and ~4x (static) more
often than success itself.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, ResNet

from torchrl_reward.ops import preprocess
from torchrl_reward.utils import atomic_write, frame_chunks, score_chunks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CHECKPOINT_FORMAT = "torchrl_reward.ResNetRewardModel"
CHECKPOINT_VERSION = 1
_PROPRIO_FEATURES = 64
HEADS = ("joint", "factored")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(
            f"ResNetRewardModel expects uint8 images (0-255), got {got}; pass the raw frames, "
            "the model does its own conversion and normalisation."
        )
    if images.dim() < 3 or 3 not in (images.shape[-1], images.shape[-3]):
        raise ValueError(
            "ResNetRewardModel expects images shaped [..., H, W, 3] or [..., 3, H, W], got "
            f"{tuple(images.shape)}."
        )


def _check_proprio(proprio: torch.Tensor, batch: torch.Size, width: int, names: list) -> None:
    if not isinstance(proprio, torch.Tensor) or not proprio.is_floating_point():
        got = proprio.dtype if isinstance(proprio, torch.Tensor) else type(proprio).__name__
        raise TypeError(f"proprio inputs {names} must be a float tensor, got {got}.")
    if tuple(proprio.shape) != (*batch, width):
        raise ValueError(
            f"proprio inputs {names} must be shaped {[*batch, width]} (the frames' batch, then "
            f"the inputs' {width} values), got {list(proprio.shape)}."
        )
    if not bool(torch.isfinite(proprio).all()):
        raise ValueError(f"proprio inputs {names} hold NaN or inf values; nothing was scored.")


def split_views(images: torch.Tensor, num_views: int) -> torch.Tensor:
    """Frames ``[N, H, V * W, C]`` tiling ``V`` views side by side -> ``[N * V, H, W, C]``.

    The identity (no copy) for one view. The one place that knows the tile layout, with
    :func:`tile_views`, its inverse.
    """
    if num_views == 1:
        return images
    n, h, w, c = images.shape
    v = num_views
    return images.reshape(n, h, v, w // v, c).transpose(1, 2).reshape(n * v, h, w // v, c)


def tile_views(views: torch.Tensor, num_views: int) -> torch.Tensor:
    """The inverse of :func:`split_views`: ``[N * V, H, W, C]`` -> ``[N, H, V * W, C]``."""
    if num_views == 1:
        return views
    nv, h, w, c = views.shape
    n = nv // num_views
    return views.reshape(n, num_views, h, w, c).transpose(1, 2).reshape(n, h, num_views * w, c)


def and_logit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The logit of ``sigmoid(a) * sigmoid(b)``: P(both) of two independent events' logits.

    Stable where the product nears 1 (where a 1% FPR threshold lives): with ``p = s(a) s(b)``,
    ``1 - p = s(-a) + s(a) s(-b)``, summed in log space. Plain ops only (softplus, exp, log,
    maximum), so it exports to ONNX and TensorRT as part of the network.
    """
    log_p = -F.softplus(-a) - F.softplus(-b)
    x, y = -F.softplus(a), -F.softplus(-a) - F.softplus(b)  # log s(-a), log s(a) s(-b)
    top = torch.maximum(x, y)
    log_q = top + torch.log(torch.exp(x - top) + torch.exp(y - top))
    return log_p - log_q


def preprocess_frames(
    frames: torch.Tensor,
    num_views: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    size: int | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 frames ``[N, H, V * W, 3]`` -> normalised views ``[N * V, 3, s, s]`` of ``dtype``.

    The one place frames become network input, for the model and every backend alike (which
    pass their network's ``dtype`` and layout): :func:`split_views`, then one pass of the fused
    op :func:`torchrl_reward.ops.preprocess`, written straight in the layout asked for
    (channels-last by default, the faster one for the convolutions on CPU and GPU; exported
    graphs take contiguous NCHW). ``size`` resizes (``None``: the frames' own size).
    """
    views = split_views(frames, num_views).contiguous()
    return preprocess(views, mean, std, size=size, dtype=dtype, channels_last=channels_last)


def torchvision_resnet(arch: str) -> ResNet:
    """A randomly initialised torchvision ResNet: ``resnet18`` ... ``resnet152`` as torchvision
    names them, and ``resnet10`` (one basic block per stage, as SERL's reward classifier), built
    by torchvision's own :class:`~torchvision.models.ResNet` class."""
    if arch == "resnet10":
        return ResNet(BasicBlock, [1, 1, 1, 1])
    return getattr(torchvision.models, arch)(weights=None)


def keep_stages(backbone: ResNet, stages: int) -> int:
    """Drop ``backbone``'s residual stages after the first ``stages`` (1-4) in place; returns
    the width of the features it then pools. Most of a ResNet's weights are in its last stage
    (8.4 of ResNet-18's 11.2 M), so fewer stages make a checkpoint small enough to ship."""
    for index in range(stages + 1, 5):
        setattr(backbone, f"layer{index}", nn.Identity())
    last = getattr(backbone, f"layer{stages}")
    return [m for m in last.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision caches ``arch``'s ImageNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    if arch == "resnet10":
        raise ValueError("resnet10 has no ImageNet weights in torchvision; train it from scratch.")
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_pretrained(backbone: nn.Module, path: str | os.PathLike, arch: str) -> None:
    """Load a local torchvision ImageNet state dict into ``backbone`` (its ``fc`` is dropped)."""
    if str(path) == "imagenet":
        path = imagenet_weights_path(arch)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained_weights='imagenet': {arch}'s ImageNet weights are not in torch's "
                f"cache ({path}) and are never downloaded at run time; fetch them once with "
                f"torchvision.models.{arch}(weights='IMAGENET1K_V1') where there is internet, "
                "or pass a file path."
            )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained_weights file {str(path)!r} does not exist; weights are never downloaded "
            "at run time: fetch torchvision's ImageNet state dict yourself and pass its path, or "
            "set pretrained_weights=None to train from scratch."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"pretrained_weights {str(path)!r} is not a readable torch state dict: {err}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"pretrained_weights {str(path)!r} holds {type(state).__name__}, not a state dict."
        )
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"pretrained_weights {str(path)!r} does not fit torchvision's {arch}: "
            f"missing {missing[:3]}, unexpected {list(unexpected)[:3]}; pass the {arch} weights."
        )


class ResNetRewardModel(nn.Module):
    """A torchvision ResNet with a one-logit head that scores P(success) of RGB frames.

    Args:
        arch (str, optional): torchvision ResNet depth, one of ``resnet10`` ... ``resnet152``
            (:func:`torchvision_resnet`). Defaults to ``"resnet18"``.
        stages (int, optional): residual stages of the trunk kept, 1-4 (:func:`keep_stages`):
            ``resnet10`` with 3 stages is 1.2 M weights, ResNet-18 11.2 M. Defaults to ``4``.
        image_size (int, optional): side of the square network input; frames of another size
            are resized (bilinear). Defaults to ``128``.
        mean (sequence of float, optional): per-channel mean in [0, 1]. Defaults to ImageNet's.
        std (sequence of float, optional): per-channel std in [0, 1]. Defaults to ImageNet's.
        threshold (float, optional): probability at or above which :meth:`predict` says
            success; training sets it from a target false-positive rate. Defaults to ``0.5``.
        pretrained_weights (str or path, optional): a local torchvision ImageNet state dict for
            the backbone, or ``"imagenet"`` for the file torchvision caches
            (:func:`imagenet_weights_path`). Never downloaded. Defaults to ``None`` (random
            init).
        dropout (float, optional): dropout before the last linear layer. Defaults to ``0.1``.
        hidden_dim (int, optional): width of the head's hidden layer. Defaults to ``256``.
        num_views (int, optional): camera views tiled side by side in each frame, which is
            then ``image_size`` high and ``num_views * image_size`` wide. Defaults to ``1``.
        proprio (mapping of str to int, optional): named low-dimensional inputs and their
            widths, e.g. ``{"qvel": 9}``, read from the tensordict key of the same name and
            concatenated in this order. Robot state only: object or goal positions are
            privileged. Defaults to ``None`` (image only).
        proprio_mean / proprio_std (sequence of float, optional): the inputs' normalisation,
            set from the training data. Default to 0 and 1.
        head (str, optional): ``"joint"``, one logit of image and proprio features together,
            or ``"factored"`` (needs ``proprio``): the image's logit (:attr:`head`, trained on
            the placed label) and the proprio inputs' logit (:attr:`proprio_head`, trained on
            the static label), combined by :func:`and_logit`. Defaults to ``"joint"``.

    Head: ``Linear(num_views * features [+ 64], hidden_dim) - ReLU - Dropout -
    Linear(hidden_dim, 1)``, the proprio inputs entering through ``Linear(width, 64) - ReLU``
    (``factored``: the image features alone, and ``Linear(64, 64) - ReLU - Linear(64, 1)`` on
    the proprio features).

    Examples:
        >>> model = ResNetRewardModel(image_size=64).eval()
        >>> frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
        >>> model(frames).shape
        torch.Size([2])
        >>> probs = model.predict_proba(frames)
        >>> bool(((probs >= 0) & (probs <= 1)).all())
        True
    """

    def __init__(
        self,
        arch: str = "resnet18",
        image_size: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        threshold: float = 0.5,
        pretrained_weights: str | os.PathLike | None = None,
        dropout: float = 0.1,
        hidden_dim: int = 256,
        num_views: int = 1,
        proprio: Mapping[str, int] | None = None,
        proprio_mean: Sequence[float] | None = None,
        proprio_std: Sequence[float] | None = None,
        head: str = "joint",
        stages: int = 4,
    ) -> None:
        super().__init__()
        mean = IMAGENET_MEAN if mean is None else mean
        std = IMAGENET_STD if std is None else std
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}.")
        if stages not in (1, 2, 3, 4):
            raise ValueError(f"stages must be 1, 2, 3 or 4 (residual stages kept), got {stages!r}.")
        if not (isinstance(image_size, int) and 16 <= image_size <= 1024):
            raise ValueError(f"image_size must be an int in [16, 1024], got {image_size!r}.")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got {mean} and {std}.")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if not (isinstance(num_views, int) and num_views >= 1):
            raise ValueError(f"num_views must be an int >= 1, got {num_views!r}.")
        proprio = dict(proprio or {})
        if any(not (isinstance(w, int) and w >= 1) for w in proprio.values()):
            raise ValueError(f"proprio widths must be ints >= 1, got {proprio}.")
        width = sum(proprio.values())
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        if head == "factored" and not width:
            raise ValueError(
                "head='factored' scores the static half from proprio inputs; give proprio "
                "(e.g. {'qvel': 9}) or use head='joint'."
            )
        proprio_mean = [0.0] * width if proprio_mean is None else list(proprio_mean)
        proprio_std = [1.0] * width if proprio_std is None else list(proprio_std)
        if len(proprio_mean) != width or len(proprio_std) != width or min(proprio_std or [1]) <= 0:
            raise ValueError(
                f"proprio_mean and proprio_std need {width} values (std > 0), got "
                f"{len(proprio_mean)} and {len(proprio_std)}."
            )
        self.arch = arch
        self.stages = stages
        self.image_size = image_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.threshold = float(threshold)
        self.dropout = float(dropout)
        self.hidden_dim = int(hidden_dim)
        self.num_views = num_views
        self.proprio = proprio
        self.head_type = head
        # In the config, not the state dict: checkpoints of image-only models stay loadable.
        for name, values in (("proprio_mean", proprio_mean), ("proprio_std", proprio_std)):
            tensor = torch.tensor(values, dtype=torch.float32)
            self.register_buffer(name, tensor, persistent=False)
        self.checkpoint_metadata: dict[str, Any] = {}

        backbone = torchvision_resnet(arch)
        if pretrained_weights is not None:
            _load_pretrained(backbone, pretrained_weights, arch)
        features = keep_stages(backbone, stages)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.proprio_encoder = (
            nn.Sequential(nn.Linear(width, _PROPRIO_FEATURES), nn.ReLU(inplace=True))
            if width
            else None
        )
        features = num_views * features
        if head == "joint":
            features += _PROPRIO_FEATURES if width else 0
        self.proprio_head = (
            nn.Sequential(
                nn.Linear(_PROPRIO_FEATURES, _PROPRIO_FEATURES),
                nn.ReLU(inplace=True),
                nn.Linear(_PROPRIO_FEATURES, 1),
            )
            if head == "factored"
            else None
        )
        self.head = nn.Sequential(
            nn.Linear(features, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture (no weights)."""
        return {
            "arch": self.arch,
            "stages": self.stages,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "threshold": self.threshold,
            "dropout": self.dropout,
            "hidden_dim": self.hidden_dim,
            "num_views": self.num_views,
            "proprio": dict(self.proprio),
            "proprio_mean": self.proprio_mean.tolist(),
            "proprio_std": self.proprio_std.tolist(),
            "head": self.head_type,
        }

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of the frames the model scores: its views tiled side by side."""
        return (self.image_size, self.num_views * self.image_size, 3)

    @property
    def proprio_width(self) -> int:
        """Values of all proprio inputs together (0 for an image-only model)."""
        return sum(self.proprio.values())

    def preprocess(
        self,
        images: torch.Tensor,
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
    ) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` or ``[N, 3, H, W]`` -> normalised ``[N * V, 3, s, s]``.

        One fused pass of :func:`preprocess_frames` (what the accelerated backends run too), so
        training and inference cannot disagree on preprocessing. ``dtype`` (float32 or float16)
        and the layout are the network's: channels-last by default, the faster one for the
        convolutions.
        """
        _check_images(images)
        if images.dim() != 4:
            raise ValueError(f"preprocess expects a 4-D batch, got {tuple(images.shape)}.")
        if images.shape[-1] != 3:
            images = images.permute(0, 2, 3, 1)
        if images.shape[2] % self.num_views:
            raise ValueError(
                f"frames {tuple(images.shape[1:])} do not tile {self.num_views} views side by "
                f"side; the model scores {self.frame_shape} frames."
            )
        return preprocess_frames(
            images,
            self.num_views,
            self.mean,
            self.std,
            size=self.image_size,
            dtype=dtype,
            channels_last=channels_last,
        )

    def backbone_forward(
        self, x: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[N]`` of preprocessed views ``[N * V, 3, s, s]`` and raw proprio ``[N, D]``
        (the exported backends' entry point)."""
        if self.head_type == "factored":
            return and_logit(*self.backbone_factors(x, proprio))
        features = self._image_features(x)
        if self.proprio_encoder is not None:
            features = torch.cat([features, self._proprio_features(proprio, features.dtype)], -1)
        return self.head(features).squeeze(-1)

    def backbone_factors(
        self, x: torch.Tensor, proprio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``factored`` model's two logits ``[N]``: the image's (placed) and the proprio
        inputs' (static), of preprocessed views and raw proprio as :meth:`backbone_forward`."""
        if self.head_type != "factored":
            raise ValueError("Only a head='factored' model has factor logits.")
        features = self._image_features(x)
        return self.head(features).squeeze(-1), self.proprio_logit(proprio, features.dtype)

    def proprio_logit(
        self, proprio: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A ``factored`` model's static logit ``[N]`` of raw proprio ``[N, D]`` alone: no image,
        so training can fit it on many more frames than an image batch holds."""
        if self.head_type != "factored":
            raise ValueError("Only a head='factored' model has factor logits.")
        return self.proprio_head(self._proprio_features(proprio, dtype)).squeeze(-1)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's features of preprocessed views ``[N * V, 3, s, s]``, each frame's views
        side by side: ``[N, V * features]``."""
        features = self.backbone(x)
        return features.reshape(-1, self.num_views * features.shape[-1])

    def _proprio_features(self, proprio: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        normalised = (proprio.to(dtype) - self.proprio_mean) / self.proprio_std
        return self.proprio_encoder(normalised)

    def _flat_proprio(self, proprio: torch.Tensor | None, batch: torch.Size) -> torch.Tensor | None:
        names = list(self.proprio)
        if not names:
            if proprio is not None:
                raise ValueError("This reward model takes no proprio inputs (image only).")
            return None
        if proprio is None:
            raise ValueError(f"This reward model needs its proprio inputs {names}; none given.")
        _check_proprio(proprio, batch, self.proprio_width, names)
        return proprio.reshape(-1, self.proprio_width)

    def _flat_inputs(
        self, images: torch.Tensor, proprio: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Size]:
        """Checked frames ``[N, ...]`` and proprio ``[N, D]`` (or None) of inputs with leading
        dims ``B`` (``N = prod(B)``), and ``B``."""
        _check_images(images)
        batch = images.shape[:-3]
        flat = images.reshape(-1, *images.shape[-3:])
        return flat, self._flat_proprio(proprio, batch), batch

    def forward(self, images: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Success logits ``[*B]`` of uint8 frames ``[*B, H, W, 3]`` or ``[*B, 3, H, W]`` and,
        for a model with proprio inputs, their values ``[*B, D]`` (in :attr:`proprio` order)."""
        flat, flat_proprio, batch = self._flat_inputs(images, proprio)
        return self.backbone_forward(self.preprocess(flat), flat_proprio).reshape(batch)

    def factor_logits(
        self, images: torch.Tensor, proprio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``factored`` model's (image, proprio) logits ``[*B]`` of frames as :meth:`forward`
        takes them; training fits each to its own label."""
        flat, flat_proprio, batch = self._flat_inputs(images, proprio)
        image_logit, proprio_logit = self.backbone_factors(self.preprocess(flat), flat_proprio)
        return image_logit.reshape(batch), proprio_logit.reshape(batch)

    @torch.no_grad()
    def predict_proba(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """P(success) ``[*B]`` in [0, 1], without gradient, optionally ``chunk_size`` at a time.

        Dropout follows the module's mode: call ``.eval()`` for deterministic scores
        (:meth:`load` returns the model in eval mode).
        """
        flat, flat_proprio, batch = self._flat_inputs(images, proprio)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"predict_proba: chunk_size must be >= 1 or None, got {chunk_size}.")
        size = chunk_size or max(1, flat.shape[0])
        probs = score_chunks(
            lambda x, p: torch.sigmoid(self(x, p)),
            frame_chunks(flat, flat_proprio, size),
            flat.shape[0],
        )
        return probs.reshape(batch)

    def predict(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Boolean success decisions ``[*B]``: probability at or above :attr:`threshold`."""
        return self.predict_proba(images, proprio, chunk_size=chunk_size) >= self.threshold

    def checkpoint(self, **metadata: Any) -> dict[str, Any]:
        """The checkpoint dict :meth:`save` writes (CPU tensors; metadata merged in)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "metadata": {**self.checkpoint_metadata, **metadata},
        }

    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Atomically write a self-describing checkpoint; ``metadata`` must be plain data."""
        path = Path(path)
        with atomic_write(path, "wb") as f:
            torch.save(self.checkpoint(**metadata), f)
        return path

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, source: str = "checkpoint") -> ResNetRewardModel:
        """Rebuild a model (eval mode) from a dict written by :meth:`checkpoint`."""
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{source} is not a ResNetRewardModel checkpoint (no {CHECKPOINT_FORMAT!r} "
                "format tag); save models with ResNetRewardModel.save."
            )
        if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
            raise ValueError(
                f"{source} has checkpoint version {checkpoint['version']}, newer than this "
                f"library's {CHECKPOINT_VERSION}; upgrade torchrl_reward."
            )
        unknown = sorted(set(checkpoint["config"]) - set(inspect.signature(cls).parameters))
        if unknown:
            raise ValueError(
                f"{source} has model settings this library does not know: {unknown}; it was "
                "written by another torchrl_reward version (upgrade, or retrain here)."
            )
        model = cls(**checkpoint["config"])
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:2]
            raise ValueError(
                f"{source} weights do not fit {checkpoint['config'].get('arch')}: {' '.join(first)}"
            ) from None
        model.checkpoint_metadata = dict(checkpoint.get("metadata", {}))
        return model.eval()

    @classmethod
    def load(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> ResNetRewardModel:
        """Rebuild a model saved by :meth:`save`, in eval mode, on ``map_location``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Reward model checkpoint {str(path)!r} does not exist.")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"Reward model checkpoint {str(path)!r} is unreadable (corrupt or truncated?): "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from None
        return cls.from_checkpoint(checkpoint, source=f"{str(path)!r}").to(map_location)
