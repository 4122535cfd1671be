"""The paper's CNNs, without torchvision: CIFAR ResNet-(6n+2) and VGG16-BN.

The ResNets are He et al.'s CIFAR networks: three stages of ``n`` basic blocks with 16/32/64
channels, and where a block changes the resolution or the channels its shortcut is a strided 1×1
convolution followed by batch norm ("option B"), as in the official code; ResNet-56 (``n = 9``) has
855,770 parameters, as there. ``width`` scales the channels for small CPU runs. VGG16-BN takes a
``width`` too (64 is the original). The Swish of the official code is ``x * sigmoid(5 x)`` (β = 5).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["SWISH_BETA", "BasicBlock", "CifarResNet", "Swish", "build", "count_parameters", "make_activation",
           "resnet", "resnet56", "vgg16_bn"]

SWISH_BETA = 5.0
"""β of the official code's Swish."""


class Swish(nn.Module):
    """Swish ``x * sigmoid(beta * x)`` (Ramachandran et al.)."""

    def __init__(self, beta: float = SWISH_BETA) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x σ(βx) = silu(βx)/β: one fused kernel instead of three (about 20 % faster training on a CPU).
        return F.silu(self.beta * x) / self.beta


def make_activation(name: str) -> nn.Module:
    """``'relu'`` or ``'swish'`` as a module."""
    if name == "relu":
        return nn.ReLU()
    if name == "swish":
        return Swish()
    raise ValueError(f"activation must be 'relu' or 'swish'; got {name!r}")


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers; the shortcut is the identity, or a strided 1×1 conv-BN (option B)
    where the block changes the resolution or the channels."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = make_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images."""

    def __init__(self, n: int, *, activation: str = "relu", num_classes: int = 10,
                 in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        for name, value in (("n", n), ("num_classes", num_classes), ("in_channels", in_channels),
                            ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = make_activation(activation)
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1, activation))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal conv and linear weights, as in the official code."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet(depth: int, **kwargs) -> CifarResNet:
    """ResNet-``depth`` for ``depth = 6n + 2`` (8, 20, 32, 44, 56, 110, ...)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1; got {depth!r}")
    return CifarResNet((depth - 2) // 6, **kwargs)


def resnet56(activation: str = "relu", num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """The paper's ResNet-56 (855,770 parameters)."""
    return resnet(56, activation=activation, num_classes=num_classes, in_channels=in_channels)


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             activation: str = "relu", width: int = 64) -> nn.Sequential:
    """VGG16 with batch norm for 32×32 (five poolings) or 28×28 inputs (the last pooling dropped,
    28 → 14 → 7 → 3 → 1), with a linear classifier on the last features. ``width`` is the first
    layer's channels (64 in the original); every layer is scaled by ``width / 64``."""
    if input_size not in (28, 32):
        raise ValueError(f"input_size must be 28 or 32; got {input_size!r}")
    if not isinstance(width, int) or width < 1 or (width * 8) % 64:
        raise ValueError(f"width must be a positive multiple of 8; got {width!r}")
    layers: list[nn.Module] = []
    spec = VGG16_LAYERS if input_size == 32 else VGG16_LAYERS[:-1]
    c_in = in_channels
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            c_out = item * width // 64
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                       make_activation(activation)]
            c_in = c_out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in, num_classes))


def build(name: str, **kwargs) -> nn.Module:
    """A model by name: ``'resnet<depth>'`` (e.g. ``'resnet56'``) or ``'vgg16_bn'``."""
    if name == "vgg16_bn":
        return vgg16_bn(**kwargs)
    if name.startswith("resnet") and name[6:].isdigit():
        return resnet(int(name[6:]), **kwargs)
    raise ValueError(f"model must be 'resnet<6n+2>' or 'vgg16_bn'; got {name!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
