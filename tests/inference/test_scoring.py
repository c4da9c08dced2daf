"""FrameScorer: the same probabilities as the backend called chunk by chunk, on any input."""

import pytest
import torch

from torchrl_reward.inference import FrameScorer, OnnxBackend, TorchBackend, score_frames
from torchrl_reward.models import ResNetRewardModel

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CHUNK = 8


def plain(backend, frames, proprio=None):
    """The path the scorer must match: the backend on each chunk, concatenated."""
    probs = []
    for start in range(0, frames.shape[0], CHUNK):
        rows = slice(start, start + CHUNK)
        values = None if proprio is None else proprio[rows]
        probs.append(backend(frames[rows].contiguous(), values))
    return torch.cat(probs)


@pytest.mark.parametrize("n", [7, 8, 9, 17])
def test_matches_the_backend_chunk_by_chunk_bitwise(model, frames, n):
    frames = frames[:n]
    backend = TorchBackend(model, chunk_size=CHUNK)
    probs = FrameScorer(backend)(frames)
    assert probs.shape == (n,) and probs.dtype == torch.float32
    assert torch.equal(probs, plain(backend, frames))


def test_index_scores_only_the_picked_frames(model, frames):
    frames = frames[:20]
    backend = TorchBackend(model, chunk_size=CHUNK)
    index = torch.tensor([19, 0, 3, 4, 5, 6, 7, 8, 9, 11, 2])
    assert torch.equal(FrameScorer(backend)(frames, index=index), plain(backend, frames[index]))
    assert FrameScorer(backend)(frames, index=index[:0]).shape == (0,)


def test_channels_first_view_and_proprio(frames):
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, proprio={"qvel": 9}).eval()
    backend = TorchBackend(model, chunk_size=CHUNK)
    frames, qvel = frames[:11], torch.randn(11, 9)
    view = frames.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)  # strided HWC view
    assert not view.is_contiguous()
    probs = FrameScorer(backend)(view, qvel)
    assert torch.equal(probs, plain(backend, frames, qvel))
    index = torch.tensor([10, 1, 2])
    picked = FrameScorer(backend)(view, qvel, index)
    assert torch.equal(picked, plain(backend, frames[index], qvel[index]))


def test_onnx_backend_and_score_frames(model, frames, export_dir):
    backend = OnnxBackend(export_dir / "reward_int8.onnx", chunk_size=CHUNK)
    assert backend.input_buffer(4) is None and TorchBackend(model).input_buffer(4) is None
    probs = score_frames(backend, frames[:13])
    assert torch.equal(probs, plain(backend, frames[:13]))
    assert score_frames(backend, frames[:0]).shape == (0,)


def test_bad_input_is_refused(model, frames):
    scorer = FrameScorer(TorchBackend(model, chunk_size=CHUNK))
    frames = frames[:2]
    with pytest.raises(TypeError, match=r"uint8 \[N, \*\(32, 32, 3\)\], got torch.float32"):
        scorer(frames.float())
    with pytest.raises(ValueError, match=r"got \(2, 48, 48, 3\)"):
        scorer(torch.zeros(2, 48, 48, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="proprio must be"):
        scorer(frames, torch.zeros(3, 9))
    with pytest.raises(ValueError, match="index must be a 1-D int64"):
        scorer(frames, index=torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"chunk_size must be in \[1, 8\]"):
        FrameScorer(TorchBackend(model, chunk_size=CHUNK), chunk_size=9)


@needs_gpu
@pytest.mark.parametrize("pinned", [False, True])
def test_host_frames_reach_the_gpu_once(model, frames, pinned):
    frames = frames[: 2 * CHUNK + 3]
    host = frames.pin_memory() if pinned else frames
    backend = TorchBackend(model, "cuda", chunk_size=CHUNK, amp_dtype="float16", cuda_graph=True)
    scorer = FrameScorer(backend)
    probs = scorer(host)
    assert probs.device.type == "cuda" and probs.shape == (frames.shape[0],)
    torch.testing.assert_close(probs.cpu(), model.predict_proba(frames), atol=1e-2, rtol=0)
    torch.testing.assert_close(probs, scorer(frames.cuda()), atol=0, rtol=0)
    # Host frames are copied into the graph's own input, not into a tensor of their own.
    sent = scorer.to_device(host, slice(0, 3))
    assert sent.data_ptr() == backend.input_buffer(3).data_ptr()
    torch.testing.assert_close(sent.cpu(), frames[:3], atol=0, rtol=0)
    index = torch.tensor([18, 0, 9, 8])  # out of order, across chunks
    torch.testing.assert_close(scorer(host, index=index), probs[index.cuda()], atol=1e-3, rtol=0)


@needs_gpu
def test_staging_buffers_are_kept_across_calls(model, frames):
    scorer = FrameScorer(TorchBackend(model, "cuda", chunk_size=CHUNK))
    scorer(frames[: CHUNK + 1])
    pointers = [slot.data_ptr() for slot in scorer._slots]
    assert all(slot.is_pinned() for slot in scorer._slots)
    scorer(frames[-3:])
    assert [slot.data_ptr() for slot in scorer._slots] == pointers
