"""``make_backend``: one entry point that picks and builds an inference backend."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from torchrl_reward.inference.base import RewardBackend
from torchrl_reward.inference.export import (
    load_manifest,
    load_validation_frames,
    load_validation_proprio,
)
from torchrl_reward.inference.onnx_backend import OnnxBackend
from torchrl_reward.inference.parity import check_parity
from torchrl_reward.inference.tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason
from torchrl_reward.inference.torch_backend import TorchBackend
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.utils import resolve_device

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
logger = logging.getLogger(__name__)


def _onnxruntime(
    model: ResNetRewardModel, export_dir: Path, chunk_size: int, threads: int | None
) -> tuple[OnnxBackend, float]:
    """The fastest ONNX Runtime export of ``export_dir`` that passed parity, and its timing."""
    entries = load_manifest(export_dir, model)["backends"]
    passed = {
        name: entry
        for name, entry in entries.items()
        if name.startswith("onnxruntime-") and entry.get("passed")
    }
    if not passed:
        seen = {n: e.get("agreement") for n, e in entries.items() if n.startswith("onnxruntime")}
        raise RuntimeError(
            f"No ONNX Runtime export in {str(export_dir)!r} passed its parity check (label "
            f"agreement {seen}); use backend='torch' or re-export with more calibration frames."
        )
    name = min(passed, key=lambda n: passed[n]["ms_per_chunk"])
    backend = OnnxBackend(export_dir / passed[name]["path"], chunk_size=chunk_size, threads=threads)
    return backend, passed[name]["ms_per_chunk"]


def _tensorrt(
    model: ResNetRewardModel,
    export_dir: Path,
    device: torch.device,
    chunk_size: int,
    cache_dir: str | os.PathLike | None,
) -> TensorRTBackend:
    """A TensorRT engine from the export's fp16 ONNX, checked against float32 torch."""
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"backend='tensorrt' cannot run: {reason}; use backend='torch'.")
    entry = load_manifest(export_dir, model)["backends"].get("tensorrt-fp16")
    if entry is None:
        raise FileNotFoundError(
            f"{str(export_dir)!r} has no fp16 ONNX for TensorRT; re-export with fp16=true."
        )
    backend = TensorRTBackend(
        export_dir / entry["path"],
        device,
        chunk_size=chunk_size,
        expected_sha256=entry["sha256"],
        cache_dir=cache_dir,
    )
    reference = TorchBackend(model, device, chunk_size=chunk_size)
    report = check_parity(
        backend,
        reference,
        load_validation_frames(export_dir),
        threshold=model.threshold,
        proprio=load_validation_proprio(export_dir),
    )
    if not report.passed:
        raise RuntimeError(
            f"The TensorRT engine agrees with float32 torch on {report.agreement:.2%} of the "
            f"validation labels (< {report.min_agreement:.2%}); use backend='torch'."
        )
    return backend


def make_backend(
    model: ResNetRewardModel,
    backend: str = "auto",
    *,
    device: str | torch.device | int | None = None,
    strict: bool = False,
    chunk_size: int = 256,
    export_dir: str | os.PathLike | None = None,
    amp_dtype: str | None = None,
    compile: bool = False,
    cuda_graph: bool = False,
    fused_conv: bool | None = None,
    threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> RewardBackend:
    """Build the inference backend that scores frames for ``model``.

    Args:
        model (ResNetRewardModel): the reward model (left untouched; backends copy it).
        backend (str, optional): ``"torch"``, ``"onnxruntime"`` (CPU, needs ``export_dir``),
            ``"tensorrt"`` (GPU, needs ``export_dir``) or ``"auto"``: the fastest backend
            available on ``device`` that passed its parity check (TensorRT on a GPU, the
            fastest of torch and the ONNX Runtime exports on the CPU, by the export's
            timings; torch when there is no export). The choice is logged.
            Defaults to ``"auto"``.

    Keyword Args:
        device (str or torch.device, optional): where to run; unavailable GPUs fall back
            with a warning (see :func:`resolve_device`). Defaults to ``None`` (first GPU, else
            CPU).
        strict (bool, optional): raise instead of falling back. Defaults to ``False``.
        chunk_size (int, optional): frames per backend call. Defaults to ``256``.
        export_dir (str or path, optional): output of ``scripts/export_reward.py`` for this
            checkpoint. Defaults to ``None``.
        amp_dtype, compile, cuda_graph, fused_conv: options of :class:`TorchBackend`.
        threads (int, optional): ONNX Runtime intra-op threads. Defaults to ``None``.
        cache_dir (str or path, optional): TensorRT engine cache. Defaults to ``None``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    device = resolve_device(device, strict=strict, owner="make_backend")
    export_dir = Path(export_dir) if export_dir is not None else None
    if backend in ("onnxruntime", "tensorrt") and export_dir is None:
        raise ValueError(
            f"backend={backend!r} needs export_dir, the output of "
            "scripts/export_reward.py for this checkpoint."
        )

    def torch_backend() -> TorchBackend:
        return TorchBackend(
            model,
            device,
            chunk_size=chunk_size,
            amp_dtype=amp_dtype,
            compile=compile,
            cuda_graph=cuda_graph,
            fused_conv=fused_conv,
        )

    if backend == "torch":
        chosen, why = torch_backend(), "requested"
    elif backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError(
                "backend='onnxruntime' runs on the CPU; on a GPU use 'tensorrt' or 'torch'."
            )
        chosen, ms = _onnxruntime(model, export_dir, chunk_size, threads)
        why = f"requested; {ms:.0f} ms per chunk at export"
    elif backend == "tensorrt":
        chosen, why = _tensorrt(model, export_dir, device, chunk_size, cache_dir), "requested"
    elif export_dir is None:
        chosen, why = torch_backend(), "no export_dir, so no accelerated backend to check"
    elif device.type == "cuda":
        try:
            chosen = _tensorrt(model, export_dir, device, chunk_size, cache_dir)
            why = "TensorRT passed its parity check"
        except (RuntimeError, FileNotFoundError) as err:
            chosen, why = torch_backend(), f"TensorRT unusable: {err}"
    else:
        torch_ms = load_manifest(export_dir, model)["backends"]["torch"]["ms_per_chunk"]
        try:
            onnx, onnx_ms = _onnxruntime(model, export_dir, chunk_size, threads)
        except RuntimeError as err:
            chosen, why = torch_backend(), str(err)
        else:
            faster = onnx_ms < torch_ms
            chosen = onnx if faster else torch_backend()
            why = f"export timings: {onnx.name} {onnx_ms:.0f} ms, torch {torch_ms:.0f} ms per chunk"
    logger.info("reward backend %s on %s (backend=%r: %s)", chosen.name, device, backend, why)
    return chosen
