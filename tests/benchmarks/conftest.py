"""Shared helpers of the benchmarks."""

import os
import time
from collections.abc import Callable

import pytest
import torch


def _best_seconds(fn: Callable[[], object], rounds: int = 3) -> float:
    """Best wall time of ``rounds`` calls after one warm-up call: a baseline for ratios."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture
def best_seconds() -> Callable[..., float]:
    """``best_seconds(fn, rounds=3)``: time a baseline in the same run as the benchmark."""
    return _best_seconds


@pytest.fixture(autouse=True)
def every_core():
    """Benchmarks measure what a user's process gets: torch on every core (the suite's
    conftest keeps tests at 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or before)
    yield
    torch.set_num_threads(before)
