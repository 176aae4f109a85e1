"""The Colorizer's options, declared once for every surface that builds one.

``colorize``, ``demo``, ``video``, ``serve``, ``evaluate`` and ``bench`` all call
:func:`add_colorizer_options` and build their Colorizers with :func:`colorizers_from_args`, so a
flag has one name, one meaning, one default and one check everywhere. Nothing here imports
torch: ``retint --help`` stays instant.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inference import Colorizer

DEFAULT_SIZE = 256
DEFAULT_BATCH_SIZE = 4
MAX_SATURATION = 4.0
RUNTIMES = ("torch", "onnx")  # onnx: the model exported, run by ONNX Runtime (retint[onnx])
#: How working-size colour reaches full resolution: bilinear, or a guided filter that follows
#: the full-resolution L's edges (slightly better at edges, slower: docs/results.md).
UPSAMPLERS = ("bilinear", "guided")


def working_size(text: str) -> int:
    """``--size``: a positive multiple of the models' size multiple (16)."""
    from .models import check_size

    try:
        return check_size("working size", int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def saturation(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_SATURATION:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SATURATION:g}, got {text}")
    return value


def add_colorizer_options(p: argparse.ArgumentParser, *, many_models: bool = False) -> None:
    """``--model`` (repeatable with ``many_models``), ``--device``, ``--size``, ``--batch-size``,
    ``--saturation``, ``--runtime`` and ``--upsample``."""
    what = "default (the best bundled), teacher, student, or a path to weights"
    if many_models:
        p.add_argument("--model", action="append",
                       help=f"{what}; repeat for several (default: default)")
    else:
        p.add_argument("--model", default="default", help=what)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--size", type=working_size, default=DEFAULT_SIZE,
                   help="working size: the model sees the photo shrunk to this long side, a "
                   "multiple of 16 (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help="photos or frames per model batch (default %(default)s)")
    p.add_argument("--saturation", type=saturation, default=1.0,
                   help="scale the predicted colour (1 = as predicted; kept inside sRGB)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="torch, or onnx: the model exported once (cached) and run by ONNX "
                   "Runtime on the CPU; --model may then be an .onnx file (default %(default)s)")
    p.add_argument("--upsample", choices=UPSAMPLERS, default="bilinear",
                   help="how colour reaches full resolution: bilinear, or guided (edge-aware, "
                   "follows the photo's own edges; a little slower) (default %(default)s)")


def model_names(args: argparse.Namespace) -> list[str]:
    models = args.model
    return list(models) if isinstance(models, list) else [models or "default"]


def colorizers_from_args(args: argparse.Namespace) -> list[Colorizer]:
    """One Colorizer per ``--model``, from the options declared above."""
    from .inference import Colorizer

    return [Colorizer(name, device=args.device, working_size=args.size,
                      batch_size=args.batch_size, saturation=args.saturation,
                      runtime=getattr(args, "runtime", "torch"),
                      upsample=getattr(args, "upsample", "bilinear"))
            for name in model_names(args)]


def colorizer_from_args(args: argparse.Namespace) -> Colorizer:
    return colorizers_from_args(args)[0]
