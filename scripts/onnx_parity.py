"""ONNX FP32 against PyTorch for each bundled model, on its held-out photos at two working sizes.

Each model is exported as ``retint export`` does it (self-contained graph, dynamic N/H/W), then
every held-out photo of its card is shrunk and padded as the Colorizer does it, at each size,
and both runtimes' ab (model scale, ab/128) are compared: the max and mean |Δab| over all.

    .venv/bin/python scripts/onnx_parity.py --data ../shared/data/photos \\
        ../shared/data/imagenet-sample ../shared/data/people ../shared/data/streets --write-docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from retint.evaluate import photo_list, read_split
from retint.export import export_fp32, model_input
from retint.inference import Colorizer
from retint.io import read_rgb
from retint.models import resolve_model_path
from retint.runtime import OnnxModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

SIZES = (256, 384)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--models", nargs="+", default=["teacher", "student"])
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    lines = ["`scripts/onnx_parity.py`: ONNX FP32 (CPUExecutionProvider) against PyTorch, "
             "|Δab| in ab/128 over every pixel of every held-out photo:", "",
             "| model | photos | " + " | ".join(f"max / mean at {s}" for s in SIZES) + " |",
             "|---" * (len(SIZES) + 2) + "|"]
    for name in args.models:
        path = resolve_model_path(name)
        colorizer = Colorizer(name, device="cpu")
        keys = read_split(path.with_suffix(".json"))
        photos = [p for p in photo_list(args.data) if p.key in keys]
        cells = []
        with tempfile.TemporaryDirectory(prefix="retint-parity-") as tmp:
            onnx = OnnxModel(export_fp32(colorizer.model, colorizer.card, Path(tmp) / "m.onnx"))
            for size in SIZES:
                worst, total, count = 0.0, 0.0, 0
                for photo in photos:
                    l = colorizer.lightness(read_rgb(photo.path))
                    x = model_input(l[None], (size, size))  # the Colorizer's shrink and pad
                    with torch.inference_mode():
                        diff = (colorizer.model(x).float() - onnx(x)).abs()
                    worst = max(worst, float(diff.max()))
                    total, count = total + float(diff.sum()), count + diff.numel()
                cells.append(f"{worst:.1e} / {total / count:.1e}")
        lines.append(f"| {name} | {len(photos)} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    publish(lines, "onnx-parity", args.write_docs)


if __name__ == "__main__":
    main()
