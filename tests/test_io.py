"""Tests for retint.io: real files of every format and mode, built in tmp_path with Pillow."""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin
from skimage import data

import retint.device
import retint.io as rio
from retint.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    find_images,
    read_rgb,
    to_float,
    write_image,
)

RNG = np.random.default_rng(0)
ASTRO = np.ascontiguousarray(data.astronaut()[100:140, 180:244])  # 40x64, not square on purpose
CAMERA = np.ascontiguousarray(data.camera()[200:240, 200:264])


def save(path: Path, im: Image.Image, **kw) -> Path:
    im.save(path, **kw)
    return path


def chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_bytes(a: np.ndarray, color_type: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG written by hand (filter 0), independent of the module's own writer."""
    h, w = a.shape[:2]
    rows = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">2I5B", w, h, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def exif_chunk(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return chunk(b"eXIf", exif.tobytes()[6:])  # PNG eXIf has no "Exif\0\0" header


def mode_of(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- round trips -----------------------------------------------------------------------------


def test_constants():
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
    assert isinstance(IMAGE_SUFFIXES, frozenset)
    assert DEFAULT_MAX_PIXELS == 200_000_000
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp", ".PNG", ".webp-lossless"])
def test_lossless_roundtrip(tmp_path, suffix):
    if suffix == ".webp-lossless":  # write_image's WebP is lossy; check the reader on lossless
        path = save(tmp_path / "a.webp", Image.fromarray(ASTRO), lossless=True)
    else:
        path = tmp_path / f"a{suffix}"
        write_image(path, ASTRO)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, ASTRO)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".JPG"])
def test_lossy_roundtrip(tmp_path, suffix):
    write_image(tmp_path / f"a{suffix}", ASTRO, quality=95)
    out = read_rgb(tmp_path / f"a{suffix}")
    assert out.shape == ASTRO.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ASTRO).mean() < 4


def test_jpeg_written_without_chroma_subsampling(tmp_path):
    write_image(tmp_path / "a.jpg", ASTRO)
    with Image.open(tmp_path / "a.jpg") as im:
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_uint16_roundtrip_is_exact(tmp_path, suffix):
    a = RNG.integers(0, 65536, (23, 37, 3), dtype=np.uint16)
    a[0, 0], a[-1, -1] = 0, 65535
    write_image(tmp_path / f"a{suffix}", a)
    out = read_rgb(tmp_path / f"a{suffix}")
    assert out.dtype == np.uint16 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, a)
    # the file is valid for other readers too: Pillow itself sees the high bytes
    with Image.open(tmp_path / f"a{suffix}") as im:
        np.testing.assert_array_equal(np.asarray(im), (a >> 8).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_uint16_reduced_to_8_bit_elsewhere(tmp_path, suffix):
    a = ASTRO.astype(np.uint16) * 257
    write_image(tmp_path / f"a{suffix}", a)
    out = read_rgb(tmp_path / f"a{suffix}")
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - ASTRO).mean() < (0.01 if suffix == ".bmp" else 4)


def test_float_input_is_clipped_and_rounded(tmp_path):
    f = np.array([[[0.0, 0.5, 1.0], [-1.0, 2.0, np.nan], [0.2, 0.001, 0.999]]], dtype=np.float64)
    write_image(tmp_path / "f.png", f)
    np.testing.assert_array_equal(
        read_rgb(tmp_path / "f.png"), [[[0, 128, 255], [0, 255, 0], [51, 0, 255]]]
    )


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown image suffix"):
        write_image(tmp_path / "a.gif", ASTRO)
    with pytest.raises(ValueError, match="unknown image suffix"):
        write_image(tmp_path / "noext", ASTRO)
    with pytest.raises(ValueError, match="HxWx3"):
        write_image(tmp_path / "a.png", CAMERA)
    with pytest.raises(ValueError, match="int32"):
        write_image(tmp_path / "a.png", ASTRO.astype(np.int32))
    assert listing(tmp_path) == []


def test_to_float():
    assert to_float(np.array([0, 51, 255], np.uint8)).tolist() == pytest.approx([0, 0.2, 1])
    u16 = to_float(np.array([0, 65535], np.uint16))
    assert u16.dtype == np.float32 and u16.tolist() == [0.0, 1.0]
    assert to_float(np.array([0.5])).dtype == np.float32
    with pytest.raises(TypeError):
        to_float(np.array([1], np.int32))


# --- modes -----------------------------------------------------------------------------------


def test_mode_1(tmp_path):
    bits = CAMERA > 128
    im = Image.fromarray(bits)
    assert im.mode == "1"
    out = read_rgb(save(tmp_path / "a.png", im))
    assert out.dtype == np.uint8 and out.shape == (*bits.shape, 3)
    np.testing.assert_array_equal(out, np.repeat(bits[..., None] * 255, 3, axis=2))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_mode_L_replicated(tmp_path, suffix):
    out = read_rgb(save(tmp_path / f"a{suffix}", Image.fromarray(CAMERA)))
    assert out.shape == (*CAMERA.shape, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], CAMERA)


def test_mode_LA_alpha_over_white(tmp_path):
    alpha = np.zeros_like(CAMERA)
    alpha[:, 32:] = 255
    im = Image.fromarray(np.stack([CAMERA, alpha], axis=2), mode="LA")
    out = read_rgb(save(tmp_path / "a.png", im))
    assert (out[:, :32] == 255).all()
    np.testing.assert_array_equal(out[:, 32:, 1], CAMERA[:, 32:])


def test_mode_RGBA_alpha_over_white(tmp_path):
    alpha = np.full(ASTRO.shape[:2], 255, np.uint8)
    alpha[:, :20], alpha[:, 20:40] = 0, 128
    im = Image.fromarray(np.dstack([ASTRO, alpha]))
    out = read_rgb(save(tmp_path / "a.png", im))
    assert out.shape == ASTRO.shape and out.dtype == np.uint8
    assert (out[:, :20] == 255).all()
    half = np.rint((ASTRO[:, 20:40].astype(int) * 128 + 255 * 127) / 255)
    np.testing.assert_array_equal(out[:, 20:40], half)
    np.testing.assert_array_equal(out[:, 40:], ASTRO[:, 40:])


def test_mode_P(tmp_path):
    im = Image.fromarray(ASTRO).quantize(32)
    assert im.mode == "P"
    out = read_rgb(save(tmp_path / "a.png", im))
    np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))
    assert np.abs(out.astype(int) - ASTRO).mean() < 12


def test_mode_P_with_transparency(tmp_path):
    im = Image.fromarray(ASTRO).quantize(32)
    index = np.asarray(im)
    clear = int(index[0, 0])
    out = read_rgb(save(tmp_path / "a.png", im, transparency=clear))
    assert (out[index == clear] == 255).all()
    opaque = np.asarray(im.convert("RGB"))[index != clear]
    np.testing.assert_array_equal(out[index != clear], opaque)


def test_mode_RGB_with_color_key(tmp_path):
    a = ASTRO.copy()
    a[:5, :5] = (1, 2, 3)
    out = read_rgb(save(tmp_path / "a.png", Image.fromarray(a), transparency=(1, 2, 3)))
    assert (out[:5, :5] == 255).all()
    np.testing.assert_array_equal(out[5:], a[5:])


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_mode_CMYK(tmp_path, suffix):
    im = Image.new("CMYK", (16, 8), (255, 0, 0, 0))  # pure cyan
    assert mode_of(save(tmp_path / f"a{suffix}", im)) == "CMYK"
    out = read_rgb(tmp_path / f"a{suffix}")
    assert out.shape == (8, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (0, 255, 255)).max() <= 8


def test_mode_YCbCr(tmp_path):
    path = save(tmp_path / "a.tif", Image.fromarray(ASTRO).convert("YCbCr"))
    assert mode_of(path) == "YCbCr"
    out = read_rgb(path)
    assert out.shape == ASTRO.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ASTRO).max() <= 4


@pytest.mark.parametrize("suffix,dtype", [(".png", "<u2"), (".tif", "<u2"), (".tif", ">u2")])
def test_gray16_keeps_depth(tmp_path, suffix, dtype):
    g = RNG.integers(0, 65536, (21, 13)).astype(dtype)
    path = save(tmp_path / f"a{suffix}", Image.fromarray(g))
    assert mode_of(path) in ("I;16", "I;16B")
    out = read_rgb(path)
    assert out.dtype == np.uint16 and out.shape == (21, 13, 3) and out.dtype.isnative
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_mode_I_clipped_to_16_bit(tmp_path):
    path = save(tmp_path / "a.tif", Image.fromarray(np.array([[-5, 70000, 300]], np.int32)))
    assert mode_of(path) == "I"
    out = read_rgb(path)
    assert out.dtype == np.uint16
    assert out[0, :, 0].tolist() == [0, 65535, 300]


def test_mode_F(tmp_path):
    unit = save(tmp_path / "u.tif", Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)))
    assert mode_of(unit) == "F"
    assert read_rgb(unit)[0, :, 2].tolist() == [0, 16384, 65535]
    big = save(tmp_path / "b.tif", Image.fromarray(np.array([[-3.0, 500.4, 1e6]], np.float32)))
    out = read_rgb(big)
    assert out.dtype == np.uint16 and out[0, :, 0].tolist() == [0, 500, 65535]


def test_png16_rgb_from_foreign_writer(tmp_path):
    a = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png_bytes(a, color_type=2))
    out = read_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, a)


def test_png16_rgba_over_white(tmp_path):
    a = RNG.integers(0, 65536, (6, 8, 4), dtype=np.uint16)
    a[:, :4, 3], a[:, 4:, 3] = 0, 65535
    (tmp_path / "a.png").write_bytes(png_bytes(a, color_type=6))
    out = read_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint16 and out.shape == (6, 8, 3)
    assert (out[:, :4] == 65535).all()
    np.testing.assert_array_equal(out[:, 4:], a[:, 4:, :3])


def test_png16_gray_alpha_reads_as_8_bit(tmp_path):
    # Pillow decodes 16-bit gray+alpha PNG to 8-bit RGBA and offers no way back to 16 bits
    a = np.zeros((4, 6, 2), np.uint16)
    a[..., 0], a[:, :3, 1], a[:, 3:, 1] = 40000, 0, 65535
    (tmp_path / "a.png").write_bytes(png_bytes(a, color_type=4))
    out = read_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    assert (out[:, :3] == 255).all() and (out[:, 3:] == 40000 >> 8).all()


# --- EXIF orientation ------------------------------------------------------------------------


@pytest.mark.parametrize("orientation,corner", [(6, (4, -5)), (8, (-5, 4))])
def test_exif_orientation_jpeg(tmp_path, orientation, corner):
    a = np.full((40, 64, 3), 128, np.uint8)
    a[:16, :16] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "a.jpg", Image.fromarray(a), exif=exif, quality=95)
    out = read_rgb(path)
    assert out.shape == (64, 40, 3)
    assert np.abs(out[corner].astype(int) - (255, 0, 0)).max() < 40  # 6: top-right, 8: bottom-left
    for other in [(4, 4), (-5, -5)]:
        assert np.abs(out[other].astype(int) - 128).max() < 40


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_values(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "a.png", Image.fromarray(ASTRO), exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_rgb(path), expected)
    # the 16-bit path applies the same orientation
    a16 = ASTRO.astype(np.uint16) * 257 + 3
    (tmp_path / "b.png").write_bytes(png_bytes(a16, 2, extra=exif_chunk(orientation)))
    out = read_rgb(tmp_path / "b.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, expected.astype(np.uint16) * 257 + 3)


# --- size limits -----------------------------------------------------------------------------


def test_too_large_refused_before_decoding(tmp_path, monkeypatch):
    path = save(tmp_path / "a.png", Image.fromarray(ASTRO))

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageReadError) as err:
        read_rgb(path, max_pixels=100)
    assert str(err.value) == f"{path}: image too large (64×40 = 2560 pixels, limit 100)"


def test_huge_header_refused(tmp_path):
    small = png_bytes(np.zeros((1, 1, 3), np.uint16), color_type=2)
    ihdr = b"IHDR" + struct.pack(">2I5B", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]  # 80 bytes
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ImageReadError, match=r"too large \(100000×100000 = 10000000000 pixels"):
        read_rgb(tmp_path / "bomb.png")


def test_own_limit_overrides_pillow_global(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 2560 pixels
    path = save(tmp_path / "a.png", Image.fromarray(ASTRO))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_rgb(path), ASTRO)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored, not leaked


# --- unreadable inputs -----------------------------------------------------------------------


def _truncated(path: Path, suffix: str) -> None:
    save(path.with_suffix(suffix), Image.fromarray(ASTRO))
    raw = path.with_suffix(suffix).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize(
    "name,make,reason",
    [
        ("text.jpg", lambda p: p.write_text("hello\nworld\n"), "not an image"),
        ("empty.png", lambda p: p.write_bytes(b""), "empty file"),
        ("cut.jpg", lambda p: _truncated(p, ".full.jpg"), "corrupt or truncated"),
        ("cut.png", lambda p: _truncated(p, ".full.png"), "corrupt or truncated"),
        ("junk.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 9), "corrupt"),
        ("missing.png", lambda p: None, "no such file"),
        ("folder.png", lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_unreadable_inputs(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageReadError) as err:
        read_rgb(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message
    assert "\n" not in message and "\r" not in message


# --- atomic writes ---------------------------------------------------------------------------


def _fail_in_save(monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)


def _fail_in_png16(monkeypatch):
    def broken(f, rgb):
        f.write(b"half an image")
        raise RuntimeError("disk full")

    monkeypatch.setattr(rio, "_write_png16", broken)


def _disk_full(*args):
    raise RuntimeError("disk full")


def _fail_in_fsync(monkeypatch):
    monkeypatch.setattr(rio.os, "fsync", _disk_full)


def _fail_in_replace(monkeypatch):
    monkeypatch.setattr(rio.os, "replace", _disk_full)


@pytest.mark.parametrize("fail", [_fail_in_save, _fail_in_png16, _fail_in_fsync, _fail_in_replace])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, fail, existing):
    final = tmp_path / "out.png"
    if existing:
        final.write_bytes(b"previous result")
    fail(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(final, ASTRO.astype(np.uint16) if fail is _fail_in_png16 else ASTRO)
    if existing:
        assert final.read_bytes() == b"previous result"
    else:
        assert not final.exists()
    assert listing(tmp_path) == (["out.png"] if existing else [])


def test_write_creates_parents_and_leaves_no_temp(tmp_path):
    final = tmp_path / "a" / "b" / "out.jpg"
    write_image(final, ASTRO)
    write_image(final, ASTRO)  # overwrite in place
    assert listing(final.parent) == ["out.jpg"]
    umask = os.umask(0o077)
    os.umask(umask)
    assert rio._umask() == umask
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~umask  # not the temp file's 0600


def test_overwrite_keeps_permissions(tmp_path):
    final = tmp_path / "out.png"
    write_image(final, ASTRO)
    final.chmod(0o640)
    write_image(final, ASTRO[::-1])
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    np.testing.assert_array_equal(read_rgb(final), ASTRO[::-1])


# --- finding inputs --------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    for rel in [
        "a.jpg",
        "B.PNG",
        "notes.txt",
        ".hidden.jpg",
        ".cache/c.jpg",
        "sub/d.tiff",
        "sub/deeper/e.webp",
        "sub/deeper/f.jpg",
        "sub/.out.png.x1.tmp",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    return tmp_path


def test_find_folder(tree):
    expected = ["B.PNG", "a.jpg", "sub/d.tiff", "sub/deeper/e.webp", "sub/deeper/f.jpg"]
    assert find_images([tree]) == [tree / p for p in expected]
    assert find_images([str(tree)], recursive=False) == [tree / "B.PNG", tree / "a.jpg"]


def test_find_explicit_files_kept_whatever_the_suffix(tree):
    assert find_images([tree / "notes.txt", tree / ".hidden.jpg"]) == [
        tree / "notes.txt",
        tree / ".hidden.jpg",
    ]


def test_find_globs(tree):
    assert find_images([str(tree / "**" / "*.jpg")]) == [
        tree / "a.jpg",
        tree / "sub/deeper/f.jpg",
    ]  # hidden files and folders skipped
    assert find_images([str(tree / "s*")]) == [
        tree / "sub/d.tiff",
        tree / "sub/deeper/e.webp",
        tree / "sub/deeper/f.jpg",
    ]
    assert find_images([str(tree / "*.txt")]) == []  # matched, but nothing that is an image


def test_find_deduplicates_in_input_order(tree):
    found = find_images(
        [tree / "sub/deeper/f.jpg", tree, str(tree / "*.jpg"), tree / "sub" / ".." / "a.jpg"]
    )
    assert found == [
        tree / "sub/deeper/f.jpg",
        tree / "B.PNG",
        tree / "a.jpg",
        tree / "sub/d.tiff",
        tree / "sub/deeper/e.webp",
    ]


@pytest.mark.parametrize("missing", ["nope.jpg", "nope/", "*.gif"])
def test_find_missing_input(tree, missing):
    target = str(tree / missing)
    with pytest.raises(FileNotFoundError) as err:
        find_images([tree / "a.jpg", target])
    assert str(err.value) == f"{target}: no such file, folder or matching pattern"


@pytest.mark.parametrize(("size", "subsampling", "threads"), [
    ((1777, 1201), "4:4:4", 3),  # sides that are not whole MCUs
    ((1777, 1201), "4:2:0", 12),  # more stripes than the 8 restart markers: they cycle
    ((4000, 3000), "4:4:4", 2),  # 12 MP: a stripe is capped at 65,535 MCUs
])
def test_a_large_jpeg_encoded_in_stripes_decodes_to_the_one_pass_pixels(
        tmp_path, monkeypatch, size, subsampling, threads):
    monkeypatch.setattr(retint.device, "usable_cores", lambda: threads)
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize(size))
    one_pass = BytesIO()
    Image.fromarray(rgb).save(one_pass, format="JPEG", quality=95,
                              subsampling={"4:4:4": 0, "4:2:0": 2}[subsampling])
    striped = BytesIO()
    rio.encode_image(striped, rgb, "JPEG", 95, subsampling=subsampling)
    coded = striped.getvalue()
    assert b"\xff\xdd\x00\x04" in coded and b"\xff\xd0" in coded  # restart interval, markers
    if threads == 12:
        assert b"\xff\xd7" in coded and coded.count(b"\xff\xd0") >= 2
    if size == (4000, 3000):  # 2 at the cap would leave a third alone: 4, two a thread
        assert 1 + sum(coded.count(bytes((0xFF, 0xD0 + k))) for k in range(8)) == 4
    ours = np.asarray(Image.open(BytesIO(coded)))
    assert np.array_equal(ours, np.asarray(Image.open(one_pass)))
    import av  # another decoder (FFmpeg's) reads it the same way

    (tmp_path / "a.jpg").write_bytes(coded)
    (tmp_path / "b.jpg").write_bytes(one_pass.getvalue())
    frames = []
    for name in ("a.jpg", "b.jpg"):
        with av.open(str(tmp_path / name)) as c:
            frames.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
    assert np.array_equal(*frames)


def test_small_jpegs_and_one_core_keep_the_one_pass_encoder(monkeypatch):
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((1600, 1200)))  # 1.9 MP
    assert rio.jpeg_in_stripes(rgb, 95, "4:4:4") is None
    big = np.asarray(Image.fromarray(rgb).resize((1800, 1200)))
    monkeypatch.setattr(retint.device, "usable_cores", lambda: 1)
    assert rio.jpeg_in_stripes(big, 95, "4:4:4") is None
    monkeypatch.setattr(retint.device, "usable_cores", lambda: 2)
    assert rio.jpeg_in_stripes(big, 95, "4:4:4") is not None


def test_a_forked_child_encodes_in_stripes_with_threads_of_its_own(monkeypatch):
    """The stripe threads are kept for the process; a child forked after they started has
    none of them and must make its own, not wait on its parent's."""
    monkeypatch.setattr(retint.device, "usable_cores", lambda: 2)
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((1800, 1200)))
    first = rio.jpeg_in_stripes(rgb, 90, "4:4:4")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: encode again, report, leave at once
        try:
            same = rio.jpeg_in_stripes(rgb, 90, "4:4:4") == first
            os.write(write, b"1" if same else b"0")
        finally:
            os._exit(0)
    os.close(write)
    import select
    import signal

    ready, _, _ = select.select([read], [], [], 60)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert ready, "the forked child hung"
    assert os.read(read, 1) == b"1"
