"""Folding: a conv on raw pixels equal to normalise-then-conv; batch norms folded into convs."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50

from torchrl_reward.ops import MeanPaddedConv2d, fold_batchnorm, fold_normalization_into_conv

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _normalised(raw: torch.Tensor, max_value: float = 255.0) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (raw / max_value - mean) / std


def _raw(n: int = 2, h: int = 23, w: int = 19, max_value: float = 255.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), generator=gen).float() * (max_value / 255.0)


def _conv(**kwargs) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(3, kwargs.pop("out_channels", 8), kwargs.pop("kernel_size", 3), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 7, "stride": 2, "padding": 3, "bias": False},  # ResNet stem
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": 4, "padding": "same"},  # asymmetric padding
        {"kernel_size": 3, "padding": (2, 1), "dilation": 2},
        {"kernel_size": 3, "padding": 1, "out_channels": 6, "groups": 3},
    ],
    ids=["stem", "3x3", "same-even", "dilated", "grouped"],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_zero_padded_conv_folds_exactly_with_mean_padding(kwargs):
    conv = _conv(**kwargs)
    folded = fold_normalization_into_conv(conv, MEAN, STD)
    assert isinstance(folded, MeanPaddedConv2d) and isinstance(folded, nn.Conv2d)
    raw = _raw()
    expected = conv(_normalised(raw))
    torch.testing.assert_close(folded(raw), expected, atol=1e-4, rtol=1e-4)


def test_plain_zero_padded_fold_would_be_wrong_only_at_borders():
    """Why zero-padded convs get mean padding: plain folding breaks the border band."""
    conv = _conv(kernel_size=3, padding=1)
    folded = fold_normalization_into_conv(conv, MEAN, STD)
    plain = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        plain.weight.copy_(folded.weight)
        plain.bias.copy_(folded.bias)
    raw = _raw()
    expected = conv(_normalised(raw))
    got = plain(raw)
    torch.testing.assert_close(
        got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4, rtol=1e-4
    )
    assert (got[..., 0, :] - expected[..., 0, :]).abs().max() > 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": 0},
        {"padding": "valid"},
        {"padding": 1, "padding_mode": "reflect"},
        {"padding": 2, "padding_mode": "replicate"},
    ],
)
def test_unpadded_and_non_zero_padding_fold_into_plain_conv(kwargs):
    conv = _conv(kernel_size=5, **kwargs)
    folded = fold_normalization_into_conv(conv, MEAN, STD)
    assert type(folded) is nn.Conv2d
    assert folded.padding_mode == conv.padding_mode and folded.padding == conv.padding
    raw = _raw()
    torch.testing.assert_close(folded(raw), conv(_normalised(raw)), atol=1e-4, rtol=1e-4)


def test_unit_range_input_and_tensor_stats():
    conv = _conv(kernel_size=3, padding=1)
    folded = fold_normalization_into_conv(
        conv, torch.tensor(MEAN), torch.tensor(STD), max_value=1.0
    )
    raw = _raw(max_value=1.0)
    torch.testing.assert_close(folded(raw), conv(_normalised(raw, 1.0)), atol=1e-5, rtol=1e-5)


def test_folded_conv_keeps_dtype_and_leaves_original_untouched():
    conv = _conv(kernel_size=3, padding=1).double()
    before = conv.weight.detach().clone()
    folded = fold_normalization_into_conv(conv, MEAN, STD)
    assert folded.weight.dtype == torch.float64 and folded.pad_value.dtype == torch.float64
    assert torch.equal(conv.weight, before)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(TypeError, match=r"expected an nn\.Conv2d, got Linear"):
        fold_normalization_into_conv(nn.Linear(3, 3), MEAN, STD)
    with pytest.raises(ValueError, match="3 input channels, got 2 mean"):
        fold_normalization_into_conv(_conv(), (0.5, 0.5), STD)
    with pytest.raises(ValueError, match="non-zero"):
        fold_normalization_into_conv(_conv(), MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="max_value must be > 0"):
        fold_normalization_into_conv(_conv(), MEAN, STD, max_value=0.0)


@pytest.mark.parametrize("arch", [resnet18, resnet50])
def test_fold_batchnorm_keeps_a_resnet_output_and_removes_every_bn(arch):
    torch.manual_seed(0)
    net = arch(num_classes=4)
    for m in net.modules():  # non-trivial statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    expected = net(x)
    assert fold_batchnorm(net) is net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(x), expected, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
