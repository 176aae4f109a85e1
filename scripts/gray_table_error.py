"""The gray table's error against the exact LAB path, on the held-out photos.

Each held-out photo is made black and white as a gray JPEG holds it (one 8-bit channel), the
model predicts its colour, and its 8-bit result is made three ways from the same L and the same
upsampled ab:

- the exact LAB maths in float64, never rounded (the reference);
- the exact path's own 8-bit result (float32 LAB maths and the encoding table: what an 8-bit
  file of the exact path holds, and what retint wrote before the table);
- the gray table (``Colorizer.compose`` of the gray plane: ab rounded to half a unit).

CIEDE2000 is averaged per photo; the table gives the mean of those means, the largest of them,
and the largest of any pixel. Also the share of pixels whose 8-bit values differ between the
table and the exact 8-bit result, and the largest change of L against the reference.

    .venv/bin/python scripts/gray_table_error.py --split src/retint/weights/teacher.json \\
        --data ../shared/data/photos ../shared/data/imagenet-sample ../shared/data/people \\
        ../shared/data/streets --write-docs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retint.color import (
    AB_SCALE,
    GRAY_TABLE_STEP,
    L_SCALE,
    lab_to_linear_rgb,
    lightness_from_gray8,
    linear_to_srgb8,
    model_to_rgb,
    rgb_to_lab,
)
from retint.evaluate import photo_list, read_split
from retint.inference import Colorizer
from retint.metrics import ciede2000

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402


def lab8(rgb8: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(rgb8 / 255.0).permute(2, 0, 1))


def measure(colorizer: Colorizer, path: Path) -> dict[str, float]:
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"))
    l = torch.from_numpy(lightness_from_gray8(gray))[None]
    small = colorizer.predict_ab([gray], full_size=False)[0]
    full = F.interpolate(small[None], size=gray.shape, mode="bilinear", align_corners=False)[0]
    exact = rgb_to_lab(model_to_rgb(l.double(), full.double()))
    exact8 = linear_to_srgb8(lab_to_linear_rgb(torch.cat((l * L_SCALE, full * AB_SCALE))))
    exact8 = exact8.permute(1, 2, 0).numpy()
    table = colorizer.compose(gray, small, np.uint8)
    out: dict[str, float] = {}
    for name, de in (("table", ciede2000(lab8(table), exact)),
                     ("exact8", ciede2000(lab8(exact8), exact)),
                     ("table-exact8", ciede2000(lab8(table), lab8(exact8)))):
        out[f"{name} mean"], out[f"{name} max"] = float(de.mean()), float(de.max())
    out["differing"] = float((table != exact8).any(axis=-1).mean())
    out["dL"] = float((lab8(table)[0] - exact[0]).abs().max())
    out["dL exact8"] = float((lab8(exact8)[0] - exact[0]).abs().max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--split", required=True, help="a split.json or model card: held-out keys")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    colorizer = Colorizer(args.model, device="cpu")
    keys = read_split(args.split)
    paths = [p.path for p in photo_list(args.data) if p.key in keys]
    rows = [measure(colorizer, p) for p in paths]

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows])

    lines = [f"`scripts/gray_table_error.py`, model {colorizer.name}, {len(paths)} held-out "
             f"photos as gray JPEGs hold them, the table's ab step {GRAY_TABLE_STEP:g}; "
             "CIEDE2000 per photo, then:", "",
             "| result | against | mean of the photos' means | largest photo mean | "
             "largest pixel |", "|---|---|---|---|---|"]
    for key, what, against in (("table", "gray table", "exact, float64"),
                               ("exact8", "exact, 8-bit", "exact, float64"),
                               ("table-exact8", "gray table", "exact, 8-bit")):
        mean, big = col(f"{key} mean"), col(f"{key} max")
        lines.append(f"| {what} | {against} | {mean.mean():.3f} | {mean.max():.3f} | "
                     f"{big.max():.2f} |")
    lines += ["", f"Pixels whose 8-bit values differ between the table and the exact 8-bit "
                  f"result: {col('differing').mean():.1%} (by one level in a channel or more). "
                  f"Largest change of L against the float64 result: {col('dL').max():.2f} "
                  f"(the exact 8-bit result: {col('dL exact8').max():.2f}; one 8-bit level "
                  "moves L by up to ~0.4)."]
    publish(lines, "gray-table-error", args.write_docs)


if __name__ == "__main__":
    main()
