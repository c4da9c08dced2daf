"""Shared helpers of the benchmarks."""

import time
from collections.abc import Callable

import pytest


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
