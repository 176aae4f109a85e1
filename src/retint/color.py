"""RGB <-> CIE LAB in torch, and the one place where LAB is scaled for the models.

Our own implementation rather than kornia: it is ~60 lines, adds no dependency, runs batched on
any device in float32, is differentiable (safe gradients at the piecewise joins), and uses
exactly the constants of ``skimage.color`` (sRGB primaries, D65 white, 2 degree observer), so
training data, inference and the scikit-image reference agree to float32 precision.

Shapes: images are ``(..., 3, H, W)``; RGB is sRGB in [0, 1].
Model scaling (the seed's): ``L / 100`` -> [0, 1] is the input, ``ab / 128`` -> about [-1, 1]
is the target, so the model ends in ``tanh``.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# sRGB (D65) -> XYZ, the matrix skimage uses.
_XYZ_FROM_RGB = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPS = 0.008856  # (6/29)^3, CIE's join between the cube root and the linear segment
_KAPPA = 7.787

L_SCALE = 100.0
AB_SCALE = 128.0


def _matmul_channels(m: Tensor, x: Tensor) -> Tensor:
    """Apply a 3x3 matrix over the channel axis (-3) of ``(..., 3, H, W)``."""
    return torch.einsum("ij,...jhw->...ihw", m.to(device=x.device, dtype=x.dtype), x)


def _white(x: Tensor) -> Tensor:
    return torch.tensor(_WHITE_D65, device=x.device, dtype=x.dtype).view(3, 1, 1)


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """The sRGB decoding curve (gamma-encoded [0, 1] -> linear light), safe gradients."""
    rgb = rgb.clamp(0.0, 1.0)
    return torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4,
                       rgb / 12.92)


def linear_to_srgb(linear: Tensor) -> Tensor:
    """The sRGB encoding curve (linear light -> gamma-encoded), clipped to [0, 1]."""
    srgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1.0 / 2.4)
                       - 0.055, 12.92 * linear)
    return srgb.clamp(0.0, 1.0)


def _lab_f(t: Tensor) -> Tensor:
    """CIE's f(t): the cube root above (6/29)^3, a line below it."""
    return torch.where(t > _EPS, t.clamp_min(_EPS) ** (1.0 / 3.0), _KAPPA * t + 16.0 / 116.0)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] -> LAB (L in [0, 100], a/b roughly [-128, 127])."""
    linear = srgb_to_linear(rgb)
    fx, fy, fz = _lab_f(_matmul_channels(_XYZ_FROM_RGB, linear) / _white(linear)).unbind(-3)
    lab = torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)
    return lab


def lab_to_linear_rgb(lab: Tensor) -> Tensor:
    """LAB -> linear-light RGB (not yet gamma-encoded, not clipped)."""
    l, a, b = lab.unbind(-3)
    fy = (l + 16.0) / 116.0
    fz = (fy - b / 200.0).clamp_min(0.0)  # skimage clips negative Z the same way
    f = torch.stack((fy + a / 500.0, fy, fz), dim=-3)
    xyz = torch.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / _KAPPA)
    return _matmul_channels(_RGB_FROM_XYZ * torch.tensor(_WHITE_D65, dtype=torch.float64), xyz)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """LAB -> sRGB clipped to [0, 1] (out-of-gamut colours are clipped, as skimage does)."""
    return linear_to_srgb(lab_to_linear_rgb(lab))


def in_srgb_gamut(lab: Tensor, tolerance: float = 1e-4) -> Tensor:
    """(…,3,H,W) LAB -> (…,H,W) bool: the colour exists in sRGB (no channel clipped)."""
    linear = lab_to_linear_rgb(lab)
    return ((linear >= -tolerance) & (linear <= 1.0 + tolerance)).all(dim=-3)


def gamut_limit(l_norm: Tensor, ab_norm: Tensor, iterations: int = 12) -> Tensor:
    """Pull each out-of-gamut ab straight towards gray, just far enough to fit sRGB at its L.

    Hue and L are kept (clipping RGB instead shifts both). Per-pixel bisection of the chroma
    factor in [0, 1]; gray is always in gamut. Inputs in model scale (L/100, ab/128).
    """
    l_lab = l_norm.clamp(0.0, 1.0) * L_SCALE

    def fits(factor: Tensor) -> Tensor:
        return in_srgb_gamut(torch.cat((l_lab, ab_norm * factor * AB_SCALE), dim=-3))

    ok = fits(torch.ones_like(l_norm))
    if bool(ok.all()):
        return ab_norm
    lo, hi = torch.zeros_like(l_norm), torch.ones_like(l_norm)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        inside = fits(mid).unsqueeze(-3)
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return torch.where(ok.unsqueeze(-3), ab_norm, ab_norm * lo)


def rgb_to_model(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """sRGB in [0, 1] -> (L / 100, ab / 128): the model's input and target."""
    lab = rgb_to_lab(rgb)
    return lab[..., :1, :, :] / L_SCALE, lab[..., 1:, :, :] / AB_SCALE


def model_to_rgb(l_norm: Tensor, ab_norm: Tensor) -> Tensor:
    """(L / 100, ab / 128) -> sRGB in [0, 1]. Stays in float: no quantization before lab2rgb."""
    lab = torch.cat((l_norm.clamp(0.0, 1.0) * L_SCALE, ab_norm * AB_SCALE), dim=-3)
    return lab_to_rgb(lab)


def rgb_to_l(rgb: Tensor) -> Tensor:
    """Just the lightness ``L / 100`` of sRGB: what a black-and-white (or sepia) photo keeps.

    L depends on luminance Y alone, so this skips X and Z (a third of the work at 12 MP).
    """
    fy = _lab_f(_matmul_channels(_XYZ_FROM_RGB[1:2], srgb_to_linear(rgb)))
    return (116.0 * fy - 16.0) / L_SCALE


# ---------------------------------------------------------------- 8-bit fast paths
# Most photos are 8-bit. For them the sRGB curve is a table lookup instead of a per-pixel power:
# several times faster at 12 megapixels, and exact (decoding) or within 0.06 of a level
# (encoding, 65,536 steps of linear light) before rounding.

_LINEAR_STEPS = 65535


_SRGB8_TO_LINEAR = srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0).float().numpy()
_LINEAR_TO_SRGB8 = (linear_to_srgb(torch.arange(_LINEAR_STEPS + 1, dtype=torch.float64)
                                   / _LINEAR_STEPS) * 255.0).round().to(torch.uint8)


# Each channel's share of luminance Y, per 8-bit level: decoding and weighting in one table.
_SRGB8_TO_Y = [(_SRGB8_TO_LINEAR * w).astype(np.float32)
               for w in _XYZ_FROM_RGB[1].numpy().astype(np.float32)]


def lightness_from_srgb8(rgb: np.ndarray) -> np.ndarray:
    """``L / 100`` (H, W) float32 of an 8-bit sRGB photo (H, W, 3), via the decoding table.

    Y is summed R, G, B in that order, pixel by pixel, so a pixel's L depends on its value alone
    (not on the array's shape, as a BLAS product's rounding can): a gray pixel gets exactly the
    L of :func:`lightness_from_gray8`."""
    y = _SRGB8_TO_Y[0][rgb[..., 0]]
    y += _SRGB8_TO_Y[1][rgb[..., 1]]
    y += _SRGB8_TO_Y[2][rgb[..., 2]]
    fy = np.where(y > _EPS, np.cbrt(y), _KAPPA * y + 16.0 / 116.0)
    return (116.0 * fy - 16.0) / L_SCALE


def linear_to_srgb8(linear: Tensor) -> Tensor:
    """Linear-light RGB -> 8-bit sRGB, clipped, via the encoding table (same device)."""
    index = (linear.clamp(0.0, 1.0) * _LINEAR_STEPS).round_().to(torch.int32)
    if index.device.type == "cpu":  # numpy's gather is ~3x faster than torch's on the CPU
        return torch.from_numpy(_LINEAR_TO_SRGB8.numpy()[index.numpy()])
    return _LINEAR_TO_SRGB8.to(linear.device)[index]


def no_color(rgb: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """A photo's own L with ab = 0 (what it looks like in black and white), in its dtype.

    The no-colour baseline of evaluation and the gray inputs of the demo: exactly the lightness
    the models see, recombined and rounded as the Colorizer rounds its results.
    """
    peak = 65535 if rgb.dtype == np.uint16 else 255
    x = torch.from_numpy(np.ascontiguousarray(rgb[:, :, :3], dtype=np.float32) / peak)
    l = rgb_to_l(x.permute(2, 0, 1).to(device))
    out = model_to_rgb(l, torch.zeros((2, *l.shape[-2:]), device=l.device))
    # ab = 0 is neutral, but the 6-digit matrices leave R, G, B a hair apart: make it exact
    out = out.mean(dim=0, keepdim=True).expand(3, -1, -1)
    return (out * peak).round().permute(1, 2, 0).cpu().numpy().astype(rgb.dtype)


# ---------------------------------------------------------------- gray 8-bit input
# A black-and-white photo has one channel, and its L depends on the gray level alone: 256 values.

GRAY8_TO_L = lightness_from_srgb8(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))


def lightness_from_gray8(gray: np.ndarray) -> np.ndarray:
    """``L / 100`` (H, W) float32 of an 8-bit gray photo (H, W), by a 256-entry table: the very
    values :func:`lightness_from_srgb8` gives for the same gray in three channels."""
    return GRAY8_TO_L[gray]  # indexing by uint8 directly: no int64 copy of the indices


# ---------------------------------------------------------------- fused LAB -> 8-bit sRGB
# The full-resolution colour maths of an 8-bit result, for one band of rows at a time, in float32
# with reused buffers: no full-size float temporaries. It computes what
# ``linear_to_srgb8(lab_to_linear_rgb(lab))`` does, with the same constants, rearranged to take
# fewer passes over memory:
#   - the scalings (L * 100, ab * 128, / 116, / 500, / 200) are folded into one factor each;
#   - CIE's inverse f, ``f**3 if f > 0.2068966 else (f - 16/116) / 7.787``, is computed without a
#     branch as ``max(f, t)**3 + (min(f, t) - 16/116) / 7.787 - t**3`` with t = 0.2068966 (the
#     constant moves into the matrix step's offset); the two pieces meet at t to 4e-8;
#   - the XYZ -> linear RGB matrix is scaled to the encoding table's 65,535 steps, with the
#     rounding offset, so one matrix product gives the table index.
# Float32 rounding in a different order moves a few pixels in a million by one level.

_F_JOIN = 0.2068966  # lab_to_linear_rgb's threshold on f
_INV_KAPPA = 1.0 / _KAPPA
_XYZ_OFFSET = -(_F_JOIN**3) - 16.0 / 116.0 * _INV_KAPPA  # the constant part of the inverse f
_RGB_FROM_XYZ_WHITE = _RGB_FROM_XYZ * torch.tensor(_WHITE_D65, dtype=torch.float64)
_INDEX_FROM_XYZ = (_RGB_FROM_XYZ_WHITE * _LINEAR_STEPS).float()
_INDEX_OFFSET = (0.5 + _RGB_FROM_XYZ_WHITE.sum(dim=1, keepdim=True) * _LINEAR_STEPS
                 * _XYZ_OFFSET).float()
_LINEAR_TO_SRGB8_NP = _LINEAR_TO_SRGB8.numpy()
_AB_TO_F = torch.tensor([[AB_SCALE / 500.0], [-AB_SCALE / 200.0]])  # fx - fy, fz - fy per ab


class Srgb8Bands:
    """(L / 100, ab / 128) -> 8-bit sRGB, one band of rows at a time (CPU, float32).

    One instance per thread: it keeps its buffers between bands (sized by the largest band it
    has seen), so a photo costs a few band-sized buffers, not full-size float arrays.
    """

    def __init__(self) -> None:
        self._size = 0
        self._views: tuple[Tensor, ...] = ()

    def _buffers(self, n: int) -> tuple[Tensor, ...]:
        if n > self._size:
            f, t, g = (torch.empty((3, n)) for _ in range(3))
            index = torch.empty((3, n), dtype=torch.int32)
            self._size, self._views = n, (f, t, g, index, torch.empty((3, n), dtype=torch.uint8))
        if n == self._size:
            return self._views
        return tuple(b[:, :n] for b in self._views)

    def __call__(self, l_norm: Tensor, ab_norm: Tensor, out: np.ndarray) -> None:
        """Write the sRGB of ``l_norm`` (h, w) and ``ab_norm`` (2, h, w), float32 on the CPU,
        into ``out``, a C-contiguous uint8 (h, w, 3) view of the result."""
        n = l_norm.numel()
        f, t, g, index, planes = self._buffers(n)
        fy = f[1]
        torch.clamp(l_norm.reshape(n), 0.0, 1.0, out=fy)
        fy.mul_(L_SCALE / 116.0).add_(16.0 / 116.0)
        torch.addcmul(fy, ab_norm.reshape(2, n), _AB_TO_F, out=f[0::2])  # fx, fz
        f[2].clamp_min_(0.0)  # skimage clips negative Z the same way
        torch.clamp(f, min=_F_JOIN, out=g)
        torch.pow(g, 3, out=t)
        t.add_(f.clamp_max_(_F_JOIN), alpha=_INV_KAPPA)  # + the offset, in _INDEX_OFFSET
        torch.addmm(_INDEX_OFFSET, _INDEX_FROM_XYZ, t, out=g)
        index.copy_(g)  # truncation of the offset value: rounding to the nearest step
        # indices clipped to the table (which clips linear RGB to [0, 1]) into planes, then
        # interleaved: both contiguous, twice as fast as a gather into every third byte
        np.take(_LINEAR_TO_SRGB8_NP, index.numpy(), out=planes.numpy(), mode="clip")
        torch.stack(tuple(planes), dim=1, out=torch.from_numpy(out.reshape(n, 3)))


# ---------------------------------------------------------------- gray 8-bit -> 8-bit sRGB by table
# A black-and-white 8-bit photo's L takes 256 values and its predicted ab is smooth, so its 8-bit
# result is a function of (ab, gray level) that a table can hold: per pixel, ab is rounded to
# GRAY_TABLE_STEP and one 4-byte entry (R, G, B, unused) is read, instead of the LAB maths (a
# few passes over memory instead of ~40). Each entry is the LAB maths at its node (parts made in
# float64, summed in float32), rounded once. The price is ab rounded by up to a quarter unit:
# measured against the exact path in docs/results.md (the fast full-resolution path).
#
# The table spans ab in [-128, 128] (all a model can predict), laid out [a][b][gray] so that the
# pixels of one colour read one kilobyte, and is filled lazily in blocks of 8 x 8 ab nodes: a
# photo fills the blocks its colour map can reach (bilinear upsampling never leaves the range of
# a cell's four corners). It is kept for the process, so a film or a batch fills it once;
# untouched blocks cost no memory (it grows to ~270 MB only if every colour were ever used).

GRAY_TABLE_STEP = 0.5  # ab units between nodes
# Where most predicted colour falls (a, b), filled when a Colorizer is made: 97.8 % of the
# default model's pixels on the held-out photos, 99.8 % of the fast model's; 10 MB.
GRAY_TABLE_COMMON = ((-16.0, 24.0), (-16.0, 40.0))
GRAY_TABLE_NODES = int(2 * AB_SCALE / GRAY_TABLE_STEP) + 1  # per ab axis: -128 .. 128
_BLOCK = 8  # ab nodes per block side: 8 x 8 x 256 entries, 64 KB
_CENTRE = GRAY_TABLE_NODES // 2  # the node of ab = 0


def gray_table_codes(ab_norm: Tensor) -> Tensor:
    """ab / 128 -> the table's node coordinates plus one half, clamped to the table, so that
    truncating an (upsampled) value gives the nearest node. Affine, so it commutes with bilinear
    upsampling: a working-size map is converted once, then upsampled."""
    scale = AB_SCALE / GRAY_TABLE_STEP
    return (ab_norm.float() * scale + (_CENTRE + 0.5)).clamp_(0.5, GRAY_TABLE_NODES - 0.5)


def _block_of(codes: Tensor, margin: float) -> np.ndarray:
    """The block of the node each code truncates to, the code first moved by ``margin``
    (-1e-3 for the low end of a range, +1e-3 for the high end): upsampled values can pass a
    cell's corners by float rounding."""
    return ((codes + margin).clamp(0, GRAY_TABLE_NODES - 1).long() // _BLOCK).numpy()


@functools.cache
def _gray_table_parts() -> Tensor:
    """(2, 3, nodes, 256) float32: linear R, G and B at every (a node, gray level) and every
    (b node, gray level), in steps of the encoding table plus one half, such that the entry of
    (a, b, gray) is the table's sRGB at ``a part + b part`` truncated (clipped to [0, 1]).
    The float64 LAB maths of :func:`lab_to_linear_rgb` taken apart: linear light is a sum of X
    and Y (of a and gray) and Z (of b and gray), each through its column of the matrix."""
    fy = (GRAY8_TO_L.astype(np.float64) * L_SCALE + 16.0) / 116.0  # (256,)
    ab = np.arange(GRAY_TABLE_NODES, dtype=np.float64) * GRAY_TABLE_STEP - AB_SCALE

    def inverse_f(f: np.ndarray) -> np.ndarray:
        return np.where(f > _F_JOIN, f * f * f, (f - 16.0 / 116.0) / _KAPPA)

    x = inverse_f(fy[None] + ab[:, None] / 500.0)  # (nodes, 256)
    y = inverse_f(fy)
    z = inverse_f(np.maximum(fy[None] - ab[:, None] / 200.0, 0.0))  # skimage's clip of Z
    m = _RGB_FROM_XYZ_WHITE.numpy()[:, :, None, None] * _LINEAR_STEPS  # (3, 3, 1, 1)
    a_part = m[:, 0] * x + m[:, 1] * y + 0.5  # the half: truncation rounds
    b_part = m[:, 2] * z
    with torch.inference_mode(False):  # kept for the process: usable in and out of it
        return torch.from_numpy(np.stack((a_part, b_part))).float()


def private_memory(size: int, huge_pages: bool = True) -> mmap.mmap:
    """``size`` bytes of zeros, private to this process (a forked child writes its own copy),
    mapped a page at a time as they are first written. ``huge_pages=False`` keeps them at 4 KB
    where the system would otherwise use 2 MB pages: memory written sparsely (the gray table)
    then costs what is written, not megabytes of zeros around each write."""
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: committed on demand all the same
        return mmap.mmap(-1, size)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if not huge_pages and hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return memory


@functools.cache
def _gray_table_encoders() -> Tensor:
    """(3, steps) int32: the encoding table's byte placed as the R, G or B of a 4-byte entry
    (whatever the machine's byte order), so that an entry is the OR of three lookups."""
    placed = np.zeros((3, _LINEAR_STEPS + 1, 4), np.uint8)
    for c in range(3):
        placed[c, :, c] = _LINEAR_TO_SRGB8_NP
    with torch.inference_mode(False):  # kept for the process: usable in and out of it
        return torch.from_numpy(placed.view(np.int32)[..., 0].copy())


class GrayTable:
    """The process's table of 8-bit sRGB by (a node, b node, gray level), filled on demand.

    :meth:`prepare` fills what a working-size code map (:func:`gray_table_codes`) can reach;
    :meth:`lookup` then turns upsampled codes and gray levels into RGB. Thread-safe: filling
    takes a lock, and lookups read only blocks already filled."""

    def __init__(self) -> None:
        n = GRAY_TABLE_NODES
        self._blocks = -(-n // _BLOCK)
        self._filled = np.zeros((self._blocks, self._blocks), bool)
        self._table = np.frombuffer(private_memory(n * n * 256 * 4, huge_pages=False),
                                    np.uint8).reshape(n, n, 256, 4)
        self._lock = threading.Lock()
        self._prefilling: threading.Thread | None = None

    def _entries(self) -> Tensor:
        """The table as (a, b, gray) int32 entries, a tensor made per call: made once, it
        would be an inference tensor if first made under ``torch.inference_mode`` and could
        not be written outside it."""
        return torch.from_numpy(self._table.view(np.int32)[..., 0])

    @property
    def filled_entries(self) -> int:
        return int(self._filled.sum()) * _BLOCK * _BLOCK * 256

    def prefill(self) -> None:
        """Fill the blocks of :data:`GRAY_TABLE_COMMON`, where most photos' colour falls."""
        (a0, a1), (b0, b1) = GRAY_TABLE_COMMON
        corners = torch.tensor([[[a0, a1]], [[b0, b1]]]) / AB_SCALE
        self.prepare(gray_table_codes(corners))

    def prefill_in_background(self) -> None:
        """:meth:`prefill` once, on a thread of its own running its torch ops on one core: what
        a Colorizer starts when it is made (~30 ms of one core while its model loads), so that
        a first photo finds most of its colours filled."""
        from .device import inline_ops

        with self._lock:
            if self._prefilling is not None:
                return

            def fill() -> None:
                inline_ops()
                self.prefill()

            self._prefilling = threading.Thread(target=fill, name="retint-gray-table",
                                                daemon=True)
            self._prefilling.start()

    def prepare(self, codes: Tensor) -> None:
        """Fill every block that bilinear upsampling of ``codes`` (2,h,w) can reach: the nodes
        between the smallest and largest of each cell's four corners (edges repeated, as the
        upsampling repeats them), with a margin for float rounding."""
        c = codes.detach().float().cpu()
        lo_all, hi_all = _block_of(c.amin(dim=(1, 2)), -1e-3), _block_of(c.amax(dim=(1, 2)), 1e-3)
        if self._filled[lo_all[0] : hi_all[0] + 1, lo_all[1] : hi_all[1] + 1].all():
            return  # the whole map's range is filled: most photos, once the table is warm
        if c.shape[-2] < 2 or c.shape[-1] < 2:
            c = F.pad(c[None], (0, int(c.shape[-1] < 2), 0, int(c.shape[-2] < 2)),
                      mode="replicate")[0]
        corners = torch.stack((c[:, :-1, :-1], c[:, :-1, 1:], c[:, 1:, :-1], c[:, 1:, 1:]))
        lo = _block_of(corners.amin(0).reshape(2, -1), -1e-3)
        hi = _block_of(corners.amax(0).reshape(2, -1), 1e-3)
        # the union of the cells' rectangles of blocks: +1/-1 at their corners, running sums
        n = self._blocks + 1

        def count(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return np.bincount((rows * n + cols).ravel(), minlength=n * n)

        marks = (count(lo[0], lo[1]) - count(lo[0], hi[1] + 1) - count(hi[0] + 1, lo[1])
                 + count(hi[0] + 1, hi[1] + 1)).reshape(n, n)
        needed = marks.cumsum(0).cumsum(1)[:-1, :-1] > 0
        if (needed & ~self._filled).any():
            with self._lock:
                self._fill(needed & ~self._filled)

    def _fill(self, missing: np.ndarray) -> None:
        """Fill the missing blocks, a row of blocks (a range of a nodes) at a time from the
        first missing block of the row to its last. Each strip is made aside and written in
        one copy: blocks already filled between missing ones are written with the bytes they
        hold, which lookups in other threads may be reading (a channel at a time in place, a
        reader could see a colour with two channels still zero)."""
        a_part, b_part = _gray_table_parts()
        encode = _gray_table_encoders()
        for ba in np.flatnonzero(missing.any(axis=1)):
            cols = np.flatnonzero(missing[ba])
            a0, a1 = ba * _BLOCK, min((ba + 1) * _BLOCK, GRAY_TABLE_NODES)
            b0, b1 = cols[0] * _BLOCK, min((cols[-1] + 1) * _BLOCK, GRAY_TABLE_NODES)
            strip = torch.empty((a1 - a0, b1 - b0, 256), dtype=torch.int32)
            for c in range(3):
                steps = a_part[c, a0:a1, None] + b_part[c, None, b0:b1]  # (a, b, 256)
                index = steps.clamp_(0.5, _LINEAR_STEPS + 0.5).to(torch.int32).view(-1)
                byte = torch.index_select(encode[c], 0, index).view(strip.shape)
                strip.copy_(byte) if c == 0 else strip.bitwise_or_(byte)
            self._entries()[a0:a1, b0:b1] = strip
            self._filled[ba, cols[0] : cols[-1] + 1] = True

    def lookup(self, codes: Tensor, gray: Tensor, out: np.ndarray) -> None:
        """One band: ``codes`` (2,h,w) float32, upsampled from a prepared map, and ``gray``
        (h,w) uint8 into ``out``, a C-contiguous (h,w,4) uint8 view of the result (R, G, B and
        an unused byte: what Pillow holds, so encoders take it as it is). Each thread keeps its
        own scratch buffers from band to band."""
        h, w = gray.shape
        n = h * w
        scratch = getattr(_GRAY_SCRATCH, "buffers", None)
        if scratch is None or scratch.shape[1] < n:
            with torch.inference_mode(False):  # usable in and out of inference mode
                scratch = _GRAY_SCRATCH.buffers = torch.empty((3, n), dtype=torch.int32)
        ab, index = scratch[:2, :n], scratch[2, :n]
        ab.copy_(codes.reshape(2, n))  # truncation: the nearest node (the codes carry the half)
        torch.add(ab[1], ab[0], alpha=GRAY_TABLE_NODES, out=index)
        torch.add(gray.reshape(n), index, alpha=256, out=index)
        torch.index_select(self._entries().view(-1), 0, index,
                           out=torch.from_numpy(out.view(np.int32)).view(n))


_GRAY_SCRATCH = threading.local()
_GRAY_TABLE: GrayTable | None = None
_GRAY_TABLE_LOCK = threading.Lock()


def _after_fork() -> None:
    """A forked child has the table but not the threads that might have held its locks (a
    prefill in the background, a fill): new locks, and a prefill may start again."""
    global _GRAY_TABLE_LOCK
    _GRAY_TABLE_LOCK = threading.Lock()
    if _GRAY_TABLE is not None:
        _GRAY_TABLE._lock = threading.Lock()
        _GRAY_TABLE._prefilling = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def gray_table(fresh: bool = False) -> GrayTable:
    """The process's :class:`GrayTable`, made on first use; ``fresh`` drops the one filled so
    far (a benchmark times the first photo of a process that way)."""
    global _GRAY_TABLE
    with _GRAY_TABLE_LOCK:
        if _GRAY_TABLE is None or fresh:
            _GRAY_TABLE = GrayTable()
        return _GRAY_TABLE
