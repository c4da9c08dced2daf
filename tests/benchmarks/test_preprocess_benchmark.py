"""Benchmark (c): the fused preprocessing op vs the torch-op chain on one 256-image chunk.

The baseline is what a model's ``forward`` would otherwise run on uint8 frames:
``permute -> float -> / 255 -> (- mean) / std`` (plus ``F.interpolate`` when resizing), timed in
the same test on the same chunk. Ratios (baseline / op, higher is better), best-of times and the
peak resident memory each call adds go to ``benchmark.extra_info`` and are printed (``-s``).
Goal on the 2-core CPU: >= 10x without resize.
"""

import ctypes
import ctypes.util
import os
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from torchrl_reward.ops import has_ops, preprocess, preprocess_torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CHUNK = (256, 128, 128, 3)
ROUNDS = 5

pytestmark = pytest.mark.skipif(not has_ops(), reason="torchrl_reward._C is not built")


def _torch_op_chain(
    images: torch.Tensor, size: tuple[int, int] | None, dtype: torch.dtype
) -> torch.Tensor:
    """The seed's ops. Without resize the result keeps the permuted (channels-last) strides."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float() / 255
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return ((x - mean) / std).to(dtype)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


def _peak_added_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory one call adds, in MiB (Linux + glibc, else ``None``).

    Freed heap memory is first returned to the OS (``malloc_trim``) so the call's allocations
    fault in fresh pages, then the high-water mark is reset through ``/proc/self/clear_refs``.
    """
    libc_name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(libc_name).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, AttributeError):
        return None
    before = _rss_kb("VmRSS")
    fn()
    return round((_rss_kb("VmHWM") - before) / 1024, 1)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("size", [None, (112, 112)], ids=["128px", "resize112"])
def test_preprocess_vs_torch_chain(benchmark, best_seconds, size, dtype, channels_last):
    images = torch.randint(
        0, 256, CHUNK, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    options = dict(size=size, dtype=dtype, channels_last=channels_last)

    def chain():
        return _torch_op_chain(images, size, dtype)

    def fallback():
        return preprocess_torch(images, MEAN, STD, **options)

    def op():
        return preprocess(images, MEAN, STD, **options)

    chain_s = best_seconds(chain, ROUNDS)
    fallback_s = best_seconds(fallback, ROUNDS)
    out = benchmark.pedantic(op, rounds=ROUNDS * 2, warmup_rounds=1)
    op_s = benchmark.stats.stats.min
    torch.testing.assert_close(out.float(), chain().float(), atol=2e-3, rtol=0)

    info = {
        "chunk": list(CHUNK),
        "size": list(size) if size else None,
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        # Context for a shared machine: other processes slow the baseline and the op unevenly.
        "load_average_1min": os.getloadavg()[0],
        "op_ms": op_s * 1e3,
        "torch_chain_ms": chain_s * 1e3,
        "fallback_ms": fallback_s * 1e3,
        "speedup_vs_torch_chain": chain_s / op_s,
        "speedup_vs_fallback": fallback_s / op_s,
        "op_peak_added_mb": _peak_added_mb(op),
        "torch_chain_peak_added_mb": _peak_added_mb(chain),
    }
    benchmark.extra_info.update(info)
    layout = "channels_last" if channels_last else "nchw"
    print(
        f"\npreprocess {CHUNK} -> {size or 'same size'} {dtype} {layout}: "
        f"op {info['op_ms']:.1f} ms, "
        f"torch chain {info['torch_chain_ms']:.1f} ms ({info['speedup_vs_torch_chain']:.1f}x), "
        f"pure-torch fallback {info['fallback_ms']:.1f} ms ({info['speedup_vs_fallback']:.1f}x); "
        f"peak added memory op {info['op_peak_added_mb']} MB, "
        f"chain {info['torch_chain_peak_added_mb']} MB; "
        f"load average {info['load_average_1min']:.1f}"
    )


def _synchronized(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("size", [None, (112, 112)], ids=["128px", "resize112"])
def test_preprocess_cuda_vs_torch_chain(benchmark, best_seconds, size, dtype):
    """The CUDA kernel against the same torch-op chain on the GPU (one 256-frame chunk)."""
    images = torch.randint(0, 256, CHUNK, dtype=torch.uint8, device="cuda")
    chain = _synchronized(lambda: _torch_op_chain(images, size, dtype))
    op = _synchronized(lambda: preprocess(images, MEAN, STD, size=size, dtype=dtype))
    chain_s = best_seconds(chain, ROUNDS * 4)
    out = benchmark.pedantic(op, rounds=ROUNDS * 4, warmup_rounds=2)
    op_s = benchmark.stats.stats.min
    torch.testing.assert_close(out.float(), chain().float(), atol=2e-3, rtol=0)
    info = {
        "device": torch.cuda.get_device_name(),
        "op_us": op_s * 1e6,
        "torch_chain_us": chain_s * 1e6,
        "speedup_vs_torch_chain": chain_s / op_s,
    }
    benchmark.extra_info.update(info)
    print(
        f"\npreprocess cuda {CHUNK} -> {size or 'same size'} {dtype}: op {info['op_us']:.0f} us, "
        f"torch chain {info['torch_chain_us']:.0f} us ({info['speedup_vs_torch_chain']:.1f}x) "
        f"on {info['device']}"
    )


def _cuda_seconds(fn: Callable[[], object], reps: int = 20) -> float:
    """Mean GPU time of ``fn`` over ``reps`` launches replayed from one CUDA graph.

    A graph replays the launches back to back, so the time is the GPU's alone: timed from
    Python, a kernel of a few microseconds would measure the host's dispatch instead.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("frames", [256, 2048])
def test_preprocess_cuda_bandwidth_vs_device_copy(benchmark, frames, dtype, channels_last):
    """The kernel's bytes moved per second against a device-to-device copy of its output size.

    A copy reads and writes each byte once, the memory-bound ceiling; the op reads uint8 and
    writes ``dtype``, so its bandwidth is (bytes in + bytes out) / time. Goal: >= 70%.
    """
    images = torch.randint(0, 256, (frames, *CHUNK[1:]), dtype=torch.uint8, device="cuda")

    def op() -> torch.Tensor:
        return preprocess(images, MEAN, STD, dtype=dtype, channels_last=channels_last)

    out = op()
    src, dst = torch.empty_like(out), torch.empty_like(out)
    op_s = _cuda_seconds(op)
    copy_s = _cuda_seconds(lambda: dst.copy_(src))
    op_bw = (images.numel() * images.element_size() + out.numel() * out.element_size()) / op_s
    copy_bw = 2 * out.numel() * out.element_size() / copy_s
    benchmark.pedantic(_synchronized(op), rounds=5)
    layout = "channels_last" if channels_last else "nchw"
    info = {
        "device": torch.cuda.get_device_name(),
        "layout": layout,
        "op_us": op_s * 1e6,
        "op_gb_per_s": op_bw / 1e9,
        "copy_gb_per_s": copy_bw / 1e9,
        "fraction_of_copy_bandwidth": op_bw / copy_bw,
    }
    benchmark.extra_info.update(info)
    print(
        f"\npreprocess cuda {frames} frames {dtype} {layout}: {info['op_us']:.1f} us, "
        f"{info['op_gb_per_s']:.0f} GB/s vs device copy {info['copy_gb_per_s']:.0f} GB/s "
        f"({info['fraction_of_copy_bandwidth']:.0%}) on {info['device']}"
    )
