"""make_backend: explicit choices, 'auto', and the errors for unusable backends."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from torchrl_reward.inference import (
    BACKENDS,
    OnnxBackend,
    TorchBackend,
    make_backend,
    tensorrt_unavailable_reason,
)


def test_torch_backend(model, frames):
    backend = make_backend(model, "torch", device="cpu", chunk_size=8)
    assert isinstance(backend, TorchBackend) and backend.chunk_size == 8
    torch.testing.assert_close(backend(frames[:8]), model.predict_proba(frames[:8]))


def test_auto_without_export_is_torch_and_logged(model, caplog):
    with caplog.at_level(logging.INFO, logger="torchrl_reward.inference.factory"):
        backend = make_backend(model, "auto", device="cpu")
    assert isinstance(backend, TorchBackend)
    assert "reward backend torch on cpu" in caplog.text and "no export_dir" in caplog.text


def _with_timings(export_dir: Path, out: Path, **entries: float | None) -> Path:
    """A copy of the real export with set timings: ``name=ms`` passed parity, ``None`` failed."""
    shutil.copytree(export_dir, out)
    manifest = json.loads((out / "export.json").read_text())
    for name, ms in entries.items():
        entry = manifest["backends"][name.replace("_", "-")]
        entry.update(ms_per_chunk=ms, passed=ms is not None)
    (out / "export.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize(
    ("fp32_ms", "int8_ms", "expected"),
    [
        (5.0, 50.0, "onnxruntime-fp32"),
        (50.0, 5.0, "onnxruntime-int8"),
        (50.0, None, "onnxruntime-fp32"),  # int8 failed parity: the fastest that passed
    ],
)
def test_onnxruntime_uses_the_fastest_passing_export(
    model, export_dir, tmp_path, fp32_ms, int8_ms, expected
):
    export = _with_timings(
        export_dir, tmp_path / "export", onnxruntime_fp32=fp32_ms, onnxruntime_int8=int8_ms
    )
    backend = make_backend(model, "onnxruntime", device="cpu", export_dir=export)
    assert isinstance(backend, OnnxBackend) and backend.name == expected


@pytest.mark.parametrize(("torch_ms", "expected"), [(1.0, "torch"), (500.0, "onnxruntime-fp32")])
def test_auto_on_cpu_picks_by_export_timings(
    model, export_dir, tmp_path, caplog, torch_ms, expected
):
    export = _with_timings(
        export_dir,
        tmp_path / "export",
        torch=torch_ms,
        onnxruntime_fp32=100.0,
        onnxruntime_int8=200.0,
    )
    with caplog.at_level(logging.INFO, logger="torchrl_reward.inference.factory"):
        backend = make_backend(model, "auto", device="cpu", export_dir=export)
    assert backend.name == expected
    assert "export timings: onnxruntime-fp32 100 ms, torch" in caplog.text


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_accelerated_backends_need_an_export(model, backend):
    with pytest.raises(ValueError, match="needs export_dir"):
        make_backend(model, backend, device="cpu")


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is usable here")
def test_tensorrt_unavailable_says_why(model, export_dir):
    with pytest.raises(RuntimeError, match=r"cannot run: .*use backend='torch'"):
        make_backend(model, "tensorrt", device="cpu", export_dir=export_dir)


def test_bad_arguments(model):
    assert BACKENDS == ("auto", "torch", "onnxruntime", "tensorrt")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend(model, "openvino")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        make_backend(model, "torch", chunk_size=0)
