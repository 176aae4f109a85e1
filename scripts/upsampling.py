"""Bilinear against guided (edge-aware) upsampling of the colour, in one run: quality and cost.

Quality: ΔE00 against the truth, over all pixels and over the pixels near edges (the 10 % with
the strongest full-resolution L gradient of each photo), at full resolution, on the held-out
photos of a split and on a benchmark set, with the same model and the same predicted ab (the
only difference is how ab reaches full resolution).

Cost: ``Colorizer.compose`` (upsampling fused with the colour maths) of a 12-megapixel frame
from its working-size ab, best of ``--runs``, each upsampler timed in the same process.

    .venv/bin/python scripts/upsampling.py --split src/retint/weights/teacher.json \\
        --data ../shared/data/photos ../shared/data/imagenet-sample ../shared/data/people \\
        ../shared/data/streets --benchmark ../shared/data/benchmarks/urban100 --write-docs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retint.color import rgb_to_lab
from retint.device import cpu_name
from retint.evaluate import photo_list, read_split
from retint.inference import Colorizer
from retint.io import read_rgb
from retint.metrics import ciede2000
from retint.options import UPSAMPLERS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

EDGE_SHARE = 0.10  # "near edges": this share of each photo's pixels, strongest L gradient


def edge_mask(l: torch.Tensor) -> torch.Tensor:
    gx = F.pad((l[..., :, 1:] - l[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((l[..., 1:, :] - l[..., :-1, :]).abs(), (0, 0, 0, 1))
    g = (gx + gy)[0]
    return g >= torch.quantile(g.flatten()[::7].float(), 1.0 - EDGE_SHARE)


def score(paths: list[Path], colorizers: dict[str, Colorizer]) -> dict[str, tuple[float, float]]:
    """Mean over photos of (ΔE00 over all pixels, ΔE00 near edges), per upsampler."""
    sums = {k: np.zeros(2) for k in colorizers}
    first = next(iter(colorizers.values()))
    for path in paths:
        rgb = read_rgb(path)
        truth = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1)
                           .float() / 255.0)
        l = first.lightness(rgb)
        small = first.predict_ab([l], full_size=False)[0]
        edges = edge_mask(l)
        for name, c in colorizers.items():
            ab = c.full_size_ab(l, small).clamp(-1.0, 1.0)
            de = ciede2000(torch.cat((l * 100.0, ab * 128.0)), truth)
            sums[name] += (float(de.mean()), float(de[edges].mean()))
    return {k: tuple(v / len(paths)) for k, v in sums.items()}


def compose_seconds(colorizers: dict[str, Colorizer], runs: int) -> dict[str, float]:
    """Best-of-``runs`` seconds of composing a 12 MP black-and-white frame (a gray plane, as
    the product holds it: bilinear takes the gray table, guided needs L and the float maths)
    from working-size ab."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3000, 4000), dtype=np.uint8)
    first = next(iter(colorizers.values()))
    l = first.lightness_source(gray)
    small = first.predict_ab([l], full_size=False)[0]
    out = {}
    for name, c in colorizers.items():
        best = float("inf")
        for _ in range(runs + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            c.compose(l, small, np.uint8)
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--split", required=True, help="a split.json or model card: held-out keys")
    ap.add_argument("--benchmark", nargs="*", default=[])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    colorizers = {u: Colorizer(args.model, device="cpu", upsample=u) for u in UPSAMPLERS}
    keys = read_split(args.split)
    sets = {"held-out": [p.path for p in photo_list(args.data) if p.key in keys]}
    for bench in map(Path, args.benchmark):
        sets[bench.name] = [p.path for p in photo_list([bench])]
    seconds = compose_seconds(colorizers, args.runs)
    lines = [f"`scripts/upsampling.py`, model {colorizers['bilinear'].name}, "
             f"{cpu_name()}, {torch.get_num_threads()} threads; ΔE00 at full resolution "
             f"(all pixels / the {EDGE_SHARE:.0%} nearest edges), compose of a 12 MP frame "
             f"best of {args.runs}:", "",
             "| upsampling | " + " | ".join(f"{s} ({len(p)}) ΔE00 all / edges" for s, p
                                          in sets.items()) + " | 12 MP compose |",
             "|---" * (len(sets) + 2) + "|"]
    scores = {s: score(paths, colorizers) for s, paths in sets.items()}
    for name in colorizers:
        cells = [f"{scores[s][name][0]:.3f} / {scores[s][name][1]:.3f}" for s in sets]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds[name]:.3f} s |")
    base = seconds["bilinear"]
    lines += ["", f"guided costs {seconds['guided'] / base:.2f}x bilinear's compose time."]
    publish(lines, "upsampling", args.write_docs)


if __name__ == "__main__":
    main()
