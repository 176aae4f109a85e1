"""Building blocks shared by the teacher and the student."""

from __future__ import annotations

from torch import Tensor, nn


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 1)."""
    return max(1, round(channels * width))


class SEBlock(nn.Module):
    """Squeeze-excitation: reweight channels by a gate learnt from their global average.

    Lets the network emphasise the filters that carry colour evidence for this image.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.pool(x).flatten(1)
        gate = self.fc2(self.fc1(gate).relu()).sigmoid()
        return x * gate[:, :, None, None]


def conv(cin: int, cout: int, *, dilated: bool = False) -> nn.Conv2d:
    """Kernel-4 convolution: stride 2 halves the size; the dilated one (stride 1) keeps it."""
    if dilated:
        return nn.Conv2d(cin, cout, kernel_size=4, stride=1, padding=3, dilation=2)
    return nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)


def up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """Kernel-4 stride-2 transposed convolution: doubles the size."""
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)


class Refined(nn.Sequential):
    """conv/convT -> BatchNorm -> LeakyReLU -> squeeze-excitation (the teacher's unit)."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
        channels = layer.out_channels
        super().__init__(layer, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2), SEBlock(channels))


class Plain(nn.Sequential):
    """conv/convT -> LeakyReLU (the student's unit: no BatchNorm, no SE)."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__(layer, nn.LeakyReLU(0.2))
