"""What each part of the hint spread is worth: ΔE00 with 0 and 10 hints on held-out photos.

The hint model's spread refits the teacher's overall colour to the hints, then weighs each hint
by place (a broad and a near Gaussian), lightness and the teacher's own colour
(``retint.models.hinted.HintSpread``). This scores the trained model, then the same model with
parts of its spread switched off or set by hand (the refiner kept), on the first ``--limit``
held-out photos at the working size (the truth shrunk to it, as ``retint evaluate --hints
--resolution working``), 10 hints from each truth, seed 0:

    .venv/bin/python scripts/hint_ablation.py --model runs/recipes/hint-colour/final \\
        --split runs/recipes/hint-colour/split.json \\
        --data .data/pool/photos .data/pool/imagenet-sample .data/pool/people \\
        .data/pool/streets --write-docs

``--fit-sweep DIR`` scores the overall fit's stiffnesses on every photo of DIR instead (they
were chosen this way on Urban100, a set no hint goal is measured on):

    .venv/bin/python scripts/hint_ablation.py --model runs/recipes/hint-colour/final \\
        --fit-sweep ../shared/data/benchmarks/urban100 --write-docs
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from retint.evaluate import evaluate_hints, photo_list, read_split
from retint.inference import Colorizer
from retint.models import hinted
from retint.models.hinted import HintSpread

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

OFF = 1e3  # a reach this wide ignores its factor
STIFF = 1e12  # an overall fit this stiff leaves the teacher's colour as it is
DEFAULT_FIT = (hinted.SCALE_STIFFNESS, hinted.CAST_STIFFNESS)
#: name -> (the reaches it changes, None for the untrained starting reaches; refiner on?;
#: the overall fit's scale and cast stiffness)
Setting = tuple[dict[str, float] | None, bool, tuple[float, float]]
SETTINGS: dict[str, Setting] = {
    "trained": ({}, True, DEFAULT_FIT),
    "without the overall fit": ({}, True, (STIFF, STIFF)),
    "without the teacher's colour": ({"colour": OFF}, True, DEFAULT_FIT),
    "without the near kernel": ({"near_weight": 1e-9}, True, DEFAULT_FIT),
    "without either (place and lightness only)": ({"colour": OFF, "near_weight": 1e-9}, True,
                                                  DEFAULT_FIT),
    "refiner off": ({}, False, DEFAULT_FIT),
    "the starting reaches (before training), refiner off": (None, False, DEFAULT_FIT),
}
#: the overall fit's (scale, cast) stiffnesses that --fit-sweep scores
FIT_SWEEP = [(STIFF, STIFF), (20, 10), (10, 10), (5, 10), (2, 10), (1, 10), (0.5, 10),
             (2, 3), (2, 5), (2, 20), (2, STIFF), (STIFF, 10)]


def _stiffness(value: float) -> str:
    return "off" if value >= STIFF else f"{value:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a hint model's weights")
    ap.add_argument("--split")
    ap.add_argument("--data", nargs="+")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--fit-sweep", metavar="DIR", help="score the overall fit's stiffnesses "
                    "on every photo of DIR instead")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if not args.fit_sweep and not (args.split and args.data):
        ap.error("--split and --data are needed (or --fit-sweep DIR)")
    torch.set_num_threads(1)
    colorizer = Colorizer(args.model, device="cpu")
    spread, refine = colorizer.model.spread, colorizer.model.refine
    trained = {k: v.detach().clone() for k, v in spread.state_dict().items()}
    refiner = {k: v.detach().clone() for k, v in refine.state_dict().items()}
    reaches = ", ".join(f"{k.removeprefix('log_')} {float(v.exp()):.3g}"
                        for k, v in trained.items())

    def score(photos: list, fit: tuple[float, float]) -> tuple[float, float]:
        spread.scale_stiffness, spread.cast_stiffness = fit
        rows = evaluate_hints(photos, colorizer, (0, 10), resolution="working")["rows"]
        return rows["0"]["delta_e00"]["mean"], rows["10"]["delta_e00"]["mean"]

    if args.fit_sweep:
        photos = [(p.key, p.path) for p in photo_list([args.fit_sweep])]
        lines = [f"`scripts/hint_ablation.py --fit-sweep`, {args.model}: the overall fit's "
                 f"stiffnesses on the {len(photos)} photos of {Path(args.fit_sweep).name} at the "
                 "working size, 10 hints each (seed 0); the product's are "
                 f"{_stiffness(DEFAULT_FIT[0])} and {_stiffness(DEFAULT_FIT[1])}.", "",
                 "| scale stiffness | cast stiffness | ΔE00, 0 hints | 10 hints | drop |",
                 "|---|---|---|---|---|"]
        for fit in FIT_SWEEP:
            d0, d10 = score(photos, fit)
            lines.append(f"| {_stiffness(fit[0])} | {_stiffness(fit[1])} | {d0:.3f} | "
                         f"{d10:.3f} | {d0 - d10:.3f} |")
            print(lines[-1], file=sys.stderr, flush=True)
        publish(lines, "hint-fit-sweep", args.write_docs)
        return
    held_out = read_split(args.split)
    photos = [(p.key, p.path) for p in photo_list(args.data) if p.key in held_out][: args.limit]
    lines = [f"`scripts/hint_ablation.py`, {args.model}: the first {len(photos)} held-out photos "
             f"at the working size, 10 hints each (seed 0). Trained reaches: {reaches}.", "",
             "| spread | ΔE00, 0 hints | 10 hints | drop |", "|---|---|---|---|"]
    for name, (changes, refined, fit) in SETTINGS.items():
        spread.load_state_dict(trained if changes is not None else HintSpread().state_dict())
        refine.load_state_dict(refiner)
        with torch.no_grad():
            for key, value in (changes or {}).items():
                getattr(spread, f"log_{key}").fill_(math.log(value))
            if not refined:
                refine.out.weight.zero_()
                refine.out.bias.zero_()
        d0, d10 = score(photos, fit)
        lines.append(f"| {name} | {d0:.2f} | {d10:.2f} | {d0 - d10:.2f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    publish(lines, "hint-ablation", args.write_docs)


if __name__ == "__main__":
    main()
