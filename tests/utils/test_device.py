"""One device policy for the package: fall back with a warning, or raise when strict."""

import pytest
import torch

from torchrl_reward.utils import resolve_device

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")


def test_resolve_device_defaults_and_cpu():
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == torch.device(expected)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


@needs_no_gpu
def test_missing_gpu_falls_back_to_cpu_with_warning():
    with pytest.warns(UserWarning, match=r"'cuda:1' is not available \(0 GPUs visible\)"):
        assert resolve_device("cuda:1") == torch.device("cpu")


@needs_no_gpu
def test_missing_gpu_raises_when_strict():
    with pytest.raises(RuntimeError, match=r"no CUDA GPU.*strict=True"):
        resolve_device("cuda:1", strict=True)


@pytest.mark.skipif(torch.cuda.device_count() != 1, reason="needs exactly one GPU")
def test_second_gpu_falls_back_to_first():
    with pytest.warns(UserWarning, match="using cuda:0"):
        assert resolve_device("cuda:1") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="strict=True"):
        resolve_device("cuda:1", strict=True)


@pytest.mark.parametrize("device", ["meta", "not-a-device"])
def test_bad_device_is_a_value_error(device):
    with pytest.raises(ValueError, match="device"):
        resolve_device(device)
