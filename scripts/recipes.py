"""Train, compare and install the colour recipes behind the README's results table.

    python scripts/recipes.py pool  --data ../shared/data/photos ../shared/data/imagenet-sample
    python scripts/recipes.py train                 # every recipe not trained yet (hours on CPU)
    python scripts/recipes.py table --benchmarks ../shared/data/benchmarks/bsd100 \\
        ../shared/data/benchmarks/urban100 --data ../shared/data/photos \\
        ../shared/data/imagenet-sample            # -> runs/recipes/results.md, .json, sheet
    python scripts/recipes.py install enc-long-l1 student-mimic   # teacher, student -> package

``pool`` makes a training copy of the photos with the long side at 448 px (training crops are
taken after resizing the short side to 128-256 px, so little is lost) which makes a CPU epoch
several times faster; folder names are kept, so the validation split (a hash of
``folder/file``) is the same photos as in the originals. Every recipe trains on the same split;
``table`` scores each run's *final* weights (end of the schedule, never picked by a metric) on
that split's held-out photos at full resolution, and on the benchmark sets.

The default model is chosen by a written rule (:func:`pick_default`): most of the three goals
met on the held-out photos (colourfulness >= 60 % of the truth, PSNR_ab >= 0.5 dB above no
colour, ΔE00 below no colour), then the lowest ΔE00. The bundled student is one that meets the
fast-model goal (:func:`fast_goal_met`, and >= 2x the teacher's speed in ``retint bench``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

from retint.models import BUNDLED_DIR, load_weights, save_weights
from retint.train import TrainConfig, fit

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
#: Longer distillation of student-enc from the bundled teacher; the encoder sees a smaller L,
#: as it is most of a half-width student's time. Sharpening off: at x1.1 student-enc was more
#: colourful than its teacher on BSD100 (77 % vs 68 % of the truth).
FAST = dict(STUDENT, steps=2000, teacher="enc-long-l1", init="student-enc", width=0.5,
            backbone=ENC, kd_sharpen=1.0, lr=3e-4, warmup=100)
#: Longer distillation of the plain student (no encoder: the fast one) from the bundled teacher.
PLAIN = dict(STUDENT, teacher="enc-long-l1", init="student-kd", lr=3e-4, warmup=100)
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
    "enc-film": ("teacher + frozen EfficientNet-Lite0, FiLM fusion, MSE",
                 dict(steps=2400, backbone=ENC, fusion="film")),
    "enc-tune": ("enc-concat with the encoder's last 3 blocks fine-tuned (lr x0.1)",
                 dict(steps=2400, backbone=ENC, backbone_tune=3)),
    "enc-deep": ("enc-concat fusing the last block (15: 320 channels, stride 32) instead",
                 dict(steps=2400, backbone=ENC, backbone_blocks=(15,))),
    "enc-both": ("enc-concat fusing blocks 10 and 15 (stride 16 + stride 32)",
                 dict(steps=2400, backbone=ENC, backbone_blocks=(10, 15))),
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
    "student-fast": ("student-enc, 2,000 more steps from enc-long-l1 (not sharpened), the "
                     "encoder fed 128² L", dict(FAST, backbone_size=128)),
    "student-fast160": ("student-fast with the encoder fed 160² L",
                        dict(FAST, backbone_size=160)),
}


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


def config(name: str, data: list[str], runs: Path = RUNS) -> TrainConfig:
    _, overrides = RECIPES[name]
    values = {**COMMON, **overrides}
    for key in ("teacher", "init"):  # recipe names -> their final weights
        if values.get(key) in RECIPES:
            values[key] = str(run_dir(values[key], runs) / "final")
    return TrainConfig(data=data, out=str(run_dir(name, runs)), **values)


# ---------------------------------------------------------------- commands


def cmd_pool(args: argparse.Namespace) -> None:
    """Copies of the photos with the long side at most POOL_SIDE px, same folder names."""
    from retint.data import list_photos

    for root in map(Path, args.data):
        out = POOL / root.name
        for photo in list_photos([root]):
            dst = out / Path(photo.key).relative_to(root.name)
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo.path) as im:
                im = im.convert("RGB")
                im.thumbnail((POOL_SIDE, POOL_SIDE), Image.Resampling.LANCZOS)
                im.save(dst, quality=95)
    print(f"pool in {POOL}")


def cmd_train(args: argparse.Namespace) -> None:
    data = [str(POOL / Path(d).name) for d in args.data] if args.pool else args.data
    for name in args.only or RECIPES:
        if (run_dir(name, args.runs) / "final.safetensors").exists():
            print(f"{name}: already trained")
            continue
        print(f"== {name}: {RECIPES[name][0]}")
        fit(config(name, data, args.runs))


def _evaluate(photos: list, models: dict[str, Path], sheet: Path | None = None) -> dict:
    """``retint evaluate``'s scores at full resolution (what users get), summary only."""
    from retint.evaluate import evaluate
    from retint.inference import Colorizer

    colorizers = []
    for name, path in models.items():
        c = Colorizer(path, device="cpu")
        c.card["name"] = name
        colorizers.append(c)
    return evaluate(photos, colorizers, resolutions=("full",), sheet=sheet, sheet_count=8,
                    progress=True)["summary"]["full"]


def cmd_table(args: argparse.Namespace) -> None:
    """Score each model on each photo set (cached per set and model under ``eval/``, so a new
    recipe costs only its own evaluation), then write the table and a contact sheet."""
    from retint.evaluate import BASELINE, photo_list

    names = [n for n in (args.only or RECIPES) if (run_dir(n, args.runs) / "final.json").exists()]
    models = {n: run_dir(n, args.runs) / "final.safetensors" for n in names}
    for extra in args.extra:
        name, _, path = extra.partition("=")
        models[name] = Path(path).with_suffix(".safetensors")
    split = json.loads((run_dir(names[0], args.runs) / "split.json").read_text())
    held_out = [(p.key, p.path) for p in photo_list(args.data) if p.key in set(split["val"])]
    sets = {"held-out": held_out}
    for bench in map(Path, args.benchmarks):
        sets[bench.name] = [(p.key, p.path) for p in photo_list([bench])]
    results: dict[str, dict] = {}
    for set_name, photos in sets.items():
        rows = results.setdefault(set_name, {"rows": {}})["rows"]
        for name, path in models.items():
            cache = args.runs / "eval" / set_name / f"{name}.json"
            stale = not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime
            if stale:
                print(f"evaluating {name} on {len(photos)} photos of {set_name}", file=sys.stderr)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(_evaluate(photos, {name: path})) + "\n")
            summary = json.loads(cache.read_text())
            rows[name] = summary["rows"][name]
            rows[BASELINE] = summary["rows"][BASELINE]
            results[set_name]["photos"] = summary["photos"]
    (args.runs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    sheet_models = {n: models[n] for n in (args.sheet or list(models)[:4])}
    _evaluate(held_out[: args.sheet_photos], sheet_models, args.runs / "sheet.jpg")
    lines = ["| recipe | what | " + " | ".join(
        f"{s}: PSNR_ab gain, ΔE00, CF/truth, ΔCF" for s in sets) + " |",
        "|---|---|" + "---|" * len(sets)]
    for label in [BASELINE, *models]:
        what = RECIPES[label][0] if label in RECIPES else args.notes.get(label, "")
        cells = []
        for s in sets:
            base, row = results[s]["rows"][BASELINE], results[s]["rows"][label]
            gain = row["psnr_ab"]["mean"] - base["psnr_ab"]["mean"]
            cells.append(f"{gain:+.2f} dB, {row['delta_e00']['mean']:.2f}, "
                         f"{row['cf_ratio']:.0%}, {row['delta_cf']['mean']:.1f}")
        lines.append(f"| {label} | {what} | " + " | ".join(cells) + " |")
    base = {s: results[s]["rows"][BASELINE] for s in sets}
    lines += ["", "No colour: " + "; ".join(
        f"{s} PSNR_ab {b['psnr_ab']['mean']:.2f} dB, ΔE00 {b['delta_e00']['mean']:.2f}, "
        f"{results[s]['photos']} photos" for s, b in base.items())]
    (args.runs / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"default by the rule: {pick_default(results['held-out'], list(models))}")
    if "bsd100" in results and "enc-long-l1" in models:
        fast = [n for n in models if n.startswith("student")
                and fast_goal_met(results, "enc-long-l1", n)]
        print(f"students within the fast-model goal of enc-long-l1: {', '.join(fast) or 'none'}")


def goals_met(summary: dict, label: str) -> int:
    from retint.evaluate import BASELINE

    base, row = summary["rows"][BASELINE], summary["rows"][label]
    return ((row["cf_ratio"] >= 0.60)
            + (row["psnr_ab"]["mean"] - base["psnr_ab"]["mean"] >= 0.5)
            + (row["delta_e00"]["mean"] < base["delta_e00"]["mean"]))


def pick_default(summary: dict, labels: list[str]) -> str:
    """Most goals met on the held-out photos, then the lowest ΔE00 (the perceptual distance to
    the true colours, which punishes both sepia and confidently wrong colour)."""
    return min(labels, key=lambda m: (-goals_met(summary, m),
                                      summary["rows"][m]["delta_e00"]["mean"]))


def fast_goal_met(results: dict, teacher: str, student: str) -> bool:
    """The fast model's quality goal: within 0.5 dB PSNR_ab and 10 points of colourfulness of
    the teacher on the held-out photos and on BSD100 (its >= 2x speed is `retint bench`'s)."""
    for name in ("held-out", "bsd100"):
        t, s = results[name]["rows"][teacher], results[name]["rows"][student]
        if (t["psnr_ab"]["mean"] - s["psnr_ab"]["mean"] > 0.5
                or t["cf_ratio"] - s["cf_ratio"] > 0.10):
            return False
    return True


def cmd_install(args: argparse.Namespace) -> None:
    """Copy two runs' final weights into the package (fp16) as ``teacher`` and ``student``,
    and write ``default.json`` by :func:`pick_default` over the held-out results."""
    from train_bundled import data_card  # scripts/ is on sys.path when run as a script

    all_results = json.loads((args.runs / "results.json").read_text())
    results = all_results["held-out"]
    for role, name in (("teacher", args.teacher), ("student", args.student)):
        run = run_dir(name, args.runs)
        model, card = load_weights(run / "final")
        split = json.loads((run / "split.json").read_text())
        chain = builds_on(name)
        chain_cards = [json.loads((run_dir(n, args.runs) / "final.json").read_text())
                       for n in chain]
        card.update(
            name=role, recipe_name=name, recipe_note=RECIPES[name][0],
            recipe_chain=chain,
            train_seconds_total=round(sum(c["train_seconds"] for c in chain_cards), 1),
            steps_total=sum(c["steps"] for c in chain_cards),
            command="python scripts/recipes.py train --only " + " ".join(chain),
            evaluation={s: {"photos": r["photos"], "model": r["rows"][name],
                            "no_colour": r["rows"]["no colour (baseline)"]}
                        for s, r in all_results.items()})
        card["data"] = {**data_card(args.data, card["data"]), "val_photos_list": split["val"],
                        "skipped_gray_list": split["skipped_gray"],
                        "trained_on": f"{POOL}/: copies with the long side at {POOL_SIDE} px"}
        save_weights(model, BUNDLED_DIR / role, card, dtype=torch.float16)
    by_role = {"teacher": args.teacher, "student": args.student}
    best = pick_default(results, list(by_role.values()))
    role = next(r for r, n in by_role.items() if n == best)
    (BUNDLED_DIR / "default.json").write_text(json.dumps({"model": role, "why": (
        "most of the three goals met on held-out photos (CF >= 60 % of the truth, PSNR_ab "
        ">= +0.5 dB, ΔE00 below no colour), then the lowest ΔE00")}, indent=2) + "\n")
    print(f"installed {by_role}; default: {role}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=Path, default=RUNS)
    sub = ap.add_subparsers(dest="command", required=True)
    data_default = ["../shared/data/photos", "../shared/data/imagenet-sample"]
    p = sub.add_parser("pool")
    p.add_argument("--data", nargs="+", default=data_default)
    p = sub.add_parser("train")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("--no-pool", dest="pool", action="store_false",
                   help="train on the originals, not the resized pool")
    p.add_argument("--only", nargs="+", choices=list(RECIPES))
    p = sub.add_parser("table")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("--benchmarks", nargs="*", default=[])
    p.add_argument("--only", nargs="+", choices=list(RECIPES))
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=WEIGHTS",
                   help="also score these models (e.g. an earlier bundled one)")
    p.add_argument("--note", nargs="*", default=[], metavar="NAME=TEXT",
                   help="what an --extra model is, for the table")
    p.add_argument("--sheet", nargs="+", help="models on the contact sheet (default: first 4)")
    p.add_argument("--sheet-photos", type=int, default=8)
    p = sub.add_parser("install")
    p.add_argument("--data", nargs="+", default=data_default)
    p.add_argument("teacher", choices=list(RECIPES))
    p.add_argument("student", choices=list(RECIPES))
    args = ap.parse_args()
    args.notes = dict(n.partition("=")[::2] for n in getattr(args, "note", []))
    {"pool": cmd_pool, "train": cmd_train, "table": cmd_table, "install": cmd_install}[
        args.command](args)


if __name__ == "__main__":
    main()
