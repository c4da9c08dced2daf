"""torchrl_reward.ops.fuse_conv_relu / conv2d_relu: same outputs as the unfused network."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from torchrl_reward.models.resnet import keep_stages, torchvision_resnet
from torchrl_reward.ops import conv2d_relu, fold_batchnorm, fuse_conv_relu
from torchrl_reward.ops.fused_conv import ConvReLU, FusedBlock

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _folded(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return _fold(getattr(torchvision.models, arch)(num_classes=4))


def _fold(net: nn.Module) -> nn.Module:
    net.eval()
    for module in net.modules():  # non-trivial statistics, so folding is visible
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return fold_batchnorm(net)


def _args(x, weight, bias, residual=None, stride=1, padding=1):
    return (x, weight, bias, [stride] * 2, [padding] * 2, [1, 1], 1, residual)


def _fuse_keeping_output(net: nn.Module) -> list[FusedBlock]:
    """Fuses a folded ResNet in place, checks its output did not change; its fused blocks."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
        fuse_conv_relu(net)
        out = net(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    return [m for m in net.modules() if isinstance(m, FusedBlock)]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_fused_resnet_keeps_the_output(arch):
    net = _folded(arch)
    blocks = _fuse_keeping_output(net)
    assert len(blocks) == (8 if arch == "resnet18" else 16)
    assert isinstance(net.conv1, ConvReLU)


def test_fused_truncated_trunk_keeps_the_output():
    """A trunk with its last stage dropped (``keep_stages``) fuses the stages it kept."""
    torch.manual_seed(0)
    net = torchvision_resnet("resnet10")
    keep_stages(net, 3)
    net.fc = nn.Identity()
    assert len(_fuse_keeping_output(_fold(net))) == 3


def test_op_matches_conv_add_relu_and_keeps_channels_last():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(16, 8, 3, 3), torch.randn(16)
    residual = torch.randn(2, 16, 5, 5)
    out = conv2d_relu(*_args(x, weight, bias, residual, stride=2))
    expected = torch.relu(F.conv2d(x, weight, bias, 2, 1) + residual)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_opcheck():
    x = torch.randn(2, 4, 9, 7)
    weight, bias = torch.randn(6, 4, 3, 3), torch.randn(6)
    torch.library.opcheck(
        conv2d_relu, _args(x, weight, bias), test_utils=("test_schema", "test_faketensor")
    )
    torch.library.opcheck(
        conv2d_relu,
        _args(x, weight, None, torch.randn(2, 6, 9, 7)),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_needs_folded_batch_norms():
    net = torchvision.models.resnet18().eval()
    with pytest.raises(ValueError, match="fold the batch norms first"):
        fuse_conv_relu(net)
    with pytest.raises(TypeError, match="expected a torchvision ResNet"):
        fuse_conv_relu(nn.Sequential())


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "memory_format"),
    [
        (torch.float16, torch.channels_last),
        (torch.float32, torch.channels_last),
        (torch.float32, torch.contiguous_format),
    ],
)
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_cuda_matches_unfused(arch, dtype, memory_format):
    net = _folded(arch).cuda().to(dtype).to(memory_format=memory_format)
    x = torch.randn(8, 3, 64, 64, device="cuda").to(dtype).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = net(x).float()
        fuse_conv_relu(net)
        out = net(x).float()
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
