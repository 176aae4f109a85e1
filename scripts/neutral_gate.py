"""Could one chroma scale per photo give near-neutral photos no more false colour than gray?

The quality goal asks that on photos whose truth is near-neutral (mean chroma under 10) the
default's ΔE00 be no worse than leaving them gray, while staying colourful elsewhere. This
measures the bound of the simplest fix, one scale ``s`` of each photo's predicted ab, at the
working size (the truth shrunk to it), on the held-out photos of a split:

- the same ``s`` for every photo;
- the best ``s`` of each photo, chosen with its truth (an oracle: no model can beat it);
- ``s`` from the teacher's own mean chroma (a dull prediction taken as a neutral scene);
- ``s`` learnt from the frozen encoder's pooled code and that chroma: a linear gate fitted on
  the *training* photos (their ΔE00 at each scale, interpolated), scored on the held-out ones.

    .venv/bin/python scripts/neutral_gate.py --split runs/recipes/pool-aged/split.json \\
        --data .data/pool/photos .data/pool/imagenet-sample .data/pool/people \\
        .data/pool/streets --write-docs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retint.color import AB_SCALE, rgb_to_lab
from retint.data import is_monotone
from retint.evaluate import NEUTRAL_CHROMA, photo_list, read_split, working_truth
from retint.inference import Colorizer
from retint.io import read_rgb
from retint.metrics import ciede2000

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish  # noqa: E402

SCALES = np.linspace(0.0, 1.25, 11)


def measure(colorizer: Colorizer, photos: list, held_out: set[str]) -> dict[str, np.ndarray]:
    """Per photo: truth and predicted mean chroma, the encoder's pooled code, and ΔE00 at each
    of SCALES."""
    size = colorizer.working_size
    rows: dict[str, list] = {k: [] for k in ("truth", "pred", "code", "de", "val")}
    for photo in photos:
        rgb = read_rgb(photo.path)
        if is_monotone(rgb):  # skipped as `retint evaluate` skips it: no colour to score
            continue
        truth = working_truth(rgb, size)
        lab = rgb_to_lab(torch.from_numpy(truth.astype(np.float64) / 255).permute(2, 0, 1)[None])
        chroma = float(torch.hypot(lab[:, 1], lab[:, 2]).mean())
        l = lab[:, :1].float()[0] / 100
        h, w = l.shape[-2:]
        with torch.no_grad():
            _, code = colorizer.model.pretrained(F.pad(l[None], (0, size - w, 0, size - h),
                                                       mode="replicate"))
        ab = colorizer.predict_ab([l], full_size=False)[0].double() * AB_SCALE
        rows["de"].append([float(ciede2000(torch.cat([lab[:, :1], s * ab[None]], 1), lab).mean())
                           for s in SCALES])
        rows["truth"].append(chroma)
        rows["pred"].append(float(torch.hypot(ab[0], ab[1]).mean()))
        rows["code"].append(code[0].numpy())
        rows["val"].append(photo.key in held_out)
    return {k: np.array(v) for k, v in rows.items()}


def at_scale(de: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Each photo's ΔE00 (rows of ``de``, one column per SCALES) at its own scale ``s``,
    interpolated linearly between SCALES; differentiable in ``s``, so the gate trains on it."""
    pos = s / float(SCALES[1] - SCALES[0])
    i = pos.floor().clamp(0, len(SCALES) - 2).long()
    f = pos - i
    rows = torch.arange(len(s))
    return de[rows, i] * (1 - f) + de[rows, i + 1] * f


def fit_gate(m: dict[str, np.ndarray], l2: float = 1e-2, steps: int = 600) -> np.ndarray:
    """A linear gate ``s = 1.25 sigmoid(w . [code, chroma] + b)`` fitted on the training photos
    by the mean of their interpolated ΔE00; its ``s`` for every photo."""
    train = ~m["val"]
    code = torch.tensor(m["code"]).float()
    mean, std = code[train].mean(0), code[train].std(0) + 1e-6
    x = torch.cat([(code - mean) / std, torch.tensor(m["pred"])[:, None].float() / 10], 1)
    de = torch.tensor(m["de"]).float()
    torch.manual_seed(0)
    gate = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.Adam(gate.parameters(), 1e-2)
    idx = torch.tensor(np.where(train)[0])
    for _ in range(steps):
        s = torch.sigmoid(gate(x[idx]))[:, 0] * SCALES[-1]
        loss = at_scale(de[idx], s).mean() + l2 * gate.weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (torch.sigmoid(gate(x))[:, 0] * SCALES[-1]).numpy()


def report(m: dict[str, np.ndarray], name: str) -> list[str]:
    val = m["val"]
    de, truth, pred = m["de"][val], m["truth"][val], m["pred"][val]
    neutral = truth < NEUTRAL_CHROMA
    gray = de[neutral, 0].mean()
    lines = [f"`scripts/neutral_gate.py`, {name}, the working size: {val.sum()} held-out photos, "
             f"{neutral.sum()} of them near-neutral (truth chroma < {NEUTRAL_CHROMA:g}); gray "
             f"(s = 0) scores {gray:.2f} ΔE00 on those.", "",
             "| chroma scale s | all: ΔE00 | near-neutral: ΔE00 | mean s, colourful photos |",
             "|---|---|---|---|"]

    def row(label: str, s: np.ndarray) -> None:
        e = at_scale(torch.from_numpy(de), torch.from_numpy(np.asarray(s, np.float64))).numpy()
        lines.append(f"| {label} | {e.mean():.2f} | {e[neutral].mean():.2f} | "
                     f"{s[~neutral].mean():.2f} |")

    row("1 (the model as it is)", np.ones(len(de)))
    for s in (0.75, 0.5, 0.25):
        row(f"{s:g} for every photo", np.full(len(de), s))
    row("each photo's best (oracle)", SCALES[de.argmin(1)])
    for t in (8.0, 12.0, 14.0):
        row(f"0.25 where the prediction's chroma < {t:g}", np.where(pred < t, 0.25, 1.0))
    row("learnt from the encoder's code (fitted on the training photos)", fit_gate(m)[val])
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    colorizer = Colorizer(args.model, device="cpu")
    m = measure(colorizer, photo_list(args.data), read_split(args.split))
    publish(report(m, colorizer.name), "neutral-gate", args.write_docs)


if __name__ == "__main__":
    main()
