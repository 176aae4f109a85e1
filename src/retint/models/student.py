"""The student: a plain autoencoder (no skips, no BatchNorm, no SE) with the teacher's latent."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Plain, conv, scaled, up


class Student(nn.Module):
    """L (B,1,H,W) in [0,1] -> ab (B,2,H,W) in [-1,1]; H and W multiples of 16.

    Encoder 1->32->64->128->256 (stride 2), dilated 256->512 (the latent, 512x16x16 at 256x256,
    same shape as the teacher's so it can be distilled), dilated 512->256, then transposed convs
    256->128->64->32->2 and tanh.
    """

    arch = "student"

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (32, 64, 128, 256, 512))
        self.width = width
        self.latent_channels = c5
        self.encoder = nn.Sequential(
            Plain(conv(1, c1)),
            Plain(conv(c1, c2)),
            Plain(conv(c2, c3)),
            Plain(conv(c3, c4)),
            Plain(conv(c4, c5, dilated=True)),
        )
        self.decoder = nn.Sequential(
            Plain(conv(c5, c4, dilated=True)),
            Plain(up(c4, c3)),
            Plain(up(c3, c2)),
            Plain(up(c2, c1)),
            up(c1, 2),
        )

    def latent(self, l: Tensor) -> Tensor:
        return self.encoder(l)

    def forward(self, l: Tensor, return_latent: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        z = self.encoder(l)
        ab = torch.tanh(self.decoder(z))
        return (ab, z) if return_latent else ab
