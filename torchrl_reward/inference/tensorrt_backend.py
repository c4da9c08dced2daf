"""TensorRT backend: an engine built from the exported ONNX, a fixed chunk, a CUDA graph.

TensorRT >= 11 networks are strongly typed: the engine's precision is the ONNX's (export with
``half=True`` for float16), there are no builder precision flags. The engine has one fixed
input shape ``[chunk_size, 3, s, s]``; shorter chunks are padded. Engines are cached on disk,
keyed by the ONNX's hash, TensorRT's version, the GPU architecture, the shape and the dtype, so
a stale engine is never reused. Preprocessing, the engine and the sigmoid are captured together
in one CUDA graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from torchrl_reward.inference.base import RewardBackend, file_sha256
from torchrl_reward.inference.onnx_backend import (
    INPUT_NAME,
    OUTPUT_NAME,
    PROPRIO_NAME,
    read_onnx_metadata,
)
from torchrl_reward.models.resnet import preprocess_frames
from torchrl_reward.utils import atomic_write

try:
    import tensorrt as trt
except ImportError:  # an optional extra: pip install torchrl-reward[tensorrt]
    trt = None

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "torchrl_reward" / "tensorrt"


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here, or ``None`` when it can."""
    if trt is None:
        return "the tensorrt package is not installed (pip install torchrl-reward[tensorrt])"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible"
    return None


def engine_cache_key(onnx_sha256: str, device: torch.device, chunk_size: int, dtype: str) -> str:
    """File name of the cached engine: ONNX hash, TensorRT version, GPU arch, shape, dtype."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{onnx_sha256[:16]}-trt{trt.__version__}-sm{major}{minor}-b{chunk_size}-{dtype}.engine"


class TensorRTBackend(RewardBackend):
    """Runs an exported reward ONNX as a TensorRT engine on one GPU.

    Args:
        onnx_path (str or path): the ONNX from :func:`~torchrl_reward.inference.export_onnx`
            (``half=True`` for a float16 engine).
        device (torch.device or str, optional): the GPU. Defaults to ``"cuda"``.

    Keyword Args:
        chunk_size (int, optional): the engine's fixed batch. Defaults to ``256``.
        expected_sha256 (str, optional): the hash of the ONNX whose parity was checked; the
            engine is built only from that exact file. Defaults to ``None`` (no check).
        cache_dir (str or path, optional): where engines are cached. Defaults to
            ``~/.cache/torchrl_reward/tensorrt``.
        cuda_graph (bool, optional): capture preprocessing + engine in a CUDA graph.
            Defaults to ``True``.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        device: str | torch.device = "cuda",
        *,
        chunk_size: int = 256,
        expected_sha256: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        cuda_graph: bool = True,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"TensorRTBackend: {reason}; use backend='torch'.")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"TensorRTBackend runs on a CUDA device, got {self.device}.")
        self.onnx_path = Path(onnx_path)
        metadata = read_onnx_metadata(self.onnx_path)
        if metadata["precision"] not in ("fp16", "fp32"):
            raise ValueError(
                f"TensorRTBackend builds from the fp16 or fp32 export, got a "
                f"{metadata['precision']} ONNX ({str(self.onnx_path)!r})."
            )
        sha = file_sha256(self.onnx_path)
        if expected_sha256 is not None and sha != expected_sha256:
            raise ValueError(
                f"TensorRTBackend: {str(self.onnx_path)!r} is not the ONNX whose parity was "
                "checked (hash differs); re-run scripts/export_reward.py."
            )
        self.name = f"tensorrt-{metadata['precision']}"
        self.image_size = int(metadata["image_size"])
        self.num_views = int(metadata["num_views"])
        self.proprio_width = sum(metadata["proprio"].values())
        self.chunk_size = int(chunk_size)
        self._mean, self._std = metadata["mean"], metadata["std"]
        self._dtype = torch.float16 if metadata["precision"] == "fp16" else torch.float32
        cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.engine_path = cache / engine_cache_key(
            sha, self.device, self.chunk_size, metadata["precision"]
        )
        with torch.cuda.device(self.device):
            self._setup(metadata["precision"])
            self._graph = self._capture() if cuda_graph else None

    def _input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The engine's fixed input shapes: the chunk's views, and its proprio values."""
        size = self.image_size
        shapes = {INPUT_NAME: (self.chunk_size * self.num_views, 3, size, size)}
        if self.proprio_width:
            shapes[PROPRIO_NAME] = (self.chunk_size, self.proprio_width)
        return shapes

    def _build(self) -> bytes:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # Strongly typed: the ONNX's dtypes decide the precision (the flag is implied in 11.x).
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {str(self.onnx_path)!r}: {errors}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for name, shape in self._input_shapes().items():
            profile.set_shape(name, shape, shape, shape)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {str(self.onnx_path)!r}.")
        return bytes(serialized)

    def _setup(self, precision: str) -> None:
        size = self.image_size
        shapes = self._input_shapes()
        if self.engine_path.is_file():
            blob = self.engine_path.read_bytes()
        else:
            blob = self._build()
            with atomic_write(self.engine_path, "wb") as f:
                f.write(blob)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise RuntimeError(
                f"TensorRT could not load the cached engine {str(self.engine_path)!r}; delete it "
                "to rebuild."
            )
        self._context = self._engine.create_execution_context()
        inputs = {
            name: torch.zeros(shape, dtype=self._dtype, device=self.device)
            for name, shape in shapes.items()
        }
        self._input, self._proprio = inputs[INPUT_NAME], inputs.get(PROPRIO_NAME)
        self._output = torch.zeros(self.chunk_size, dtype=self._dtype, device=self.device)
        for name, tensor in inputs.items():
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
        self._context.set_tensor_address(OUTPUT_NAME, self._output.data_ptr())
        self._frames = torch.zeros(
            (self.chunk_size, size, self.num_views * size, 3), dtype=torch.uint8, device=self.device
        )
        self._probs = torch.zeros(self.chunk_size, dtype=torch.float32, device=self.device)

    def _enqueue(self) -> None:
        """Preprocess the static frames, run the engine and the sigmoid on the current stream."""
        self._input.copy_(
            preprocess_frames(
                self._frames,
                self.num_views,
                self._mean,
                self._std,
                dtype=self._dtype,
                channels_last=False,
            )
        )
        stream = torch.cuda.current_stream(self.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed.")
        torch.sigmoid(self._output.float(), out=self._probs)

    def _capture(self) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._enqueue()  # the first run allocates TensorRT's lazy resources outside capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._enqueue()
        return graph

    def input_buffer(self, n: int) -> torch.Tensor | None:
        """The engine's static frame rows ``[:n]``."""
        return self._frames[:n]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        n = images.shape[0]
        # The engine's batch is fixed: rows past n keep old frames, each scored on its own.
        # Frames written into input_buffer(n) are in place already.
        if images.data_ptr() != self._frames.data_ptr():
            self._frames[:n].copy_(images)
        if self._proprio is not None:
            if proprio is None:
                raise ValueError("TensorRTBackend: this engine reads proprio inputs; none given.")
            self._proprio[:n].copy_(proprio)
        with torch.cuda.device(self.device):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._enqueue()
        return self._probs[:n].clone()
