"""``retint bench``: how big, how fast and where the time goes, for the teacher and the student.

Figures: parameters and MACs (:mod:`.macs`); latency/throughput at the working sizes and peak
memory (:mod:`.timing`); a 12 MP photo (:mod:`.photo`) end to end, stage by stage, against the
original project's pipeline (:mod:`.reference`) run in the same process; and achieved GFLOP/s
as a fraction of this machine's measured matmul and conv peaks, so a number can be judged without
knowing the hardware (all gathered by :mod:`.measure`, as :mod:`.settings` says). ``--video``
adds a clip's fps and flicker (:mod:`.flicker`). ``--json`` keeps it all; ``--compare`` diffs
two runs (:mod:`.report`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..export import add_int8_options, check_int8_options
from ..options import add_colorizer_options, positive_int, working_size
from .settings import Settings

DEFAULT_MODELS = ("teacher", "student")

_EXPORTS = {"count_macs": "macs", "seed_quantize": "reference", "reference_stages": "reference",
            "make_photo": "photo", "ours_stages": "photo", "measure_peaks": "timing",
            "time_stages": "timing", "run_bench": "measure",
            "video_flicker": "flicker", "format_report": "report", "format_compare": "report"}

__all__ = ["Settings", "add_command", "cmd_bench", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """The measuring modules load lazily: ``retint --help`` must not import torch."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _read(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def cmd_bench(args: argparse.Namespace) -> int:
    from .report import format_compare, format_report

    if args.compare and len(args.compare) > 2:
        raise ValueError("--compare takes OLD.json, or OLD.json NEW.json")
    if args.int8 and (args.runtime != "onnx" or not args.calibration):
        raise ValueError("--int8 measures ONNX Runtime on a quantized model: give it with "
                         "--runtime onnx and --calibration FOLDER of training photos")
    check_int8_options(args)
    if args.compare and len(args.compare) == 2:  # two saved runs: compare, measure nothing
        print(format_compare(*map(_read, args.compare)))
        return 0
    from ..models import unique_ids
    from ..options import colorizers_from_args
    from .flicker import video_flicker
    from .measure import run_bench

    args.model = args.model or list(DEFAULT_MODELS)
    runtime, args.runtime = args.runtime, "torch"
    colorizers = colorizers_from_args(args)
    labelled = dict(zip(unique_ids([c.name for c in colorizers]), colorizers, strict=True))
    settings = Settings(sizes=tuple(args.sizes), batch=args.batch_size, runs=args.runs,
                        warmup=args.warmup, megapixels=args.megapixels, working_size=args.size,
                        reference=not args.skip_reference)
    with tempfile.TemporaryDirectory(prefix="retint-bench-onnx-") as tmp:
        networks: dict[str, Any] = {}
        if runtime == "onnx":  # side by side with torch, in this one run
            labelled, networks = _with_onnx(labelled, args, Path(tmp))
        results = run_bench(labelled, settings.quick() if args.quick else settings, _progress,
                            networks)
    if args.video:
        results["video"] = video_flicker(args.video, labelled)
    print(format_report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nsaved {args.json}")
    if args.compare:
        print("\n" + format_compare(_read(args.compare[0]), results))
    return 0


def _with_onnx(labelled: dict[str, Any], args: argparse.Namespace, tmp: Path
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each torch model followed by its ONNX twin (and, with ``--int8``, its INT8 twin,
    quantized here on ``--calibration``); and the torch network behind each twin."""
    from ..export import calibration_photos, export_fp32, quantize_int8
    from ..inference import Colorizer
    from ..models import load_weights

    out, networks = {}, {}
    options = dict(device="cpu", working_size=args.size, batch_size=args.batch_size,
                   saturation=args.saturation, runtime="onnx")
    for label, torch_colorizer in labelled.items():
        out[label] = torch_colorizer
        _progress(f"{label}: ONNX export")
        out[f"{label} onnx"] = Colorizer(torch_colorizer.model_path, **options)
        networks[f"{label} onnx"] = torch_colorizer.model
        if args.int8:
            model, card = load_weights(torch_colorizer.model_path, "cpu")
            photos, _ = calibration_photos(args.calibration, card)
            _progress(f"{label}: INT8 quantization on {len(photos)} photo(s)")
            fp32 = export_fp32(model, card, tmp / f"{len(out)}-fp32.onnx")
            int8 = quantize_int8(fp32, tmp / f"{len(out)}-int8.onnx", photos, args.size)
            out[f"{label} int8"] = Colorizer(int8, **options)
            networks[f"{label} int8"] = torch_colorizer.model
    return out, networks


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure size, speed and memory of the models",
                       description="Without --model, bench measures the bundled teacher and "
                       "student. Latency is timed at batch 1 and at --batch-size (e.g. 8); "
                       "--size is the working size of the full-resolution test.")
    add_colorizer_options(p, many_models=True)
    p.add_argument("--sizes", type=working_size, nargs="+", default=list(Settings.sizes),
                   help="working sizes for latency (multiples of 16)")
    p.add_argument("--runs", type=positive_int, default=Settings.runs,
                   help="timed runs; the median is reported")
    p.add_argument("--warmup", type=int, default=Settings.warmup,
                   help="untimed runs before them")
    p.add_argument("--megapixels", type=float, default=Settings.megapixels,
                   help="size of the full-resolution test photo")
    p.add_argument("--skip-reference", action="store_true",
                   help="skip the original project's pipeline")
    p.add_argument("--video", metavar="CLIP", nargs="+",
                   help="also colorize these clips: fps, and flicker with stabilisation off/on")
    p.add_argument("--json", metavar="PATH", help="save settings, machine and every figure")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="OLD.json: compare this run with it; OLD.json NEW.json: compare two "
                        "saved runs without measuring")
    add_int8_options(p, "with --runtime onnx, also each model's ONNX twin in ")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one run: checks that everything works, in seconds")
    p.set_defaults(func=cmd_bench)
