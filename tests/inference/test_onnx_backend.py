"""ONNX export, int8 static quantisation and the ONNX Runtime backend."""

import onnx
import onnxruntime as ort
import pytest
import torch

from torchrl_reward.inference import (
    OnnxBackend,
    TorchBackend,
    check_parity,
    export_onnx,
    model_fingerprint,
    quantize_onnx_int8,
    read_onnx_metadata,
)
from torchrl_reward.ops import preprocess


@pytest.fixture(scope="module")
def fp32_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "reward_fp32.onnx")


def test_fp32_export_matches_torch(model, frames, fp32_path):
    backend = OnnxBackend(fp32_path)
    assert backend.name == "onnxruntime-fp32" and backend.device == torch.device("cpu")
    probs = backend(frames)
    assert probs.shape == (frames.shape[0],) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, model.predict_proba(frames), atol=1e-5, rtol=0)


def test_metadata_describes_the_model(model, fp32_path):
    metadata = read_onnx_metadata(fp32_path)
    assert metadata["image_size"] == model.image_size
    assert metadata["mean"] == list(model.mean) and metadata["std"] == list(model.std)
    assert metadata["precision"] == "fp32"
    assert metadata["fingerprint"] == model_fingerprint(model)


def test_fp16_export_is_typed_half(model, tmp_path):
    path = export_onnx(model, tmp_path / "reward_fp16.onnx", half=True)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert read_onnx_metadata(path)["precision"] == "fp16"
    with pytest.raises(ValueError, match="meant for TensorRT"):
        OnnxBackend(path)


def test_int8_quantisation_runs_and_is_checked(model, frames, fp32_path, tmp_path):
    path = quantize_onnx_int8(fp32_path, tmp_path / "reward_int8.onnx", frames[:16])
    backend = OnnxBackend(path)
    assert backend.name == "onnxruntime-int8"
    assert read_onnx_metadata(path)["fingerprint"] == model_fingerprint(model)
    graph = onnx.load(str(path)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    report = check_parity(backend, TorchBackend(model), frames[16:], threshold=0.5)
    assert report.frames == frames.shape[0] - 16
    assert 0.0 <= report.agreement <= 1.0 and report.max_abs_diff < 0.1
    # The backend keeps the stem's quantisation after its max-pool (a faster graph): the
    # two commute, so the scores equal those of ONNX Runtime's default optimisations.
    default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = preprocess(frames, model.mean, model.std).numpy()
    (logits,) = default.run(None, {default.get_inputs()[0].name: x})
    torch.testing.assert_close(backend(frames), torch.sigmoid(torch.from_numpy(logits)).flatten())


def test_quantisation_input_errors(fp32_path, frames, tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        quantize_onnx_int8(fp32_path, tmp_path / "q.onnx", frames.float())
    with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\]"):
        quantize_onnx_int8(fp32_path, tmp_path / "q.onnx", frames[:, :16])
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_onnx_int8(fp32_path, tmp_path / "q.onnx", frames, method="magic")


def test_unreadable_onnx_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"export_reward\.py"):
        OnnxBackend(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="unreadable"):
        read_onnx_metadata(corrupt)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 1), (torch.zeros(1, 2),), str(plain), dynamo=False)
    with pytest.raises(ValueError, match="no 'torchrl_reward' metadata"):
        OnnxBackend(plain)
