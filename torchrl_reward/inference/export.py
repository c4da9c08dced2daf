"""Export a reward checkpoint for the accelerated backends, with parity checks, in one folder.

``export_reward`` writes, into ``out_dir``::

    reward_fp32.onnx          ONNX Runtime (CPU), checked against float32 torch
    reward_int8.onnx          ONNX Runtime int8, calibrated on recorded frames, kept if it passes
    reward_fp16.onnx          the TensorRT engine's source (checked when the engine is built)
    validation_frames.pt      the uint8 frames every parity check runs on
    validation_proprio.pt     their proprio values (models with proprio inputs only)
    export.json               the manifest: model fingerprint, file hashes, parity, timings

:func:`~torchrl_reward.inference.make_backend` reads the manifest: it only uses files whose
parity passed, made from the same weights as the model it is given.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from tensordict import TensorDict

from torchrl_reward.data import list_episode_files
from torchrl_reward.data.episode_io import iter_episodes
from torchrl_reward.inference.base import RewardBackend, file_sha256, model_fingerprint
from torchrl_reward.inference.onnx_backend import (
    OnnxBackend,
    _as_frames,
    export_onnx,
    quantize_onnx_int8,
)
from torchrl_reward.inference.parity import MIN_AGREEMENT, check_parity
from torchrl_reward.inference.torch_backend import TorchBackend
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training.dataset import select_views
from torchrl_reward.utils import atomic_write

logger = logging.getLogger(__name__)

MANIFEST = "export.json"
VALIDATION_FRAMES = "validation_frames.pt"
VALIDATION_PROPRIO = "validation_proprio.pt"
MANIFEST_FORMAT = "torchrl_reward.export"
MANIFEST_VERSION = 1


def time_chunk(
    backend: RewardBackend,
    frames: torch.Tensor,
    repeats: int = 3,
    proprio: torch.Tensor | None = None,
) -> float:
    """Best-of-``repeats`` milliseconds to score one chunk (after one warm-up call)."""
    chunk = frames[: backend.chunk_size].to(backend.device)
    values = None if proprio is None else proprio[: backend.chunk_size].to(backend.device)
    backend(chunk, values)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        backend(chunk, values)
        if backend.device.type == "cuda":
            torch.cuda.synchronize(backend.device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def export_reward(
    model: ResNetRewardModel,
    out_dir: str | os.PathLike,
    validation_frames: torch.Tensor,
    *,
    validation_proprio: torch.Tensor | None = None,
    calibration_frames: torch.Tensor | None = None,
    calibration_proprio: torch.Tensor | None = None,
    fp16: bool = True,
    min_agreement: float = MIN_AGREEMENT,
    calibration_method: str = "percentile",
    chunk_size: int = 256,
    threads: int | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ONNX (fp32, int8, fp16), check parity on real frames, write a manifest.

    Args:
        model (ResNetRewardModel): the reward model.
        out_dir (str or path): the folder to write (created if needed).
        validation_frames (torch.Tensor): uint8 ``[N, s, V * s, 3]`` recorded frames, distinct
            from the calibration frames; labels at the model's threshold are compared on them.

    Keyword Args:
        validation_proprio (torch.Tensor, optional): their proprio values ``[N, D]``, needed
            for a model with proprio inputs. Defaults to ``None``.
        calibration_frames (torch.Tensor, optional): uint8 frames for int8 calibration.
            Defaults to ``None`` (no int8 export).
        calibration_proprio (torch.Tensor, optional): their proprio values. Defaults to
            ``None``.
        fp16 (bool, optional): also write the float16 ONNX for TensorRT. Defaults to ``True``.
        min_agreement (float, optional): label agreement a backend needs to be used.
            Defaults to ``0.995``.
        calibration_method (str, optional): see :func:`quantize_onnx_int8`.
            Defaults to ``"percentile"``.
        chunk_size (int, optional): the batch timings are measured on. Defaults to ``256``.
        threads (int, optional): ONNX Runtime intra-op threads. Defaults to ``None``.

    Returns:
        dict: the manifest written to ``out_dir/export.json``.
    """
    shape = model.frame_shape
    frames = _as_frames(validation_frames, shape, "validation_frames")
    if frames.shape[0] == 0:
        raise ValueError("export_reward: validation_frames is empty; pass recorded frames.")
    proprio = validation_proprio
    if model.proprio_width and proprio is None:
        raise ValueError(
            f"export_reward: the model reads proprio inputs {list(model.proprio)}; pass "
            "validation_proprio (and calibration_proprio) beside the frames."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = TorchBackend(model, "cpu", chunk_size=chunk_size, channels_last=False)
    entries: dict[str, dict[str, Any]] = {
        "torch": {"ms_per_chunk": time_chunk(reference, frames, proprio=proprio), "passed": True}
    }

    def check(name: str, path: Path) -> None:
        backend = OnnxBackend(path, chunk_size=chunk_size, threads=threads)
        report = check_parity(
            backend,
            reference,
            frames,
            threshold=model.threshold,
            min_agreement=min_agreement,
            proprio=proprio,
        )
        timed = time_chunk(backend, frames, proprio=proprio) if report.passed else None
        entries[name] = {
            "path": path.name,
            "sha256": file_sha256(path),
            **report.as_dict(),
            "ms_per_chunk": timed,
        }

    fp32_path = export_onnx(model, out_dir / "reward_fp32.onnx")
    check("onnxruntime-fp32", fp32_path)
    if calibration_frames is not None:
        calibration = _as_frames(calibration_frames, shape, "calibration_frames")
        # An int8 first convolution is faster; if it costs agreement, it goes back to float.
        for float_first_conv in (False, True):
            int8_path = quantize_onnx_int8(
                fp32_path,
                out_dir / "reward_int8.onnx",
                calibration,
                calibration_proprio=calibration_proprio,
                method=calibration_method,
                float_first_conv=float_first_conv,
            )
            check("onnxruntime-int8", int8_path)
            entries["onnxruntime-int8"]["float_first_conv"] = float_first_conv
            if entries["onnxruntime-int8"]["passed"]:
                break
            logger.info(
                "int8 export (float first conv: %s) agreed on %.4f of the labels, below %.4f",
                float_first_conv,
                entries["onnxruntime-int8"]["agreement"],
                min_agreement,
            )
    if fp16:
        fp16_path = export_onnx(model, out_dir / "reward_fp16.onnx", half=True)
        # Its parity is checked on the GPU, when TensorRT builds the engine from this file.
        entries["tensorrt-fp16"] = {"path": fp16_path.name, "sha256": file_sha256(fp16_path)}
    with atomic_write(out_dir / VALIDATION_FRAMES, "wb") as f:
        torch.save(frames, f)
    if proprio is not None:
        with atomic_write(out_dir / VALIDATION_PROPRIO, "wb") as f:
            torch.save(proprio.detach().cpu().float(), f)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "fingerprint": model_fingerprint(model),
        "image_size": model.image_size,
        "num_views": model.num_views,
        "proprio": dict(model.proprio),
        "threshold": model.threshold,
        "min_agreement": min_agreement,
        "chunk_size": chunk_size,
        "validation_frames": int(frames.shape[0]),
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        "backends": entries,
    }
    with atomic_write(out_dir / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


_GOLDEN = 0.6180339887498949  # the fractional parts of i * this spread evenly over [0, 1)


def _evenly(frames: torch.Tensor, limit: int, phase: float = 0.0) -> torch.Tensor:
    """At most ``limit`` frames, evenly spaced over ``frames``, the first ``phase`` of a
    spacing in (``phase`` in ``[0, 1)``)."""
    count = frames.shape[0]
    if count <= limit:
        return frames
    return frames[((torch.arange(limit) + phase) * (count / limit)).long()]


def training_views(model: ResNetRewardModel) -> list[int] | None:
    """The recorded views ``model`` was trained on (``train.views``); ``None``: all of them."""
    views = model.checkpoint_metadata.get("training_config", {}).get("views")
    return None if views is None else list(views)


def validation_episodes(model: ResNetRewardModel) -> list[str] | None:
    """The episode files (relative to the recording root) ``model`` was validated on in
    training; ``None`` for a checkpoint written before the trainer recorded them."""
    episodes = model.checkpoint_metadata.get("validation_episodes")
    return None if episodes is None else list(episodes)


def _split_for_export(
    root: Path, paths: list[Path], parity_episodes: Collection[str] | None, held_out: bool
) -> tuple[list[Path], list[Path]]:
    """``(calibration, parity)`` files: ``parity_episodes`` and the others, or alternate files
    for a ``held_out`` recording or, logged, for an older checkpoint without them."""
    if held_out:
        return paths[0::2], paths[1::2]
    if parity_episodes is None:
        logger.warning(
            "The checkpoint does not record its validation episodes; falling back to parity "
            "frames from every other episode file of %s, which may include training frames.",
            root,
        )
        return paths[0::2], paths[1::2]
    wanted = set(parity_episodes)
    parity = [path for path in paths if str(path.relative_to(root)) in wanted]
    if not parity:
        example = f" (e.g. {min(wanted)})" if wanted else ""
        raise ValueError(
            f"None of the {len(wanted)} parity episodes{example} is an episode file under "
            f"{str(root)!r}; export from the episodes the model was trained on, or, for a "
            "recording it never saw (a shipped checkpoint), pass held_out=true."
        )
    return [path for path in paths if str(path.relative_to(root)) not in wanted], parity


def frames_from_episodes(
    root: str | os.PathLike,
    *,
    max_calibration: int = 256,
    max_validation: int = 512,
    proprio: Sequence[str] = (),
    views: Sequence[int] | None = None,
    parity_episodes: Collection[str] | None = None,
    held_out: bool = False,
) -> tuple[TensorDict, TensorDict]:
    """Calibration and validation (parity) frames from recorded episodes, split by episode.

    Validation frames come from ``parity_episodes`` (files relative to ``root``, e.g. the
    training run's validation episodes, :func:`validation_episodes`), calibration frames from
    the other episodes; with ``None``, alternate episode files go to each side (a logged
    fallback: parity frames may then be training frames); ``held_out=True`` splits alternate
    files on purpose, for a recording the model never trained on. No episode gives frames to both
    sides. Episodes are read one at a time by ``iter_episodes`` (unreadable files skipped with
    a warning) and each keeps an even share of its side's cap, so memory stays bounded by the
    caps whatever the dataset's size. ``views`` keeps those tiled views of the recorded frames,
    in that order, as the trainer does (``None``: all).

    Returns:
        ``(calibration, validation)``: tensordicts of batch ``[N]`` holding ``"pixels"``
        (uint8 ``[N, H, W, 3]``) and each key of ``proprio`` (e.g. ``"qvel"``), concatenated
        under ``"proprio"`` (float32 ``[N, D]``) when ``proprio`` is not empty.
    """
    root = Path(root)
    keys = ["pixels", *proprio]
    paths = list_episode_files(root)
    sides = _split_for_export(root, paths, parity_episodes, held_out)
    side_of = {path: i for i, files in enumerate(sides) for path in files}
    limits = (max_calibration, max_validation)
    per_episode = [
        -(-limit // max(len(files), 1)) for limit, files in zip(limits, sides, strict=True)
    ]
    kept: tuple[list[TensorDict], list[TensorDict]] = ([], [])
    for path, episode in iter_episodes(root, paths):
        missing = [key for key in keys if key not in episode]
        if missing:
            raise ValueError(f"Episode file {path} has no per-frame {missing}.")
        side = side_of[path]
        # Each episode's picks start at another point of its timeline: with more episodes than
        # the cap (one frame each), a fixed start would give every episode's first frame, a
        # still arm at reset, and int8 would calibrate its ranges on that alone.
        phase = (len(kept[side]) * _GOLDEN) % 1.0
        frames = _evenly(episode.select(*keys), per_episode[side], phase)
        if views is not None:
            pixels = frames["pixels"]
            recorded = pixels.shape[2] // pixels.shape[1]
            frames.set("pixels", select_views(pixels, list(views), recorded))
        kept[side].append(frames)
    if not all(kept):
        raise ValueError(
            f"{str(root)!r} holds too few readable episodes ({len(paths)} file(s)); export "
            "needs at least 2 (one to calibrate, one to validate)."
        )
    out = [_evenly(torch.cat(frames), limit) for frames, limit in zip(kept, limits, strict=True)]
    for side in out:
        if proprio:
            side.set("proprio", torch.cat([side.pop(key).float() for key in proprio], dim=-1))
    return out[0], out[1]


def export_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`export_from_episodes` keyword arguments from a ``configs/export_reward.yaml`` node
    (the script's and the pipeline's ``export`` stage)."""
    return dict(
        max_calibration=cfg["max_calibration_frames"],
        max_validation=cfg["max_validation_frames"],
        int8=cfg["int8"],
        fp16=cfg["fp16"],
        min_agreement=cfg["min_agreement"],
        held_out=cfg["held_out"],
        calibration_method=cfg["calibration_method"],
        chunk_size=cfg["chunk_size"],
        threads=cfg["threads"],
    )


def export_from_episodes(
    model: ResNetRewardModel,
    out_dir: str | os.PathLike,
    episodes_dir: str | os.PathLike,
    *,
    max_calibration: int = 256,
    max_validation: int = 512,
    int8: bool = True,
    held_out: bool = False,
    **export_kwargs: Any,
) -> dict[str, Any]:
    """:func:`export_reward` on recorded episodes' frames, as the model read them in training.

    The frames keep the checkpoint's training views (:func:`training_views`) and come with its
    proprio inputs. Parity frames come from the training run's validation episodes
    (:func:`validation_episodes`), int8 calibration frames from the other episodes; a checkpoint
    that does not record them falls back to alternate episode files (logged), as does a
    ``held_out`` recording (one the model never trained on, e.g. for a shipped checkpoint).

    Args:
        model (ResNetRewardModel): the reward model, loaded from its checkpoint.
        out_dir (str or path): the export folder.
        episodes_dir (str or path): recorded episodes (``success/``, ``failure/``).

    Keyword Args:
        max_calibration (int, optional): int8 calibration frames. Defaults to ``256``.
        max_validation (int, optional): parity frames. Defaults to ``512``.
        int8 (bool, optional): calibrate and check an int8 export. Defaults to ``True``.
        held_out (bool, optional): ``episodes_dir`` holds no training episode of the model:
            alternate files calibrate and check parity. Defaults to ``False``.
        **export_kwargs: more options of :func:`export_reward` (``fp16``, ``chunk_size``, ...).

    Returns:
        dict: the manifest written to ``out_dir/export.json``.
    """
    calibration, validation = frames_from_episodes(
        episodes_dir,
        max_calibration=max_calibration,
        max_validation=max_validation,
        proprio=list(model.proprio),
        views=training_views(model),
        parity_episodes=validation_episodes(model),
        held_out=held_out,
    )
    return export_reward(
        model,
        out_dir,
        validation["pixels"],
        validation_proprio=validation.get("proprio", None),
        calibration_frames=calibration["pixels"] if int8 else None,
        calibration_proprio=calibration.get("proprio", None) if int8 else None,
        **export_kwargs,
    )


def export_checkpoint(
    model: ResNetRewardModel, out_dir: str | os.PathLike, episodes_dir: str | os.PathLike, cfg: Any
) -> dict[str, Any]:
    """:func:`export_from_episodes` with a ``configs/export_reward.yaml`` node's options, once.

    An export of these exact weights already in ``out_dir`` is kept (a resumed stage does not
    export again). ``cfg.fp16`` ``None``: the fp16 ONNX (TensorRT's source) only when a GPU is
    visible.
    """
    try:
        return load_manifest(out_dir, model)
    except (FileNotFoundError, ValueError):
        fp16 = torch.cuda.is_available() if cfg["fp16"] is None else cfg["fp16"]
        options = {**export_options(cfg), "fp16": fp16}
        return export_from_episodes(model, out_dir, episodes_dir, **options)


def load_manifest(export_dir: str | os.PathLike, model: ResNetRewardModel) -> dict[str, Any]:
    """The manifest of ``export_dir``, checked to come from ``model``'s exact weights."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"No {MANIFEST} in {str(export_dir)!r}; export the checkpoint first: "
            "python scripts/export_reward.py checkpoint_path=... out_dir=..."
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is unreadable (corrupt?): {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{str(path)!r} is not a torchrl_reward export manifest.")
    if manifest.get("fingerprint") != model_fingerprint(model):
        raise ValueError(
            f"{str(export_dir)!r} was exported from other weights than this model; re-run "
            "scripts/export_reward.py on this checkpoint."
        )
    return manifest


def load_validation_frames(export_dir: str | os.PathLike) -> torch.Tensor:
    """The uint8 frames the export's parity checks ran on."""
    return torch.load(Path(export_dir) / VALIDATION_FRAMES, weights_only=True)


def load_validation_proprio(export_dir: str | os.PathLike) -> torch.Tensor | None:
    """Their proprio values, or ``None`` for an image-only model's export."""
    path = Path(export_dir) / VALIDATION_PROPRIO
    return torch.load(path, weights_only=True) if path.is_file() else None
