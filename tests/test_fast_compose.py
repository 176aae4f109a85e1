"""Tests for the fast full-resolution path: black-and-white photos read and lit as one channel,
ab upsampled band by band, and the fused 8-bit LAB -> sRGB pass, each against the exact float
path on real photos (skimage.data); 16-bit and float results keep the exact path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from conftest import COLOR_PHOTOS, photo
from PIL import Image, JpegImagePlugin
from skimage.color import rgb2lab

from retint.color import (
    AB_SCALE,
    L_SCALE,
    lab_to_linear_rgb,
    lab_to_rgb,
    lightness_from_gray8,
    lightness_from_srgb8,
    linear_to_srgb8,
    model_to_rgb,
    rgb_to_l,
    rgb_to_lab,
    rgb_to_model,
)
from retint.inference import BilinearRows, Colorizer, working_shape
from retint.io import encode_image, read_image, read_rgb, write_image
from retint.metrics import ciede2000


@pytest.fixture(scope="module")
def colorizer(model_files) -> Colorizer:
    return Colorizer(model=str(model_files["student"]), device="cpu")


def _lab(rgb8: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(rgb8 / 255.0).permute(2, 0, 1))


def _gray(name: str) -> np.ndarray:
    """A real photo in black and white, one channel, as Pillow makes a gray JPEG of it."""
    return np.asarray(Image.fromarray(photo(name)).convert("L"))


def _real_l_and_ab(name: str, boost: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A real photo's own L (1,H,W) and its ab shrunk to the working size (2,h,w), as a model
    would predict a smooth colour: realistic colours, and with ``boost`` many out of gamut."""
    rgb = photo(name)
    l_norm, ab_norm = rgb_to_model(torch.from_numpy(rgb / 255.0).permute(2, 0, 1))
    small = F.interpolate(ab_norm[None].float(), size=working_shape(*rgb.shape[:2], 256),
                          mode="bilinear", antialias=True, align_corners=False)[0]
    return l_norm.float(), small * boost


def _upsample(ab: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(ab[None], size=shape, mode="bilinear", align_corners=False)[0]


def _exact8(l: torch.Tensor, ab_full: torch.Tensor) -> np.ndarray:
    """The previous 8-bit path: whole-map LAB in float32 and the encoding table."""
    lab = torch.cat((l.clamp(0.0, 1.0) * L_SCALE, ab_full * AB_SCALE))
    return linear_to_srgb8(lab_to_linear_rgb(lab)).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- banded upsampling


@pytest.mark.parametrize("small_shape, size", [((192, 256), (3000, 4000)),
                                               ((171, 256), (683, 1024)),
                                               ((256, 193), (999, 751)),
                                               ((3, 300), (1000, 20)),
                                               ((256, 256), (256, 300))])
def test_banded_upsampling_equals_whole_map_interpolate(small_shape, size):
    torch.manual_seed(0)
    small = torch.randn(2, *small_shape)
    whole = _upsample(small, size)
    up = BilinearRows(small, size)
    for step in (1, 13, 200):  # bands of any height, boundaries anywhere
        bands = [(r, min(size[0], r + step)) for r in range(0, size[0], step)]
        assert torch.equal(torch.cat([up.rows(*b) for b in bands], dim=1), whole)
        lerp = torch.cat([up.lerp(*b).clone() for b in bands], dim=1)  # a reused buffer
        assert float((lerp - whole).abs().max()) < 1e-6


@pytest.mark.parametrize("small_shape, size", [((7, 5), (3, 2)), ((30, 40), (17, 23)),
                                               ((1, 1), (5, 9))])
def test_banded_resizing_of_tiny_or_shrunk_maps_agrees_to_float_precision(small_shape, size):
    """Below the working size (a photo smaller than it) torch takes another kernel; the rows
    still agree to float32 rounding."""
    small = torch.randn(2, *small_shape)
    whole = _upsample(small, size)
    up = BilinearRows(small, size)
    assert float((up.rows(0, size[0]) - whole).abs().max()) < 1e-6
    assert float((up.lerp(0, size[0]) - whole).abs().max()) < 1e-6


# ---------------------------------------------------------------- the fused 8-bit pass


@pytest.mark.parametrize("name", COLOR_PHOTOS)
@pytest.mark.parametrize("boost", [1.0, 1.8])
def test_fast_compose_against_the_exact_float_lab_path(colorizer, name, boost):
    """Mean and max CIEDE2000 of the fast 8-bit result against the float64 LAB path, with no
    rounding at all: the error is the 8-bit rounding itself (measured: mean 0.10-0.27, max
    0.83-1.19 over these photos, both boosts), exactly as for the previous 8-bit path; the two
    differ by one level on a few values in 100,000 and never by more."""
    l, small = _real_l_and_ab(name, boost)
    h, w = l.shape[-2:]
    full = _upsample(small, (h, w))
    fast = colorizer.compose(l, small, np.uint8)
    assert fast.shape == (h, w, 3) and fast.dtype == np.uint8

    exact = model_to_rgb(l.double(), full.double())  # float, clipped to sRGB, never rounded
    de = ciede2000(_lab(fast), rgb_to_lab(exact))
    assert float(de.mean()) <= 0.3 and float(de.max()) <= 2.0

    before = _exact8(l, full)
    de_before = ciede2000(_lab(before), rgb_to_lab(exact))
    assert abs(float(de.mean()) - float(de_before.mean())) < 0.005
    levels = np.abs(fast.astype(int) - before)
    assert levels.max() <= 1 and (levels > 0).mean() < 1e-4

    # L kept within one 8-bit level: what one level moves L by, at most ~0.4 (dark end)
    assert float((_lab(fast)[0] - rgb_to_lab(exact)[0]).abs().max()) < 0.4


def test_fast_compose_takes_a_full_size_ab_too(colorizer):
    """``retint video`` hands compose a full-size (stabilised) ab: the same pass, same pixels."""
    l, small = _real_l_and_ab("coffee")
    full = _upsample(small, tuple(l.shape[-2:]))
    from_full = colorizer.compose(l, full, np.uint8)
    assert np.abs(from_full.astype(int) - colorizer.compose(l, small, np.uint8)).max() <= 1
    assert np.abs(from_full.astype(int) - _exact8(l, full)).max() <= 1


def test_threads_and_band_boundaries_change_nothing(colorizer, monkeypatch):
    import retint.inference as inference

    l, small = _real_l_and_ab("astronaut", 1.8)
    serial = colorizer.compose(l, small, np.uint8)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert np.array_equal(colorizer.compose(l, small, np.uint8), serial)
        monkeypatch.setattr(inference, "FUSED_BAND_PIXELS", 3 * 512 + 7)  # odd band heights
        assert np.array_equal(colorizer.compose(l, small, np.uint8), serial)
        assert np.array_equal(colorizer.compose(l, small, np.uint8, threads=1), serial)
        assert np.array_equal(colorizer.compose(l, small, np.uint8, threads=3), serial)
    finally:
        torch.set_num_threads(saved)


def test_compose_threads_leave_torchs_thread_counts_alone(colorizer, monkeypatch):
    """The compose pool's threads run torch ops inline, and the caller's count, and the one a
    thread started afterwards gets, are what they were (``set_num_threads`` sets both)."""
    import threading

    import retint.device as device
    import retint.inference as inference

    monkeypatch.setattr(device, "_POOLS", {})  # a pool made here, not by an earlier test
    l, small = _real_l_and_ab("astronaut", 1.8)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for threads in (2, 1):
            colorizer.compose(l, small, np.uint8, threads=threads)
            seen: dict = {}
            later = threading.Thread(target=lambda d=seen: d.setdefault("n",
                                                                        torch.get_num_threads()))
            later.start()
            later.join()
            assert torch.get_num_threads() == 2 and seen["n"] == 2
        inside = inference._compose_pool(2).submit(torch.get_num_threads).result()
        assert inside == (1 if "OpenMP" in torch.__config__.parallel_info() else 2)
    finally:
        torch.set_num_threads(saved)
        for pool in device._POOLS.values():
            pool.shutdown()


def test_colorize_many_matches_upsampling_the_whole_map(colorizer):
    """colorize_many leaves ab at the working size for compose: same result as the old order,
    predict a full-size ab, then compose."""
    img = photo("chelsea")
    l = colorizer.lightness(img)
    (ab,) = colorizer.predict_ab([l])
    assert ab.shape[-2:] == img.shape[:2]
    (small,) = colorizer.predict_ab([l], full_size=False)
    assert tuple(small.shape) == (2, *working_shape(*img.shape[:2], colorizer.working_size))
    old = colorizer.compose(l, ab, np.uint8)
    assert np.abs(colorizer.colorize(img).astype(int) - old).max() <= 1


# ---------------------------------------------------------------- black and white: one channel


@pytest.mark.parametrize("name", ["camera", "astronaut", "hubble_deep_field"])
def test_gray_lightness_table_is_the_rgb_paths_lightness(colorizer, name):
    """The table is the 3-channel path's own L, bit for bit, whatever the array's shape."""
    gray = _gray(name) if name != "camera" else skimage.data.camera()
    for view in (gray, gray[::2, 1::3], np.ascontiguousarray(gray[:150, :211])):
        three = np.repeat(view[:, :, None], 3, axis=2)
        fast = lightness_from_gray8(view)
        assert fast.dtype == np.float32 and fast.shape == view.shape
        assert np.array_equal(fast, lightness_from_srgb8(three))
        assert torch.equal(colorizer.lightness(view), colorizer.lightness(three))
        exact = rgb_to_l(torch.from_numpy(three / 255.0).permute(2, 0, 1))[0].numpy()
        assert np.abs(fast - exact).max() < 3e-7  # float32 rounding
        assert np.abs(fast * 100 - rgb2lab(three)[..., 0]).max() < 1e-4


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_gray_jpeg_read_as_one_channel_gives_the_rgb_paths_pixels(colorizer, tmp_path, name):
    gray = _gray(name) if name != "camera" else skimage.data.camera()
    path = tmp_path / f"{name}.jpg"
    Image.fromarray(gray).save(path, quality=95)  # a black-and-white JPEG: mode L on disk
    one = read_image(path)
    three = read_rgb(path)
    assert one.shape == gray.shape and one.dtype == np.uint8 and one.flags.writeable
    assert three.shape == (*gray.shape, 3)
    for c in range(3):
        assert np.array_equal(three[..., c], one)
    out_one, out_three = colorizer.colorize(one), colorizer.colorize(three)
    assert out_one.shape == out_three.shape == (*gray.shape, 3)
    # the same L to the bit and the same colour map; one channel takes the gray table, which
    # rounds ab to half a unit: at most a level or two apart, the same L
    levels = np.abs(out_one.astype(int) - out_three)
    assert levels.max() <= 2 and (levels > 1).mean() < 1e-3
    assert float((_lab(out_one)[0] - _lab(out_three)[0]).abs().max()) < 0.5


def test_gray_files_are_decoded_straight_into_the_array(tmp_path):
    """A gray JPEG is decoded into the array read_image returns (no copies after the decoder),
    with Pillow's own pixels; a gray PNG is read as before; both arrays are writable."""
    import retint.io as rio

    gray = _gray("coffee")
    for name in ("g.jpg", "g.png", "big.jpg"):
        image = np.tile(gray, (4, 5)) if name == "big.jpg" else gray
        Image.fromarray(image).save(tmp_path / name, quality=95)
        with Image.open(tmp_path / name) as im:
            expected = np.asarray(im.convert("L"))
        with Image.open(tmp_path / name) as im:
            taken = rio._decode_gray_in_place(im) is not None
        assert taken == name.endswith(".jpg"), name  # JPEG only: PNG loads to read EXIF
        got = read_image(tmp_path / name)
        assert got.flags.writeable and got.flags.c_contiguous
        assert np.array_equal(got, expected), name


def test_read_image_keeps_every_other_kind_as_read_rgb_does(tmp_path):
    rgb = photo("coffee")[:120, :160]
    cases = {"colour.jpg": Image.fromarray(rgb),
             "gray_alpha.png": Image.fromarray(_gray("coffee")[:120, :160]).convert("LA"),
             "palette.png": Image.fromarray(rgb).convert("P")}
    for name, im in cases.items():
        im.save(tmp_path / name)
        assert np.array_equal(read_image(tmp_path / name), read_rgb(tmp_path / name)), name
    bits = Image.fromarray(_gray("camera") > 128)  # mode 1: one channel of 0 and 255
    bits.save(tmp_path / "bits.png")
    one = read_image(tmp_path / "bits.png")
    assert one.ndim == 2 and np.array_equal(one, read_rgb(tmp_path / "bits.png")[..., 0])


def test_exif_orientation_is_applied_to_one_channel_reads(tmp_path):
    gray = _gray("astronaut")[:100, :160]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    Image.fromarray(gray).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    one = read_image(tmp_path / "turned.jpg")
    assert one.shape == (160, 100)
    assert np.array_equal(one, read_rgb(tmp_path / "turned.jpg")[..., 0])


# ---------------------------------------------------------------- gray photos: the table


def _gray_case(name: str, boost: float) -> tuple[np.ndarray, torch.Tensor]:
    """A real photo as the gray plane a black-and-white JPEG gives, and its own colour shrunk
    to the working size (with ``boost``, many colours out of gamut)."""
    rgb = photo(name)
    _, ab = rgb_to_model(torch.from_numpy(rgb / 255.0).permute(2, 0, 1))
    small = F.interpolate(ab[None].float(), size=working_shape(*rgb.shape[:2], 256),
                          mode="bilinear", antialias=True, align_corners=False)[0]
    return _gray(name), small * boost


@pytest.mark.parametrize("name", COLOR_PHOTOS)
@pytest.mark.parametrize("boost", [1.0, 1.8])
def test_gray_table_against_the_exact_lab_path(colorizer, name, boost):
    """The gray table rounds ab to half a unit. Against the exact float64 LAB path (never
    rounded) its max CIEDE2000 stays under 2 and its mean adds under 0.08 to what rounding the
    exact result to 8 bits costs (measured 0.014-0.067 here; that rounding itself is 0.10-0.30
    on these photos). Against the exact path's own 8-bit result the mean is under 0.3. L stays
    within one 8-bit level of the exact L, and in gamut no channel moves by more than two."""
    gray, small = _gray_case(name, boost)
    l = torch.from_numpy(lightness_from_gray8(gray))[None]
    full = _upsample(small, gray.shape)
    fast = colorizer.compose(gray, small, np.uint8)
    assert fast.shape == (*gray.shape, 3) and fast.dtype == np.uint8

    exact = rgb_to_lab(model_to_rgb(l.double(), full.double()))
    exact8 = _exact8(l, full)
    de, de8 = ciede2000(_lab(fast), exact), ciede2000(_lab(exact8), exact)
    assert float(de.max()) <= 2.0
    assert float(de.mean()) - float(de8.mean()) < 0.08
    assert float(ciede2000(_lab(fast), _lab(exact8)).mean()) <= 0.3
    assert float((_lab(fast)[0] - exact[0]).abs().max()) < 0.4
    levels = np.abs(fast.astype(int) - exact8)
    if boost == 1.0:
        assert levels.max() <= 2
    assert (levels > 1).mean() < 0.01


@pytest.mark.parametrize("small_shape, size", [((24, 32), (300, 400)), ((1, 32), (7, 500)),
                                               ((24, 1), (300, 3)), ((40, 60), (17, 23))])
def test_gray_table_fills_every_node_the_upsampled_map_reaches(small_shape, size):
    """A colour map with strong edges (cells whose corners lie many blocks apart), also one
    row or one column high, or larger than the photo: after ``prepare``, every node a pixel
    rounds to in the pass itself (``lerp``) is filled, and only blocks near the map's colours
    are; each entry is the exact LAB maths at its node."""
    from retint.color import GRAY_TABLE_STEP, GrayTable, gray_table_codes
    from retint.inference import BilinearRows

    torch.manual_seed(0)
    h, w = small_shape
    small = torch.zeros(2, h, w)
    small[0, :, w // 2 :] = 0.45  # a jump of 57.6 in a: seven blocks of nodes within one cell
    small[0, h // 2 :, :] -= 0.3
    small[1] = torch.linspace(-0.3, 0.2, w)
    small += 0.02 * torch.randn_like(small)
    table = GrayTable()
    codes = gray_table_codes(small)
    table.prepare(codes)
    nodes = BilinearRows(codes, size).lerp(0, size[0]).long()
    assert bool(table._filled[nodes[0] // 8, nodes[1] // 8].all())
    assert table.filled_entries < 0.1 * table._table.shape[0] ** 2 * 256  # not the whole table

    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    a, b = int(nodes[0, size[0] // 2, size[1] // 2]), int(nodes[1, size[0] // 2, size[1] // 2])
    entry = table._table[a, b, gray.reshape(-1), :3].reshape(16, 16, 3)
    lab = torch.stack((torch.from_numpy(lightness_from_gray8(gray)).double() * L_SCALE,
                       torch.full((16, 16), a * GRAY_TABLE_STEP - AB_SCALE, dtype=torch.float64),
                       torch.full((16, 16), b * GRAY_TABLE_STEP - AB_SCALE, dtype=torch.float64)))
    exact = (lab_to_rgb(lab) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(entry - exact).max() <= 1  # float32 sums of the float64 parts


def test_gray_table_filling_never_shows_other_threads_a_half_made_colour():
    """Lookups of a filled block go on in one thread while another fills the blocks either
    side of it in the same row (the strip rewritten spans the filled block): every lookup
    reads the whole colour."""
    import threading

    from retint.color import GrayTable, gray_table_codes

    gray = torch.from_numpy(np.arange(256, dtype=np.uint8).reshape(4, 64))
    middle = gray_table_codes(torch.tensor([[[0.1]], [[0.1]]])).expand(2, 4, 64).contiguous()
    sides = gray_table_codes(torch.tensor([[[0.1, 0.1]], [[-0.2, 0.4]]]))
    wrong = 0
    for _ in range(40):
        table = GrayTable()
        table.prepare(middle)
        expected = np.empty((4, 64, 4), np.uint8)
        table.lookup(middle.clone(), gray, expected)
        stop = threading.Event()

        def read(table: GrayTable = table, expected: np.ndarray = expected,
                 stop: threading.Event = stop) -> None:
            nonlocal wrong
            out = np.empty_like(expected)
            while not stop.is_set():
                table.lookup(middle.clone(), gray, out)
                wrong += int(not np.array_equal(out, expected))

        reader = threading.Thread(target=read)
        reader.start()
        table.prepare(sides)
        stop.set()
        reader.join()
    assert wrong == 0


def test_gray_path_is_the_same_in_any_bands_and_threads(colorizer, monkeypatch):
    import retint.inference as inference
    from retint.color import gray_table

    gray, small = _gray_case("astronaut", 1.8)
    first = colorizer.compose(gray, small, np.uint8).copy()
    gray_table(fresh=True)  # filled again from nothing: the same entries
    monkeypatch.setattr(inference, "GRAY_BAND_PIXELS", 3 * 512 + 7)  # odd band heights
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert np.array_equal(colorizer.compose(gray, small, np.uint8), first)
    finally:
        torch.set_num_threads(saved)


def test_gray_result_is_rgbx_that_encoders_take_without_a_copy(colorizer, tmp_path, monkeypatch):
    """The gray path's result is the R, G, B of 4-byte pixels; JPEG (one pass and in stripes)
    and PNG files of it are those of the same pixels copied into a plain array."""
    import retint.io as rio
    from retint.io import rgbx_buffer

    gray, small = _gray_case("coffee", 1.0)
    fast = colorizer.compose(gray, small, np.uint8)
    assert rgbx_buffer(fast) is not None and rgbx_buffer(fast[10:20]) is not None
    plain = np.ascontiguousarray(fast)
    assert rgbx_buffer(plain) is None and rgbx_buffer(plain[..., ::-1]) is None
    for stripes in (False, True):
        monkeypatch.setattr(rio, "STRIPED_JPEG_PIXELS", 1 if stripes else 10**12)
        for suffix in (".jpg", ".png"):
            write_image(tmp_path / f"view{suffix}", fast)
            write_image(tmp_path / f"plain{suffix}", plain)
            assert (tmp_path / f"view{suffix}").read_bytes() == \
                (tmp_path / f"plain{suffix}").read_bytes()
    assert np.array_equal(read_rgb(tmp_path / "view.png"), plain)
    from retint.io import contiguous_rgb  # what a film's frame becomes for PyAV

    for rows in (fast, fast[7:31]):
        packed = contiguous_rgb(rows)
        assert packed.flags.c_contiguous and np.array_equal(packed, rows)
    assert contiguous_rgb(plain) is plain


@pytest.mark.parametrize("shape", [(1200, 1000), (1001, 1203), (1500, 700)])
@pytest.mark.parametrize("band", [100_003, 2_097_152])
def test_gray_shrink_is_the_whole_map_resize_bit_for_bit(shape, band, monkeypatch):
    """The model's input from a gray plane, looked up in pairs and shrunk band by band (bands
    of any height), is the 2-D antialiased resize of its full-resolution L (odd widths take the
    whole-map path)."""
    import retint.inference as inference

    monkeypatch.setattr(inference, "SHRINK_BAND_PIXELS", band)
    gray = np.ascontiguousarray(np.tile(skimage.data.camera(), (3, 3))[: shape[0], : shape[1]])
    size = working_shape(*shape, 256)
    whole = F.interpolate(torch.from_numpy(lightness_from_gray8(gray))[None, None], size=size,
                          mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(inference.shrink_l(gray, size), whole)


@pytest.mark.parametrize("width", [1920, 1919])
def test_l_of_a_gray_plane_is_its_table_whatever_the_width(width):
    """as_l reads an even-width plane two pixels at a time: the table's values, bit for bit."""
    from retint.inference import as_l

    gray = np.ascontiguousarray(np.tile(skimage.data.camera(), (3, 4))[:1080, :width])
    l = as_l(gray)
    assert l.shape == (1, 1080, width) and l.dtype == torch.float32
    assert torch.equal(l, torch.from_numpy(lightness_from_gray8(gray))[None])
    assert torch.equal(as_l(l), l)  # an L is kept as it is


def test_result_memory_is_reused_only_once_no_result_holds_it(colorizer, monkeypatch):
    """A gray photo's result lives in memory taken from results that are gone: never from one
    still held, or from a view of one still held."""
    import collections
    import gc

    import retint.inference as inference

    monkeypatch.setattr(inference, "_SPARE_RESULTS", [])
    monkeypatch.setattr(inference, "_RETURNED", collections.deque())
    gray, small = _gray_case("chelsea", 1.0)
    gray2, small2 = _gray_case("chelsea", 1.8)
    first = colorizer.compose(gray, small, np.uint8)
    kept = first.copy()
    view = first[10:20]  # only a view survives
    del first
    gc.collect()
    second = colorizer.compose(gray2, small2, np.uint8)
    assert np.array_equal(view, kept[10:20])  # not overwritten by the second result
    assert not np.shares_memory(view, second)
    held = {id(rgbx_base(view)), id(rgbx_base(second))}
    del view, second
    gc.collect()
    assert len(inference._RETURNED) == 2  # both back
    third = colorizer.compose(gray, small, np.uint8)
    assert np.array_equal(third, kept)
    assert id(rgbx_base(third)) in held and len(inference._SPARE_RESULTS) == 1


def rgbx_base(rgb: np.ndarray) -> object:
    """The memory a result's array sits on (down its bases to the mapping itself)."""
    base = rgb.base
    while isinstance(base, np.ndarray | memoryview):
        base = base.obj if isinstance(base, memoryview) else base.base
    return base


# ---------------------------------------------------------------- 16 bits: the exact path


def test_16bit_in_and_out_keep_the_exact_path(colorizer, tmp_path):
    img16 = photo("astronaut")[:301, :407].astype(np.uint16) * 257 + 128
    write_image(tmp_path / "in.png", img16)
    read16 = read_image(tmp_path / "in.png")
    assert read16.dtype == np.uint16 and np.array_equal(read16, img16)

    out = colorizer.colorize(read16)
    assert out.dtype == np.uint16 and np.any(out % 257 != 0)
    # the exact float LAB maths on a whole-map upsampled ab, as before: bit for bit
    l = colorizer.lightness(read16)
    (ab,) = colorizer.predict_ab([l])
    lab = torch.cat((l.clamp(0.0, 1.0) * L_SCALE, ab * AB_SCALE))
    expected = (lab_to_rgb(lab) * 65535).round().permute(1, 2, 0).numpy().astype(np.uint16)
    assert np.array_equal(out, expected)

    write_image(tmp_path / "out.png", out)
    assert np.array_equal(read_image(tmp_path / "out.png"), out)

    gray16 = np.ascontiguousarray(img16[..., 0])
    Image.fromarray(gray16).save(tmp_path / "gray16.png")  # I;16: stays 16-bit, three channels
    assert np.array_equal(read_image(tmp_path / "gray16.png"), read_rgb(tmp_path / "gray16.png"))
    assert read_image(tmp_path / "gray16.png").dtype == np.uint16


def test_float_output_keeps_the_exact_path(colorizer):
    img = photo("rocket")[:200, :300].astype(np.float32) / 255
    out = colorizer.colorize(img)
    l = colorizer.lightness(img)
    (ab,) = colorizer.predict_ab([l])
    expected = model_to_rgb(l, ab).permute(1, 2, 0).numpy()
    assert out.dtype == np.float32 and np.array_equal(out, expected)


# ---------------------------------------------------------------- JPEG chroma subsampling


def test_jpeg_subsampling_option(tmp_path):
    rgb = photo("astronaut")
    sizes = {}
    for sub, code in (("4:4:4", 0), ("4:2:0", 2)):
        buf = io.BytesIO()
        encode_image(buf, rgb, "JPEG", 95, subsampling=sub)
        sizes[sub] = buf.tell()
        with Image.open(buf) as im:
            assert JpegImagePlugin.get_sampling(im) == code
    assert sizes["4:2:0"] < sizes["4:4:4"]
    buf = io.BytesIO()
    encode_image(buf, rgb, "JPEG")
    with Image.open(buf) as im:
        assert JpegImagePlugin.get_sampling(im) == 0  # the default keeps full colour
    with pytest.raises(ValueError, match="subsampling"):
        encode_image(io.BytesIO(), rgb, "JPEG", subsampling="4:2:2")


# ---------------------------------------------------------------- the bench photo, and memory


def test_bench_photo_is_a_black_and_white_jpeg(tmp_path):
    from retint.bench.photo import make_photo

    h, w = make_photo(tmp_path / "p.jpg", 0.05)
    with Image.open(tmp_path / "p.jpg") as im:
        assert im.format == "JPEG" and im.mode == "L" and im.size == (w, h)
    assert read_image(tmp_path / "p.jpg").shape == (h, w)


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith(f"{field}:"))
    return int(line.split()[1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's VmHWM")
def test_twelve_megapixel_gray_photo_in_bounded_memory(colorizer):
    """A 12 MP black-and-white photo costs its own few arrays (gray 12 MB, L 48 MB, result
    36 MB) and band-sized buffers, not full-size float LAB and ab maps."""
    gray = np.tile(skimage.data.camera(), (6, 8))[:3000, :4000]
    colorizer.colorize(gray[:300, :400])  # warm up allocator and threads
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    start = _status_kb("VmRSS")
    out = colorizer.colorize(gray)
    grown_mb = (_status_kb("VmHWM") - start) / 1024
    assert out.shape == (3000, 4000, 3)
    assert grown_mb < 200, f"{grown_mb:.0f} MB"


# ---------------------------------------------------------------- edge-aware upsampling


def test_guided_upsampling_follows_the_photos_own_edge():
    """Working-size colour that changes across an edge of L: bilinear spreads it over the
    cells around the edge, the guided filter puts the change where the full-resolution edge
    is. Where L is flat, both give nearly the same colour."""
    from retint.inference import GuidedRows

    big, small = 256, 16
    l = torch.full((1, big, big), 0.3)
    l[:, :, 133:] = 0.7  # the edge sits inside a coarse cell (cell 8 spans columns 128-143)
    ab = torch.zeros(2, small, small)
    ab[0, :, :8] = -0.3
    ab[0, :, 8:] = 0.3  # the coarse map's change: at the cell border, not at the edge
    bilinear = F.interpolate(ab[None], size=(big, big), mode="bilinear", align_corners=False)[0]
    guided = GuidedRows(l, ab).rows(0, big)
    row = 100
    left, right = guided[0, row, 120:133], guided[0, row, 133:146]  # either side of the edge
    jump = float(right.min() - left.max())
    assert jump > 0.2  # a step at the edge itself
    assert jump > 4 * float(bilinear[0, row, 133] - bilinear[0, row, 132])
    assert float((guided[0, row, :64] - bilinear[0, row, :64]).abs().max()) < 0.02  # flat
    # the band path and the whole-frame path agree; lerp is rows to float precision
    rows = GuidedRows(l, ab)
    assert torch.equal(torch.cat([rows.rows(r, min(big, r + 37)) for r in range(0, big, 37)], 1),
                       guided)
    assert float((rows.lerp(40, 90) - guided[:, 40:90]).abs().max()) < 1e-5


def test_guided_upsampling_is_a_colorizer_option(model_files):
    img = photo("coffee")
    plain = Colorizer(str(model_files["student"]), device="cpu")
    guided = Colorizer(str(model_files["student"]), device="cpu", upsample="guided")
    a, b = plain.colorize(img), guided.colorize(img)
    assert a.shape == b.shape == img.shape and not np.array_equal(a, b)
    l = guided.lightness(img)
    small = guided.predict_ab([l], full_size=False)[0]
    whole = guided.full_size_ab(l, small)
    assert torch.equal(guided.predict_ab([l])[0], whole)
    exact = lab_to_rgb(torch.cat((l * L_SCALE, whole * AB_SCALE)))  # the float path
    exact = (exact.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(exact - b.astype(float)).max() <= 1  # fused 8-bit pass, same colour
    with pytest.raises(ValueError, match="unknown upsampling 'cubic'"):
        Colorizer(str(model_files["student"]), device="cpu", upsample="cubic")


def test_cli_upsample_option_gives_the_apis_pixels(model_files, tmp_path, capsys):
    from retint import cli

    src = tmp_path / "coffee.png"
    write_image(src, photo("coffee"))
    model = ["--model", str(model_files["student"]), "--device", "cpu", "-q"]
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "g.png"), "--upsample",
                     "guided", *model]) == 0
    api = Colorizer(str(model_files["student"]), device="cpu", upsample="guided")
    assert np.array_equal(read_rgb(tmp_path / "g.png"), api.colorize(read_rgb(src)))
    with pytest.raises(SystemExit) as stop:
        cli.main(["colorize", str(src), "-o", str(tmp_path / "x.png"), "--upsample", "cubic"])
    assert stop.value.code == 2
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


def test_gray_path_in_and_out_of_inference_mode(colorizer):
    """The table, its parts, the pairs of L and each thread's buffers outlive the call that
    made them: made under torch.inference_mode, they are still written and used outside it
    (in a thread of its own, so its buffers are new; the kept parts made anew)."""
    import threading

    import retint.color as color
    import retint.inference as inference

    gray = np.ascontiguousarray(np.tile(_gray("rocket"), (2, 2)))  # over 1 MP: the band shrink
    found: dict = {}

    def run() -> None:
        for cached in (color._gray_table_parts, color._gray_table_encoders,
                       inference._l_of_pairs):
            cached.cache_clear()
        with torch.inference_mode():  # buffers and kept parts made inside
            color.gray_table(fresh=True)
            found["inside"] = colorizer.colorize(gray).copy()
        with torch.inference_mode():
            color.gray_table(fresh=True)  # a table made inside ...
        found["outside"] = colorizer.colorize(gray).copy()  # ... filled and read outside

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert "outside" in found, "the gray path failed outside inference mode"
    assert np.array_equal(found["inside"], found["outside"])
