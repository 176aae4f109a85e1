"""The Colorizer: the one inference path behind the CLI and the Python API.

photo -> L at full resolution -> L shrunk to the working size (aspect kept, padded to a square)
-> model -> ab -> padding cropped, ab upsampled to full resolution -> merged with the ORIGINAL L
-> RGB. Only the colour passes through the network, so the detail of the input survives at its
exact size; the colour of a sepia or tinted scan is ignored (only its L is used). Where a
predicted colour falls outside sRGB for its lightness, the RGB is clipped (as skimage does), which
shifts L slightly on those pixels.

``saturation`` scales the predicted chroma (ab) at the working size; the scaled colours are then
pulled back into the sRGB gamut for their L (:func:`~retint.color.gamut_limit`), so a boost never
clips to a flat colour or shifts lightness. It is a user's taste knob, not a fix for a timid model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .color import (
    AB_SCALE,
    L_SCALE,
    gamut_limit,
    lab_to_linear_rgb,
    lab_to_rgb,
    lightness_from_srgb8,
    linear_to_srgb8,
    rgb_to_l,
)
from .device import pick_device
from .io import pil_to_rgb, read_rgb, to_float, write_image
from .models import check_size, load_weights, model_id, resolve_model_path

BAND_PIXELS = 2_000_000  # full-resolution colour maths in bands of rows: bounded memory


def working_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) of an HxW photo shrunk to a long side of ``size``, aspect kept: what
    the model sees before padding (evaluation and benchmarks use the same rounding)."""
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


class Colorizer:
    """Colorize photos with a bundled or trained model.

    >>> colorizer = Colorizer()                      # bundled default model, best device
    >>> rgb = colorizer.colorize(gray_or_colour_rgb)  # array in -> same size and dtype out
    >>> colorizer.colorize(PIL.Image.open("old.jpg"))  # PIL image in -> PIL image out
    >>> colorizer.colorize_file("old.jpg", "new.jpg")
    """

    def __init__(self, model: str | Path = "default", device: str = "auto",
                 working_size: int = 256, batch_size: int = 4, saturation: float = 1.0) -> None:
        if not 0.0 <= saturation <= 4.0:
            raise ValueError(f"saturation must be between 0 and 4, got {saturation}")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.working_size = check_size("working size", working_size)
        self.saturation = saturation
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.model_path = resolve_model_path(str(model))
        self.model, self.card = load_weights(self.model_path, self.device)

    def resized(self, working_size: int) -> Colorizer:
        """The same model (shared, not copied) at another working size."""
        other = copy.copy(self)
        other.working_size = check_size("working size", working_size)
        return other

    @property
    def name(self) -> str:
        base = self.card.get("name") or model_id(self.model_path)
        return base if self.saturation == 1.0 else f"{base} (saturation {self.saturation:g})"

    @torch.no_grad()
    def predict_ab(self, l_full: Sequence[Tensor]) -> list[Tensor]:
        """ab (2,H,W) for each full-resolution L (1,H,W) in [0,1], run at the working size."""
        size = self.working_size
        results: list[Tensor] = []
        for start in range(0, len(l_full), self.batch_size):
            chunk = l_full[start : start + self.batch_size]
            shapes = [working_shape(*l.shape[-2:], size) for l in chunk]
            batch = torch.empty((len(chunk), 1, size, size), device=self.device)
            for n, (l, (h, w)) in enumerate(zip(chunk, shapes, strict=True)):
                small = F.interpolate(l[None].to(self.device), size=(h, w), mode="bilinear",
                                      antialias=True, align_corners=False)
                # pad (not stretch) to the square working size; replicate keeps edges neutral
                batch[n] = F.pad(small, (0, size - w, 0, size - h), mode="replicate")[0]
            ab = self.model(batch).float()
            if self.saturation != 1.0:
                ab = gamut_limit(batch, (ab * self.saturation).clamp(-1.0, 1.0))
            for n, (l, (h, w)) in enumerate(zip(chunk, shapes, strict=True)):
                full = F.interpolate(ab[n : n + 1, :, :h, :w], size=tuple(l.shape[-2:]),
                                     mode="bilinear", align_corners=False)
                results.append(full[0])
        return results

    def colorize_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Colorize HxWx3 (or HxW) arrays; each result has its input's size and dtype (uint8,
        uint16, or a float type in [0, 1])."""
        l_full = [self.lightness(img) for img in images]
        abs_ = self.predict_ab(l_full)
        return [self.compose(l, ab, img.dtype) for l, ab, img in zip(l_full, abs_, images,
                                                                       strict=True)]

    def colorize(self, image: np.ndarray | Image.Image) -> np.ndarray | Image.Image:
        """One photo: an array (as :meth:`colorize_many`) or a PIL image, which comes back as
        an RGB PIL image of the same size (16-bit gray reduced to 8 bits)."""
        if isinstance(image, Image.Image):
            return Image.fromarray(self.colorize(pil_to_rgb(image)))
        return self.colorize_many([image])[0]

    def colorize_file(self, src: str | Path, dst: str | Path, quality: int = 95) -> None:
        """Read ``src``, write the colorized photo to ``dst`` atomically (never onto ``src``)."""
        if Path(dst).resolve() == Path(src).resolve():
            raise ValueError(f"{dst}: refusing to overwrite the input")
        write_image(dst, self.colorize(read_rgb(src)), quality=quality)

    # -- the stages of colorize_many, public so benchmarks can time each one

    def lightness(self, image: np.ndarray) -> Tensor:
        """Full-resolution ``L / 100`` (1,H,W) on the CPU, computed in bands."""
        image = _as_rgb(image)
        if image.dtype == np.uint8 and self.device.type == "cpu":
            return torch.from_numpy(lightness_from_srgb8(image))[None]
        floating = np.issubdtype(image.dtype, np.floating)
        rgb = np.clip(image, 0.0, 1.0).astype(np.float32) if floating else to_float(image)
        h, w = rgb.shape[:2]
        out = torch.empty((1, h, w), dtype=torch.float32)
        for r0, r1 in _bands(h, w):
            band = torch.from_numpy(rgb[r0:r1]).permute(2, 0, 1).to(self.device)
            out[:, r0:r1] = rgb_to_l(band).cpu()
        return out

    def compose(self, l: Tensor, ab: Tensor, dtype: np.dtype) -> np.ndarray:
        """Original L + predicted ab -> RGB in the input's dtype (float stays float)."""
        h, w = l.shape[-2:]
        floating = np.issubdtype(dtype, np.floating)
        out_dtype = dtype if floating else np.uint16 if dtype == np.uint16 else np.uint8
        peak = 1.0 if floating else float(np.iinfo(out_dtype).max)
        out = np.empty((h, w, 3), dtype=out_dtype)
        for r0, r1 in _bands(h, w):
            lab = torch.cat((l[:, r0:r1].to(ab.device).clamp(0.0, 1.0) * L_SCALE,
                             ab[:, r0:r1] * AB_SCALE))
            if out_dtype == np.uint8:
                rgb = linear_to_srgb8(lab_to_linear_rgb(lab))
            else:
                rgb = lab_to_rgb(lab) * peak
                rgb = rgb if floating else rgb.round()
            out[r0:r1] = rgb.permute(1, 2, 0).cpu().numpy()
        return out


def _bands(h: int, w: int) -> list[tuple[int, int]]:
    rows = max(1, BAND_PIXELS // max(1, w))
    return [(r, min(h, r + rows)) for r in range(0, h, rows)]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx3 or HxWx4 -> contiguous HxWx3 of the same dtype (gray replicated, alpha off)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])
