"""``retint export``: a model as one standalone ONNX file, checked against PyTorch, optionally
quantized to INT8.

    retint export teacher -o teacher.onnx
    retint export student -o student-int8.onnx --int8 --calibration TRAINING_PHOTOS/

The graph is :mod:`retint.runtime`'s: opset 18, input ``l`` (N,1,H,W) float32 ``L / 100``,
output ``ab`` (N,2,H,W) float32 ``ab / 128``, with N, H and W dynamic (H, W multiples of 16); a
frozen pretrained encoder is inside the graph, and the model card and the encoder's licence are
in its ``metadata_props``. ``retint colorize --runtime onnx --model FILE.onnx`` (and every other
surface) runs it.

Verification (``--verify``, on by default) runs real photos (scikit-image's astronaut, coffee and
chelsea, as L) through PyTorch and through ONNX Runtime at two sizes, as one batch each: the
Colorizer's 256x256 (shrunk, padded) and a non-square 208x320; it prints the largest |Δab| in
model scale and refuses to write a float32 file that differs by more than
:data:`FP32_TOLERANCE`.

INT8 (``--int8``) is ONNX Runtime's static quantization in the QDQ format: weights int8 per output
channel, activations uint8, ranges from MinMax calibration on ``--calibration-count`` photos of
``--calibration`` converted to L at ``--calibration-size`` as the Colorizer would see them.
Calibrate on the model's TRAINING photos only: held-out (validation) and benchmark photos must
not be used, or the ranges are fitted to the very photos later scores are taken on. The photos
that the model's card lists as held out (``data.val_photos_list``) are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import positive_int, working_size

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

FP32_TOLERANCE = 1e-3  # largest |Δab| (ab / 128) a float32 export may show against PyTorch
INT8_TOLERANCE = 0.05  # largest MEAN |Δab| an INT8 export may show (its max is reported)
VERIFY_PHOTOS = ("astronaut", "coffee", "chelsea")
VERIFY_SHAPES = ((256, 256), (208, 320))  # the Colorizer's padded square, and a non-square one
CALIBRATION_COUNT = 32
TIMING_SIZE, TIMING_RUNS = 256, 10


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as one standalone ONNX file (or INT8)",
                       description="Export a model to ONNX (opset 18; input l (N,1,H,W) = L/100, "
                       "output ab (N,2,H,W) = ab/128; N, H, W dynamic, H and W multiples of 16), "
                       "checked against PyTorch on real photos; optionally static INT8.")
    p.add_argument("model", help="default (the best bundled), teacher, student, or a path to "
                   "weights")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="compare with PyTorch on real photos at two sizes, print max |Δab| "
                   "(default: on)")
    add_int8_options(p)
    p.add_argument("--calibration-count", type=positive_int, default=CALIBRATION_COUNT,
                   metavar="N",
                   help="photos to calibrate on, spread over the folder (default %(default)s)")
    p.add_argument("--calibration-size", type=working_size, default=256, metavar="SIZE",
                   help="working size the calibration photos are shrunk and padded to "
                   "(default %(default)s)")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights, for x86 CPUs without VNNI (saturation otherwise)")
    p.set_defaults(func=cmd_export)


def add_int8_options(p: argparse.ArgumentParser, when: str = "") -> None:
    """``--int8`` and ``--calibration``, the same for ``export`` and ``bench``."""
    p.add_argument("--int8", action="store_true",
                   help=f"{when}static INT8 quantization (QDQ, per-channel int8 weights, uint8 "
                   "activations) calibrated on --calibration")
    p.add_argument("--calibration", metavar="FOLDER",
                   help="the model's TRAINING photos to calibrate INT8 on (never held-out or "
                   "benchmark photos; those the card lists as held out are skipped)")


def check_int8_options(args: argparse.Namespace) -> None:
    if args.int8 != bool(args.calibration):
        raise ValueError("--int8 needs --calibration FOLDER of training photos (and "
                         "--calibration is only for --int8)")


def cmd_export(args: argparse.Namespace) -> int:
    from .runtime import check_exporter, import_onnxruntime

    dst = Path(args.output)
    if dst.suffix.lower() != ".onnx":
        raise ValueError(f"{dst}: the output must be an .onnx file")
    check_int8_options(args)
    check_exporter()
    if args.verify or args.int8:
        import_onnxruntime()
    from .models import load_weights, resolve_model_path

    model, card = load_weights(resolve_model_path(args.model), "cpu")
    photos: list[Path] = []
    if args.int8:
        photos, held_out = calibration_photos(args.calibration, card, args.calibration_count)
        print(f"calibrating on {len(photos)} photo(s) of {args.calibration}"
              + (f" ({held_out} held-out photo(s) of the card skipped)" if held_out else ""))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retint-export-") as tmp:
        fp32 = export_fp32(model, card, Path(tmp) / "fp32.onnx")
        result = fp32
        if args.int8:
            result = quantize_int8(fp32, Path(tmp) / "int8.onnx", photos,
                                   args.calibration_size, reduce_range=args.reduce_range)
        if args.verify:
            report = verify(model, result)
            print(format_report(report, int8=args.int8))
            worst = max(r["mean" if args.int8 else "max"] for r in report.values())
            limit = INT8_TOLERANCE if args.int8 else FP32_TOLERANCE
            if worst > limit:
                print(f"error: the ONNX model differs from PyTorch by {worst:.3g} (limit "
                      f"{limit:g}); {dst} not written", file=sys.stderr)
                return 1
        if args.int8:
            print(format_timing(time_sessions({"fp32": fp32, "int8": result})))
        from .io import atomic_path

        with atomic_path(dst, suffix=".onnx") as out:
            out.write_bytes(result.read_bytes())
    size = dst.stat().st_size / 1e6
    print(f"wrote {dst} ({size:.1f} MB, {'INT8' if args.int8 else 'float32'}, opset "
          f"{_opset()}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _opset() -> int:
    from .runtime import OPSET

    return OPSET


def export_fp32(model: nn.Module, card: dict[str, Any], dst: Path) -> Path:
    from .runtime import export_onnx

    return export_onnx(model, card, dst)


# ---------------------------------------------------------------- verification


def photo_batch(shape: tuple[int, int], names: Sequence[str] = VERIFY_PHOTOS) -> np.ndarray:
    """Real photos as the model's input (N,1,H,W): a square shape as the Colorizer makes it
    (shrunk, aspect kept, padded by replication), any other shape by a plain resize."""
    import skimage.data
    import torch

    from .color import lightness_from_srgb8

    batch = []
    for name in names:
        rgb = getattr(skimage.data, name)()[:, :, :3]
        l = torch.from_numpy(lightness_from_srgb8(rgb))[None, None]
        batch.append(model_input(l, shape))
    return torch.cat(batch).numpy()


def model_input(l: Any, shape: tuple[int, int]) -> Any:
    """(1,1,h,w) L -> (1,1,H,W): for a square ``shape`` the Colorizer's shrink and pad, for
    another a plain antialiased resize."""
    import torch.nn.functional as F

    from .inference import working_shape

    height, width = shape
    if height != width:
        return F.interpolate(l, size=shape, mode="bilinear", antialias=True, align_corners=False)
    h, w = working_shape(*l.shape[-2:], height)
    small = F.interpolate(l, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return F.pad(small, (0, width - w, 0, height - h), mode="replicate")


def verify(model: nn.Module, onnx_path: Path,
           shapes: Sequence[tuple[int, int]] = VERIFY_SHAPES) -> dict[str, dict[str, float]]:
    """|Δab| (model scale) between PyTorch and ONNX Runtime on :func:`photo_batch` at each
    shape: ``{"256x256": {"max": ..., "mean": ..., "batch": 3}, ...}``."""
    import numpy as np
    import torch

    from .runtime import OnnxModel

    runner = OnnxModel(onnx_path)
    report = {}
    for shape in shapes:
        l = photo_batch(shape)
        with torch.no_grad():
            want = model(torch.from_numpy(l)).numpy()
        diff = np.abs(runner.run(l) - want)
        report[f"{shape[0]}x{shape[1]}"] = {"max": float(diff.max()), "mean": float(diff.mean()),
                                            "batch": len(l)}
    return report


def format_report(report: dict[str, dict[str, float]], int8: bool = False) -> str:
    what = "INT8 ONNX vs float32 PyTorch" if int8 else "ONNX vs PyTorch"
    parts = [f"{shape} (batch {r['batch']}): max {r['max']:.2e}, mean {r['mean']:.2e}"
             for shape, r in report.items()]
    return f"verified, {what}, |Δab| in ab/128: " + "; ".join(parts)


def time_sessions(paths: dict[str, Path], size: int = TIMING_SIZE,
                  runs: int = TIMING_RUNS) -> dict[str, float]:
    """Median milliseconds of one (1,1,size,size) run of each ONNX file on the CPU."""
    import numpy as np

    from .runtime import OnnxModel

    x = photo_batch((size, size), VERIFY_PHOTOS[:1])
    out = {}
    for name, path in paths.items():
        runner = OnnxModel(path)
        runner.run(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            runner.run(x)
            times.append(time.perf_counter() - t)
        out[name] = float(np.median(times) * 1000)
    return out


def format_timing(ms: dict[str, float], size: int = TIMING_SIZE) -> str:
    line = ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
    speedup = (f" (INT8 {ms['fp32'] / ms['int8']:.2f}x)" if {"fp32", "int8"} <= set(ms)
               else "")
    return f"ONNX Runtime CPU, {size}x{size} batch 1, median of {TIMING_RUNS}: {line}{speedup}"


# ---------------------------------------------------------------- INT8


def held_out_names(card: dict[str, Any]) -> set[str]:
    """The photos the card lists as held out, as ``folder/name`` (the card's own form)."""
    data = card.get("data") or {}
    return {str(p).replace("\\", "/") for p in data.get("val_photos_list") or []}


def calibration_photos(folder: str | Path, card: dict[str, Any],
                       count: int = CALIBRATION_COUNT) -> tuple[list[Path], int]:
    """Up to ``count`` photos spread evenly over ``folder`` (sorted, recursive), leaving out
    those the card lists as held out; and how many were left out so."""
    from .io import find_images

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of calibration photos")
    held = held_out_names(card)
    found = find_images([folder])
    usable = [p for p in found
              if not any("/".join(p.parts[-k:]) in held for k in (1, 2, 3))]
    if not usable:
        raise ValueError(f"{folder}: no usable calibration photos (need training photos)")
    step = max(1, len(usable) / count)
    picked = [usable[int(i * step)] for i in range(min(count, len(usable)))]
    return picked, len(found) - len(usable)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader: one photo as L at the working size per call."""

    def __init__(self, photos: Sequence[Path], size: int) -> None:
        self.photos, self.size = list(photos), size
        self._iter = self._inputs()

    def _inputs(self) -> Iterator[dict[str, np.ndarray]]:
        import torch

        from .color import lightness_from_srgb8
        from .io import ImageReadError, read_rgb, to_uint8
        from .runtime import INPUT

        for path in self.photos:
            try:
                rgb = to_uint8(read_rgb(path))
            except ImageReadError as err:
                print(f"  skipped: {err}", file=sys.stderr)
                continue
            l = torch.from_numpy(lightness_from_srgb8(rgb))[None, None]
            yield {INPUT: model_input(l, (self.size, self.size)).numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._inputs()


def quantize_int8(fp32: Path, dst: Path, photos: Sequence[Path], size: int = 256, *,
                  reduce_range: bool = False) -> Path:
    """Static INT8 (QDQ, per-channel weights) of the float32 file ``fp32`` into ``dst``, its
    metadata kept and the quantization recorded in it."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from .runtime import QUANTIZATION_KEY, _quiet_exporter

    class Reader(_Calibration, CalibrationDataReader):
        pass

    reader = Reader(photos, size)
    # the graph is already optimised by the exporter (BatchNorm folded, constants folded), so
    # the quantizer's advice to pre-process it first (root logger) is silenced with the rest
    with _quiet_exporter("root"):
        quantize_static(str(fp32), str(dst), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    source = onnx.load(str(fp32), load_external_data=False)
    model = onnx.load(str(dst))
    props = {p.key: p.value for p in source.metadata_props}
    props[QUANTIZATION_KEY] = json.dumps({
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
        "weights": "int8, per channel" + (", 7-bit range" if reduce_range else ""),
        "activations": "uint8", "calibration": "MinMax",
        "calibration_photos": len(photos), "calibration_size": size,
        "calibration_rule": "training photos only (held-out and benchmark photos excluded)",
    })
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = source.producer_name, source.producer_version
    model.doc_string = source.doc_string
    onnx.save(model, str(dst))
    return dst
