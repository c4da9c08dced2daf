"""make_backend: explicit choices, 'auto', and the errors for unusable backends."""

import logging

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


def test_onnxruntime_uses_the_fastest_passing_export(model, frames, export_dir):
    backend = make_backend(model, "onnxruntime", device="cpu", export_dir=export_dir)
    assert isinstance(backend, OnnxBackend)
    assert backend.name in ("onnxruntime-fp32", "onnxruntime-int8")


def test_auto_on_cpu_picks_by_export_timings(model, export_dir, caplog):
    with caplog.at_level(logging.INFO, logger="torchrl_reward.inference.factory"):
        backend = make_backend(model, "auto", device="cpu", export_dir=export_dir)
    assert backend.name in ("torch", "onnxruntime-fp32", "onnxruntime-int8")
    assert "export timings" in caplog.text


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
