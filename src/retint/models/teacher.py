"""The teacher: a U-Net-like autoencoder with a dilated bottleneck and squeeze-excitation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Refined, conv, scaled, up


class Teacher(nn.Module):
    """L (B,1,H,W) in [0,1] -> ab (B,2,H,W) in [-1,1]; H and W multiples of 16.

    Encoder 1->32->64->128->256 (stride 2 each), bottleneck 256->512->256 (dilated, stride 1;
    the 512-channel map is the latent, 512x16x16 at 256x256), decoder of transposed convs fed
    with skip concatenations, and the input L concatenated before the last 3x3 conv.

    With ``backbone`` (e.g. ``"efficientnet-lite0"``), a frozen pretrained encoder also reads L
    and its stride-16 features and pooled code are fused into the 512-channel latent
    (:class:`~retint.models.backbone.Fusion`); the fused map is then the latent. With
    ``pyramid`` too, its stride-32, 8 and 4 features are added to the decoder at those
    resolutions (:class:`~retint.models.backbone.PyramidSkips`). Without a backbone, the seed
    teacher is exactly as specified.
    """

    arch = "teacher"

    def __init__(self, width: float = 1.0, backbone: str | None = None, pyramid: bool = False,
                 sha256: str | None = None) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (32, 64, 128, 256, 512))
        self.width = width
        self.backbone = backbone
        self.pyramid = bool(backbone) and pyramid
        self.latent_channels = c5
        self.enc1 = Refined(conv(1, c1))
        self.enc2 = Refined(conv(c1, c2))
        self.enc3 = Refined(conv(c2, c3))
        self.enc4 = Refined(conv(c3, c4))
        self.bottleneck_in = Refined(conv(c4, c5, dilated=True))
        self.bottleneck_out = Refined(conv(c5, c4, dilated=True))
        self.dec4 = Refined(up(c4 + c4, c3))
        self.dec3 = Refined(up(c3 + c3, c2))
        self.dec2 = Refined(up(c2 + c2, c1))
        self.dec1 = up(c1 + c1, 2)
        self.head = nn.Conv2d(2 + 1, 2, kernel_size=3, padding=1)
        if backbone:  # imported here: a model without an encoder never loads its package
            from .backbone import FrozenEncoder, Fusion, PyramidSkips

            self.pretrained = FrozenEncoder(backbone, sha256)
            self.fusion = Fusion(c5, feature_channels=self.pretrained.channels[16])
            if self.pyramid:  # decoder width after the bottleneck (s16), dec4 (s8), dec3 (s4)
                self.skips = PyramidSkips(self.pretrained.channels, {32: c4, 8: c3, 4: c2})

    def _encode(self, l: Tensor) -> tuple[Tensor, list[Tensor], dict[int, Tensor]]:
        e1 = self.enc1(l)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        z = self.bottleneck_in(e4)
        pyramid: dict[int, Tensor] = {}
        if self.backbone:
            pyramid, pooled = self.pretrained(l)
            z = self.fusion(z, pyramid[16], pooled)
        return z, [e1, e2, e3, e4], pyramid

    def latent(self, l: Tensor) -> Tensor:
        """The (fused) 512-channel bottleneck map alone (what the student learns to match)."""
        return self._encode(l)[0]

    def forward(self, l: Tensor, return_latent: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        z, (e1, e2, e3, e4), pyramid = self._encode(l)
        x = self.bottleneck_out(z)
        if self.pyramid:
            x = self.skips.add(x, 32, pyramid)
        x = self.dec4(torch.cat((x, e4), 1))
        if self.pyramid:
            x = self.skips.add(x, 8, pyramid)
        x = self.dec3(torch.cat((x, e3), 1))
        if self.pyramid:
            x = self.skips.add(x, 4, pyramid)
        x = self.dec2(torch.cat((x, e2), 1))
        x = self.dec1(torch.cat((x, e1), 1))
        ab = torch.tanh(self.head(torch.cat((x, l), 1)))
        return (ab, z) if return_latent else ab
