"""Inference backends for the reward model behind one interface, and their export.

``make_backend(model, backend="auto" | "torch" | "onnxruntime" | "tensorrt", ...)`` returns a
:class:`RewardBackend`: a callable from uint8 frames ``[N, s, s, 3]`` to P(success) ``[N]``.
:class:`FrameScorer` feeds it any number of frames, from any device, a chunk at a time.
"""

from torchrl_reward.inference.base import RewardBackend, file_sha256, model_fingerprint
from torchrl_reward.inference.export import (
    export_reward,
    frames_from_episodes,
    load_manifest,
    load_validation_frames,
    load_validation_proprio,
    time_chunk,
)
from torchrl_reward.inference.factory import BACKENDS, make_backend
from torchrl_reward.inference.onnx_backend import (
    OnnxBackend,
    export_onnx,
    quantize_onnx_int8,
    read_onnx_metadata,
)
from torchrl_reward.inference.parity import ParityReport, check_parity
from torchrl_reward.inference.scoring import FrameScorer, score_frames
from torchrl_reward.inference.tensorrt_backend import (
    TensorRTBackend,
    engine_cache_key,
    tensorrt_unavailable_reason,
)
from torchrl_reward.inference.torch_backend import TorchBackend
from torchrl_reward.utils import resolve_device

__all__ = [
    "BACKENDS",
    "FrameScorer",
    "OnnxBackend",
    "ParityReport",
    "RewardBackend",
    "TensorRTBackend",
    "TorchBackend",
    "check_parity",
    "engine_cache_key",
    "export_onnx",
    "export_reward",
    "file_sha256",
    "frames_from_episodes",
    "load_manifest",
    "load_validation_frames",
    "load_validation_proprio",
    "make_backend",
    "model_fingerprint",
    "quantize_onnx_int8",
    "read_onnx_metadata",
    "resolve_device",
    "score_frames",
    "tensorrt_unavailable_reason",
    "time_chunk",
]
