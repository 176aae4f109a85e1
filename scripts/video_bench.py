"""Frames per second of ``retint video`` for each model on a 1080p, a 480p and the real film.

The 1080p and 480p clips are made once from the film (scaled, black and white as it is, H.264)
under ``runs/clips/``; the film's licence is unknown, so neither it nor the clips are committed.
Each run is the whole ``colorize_video`` path (decode, colour, stabilise, compose, encode, audio
copied), timed from the first frame read to the file written, in this one process. Each model
runs on each ``--runtimes`` (torch, and ONNX Runtime: the same weights exported, equal to
within 2e-6 in ab, ``scripts/onnx_parity.py``), a row each.

    .venv/bin/python scripts/video_bench.py --film ../shared/data/film/ww2-landing.mp4 --write-docs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import torch

from retint.bench.flicker import video_flicker
from retint.device import cpu_name
from retint.inference import Colorizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish, write_block  # noqa: E402

CLIPS = {"1080p": (1920, 1080), "480p": (854, 480)}
#: The goals of the fast-pipeline issue, frames per second on this CPU.
GOALS = {("student", "1080p"): 15, ("student", "480p"): 45, ("teacher", "480p"): 15,
         ("student", "film"): 25, ("teacher", "film"): 10}


def make_clip(film: Path, size: tuple[int, int], out: Path, seconds: float) -> Path:
    """The film's first ``seconds``, scaled to ``size``, as H.264 (made once)."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.mp4")
    with av.open(str(film)) as inp, av.open(str(tmp), "w") as dst:
        vin = inp.streams.video[0]
        rate = vin.average_rate
        v = dst.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        v.width, v.height, v.pix_fmt = *size, "yuv420p"
        for frame in inp.decode(vin):
            if frame.time is not None and frame.time >= seconds:
                break
            scaled = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            scaled.pts = None
            dst.mux(v.encode(scaled))
        dst.mux(v.encode(None))
    tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--film", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=["student", "teacher"])
    ap.add_argument("--runtimes", nargs="+", default=["torch", "onnx"],
                    choices=["torch", "onnx"])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the scaled clips")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    clips = {name: make_clip(args.film, size, Path("runs/clips") / f"{name}.mp4", args.seconds)
             for name, size in CLIPS.items()}
    clips["film"] = args.film
    names = {str(path): name for name, path in clips.items()}
    colorizers = {m if r == "torch" else f"{m} {r}": Colorizer(m, device="auto", runtime=r)
                  for m in args.models for r in args.runtimes}
    rows = []
    for v in video_flicker(list(clips.values()), colorizers):  # what `retint bench --video` runs
        name = names[v["clip"]]
        goal = GOALS.get((v["model"].split()[0], name))
        verdict = "met" if goal is not None and v["fps"] >= goal else "not met"
        met = "" if goal is None else f" (goal ≥ {goal}: {verdict})"
        rows.append(f"| {v['model']} | {name} ({v['width']}x{v['height']}, {v['frames']} "
                    f"frames) | {v['fps']:.1f}{met} | {v['flicker_off']:.3f} → "
                    f"{v['flicker_on']:.3f} | {v['peak_mb']:.0f} MB |")
        print(rows[-1], flush=True)
    lines = [
        f"`scripts/video_bench.py --film {args.film}`, {cpu_name()}, "
        f"{torch.get_num_threads()} threads; fps of the whole `retint video` path (stabilisation "
        "on, x264 preset veryfast, audio copied; `MODEL onnx`: `--runtime onnx`), then "
        "flicker (mean |Δab| on still pixels, stabilisation off → on) from a second, measuring "
        "run:", "",
        "| model | clip | fps | flicker | peak memory (process so far) |", "|---|---|---|---|---|",
        *rows]
    publish(lines, "video-bench", args.write_docs)
    if args.write_docs:
        write_block(Path("README.md"), "video-summary", "\n".join(lines))


if __name__ == "__main__":
    main()
