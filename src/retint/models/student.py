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

    With ``backbone``, the teacher's frozen pretrained encoder is fused into the latent the same
    way (:class:`~retint.models.backbone.Fusion`): a narrow student can then keep what the
    encoder knows instead of having to learn it from a teacher's outputs.
    """

    arch = "student"

    def __init__(self, width: float = 1.0, backbone: str | None = None,
                 sha256: str | None = None) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (32, 64, 128, 256, 512))
        self.width = width
        self.backbone = backbone
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
        if backbone:  # imported here: a model without an encoder never loads its package
            from .backbone import FrozenEncoder, Fusion

            self.pretrained = FrozenEncoder(backbone, sha256)
            self.fusion = Fusion(c5, global_channels=max(32, c5 // 2),
                                 feature_channels=self.pretrained.channels[16])

    def latent(self, l: Tensor) -> Tensor:
        """The (fused) latent: what distillation compares with the teacher's."""
        z = self.encoder(l)
        if not self.backbone:
            return z
        pyramid, pooled = self.pretrained(l)
        return self.fusion(z, pyramid[16], pooled)

    def forward(self, l: Tensor, return_latent: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        z = self.latent(l)
        ab = torch.tanh(self.decoder(z))
        return (ab, z) if return_latent else ab
