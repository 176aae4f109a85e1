"""Old-photo degradation of the model's input L, for training only.

Real old prints and films differ from a clean photo's lightness: film grain, soft focus,
faded or crushed contrast, an odd tone curve, dust and scratches, JPEG blocking from a careless
scan. :func:`age_lightness` applies a random mix of these to a share of a training batch's L,
while the target colour stays the clean photo's, so the model learns to see through them.

Every defect is applied to the whole batch at once, on the batch's own device, so a run whose
photos live on a GPU ages them there without a trip through the CPU (JPEG blocking is the codec's
own 8x8 DCT quantisation, done in tensors). Each image's choices and strengths are drawn from one
CPU ``torch.Generator``, its noise from a device generator seeded from it: a run with a seed
replays its degradations on the same kind of device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .device import send

#: The JPEG standard's luminance quantisation table (quality 50), row by row.
JPEG_LUMA_TABLE = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=torch.float32).view(8, 8)
BLUR_RADIUS = 5  # taps each side: 3 sigma of the strongest soft focus (1.8 px)


def _dct_matrix() -> Tensor:
    """The orthonormal 8-point DCT-II, as the JPEG codec applies it to each block's rows."""
    k, n = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    m = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


def jpeg_table(quality: Tensor) -> Tensor:
    """(B,) integer qualities in [1, 100] -> (B, 8, 8) quantisation tables, scaled as libjpeg
    scales them (in integers)."""
    q = quality.long().clamp(1, 100)
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)
    table = JPEG_LUMA_TABLE.to(q.device).long() * scale.view(-1, 1, 1)
    return torch.div(table + 50, 100, rounding_mode="floor").clamp(1, 255).float()


def jpeg_blocks(l: Tensor, quality: Tensor) -> Tensor:
    """L (B,1,H,W) in [0,1] as a grayscale baseline JPEG at each image's ``quality`` (B,
    CPU) would decode it: 8-bit levels, edge blocks padded by repetition, each 8x8 block's DCT
    coefficients rounded to the quality's table."""
    b, _, h, w = l.shape
    ph, pw = -h % 8, -w % 8
    v = F.pad((l * 255).round(), (0, pw, 0, ph), mode="replicate")[:, 0] - 128
    hb, wb = v.shape[1] // 8, v.shape[2] // 8
    blocks = v.view(b, hb, 8, wb, 8).transpose(2, 3)  # (B, hb, wb, 8, 8)
    d = send(_dct_matrix(), l.device)
    table = send(jpeg_table(quality), l.device).view(b, 1, 1, 8, 8)
    coef = ((d @ blocks @ d.T) / table).round() * table
    out = (d.T @ coef @ d).transpose(2, 3).reshape(b, hb * 8, wb * 8) + 128
    return (out.clamp(0, 255).round() / 255)[:, None, :h, :w]


def _blur(l: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of each image (B,1,H,W) by its own ``sigma`` (B, on l's
    device), edges replicated; each kernel is cut at 3 sigma (at least one tap each side)."""
    b = l.shape[0]
    t = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=l.dtype, device=l.device)
    s = sigma.to(l).view(b, 1)
    radius = (3 * s + 0.5).floor().clamp(1, BLUR_RADIUS)
    k = torch.exp(-0.5 * (t / s) ** 2) * (t.abs() <= radius)
    k = (k / k.sum(1, keepdim=True)).view(b, 1, 1, -1)
    r = BLUR_RADIUS
    x = F.conv2d(F.pad(l.transpose(0, 1), (r, r, 0, 0), mode="replicate"), k, groups=b)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2), groups=b)
    return x.transpose(0, 1)


def _scratches_and_dust(l: Tensor, g: torch.Generator) -> Tensor:
    """1-3 full-height scratches (light, or dark) and 3-19 specks of 2x2 dust per image.
    Where they fall is drawn here, on the CPU; the marks are drawn on l's device."""
    b, _, h, w = l.shape
    dev = l.device

    def marks(n_lo: int, n_hi: int, most: int, p_light: float) -> tuple[Tensor, Tensor]:
        """(which of ``most`` marks per image are drawn, light or dark) -> flat indices."""
        count = torch.randint(n_lo, n_hi, (b, 1), generator=g)
        drawn = torch.arange(most) < count
        light = (torch.rand(b, most, generator=g) < p_light).long()
        image = torch.arange(b).view(b, 1).expand(b, most)
        return light[drawn], image[drawn], drawn

    light, image, drawn = marks(1, 4, 3, 0.7)  # scratches: whole columns
    xs = torch.randint(0, w, (b, 3), generator=g)[drawn]
    columns = torch.zeros(2 * b * w, dtype=torch.bool, device=dev)
    columns[send((light * b + image) * w + xs, dev)] = True
    columns = columns.view(2, b, 1, 1, w)
    out = torch.where(columns[1], 1.0, torch.where(columns[0], 0.05, l))
    light, image, drawn = marks(3, 20, 19, 0.5)  # dust: 2x2 specks
    ys = torch.randint(0, h, (b, 19), generator=g)[drawn]
    xs = torch.randint(0, w, (b, 19), generator=g)[drawn]
    specks = torch.zeros(2 * b * h * w, device=dev)
    specks[send(((light * b + image) * h + ys) * w + xs, dev)] = 1.0
    specks = F.max_pool2d(F.pad(specks.view(2 * b, 1, h, w), (1, 0, 1, 0)), 2, stride=1) > 0
    return torch.where(specks[b:], 0.95, torch.where(specks[:b], 0.1, out))


def _on(x: Tensor, on: Tensor, defect, *params: Tensor) -> Tensor:
    """``x`` with ``defect(x[i], *(p[i] for p in params))`` applied to the images where ``on``
    holds. ``on`` and ``params`` are per-image CPU tensors: the subset is found without
    asking the device, and only its parameters travel."""
    idx = on.nonzero().flatten()
    if idx.numel() == 0:
        return x
    where = send(idx, x.device)
    x = x.clone()
    x[where] = defect(x[where], *(send(p[idx], x.device) for p in params))
    return x


def age_lightness(l: Tensor, share: float, g: torch.Generator) -> Tensor:
    """A batch of L (B,1,H,W) in [0,1] with about ``share`` of its images degraded by a random
    mix of old-photo defects; the rest are returned as they are."""
    if share <= 0:
        return l
    b, dev = l.shape[0], l.device

    def uniform(lo: float, hi: float) -> Tensor:  # one value per image, (B, 1, 1, 1)
        return (lo + (hi - lo) * torch.rand(b, generator=g)).view(b, 1, 1, 1)

    def chance(p: float) -> Tensor:
        return torch.rand(b, generator=g) < p

    noise_gen = torch.Generator(device=dev)
    noise_gen.manual_seed(int(torch.randint(0, 2**62, (), generator=g)))
    aged = chance(share)
    # each draw is made for every image, so one image's choices do not depend on another's
    gamma_on, gamma = chance(0.5), uniform(0.7, 1.5)  # tone curve
    tone_on, fade = chance(0.5), chance(0.6).view(b, 1, 1, 1)  # faded or crushed contrast
    lo = torch.where(fade, uniform(0.0, 0.25), uniform(0.0, 0.15))
    hi = torch.where(fade, uniform(0.75, 1.0), uniform(0.85, 1.0))
    blur_on, sigma = chance(0.4), uniform(0.5, 1.8)  # soft focus
    grain_on, strength, clumped = chance(0.5), uniform(0.01, 0.06), chance(0.5)  # film grain
    marks_on = chance(0.25)  # scratches and dust
    jpeg_on, quality = chance(0.3), torch.randint(10, 45, (b,), generator=g)  # careless scan

    def tone(x: Tensor, fade: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return torch.where(fade, lo + (hi - lo) * x, ((x - lo) / (hi - lo)).clamp(0, 1))

    def grain(x: Tensor, strength: Tensor, clumped: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=noise_gen, device=dev) * strength
        soft = _blur(noise, torch.full((len(x),), 0.6, device=dev)) * 1.5
        return x + torch.where(clumped.view(-1, 1, 1, 1), soft, noise)

    x = l.float()
    x = _on(x, aged & gamma_on, lambda x, gamma: x.clamp(0, 1) ** gamma, gamma)
    x = _on(x, aged & tone_on, tone, fade, lo, hi)
    x = _on(x, aged & blur_on, lambda x, sigma: _blur(x, sigma.flatten()), sigma)
    x = _on(x, aged & grain_on, grain, strength, clumped)
    x = _on(x, aged & marks_on, lambda x: _scratches_and_dust(x, g))
    x = _on(x, aged, lambda x: x.clamp(0, 1))
    idx = (aged & jpeg_on).nonzero().flatten()  # the qualities stay on the CPU: tables
    x = _on(x, aged & jpeg_on, lambda x: jpeg_blocks(x, quality[idx]))
    return x.to(l.dtype)
