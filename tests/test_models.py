"""The CIFAR ResNets and VGG16-BN."""

from __future__ import annotations

import pytest
import torch

from pdeeos import models


def test_resnet56_has_the_papers_parameter_count() -> None:
    assert models.count_parameters(models.resnet56()) == 855_770  # the official code's count


@pytest.mark.parametrize("activation", ["relu", "swish"])
@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
def test_small_resnet_forward_shape(activation: str, in_channels: int, size: int) -> None:
    net = models.resnet(8, activation=activation, in_channels=in_channels, width=4, num_classes=7)
    assert net(torch.randn(2, in_channels, size, size)).shape == (2, 7)


def test_swish_is_x_sigmoid_5x() -> None:
    x = torch.linspace(-2, 2, 9)
    assert torch.allclose(models.Swish()(x), x / (1 + torch.exp(-5 * x)))


@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
def test_vgg16_bn_forward_shape(in_channels: int, size: int) -> None:
    net = models.vgg16_bn(num_classes=10, in_channels=in_channels, input_size=size).eval()
    assert net(torch.randn(1, in_channels, size, size)).shape == (1, 10)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 13


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="depth must be 6n\\+2"):
        models.resnet(10)
    with pytest.raises(ValueError, match="activation must be"):
        models.resnet(8, activation="tanh")
    with pytest.raises(ValueError, match="input_size must be"):
        models.vgg16_bn(input_size=64)
    with pytest.raises(ValueError, match="model must be"):
        models.build("alexnet")


def test_resnet_shortcuts_are_1x1_conv_bn_where_the_shape_changes() -> None:
    net = models.resnet(8, width=4)
    kinds = [type(block.shortcut).__name__ for block in net.blocks]
    assert kinds == ["Identity", "Sequential", "Sequential"]
    conv = net.blocks[1].shortcut[0]
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((1, 1), (2, 2), 4, 8)


def test_narrow_vgg16_scales_every_layer() -> None:
    net = models.vgg16_bn(width=8)
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="width must be a positive multiple of 8"):
        models.vgg16_bn(width=12)
