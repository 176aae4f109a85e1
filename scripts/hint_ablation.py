"""What each part of the hint spread is worth: ΔE00 with 0 and 10 hints on held-out photos.

The hint model's spread weighs each hint by place (a broad and a near Gaussian), lightness and
the teacher's own colour (``retint.models.hinted.HintSpread``). This scores the trained model,
then the same model with parts of its spread switched off or set by hand (the refiner kept),
on the first ``--limit`` held-out photos at the working size (the truth shrunk to it, as
``retint evaluate --hints --resolution working``), 10 hints from each truth, seed 0:

    .venv/bin/python scripts/hint_ablation.py --model runs/recipes/hint-colour/final \\
        --split runs/recipes/hint-colour/split.json \\
        --data .data/pool/photos .data/pool/imagenet-sample .data/pool/people \\
        .data/pool/streets --write-docs
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from retint.evaluate import evaluate_hints, photo_list, read_split
from retint.inference import Colorizer
from retint.models.hinted import HintSpread

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

OFF = 1e3  # a reach this wide ignores its factor
#: name -> (the reaches it changes, None for the untrained starting reaches; refiner on?)
SETTINGS: dict[str, tuple[dict[str, float] | None, bool]] = {
    "trained": ({}, True),
    "without the teacher's colour": ({"colour": OFF}, True),
    "without the near kernel": ({"near_weight": 1e-9}, True),
    "without either (place and lightness only)": ({"colour": OFF, "near_weight": 1e-9}, True),
    "refiner off": ({}, False),
    "the starting reaches (before training), refiner off": (None, False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a hint model's weights")
    ap.add_argument("--split", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    held_out = read_split(args.split)
    photos = [(p.key, p.path) for p in photo_list(args.data) if p.key in held_out][: args.limit]
    colorizer = Colorizer(args.model, device="cpu")
    spread, refine = colorizer.model.spread, colorizer.model.refine
    trained = {k: v.detach().clone() for k, v in spread.state_dict().items()}
    refiner = {k: v.detach().clone() for k, v in refine.state_dict().items()}
    reaches = ", ".join(f"{k.removeprefix('log_')} {float(v.exp()):.3g}"
                        for k, v in trained.items())
    lines = [f"`scripts/hint_ablation.py`, {args.model}: the first {len(photos)} held-out photos "
             f"at the working size, 10 hints each (seed 0). Trained reaches: {reaches}.", "",
             "| spread | ΔE00, 0 hints | 10 hints | drop |", "|---|---|---|---|"]
    for name, (changes, refined) in SETTINGS.items():
        spread.load_state_dict(trained if changes is not None else HintSpread().state_dict())
        refine.load_state_dict(refiner)
        with torch.no_grad():
            for key, value in (changes or {}).items():
                getattr(spread, f"log_{key}").fill_(math.log(value))
            if not refined:
                refine.out.weight.zero_()
                refine.out.bias.zero_()
        rows = evaluate_hints(photos, colorizer, (0, 10), resolution="working")["rows"]
        d0, d10 = rows["0"]["delta_e00"]["mean"], rows["10"]["delta_e00"]["mean"]
        lines.append(f"| {name} | {d0:.2f} | {d10:.2f} | {d0 - d10:.2f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    publish(lines, "hint-ablation", args.write_docs)


if __name__ == "__main__":
    main()
