"""Benchmark of ``retint colorize --ray`` against the local path, in one run.

Builds ``--count`` black-and-white JPEGs of mixed sizes from the training pool's photos (each
scaled to a random long side between 256 and 1,024 px), then times, each as its own command
from start to exit (model loading and Ray's start included):

  (a) ``retint colorize`` in one process, one torch thread (and, for reference, two);
  (b) the Ray path with 1 actor of one thread;
  (c) the Ray path with 2 actors of one thread each.

It prints photos per second, (b)'s overhead over (a) and (c)'s speed-up over (b), then checks
that (a) and (c) wrote the same files (same sizes, pixels at most one level apart) and says
whether they are byte-identical.

    .venv/bin/python scripts/ray_bench.py --data ../shared/data/photos ../shared/data/people \\
        --count 2000 --model student
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from retint.device import cpu_name
from retint.io import read_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import write_block  # noqa: E402


def build_photos(sources: list[str], out: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` gray JPEGs of mixed sizes (reused when already there)."""
    from retint.data import list_photos

    photos = sorted(p.path for p in list_photos([Path(s) for s in sources]))
    rng = random.Random(seed)
    made = []
    for i in range(count):
        dst = out / f"part-{i % 10}" / f"scan-{i:05}.jpg"
        made.append(dst)
        if dst.exists():
            continue
        with Image.open(photos[i % len(photos)]) as im:
            im = im.convert("L")
            side = rng.randint(256, 1024)
            scale = side / max(im.size)
            im = im.resize((max(16, round(im.width * scale)), max(16, round(im.height * scale))),
                           Image.Resampling.BILINEAR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            im.save(dst, quality=90)
    return made


def timed(argv: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    run = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    print("   ", run.stdout.strip().splitlines()[0], flush=True)
    return seconds


def compare(a: Path, b: Path) -> tuple[int, int, int]:
    """(files, byte-identical files, worst pixel difference) of two output trees."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    other = sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    if files != other:
        sys.exit(f"different outputs: {len(files)} against {len(other)} files")
    same, worst = 0, 0
    for rel in files:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if len(x) != len(y):
            sys.exit(f"{rel}: {len(x)} against {len(y)} bytes")
        same += x == y
        if x != y:
            d = np.abs(read_rgb(a / rel).astype(int) - read_rgb(b / rel).astype(int)).max()
            worst = max(worst, int(d))
    return len(files), same, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="folders of photos to build from")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--model", default="default")
    ap.add_argument("--work", type=Path, default=Path("runs/ray-bench"))
    ap.add_argument("--skip-two-threads", action="store_true",
                    help="leave out the two-thread local reference")
    ap.add_argument("--write-docs", action="store_true",
                    help="put the figures in the README's ray-bench block")
    args = ap.parse_args()

    photos = build_photos(args.data, args.work / "photos", args.count)
    megapixels = sum(np.prod(Image.open(p).size) for p in photos) / 1e6
    report = [f"{len(photos)} gray JPEGs of mixed sizes ({megapixels:.0f} MP in all), model "
              f"{args.model}, {os.cpu_count()} CPUs ({cpu_name()}):", "",
              "| run | seconds | photos/s |", "|---|---|---|"]
    print(report[0], flush=True)
    base = [sys.executable, "-m", "retint", "colorize", str(args.work / "photos"), "--model",
            args.model, "--device", "cpu", "-q"]
    runs = {
        "(a) local, 1 thread": (["-o", "a"], 1),
        "(a') local, 2 threads": (["-o", "a2"], 2),
        "(b) Ray, 1 actor x 1 thread": (["-o", "b", "--ray", "--actors", "1"], 1),
        "(c) Ray, 2 actors x 1 thread": (["-o", "c", "--ray", "--actors", "2"], 1),
    }
    if args.skip_two_threads:
        del runs["(a') local, 2 threads"]
    rates = {}
    for label, (extra, threads) in runs.items():
        out = args.work / extra[1]
        shutil.rmtree(out, ignore_errors=True)
        extra = ["-o", str(out), *extra[2:]]
        print(f"{label}:", flush=True)
        seconds = timed(base + extra, threads)
        rates[label[:3]] = len(photos) / seconds
        print(f"    {seconds:.1f} s, {rates[label[:3]]:.2f} photos/s", flush=True)
        report.append(f"| {label} | {seconds:.1f} | {rates[label[:3]]:.2f} |")
    a, b, c = rates["(a)"], rates["(b)"], rates["(c)"]
    files, same, worst = compare(args.work / "a", args.work / "c")
    report += ["", f"- (b) against (a): {b / a:.2f}x the throughput ({(a - b) / a:+.0%} "
               "overhead; goal: within 15 %).",
               f"- (c) against (b): {c / b:.2f}x (goal: at least 1.6x).",
               f"- Outputs of (a) and (c): {files} files, the same sizes, {same} byte-identical, "
               f"worst pixel difference {worst}."]
    print("\n".join(report[-3:]))
    if args.write_docs:
        write_block(Path("README.md"), "ray-bench", "\n".join(report))


if __name__ == "__main__":
    main()
