"""The full-resolution test photo (black and white, as users bring them), and our pipeline cut
at its public stages."""

from __future__ import annotations

import math
from pathlib import Path

import skimage.data
from PIL import Image, ImageOps

from ..inference import Colorizer
from ..io import atomic_write, read_image, write_image
from .timing import Stage

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
TILE = 500  # the largest cell, in pixels: the photos stay near their native resolution


def make_photo(path: Path, megapixels: float) -> tuple[int, int]:
    """A black-and-white (one-channel) 4:3 JPEG of about ``megapixels``, quality 95: real
    skimage photos tiled near their native resolution (cells of at most 500 px), so decode and
    encode meet camera-like detail rather than an upscaled blur that JPEG compresses (and
    decompresses) far too easily."""
    w = max(32, round(math.sqrt(megapixels * 1e6 * 4 / 3)))
    h = max(24, round(w * 3 / 4))
    cols, rows = math.ceil(w / TILE), math.ceil(h / TILE)
    photos = [Image.fromarray(getattr(skimage.data, name)()[:, :, :3]) for name in PHOTOS]
    canvas = Image.new("RGB", (w, h))
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        x0, y0, x1, y1 = c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows
        tile = photos[i % len(photos)]
        tile = ImageOps.mirror(tile) if i // len(photos) % 2 else tile
        canvas.paste(tile.resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    gray = canvas.convert("L")
    atomic_write(path, lambda tmp: gray.save(tmp, format="JPEG", quality=95))
    return h, w


def ours_stages(colorizer: Colorizer, src: Path, dst: Path) -> list[tuple[str, Stage]]:
    """``Colorizer.colorize_file`` cut at its public stages, the photo read as stored (a gray
    JPEG as one channel, :func:`~retint.io.read_image`) and ab upsampled inside ``compose``, as
    ``colorize_many`` does."""

    def decode(s: dict) -> None:
        s["img"] = read_image(src)  # a gray JPEG: one channel

    def lightness(s: dict) -> None:  # a gray photo stays its gray plane (inference.Lightness)
        s["l"] = colorizer.lightness_source(s["img"])

    def model(s: dict) -> None:
        s["ab"] = colorizer.predict_ab([s["l"]], full_size=False)[0]  # as colorize_many

    def rgb(s: dict) -> None:  # ab upsampled band by band inside
        s["rgb"] = colorizer.compose(s["l"], s["ab"], s["img"].dtype)

    def encode(s: dict) -> None:
        write_image(dst, s["rgb"])

    return [("decode", decode), ("L", lightness), ("model+resize", model), ("RGB", rgb),
            ("encode", encode)]
