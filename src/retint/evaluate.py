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
  reward grayish, cautious colour, CF shows whether a model dares colour at all;
- the colour cast: the distance between the mean ab of the result and of the truth (LAB units),
  and the result's mean a* and b* beside the truth's, so a model that warms everything shows as
  b* above the truth's.

and, over the whole set, two plausibility figures from an ImageNet network that no retint model
is built on (EfficientNet-Lite1, :mod:`retint.semantic`; each image read once at 240x240): the
Fréchet distance between the results' and the truths' pooled features, and the share of photos
whose top-1 ImageNet class on the result is the truth's (Zhang et al. 2016's semantic
interpretability test). The summary repeats every row on the near-neutral truths alone (mean
chroma under 10), where any colour a model adds is a cast.

``--hints 0,1,2,5,10,20`` scores one hint model against the number of colour hints instead: each
photo gets that many points sampled from its truth as in training (:func:`retint.hints.
hints_from_truth`, a fixed seed per photo; the first N of the same points, so more hints only
add), and PSNR_ab, ΔE00 and CF of the full-size result are tabled and plotted against N.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .options import add_colorizer_options, colorizers_from_args, model_names

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .data import Photo
    from .inference import Colorizer
    from .semantic import Lite1Judge

BASELINE = "no colour (baseline)"
RESOLUTIONS = ("full", "working")
#: per-photo metrics (mean ± std over the photos)
METRICS = ("psnr_ab", "ssim_ab", "psnr_rgb", "ssim_rgb", "delta_e00", "cf", "delta_cf", "cast",
           "a_mean", "b_mean")
#: per-set figures (one value per model and set of photos)
SET_METRICS = ("frechet_lite1", "top1_agreement")
#: truths whose mean chroma (mean of sqrt(a² + b²) over the pixels) is below this are
#: near-neutral: the summary repeats its rows on them alone
NEUTRAL_CHROMA = 10.0
#: table columns: key -> (title, decimals); cf_ratio (a ratio of means) and the per-set
#: figures have no std
COLUMNS = {"psnr_ab": ("PSNR_ab", 2), "ssim_ab": ("SSIM_ab", 4), "psnr_rgb": ("PSNR_rgb", 2),
           "ssim_rgb": ("SSIM_rgb", 4), "delta_e00": ("ΔE00", 2), "cf": ("CF", 1),
           "cf_ratio": ("CF/truth", 2), "delta_cf": ("ΔCF", 1), "cast": ("cast", 2),
           "a_mean": ("a*", 1), "b_mean": ("b*", 1), "frechet_lite1": ("Fréchet-Lite1", 2),
           "top1_agreement": ("top-1 agree", 2)}
SINGLE_VALUES = ("cf_ratio", *SET_METRICS)
LEGEND = ("cast: distance between the mean ab of result and truth (LAB units); a*, b*: the "
          "result's mean (the truth's in the header line); Fréchet-Lite1: Fréchet distance "
          "between the results' and the truths' EfficientNet-Lite1 pooled features at 240x240 "
          "(lower is closer; compare only on the same photos); top-1 agree: share of photos "
          "whose Lite1 top-1 ImageNet class on the result is the one on the truth.")
NOT_COMPUTED = ("FID and LPIPS are not reported: they need pretrained Inception / AlexNet "
                "weights, which retint does not ship and cannot download; the Fréchet distance "
                "above uses EfficientNet-Lite1 features instead, so it is not comparable with "
                "published FID figures.")
SHEET_TILE = 768  # sheet images are kept as thumbnails, not as full-resolution copies
#: ``--hints`` alone: numbers of hint points scored (the first N of the same 20 per photo)
HINT_COUNTS = (0, 1, 2, 5, 10, 20)
HINT_COLUMNS = {"psnr_ab": ("PSNR_ab", 2), "delta_e00": ("ΔE00", 2), "cf": ("CF", 1)}
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


def working_truth(rgb: np.ndarray, size: int) -> np.ndarray:
    """The truth resized (PIL Lanczos, antialiased) to a long side of ``size``, as uint8; the
    Colorizer's own rounding of the shape, so it then runs the model without resampling."""
    import numpy as np
    from PIL import Image

    from .inference import working_shape
    from .io import to_uint8

    h, w = working_shape(*rgb.shape[:2], size)
    return np.asarray(Image.fromarray(to_uint8(rgb)).resize((w, h), Image.LANCZOS))


def _rgb255(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8/uint16 -> (1, 3, H, W) float64 on the 0-255 scale (16 bit divided by 257)."""
    import numpy as np
    import torch

    x = rgb.astype(np.float64) / (257.0 if rgb.dtype == np.uint16 else 1.0)
    return torch.from_numpy(x).permute(2, 0, 1)[None].to(device)


def _thumb(rgb: np.ndarray) -> np.ndarray:
    import numpy as np
    from PIL import Image

    from .io import to_uint8

    im = Image.fromarray(to_uint8(rgb))
    im.thumbnail((SHEET_TILE, SHEET_TILE), Image.LANCZOS)
    return np.asarray(im)


# ---------------------------------------------------------------- scoring


class Truth(NamedTuple):
    """What every comparison with one truth needs: its RGB (0-255), LAB, colourfulness and
    mean chroma."""

    rgb: torch.Tensor
    lab: torch.Tensor
    cf: float
    chroma: float


def _prepare(truth: np.ndarray, device: torch.device) -> Truth:
    import torch

    from .color import rgb_to_lab
    from .metrics import colorfulness

    rgb = _rgb255(truth, device)
    lab = rgb_to_lab(rgb / 255.0)
    chroma = float(torch.hypot(lab[:, 1], lab[:, 2]).mean())
    return Truth(rgb, lab, float(colorfulness(rgb)[0]), chroma)


def _mean_delta_e(lab1: torch.Tensor, lab2: torch.Tensor) -> float:
    from .metrics import ciede2000

    h, w = lab1.shape[-2:]
    rows = max(1, _DE_BAND_PIXELS // w)
    total = sum(float(ciede2000(lab1[..., r : r + rows, :], lab2[..., r : r + rows, :]).sum())
                for r in range(0, h, rows))
    return total / (h * w)


def score(truth: Truth, result: np.ndarray, device: torch.device) -> dict[str, float]:
    """All per-photo metrics (:data:`METRICS`) of one delivered RGB ``result`` against a
    prepared truth; PSNRs capped at 100 dB (a perfect match is +inf, which would poison means
    and JSON)."""
    from .color import AB_SCALE, rgb_to_lab
    from .metrics import (
        PSNR_CAP_DB,
        cast_metrics,
        colorfulness,
        psnr_ab,
        psnr_rgb,
        ssim_ab,
        ssim_rgb,
    )

    r_rgb = _rgb255(result, device)
    r_lab = rgb_to_lab(r_rgb / 255.0)
    r_ab, t_ab = r_lab[:, 1:] / AB_SCALE, truth.lab[:, 1:] / AB_SCALE
    cf = float(colorfulness(r_rgb)[0])
    cast = cast_metrics(r_lab[:, 1:], truth.lab[:, 1:])
    return {
        "psnr_ab": min(float(psnr_ab(r_ab, t_ab)[0]), PSNR_CAP_DB),
        "ssim_ab": float(ssim_ab(r_ab, t_ab)[0]),
        "psnr_rgb": min(float(psnr_rgb(r_rgb, truth.rgb)[0]), PSNR_CAP_DB),
        "ssim_rgb": float(ssim_rgb(r_rgb, truth.rgb)[0]),
        "delta_e00": _mean_delta_e(truth.lab, r_lab),
        "cf": cf,
        "delta_cf": abs(cf - truth.cf),
        **{k: float(cast[k][0]) for k in ("cast", "a_mean", "b_mean")},
    }


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and population std over the photos (None when there are none)."""
    import numpy as np

    if not values:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _set_metrics(entries: list[dict], features: list[dict] | None,
                 label: str) -> dict[str, float | None]:
    """Fréchet distance (2+ photos) and top-1 agreement of one row; None where not computed."""
    import torch

    from .metrics import frechet_distance, top1_agreement

    if features is None or not entries:
        return dict.fromkeys(SET_METRICS)
    frechet = None
    if len(entries) >= 2:
        frechet = frechet_distance(torch.stack([f["results"][label] for f in features]),
                                   torch.stack([f["truth"] for f in features]))
    agreement = top1_agreement(torch.tensor([e["top1"][label] for e in entries]),
                               torch.tensor([e["truth_top1"] for e in entries]))
    return {"frechet_lite1": frechet, "top1_agreement": agreement}


def _rows(entries: list[dict], labels: Sequence[str],
          features: list[dict] | None = None) -> dict[str, Any]:
    """Mean ± std of :data:`METRICS`, the CF ratio and the per-set figures (from ``features``,
    parallel to ``entries``: each label's and the truth's Lite1 vector) for each label."""
    truth = {k: _mean_std([e[k] for e in entries])
             for k in ("truth_cf", "a_truth", "b_truth", "truth_chroma")}
    rows: dict[str, dict] = {}
    for label in labels:
        row: dict[str, Any] = {m: _mean_std([e["scores"][label][m] for e in entries])
                               for m in METRICS}
        cf, t_cf = row["cf"]["mean"], truth["truth_cf"]["mean"]
        row["cf_ratio"] = cf / t_cf if cf is not None and t_cf else None
        row.update(_set_metrics(entries, features, label))
        rows[label] = row
    return {"photos": len(entries), **truth, "rows": rows}


def _subset(entries: list[dict], labels: Sequence[str], features: list[dict] | None,
            keep: list[int]) -> dict[str, Any]:
    picked = None if features is None else [features[i] for i in keep]
    return {"keys": [entries[i]["key"] for i in keep],
            **_rows([entries[i] for i in keep], labels, picked)}


def _summary(entries: list[dict], labels: Sequence[str], features: list[dict] | None,
             views: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`_rows` over all photos, again over the near-neutral truths alone, and over each
    view (``name -> key prefix``, e.g. ``{"people": "people/"}``)."""
    neutral = [i for i, e in enumerate(entries) if e["truth_chroma"] < NEUTRAL_CHROMA]
    out = {**_rows(entries, labels, features),
           "neutral": {"max_chroma": NEUTRAL_CHROMA,
                       **_subset(entries, labels, features, neutral)}}
    if views:
        out["views"] = {name: _subset(entries, labels, features,
                                      [i for i, e in enumerate(entries)
                                       if e["key"].startswith(prefix)])
                        for name, prefix in views.items()}
    return out


class _Run:
    """One evaluation: photos are added one by one and scored in batches at every resolution;
    per-image values, the per-set figures' features and sheet rows build up until
    :meth:`summary`."""

    def __init__(self, colorizers: Sequence[Colorizer], resolutions: Sequence[str], size: int,
                 device: torch.device, batch: int, judge: Lite1Judge | None,
                 sheet_count: int) -> None:
        from .models import unique_ids

        self.colorizers, self.resolutions, self.size = colorizers, resolutions, size
        self.device, self.batch, self.judge, self.sheet_count = device, batch, judge, sheet_count
        self.labels = unique_ids([c.name for c in colorizers])
        self.sheet_res = "full" if "full" in resolutions else "working"
        self.per_image: dict[str, list[dict]] = {r: [] for r in resolutions}
        self.features: dict[str, list[dict]] = {r: [] for r in resolutions}
        self.sheet_rows: list[list[np.ndarray]] = []
        self.seen = 0
        self.unreadable: list[dict[str, str]] = []
        self.skipped: list[str] = []
        self.pending: list[tuple[str, np.ndarray]] = []

    def add(self, key: str, src: str | Path | np.ndarray) -> None:
        """One photo (a path or an array): unreadable, too small or gray/monotone ones are
        counted and skipped, the others scored once a batch is full."""
        from .data import is_monotone
        from .io import ImageReadError, read_rgb

        self.seen += 1
        try:
            rgb = src if not isinstance(src, (str, Path)) else read_rgb(src)
        except ImageReadError as err:
            self.unreadable.append({"key": key, "error": str(err)})
            return
        if min(rgb.shape[:2]) < 7:
            self.unreadable.append({"key": key, "error": f"{key}: smaller than 7x7 pixels (SSIM)"})
        elif is_monotone(rgb):
            self.skipped.append(key)
        else:
            self.pending.append((key, rgb))
            if len(self.pending) >= self.batch:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            self.score_batch(self.pending)
            self.pending = []

    def score_batch(self, photos: Sequence[tuple[str, np.ndarray]]) -> None:
        """Colorize and score a batch of ``(key, truth RGB)`` at every resolution."""
        from .color import no_color

        for res in self.resolutions:
            truths = [rgb if res == "full" else working_truth(rgb, self.size)
                      for _, rgb in photos]
            outputs = [[no_color(t, self.device) for t in truths]]
            outputs += [c.colorize_many(truths) for c in self.colorizers]
            judged = self._judge(truths, outputs)
            for i, ((key, _), truth) in enumerate(zip(photos, truths, strict=True)):
                results = [out[i] for out in outputs]
                entry = self._entry(key, truth, results)
                if judged is not None:
                    (truth_features, truth_class), read = judged[i]
                    entry["truth_top1"] = int(truth_class)
                    entry["top1"] = {label: int(c) for label, (_, c) in read.items()}
                    self.features[res].append({"truth": truth_features,
                                               "results": {k: f for k, (f, _) in read.items()}})
                self.per_image[res].append(entry)
                if res == self.sheet_res and len(self.sheet_rows) < self.sheet_count:
                    self.sheet_rows.append([_thumb(r) for r in results] + [_thumb(truth)])

    def _entry(self, key: str, truth: np.ndarray, results: list[np.ndarray]) -> dict[str, Any]:
        prepared = _prepare(truth, self.device)
        ab = prepared.lab[0, 1:].mean((1, 2))
        return {"key": key, "height": truth.shape[0], "width": truth.shape[1],
                "truth_cf": prepared.cf, "truth_chroma": prepared.chroma,
                "a_truth": float(ab[0]), "b_truth": float(ab[1]),
                "scores": {label: score(prepared, r, self.device)
                           for label, r in zip([BASELINE, *self.labels], results, strict=True)}}

    def _judge(self, truths: list[np.ndarray], outputs: list[list[np.ndarray]]) -> list | None:
        """Per photo: the truth's (Lite1 features, top-1 class) and each label's, every image
        of the batch read by the network once, in one pass."""
        if self.judge is None:
            return None
        features, classes = self.judge([img for out in [truths, *outputs] for img in out])
        n = len(truths)
        return [((features[i], classes[i]),
                 {label: (features[j * n + i], classes[j * n + i])
                  for j, label in enumerate([BASELINE, *self.labels], start=1)})
                for i in range(n)]

    def summary(self, views: Mapping[str, str] | None = None) -> dict[str, Any]:
        labels = [BASELINE, *self.labels]
        return {r: _summary(self.per_image[r], labels,
                            self.features[r] if self.judge else None, views)
                for r in self.resolutions}


def evaluate(images: Iterable[tuple[str, str | Path | np.ndarray]],
             colorizers: Sequence[Colorizer], *, resolutions: Sequence[str] = RESOLUTIONS,
             working_size: int | None = None, device: str | torch.device | None = None,
             sheet: str | Path | None = None, sheet_count: int = 6,
             plausibility: bool = True, views: Mapping[str, str] | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Score ``colorizers`` and the no-colour baseline on ``(key, path or HxWx3 uint8/uint16
    array)`` pairs of colour ground truth; returns summary, per-image values and settings.

    Unreadable files and gray/monotone photos (:func:`retint.data.is_monotone`) are skipped and
    counted. ``working_size`` defaults to the first colorizer's; metrics are computed in float64
    on ``device`` (default: the first colorizer's; MPS falls back to the CPU, lacking float64),
    where EfficientNet-Lite1 also runs for the ``plausibility`` figures (MPS included). With
    ``sheet``, a contact sheet of the first ``sheet_count`` photos (no colour | each model |
    truth) is written there. ``views`` name subsets by key prefix, summarised apart.
    """
    import torch
    from tqdm import tqdm

    from .models.backbone import BackboneError
    from .semantic import Lite1Judge

    bad = set(resolutions) - set(RESOLUTIONS)
    if bad or not resolutions:
        raise ValueError(f"resolutions must be among {RESOLUTIONS}, got {list(resolutions)}")
    size = working_size or (colorizers[0].working_size if colorizers else 256)
    asked = torch.device(device) if device else (colorizers[0].device if colorizers
                                                 else torch.device("cpu"))
    dev = torch.device("cpu") if asked.type == "mps" else asked
    batch = colorizers[0].batch_size if colorizers else 4
    try:
        judge = Lite1Judge(asked) if plausibility else None
    except BackboneError as err:
        raise BackboneError(f"{err}; --no-plausibility skips the Fréchet distance and top-1 "
                            "agreement") from err
    run = _Run(colorizers, resolutions, size, dev, batch, judge, sheet_count if sheet else 0)
    total = len(images) if isinstance(images, Sequence) else None
    for key, src in tqdm(images, total=total, unit="photo", disable=not progress,
                         dynamic_ncols=True, file=sys.stderr):
        run.add(key, src)
    run.flush()
    written = _write_sheet(sheet, run)
    return {
        "settings": {
            "resolutions": list(resolutions), "working_size": size, "device": str(dev),
            "batch_size": batch, "sheet": str(sheet) if written else None,
            "models": [{"label": label, "name": c.name, "path": str(c.model_path),
                        "arch": c.card.get("arch"), "card_name": c.card.get("name")}
                       for label, c in zip(run.labels, colorizers, strict=True)],
            "plausibility": judge.info() if judge else None,
        },
        "counts": {"files": run.seen, "evaluated": len(run.per_image[resolutions[0]]),
                   "skipped_monotone": len(run.skipped), "unreadable": len(run.unreadable)},
        "summary": run.summary(views),
        "images": run.per_image,
        "skipped_monotone": run.skipped,
        "unreadable": run.unreadable,
        "not_computed": NOT_COMPUTED,
    }


def _photo_seed(seed: int, key: str) -> int:
    """A photo's own seed: the same points for it on every machine, whatever else is scored."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") >> 1


def evaluate_hints(images: Iterable[tuple[str, str | Path | np.ndarray]], colorizer: Colorizer,
                   counts: Sequence[int] = HINT_COUNTS, *, seed: int = 0,
                   resolution: str = "full", progress: bool = False) -> dict[str, Any]:
    """Score a hint model on ``(key, path or array)`` colour truths against the number of hints:
    for each N of ``counts``, the first N of ``max(counts)`` points sampled from the truth as in
    training (seeded by ``seed`` and the photo's key). N = 0 is the automatic result. Unreadable
    and gray/monotone photos are skipped and counted, as in :func:`evaluate`. ``resolution``
    "working" scores the truth shrunk to the working size (as :func:`evaluate` does), which is
    several times faster on big photos."""
    import torch
    from tqdm import tqdm

    from .data import is_monotone
    from .hints import check_hint_model, hints_from_truth
    from .io import ImageReadError, read_rgb

    check_hint_model(colorizer)
    counts = sorted(set(counts))
    dev = torch.device("cpu") if colorizer.device.type == "mps" else colorizer.device
    per_image, unreadable, skipped, seen = [], [], [], 0
    for key, src in tqdm(images, unit="photo", disable=not progress, dynamic_ncols=True,
                         file=sys.stderr):
        seen += 1
        try:
            rgb = src if not isinstance(src, (str, Path)) else read_rgb(src)
        except ImageReadError as err:
            unreadable.append({"key": key, "error": str(err)})
            continue
        if min(rgb.shape[:2]) < 7:
            unreadable.append({"key": key, "error": f"{key}: smaller than 7x7 pixels (SSIM)"})
            continue
        if is_monotone(rgb):
            skipped.append(key)
            continue
        if resolution == "working":
            rgb = working_truth(rgb, colorizer.working_size)
        generator = torch.Generator().manual_seed(_photo_seed(seed, key))
        points = hints_from_truth(rgb, colorizer.working_size, max(counts), generator)
        truth = _prepare(rgb, dev)
        per_image.append({"key": key, "truth_cf": truth.cf, "scores": {
            str(n): score(truth, colorizer.colorize(rgb, points[:n]), dev) for n in counts}})
    rows = {}
    for n in map(str, counts):
        row: dict[str, Any] = {m: _mean_std([e["scores"][n][m] for e in per_image])
                               for m in METRICS}
        t_cf = _mean_std([e["truth_cf"] for e in per_image])["mean"]
        row["cf_ratio"] = row["cf"]["mean"] / t_cf if per_image and t_cf else None
        rows[n] = row
    return {"settings": {"model": colorizer.name, "path": str(colorizer.model_path),
                         "working_size": colorizer.working_size, "counts": counts,
                         "resolution": resolution,
                         "seed": seed, "device": str(dev)},
            "counts": {"files": seen, "evaluated": len(per_image),
                       "skipped_monotone": len(skipped), "unreadable": len(unreadable)},
            "truth_cf": _mean_std([e["truth_cf"] for e in per_image]),
            "rows": rows, "images": per_image, "unreadable": unreadable,
            "skipped_monotone": skipped}


def format_hint_report(result: dict[str, Any]) -> str:
    """A Markdown table: one row per number of hints."""
    c, st = result["counts"], result["settings"]
    lines = [f"**{st['model']} against the number of colour hints** (sampled from each truth "
             f"as in training, seed {st['seed']}; {st.get('resolution', 'full')} resolution): "
             f"{c['evaluated']} photos of "
             f"{c['files']} files ({c['skipped_monotone']} gray/monotone skipped, "
             f"{c['unreadable']} unreadable); truth CF {_cell(result['truth_cf'], 1)}", "",
             "| hints | " + " | ".join(t for t, _ in HINT_COLUMNS.values()) + " | CF/truth |",
             "|---" * (len(HINT_COLUMNS) + 2) + "|"]
    for n, row in result["rows"].items():
        cells = [_cell(row[k], d) for k, (_, d) in HINT_COLUMNS.items()]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_cell(row['cf_ratio'], 2)} |")
    lines += [f"  unreadable: {u['error']}" for u in result["unreadable"]]
    return "\n".join(lines)


def plot_hints(results: dict[str, dict[str, Any]], png: str | Path) -> None:
    """PSNR_ab, ΔE00 and CF (mean ± std over the photos) against the number of hints, one line
    per photo set (``results``: set name -> :func:`evaluate_hints`' result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for n_set, (label, result) in enumerate(results.items()):
        counts = [int(n) for n in result["rows"]]
        colour = f"C{n_set}"
        name = f"{label} ({result['counts']['evaluated']} photos)"
        for ax, (key, (title, _)) in zip(axes, HINT_COLUMNS.items(), strict=True):
            means = [result["rows"][str(n)][key]["mean"] for n in counts]
            stds = [result["rows"][str(n)][key]["std"] for n in counts]
            if all(m is not None for m in means):
                ax.errorbar(counts, means, yerr=stds, fmt="o-", capsize=3, color=colour,
                            label=name)
            if key == "cf" and result["truth_cf"]["mean"] is not None:
                ax.axhline(result["truth_cf"]["mean"], ls="--", color=colour, alpha=0.6,
                           label=f"{label} truth")
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xticks(counts, [str(n) for n in counts])
            ax.set_xlabel("colour hints per photo")
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    first = next(iter(results.values()))
    fig.suptitle(f"{first['settings']['model']} against the number of colour hints")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _write_sheet(sheet: str | Path | None, run: _Run) -> bool:
    from .io import write_image
    from .sheet import contact_sheet

    if not (sheet and run.sheet_rows):
        return False
    names = ["no colour (L only)", *run.labels, "truth"]
    write_image(sheet, contact_sheet(run.sheet_rows, names), quality=92)
    return True


# ---------------------------------------------------------------- report


def _cell(stat: dict[str, float | None] | float | None, decimals: int) -> str:
    if isinstance(stat, dict):
        if stat["mean"] is None:
            return "–"
        return f"{stat['mean']:.{decimals}f} ± {stat['std']:.{decimals}f}"
    return "–" if stat is None else f"{stat:.{decimals}f}"


def _table(s: dict[str, Any]) -> list[str]:
    lines = ["| | " + " | ".join(title for title, _ in COLUMNS.values()) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for label, row in s["rows"].items():
        cells = [_cell(row[k], d) for k, (_, d) in COLUMNS.items()]
        lines.append(f"| {label.replace('|', '/')} | " + " | ".join(cells) + " |")
    return lines


def _photos(n: int) -> str:
    return f"{n} photo" + ("" if n == 1 else "s")


def _truth_line(s: dict[str, Any]) -> str:
    return (f"truth CF {_cell(s['truth_cf'], 1)}, a* {_cell(s['a_truth'], 1)}, "
            f"b* {_cell(s['b_truth'], 1)}")


def format_report(result: dict[str, Any]) -> str:
    """Per resolution, a Markdown table over all photos (the header line giving counts and the
    truth's CF and mean a*, b*) and one over the near-neutral truths."""
    counts, settings = result["counts"], result["settings"]
    notes = {"full": "the Colorizer's full-size output vs the original",
             "working": f"truth resized to a long side of {settings['working_size']} px"}
    lines = []
    for res, s in result["summary"].items():
        neutral = s["neutral"]
        lines += [f"**{res} resolution** ({notes[res]}): {s['photos']} photos evaluated of "
                  f"{counts['files']} files ({counts['skipped_monotone']} gray/monotone skipped, "
                  f"{counts['unreadable']} unreadable); {_truth_line(s)}", "", *_table(s), "",
                  f"*near-neutral truths* (mean chroma < {neutral['max_chroma']:g}), {res}: "
                  + (f"{_photos(neutral['photos'])}; {_truth_line(neutral)}"
                     if neutral["photos"] else "none"), ""]
        if neutral["photos"]:
            lines += [*_table(neutral), ""]
    lines += [LEGEND, NOT_COMPUTED]
    if settings.get("plausibility") is None:
        lines.append("Fréchet-Lite1 and top-1 agreement were not computed (--no-plausibility).")
    lines += [f"  unreadable: {u['error']}" for u in result["unreadable"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- command


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``retint evaluate``; exit 0 when photos were scored, 1 when none were, 2 on usage."""
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
    if args.hints is not None:
        return _cmd_hints(args, photos, split)
    colorizers = colorizers_from_args(args)
    resolutions = RESOLUTIONS if args.resolution == "both" else (args.resolution,)
    result = evaluate([(p.key, p.path) for p in photos], colorizers, resolutions=resolutions,
                      sheet=args.sheet, sheet_count=args.sheet_count,
                      plausibility=args.plausibility, progress=not args.quiet)
    result["settings"].update(data=[str(d) for d in args.data], split=split, limit=args.limit,
                              saturation=args.saturation, models_given=model_names(args))
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


def _cmd_hints(args: argparse.Namespace, photos: list, split: dict | None) -> int:
    """``retint evaluate --hints``: one hint model against the number of hints."""
    from .hints import HintError, hint_model_for

    names = model_names(args)
    try:
        if len(names) > 1:
            raise ValueError("--hints scores one hint model: give one --model")
        args.model = [hint_model_for(names[0])]
        result = evaluate_hints([(p.key, p.path) for p in photos], colorizers_from_args(args)[0],
                                args.hints, seed=args.hint_seed,
                                resolution="working" if args.resolution == "working" else "full",
                                progress=not args.quiet)
    except HintError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["settings"].update(data=[str(d) for d in args.data], split=split, limit=args.limit)
    print(format_hint_report(result))
    plot_hints({"photos": result}, args.hint_plot)
    print(f"plot: {args.hint_plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0 if result["counts"]["evaluated"] else 1


def _hint_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers such as 0,1,2,5,10,20, got {text!r}") from None
    if not counts or counts[0] < 0 or counts[-1] > 1000:
        raise argparse.ArgumentTypeError(f"expected numbers from 0 to 1000, got {text!r}")
    return counts


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``retint evaluate`` on the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="score models on colour photos vs the no-colour baseline",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="folder(s) of colour photos (ground truth), recursive")
    add_colorizer_options(p, many_models=True)
    p.add_argument("--resolution", choices=["full", "working", "both"], default="both",
                   help="full: output at the photo's size; working: truth shrunk to --size")
    p.add_argument("--limit", type=int, help="only the first N photos (sorted by key)")
    p.add_argument("--split", help="split.json or model card .json: keep its validation photos")
    p.add_argument("--json", help="write summary, per-image values and settings here")
    p.add_argument("--sheet", help="write a contact sheet here (no colour | models | truth)")
    p.add_argument("--sheet-count", type=int, default=6, help="photos on the sheet")
    p.add_argument("--no-plausibility", dest="plausibility", action="store_false",
                   help="skip the EfficientNet-Lite1 figures (Fréchet distance, top-1 agreement)")
    p.add_argument("--hints", type=_hint_counts, nargs="?", metavar="N,N,...",
                   const=list(HINT_COUNTS),
                   help="score one hint model against the number of colour hints sampled from "
                   "each truth as in training (default 0,1,2,5,10,20): a table of PSNR_ab, "
                   "ΔE00 and CF, and a plot (--hint-plot); the bundled 'hints' model unless "
                   "--model names another")
    p.add_argument("--hint-seed", type=int, default=0, help="seed of the --hints points (0)")
    p.add_argument("--hint-plot", default="hints.png",
                   help="where --hints writes its plot (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
