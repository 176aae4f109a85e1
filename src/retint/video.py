"""``retint video``: colorize a film with PyAV, keeping its sound, timing and orientation.

Frames stream through in batches (memory is flat whatever the length) and take the photo path:
``Colorizer.lightness`` -> ``predict_ab`` -> ``compose``, i.e. colour predicted at the working
size and merged with each frame's full-resolution lightness. Between ``predict_ab`` and
``compose`` a :class:`Stabilizer` smooths the colour along time, because a per-frame model
answers film grain and small changes elsewhere in the picture with colour that flickers.

Timing is copied, not re-derived: each output frame gets its input frame's pts in the input's
time base, so variable frame rate, the frame rate and the duration survive. Audio packets are
remuxed untouched (no re-encode). The display matrix (rotation) is carried over, and frames are
colorized upright (rotated for the model, rotated back exactly) so the model sees what people
see. The output is written to a hidden temp file beside the target and renamed at the end;
any exception, Ctrl-C included, removes it.

Colour hints for a time range (``--hints film.hints.json``, :func:`retint.hints.parse_video_hints`)
go to the hint model with every frame whose timestamp falls in the range; the points stay where
they are in the picture (they do not follow a moving object). The stabiliser then smooths the
hinted colour exactly as the automatic one, so a hint does not flicker from frame to frame and
fades in and out over a few frames at the ends of its range instead of switching at once.
For frames outside every range the model predicts exactly its teacher's automatic colour. A film
with hints is kept inside the sRGB gamut on every frame (:func:`retint.hints.keep_in_gamut`), so
that no frame's lightness changes, the fading ones included.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import add_colorizer_options, colorizer_from_args

if TYPE_CHECKING:  # heavy imports happen where used: `retint --help` stays instant
    from torch import Tensor

    from .hints import HintRange
    from .inference import Colorizer

#: Preferred H.264 encoders, best first; mpeg4 is the last resort (in every FFmpeg build).
H264_ENCODERS = ("libx264", "h264_nvenc", "h264_qsv", "h264_amf", "h264_v4l2m2m", "h264")
CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"}
GATE_SIZE = 256  # long side at which motion is measured (noise averages out; cheap)
STILL_FORMATS = {"image2", "webp", "tiff", "bmp"}  # FFmpeg demuxers of single pictures


# ---------------------------------------------------------------- temporal stabilisation


class Stabilizer:
    """Per-pixel exponential smoothing of ab along time, gated by motion, reset at cuts.

    ``ab_t = ab_{t-1} + alpha * (pred_t - ab_{t-1})`` with ``alpha = 1 - strength * (1 - m)``:
    where lightness is unchanged (``m = 0``) the colour is averaged over ~``1 / (1 - strength)``
    frames, which is what removes flicker; where lightness changed by ``motion`` (L/100 units,
    after a blur at a 256-px scale that averages grain away) or more, ``m = 1`` and the new
    prediction is taken as is, so a moving object carries its own colour instead of leaving a
    trail. At a scene cut (:func:`retint.metrics.scene_cut`) the state is dropped.
    ``motion=inf`` gives plain smoothing (for comparison), ``strength=0`` none at all.
    """

    def __init__(self, strength: float = 0.8, motion: float = 0.04) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"stabilisation strength must be in [0, 1), got {strength}")
        self.strength, self.motion = strength, motion
        self.cuts = 0
        self._ab: Tensor | None = None
        self._small: Tensor | None = None

    def reset(self) -> None:
        self._ab = self._small = None

    def __call__(self, l: Tensor, ab: Tensor) -> Tensor:
        """Smoothed ab (2,H,W) for the next frame's L (1,H,W, in [0,1]) and predicted ab."""
        import torch.nn.functional as F

        from .color import L_SCALE
        from .metrics import scene_cut

        h, w = l.shape[-2:]
        k = max(1, round(max(h, w) / GATE_SIZE))
        small = F.avg_pool2d(l[None].float(), k, ceil_mode=True)
        small = F.avg_pool2d(small, 3, stride=1, padding=1, count_include_pad=False)
        prev, self._small = self._small, small
        if prev is None or self._ab is None or self._ab.shape != ab.shape:
            self._ab = ab.clone()
            return self._ab
        if scene_cut(prev[0, 0] * L_SCALE, small[0, 0] * L_SCALE):
            self.cuts += 1
            self._ab = ab.clone()
            return self._ab
        moving = ((small - prev).abs() / self.motion).clamp(0.0, 1.0)
        alpha = 1.0 - self.strength * (1.0 - moving)
        alpha = F.interpolate(alpha, size=(h, w), mode="bilinear", align_corners=False)[0]
        self._ab = self._ab.lerp(ab, alpha.to(ab.device))  # new tensor: callers may keep it
        return self._ab


# ---------------------------------------------------------------- the library function


@dataclass
class VideoReport:
    """What a run did: frames, speed, peak memory and, if measured, flicker without/with."""
    frames: int = 0
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""
    audio_streams: int = 0
    rotation: int = 0
    cuts: int = 0
    peak_rss_mb: float = 0.0
    flicker: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else math.nan


def pick_encoder(codec: str | None = None) -> tuple[str, str | None]:
    """The encoder to use and a note if it is not what was asked for (or not H.264)."""
    import av

    def works(name: str) -> bool:
        try:
            av.codec.Codec(name, "w")
            return True
        except Exception:  # noqa: BLE001 - unknown and unusable encoders both mean "no"
            return False

    if codec:
        if not works(codec):
            raise ValueError(f"video encoder {codec!r} is not in this PyAV/FFmpeg build")
        return codec, None
    for name in H264_ENCODERS:
        if works(name):
            return name, None if name == "libx264" else f"libx264 missing; using {name}"
    return "mpeg4", "no H.264 encoder in this PyAV/FFmpeg build; writing MPEG-4 part 2 instead"


def colorize_video(src: str | Path, dst: str | Path, colorizer: Colorizer, *,
                   codec: str | None = None, crf: int = 18,
                   start: float | None = None, end: float | None = None,
                   stabilize: bool | Stabilizer = True, measure_flicker: bool = False,
                   progress: bool = False,
                   hints: list[HintRange] | None = None) -> VideoReport:
    """Colorize the first video stream of ``src`` into ``dst`` (atomic; never onto ``src``).

    ``stabilize``: True for the default :class:`Stabilizer`, False for raw per-frame colour, or
    an instance. ``start``/``end`` in seconds select a segment (timestamps then start at 0).
    ``measure_flicker`` also scores the predicted colour with and without stabilisation
    (:class:`retint.metrics.FlickerMeter` at a 256-px scale) into ``report.flicker``.
    ``hints``: colour hints for time ranges of the input (:func:`retint.hints.read_video_hints`),
    for a hint model.
    Raises ``ValueError`` with a one-line message for unreadable input or unusable options.
    """
    import av

    from .io import atomic_path

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists()
                                          and os.path.samefile(src, dst)):
        raise ValueError(f"{dst}: refusing to overwrite the input")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"--end ({end}) must be after --start ({start})")
    stabilizer = (stabilize if isinstance(stabilize, Stabilizer)
                  else Stabilizer() if stabilize else None)
    if hints:
        from .hints import check_hint_model

        check_hint_model(colorizer)
    encoder, note = pick_encoder(codec)
    if note:
        print(f"note: {note}", file=sys.stderr)
    matrix, rotation = _probe(src)
    report = VideoReport(codec=encoder, rotation=rotation)
    t0 = time.perf_counter()
    with _opened(src) as inp, atomic_path(dst, suffix=f".part{dst.suffix}") as tmp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ains = list(inp.streams.audio)
        with av.open(str(tmp), "w") as out:
            vout = _add_video(out, vin, encoder, crf, matrix)
            aouts = {}
            for a in ains:
                if a.codec_context.name not in out.supported_codecs:
                    raise ValueError(f"{src}: audio codec {a.codec_context.name} cannot be "
                                     f"copied into {dst.suffix or 'this container'}; "
                                     "choose .mkv or .mov for the output")
                aouts[a.index] = out.add_stream_from_template(a)
            report.width, report.height = vout.width, vout.height
            report.audio_streams = len(aouts)
            job = _Job(colorizer, stabilizer, vout, out, rotation, measure_flicker, hints)
            _run(inp, vin, ains, aouts, job, start, end, progress, report)
    report.seconds = time.perf_counter() - t0
    report.cuts = job.measurer.cuts if job.measurer else 0
    report.flicker = job.flicker()
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


# ---------------------------------------------------------------- internals


class _Job:
    """One batch at a time: colour, stabilise, compose, encode, (optionally) measure flicker."""

    def __init__(self, colorizer: Colorizer, stabilizer: Stabilizer | None, vout: Any,
                 out: Any, rotation: int, measure: bool,
                 hints: list[HintRange] | None = None) -> None:
        from .metrics import FlickerMeter

        self.colorizer, self.stabilizer, self.vout, self.out = colorizer, stabilizer, vout, out
        self.hints = hints or []
        self.turns = (rotation // 90) % 4 if rotation % 90 == 0 else 0
        self.meters = {"off": FlickerMeter(), "on": FlickerMeter()} if measure else {}
        self.measurer = Stabilizer() if measure and stabilizer is None else stabilizer

    def __call__(self, frames: list[Any], pts_offset: int) -> None:
        import av
        import numpy as np

        c = self.colorizer
        images = [np.rot90(f.to_ndarray(format="rgb24"), self.turns) for f in frames]
        ls = [c.lightness(img) for img in images]
        points = self._points(frames)
        abs_ = c.predict_ab(ls) if not any(points) else self._hinted(ls, points)
        for frame, l, ab in zip(frames, ls, abs_, strict=True):
            smooth = self.stabilizer(l, ab) if self.stabilizer else ab
            if self.meters:
                self._measure(l, ab, smooth)
            if self.hints:  # every frame: the smoothed colour carries a hint past its range
                from .hints import keep_in_gamut

                smooth = keep_in_gamut(l, smooth)
            rgb = np.ascontiguousarray(np.rot90(c.compose(l, smooth, np.uint8), -self.turns))
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts, new.time_base = frame.pts - pts_offset, frame.time_base
            self.out.mux(self.vout.encode(new))

    def _points(self, frames: list[Any]) -> list[list]:
        """Each frame's hint points, by its timestamp in the input (seconds)."""
        if not self.hints:
            return [[] for _ in frames]
        from .hints import points_at

        return [points_at(self.hints, float(f.pts * f.time_base)) for f in frames]

    def _hinted(self, ls: list[Tensor], points: list[list]) -> list[Tensor]:
        """Hints are placed on the film as people see it, which is the upright frame that the
        model is given: x, y need no turning."""
        from .hints import predict_ab_hinted

        return predict_ab_hinted(self.colorizer, ls, points)

    def _measure(self, l: Tensor, raw: Tensor, smooth: Tensor) -> None:
        """Score raw and smoothed colour at a 256-px scale (flicker is a low-frequency thing)."""
        import torch
        import torch.nn.functional as F

        from .color import AB_SCALE, L_SCALE

        if self.stabilizer is None:  # output is raw; smooth on the side for the comparison
            smooth = self.measurer(l, raw)
        k = max(1, round(max(l.shape[-2:]) / GATE_SIZE))
        for key, ab in (("off", raw), ("on", smooth)):
            lab = torch.cat((l * L_SCALE, ab.to(l.device) * AB_SCALE))
            self.meters[key].update(F.avg_pool2d(lab[None], k, ceil_mode=True)[0])

    def flicker(self) -> dict[str, float]:
        return {k: m.value for k, m in self.meters.items()}


def _run(inp: Any, vin: Any, ains: list[Any], aouts: dict[int, Any], job: _Job,
         start: float | None, end: float | None, progress: bool, report: VideoReport) -> None:
    """Demux once; remux audio packets in the segment, decode, batch and colorize video."""
    from tqdm import tqdm

    tb = vin.time_base
    off = start or 0.0
    if start:
        inp.seek(int(start / tb), stream=vin)  # to the keyframe before; earlier frames dropped
    total = _expected_frames(inp, vin, start, end)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True)
    batch: list[Any] = []
    video_done = False
    for packet in inp.demux(vin, *ains):
        if packet.stream.index in aouts:
            if packet.dts is None or packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            if start and t < start:  # without --start, keep all (e.g. AAC priming at pts < 0)
                continue
            if end is not None and t >= end:
                if video_done:
                    break
                continue
            shift = round(off / packet.time_base)
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = aouts[packet.stream.index]
            job.out.mux(packet)
            continue
        if video_done:
            continue
        for frame in packet.decode():
            if frame.pts is None:
                continue
            t = float(frame.pts * tb)
            if t < off:
                continue
            if end is not None and t >= end:
                video_done = True
                break
            batch.append(frame)
            if len(batch) >= job.colorizer.batch_size:
                job(batch, round(off / tb))
                report.frames += len(batch)
                bar.update(len(batch))
                batch = []
    if batch:
        job(batch, round(off / tb))
        report.frames += len(batch)
        bar.update(len(batch))
    job.out.mux(job.vout.encode(None))
    bar.total = report.frames  # the container's estimate can be a frame off: end at the count
    bar.refresh()
    bar.close()
    if report.frames == 0:
        raise ValueError("no video frames in the requested range")


def _expected_frames(inp: Any, vin: Any, start: float | None, end: float | None) -> int | None:
    rate = vin.average_rate or vin.guessed_rate
    duration = (float(vin.duration * vin.time_base) if vin.duration
                else inp.duration / 1e6 if inp.duration else None)
    if not (start or end) and vin.frames:
        return vin.frames
    if duration is None or not rate:
        return None
    return max(0, round(((min(end, duration) if end else duration) - (start or 0)) * rate))


def _add_video(out: Any, vin: Any, encoder: str, crf: int, matrix: list[int] | None) -> Any:
    """An output stream with the input's size, rate and time base (so pts copy over as is)."""
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    options = {"crf": str(crf)} if encoder in CRF_CODECS else {}
    if encoder.startswith("libvpx"):
        options["b"] = "0"  # constant quality, not a bitrate target
    vout = out.add_stream(encoder, rate=rate, options=options)
    vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
    formats = [f.name for f in vout.codec_context.codec.video_formats or ()]
    odd = vout.width % 2 or vout.height % 2  # 4:2:0 needs even sides
    wanted = "yuv444p" if odd else "yuv420p"  # 4:2:0 plays everywhere
    vout.pix_fmt = wanted if wanted in formats or not formats else formats[0]
    vout.time_base = vin.time_base
    vout.codec_context.time_base = vin.time_base
    if matrix:
        vout.set_display_matrix(matrix)
    return vout


def video_output(src: Path, output: str | None) -> Path:
    """``-o``: a file, or an existing folder (then ``FOLDER/INPUT-NAME.mp4``); by default
    ``INPUT.retint.mp4`` beside the input."""
    if output is None:
        return src.with_name(src.stem + ".retint.mp4")
    out = Path(output)
    return out / f"{src.stem}.mp4" if out.is_dir() else out


def _probe(src: Path) -> tuple[list[int] | None, int]:
    """The first frame's display matrix (9 ints) and rotation; also proves frames decode.
    A still image (which FFmpeg would read as a one-frame film) is refused."""
    from .io import IMAGE_SUFFIXES

    if src.suffix.lower() in IMAGE_SUFFIXES:
        raise ValueError(f"{src}: a still image, not a film (use retint colorize)")
    with _opened(src) as inp:
        if inp.format.name in STILL_FORMATS or inp.format.name.endswith("_pipe"):
            raise ValueError(f"{src}: a still image, not a film (use retint colorize)")
        for frame in inp.decode(inp.streams.video[0]):
            for side in frame.side_data:
                if "DISPLAYMATRIX" in str(side.type):
                    return list(struct.unpack("<9i", bytes(side))), int(frame.rotation)
            return None, 0
    raise ValueError(f"{src}: the video stream has no decodable frames")


@contextlib.contextmanager
def _opened(src: Path) -> Iterator[Any]:
    """``av.open`` for reading with every failure (and a missing video stream) as one line."""
    import av

    try:
        inp = av.open(str(src))
    except FileNotFoundError:
        raise ValueError(f"{src}: no such file") from None
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"{src}: not a readable video ({_why(err)})") from None
    with inp:
        if not inp.streams.video:
            raise ValueError(f"{src}: no video stream in this file")
        try:
            yield inp
        except av.error.FFmpegError as err:
            raise ValueError(f"{src}: cannot decode or write video ({_why(err)})") from None


def _why(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


# ---------------------------------------------------------------- command line


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``retint video`` on the CLI's subparsers."""
    p = sub.add_parser("video", help="colorize a film: sound, timing and rotation kept",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="video file (mp4, mov, mkv, avi, webm, ...)")
    p.add_argument("-o", "--output", help="output file (default: INPUT.retint.mp4)")
    p.add_argument("--codec", help="video encoder (default: libx264, else the best H.264 one)")
    p.add_argument("--crf", type=int, default=18, help="constant quality, lower is better (18)")
    p.add_argument("--start", type=float, help="start of the segment, seconds")
    p.add_argument("--end", type=float, help="end of the segment, seconds")
    p.add_argument("--stabilize", action=argparse.BooleanOptionalAction, default=True,
                   help="smooth the colour over time where the picture is still (default on)")
    p.add_argument("--strength", type=float, default=0.8,
                   help="stabilisation, 0-1: still pixels average ~1/(1-s) frames (0.8)")
    p.add_argument("--hints", metavar="FILE",
                   help="colour hints for time ranges: a JSON list of {\"start\": s, \"end\": s, "
                   "\"points\": [{\"x\", \"y\", \"colour\"}]} (seconds of the input; a plain "
                   "list of points is the whole film); they need a hint model, the bundled "
                   "'hints' one unless --model names another")
    p.add_argument("--report", action="store_true",
                   help="also print flicker with stabilisation off vs on, fps and peak memory")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="do nothing if the output exists")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace an existing output (default: refuse)")
    add_colorizer_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_video)


def cmd_video(args: argparse.Namespace) -> int:
    """Run ``retint video``; a bad input or option prints one ``error:`` line and returns 2."""
    from .batch import UsageError, check_writable, progress_wanted

    src = Path(args.input)
    try:
        dst = video_output(src, args.output)
        if dst.exists() and args.skip_existing:
            print(f"skipped: {dst} exists")
            return 0
        if dst.exists() and not args.overwrite:
            raise UsageError(f"{dst} exists (use --overwrite or --skip-existing)")
        check_writable([dst.parent])
        stabilize = Stabilizer(args.strength) if args.stabilize else False
        hints = None
        if args.hints:  # a bad hints file or no hint model fails before the model loads
            from .hints import hint_model_for, read_video_hints

            hints = read_video_hints(args.hints)
            if hints:
                args.model = hint_model_for(args.model)
        _probe(src)  # a bad input fails before the model loads
        colorizer = colorizer_from_args(args)
        report = colorize_video(src, dst, colorizer, codec=args.codec, crf=args.crf,
                                start=args.start, end=args.end, stabilize=stabilize,
                                measure_flicker=args.report,
                                progress=progress_wanted(args.quiet), hints=hints)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"colorized {report.frames} frames ({report.width}x{report.height}) into {dst} with "
          f"{colorizer.name}, {report.codec}, in {report.seconds:.1f} s ({report.fps:.2f} fps); "
          f"audio streams copied: {report.audio_streams}")
    if args.report:
        off, on = report.flicker.get("off", math.nan), report.flicker.get("on", math.nan)
        drop = 100 * (1 - on / off) if off else math.nan
        print(f"flicker (mean |delta ab| on still pixels, LAB units): off {off:.3g}, "
              f"on {on:.3g} ({drop:.0f}% less); scene cuts {report.cuts}; "
              f"peak memory {report.peak_rss_mb:.0f} MB")
    return 0
