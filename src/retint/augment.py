"""Old-photo degradation of the model's input L, for training only.

Real old prints and films differ from a clean photo's lightness: film grain, soft focus,
faded or crushed contrast, an odd tone curve, dust and scratches, JPEG blocking from a careless
scan. :func:`age_lightness` applies a random mix of these to a share of a training batch's L,
while the target colour stays the clean photo's, so the model learns to see through them.
Everything is drawn from one ``torch.Generator``: a run with a seed replays its degradations.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def _blur(l: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=l.dtype, device=l.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    l = F.conv2d(F.pad(l[None], (radius, radius, 0, 0), mode="replicate"), k)
    return F.conv2d(F.pad(l, (0, 0, radius, radius), mode="replicate"), k.transpose(-1, -2))[0]


def _jpeg(l: Tensor, quality: int) -> Tensor:
    gray = Image.fromarray((l[0].clamp(0, 1) * 255).round().byte().cpu().numpy(), "L")
    buf = io.BytesIO()
    gray.save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
    return torch.from_numpy(back).to(l)[None]


def _scratches_and_dust(l: Tensor, g: torch.Generator) -> Tensor:
    _, h, w = l.shape
    out = l.clone()
    for _ in range(int(torch.randint(1, 4, (), generator=g))):  # vertical scratches
        x = int(torch.randint(0, w, (), generator=g))
        out[:, :, x : x + 1] = 1.0 if _chance(g, 0.7) else 0.05
    spots = int(torch.randint(3, 20, (), generator=g))  # dust: small light or dark specks
    ys = torch.randint(0, h, (spots,), generator=g)
    xs = torch.randint(0, w, (spots,), generator=g)
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        out[:, y : y + 2, x : x + 2] = 0.95 if _chance(g, 0.5) else 0.1
    return out


def age_one(l: Tensor, g: torch.Generator) -> Tensor:
    """One L (1,H,W) in [0,1], degraded by a random mix of old-photo defects."""
    if _chance(g, 0.5):  # tone curve: gamma
        l = l.clamp(0, 1) ** _uniform(g, 0.7, 1.5)
    if _chance(g, 0.5):  # faded (lifted blacks, lowered whites) or crushed contrast
        if _chance(g, 0.6):
            lo, hi = _uniform(g, 0.0, 0.25), _uniform(g, 0.75, 1.0)
            l = lo + (hi - lo) * l
        else:
            lo, hi = _uniform(g, 0.0, 0.15), _uniform(g, 0.85, 1.0)
            l = ((l - lo) / (hi - lo)).clamp(0, 1)
    if _chance(g, 0.4):  # soft focus
        l = _blur(l, _uniform(g, 0.5, 1.8))
    if _chance(g, 0.5):  # film grain, slightly clumped
        noise = torch.randn(l.shape, generator=g, dtype=l.dtype) * _uniform(g, 0.01, 0.06)
        l = l + (_blur(noise, 0.6) * 1.5 if _chance(g, 0.5) else noise)
    if _chance(g, 0.25):
        l = _scratches_and_dust(l, g)
    l = l.clamp(0, 1)
    if _chance(g, 0.3):  # JPEG blocking from a careless scan
        l = _jpeg(l, int(torch.randint(10, 45, (), generator=g)))
    return l


def age_lightness(l: Tensor, share: float, g: torch.Generator) -> Tensor:
    """A batch of L (B,1,H,W) with about ``share`` of its images degraded (the rest clean)."""
    if share <= 0:
        return l
    out = l.clone()
    for i in range(len(l)):
        if _chance(g, share):
            out[i] = age_one(l[i].float().cpu(), g).to(l)
    return out
