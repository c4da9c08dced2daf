"""torchrl_reward.ops.preprocess: the compiled op against the pure-torch reference."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from torchrl_reward.ops import _register, has_ops, preprocess, preprocess_torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

needs_ops = pytest.mark.skipif(not has_ops(), reason="torchrl_reward._C is not built")
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
)

# (batch, height, width, size): no resize (H * W a multiple of 8, of 4 only, odd), down/upsampling,
# non-square, one pixel.
CASES = [
    (4, 32, 32, None),
    (3, 7, 5, None),
    (5, 6, 6, None),
    (2, 64, 48, (64, 48)),
    (2, 32, 32, 16),
    (2, 30, 40, (17, 23)),
    (2, 10, 12, (25, 31)),
    (3, 128, 128, (112, 112)),
    (1, 1, 1, (3, 2)),
]


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen)


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _out_size(h: int, w: int, size) -> tuple[int, int]:
    if size is None:
        return h, w
    return (size, size) if isinstance(size, int) else tuple(size)


def test_extension_is_built():
    assert has_ops(), "torchrl_reward._C is not built: run `pip install --no-build-isolation -e .`"


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("n", "h", "w", "size"), CASES)
def test_float32_matches_reference(n, h, w, size, channels_last):
    images = _images(n, h, w)
    out = preprocess(images, MEAN, STD, size=size, channels_last=channels_last)
    ref = preprocess_torch(images, MEAN, STD, size=size)
    assert out.shape == (n, 3, *_out_size(h, w, size))
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=_memory_format(channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("n", "h", "w", "size"), CASES)
def test_float16_matches_reference(n, h, w, size, channels_last):
    images = _images(n, h, w, seed=1)
    out = preprocess(images, MEAN, STD, size=size, dtype=torch.float16, channels_last=channels_last)
    ref32 = preprocess_torch(images, MEAN, STD, size=size)
    assert out.dtype == torch.float16
    assert out.is_contiguous(memory_format=_memory_format(channels_last))
    # Both round the same float32 values: at most one float16 rounding apart.
    torch.testing.assert_close(out.float(), ref32, atol=1e-3, rtol=1e-3)
    ref16 = preprocess_torch(images, MEAN, STD, size=size, dtype=torch.float16)
    assert (out.float() - ref16.float()).abs().max() <= 2e-3


@needs_ops
def test_random_shapes_match_reference():
    gen = torch.Generator().manual_seed(123)
    for _ in range(12):
        n, h, w, oh, ow = (int(v) for v in torch.randint(1, 40, (5,), generator=gen))
        images = _images(n, h, w, seed=n * h * w)
        size = None if oh % 3 == 0 else (oh, ow)
        mean = torch.rand(3, generator=gen).tolist()
        std = (torch.rand(3, generator=gen) + 0.1).tolist()
        out = preprocess(images, mean, std, size=size)
        ref = preprocess_torch(images, mean, std, size=size)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5, msg=f"{images.shape} {size}")


def test_reference_is_normalize_of_interpolate():
    """The semantics in torchvision terms: resize the [0, 1] image, then Normalize."""
    images = _images(2, 20, 24)
    x = images.permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(13, 17), mode="bilinear", align_corners=False, antialias=False)
    expected = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    for fn in (preprocess, preprocess_torch):
        torch.testing.assert_close(fn(images, MEAN, STD, size=(13, 17)), expected)


@pytest.mark.parametrize("size", [None, (5, 7)])
def test_fallback_channels_last(size):
    images = _images(3, 8, 6)
    out = preprocess_torch(images, MEAN, STD, size=size, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, preprocess_torch(images, MEAN, STD, size=size))


def test_mean_std_as_tensors():
    images = _images(2, 8, 8)
    out = preprocess(images, torch.tensor(MEAN), torch.tensor(STD))
    torch.testing.assert_close(out, preprocess(images, MEAN, STD))


BAD_INPUTS = [
    ("float images", lambda: torch.zeros(2, 8, 8, 3), {}, TypeError, "must be uint8"),
    (
        "channels first",
        lambda: torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        {},
        ValueError,
        "[N, H, W, 3]",
    ),
    ("4 channels", lambda: torch.zeros(2, 8, 8, 4, dtype=torch.uint8), {}, ValueError, "got [2"),
    ("3-d images", lambda: torch.zeros(8, 8, 3, dtype=torch.uint8), {}, ValueError, "[N, H, W"),
    (
        "non-contiguous",
        lambda: torch.zeros(2, 8, 6, 3, dtype=torch.uint8).transpose(1, 2),
        {},
        ValueError,
        "contiguous()",
    ),
    (
        "empty batch",
        lambda: torch.zeros(0, 8, 8, 3, dtype=torch.uint8),
        {},
        ValueError,
        "no pixels",
    ),
    (
        "float64 output",
        lambda: torch.zeros(2, 8, 8, 3, dtype=torch.uint8),
        {"dtype": torch.float64},
        TypeError,
        "dtype must be",
    ),
    (
        "two means",
        lambda: torch.zeros(2, 8, 8, 3, dtype=torch.uint8),
        {"mean": (0.5, 0.5)},
        ValueError,
        "one value per RGB channel",
    ),
    (
        "zero std",
        lambda: torch.zeros(2, 8, 8, 3, dtype=torch.uint8),
        {"std": (0.2, 0.0, 0.2)},
        ValueError,
        "non-zero",
    ),
    (
        "negative size",
        lambda: torch.zeros(2, 8, 8, 3, dtype=torch.uint8),
        {"size": (-1, 4)},
        ValueError,
        "size must be",
    ),
    (
        "three sizes",
        lambda: torch.zeros(2, 8, 8, 3, dtype=torch.uint8),
        {"size": (4, 4, 4)},
        ValueError,
        "size must be",
    ),
]


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
@pytest.mark.parametrize("fn", [preprocess, preprocess_torch], ids=["op", "fallback"])
def test_bad_input_gives_clear_error(fn, make, kwargs, error, message):
    args = {"mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(error, match="preprocess: ") as info:
        fn(make(), **args)
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()


@needs_ops
def test_cpu_tensor_to_cuda_kernel_is_rejected():
    if not _register.HAS_CUDA_KERNEL:
        pytest.skip("this build of torchrl_reward._C has no CUDA kernel")
    cuda_only = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(ValueError, match="must be a CUDA tensor, got device cpu"):
        torch.ops.torchrl_reward.preprocess.default.redispatch(
            cuda_only, _images(1, 4, 4), list(MEAN), list(STD), None, torch.float32
        )


@needs_ops
def test_opcheck():
    images = _images(2, 12, 10)
    for size, channels_last in ((None, False), ([7, 9], False), (None, True), ([7, 9], True)):
        torch.library.opcheck(
            torch.ops.torchrl_reward.preprocess.default,
            (images, list(MEAN), list(STD), size, torch.float32, channels_last),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def fn(images: torch.Tensor) -> torch.Tensor:
        return preprocess(images, MEAN, STD, size=(12, 12), dtype=torch.float16)

    images = _images(2, 16, 16)
    torch.testing.assert_close(fn(images), preprocess(images, MEAN, STD, size=12, dtype=torch.half))


def test_fallback_when_extension_missing():
    """Without torchrl_reward._C: one log line, then the pure-torch path gives the result."""
    code = (
        "import sys; sys.modules['torchrl_reward._C'] = None\n"
        "import torch\n"
        "from torchrl_reward.ops import has_ops, preprocess, preprocess_torch\n"
        "x = torch.randint(0, 256, (2, 9, 7, 3), dtype=torch.uint8)\n"
        "m, s = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)\n"
        "assert not has_ops()\n"
        "assert torch.equal(preprocess(x, m, s, size=5), preprocess_torch(x, m, s, size=5))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "torchrl_reward._C" in line]
    assert len(lines) == 1 and "pure-torch fallback" in lines[0], result.stderr


@needs_cuda
@needs_ops
@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("n", "h", "w", "size"), CASES)
def test_cuda_matches_cpu(n, h, w, size, dtype, channels_last):
    images = _images(n, h, w, seed=2)
    kwargs = dict(size=size, dtype=dtype, channels_last=channels_last)
    out = preprocess(images.cuda(), MEAN, STD, **kwargs)
    ref = preprocess(images, MEAN, STD, **kwargs)
    assert out.device.type == "cuda" and out.dtype == dtype
    assert out.is_contiguous(memory_format=_memory_format(channels_last))
    atol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.cpu().float(), ref.float(), atol=atol, rtol=0)


@needs_cuda
@needs_ops
@pytest.mark.gpu
def test_cuda_chunks_unaligned_input_and_side_stream():
    # 300 images: two launches of up to 256; an odd byte offset forces the general kernel,
    # an aligned copy the planar and channels-last ones.
    flat = _images(1, 1, 300 * 8 * 8 + 1, seed=3).cuda().flatten()
    images = flat[3 : 3 + 300 * 8 * 8 * 3].view(300, 8, 8, 3)
    ref = preprocess_torch(images.cpu(), MEAN, STD)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    aligned = images.clone()
    with torch.cuda.stream(stream):
        out = preprocess(images, MEAN, STD)
        resized = preprocess(images, MEAN, STD, size=(5, 6), dtype=torch.float16)
        planar = preprocess(aligned, MEAN, STD, dtype=torch.float16)
        interleaved = preprocess(aligned, MEAN, STD, dtype=torch.float16, channels_last=True)
    stream.synchronize()
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(planar.cpu().float(), ref, atol=2e-3, rtol=0)
    torch.testing.assert_close(interleaved.cpu().float(), ref, atol=2e-3, rtol=0)
    torch.testing.assert_close(
        resized.cpu().float(),
        preprocess_torch(images.cpu(), MEAN, STD, size=(5, 6)),
        atol=2e-3,
        rtol=0,
    )


@needs_cuda
@needs_ops
@pytest.mark.gpu
def test_cuda_bad_input_gives_clear_error():
    with pytest.raises(TypeError, match="must be uint8"):
        preprocess(torch.zeros(2, 8, 8, 3, device="cuda"), MEAN, STD)
    with pytest.raises(ValueError, match="no pixels"):
        preprocess(torch.zeros(0, 8, 8, 3, dtype=torch.uint8, device="cuda"), MEAN, STD)
