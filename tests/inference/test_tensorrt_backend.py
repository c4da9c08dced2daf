"""TensorRT engine from the checked fp16 ONNX: parity, padding, engine cache (GPU only)."""

import pytest
import torch

from torchrl_reward.inference import (
    FrameScorer,
    TensorRTBackend,
    TorchBackend,
    check_parity,
    file_sha256,
    load_validation_frames,
    make_backend,
    tensorrt_unavailable_reason,
)

REASON = tensorrt_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"TensorRT unusable: {REASON}")


def test_engine_matches_torch_and_pads_short_chunks(model, export_dir, tmp_path):
    onnx_path = export_dir / "reward_fp16.onnx"
    backend = TensorRTBackend(
        onnx_path, "cuda", chunk_size=16, expected_sha256=file_sha256(onnx_path), cache_dir=tmp_path
    )
    assert backend.name == "tensorrt-fp16" and backend.engine_path.is_file()
    frames = load_validation_frames(export_dir)
    report = check_parity(backend, TorchBackend(model, "cuda"), frames, threshold=model.threshold)
    assert report.passed, report
    short = backend(frames[:5].cuda())
    assert short.shape == (5,) and short.device.type == "cuda"
    torch.testing.assert_close(short.cpu(), model.predict_proba(frames[:5]), atol=1e-2, rtol=0)
    # Host frames scored through the engine's own input buffer give the same probabilities.
    scorer = FrameScorer(backend)
    assert scorer.to_device(frames, slice(0, 5)).data_ptr() == backend.input_buffer(5).data_ptr()
    torch.testing.assert_close(scorer(frames[:5]), short, atol=1e-3, rtol=0)
    # A second backend loads the cached engine instead of building it.
    mtime = backend.engine_path.stat().st_mtime_ns
    TensorRTBackend(onnx_path, "cuda", chunk_size=16, cache_dir=tmp_path)
    assert backend.engine_path.stat().st_mtime_ns == mtime


def test_refuses_an_unchecked_onnx(export_dir, tmp_path):
    with pytest.raises(ValueError, match="not the ONNX whose parity was checked"):
        TensorRTBackend(export_dir / "reward_fp16.onnx", "cuda", expected_sha256="0" * 64)


def test_auto_picks_tensorrt_on_gpu(model, export_dir, tmp_path):
    backend = make_backend(model, "auto", device="cuda", export_dir=export_dir, cache_dir=tmp_path)
    assert backend.name == "tensorrt-fp16"
