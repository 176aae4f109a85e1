"""How the full-resolution 8-bit compose pass should use threads, in one run.

``Colorizer.compose`` of a frame from its working-size ab (a real photo's L, its predicted
colour) at 1080p and at 12 MP, best of ``--runs``, three ways in this one process:

- one thread (what each stage of ``retint video`` does on a 2-core machine);
- the process's compose pool with each thread's torch ops inline (the product,
  :func:`retint.device.inline_ops`);
- the same pool with the torch ops handed to torch's intra-op pool (the previous way), in a
  pool made for it.

    .venv/bin/python scripts/compose_threads.py --write-docs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import retint.device as device
import retint.inference as inference
from retint.device import cpu_name, torch_ops_inline
from retint.inference import Colorizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

SIZES = {"1080p": (1080, 1920), "12 MP": (3000, 4000)}


def best_of(runs: int, fn, *args, **kwargs) -> float:
    fn(*args, **kwargs)
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    from skimage import data

    colorizer = Colorizer("student", device="cpu")
    threads = torch.get_num_threads()
    rows = []
    for name, size in SIZES.items():
        photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
        rgb = F.interpolate(photo, size=size, mode="bilinear", align_corners=False)[0]
        l = colorizer.lightness((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        ab = colorizer.predict_ab([l], full_size=False)[0]
        with torch_ops_inline():  # as a film's composer runs, pinned to its one thread
            one = best_of(args.runs, colorizer.compose, l, ab, np.uint8, threads=1)
        inline = best_of(args.runs, colorizer.compose, l, ab, np.uint8)
        saved_pools, saved_init = dict(device._POOLS), inference.inline_ops
        device._POOLS.clear()  # a pool made for this, its threads keeping torch's own count
        inference.inline_ops = lambda: None
        try:
            pooled = best_of(args.runs, colorizer.compose, l, ab, np.uint8)
        finally:
            for pool in device._POOLS.values():
                pool.shutdown()
            device._POOLS.clear()
            device._POOLS.update(saved_pools)
            inference.inline_ops = saved_init
        rows.append(f"| {name} ({size[1]}x{size[0]}) | {one * 1e3:.1f} ms | "
                    f"{inline * 1e3:.1f} ms | {pooled * 1e3:.1f} ms | {pooled / inline:.2f}x |")
        print(rows[-1], flush=True)
    publish([
        f"`scripts/compose_threads.py`, {cpu_name()}, torch threads {threads}; "
        f"`Colorizer.compose` of a colour frame's L (the float pass) from its working-size ab, "
        f"best of {args.runs}:", "",
        f"| frame | one thread | {threads} threads, torch ops inline (the product) | "
        f"{threads} threads, torch ops through torch's pool (before) | before / now |",
        "|---|---|---|---|---|", *rows], "compose-threads", args.write_docs)


if __name__ == "__main__":
    main()
