"""``retint video``: colorize a film with PyAV, keeping its sound, timing and orientation.

Frames stream through four threads with bounded queues between them (memory is flat whatever
the length), and take the photo path: ``Colorizer.lightness`` -> ``predict_ab`` -> ``compose``,
i.e. colour predicted at the working size and merged with each frame's full-resolution
lightness. A black-and-white frame is read from its Y plane alone (:func:`frame_lightness`).
Between ``predict_ab`` and ``compose`` a :class:`Stabilizer` smooths the colour along time, at
the working size, because a per-frame model answers film grain and small changes elsewhere in
the picture with colour that flickers.

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
import functools
import math
import os
import queue
import resource
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import add_colorizer_options, colorizer_from_args

if TYPE_CHECKING:  # heavy imports happen where used: `retint --help` stays instant
    import numpy as np
    from torch import Tensor

    from .hints import HintRange
    from .inference import Colorizer, Lightness

#: Preferred H.264 encoders, best first; mpeg4 is the last resort (in every FFmpeg build).
H264_ENCODERS = ("libx264", "h264_nvenc", "h264_qsv", "h264_amf", "h264_v4l2m2m", "h264")
CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"}
#: Encoders that take x264's speed presets. "veryfast" at CRF 18 writes files ~3 % larger than
#: "medium" in ~60 % of the time (docs/results.md, video): encoding is a large share of a frame.
PRESET_CODECS = {"libx264", "libx265"}
DEFAULT_PRESET = "veryfast"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
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
        """Smoothed ab for the next frame's L (1,H,W, in [0,1]) and its predicted ab (2,h,w),
        at the working size or full size: motion is measured on L and brought to ab's size."""
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
        alpha = F.interpolate(alpha, size=tuple(ab.shape[-2:]), mode="bilinear",
                              align_corners=False)[0]
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
                   codec: str | None = None, crf: int = 18, preset: str = DEFAULT_PRESET,
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
    for a hint model. ``preset``: the x264/x265 speed preset (other encoders ignore it).
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
            vout = _add_video(out, vin, encoder, crf, matrix, preset)
            aouts = {}
            for a in ains:
                if a.codec_context.name not in out.supported_codecs:
                    raise ValueError(f"{src}: audio codec {a.codec_context.name} cannot be "
                                     f"copied into {dst.suffix or 'this container'}; "
                                     "choose .mkv or .mov for the output")
                aouts[a.index] = out.add_stream_from_template(a)
            report.width, report.height = vout.width, vout.height
            report.audio_streams = len(aouts)
            job = _Job(colorizer, stabilizer, measure_flicker, hints)
            turns = (rotation // 90) % 4 if rotation % 90 == 0 else 0
            _run(inp, vin, ains, aouts, job, out, vout, turns, start, end, progress, report)
    report.seconds = time.perf_counter() - t0
    report.cuts = job.measurer.cuts if job.measurer else 0
    report.flicker = job.flicker()
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


# ---------------------------------------------------------------- internals


class _Job:
    """The colour of one batch of frames: predict at the working size, stabilise, measure."""

    def __init__(self, colorizer: Colorizer, stabilizer: Stabilizer | None, measure: bool,
                 hints: list[HintRange] | None = None) -> None:
        from .metrics import FlickerMeter

        self.colorizer, self.stabilizer = colorizer, stabilizer
        self.hints = hints or []
        self.meters = {"off": FlickerMeter(), "on": FlickerMeter()} if measure else {}
        self.measurer = Stabilizer() if measure and stabilizer is None else stabilizer

    def __call__(self, frames: list[Lightness], times: list[float]) -> list[Tensor]:
        """Working-size ab (2,h,w) for each frame's lightness, smoothed along time."""
        c = self.colorizer
        from .hints import points_at
        from .inference import as_l

        points = [points_at(self.hints, t) for t in times]
        # L at full size once, where smoothing or measuring needs it (the model's input is the
        # same from it as from a gray plane, bit for bit)
        ls = [as_l(f) for f in frames] if self.measurer or any(points) else frames
        if any(points):
            from .hints import predict_ab_hinted

            # hints are placed on the film as people see it, the upright frame the model is
            # given: x, y need no turning
            raw = predict_ab_hinted(c, ls, points, full_size=False)
        else:
            raw = c.predict_ab(ls, full_size=False)
        out = []
        for l, ab in zip(ls, raw, strict=True):
            smooth = self.stabilizer(l, ab) if self.stabilizer else ab
            if self.meters:
                self._measure(l, ab, smooth)
            out.append(smooth)
        return out

    def _measure(self, l: Tensor, raw: Tensor, smooth: Tensor) -> None:
        """Score raw and smoothed colour at the working size (flicker is a low-frequency
        thing), with L shrunk to it by area."""
        import torch
        import torch.nn.functional as F

        from .color import AB_SCALE, L_SCALE

        if self.stabilizer is None:  # output is raw; smooth on the side for the comparison
            smooth = self.measurer(l, raw)
        small = F.interpolate(l[None].float(), size=tuple(raw.shape[-2:]), mode="area")[0]
        for key, ab in (("off", raw), ("on", smooth)):
            self.meters[key].update(torch.cat((small * L_SCALE, ab.to(l.device) * AB_SCALE)))

    def flicker(self) -> dict[str, float]:
        return {k: m.value for k, m in self.meters.items()}


# ------------------------------------------------ decoding: a black-and-white frame is its Y plane

#: Pixel formats whose first plane is Y, with chroma in planes 1 and 2 (none for gray).
Y_FORMATS = {"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}
GRAY_CHROMA = 2  # U and V within this of 128 everywhere: a black-and-white frame


@functools.cache
def _y_to_gray8() -> np.ndarray:
    """Limited-range Y (16-235) -> the 8-bit gray that decoding to RGB gives, rounded."""
    import numpy as np

    y = np.arange(256, dtype=np.float64)
    return np.clip(np.round((y - 16.0) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def _plane(frame: Any, index: int) -> np.ndarray:
    import numpy as np

    plane = frame.planes[index]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[: plane.height, : plane.width]


def frame_lightness(frame: Any, colorizer: Colorizer, turns: int) -> Lightness:
    """A decoded frame's lightness as the stages take it (:data:`retint.inference.Lightness`),
    upright.

    A black-and-white frame (Y with neutral chroma, checked on every frame) is read from its Y
    plane alone: the plane itself (full range) or the 8-bit gray each Y stands for (limited
    range, one table), which the colour maths then takes as a gray photo: no conversion to RGB,
    and no float L at full size. Any other frame takes the photo path from RGB to its L."""
    import numpy as np

    name = frame.format.name
    if name in Y_FORMATS and all(p.line_size > 0 for p in frame.planes):  # not bottom-up
        neutral = name == "gray" or all(
            int(c.min()) >= 128 - GRAY_CHROMA and int(c.max()) <= 128 + GRAY_CHROMA
            for c in (_plane(frame, 1), _plane(frame, 2)))
        if neutral:
            full_range = name == "gray" or name.startswith("yuvj") or frame.color_range == 2
            y = np.rot90(_plane(frame, 0), turns)
            return np.ascontiguousarray(y) if full_range else _y_to_gray8()[y]
    return colorizer.lightness(np.rot90(frame.to_ndarray(format="rgb24"), turns))


# ---------------------------------------------------------------- the pipeline
# Four stages overlap the work of a film, with bounded queues between them so that memory stays
# flat: the reader demuxes, decodes and takes each frame's L; the caller's thread predicts and
# stabilises the colour a batch at a time; the composer makes each frame's full-resolution RGB;
# the writer encodes it and muxes it (audio packets too, in the order they were read). Composing
# and encoding were one stage, which was then the slowest, at 1080p on 2 cores. Decoding, the
# network, the compose pass and the encoder all release the GIL. The composer gets half of
# torch's threads (on 2 cores one, its own), and with ONNX Runtime the colour stage's torch ops
# run inline, since the stages already share the cores.

QUEUE_FRAMES = 8  # frames that may wait between two stages (a 4K frame's L is 33 MB)
ENCODE_QUEUE = 3  # composed RGB frames waiting for the encoder (25 MB each at 4K)
_END = "end"


class _Stage:
    """A thread running ``body()``; its exception is kept for the caller's thread to raise, and
    it sets ``stop`` so that the other stages leave their waits."""

    def __init__(self, name: str, body: Any, stop: threading.Event) -> None:
        self.error: BaseException | None = None
        self.stop = stop
        self.thread = threading.Thread(target=self._run, args=(body,), name=name, daemon=True)
        self.thread.start()

    def _run(self, body: Any) -> None:
        try:
            body()
        except _Abandoned:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self.error = err
            self.stop.set()


class _Abandoned(Exception):
    """Another stage failed or the caller was interrupted: stop where you are."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Put, waiting for room, unless the film is being abandoned."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Abandoned


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    raise _Abandoned


def _run(inp: Any, vin: Any, ains: list[Any], aouts: dict[int, Any], job: _Job, out: Any,
         vout: Any, turns: int, start: float | None, end: float | None, progress: bool,
         report: VideoReport) -> None:
    """Read, colour, compose and write the film through the four stages; re-raise the first
    failure."""
    import torch
    from tqdm import tqdm

    from .device import inline_ops, torch_ops_inline
    from .io import contiguous_rgb

    c = job.colorizer
    frames_q: queue.Queue = queue.Queue(QUEUE_FRAMES)
    colour_q: queue.Queue = queue.Queue(QUEUE_FRAMES)
    encode_q: queue.Queue = queue.Queue(ENCODE_QUEUE)
    stop = threading.Event()
    tb = vin.time_base
    offset = round((start or 0.0) / tb)
    bar = tqdm(total=_expected_frames(inp, vin, start, end), unit="frame",
               disable=not progress, dynamic_ncols=True)
    # the composer gets half the cores (one of two), the other stages share the rest; with ONNX
    # Runtime (threads of its own) the colour stage's small torch ops run inline: on 2 cores the
    # fast model then ran a 480p film at 42-50 fps against 35-41 (docs/results.md, films)
    compose_threads = max(1, torch.get_num_threads() // 2)
    inline = torch_ops_inline() if c.runtime == "onnx" else contextlib.nullcontext()

    def read() -> None:
        for kind, item in _demux(inp, vin, ains, aouts, start, end):
            if kind == "frame":
                item = (item.pts, item.time_base, frame_lightness(item, c, turns))
            _put(frames_q, (kind, item), stop)
        _put(frames_q, (_END, None), stop)

    def compose() -> None:
        import av
        import numpy as np

        if compose_threads == 1:
            inline_ops()  # this thread's ops run inline, pinned once for the film
        while True:
            kind, item = _get(colour_q, stop)
            if kind == "frame":
                pts, time_base, l, ab = item
                if job.hints:  # every frame: the smoothed colour carries a hint past its range
                    from .hints import keep_in_gamut
                    from .inference import as_l

                    l = as_l(l)
                    ab = keep_in_gamut(l, c.full_size_ab(l, ab))
                rgb = c.compose(l, ab, np.uint8, threads=compose_threads)
                # plain RGB: swscale turns rgb24 into the encoder's YUV 2.3x faster than
                # rgba (4.4 against 10.2 ms a 1080p frame), more than the packing costs
                rgb = np.ascontiguousarray(np.rot90(contiguous_rgb(rgb), -turns))
                new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                new.pts, new.time_base = pts - offset, time_base
                item = new
            _put(encode_q, (kind, item), stop)
            if kind == _END:
                return

    def write() -> None:
        while True:
            kind, item = _get(encode_q, stop)
            if kind == _END:
                break
            if kind == "packet":
                out.mux(item)
                continue
            out.mux(vout.encode(item))
            bar.update(1)
        out.mux(vout.encode(None))

    batch: list[tuple[int, Any, Lightness]] = []

    def flush() -> None:
        smooth = job([l for _, _, l in batch], [float(p * t) for p, t, _ in batch])
        for (pts, time_base, l), ab in zip(batch, smooth, strict=True):
            _put(colour_q, ("frame", (pts, time_base, l, ab)), stop)
        report.frames += len(batch)
        batch.clear()

    stages: list[_Stage] = []
    with inline:  # the film's whole run, stages joined inside
        try:
            try:
                stages += [_Stage(f"retint-{stage.__name__}", stage, stop)
                           for stage in (read, compose, write)]
                while True:
                    kind, item = _get(frames_q, stop)
                    if kind == _END:
                        break
                    if kind == "packet":
                        _put(colour_q, (kind, item), stop)
                        continue
                    batch.append(item)
                    if len(batch) >= c.batch_size:
                        flush()
                if batch:
                    flush()
                _put(colour_q, (_END, None), stop)
                stages[2].thread.join()
            except _Abandoned:
                pass  # a stage failed: its error is raised below
        finally:
            stop.set()  # on success the stages are done; otherwise they leave at their next wait
            for stage in stages:
                stage.thread.join()
            bar.total = report.frames  # the container's estimate can be a frame off
            bar.refresh()
            bar.close()
    for stage in stages:
        if stage.error is not None:
            raise stage.error
    if report.frames == 0:
        raise ValueError("no video frames in the requested range")


def _demux(inp: Any, vin: Any, ains: list[Any], aouts: dict[int, Any], start: float | None,
           end: float | None) -> Iterator[tuple[str, Any]]:
    """Demux once: ("packet", audio packet to remux, retimed) and ("frame", video frame) in
    the segment, in file order."""
    tb = vin.time_base
    off = start or 0.0
    if start:
        inp.seek(int(start / tb), stream=vin)  # to the keyframe before; earlier frames dropped
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
            yield "packet", packet
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
            yield "frame", frame


def _expected_frames(inp: Any, vin: Any, start: float | None, end: float | None) -> int | None:
    rate = vin.average_rate or vin.guessed_rate
    duration = (float(vin.duration * vin.time_base) if vin.duration
                else inp.duration / 1e6 if inp.duration else None)
    if not (start or end) and vin.frames:
        return vin.frames
    if duration is None or not rate:
        return None
    return max(0, round(((min(end, duration) if end else duration) - (start or 0)) * rate))


def _add_video(out: Any, vin: Any, encoder: str, crf: int, matrix: list[int] | None,
               preset: str = DEFAULT_PRESET) -> Any:
    """An output stream with the input's size, rate and time base (so pts copy over as is)."""
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    options = {"crf": str(crf)} if encoder in CRF_CODECS else {}
    if encoder in PRESET_CODECS:
        options["preset"] = preset
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
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=X264_PRESETS,
                   help="x264/x265 speed preset: slower ones write smaller files at the same "
                   "quality (default %(default)s)")
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
                                preset=args.preset,
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
