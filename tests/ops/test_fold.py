"""Folding batch norms into the convs before them keeps a network's output."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50

from torchrl_reward.ops import fold_batchnorm


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
