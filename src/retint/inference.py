"""The Colorizer: the one inference path behind the CLI and the Python API.

photo -> L at full resolution -> L shrunk to the working size (aspect kept, padded to a square)
-> model -> ab -> padding cropped, ab upsampled to full resolution -> merged with the ORIGINAL L
-> RGB. Only the colour passes through the network, so the detail of the input survives at its
exact size; the colour of a sepia or tinted scan is ignored (only its L is used). Where a
predicted colour falls outside sRGB for its lightness, the RGB is clipped (as skimage does), which
shifts L slightly on those pixels.

``saturation`` scales the predicted chroma (ab) at the working size; the scaled colours are then
pulled back into the sRGB gamut for their L (:func:`~retint.color.gamut_limit`), so a boost never
clips to a flat colour or shifts lightness. It is a user's taste knob, not a fix for a timid model.
"""

from __future__ import annotations

import bisect
import collections
import copy
import functools
import math
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .color import (
    AB_SCALE,
    GRAY8_TO_L,
    L_SCALE,
    Srgb8Bands,
    gamut_limit,
    gray_table,
    gray_table_codes,
    lab_to_linear_rgb,
    lab_to_rgb,
    lightness_from_gray8,
    lightness_from_srgb8,
    linear_to_srgb8,
    private_memory,
    rgb_to_l,
)
from .device import inline_ops, pick_device, thread_pool
from .io import pil_to_rgb, read_image, to_float, write_image
from .models import check_size, load_weights, model_id, resolve_model_path
from .options import MAX_SATURATION, UPSAMPLERS

BAND_PIXELS = 2_000_000  # full-resolution colour maths in bands of rows: bounded memory
# a gray photo's L, looked up and shrunk across, a band at a time; large bands: each resize call
# has a fixed cost that outweighs keeping the band in cache (measured: 2 MP 10 ms, 0.26 MP 16)
SHRINK_BAND_PIXELS = 2_097_152
BANDED_SHRINK_PIXELS = 1_000_000  # from this size a gray photo's L is never made whole
FUSED_BAND_PIXELS = 65_536  # the fused 8-bit pass: ~4 MB of buffers per thread, cache-sized
GRAY_BAND_PIXELS = 262_144  # the gray table's lookups: 5 MB of buffers, a few ops a band
GUIDED_RADIUS = 2  # the guided filter's window, working-size pixels (5x5)
GUIDED_EPS = 1e-2  # its regularisation, in (L/100)^2: edges weaker than ~0.1 L/100 are ignored


#: A photo's lightness as the stages take it: ``L / 100`` (1,H,W) on the CPU, or, for an 8-bit
#: black-and-white photo, its own gray plane (H,W) uint8, whose L is a 256-entry table. Kept as
#: gray, the photo is never turned into a full-size float L: the model's input is shrunk from
#: it band by band, and its 8-bit result is one table lookup per pixel
#: (:class:`~retint.color.GrayTable`).
Lightness = Tensor | np.ndarray


def is_gray8(source: object) -> bool:
    return isinstance(source, np.ndarray) and source.ndim == 2 and source.dtype == np.uint8


def as_l(source: Lightness) -> Tensor:
    """``L / 100`` (1,H,W) of a :data:`Lightness`: a gray plane through its table, two pixels
    a lookup where the width is even (the same values, ~3x faster: a film's stabiliser wants
    every frame's L)."""
    if not is_gray8(source):
        return source
    if source.shape[1] % 2:
        return torch.from_numpy(lightness_from_gray8(source))[None]
    return _l_of_pairs_in(_pairs_of(source)).view(1, *source.shape)


def working_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) of an HxW photo shrunk to a long side of ``size``, aspect kept: what
    the model sees before padding (evaluation and benchmarks use the same rounding)."""
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


class Colorizer:
    """Colorize photos with a bundled or trained model.

    >>> colorizer = Colorizer()                      # bundled default model, best device
    >>> rgb = colorizer.colorize(gray_or_color_rgb)  # array in -> same size and dtype out
    >>> colorizer.colorize(PIL.Image.open("old.jpg"))  # PIL image in -> PIL image out
    >>> colorizer.colorize_file("old.jpg", "new.jpg")
    """

    def __init__(self, model: str | Path = "default", device: str = "auto",
                 working_size: int = 256, batch_size: int = 4, saturation: float = 1.0,
                 runtime: str = "torch", upsample: str = "bilinear") -> None:
        if not 0.0 <= saturation <= MAX_SATURATION:
            raise ValueError(f"saturation must be between 0 and {MAX_SATURATION:g}, "
                             f"got {saturation}")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"unknown upsampling {upsample!r} (choose from "
                             f"{', '.join(UPSAMPLERS)})")
        self.upsample = upsample
        self.working_size = check_size("working size", working_size)
        self.saturation = saturation
        self.batch_size = batch_size
        self.runtime = runtime
        if runtime == "onnx":  # ONNX Runtime on the CPU: an exported graph in the model's place
            from .runtime import load_onnx

            if device not in ("auto", "cpu"):
                raise ValueError(f"the onnx runtime runs on the CPU (CPUExecutionProvider), "
                                 f"not on {device!r}: use --device cpu or auto")
            self.device = torch.device("cpu")
            gray_table().prefill_in_background()
            self.model_path, self.model, self.card = load_onnx(model)
            return
        if runtime != "torch":
            raise ValueError(f"unknown runtime {runtime!r} (choose from torch, onnx)")
        if str(model).lower().endswith(".onnx"):
            raise ValueError(f"{model}: an ONNX file runs with the onnx runtime (--runtime onnx)")
        self.device = pick_device(device)
        self.model_path = resolve_model_path(str(model))
        gray_table().prefill_in_background()
        self.model, self.card = load_weights(self.model_path, self.device)

    def resized(self, working_size: int) -> Colorizer:
        """The same model (shared, not copied) at another working size."""
        other = copy.copy(self)
        other.working_size = check_size("working size", working_size)
        return other

    @property
    def name(self) -> str:
        base = self.card.get("name") or model_id(self.model_path)
        return base if self.saturation == 1.0 else f"{base} (saturation {self.saturation:g})"

    @torch.no_grad()
    def predict_ab(self, l_full: Sequence[Lightness], full_size: bool = True) -> list[Tensor]:
        """ab (2,H,W) for each full-resolution L (1,H,W) in [0,1] (or gray plane, see
        :data:`Lightness`), run at the working size.

        ``full_size=False`` leaves each ab at the working size (2,h,w), padding cropped: what
        :meth:`compose` upsamples band by band, without a full-size ab in memory."""
        size = self.working_size
        results: list[Tensor] = []
        for start in range(0, len(l_full), self.batch_size):
            chunk = l_full[start : start + self.batch_size]
            shapes = [working_shape(*l.shape[-2:], size) for l in chunk]
            batch = torch.empty((len(chunk), 1, size, size), device=self.device)
            for n, (l, (h, w)) in enumerate(zip(chunk, shapes, strict=True)):
                small = shrink_l(l, (h, w)).to(self.device)
                # pad (not stretch) to the square working size; replicate keeps edges neutral
                batch[n] = F.pad(small, (0, size - w, 0, size - h), mode="replicate")[0]
            ab = self.model(batch).float()
            if self.saturation != 1.0:
                ab = gamut_limit(batch, (ab * self.saturation).clamp(-1.0, 1.0))
            for n, (l, (h, w)) in enumerate(zip(chunk, shapes, strict=True)):
                small = ab[n, :, :h, :w].contiguous()
                results.append(small if not full_size else self.full_size_ab(as_l(l), small))
        return results

    def full_size_ab(self, l: Tensor, small: Tensor) -> Tensor:
        """Working-size ab (2,h,w) brought to the size of L (1,H,W) by the chosen upsampling."""
        size = tuple(l.shape[-2:])
        if tuple(small.shape[-2:]) == size:  # nothing to upsample (compose takes it as it is)
            return small
        if self.upsample != "guided":
            return F.interpolate(small[None], size=size, mode="bilinear", align_corners=False)[0]
        c = F.interpolate(guided_coefficients(l, small)[None], size=size, mode="bilinear",
                          align_corners=False)[0]
        return torch.addcmul(c[2:], c[:2], l.to(c.device, c.dtype)).clamp_(-1.0, 1.0)

    def colorize_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Colorize HxWx3 (or HxW) arrays; each result has its input's size and dtype (uint8,
        uint16, or a float type in [0, 1])."""
        sources = [self.lightness_source(img) for img in images]
        abs_ = self.predict_ab(sources, full_size=False)  # upsampled inside compose, in bands
        return [self.compose(src, ab, img.dtype) for src, ab, img in zip(sources, abs_, images,
                                                                         strict=True)]

    def colorize(self, image: np.ndarray | Image.Image,
                 hints: object = None) -> np.ndarray | Image.Image:
        """One photo: an array (as :meth:`colorize_many`) or a PIL image, which comes back as
        an RGB PIL image of the same size (16-bit gray reduced to 8 bits).

        ``hints``: colour hints for a hint model (:mod:`retint.hints`: a list of
        ``{"x", "y", "colour"}`` points, or that list as JSON); none, or an empty list, gives
        the automatic result."""
        if isinstance(image, Image.Image):
            return Image.fromarray(self.colorize(pil_to_rgb(image), hints))
        if hints is not None:
            from .hints import colorize_hinted

            return colorize_hinted(self, [image], [hints])[0]
        return self.colorize_many([image])[0]

    def colorize_file(self, src: str | Path, dst: str | Path, quality: int = 95) -> None:
        """Read ``src``, write the colorized photo to ``dst`` atomically (never onto ``src``)."""
        if Path(dst).resolve() == Path(src).resolve():
            raise ValueError(f"{dst}: refusing to overwrite the input")
        write_image(dst, self.colorize(read_image(src)), quality=quality)

    # -- the stages of colorize_many, public so benchmarks can time each one

    def lightness_source(self, image: np.ndarray) -> Lightness:
        """What the later stages take of a photo (:data:`Lightness`): an 8-bit black-and-white
        photo given as one channel (HxW) stays its gray plane; anything else becomes its L."""
        if is_gray8(image):
            return _as_tensor_ready(image)
        return self.lightness(image)

    def lightness(self, image: np.ndarray) -> Tensor:
        """Full-resolution ``L / 100`` (1,H,W) on the CPU, computed in bands. A black-and-white
        8-bit photo given as one channel (HxW) takes a 256-entry table: the same values as the
        gray in three channels, a fraction of the work."""
        if is_gray8(image):
            return as_l(image)
        image = _as_rgb(image)
        if image.dtype == np.uint8 and self.device.type == "cpu":
            return torch.from_numpy(lightness_from_srgb8(image))[None]
        floating = np.issubdtype(image.dtype, np.floating)
        rgb = np.clip(image, 0.0, 1.0).astype(np.float32) if floating else to_float(image)
        h, w = rgb.shape[:2]
        out = torch.empty((1, h, w), dtype=torch.float32)
        for r0, r1 in _bands(h, w):
            band = torch.from_numpy(rgb[r0:r1]).permute(2, 0, 1).to(self.device)
            out[:, r0:r1] = rgb_to_l(band).cpu()
        return out

    def compose(self, l: Lightness, ab: Tensor, dtype: np.dtype,
                threads: int | None = None) -> np.ndarray:
        """Original L + predicted ab -> RGB in the input's dtype (float stays float).

        ``ab`` is full size (2,H,W), or the working-size map of ``predict_ab(full_size=False)``,
        which is upsampled here a band of rows at a time (the values of upsampling it whole).
        8-bit results on the CPU take the fused pass (:class:`~retint.color.Srgb8Bands`) over
        bands on ``threads`` threads (default: torch's count); a gray plane's 8-bit result with
        bilinear upsampling is a table lookup per pixel instead (:class:`~retint.color.GrayTable`);
        16-bit and float results the exact float LAB maths. A pipeline whose stages already share
        the cores (a film) passes fewer threads; one runs the pass in the caller's thread."""
        if is_gray8(l):
            h, w = l.shape
            if (dtype == np.uint8 and self.upsample == "bilinear"
                    and tuple(ab.shape[-2:]) != (h, w)):
                return _compose_gray8(l, ab)
            l = as_l(l)
        h, w = l.shape[-2:]
        floating = np.issubdtype(dtype, np.floating)
        out_dtype = dtype if floating else np.uint16 if dtype == np.uint16 else np.uint8
        peak = 1.0 if floating else float(np.iinfo(out_dtype).max)
        out = np.empty((h, w, 3), dtype=out_dtype)
        if tuple(ab.shape[-2:]) == (h, w):
            ab_rows: Callable[[int, int], Tensor] = lambda r0, r1: ab[:, r0:r1]  # noqa: E731
        elif ab.device.type == "cpu":
            rows = GuidedRows(l, ab) if self.upsample == "guided" else BilinearRows(ab, (h, w))
            ab_rows = rows.lerp if out_dtype == np.uint8 else rows.rows
        else:  # an accelerator has the memory: upsample whole
            full = self.full_size_ab(l.to(ab.device), ab.float())
            ab_rows = lambda r0, r1: full[:, r0:r1]  # noqa: E731
        if out_dtype == np.uint8 and ab.device.type == "cpu":
            _srgb8_bands(l[0].cpu(), ab_rows, out, threads)
            return out
        for r0, r1 in _bands(h, w):
            lab = torch.cat((l[:, r0:r1].to(ab.device).clamp(0.0, 1.0) * L_SCALE,
                             ab_rows(r0, r1) * AB_SCALE))
            if out_dtype == np.uint8:
                rgb = linear_to_srgb8(lab_to_linear_rgb(lab))
            else:
                rgb = lab_to_rgb(lab) * peak
                rgb = rgb if floating else rgb.round()
            out[r0:r1] = rgb.permute(1, 2, 0).cpu().numpy()
        return out


class BilinearRows:
    """Bilinear upsampling (``align_corners=False``) of a small (C,h,w) CPU map to (C,H,W), a
    band of rows at a time, with no full-size map anywhere.

    ``rows(r0, r1)`` is ``F.interpolate`` of the whole map cut to rows r0..r1, to the bit where
    torch's CPU kernel upsamples. That kernel is separable: the small map's rows are
    interpolated across the width by F.interpolate itself, once (the height untouched, which
    is exact), then each output row is ``t0 * w0 + t1 * w1`` of two of them with torch's own
    indices, weights and rounding (one fused multiply-add). ``lerp(r0, r1)`` computes those
    rows as ``t0 + w1 (t1 - t0)`` in float32 instead, within 1e-6 of them and cheaper (one pass
    for the rows between the same two source rows): what the 8-bit passes take. It returns a
    view of a buffer of the calling thread, reused (overwritten) by that thread's next call.
    """

    def __init__(self, small: Tensor, size: tuple[int, int]) -> None:
        small = small.float()
        self.width = size[1]
        self.wide = F.interpolate(small[None], size=(small.shape[-2], size[1]), mode="bilinear",
                                  align_corners=False)[0]  # (C, h, W)
        self.steps = torch.zeros_like(self.wide)  # t1 - t0 of each source row and the next
        torch.sub(self.wide[:, 1:], self.wide[:, :-1], out=self.steps[:, :-1])
        i0, i1, w0, w1 = _linear_taps(small.shape[-2], size[0])
        self.i0, self.i1 = torch.from_numpy(i0), torch.from_numpy(i1)
        self.w0, self.w1 = torch.from_numpy(w0)[:, None], torch.from_numpy(w1)[:, None]
        # runs of output rows between the same two source rows (i1 is i0 + 1, or i0 at the end)
        self.runs = [0, *(np.flatnonzero(np.diff(i0)) + 1).tolist(), size[0]]
        self._local = threading.local()  # each thread's band buffer for lerp

    def rows(self, r0: int, r1: int) -> Tensor:
        t1 = self.wide.index_select(1, self.i1[r0:r1]).mul_(self.w1[r0:r1])
        t0 = self.wide.index_select(1, self.i0[r0:r1]).double()
        return t0.mul_(self.w0[r0:r1].double()).add_(t1).float()  # t0 w0 + t1 w1, one rounding

    def lerp(self, r0: int, r1: int) -> Tensor:
        shape = (self.wide.shape[0], r1 - r0, self.width)
        buffer = getattr(self._local, "buffer", None)  # reused: fresh memory costs faults
        if buffer is None or buffer.numel() < math.prod(shape):
            buffer = self._local.buffer = torch.empty(shape)
        out = buffer.view(-1)[: math.prod(shape)].view(shape)
        run = bisect.bisect_right(self.runs, r0) - 1
        while self.runs[run] < r1:
            s, e = max(r0, self.runs[run]), min(r1, self.runs[run + 1])
            top = int(self.i0[s])
            torch.addcmul(self.wide[:, top : top + 1], self.w1[s:e], self.steps[:, top : top + 1],
                          out=out[:, s - r0 : e - r0])
            run += 1
        return out


def guided_coefficients(l: Tensor, small: Tensor) -> Tensor:
    """(4,h,w): the guided filter's window-averaged ``a`` (2) and ``b`` (2) at the working size,
    such that ``a * L + b`` upsampled is the edge-aware ab (see :class:`GuidedRows`)."""
    h, w = small.shape[-2:]
    guide = F.interpolate(l[None].float().to(small.device), size=(h, w), mode="area")
    ab = small[None].float()

    def box(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2 * GUIDED_RADIUS + 1, stride=1, padding=GUIDED_RADIUS,
                            count_include_pad=False)

    mean_l, mean_ab = box(guide), box(ab)
    var_l = box(guide * guide) - mean_l * mean_l
    a = (box(guide * ab) - mean_l * mean_ab) / (var_l + GUIDED_EPS)
    b = mean_ab - a * mean_l
    return torch.cat((box(a), box(b)), 1)[0]


class GuidedRows:
    """Edge-aware upsampling of working-size ab (2,h,w) to the size of L (1,H,W): the fast
    guided filter (He and Sun, 2015) with the full-resolution L as the guide.

    At the working size, ab is fitted in each 5x5 window as ``a * L + b`` of the shrunk L (a
    ridge fit, ``GUIDED_EPS``); the window-averaged ``a`` and ``b`` are upsampled bilinearly
    and applied to the full-resolution L. Colour then changes where the photo's own edges are,
    instead of bleeding across them as plain bilinear ab does. Same ``rows``/``lerp`` as
    :class:`BilinearRows`, a band at a time: no full-size map anywhere.
    """

    def __init__(self, l: Tensor, small: Tensor) -> None:
        self.l = l
        self.coefficients = BilinearRows(guided_coefficients(l, small).cpu(), tuple(l.shape[-2:]))

    def _apply(self, c: Tensor, r0: int, r1: int) -> Tensor:
        # clamped: a thin detail the working size cannot see may push a * L + b out of range
        return torch.addcmul(c[2:], c[:2], self.l[:, r0:r1].to(c.dtype)).clamp_(-1.0, 1.0)

    def rows(self, r0: int, r1: int) -> Tensor:
        return self._apply(self.coefficients.rows(r0, r1), r0, r1)

    def lerp(self, r0: int, r1: int) -> Tensor:
        return self._apply(self.coefficients.lerp(r0, r1), r0, r1)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a bilinear resize from n_in to n_out samples, as torch's
    CPU kernel computes them in float32: source = scale * (i + 0.5) - 0.5 (a fused
    multiply-add, here in float64), clamped at 0; the second tap stops at the last sample."""
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    src = np.maximum((np.float64(scale) * dst - 0.5).astype(np.float32), np.float32(0.0))
    i0 = src.astype(np.int64)
    w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), np.float32(1.0) - w1, w1


_KERNELS = threading.local()  # each thread's Srgb8Bands, its buffers reused


def _compose_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` compose threads (a film composes a frame every few
    ms), each running its torch ops inline."""
    return thread_pool("compose", workers, initializer=inline_ops)


def _in_bands(h: int, w: int, band: Callable[[int, int], None], pixels: int,
              threads: int | None = None) -> None:
    """``band(r0, r1)`` over bands of rows of an HxW frame, on ``threads`` threads (by default
    ``torch.get_num_threads()``) of a pool kept for the process; torch and NumPy release the
    GIL. The pool's threads run their torch ops inline (:func:`~retint.device.inline_ops`).
    One thread, or one band, is the caller's own thread as it is: pinning it here and back
    would cost more than the band (changing torch's thread count rebuilds its pools), so a
    pipeline stage pins its thread once instead."""
    bands = _bands(h, w, pixels)
    workers = threads or torch.get_num_threads()
    if workers <= 1 or len(bands) == 1:
        for rows in bands:
            band(*rows)
        return
    for _ in _compose_pool(workers).map(lambda rows: band(*rows), bands):
        pass


def _srgb8_bands(l: Tensor, ab_rows: Callable[[int, int], Tensor], out: np.ndarray,
                 threads: int | None = None) -> None:
    """The fused 8-bit pass over bands of rows (:func:`_in_bands`); each thread keeps its own
    buffers (:class:`~retint.color.Srgb8Bands`) from band to band and frame to frame."""

    def band(r0: int, r1: int) -> None:
        kernel = getattr(_KERNELS, "kernel", None)
        if kernel is None:
            kernel = _KERNELS.kernel = Srgb8Bands()
        kernel(l[r0:r1], ab_rows(r0, r1).float(), out[r0:r1])

    _in_bands(*out.shape[:2], band, FUSED_BAND_PIXELS, threads)


def _compose_gray8(gray: np.ndarray, ab: Tensor) -> np.ndarray:
    """The 8-bit RGB of a gray plane (H,W) and its working-size ab: the map is turned into
    table codes, the table filled where they reach, and each band's upsampled codes and gray
    levels looked up (:class:`~retint.color.GrayTable`), in the caller's thread."""
    gray = _as_tensor_ready(gray)
    h, w = gray.shape
    codes = gray_table_codes(ab.detach().cpu())
    table = gray_table()
    table.prepare(codes)
    rows = BilinearRows(codes, (h, w))
    levels = torch.from_numpy(gray)
    out = _result_buffer(h, w)
    # a few large ops a band: torch's own threads share them out better than a pool of
    # threads each running its ops inline (measured in docs/results.md)
    _in_bands(h, w, lambda r0, r1: table.lookup(rows.lerp(r0, r1), levels[r0:r1], out[r0:r1]),
              GRAY_BAND_PIXELS, threads=1)
    return out[..., :3]  # R, G, B of the 4-byte pixels (io.rgbx_buffer finds them again)


_SPARE_RESULTS: list[mmap.mmap] = []  # memory of results no longer referenced, ready again
_RETURNED: collections.deque[mmap.mmap] = collections.deque()  # back, not yet sorted in
_SPARE_LOCK = threading.Lock()
SPARE_RESULT_BYTES = 64 * 2**20  # at most this much is kept (one 12 MP result)


def _new_spare_lock() -> None:  # a forked child has the lock but not the thread holding it
    global _SPARE_LOCK
    _SPARE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_spare_lock)


def _result_buffer(h: int, w: int) -> np.ndarray:
    """Memory for an (h,w,4) 8-bit result: a spare one of that size if a result of it is no
    longer referenced, else new. A new 12 MP result costs ~7 ms of page faults as it is first
    written; a film's frames and a batch's photos of one size reuse memory instead. The memory
    comes back when the result and every view of it are gone."""
    size = h * w * 4
    with _SPARE_LOCK:
        while _RETURNED:
            _SPARE_RESULTS.insert(0, _RETURNED.popleft())
        while sum(len(m) for m in _SPARE_RESULTS) > SPARE_RESULT_BYTES:
            _SPARE_RESULTS.pop().close()
        memory = next((m for m in _SPARE_RESULTS if len(m) == size), None)
        if memory is not None:
            _SPARE_RESULTS.remove(memory)
    if memory is None:
        memory = private_memory(size)
    flat = np.frombuffer(memory, np.uint8)
    # every view of the result keeps alive what NumPy holds the memory by (a memoryview of
    # it): when that goes, so has the last view. The callback only appends (it may run in
    # any thread, at any allocation, even one made under _SPARE_LOCK), and never at exit.
    holder = flat.base
    if holder is not None and holder is not memory:
        weakref.finalize(holder, _RETURNED.append, memory).atexit = False
    return flat.reshape(h, w, 4)


def shrink_l(source: Lightness, size: tuple[int, int]) -> Tensor:
    """``L / 100`` resized to ``size`` (h, w) as (1,1,h,w): ``F.interpolate`` bilinear with
    antialiasing of the full-resolution L. A large gray plane that is shrunk both ways is never
    made into a full-size L: its rows are looked up and shrunk across the width a band at a
    time, then the (H, w) result down the height, which is the very computation the 2-D resize
    makes (bit for bit: tested). Two neighbouring pixels are looked up at once, as one 16-bit
    index into a table of pairs of L (512 KB): half the lookups, which are most of the cost."""
    h, w = size
    if not (is_gray8(source) and source.size >= BANDED_SHRINK_PIXELS
            and h < source.shape[0] and w < source.shape[1] and source.shape[1] % 2 == 0):
        return F.interpolate(as_l(source)[None], size=size, mode="bilinear", antialias=True,
                             align_corners=False)
    pairs = _pairs_of(source)
    across = torch.empty((1, 1, source.shape[0], w))

    def band(r0: int, r1: int) -> None:
        l = _l_of_pairs_in(pairs[r0:r1]).view(1, 1, r1 - r0, -1)
        across[0, 0, r0:r1] = F.interpolate(l, size=(r1 - r0, w), mode="bilinear",
                                            antialias=True, align_corners=False)[0, 0]

    _in_bands(*source.shape, band, SHRINK_BAND_PIXELS, threads=1)  # torch's threads share ops
    return F.interpolate(across, size=size, mode="bilinear", antialias=True, align_corners=False)


def _pairs_of(gray: np.ndarray) -> Tensor:
    """An even-width gray plane as (H, W/2) pairs of levels, each one 16-bit index into
    :func:`_l_of_pairs`: uint16 where torch has it (2.3 and later), else int16, which
    :func:`_l_of_pairs_in` masks back to 0..65535 (1 ms more at 12 MP)."""
    unsigned = hasattr(torch, "uint16")
    return torch.from_numpy(_as_tensor_ready(gray).view(np.uint16 if unsigned else np.int16))


def _l_of_pairs_in(pairs: Tensor) -> Tensor:
    """The float32 L of every pixel of some rows of :func:`_pairs_of`, flat: one lookup a pair."""
    index = pairs.reshape(-1).to(torch.int32)
    if pairs.dtype != torch.uint16:
        index.bitwise_and_(0xFFFF)
    return torch.index_select(_l_of_pairs(), 0, index).view(torch.float32)


@functools.cache
def _l_of_pairs() -> Tensor:
    """(65536,) int64: for each pair of gray levels as they lie in memory, read as one uint16,
    the pair's two float32 L (whatever the machine's byte order)."""
    levels = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    with torch.inference_mode(False):  # kept for the process: usable in and out of it
        return torch.from_numpy(np.ascontiguousarray(GRAY8_TO_L[levels]).view(np.int64)[:, 0])


def _bands(h: int, w: int, pixels: int = BAND_PIXELS) -> list[tuple[int, int]]:
    rows = max(1, pixels // max(1, w))
    return [(r, min(h, r + rows)) for r in range(0, h, rows)]


def _as_tensor_ready(gray: np.ndarray) -> np.ndarray:
    """A gray plane torch can share: C-contiguous and writable (torch has no read-only
    tensors; a decoded video plane is read-only). Copied only where it is not already."""
    return np.require(gray, requirements=("C", "W"))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx3 or HxWx4 -> contiguous HxWx3 of the same dtype (gray replicated, alpha off)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])
