"""frame_chunks and score_chunks: the one chunked scoring loop."""

import pytest
import torch

from torchrl_reward.utils import frame_chunks, score_chunks


def test_frame_chunks_keep_frames_and_proprio_together():
    frames, proprio = torch.arange(10).view(10, 1), torch.arange(10.0).view(10, 1)
    chunks = list(frame_chunks(frames, proprio, 4))
    assert [c.shape[0] for c, _ in chunks] == [4, 4, 2]
    assert all(torch.equal(c.float(), p) for c, p in chunks)
    assert [p for _, p in frame_chunks(frames, None, 4)] == [None] * 3


def test_score_chunks_writes_each_chunk_in_order():
    frames = torch.arange(10.0)
    seen = []

    def score(chunk, proprio):
        seen.append(chunk.shape[0])
        return chunk * 2

    out = score_chunks(score, frame_chunks(frames, None, 4), 10)
    assert seen == [4, 4, 2] and torch.equal(out, frames * 2)
    assert score_chunks(lambda c, p: c.half(), frame_chunks(frames, None, 3), 10).dtype == (
        torch.float16
    )


def test_score_chunks_of_nothing_and_wrong_totals():
    empty = score_chunks(lambda c, p: c, iter(()), 0)
    assert empty.shape == (0,) and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="held 10 frames, not total=11"):
        score_chunks(lambda c, p: c, frame_chunks(torch.zeros(10), None, 4), 11)
    with pytest.raises(ValueError, match="more than total=9"):
        score_chunks(lambda c, p: c, frame_chunks(torch.zeros(10), None, 4), 9)
