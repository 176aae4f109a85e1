"""Safe image reading and writing.

Inputs are untrusted photos: every failure becomes a one-line ``ImageReadError`` naming the file,
huge images are refused from their header before any pixel is decoded, and outputs are written
atomically so an interrupted run never leaves a half-written picture behind.
"""

from __future__ import annotations

import glob
import os
import stat
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The one table of image formats: file suffix -> Pillow format name.
FORMATS: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
                           ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
IMAGE_SUFFIXES: frozenset[str] = frozenset(FORMATS)
#: A format as users name it (``--format``, the API's ``format``) -> the suffix written.
SUFFIX_FOR_FORMAT: dict[str, str] = {"jpg": ".jpg", "jpeg": ".jpg", "png": ".png",
                                     "webp": ".webp", "tiff": ".tif", "tif": ".tif",
                                     "bmp": ".bmp"}
DEFAULT_MAX_PIXELS: int = 200_000_000
#: JPEG chroma subsampling written by default: full colour resolution.
JPEG_SUBSAMPLING: str = "4:4:4"
_SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}  # Pillow's numbering
_GRAY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
# Raw layouts that Pillow reduces to 8 bits (it keeps only the high byte of each sample).
_RGB16_RAWMODES = {f"{m};16{e}" for m in ("RGB", "RGBA") for e in "BLN"}
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An input file could not be read as an image; the message is one line and names the file."""


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported image as an upright HxWx3 array (uint8, or uint16 for 16-bit sources).

    Size is checked from the header before decoding, so a decompression bomb costs nothing.
    """
    return _read(Path(path), max_pixels, keep_gray=False)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """As :func:`read_rgb`, except that an 8-bit black-and-white photo (one channel: Pillow
    mode ``L`` or ``1``, no transparency) comes back as it is stored, HxW uint8: a third of the
    memory, decoded without a colour conversion. ``Colorizer`` takes either shape."""
    return _read(Path(path), max_pixels, keep_gray=True)


def _read(p: Path, max_pixels: int, keep_gray: bool) -> np.ndarray:
    try:
        if p.is_file() and p.stat().st_size == 0:
            raise ImageReadError(f"{p}: empty file")
        with _open(p) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(
                    f"{p}: image too large ({w}×{h} = {w * h} pixels, limit {max_pixels})"
                )
            rawmodes = {_rawmode(t[3]) for t in im.tile}
            if len(rawmodes) == 1 and rawmodes <= _RGB16_RAWMODES:
                return _read_rgb16(p, rawmodes.pop())
            if keep_gray:
                gray = _decode_gray_in_place(im)
                if gray is not None:
                    return gray
            ImageOps.exif_transpose(im, in_place=True)  # a copy only where it must turn
            return _to_rgb(im, keep_gray)
    except (ImageReadError, MemoryError):
        raise
    except Exception as e:
        raise ImageReadError(" ".join(f"{p}: {_reason(e)}".splitlines())) from e


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """An opened PIL image as :func:`read_rgb` would return it (upright HxWx3)."""
    return _to_rgb(ImageOps.exif_transpose(im))


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Pixels as 8 bits: uint16 rounded to the nearest level (x / 257), floats in [0, 1]
    scaled and rounded (NaN as 0); uint8 passes through."""
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.uint16:
        return ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if rgb.dtype.kind == "f":
        return np.rint(np.clip(np.nan_to_num(rgb), 0, 1) * 255).astype(np.uint8)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {rgb.dtype}")


def to_float(rgb: np.ndarray) -> np.ndarray:
    """Scale uint8 (/255) or uint16 (/65535) pixels to float32 in [0, 1]; floats pass through."""
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255
    if rgb.dtype == np.uint16:
        return rgb.astype(np.float32) / 65535
    if rgb.dtype.kind == "f":
        return rgb.astype(np.float32)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {rgb.dtype}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A hidden temp file beside ``path`` to write to; on success it is flushed to disk and
    renamed onto ``path`` (readers see the old file or the whole new one, never half), on any
    exception, Ctrl-C included, it is removed. ``suffix`` lets a writer that picks its format
    from the name (a video container) see the right one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash cannot expose junk
            os.fsync(f.fileno())
        os.chmod(tmp, _final_mode(path))  # mkstemp's 0600 would otherwise stick
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_name)`` on a temp file beside ``path``, then rename it onto ``path``
    (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def image_header(path: str | Path) -> tuple[str, int, int]:
    """(Pillow format name, width, height) from the header alone, without decoding pixels:
    what a server needs to refuse a non-image or a decompression bomb cheaply."""
    with _open(Path(path)) as im:
        return im.format or "", im.width, im.height


def encode_image(f: IO[bytes], rgb: np.ndarray, fmt: str, quality: int = 95,
                 name: str = "image", subsampling: str = JPEG_SUBSAMPLING) -> None:
    """Encode an HxWx3 uint8/uint16/float-in-[0,1] array into ``f`` as a Pillow format
    ("JPEG", "PNG", "WEBP", "TIFF", "BMP"). uint16 stays 16-bit in PNG and TIFF and is reduced to
    8 bits elsewhere. JPEG's chroma ``subsampling`` is "4:4:4" (full colour resolution, the
    default) or "4:2:0" (colour at half resolution each way: a faster encode, a smaller file)."""
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"{name}: JPEG subsampling must be one of "
                         f"{', '.join(_SUBSAMPLING)}, got {subsampling!r}")
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty HxWx3 array, got shape {a.shape}")
    if a.dtype.kind == "f" or (a.dtype == np.uint16 and fmt not in ("PNG", "TIFF")):
        a = to_uint8(a)
    elif a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name}: expected uint8, uint16 or float pixels, got {a.dtype}")
    if a.dtype == np.uint16:
        (_write_png16 if fmt == "PNG" else _write_tiff16)(f, a)
        return
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = _SUBSAMPLING[subsampling]
        stitched = jpeg_in_stripes(a, quality, subsampling)
        if stitched is not None:
            f.write(stitched)
            return
        _pillow(a).save(f, format=fmt, **options)
        return
    im = _pillow(a)
    (im.convert("RGB") if im.mode == "RGBX" else im).save(f, format=fmt, **options)


def rgbx_buffer(rgb: np.ndarray) -> np.ndarray | None:
    """The (H,W,4) pixels an (H,W,3) uint8 array is the first three bytes of, if it is such a
    view (whole or a band of rows): the Colorizer gives a black-and-white photo's 8-bit result
    that way (R, G, B and an unused byte a pixel, Pillow's own layout, so encoders take it
    without a copy). None for any other array. Read-only."""
    h, w = rgb.shape[:2]
    base = rgb.base
    if (rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3
            or rgb.strides != (4 * w, 4, 1) or not isinstance(base, np.ndarray)):
        return None
    start = rgb.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if start < 0 or start + 4 * w * h > base.nbytes or not base.flags.c_contiguous:
        return None  # the fourth byte of every pixel must lie in the memory the view shares
    return np.lib.stride_tricks.as_strided(rgb, (h, w, 4), rgb.strides, writeable=False)


def contiguous_rgb(rgb: np.ndarray) -> np.ndarray:
    """A C-contiguous (H,W,3) 8-bit RGB array of ``rgb`` (itself if it already is one): a view
    of 4-byte pixels is packed by Pillow, ~5x faster than NumPy's strided copy (1.4 against
    6.8 ms for a 1080p frame); what a consumer that needs plain RGB bytes (PyAV) takes."""
    if rgbx_buffer(rgb) is None:
        return np.ascontiguousarray(rgb)
    return np.frombuffer(_pillow(rgb).tobytes("raw", "RGB"), np.uint8).reshape(rgb.shape)


def _pillow(rgb: np.ndarray) -> Image.Image:
    """An 8-bit RGB array as a Pillow image: an RGBX view is shared as it is, without a copy
    (Pillow's JPEG encoder reads RGBX); anything else is copied in."""
    rgbx = rgbx_buffer(rgb)
    if rgbx is not None:
        h, w = rgbx.shape[:2]
        return Image.frombuffer("RGBX", (w, h), rgbx, "raw", "RGBX", 0, 1)
    return Image.fromarray(np.ascontiguousarray(rgb))


#: A JPEG this large is encoded in horizontal stripes on several threads (jpeg_in_stripes).
STRIPED_JPEG_PIXELS = 2_000_000


def _jpeg_segments(data: bytes) -> tuple[bytes, int, bytes]:
    """A baseline JPEG from Pillow -> (everything up to and with its scan header, where its
    height field is, the entropy-coded data up to EOI)."""
    pos = 2  # after SOI
    height_at = -1
    while True:
        if data[pos] != 0xFF:
            raise ValueError("not a JPEG segment")
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xC0:  # SOF0: precision, height, width, ...
            height_at = pos + 5
        elif marker in (0xC1, 0xC2, 0xDD):  # not baseline, or restarts already
            raise ValueError("not a plain baseline JPEG")
        pos += 2 + length
        if marker == 0xDA:  # SOS: the entropy-coded data follows, up to EOI
            if data[-2:] != b"\xff\xd9" or height_at < 0:
                raise ValueError("no single scan")
            return data[:pos], height_at, data[pos:-2]


def jpeg_in_stripes(rgb: np.ndarray, quality: int, subsampling: str) -> bytes | None:
    """The JPEG of ``rgb`` encoded in horizontal stripes on several threads and joined with
    restart markers into one baseline file that decodes to the same pixels as a one-pass
    encode: each stripe is a whole number of MCU rows, a restart resets what a new file resets
    (the DC predictions, the bit buffer), and the tables are the same. None where one thread
    would do (a small photo, one core), or where the stripes cannot be joined."""
    from . import device

    h, w = rgb.shape[:2]
    threads = device.usable_cores()
    if h * w < STRIPED_JPEG_PIXELS or threads < 2:
        return None
    mcu = 16 if subsampling == "4:2:0" else 8
    per_row = -(-w // mcu)  # MCUs in a row; a restart interval holds at most 65,535
    mcu_rows, most = -(-h // mcu), 65_535 // per_row
    if most == 0:
        return None
    # as many stripes as the cap asks, rounded up to a multiple of the threads, so that each
    # thread encodes as much (12 MP on 2 cores: 4 stripes, not 2 at the cap and a third alone)
    stripes = -(-max(-(-mcu_rows // most), threads) // threads) * threads
    rows = -(-mcu_rows // stripes) * mcu
    if rows >= h:
        return None
    bounds = [(r, min(h, r + rows)) for r in range(0, h, rows)]

    def encode(span: tuple[int, int]) -> bytes:
        with tempfile.TemporaryFile() as t:  # to a file: Pillow then encodes without the GIL
            _pillow(rgb[span[0] : span[1]]).save(
                t, format="JPEG", quality=quality, subsampling=_SUBSAMPLING[subsampling])
            t.seek(0)
            return t.read()

    pool = device.thread_pool("jpeg", threads)
    try:  # anything unexpected (a full temp folder, a header not parsed): encode in one pass
        parts = [_jpeg_segments(d) for d in pool.map(encode, bounds)]
    except (OSError, ValueError):
        return None
    header, height_at, _ = parts[0]

    def blank(head: bytes, at: int) -> bytes:  # the header without its height
        return head[:at] + head[at + 2 :]

    if any(blank(hd, at) != blank(header, height_at) for hd, at, _ in parts):
        return None
    sos = header.rfind(b"\xff\xda")
    out = [header[:height_at], struct.pack(">H", h), header[height_at + 2 : sos],
           b"\xff\xdd\x00\x04", struct.pack(">H", (rows // mcu) * per_row), header[sos:]]
    for k, (_, _, scan) in enumerate(parts):
        if k:
            out.append(bytes((0xFF, 0xD0 + (k - 1) % 8)))
        out.append(scan)
    out.append(b"\xff\xd9")
    return b"".join(out)


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an HxWx3 uint8/uint16/float-in-[0,1] array atomically; the format follows the suffix.

    uint16 stays 16-bit in PNG and TIFF and is reduced to 8 bits elsewhere.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown image suffix {path.suffix!r} "
            f"(expected one of {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.size == 0:  # checked before any file is created
        raise ValueError(f"{path}: expected a non-empty HxWx3 array, got shape {a.shape}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            encode_image(f, a, fmt, quality, name=str(path))

    atomic_write(path, write)


def find_images(inputs: Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Expand files, folders and glob patterns into a de-duplicated list of image paths.

    Explicit files are kept whatever their suffix so that the reader can say what is wrong.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths = list(_walk(p, recursive))
        elif p.exists():
            paths = [p]
        else:
            matches = [Path(m) for m in glob.glob(str(item), recursive=True)]
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            paths = [
                f
                for m in matches
                for f in (_walk(m, recursive) if m.is_dir() else [m])
                if f.suffix.lower() in IMAGE_SUFFIXES
            ]
        for f in sorted(paths):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def _final_mode(path: Path) -> int:
    """Keep an existing file's permissions; else act like open() (NamedTemporaryFile is 0600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows; os.umask can only set it,
    so elsewhere it is set briefly to a strict 077 (a racing file would be private, not open)."""
    with suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# --- reading helpers -------------------------------------------------------------------------


def _open(p: Path) -> Image.Image:
    """Open lazily (header only) with Pillow's global pixel limit lifted, so that ``max_pixels``
    is the single limit; the lock keeps our own concurrent calls from leaking the override."""
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(p)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _reason(e: Exception) -> str:
    """A short human reason for a failed read."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    if isinstance(e, Image.DecompressionBombError):
        return f"image too large ({e})"
    return f"corrupt or truncated image ({str(e) or type(e).__name__})"


def _rawmode(args: Any) -> str | None:
    """The raw (on-disk) pixel layout of a decoder tile."""
    if isinstance(args, str):
        return args
    return args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else None


def _read_rgb16(p: Path, rawmode: str) -> np.ndarray:
    """Keep all 16 bits of RGB(A) PNG/TIFF, which Pillow only decodes to 8.

    Pillow's decoder keeps the most significant byte of each sample; decoding a second time with
    the byte order flipped yields the least significant byte, and the two planes are recombined.
    """
    order = rawmode[-1]
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    flipped = rawmode[:-1] + ("B" if order == "L" else "L")
    planes = []
    for raw in (rawmode, flipped):
        with _open(p) as im:
            im.tile = [_with_rawmode(t, raw) for t in im.tile]
            planes.append(np.asarray(ImageOps.exif_transpose(im), dtype=np.uint16))
    rgb = planes[0] << 8 | planes[1]
    if rgb.shape[2] == 4:
        rgb = _over_white(rgb, 65535)
    return np.require(rgb, np.uint16, ("C", "W"))


def _with_rawmode(tile: Any, raw: str) -> Any:
    args = raw if isinstance(tile[3], str) else (raw, *tile[3][1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def _to_rgb(im: Image.Image, keep_gray: bool = False) -> np.ndarray:
    """Convert any Pillow mode to HxWx3: alpha over white, gray replicated (or, with
    ``keep_gray``, 8-bit gray left as one HxW channel), 16-bit gray kept."""
    if im.mode in _GRAY16_MODES:  # I;16* from 16-bit PNG/TIFF; I (int32) clipped to 16 bits
        return _gray3(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
    if im.mode == "F":  # float TIFF: [0, 1] if it looks normalised, else on the 16-bit scale
        f = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 65535 if f.max(initial=0) <= 1 else 1
        return _gray3(np.rint(np.clip(f * scale, 0, 65535)).astype(np.uint16))
    if im.mode in _ALPHA_MODES or "transparency" in im.info:  # incl. P/L/RGB with tRNS
        return _over_white(np.asarray(im.convert("RGBA")), 255)
    if im.mode in ("1", "L"):
        gray = np.asarray(im if im.mode == "L" else im.convert("L"))
        return np.require(gray, np.uint8, ("C", "W")) if keep_gray else _gray3(gray)
    return np.require(np.asarray(im.convert("RGB")), np.uint8, ("C", "W"))  # P, CMYK, YCbCr..


def _decode_gray_in_place(im: Image.Image) -> np.ndarray | None:
    """A black-and-white JPEG that needs no turning, decoded straight into a NumPy array:
    Pillow decodes into image memory it is handed before loading (ImageFile keeps an image it
    already has), here memory shared with the array, so the pixels are not copied twice more
    (to bytes, then to a writable array): ~12 ms of 47 for 12 MP. None where that does not
    hold, and the ordinary path reads it. JPEG only: other plugins may load while their EXIF
    is read (PNG does), and an image already loaded would leave the array as it was."""
    if im.format != "JPEG" or im.mode != "L" or "transparency" in im.info:
        return None
    if im.getexif().get(0x0112, 1) != 1 or not im.tile:  # turned, or loaded already
        return None
    gray = np.empty((im.height, im.width), np.uint8)
    shared = Image.frombuffer("L", im.size, gray, "raw", "L", 0, 1).im
    im.im = shared
    im.load()
    return gray if im.im is shared else None  # Pillow made its own: read as usual


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _over_white(rgba: np.ndarray, full: int) -> np.ndarray:
    """Composite straight alpha onto white with integer rounding (fits uint32 even for 16 bit)."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    out = (rgb * alpha + full * (full - alpha) + full // 2) // full
    return out.astype(np.uint8 if full == 255 else np.uint16)


def _walk(root: Path, recursive: bool) -> Iterator[Path]:
    """Image files under ``root``, skipping hidden files and folders (caches, our temp files)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if recursive and not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath, name)


# --- 16-bit writers: Pillow cannot create 16-bit RGB images, so write the simple files here ---


def _write_png16(f: IO[bytes], rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = rgb.astype(">u2").view(np.uint8).reshape(h, w * 6)
    rows = np.empty((h, w * 6 + 1), np.uint8)
    rows[:, 0] = 1  # "Sub" filter: left-neighbour deltas compress photos far better than none
    rows[:, 1:7] = raw[:, :6]
    rows[:, 7:] = raw[:, 6:] - raw[:, :-6]  # uint8 arithmetic wraps modulo 256, as PNG wants
    data = zlib.compress(rows.tobytes(), 6)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">2I5B", w, h, 16, 2, 0, 0, 0)))
    for i in range(0, len(data), 1 << 24):
        f.write(chunk(b"IDAT", data[i : i + (1 << 24)]))
    f.write(chunk(b"IEND", b""))


def _write_tiff16(f: IO[bytes], rgb: np.ndarray) -> None:
    """Baseline little-endian TIFF: header, one uncompressed strip, BitsPerSample, then the IFD."""
    h, w, _ = rgb.shape
    nbytes = h * w * 6
    if nbytes > 0xFFFF_0000:
        raise ValueError(f"image of {nbytes} bytes is too large for a classic TIFF; use PNG")
    bps_at = 8 + nbytes
    tags = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, bps_at),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8),
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, nbytes),
        (284, 3, 1, 1),
    ]
    f.write(b"II*\x00" + struct.pack("<I", bps_at + 6))
    f.write(np.ascontiguousarray(rgb, dtype="<u2").tobytes())
    f.write(struct.pack("<3HH", 16, 16, 16, len(tags)))
    f.write(b"".join(struct.pack("<2HII", *t) for t in tags) + struct.pack("<I", 0))
