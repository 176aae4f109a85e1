"""``retint evaluate``: score models on colour photos (ground truth) beside the no-colour baseline.

Each photo keeps only its lightness L; every model colorizes it through the :class:`Colorizer`
(the one inference path, so what is scored is exactly what users get), and the delivered RGB is
compared with the original. The baseline is the same L with ab = 0: the floor a model must beat,
and a figure anyone can reproduce without our models. Per model and resolution, mean ± std over
the photos of:

- PSNR_ab / SSIM_ab: the training metrics (ab / 128, data range 2), so figures line up with the
  model cards;
- PSNR / SSIM on the RGB result (0-255): the usual image-restoration figures;
- mean CIEDE2000 ΔE00 per pixel: the perceptual colour difference;
- colourfulness CF (Hasler & Süsstrunk), its ratio to the truth's and |ΔCF|: the L2 metrics above
  reward grayish, cautious colour, CF shows whether a model dares colour at all.

Two resolutions: ``full`` scores the Colorizer's full-size output (colour upsampled onto the
original L) against the original; ``working`` shrinks the truth to the working size first, which
isolates the model from the upsampling. FID and LPIPS are NOT computed: both need pretrained
Inception / AlexNet weights, which retint does not ship and cannot download.

torch is imported inside the functions, so that ``retint --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .data import Photo
    from .inference import Colorizer

BASELINE = "no colour (baseline)"
RESOLUTIONS = ("full", "working")
METRICS = ("psnr_ab", "ssim_ab", "psnr_rgb", "ssim_rgb", "delta_e00", "cf", "delta_cf")
#: table columns: key -> (title, decimals); cf_ratio is a ratio of means, so it has no std
COLUMNS = {"psnr_ab": ("PSNR_ab", 2), "ssim_ab": ("SSIM_ab", 4), "psnr_rgb": ("PSNR_rgb", 2),
           "ssim_rgb": ("SSIM_rgb", 4), "delta_e00": ("ΔE00", 2), "cf": ("CF", 1),
           "cf_ratio": ("CF/truth", 2), "delta_cf": ("ΔCF", 1)}
NOT_COMPUTED = ("FID and LPIPS are not reported: they need pretrained Inception / AlexNet "
                "weights, which retint does not ship and cannot download.")
SHEET_TILE = 768  # sheet images are kept as thumbnails, not as full-resolution copies
_DE_BAND_PIXELS = 1_000_000  # CIEDE2000 has many float64 temporaries: bands bound the memory


# ---------------------------------------------------------------- photos and split


def photo_list(roots: Sequence[str | Path]) -> list[Photo]:
    """Photos keyed as training splits key them, sorted by key, so that ``--limit`` and
    ``--split`` pick the same photos on every machine."""
    from .data import list_photos

    return sorted(list_photos(roots), key=lambda p: p.key)


def read_split(path: str | Path) -> set[str]:
    """Validation keys from a run's ``split.json`` (``val``) or a model card
    (``data.val_photos_list``): how a model is scored on photos it never trained on."""
    doc = json.loads(Path(path).read_text())
    keys = None
    if isinstance(doc, dict):
        data = doc.get("data")
        keys = doc.get("val", data.get("val_photos_list") if isinstance(data, dict) else None)
    if not isinstance(keys, list):
        raise ValueError(f"{path}: no validation list (expected split.json's 'val' "
                         "or a model card's data.val_photos_list)")
    return set(map(str, keys))


# ---------------------------------------------------------------- images


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.dtype.itemsize == 1 else ((rgb.astype("u4") + 128) // 257).astype("u1")


def working_truth(rgb: np.ndarray, size: int) -> np.ndarray:
    """The truth resized (PIL Lanczos, antialiased) to a long side of ``size``, as uint8; the
    Colorizer's own rounding of the shape, so it then runs the model without resampling."""
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(_to_uint8(rgb)).resize(shape, Image.LANCZOS))


def _rgb255(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8/uint16 -> (1, 3, H, W) float64 on the 0-255 scale (16 bit divided by 257)."""
    import numpy as np
    import torch

    x = rgb.astype(np.float64) / (257.0 if rgb.dtype == np.uint16 else 1.0)
    return torch.from_numpy(x).permute(2, 0, 1)[None].to(device)


def _thumb(rgb: np.ndarray) -> np.ndarray:
    import numpy as np
    from PIL import Image

    im = Image.fromarray(_to_uint8(rgb))
    im.thumbnail((SHEET_TILE, SHEET_TILE), Image.LANCZOS)
    return np.asarray(im)


# ---------------------------------------------------------------- scoring


def _prepare(truth: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """What every comparison with one truth needs: its RGB (0-255), LAB and colourfulness."""
    from .color import rgb_to_lab
    from .metrics import colourfulness

    rgb = _rgb255(truth, device)
    return rgb, rgb_to_lab(rgb / 255.0), float(colourfulness(rgb)[0])


def _mean_delta_e(lab1: torch.Tensor, lab2: torch.Tensor) -> float:
    from .metrics import ciede2000

    h, w = lab1.shape[-2:]
    rows = max(1, _DE_BAND_PIXELS // w)
    total = sum(float(ciede2000(lab1[..., r : r + rows, :], lab2[..., r : r + rows, :]).sum())
                for r in range(0, h, rows))
    return total / (h * w)


def score(truth: tuple[torch.Tensor, torch.Tensor, float], result: np.ndarray,
          device: torch.device) -> dict[str, float]:
    """All metrics of one delivered RGB ``result`` against a prepared truth; PSNRs capped at
    100 dB (a perfect match is +inf, which would poison means and JSON)."""
    from .color import AB_SCALE, rgb_to_lab
    from .metrics import PSNR_CAP_DB, colourfulness, psnr_ab, psnr_rgb, ssim_ab, ssim_rgb

    t_rgb, t_lab, t_cf = truth
    r_rgb = _rgb255(result, device)
    r_lab = rgb_to_lab(r_rgb / 255.0)
    r_ab, t_ab = r_lab[:, 1:] / AB_SCALE, t_lab[:, 1:] / AB_SCALE
    cf = float(colourfulness(r_rgb)[0])
    return {
        "psnr_ab": min(float(psnr_ab(r_ab, t_ab)[0]), PSNR_CAP_DB),
        "ssim_ab": float(ssim_ab(r_ab, t_ab)[0]),
        "psnr_rgb": min(float(psnr_rgb(r_rgb, t_rgb)[0]), PSNR_CAP_DB),
        "ssim_rgb": float(ssim_rgb(r_rgb, t_rgb)[0]),
        "delta_e00": _mean_delta_e(t_lab, r_lab),
        "cf": cf,
        "delta_cf": abs(cf - t_cf),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and population std over the photos (None when there are none)."""
    import numpy as np

    if not values:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _summary(entries: list[dict], labels: Sequence[str]) -> dict[str, Any]:
    truth_cf = _mean_std([e["truth_cf"] for e in entries])
    rows: dict[str, dict] = {}
    for label in labels:
        row: dict[str, Any] = {m: _mean_std([e["scores"][label][m] for e in entries])
                               for m in METRICS}
        cf, t_cf = row["cf"]["mean"], truth_cf["mean"]
        row["cf_ratio"] = cf / t_cf if cf is not None and t_cf else None
        rows[label] = row
    return {"photos": len(entries), "truth_cf": truth_cf, "rows": rows}


def _labels(colorizers: Sequence[Colorizer]) -> list[str]:
    """Card names; the path is added where two models share a name, an index if still equal."""
    names = [c.name for c in colorizers]
    labels = [n if names.count(n) == 1 else f"{n} ({c.model_path})"
              for n, c in zip(names, colorizers, strict=True)]
    return [f"{s} #{i + 1}" if labels.count(s) > 1 else s for i, s in enumerate(labels)]


def evaluate(images: Iterable[tuple[str, str | Path | np.ndarray]],
             colorizers: Sequence[Colorizer], *, resolutions: Sequence[str] = RESOLUTIONS,
             working_size: int | None = None, device: str | torch.device | None = None,
             sheet: str | Path | None = None, sheet_count: int = 6,
             progress: bool = False) -> dict[str, Any]:
    """Score ``colorizers`` and the no-colour baseline on ``(key, path or HxWx3 uint8/uint16
    array)`` pairs of colour ground truth; returns summary, per-image values and settings.

    Unreadable files and gray/monotone photos (:func:`retint.data.is_monotone`) are skipped and
    counted. ``working_size`` defaults to the first colorizer's; metrics are computed in float64
    on ``device`` (default: the first colorizer's; MPS falls back to the CPU, lacking float64).
    With ``sheet``, a contact sheet of the first ``sheet_count`` photos (no colour | each model |
    truth) is written there.
    """
    import torch
    from tqdm import tqdm

    from .color import no_colour
    from .data import is_monotone
    from .io import ImageReadError, read_rgb, write_image
    from .sheet import contact_sheet

    bad = set(resolutions) - set(RESOLUTIONS)
    if bad or not resolutions:
        raise ValueError(f"resolutions must be among {RESOLUTIONS}, got {list(resolutions)}")
    labels = _labels(colorizers)
    size = working_size or (colorizers[0].working_size if colorizers else 256)
    dev = torch.device(device) if device else (colorizers[0].device if colorizers
                                               else torch.device("cpu"))
    dev = torch.device("cpu") if dev.type == "mps" else dev
    batch = colorizers[0].batch_size if colorizers else 4
    sheet_res = "full" if "full" in resolutions else "working"
    per_image: dict[str, list[dict]] = {r: [] for r in resolutions}
    unreadable: list[dict[str, str]] = []
    skipped: list[str] = []
    sheet_rows: list[list[np.ndarray]] = []
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        for res in resolutions:
            truths = [rgb if res == "full" else working_truth(rgb, size) for _, rgb in pending]
            outputs = [[no_colour(t, dev) for t in truths]]
            outputs += [c.colorize_many(truths) for c in colorizers]
            for i, ((key, _), truth) in enumerate(zip(pending, truths, strict=True)):
                prepared = _prepare(truth, dev)
                per_image[res].append({
                    "key": key, "height": truth.shape[0], "width": truth.shape[1],
                    "truth_cf": prepared[2],
                    "scores": {label: score(prepared, out[i], dev)
                               for label, out in zip([BASELINE, *labels], outputs, strict=True)},
                })
                if sheet and res == sheet_res and len(sheet_rows) < sheet_count:
                    sheet_rows.append([_thumb(out[i]) for out in outputs] + [_thumb(truth)])
        pending.clear()

    total = len(images) if isinstance(images, Sequence) else None
    seen = 0
    for key, src in tqdm(images, total=total, unit="photo", disable=not progress,
                         dynamic_ncols=True, file=sys.stderr):
        seen += 1
        try:
            rgb = src if not isinstance(src, (str, Path)) else read_rgb(src)
        except ImageReadError as err:
            unreadable.append({"key": key, "error": str(err)})
            continue
        if min(rgb.shape[:2]) < 7:
            unreadable.append({"key": key, "error": f"{key}: smaller than 7x7 pixels (SSIM)"})
        elif is_monotone(rgb):
            skipped.append(key)
        else:
            pending.append((key, rgb))
            if len(pending) >= batch:
                flush()
    if pending:
        flush()

    written = bool(sheet and sheet_rows)
    if written:
        names = ["no colour (L only)", *labels, "truth"]
        write_image(sheet, contact_sheet(sheet_rows, names), quality=92)
    return {
        "settings": {
            "resolutions": list(resolutions), "working_size": size, "device": str(dev),
            "batch_size": batch, "sheet": str(sheet) if written else None,
            "models": [{"label": label, "name": c.name, "path": str(c.model_path),
                        "arch": c.card.get("arch"), "card_name": c.card.get("name")}
                       for label, c in zip(labels, colorizers, strict=True)],
        },
        "counts": {"files": seen, "evaluated": len(per_image[resolutions[0]]),
                   "skipped_monotone": len(skipped), "unreadable": len(unreadable)},
        "summary": {r: _summary(per_image[r], [BASELINE, *labels]) for r in resolutions},
        "images": per_image,
        "skipped_monotone": skipped,
        "unreadable": unreadable,
        "not_computed": NOT_COMPUTED,
    }


# ---------------------------------------------------------------- report


def _cell(stat: dict[str, float | None], decimals: int) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.{decimals}f} ± {stat['std']:.{decimals}f}"


def format_report(result: dict[str, Any]) -> str:
    """One Markdown table per resolution, the header line giving counts and the truth's CF."""
    counts, settings = result["counts"], result["settings"]
    notes = {"full": "the Colorizer's full-size output vs the original",
             "working": f"truth resized to a long side of {settings['working_size']} px"}
    lines = []
    for res, s in result["summary"].items():
        lines += [
            f"**{res} resolution** ({notes[res]}): {s['photos']} photos evaluated of "
            f"{counts['files']} files ({counts['skipped_monotone']} gray/monotone skipped, "
            f"{counts['unreadable']} unreadable); truth CF {_cell(s['truth_cf'], 1)}",
            "",
            "| | " + " | ".join(title for title, _ in COLUMNS.values()) + " |",
            "|---" * (len(COLUMNS) + 1) + "|",
        ]
        for label, row in s["rows"].items():
            cells = [(f"{row[k]:.{d}f}" if row[k] is not None else "–") if k == "cf_ratio"
                     else _cell(row[k], d) for k, (_, d) in COLUMNS.items()]
            lines.append(f"| {label.replace('|', '/')} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(NOT_COMPUTED)
    lines += [f"  unreadable: {u['error']}" for u in result["unreadable"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- command


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``retint evaluate``; exit 0 when photos were scored, 1 when none were, 2 on usage."""
    from .inference import Colorizer
    from .io import IMAGE_SUFFIXES

    try:
        photos = photo_list(args.data)
        split = None
        if args.split:
            keys = read_split(args.split)
            listed = len(photos)
            photos = [p for p in photos if p.key in keys]
            split = {"file": str(args.split), "val_keys": len(keys), "files_found": listed,
                     "kept": len(photos)}
        if args.sheet and Path(args.sheet).suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{args.sheet}: --sheet needs an image suffix such as .jpg")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    photos = photos[: args.limit]
    if not photos:
        print("error: no photos to evaluate" + (" in the split" if split else ""),
              file=sys.stderr)
        return 2
    colorizers = [Colorizer(m, device=args.device, working_size=args.size,
                            batch_size=args.batch_size, saturation=args.saturation)
                  for m in args.model or ["default"]]
    resolutions = RESOLUTIONS if args.resolution == "both" else (args.resolution,)
    result = evaluate([(p.key, p.path) for p in photos], colorizers, resolutions=resolutions,
                      sheet=args.sheet, sheet_count=args.sheet_count, progress=not args.quiet)
    result["settings"].update(data=[str(d) for d in args.data], split=split, limit=args.limit,
                              saturation=args.saturation,
                              models_given=args.model or ["default"])
    if split:
        print(f"split {split['file']}: {split['kept']} of {split['files_found']} files are among "
              f"its {split['val_keys']} validation keys\n")
    print(format_report(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if result["settings"]["sheet"]:
        print(f"sheet: {args.sheet}")
    return 0 if result["counts"]["evaluated"] else 1


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``retint evaluate`` on the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="score models on colour photos vs the no-colour baseline",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="folder(s) of colour photos (ground truth), recursive")
    p.add_argument("--model", action="append",
                   help="teacher, student, default or a path; repeat to compare (default: default)")
    p.add_argument("--size", type=int, default=256, help="working size (long side) of the models")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--saturation", type=float, default=1.0,
                   help="scale the predicted colour (1 = as predicted; kept inside sRGB)")
    p.add_argument("--resolution", choices=["full", "working", "both"], default="both",
                   help="full: output at the photo's size; working: truth shrunk to --size")
    p.add_argument("--limit", type=int, help="only the first N photos (sorted by key)")
    p.add_argument("--split", help="split.json or model card .json: keep its validation photos")
    p.add_argument("--json", help="write summary, per-image values and settings here")
    p.add_argument("--sheet", help="write a contact sheet here (no colour | models | truth)")
    p.add_argument("--sheet-count", type=int, default=6, help="photos on the sheet")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
