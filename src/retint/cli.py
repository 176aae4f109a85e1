"""``retint`` command line: colorize, video, serve, demo, train, distill, models, evaluate,
bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

SUFFIX_FOR_FORMAT = {"jpg": ".jpg", "jpeg": ".jpg", "png": ".png", "webp": ".webp",
                     "tiff": ".tif", "tif": ".tif", "bmp": ".bmp"}


# ---------------------------------------------------------------- colorize


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _base_of(item: str) -> Path:
    """The folder an input's layout is kept relative to: the folder itself, a file's parent,
    or a glob pattern's part before its first wildcard."""
    path = Path(item)
    if path.is_dir():
        return path
    if any(c in item for c in "*?["):
        prefix = []
        for part in path.parts:
            if any(c in part for c in "*?["):
                break
            prefix.append(part)
        return Path(*prefix) if prefix else Path(".")
    return path.parent


def plan_outputs(inputs: Sequence[str], out_dir: Path,
                 fmt: str | None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(input, output) pairs, and the inputs refused with why.

    Folders and globs keep their inner layout under ``out_dir``. An output that would land on
    any input, or on another input's output, is refused: a batch never loses a file.
    """
    from .io import find_images

    out_resolved = out_dir.resolve()
    sources: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in inputs:
        base = _base_of(item)
        nested_out = base.resolve() in out_resolved.parents  # e.g. -o photos/colorized
        for src in find_images([item]):
            real = src.resolve()
            if real in seen or (nested_out and out_resolved in real.parents):
                continue  # named twice, or an earlier run's output inside the input folder
            seen.add(real)
            suffix = SUFFIX_FOR_FORMAT[fmt] if fmt else src.suffix.lower()
            try:  # the path as listed, so a symlink pointing elsewhere keeps its place
                rel = src.relative_to(base)
            except ValueError:
                rel = Path(src.name)
            sources.append((src, out_dir / rel.with_suffix(suffix)))

    pairs, refused = [], []
    claimed: dict[Path, Path] = {}
    for src, dst in sources:
        target = dst.resolve()
        if target in seen:
            refused.append((src, f"{dst} would overwrite an input"))
        elif target in claimed:
            refused.append((src, f"{dst} is already the output of {claimed[target]}"))
        else:
            claimed[target] = src
            pairs.append((src, dst))
    return pairs, refused


def colorize_files(colorizer, pairs: Sequence[tuple[Path, Path]], *, skip_existing: bool = False,
                   quality: int = 95, progress: bool = True) -> BatchReport:
    """Colorize each pair in batches; a bad file is reported and the batch goes on."""
    from .io import read_rgb, write_image

    report = BatchReport()
    todo = []
    for src, dst in pairs:
        if skip_existing and dst.exists():
            report.skipped.append(src)
        else:
            todo.append((src, dst))
    bar = tqdm(total=len(todo), unit="photo", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(todo), colorizer.batch_size):
        loaded = []
        for src, dst in todo[start : start + colorizer.batch_size]:
            try:
                loaded.append((src, dst, read_rgb(src)))
            except (OSError, ValueError) as err:
                report.failed.append((src, str(err)))
                bar.update(1)
        if not loaded:
            continue
        results = colorizer.colorize_many([img for _, _, img in loaded])
        for (src, dst, _), rgb in zip(loaded, results, strict=True):
            try:
                write_image(dst, rgb, quality=quality)
                report.done.append(dst)
            except (OSError, ValueError) as err:
                report.failed.append((src, f"{dst}: cannot write ({err})"))
            bar.update(1)
    bar.close()
    return report


def cmd_colorize(args: argparse.Namespace) -> int:

    try:
        pairs, refused = plan_outputs(args.inputs, Path(args.output), args.format)
    except FileNotFoundError as err:
        return _fail(str(err))
    if not pairs and not refused:
        return _fail("no photos found in the given inputs")
    colorizer = _colorizer(args)
    t0 = time.perf_counter()
    report = colorize_files(colorizer, pairs, skip_existing=args.skip_existing,
                            quality=args.quality, progress=not args.quiet)
    report.failed[:0] = refused
    seconds = time.perf_counter() - t0
    print(f"colorized {len(report.done)} photo(s) into {args.output} with {colorizer.name} "
          f"in {seconds:.1f} s; skipped {len(report.skipped)} existing; "
          f"failed {len(report.failed)}")
    for src, why in report.failed:
        print(f"  failed: {src}: {why}" if not why.startswith(str(src)) else f"  failed: {why}")
    return 1 if report.failed else 0


def _colorizer(args: argparse.Namespace):
    from .inference import Colorizer

    return Colorizer(args.model, device=args.device, working_size=args.size,
                     batch_size=args.batch_size, saturation=args.saturation)


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 1-100, got {value}")
    return value


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- demo


DEMO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def cmd_demo(args: argparse.Namespace) -> int:
    """Gray versions of public-domain photos that ship with scikit-image (not in our training
    data) are colorized; the sheet shows gray input | retint | original."""
    import skimage.data

    from .color import no_colour
    from .io import read_rgb, write_image
    from .sheet import contact_sheet

    out = Path(args.output)
    gray_dir = out / "gray"
    originals = {}
    for name in DEMO_PHOTOS:
        rgb = getattr(skimage.data, name)()[:, :, :3]
        originals[name] = rgb
        write_image(gray_dir / f"{name}.png", no_colour(rgb))  # its own L, colour removed
    colorizer = _colorizer(args)
    pairs = [(gray_dir / f"{n}.png", out / f"{n}.png") for n in DEMO_PHOTOS]
    report = colorize_files(colorizer, pairs, progress=not args.quiet)
    rows = [[read_rgb(src), read_rgb(dst), originals[src.stem]] for src, dst in pairs
            if dst in report.done]
    sheet = out / "sheet.jpg"
    write_image(sheet, contact_sheet(rows, ["gray input", f"retint ({colorizer.name})",
                                            "original"]), quality=92)
    print(f"colorized {len(report.done)} demo photo(s) with {colorizer.name}:")
    for dst in report.done:
        print(f"  {dst}")
    print(f"gray inputs in {gray_dir}; side-by-side sheet: {sheet}")
    return 1 if report.failed else 0


# ---------------------------------------------------------------- train / distill


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _block_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected block numbers like 10,15: {text!r}") from None


def _train_config(args: argparse.Namespace, **overrides):
    from .train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(overrides)
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import fit

    fit(_train_config(args, data=args.data, out=args.output, progress=not args.quiet))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .models import resolve_model_path
    from .train import fit

    teacher = resolve_model_path(args.teacher)
    if not teacher.exists():
        return _fail(f"{args.teacher}: no such teacher weights")
    fit(_train_config(args, data=args.data, out=args.output, teacher=str(teacher),
                      progress=not args.quiet))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import BUNDLED_DIR

    default = json.loads((BUNDLED_DIR / "default.json").read_text())["model"]
    for card_path in sorted(BUNDLED_DIR.glob("*.json")):
        if card_path.stem == "default":
            continue
        card = json.loads(card_path.read_text())
        val = card.get("validation", {})
        print(f"{card_path.stem}{' (default)' if card_path.stem == default else ''}: "
              f"{card['arch']}, {card['parameters']:,} parameters; validation PSNR_ab "
              f"{val.get('val_psnr_ab', float('nan')):.2f} dB vs no colour "
              f"{val.get('base_psnr_ab', float('nan')):.2f} dB")
    return 0


# ---------------------------------------------------------------- parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="teacher, student, default (the best bundled), or a path to weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--size", type=int, default=256,
                   help="working size: the model sees the photo shrunk to this long side")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--saturation", type=float, default=1.0,
                   help="scale the predicted colour (1 = as predicted; kept inside sRGB)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_training_options(p: argparse.ArgumentParser, arch: str) -> None:
    p.add_argument("data", nargs="+", help="folder(s) of colour photos, searched recursively")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoints, logs, weights)")
    p.add_argument("--arch", default=arch, choices=["teacher", "student"])
    p.add_argument("--width", type=float, help="width multiplier of the model (default 1)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 10000)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 16)")
    p.add_argument("--crop", type=int, help="training crop size, multiple of 16 (default 128)")
    p.add_argument("--max-scale", type=float,
                   help="crops are taken after resizing the short side to crop*U(1, this)")
    p.add_argument("--backbone", choices=["none", "efficientnet-lite0"],
                   help="frozen pretrained encoder fused into the model's latent (default none)")
    p.add_argument("--fusion", choices=["concat", "film"],
                   help="how its features join the bottleneck (default concat)")
    p.add_argument("--backbone-tune", type=int, metavar="N",
                   help="fine-tune copies of the encoder's last N blocks (default 0: frozen)")
    p.add_argument("--backbone-lr", type=float,
                   help="their learning rate as a fraction of --lr (default 0.1)")
    p.add_argument("--backbone-size", type=int, metavar="PX",
                   help="shrink L to this long side for the encoder (default: as given)")
    p.add_argument("--backbone-blocks", type=_block_list, metavar="I,J",
                   help="encoder blocks whose feature maps are fused, e.g. 10,15 (default 10: "
                   "stride 16; 11-15 are stride 32, upsampled)")
    p.add_argument("--loss", choices=["mse", "l1", "huber"], help="reconstruction loss")
    p.add_argument("--rebalance", type=_unit_interval, metavar="S",
                   help="rarity weighting of the loss by the training ab histogram, 0 (off) "
                   "to 1 (pure inverse frequency); 0.5 as Zhang et al.")
    p.add_argument("--gan-weight", type=float,
                   help="weight of a conditional PatchGAN term (default 0: no discriminator)")
    p.add_argument("--gan-start", type=int,
                   help="step at which the discriminator joins (pixel-loss pre-training first)")
    p.add_argument("--gan-lr", type=float, help="discriminator Adam learning rate (2e-4)")
    p.add_argument("--init", help="start from these weights (fine-tuning) instead of scratch")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-4)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default 200)")
    p.add_argument("--schedule", choices=["cosine", "constant"])
    p.add_argument("--val-fraction", type=float, help="share of photos held out (default 0.1)")
    p.add_argument("--val-size", type=int, help="validation crop size (default 256)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: each epoch)")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (default 500)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loading processes (default 2)")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="disable bf16 mixed precision on CUDA")
    p.add_argument("--time-budget", type=float, help="seconds before stopping cleanly")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue exactly from the run folder's last checkpoint")
    p.add_argument("--tensorboard", action="store_true", default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="retint", description="Bring colour back to black-and-white photos.")
    parser.add_argument("--version", action="version", version=f"retint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("colorize", help="colorize photos (files, folders, globs)")
    p.add_argument("inputs", nargs="+", help="photos, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--format", choices=sorted(SUFFIX_FOR_FORMAT),
                   help="output format (default: the input's)")
    p.add_argument("--quality", type=_quality, default=95, help="JPEG/WebP quality, 1-100")
    p.add_argument("--skip-existing", action="store_true", help="leave existing outputs alone")
    _add_model_options(p)
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("demo", help="colorize the bundled demo photos and write a sheet")
    p.add_argument("-o", "--output", default="out")
    _add_model_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model (the teacher by default) on colour photos")
    _add_training_options(p, "teacher")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distil a teacher into a student")
    _add_training_options(p, "student")
    p.add_argument("--teacher", required=True, help="teacher weights (path, or 'teacher')")
    p.add_argument("--alpha", type=float, help="weight of the reconstruction loss (0.5)")
    p.add_argument("--beta", type=float, help="weight of the latent distillation loss (0.5)")
    p.add_argument("--kd-output", type=float,
                   help="weight of matching the teacher's ab output (default 0: latent only)")
    p.add_argument("--kd-sharpen", type=float,
                   help="scale the teacher's ab by this before matching it (>1: more vivid)")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("models", help="list the bundled models")
    p.set_defaults(func=cmd_models)

    from . import bench, evaluate, serve, video

    video.add_command(sub)
    serve.add_command(sub)
    evaluate.add_command(sub)
    bench.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io import ImageReadError
    from .models.backbone import BackboneError

    try:
        return args.func(args)
    except (ImageReadError, FileNotFoundError, ValueError, BackboneError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("interrupted: finished outputs are complete; nothing half-written was kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
