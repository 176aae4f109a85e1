"""Side-by-side contact sheets: one row per photo, one labelled column per version."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import to_uint8

LABEL_HEIGHT = 24


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str],
                  height: int = 256, gap: int = 6) -> np.ndarray:
    """Each row's images scaled to ``height`` and laid side by side under column ``labels``."""
    tiles = [[Image.fromarray(to_uint8(img)).convert("RGB") for img in row] for row in rows]
    tiles = [[t.resize((max(1, round(t.width * height / t.height)), height), Image.LANCZOS)
              for t in row] for row in tiles]
    col_w = [max(row[c].width for row in tiles) for c in range(len(labels))]
    width = sum(col_w) + gap * (len(labels) + 1)
    sheet = Image.new("RGB", (width, LABEL_HEIGHT + len(rows) * (height + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    x = gap
    for c, label in enumerate(labels):
        draw.text((x + 4, 6), label, fill="black", font=font)
        for r, row in enumerate(tiles):
            sheet.paste(row[c], (x, LABEL_HEIGHT + gap + r * (height + gap)))
        x += col_w[c] + gap
    return np.asarray(sheet)
