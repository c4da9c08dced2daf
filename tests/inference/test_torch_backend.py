"""TorchBackend: same probabilities as the model, options, GPU paths when a GPU is there."""

import pytest
import torch

from torchrl_reward.inference import TorchBackend
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.ops.fused_conv import FusedBlock

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_matches_model_predict_proba(model, frames):
    backend = TorchBackend(model, "cpu")
    probs = backend(frames)
    assert probs.shape == (frames.shape[0],) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, model.predict_proba(frames), atol=1e-5, rtol=1e-4)
    plain = TorchBackend(model, "cpu", channels_last=False)
    torch.testing.assert_close(plain(frames), probs, atol=1e-5, rtol=1e-4)
    assert backend.name == "torch" and backend.image_size == model.image_size


def test_copies_the_model(model, frames):
    backend = TorchBackend(model, "cpu")
    assert backend.model is not model
    assert next(model.parameters()).is_contiguous()  # the caller's model keeps its format


def test_bfloat16_autocast_on_cpu_is_close(model, frames):
    backend = TorchBackend(model, "cpu", amp_dtype="bfloat16")
    assert backend.name == "torch-bfloat16"
    torch.testing.assert_close(backend(frames), model.predict_proba(frames), atol=0.05, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amp_dtype": "float16"}, "float16 needs a CUDA device"),
        ({"amp_dtype": "int8"}, "amp_dtype must be one of"),
        ({"cuda_graph": True}, "cuda_graph=True needs a CUDA device"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ],
)
def test_bad_options(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TorchBackend(model, "cpu", **kwargs)


@needs_gpu
def test_cuda_graph_and_fp16_on_gpu(model, frames):
    reference = model.predict_proba(frames)
    backend = TorchBackend(model, "cuda", chunk_size=64, amp_dtype="float16", cuda_graph=True)
    for n in (frames.shape[0], 5):  # a full-ish chunk and a short (padded) one
        probs = backend(frames[:n].cuda())
        assert probs.device.type == "cuda" and probs.shape == (n,)
        torch.testing.assert_close(probs.cpu(), reference[:n], atol=1e-2, rtol=0)


@pytest.mark.slow
def test_compiled_matches_eager(model, frames):
    compiled = TorchBackend(model, "cpu", compile=True)
    torch.testing.assert_close(compiled(frames), model.predict_proba(frames), atol=1e-4, rtol=0)


def test_fused_conv_matches_unfused_on_cpu(model, frames):
    fused = TorchBackend(model, "cpu", fused_conv=True)
    torch.testing.assert_close(fused(frames), model.predict_proba(frames), atol=1e-5, rtol=1e-4)


@needs_gpu
def test_fused_conv_compiled_graph_on_gpu(model, frames):
    reference = model.predict_proba(frames)
    torch._dynamo.reset()
    backend = TorchBackend(
        model,
        "cuda",
        chunk_size=64,
        amp_dtype="float16",
        compile=True,
        cuda_graph=True,
        fused_conv=True,
    )
    probs = backend(frames.cuda())
    torch.testing.assert_close(probs.cpu(), reference, atol=1e-2, rtol=0)


@needs_gpu
@pytest.mark.parametrize("channels_last", [True, False])
def test_fp32_on_gpu_fuses_by_default(model, frames, channels_last):
    backend = TorchBackend(model, "cuda", channels_last=channels_last)
    assert isinstance(backend.model.backbone.layer1[0], FusedBlock)
    assert not isinstance(TorchBackend(model, "cpu").model.backbone.layer1[0], FusedBlock)
    # TF32 convolutions on both sides of the comparison's GPU run.
    torch.testing.assert_close(
        backend(frames.cuda()).cpu(), model.predict_proba(frames), atol=5e-3, rtol=0
    )


def test_views_and_proprio_match_the_model():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, num_views=2, proprio={"qvel": 9}).eval()
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (6, 32, 64, 3), dtype=torch.uint8, generator=generator)
    qvel = torch.randn(6, 9, generator=generator)
    backend = TorchBackend(model)
    assert backend.frame_shape == (32, 64, 3)
    torch.testing.assert_close(
        backend(frames, qvel), model.predict_proba(frames, qvel), atol=1e-5, rtol=1e-4
    )
