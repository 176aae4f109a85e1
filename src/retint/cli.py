"""``retint`` command line: colorize, video, serve, demo, train, distill, models, evaluate,
bench."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .batch import (
    Job,
    UsageError,
    build_colorizer,
    check_writable,
    colorize_files,
    output_rule,
    photo_hints,
    plan_outputs,
    print_failures,
    progress_wanted,
    summary_line,
)
from .io import DEFAULT_MAX_PIXELS, SUFFIX_FOR_FORMAT
from .manifest import DEFAULT_NAME as MANIFEST_NAME
from .options import add_colorizer_options, colorizer_from_args, positive_int

# ---------------------------------------------------------------- colorize


def cmd_colorize(args: argparse.Namespace) -> int:
    """Plan every output and check the destination before the model loads; then colorize,
    here or, with ``--ray``, on a Ray cluster. ``-`` as the input reads one photo from stdin,
    ``-o -`` writes it to stdout."""
    if args.inputs == ["-"] or args.output == "-":
        if args.ray is not None:
            return _fail("--ray colorizes files: '-' (stdin/stdout) is for one photo here")
        return _colorize_stream(args)
    try:
        rule, single = output_rule(args.inputs, args.output, args.format, args.suffix,
                                   args.keep_extension)
        if single:
            pairs, refused = [(Path(args.inputs[0]), single)], []
            if single.resolve() == Path(args.inputs[0]).resolve():
                raise UsageError(f"{single}: refusing to overwrite the input")
        else:
            pairs, refused = plan_outputs(args.inputs, rule)
        if not pairs and not refused:
            return _fail("no photos found in the given inputs")
        check_writable([dst.parent for _, dst in pairs])
        if args.ray is not None:
            from .cluster import colorize_on_ray

            return colorize_on_ray(args, pairs, refused, rule)
        hints = photo_hints(args, [src for src, _ in pairs])
    except (UsageError, FileNotFoundError, ValueError) as err:  # ValueError: a bad hints file
        return _fail(str(err))
    job = Job(args)
    if hints:
        job.colorizer(True)  # a model that cannot take hints fails before any photo is read
    t0 = time.perf_counter()
    report = job.run(pairs, hints, progress=progress_wanted(args.quiet))
    report.failed[:0] = refused
    seconds = time.perf_counter() - t0
    where = args.output or f"place (suffix {args.suffix!r})"
    hinted = f" ({len(hints)} with colour hints)" if hints else ""
    print(summary_line(len(report.done), len(report.skipped), len(report.failed), seconds,
                       where, job.colorizer(bool(hints)).name, hinted))
    print_failures(report.failed)
    return 1 if report.failed else 0


def _hint(text: str):
    """``--hint X,Y=COLOUR``, checked as the command line is read."""
    from .hints import HintError, parse_hint_arg

    try:
        return parse_hint_arg(text)
    except HintError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _colorize_stream(args: argparse.Namespace) -> int:
    """One photo through pipes: stdin (``-``) and/or stdout (``-o -``)."""
    from .io import FORMATS, encode_image, image_header, read_image

    if len(args.inputs) != 1:
        return _fail("'-' (stdin) and '-o -' (stdout) take exactly one photo")
    with tempfile.TemporaryDirectory(prefix="retint-pipe-") as tmp:
        src = Path(args.inputs[0])
        if args.inputs == ["-"]:
            src = Path(tmp) / "stdin"
            src.write_bytes(sys.stdin.buffer.read())
        try:
            kind = image_header(src)[0] if src.exists() else ""
            rgb = read_image(src, max_pixels=args.max_pixels)
        except (OSError, ValueError) as err:
            return _fail(str(err).replace(str(src), "stdin") if args.inputs == ["-"]
                         else str(err))
        fmt = FORMATS[SUFFIX_FOR_FORMAT[args.format]] if args.format else (kind or "PNG")
        if args.output != "-":
            dst = Path(args.output)
            fmt = FORMATS.get(dst.suffix.lower())
            if fmt is None:
                return _fail(f"{dst}: give the output an image extension, such as .png")
        hints = None
        if args.inputs != ["-"] or args.hints or args.hint:  # stdin has no NAME.hints.json
            hints = photo_hints(args, [Path(args.inputs[0])]).get(Path(args.inputs[0]))
        result = build_colorizer(args, bool(hints)).colorize(rgb, hints or None)
        if args.output == "-":
            encode_image(sys.stdout.buffer, result, fmt, args.quality)
            sys.stdout.buffer.flush()
        else:
            from .io import write_image

            write_image(dst, result, quality=args.quality)
    return 0


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

    from .color import no_color
    from .io import read_rgb, write_image
    from .sheet import contact_sheet

    out = Path(args.output)
    gray_dir = out / "gray"
    originals = {}
    for name in DEMO_PHOTOS:
        rgb = getattr(skimage.data, name)()[:, :, :3]
        originals[name] = rgb
        write_image(gray_dir / f"{name}.png", no_color(rgb))  # its own L, colour removed
    colorizer = colorizer_from_args(args)
    pairs = [(gray_dir / f"{n}.png", out / f"{n}.png") for n in DEMO_PHOTOS]
    report = colorize_files(colorizer, pairs, progress=progress_wanted(args.quiet))
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
        if card["arch"] == "hinted":  # scored against the number of hints, not validation
            rows = card.get("evaluation_hints", {}).get("held-out", {}).get("rows", {})
            scores = "; ".join(f"held-out ΔE00 {rows[n]['delta_e00']['mean']:.2f} with {n} hints"
                               for n in ("0", "10") if n in rows)
            print(f"{card_path.stem}: colour hints on the bundled "
                  f"{card['base'].get('bundled', 'teacher')}, {card['parameters']:,} parameters "
                  f"of its own{'; ' + scores if scores else ''}")
            continue
        val = card.get("validation", {})
        print(f"{card_path.stem}{' (default)' if card_path.stem == default else ''}: "
              f"{card['arch']}, {card['parameters']:,} parameters; validation PSNR_ab "
              f"{val.get('val_psnr_ab', float('nan')):.2f} dB vs no colour "
              f"{val.get('base_psnr_ab', float('nan')):.2f} dB")
    return 0


# ---------------------------------------------------------------- parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    add_colorizer_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_training_options(p: argparse.ArgumentParser, arch: str) -> None:
    p.add_argument("data", nargs="+", help="folder(s) of colour photos, searched recursively")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoints, logs, weights)")
    p.add_argument("--arch", default=arch, choices=["teacher", "student"])
    p.add_argument("--width", type=float, help="width multiplier of the model (default 1)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 10000; 0 with "
                   "--time-budget: as many as the budget allows)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 16)")
    p.add_argument("--crop", type=int, help="training crop size, multiple of 16 (default 128)")
    p.add_argument("--max-scale", type=float,
                   help="crops are taken after resizing the short side to crop*U(1, this)")
    p.add_argument("--backbone", choices=["none", "efficientnet-lite0"],
                   help="frozen pretrained encoder fused into the model's latent (default none)")
    p.add_argument("--pyramid", action="store_true", default=None,
                   help="teacher with --backbone: also add the encoder's stride-4, 8 and 32 "
                   "features to the decoder")
    p.add_argument("--loss", choices=["mse", "l1", "huber"], help="reconstruction loss")
    p.add_argument("--rebalance", type=_unit_interval, metavar="S",
                   help="rarity weighting of the loss by the training ab histogram, 0 (off) "
                   "to 1 (pure inverse frequency); 0.5 as Zhang et al.")
    p.add_argument("--feature-weight", type=float,
                   help="weight of a perceptual loss: the distance between frozen ImageNet "
                   "features of the predicted and the true RGB (default 0: off)")
    p.add_argument("--old-photo", type=_unit_interval, metavar="SHARE",
                   help="age this share of the training crops' L (grain, blur, fading, "
                   "scratches, JPEG blocking; the target colour stays clean; default 0)")
    p.add_argument("--gan-weight", type=float,
                   help="weight of a conditional PatchGAN term (default 0: no discriminator)")
    p.add_argument("--gan-start", type=int,
                   help="step at which the discriminator joins (pixel-loss pre-training first)")
    p.add_argument("--gan-lr", type=float, help="discriminator Adam learning rate (2e-4)")
    p.add_argument("--init", help="start from these weights (fine-tuning) instead of scratch")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-4)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default 200)")
    p.add_argument("--val-fraction", type=float, help="share of photos held out (default 0.1)")
    p.add_argument("--val-size", type=int, help="validation crop size (default 256)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: each epoch)")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (default 500)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loading processes (default 2)")
    p.add_argument("--data-on-device", action="store_true", default=None,
                   help="hold the training photos on the device and crop them there (for a "
                   "GPU: keep the photos small, e.g. a pool copy with a long side of 256)")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="disable bf16 mixed precision (on CUDA, and CPUs with bf16 units)")
    p.add_argument("--time-budget", type=float,
                   help="seconds before stopping cleanly (with --steps 0: train for this "
                   "long, the learning rate's cosine spread over the time)")
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
    p.add_argument("inputs", nargs="+",
                   help="photos, folders (recursive), glob patterns, or lists of photo paths "
                   "(.txt one per line, .csv or .parquet with a 'path' column); - reads one "
                   "photo from stdin")
    p.add_argument("-o", "--output",
                   help="output folder; for one photo also a file name (new.jpg); - is stdout")
    p.add_argument("--suffix", default="",
                   help="append this to each output's name (e.g. --suffix=-colour); without "
                   "-o, write each result beside its photo")
    p.add_argument("--format", choices=sorted(SUFFIX_FOR_FORMAT),
                   help="output format (default: the input's)")
    p.add_argument("--keep-extension", action="store_true",
                   help="keep the input's extension in the output name (a.jpg -> a.jpg.png), "
                   "so a.jpg and a.png with --format png do not collide")
    p.add_argument("--quality", type=_quality, default=95, help="JPEG/WebP quality, 1-100")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave existing outputs alone")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace existing outputs (default: such a photo fails)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest photo in pixels, checked from its header (default %(default)s)")
    p.add_argument("--hints", metavar="FILE",
                   help="colour hints for every photo given: a JSON list of points "
                   '[{"x": 0.42, "y": 0.31, "colour": "#a33b2c"}] (x, y relative to the photo, '
                   "0-1 from its top-left; colour hex sRGB, only its chroma used; optional "
                   "radius, relative to the long side). Without --hints or --hint, a photo's "
                   "NAME.hints.json beside it is used. Hints need a hint model: the bundled "
                   "'hints' one unless --model names another")
    p.add_argument("--hint", action="append", type=_hint, metavar="X,Y=COLOUR",
                   help="one colour hint, such as 0.42,0.31=#a33b2c (X,Y,RADIUS=COLOUR to give "
                   "its radius); repeat for more; added to --hints")
    _add_model_options(p)
    ray = p.add_argument_group("on a Ray cluster (pip install 'retint[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="colorize with a pool of Ray actors: alone, on a Ray started on this "
                     "machine; with an address (auto, ray://HOST:10001, HOST:6379), on that "
                     "cluster. Writes a manifest; a rerun does only what is not done")
    ray.add_argument("--manifest", metavar="PATH",
                     help=f"the job's manifest (JSON Lines; default OUTPUT/{MANIFEST_NAME})")
    ray.add_argument("--actors", type=positive_int, metavar="N",
                     help="Colorizer actors (default: as many as the cluster's CPUs hold)")
    ray.add_argument("--actor-cpus", type=positive_int, default=1, metavar="N",
                     help="CPUs (and torch threads) per actor (default %(default)s)")
    ray.add_argument("--actor-gpus", type=float, default=0.0, metavar="G",
                     help="GPUs per actor, fractions allowed (default %(default)s)")
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

    from . import bench, evaluate, export, serve, video

    video.add_command(sub)
    export.add_command(sub)
    serve.add_command(sub)
    evaluate.add_command(sub)
    bench.add_command(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that every temporary file
    is removed on the way out (atomic writes clean up on any BaseException)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io import ImageReadError
    from .models.backbone import BackboneError

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread (embedded): leave as is
            signal.signal(sig, _terminate)
    try:
        return args.func(args)
    except (ImageReadError, FileNotFoundError, ValueError, BackboneError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("interrupted: finished outputs are complete; nothing half-written was kept",
              file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"stopped by {stop}: finished outputs are complete; nothing half-written was "
              "kept", file=sys.stderr)
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
