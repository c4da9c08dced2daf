"""Fixtures shared by the data tests."""

import contextlib
import resource
import signal

import pytest


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Make writes past ``limit`` bytes fail with EFBIG, as on a full disk."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.fixture
def file_size_limit():
    """``with file_size_limit(n):`` simulates a disk that fills after ``n`` bytes."""
    return _file_size_limit
