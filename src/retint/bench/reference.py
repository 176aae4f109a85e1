"""The original project's pipeline, rebuilt to be timed beside ours on the same photo and model.

A fixed distorting 384² resize, float64 scikit-image LAB, the model, a reconstruction quantized
to 8-bit channels at 384², and a resize back up to the photo's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.color
import torch
from PIL import Image
from torch import nn

from ..color import AB_SCALE, L_SCALE
from .timing import Stage

REFERENCE_SIZE = 384  # the original project's fixed, distorting input size (24 x 16)


def seed_quantize(l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """The original project's ``rgb_image`` reconstruction (HxW, HxWx2 -> HxWx3 float64 LAB):
    L*100 cast to uint8 and ab*128 to int8 before lab2rgb. Its a-from-L bug is not kept; its
    quantization is, since it costs both time and banding."""
    int8 = np.iinfo(np.int8)
    l = np.clip(l_norm * L_SCALE, 0, L_SCALE).astype(np.uint8)
    ab = np.clip(ab_norm * AB_SCALE, int8.min, int8.max).astype(np.int8)
    return np.concatenate((l[..., None], ab), axis=-1).astype(np.float64)


def reference_stages(model: nn.Module, device: torch.device, src: Path,
                     dst: Path) -> list[tuple[str, Stage]]:
    """The original project's pipeline on ``src`` -> ``dst``, stage by stage."""

    def load(s: dict) -> None:
        with Image.open(src) as im:
            s["size"] = im.size
            s["rgb"] = np.asarray(im.convert("RGB").resize((REFERENCE_SIZE, REFERENCE_SIZE)))

    def to_lab(s: dict) -> None:
        lab = skimage.color.rgb2lab(s["rgb"])
        s["l"], s["ab"] = lab[..., 0] / L_SCALE, lab[..., 1:] / AB_SCALE

    def run_model(s: dict) -> None:
        x = torch.from_numpy(s["l"]).float()[None, None].to(device)
        with torch.no_grad():
            s["pred"] = model(x)[0].permute(1, 2, 0).cpu().numpy()

    def to_rgb(s: dict) -> None:
        rgb = skimage.color.lab2rgb(seed_quantize(s["l"], s["pred"]))
        s["out"] = (rgb * 255).astype(np.uint8)  # truncated, as the original did

    def save(s: dict) -> None:
        Image.fromarray(s["out"]).resize(s["size"]).save(dst)  # Pillow's default quality, 75

    return [("open+resize", load), ("rgb2lab", to_lab), ("model", run_model),
            ("quantize+lab2rgb", to_rgb), ("resize+save", save)]
