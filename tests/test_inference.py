"""Tests for retint.inference.Colorizer on real photos (skimage.data), with small saved models.

The models in ``model_files`` are randomly initialised, so their colours are arbitrary (and very
saturated: many pixels fall out of the sRGB gamut and are clipped). The tests therefore check
what the Colorizer itself promises: exact size and dtype, the input's full-resolution L kept,
only L used, batching equal to one-by-one, aspect kept by padding, and safe file writing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo, sepia
from PIL import Image
from skimage.color import lab2rgb, rgb2lab
from skimage.transform import resize

import retint.models
from retint.inference import Colorizer
from retint.io import read_rgb, write_image
from retint.models import build_model, save_weights

HAS_BUNDLED = (Path(retint.models.BUNDLED_DIR) / "default.json").exists()
needs_bundled = pytest.mark.skipif(not HAS_BUNDLED, reason="bundled weights not built yet")


@pytest.fixture(scope="module")
def colorizer(model_files) -> Colorizer:
    return Colorizer(model=str(model_files["teacher"]), device="cpu")


def _l_channel(rgb: np.ndarray) -> np.ndarray:
    """skimage's L (0..100) of an HxWx3 uint8/uint16/float image."""
    if rgb.dtype == np.uint8:
        rgb = rgb / 255.0
    elif rgb.dtype == np.uint16:
        rgb = rgb / 65535.0
    return rgb2lab(rgb.astype(np.float64))[..., 0]


def _clipped(rgb: np.ndarray) -> np.ndarray:
    """Pixels where some channel sits at the gamut boundary (LAB -> sRGB clipped it)."""
    peak = 1.0 if rgb.dtype.kind == "f" else np.iinfo(rgb.dtype).max
    return ((rgb <= 0) | (rgb >= peak)).any(axis=-1)


# ---------------------------------------------------------------- size and dtype


@pytest.mark.parametrize("shape", [(1, 1), (3, 500), (17, 23), (333, 517), (517, 333)])
def test_output_has_the_exact_input_size(colorizer, shape):
    h, w = shape
    img = photo("rocket")[:h, :w]  # rocket is 427x640: every crop here is real content
    if img.shape[:2] != shape:  # 517 rows: resize a real photo instead
        img = np.asarray(Image.fromarray(photo("astronaut")).resize((w, h), Image.BILINEAR))
    assert img.shape[:2] == shape
    out = colorizer.colorize(img)
    assert out.shape == (h, w, 3)
    assert out.dtype == np.uint8


def test_dtype_follows_the_input(colorizer):
    img = photo("chelsea")[:97, :131]
    out8 = colorizer.colorize(img)
    assert out8.dtype == np.uint8

    img16 = img.astype(np.uint16) * 257
    out16 = colorizer.colorize(img16)
    assert out16.dtype == np.uint16 and out16.shape == img.shape
    # 16-bit output really uses 16 bits (not 8-bit values scaled by 257) and agrees with 8-bit
    assert np.any(out16 % 257 != 0)
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0

    for float_dtype in (np.float32, np.float64):
        outf = colorizer.colorize(img.astype(float_dtype) / 255)
        assert outf.dtype == float_dtype and outf.shape == img.shape
        assert outf.min() >= 0.0 and outf.max() <= 1.0
        assert np.abs(outf * 255 - out8).max() <= 1.0


def test_gray_2d_and_rgba_inputs(colorizer):
    gray = np.ascontiguousarray(photo("camera")[:150, :211, 0])  # a real gray photo, 2-D
    out = colorizer.colorize(gray)
    assert out.shape == (150, 211, 3) and out.dtype == np.uint8
    # as three channels: the same L and colour; one channel takes the gray table (ab to half a
    # unit), so a level apart where the rounding of ab tips a channel, a few more where this
    # untrained model's colour is out of gamut and clipped
    levels = np.abs(out.astype(int) - colorizer.colorize(np.repeat(gray[..., None], 3, axis=2)))
    assert levels.max() <= 8 and (levels > 1).mean() < 0.01
    # the result is coloured, not gray
    assert np.abs(out.astype(int) - out.mean(axis=2, keepdims=True)).mean() > 2

    rgba = np.dstack([photo("coffee")[:150, :211], np.full((150, 211), 255, np.uint8)])
    assert np.array_equal(colorizer.colorize(rgba), colorizer.colorize(rgba[..., :3]))


def test_bad_shapes_are_refused(colorizer):
    with pytest.raises(ValueError):
        colorizer.colorize(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError):
        colorizer.colorize(np.zeros((8,), np.uint8))


# ---------------------------------------------------------------- only L is used, and kept


def test_full_resolution_lightness_is_kept_uint8(colorizer):
    img = photo("coffee")
    out = colorizer.colorize(img)
    diff = np.abs(_l_channel(out) - _l_channel(img))
    clipped = _clipped(out)
    # Where no channel was clipped, only 8-bit rounding of the output separates the two L:
    # one 8-bit step moves L by at most ~0.4 (dark end), three rounded channels by ~0.25 in
    # practice (measured max 0.24, mean 0.07 on four photos).
    assert diff[~clipped].max() < 0.4
    assert diff[~clipped].mean() < 0.15
    # The random model's colours are very saturated, so gamut clipping changes L on part of the
    # photo (measured: 18% of coffee's pixels, up to ~5 L); still small on average.
    assert diff.mean() < 0.5
    assert clipped.mean() < 0.5
    # Had L come from the small working image (upsampled), the edges would be far off: the
    # sharpest details must survive. Compare with the blur the working size would cause.
    blurred = resize(resize(_l_channel(img), (171, 256), anti_aliasing=True), img.shape[:2])
    assert np.abs(blurred - _l_channel(img)).mean() > 5 * diff[~clipped].mean()


def test_full_resolution_lightness_is_kept_float(colorizer):
    img = photo("astronaut")[:301, :407].astype(np.float32) / 255
    out = colorizer.colorize(img)
    assert out.dtype == np.float32
    diff = np.abs(_l_channel(out) - _l_channel(img))
    inside = ~_clipped(out)
    assert inside.mean() > 0.3
    # no quantisation in float: L is the input's to float32 precision
    assert diff[inside].max() < 1e-3


def test_lightness_kept_with_a_gentle_model(colorizer, monkeypatch):
    """With colours mostly inside the gamut, L is kept within 0.5 on average over all pixels."""
    model = colorizer.model
    monkeypatch.setattr(colorizer, "model", lambda x: 0.25 * model(x))
    img = photo("astronaut")
    out = colorizer.colorize(img)
    diff = np.abs(_l_channel(out) - _l_channel(img))
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99) < 1.0


def test_sepia_and_gray_versions_give_the_same_result(colorizer):
    tinted = sepia(photo("chelsea"))
    l_sepia = _l_channel(tinted)
    lab = np.stack([l_sepia, np.zeros_like(l_sepia), np.zeros_like(l_sepia)], axis=-1)
    neutral = lab2rgb(lab).astype(np.float32)  # gray with exactly the sepia photo's L
    assert np.abs(neutral - neutral.mean(axis=2, keepdims=True)).max() < 1e-3

    out_sepia = colorizer.colorize(tinted.astype(np.float32) / 255)
    out_gray = colorizer.colorize(neutral)
    assert np.abs(out_sepia - out_gray).max() < 2e-3

    # the same in 8 bits: the gray photo rounded to uint8 moves L by a fraction of a unit
    out_sepia8 = colorizer.colorize(tinted).astype(int)
    out_gray8 = colorizer.colorize(np.round(neutral * 255).astype(np.uint8)).astype(int)
    assert np.abs(out_sepia8 - out_gray8).mean() < 1.0

    # and the sepia tint itself is gone: the output is not the input's brown
    assert np.abs(out_sepia8 - tinted).mean() > 5


# ---------------------------------------------------------------- batching and working size


def test_colorize_many_in_batches_equals_one_by_one(model_files):
    c = Colorizer(model=str(model_files["teacher"]), device="cpu", batch_size=3)
    images = [
        photo("astronaut")[:200, :310],
        photo("coffee")[50:173, :400],
        photo("chelsea")[:300, :97],
        photo("rocket")[:64, :64],
        np.ascontiguousarray(photo("camera")[:181, :250, 0]),  # 2-D gray in the same batch
    ]
    together = c.colorize_many(images)
    assert len(together) == len(images)
    for img, out in zip(images, together, strict=True):
        alone = c.colorize(img)
        assert out.shape == img.shape[:2] + (3,)
        assert out.dtype == alone.dtype == np.uint8
        assert np.abs(out.astype(int) - alone).max() <= 1


def test_colorize_many_keeps_each_dtype(colorizer):
    base = photo("coffee")[:80, :120]
    outs = colorizer.colorize_many([base, base.astype(np.uint16) * 257, base / 255.0])
    assert [o.dtype for o in outs] == [np.uint8, np.uint16, np.float64]
    assert np.abs(outs[1] / 257.0 - outs[0]).max() <= 1
    assert np.abs(outs[2] * 255 - outs[0]).max() <= 1


def test_working_size_changes_what_the_model_sees(model_files):
    img = photo("astronaut")[:300, :400]
    small = Colorizer(model=str(model_files["teacher"]), device="cpu", working_size=64)
    large = Colorizer(model=str(model_files["teacher"]), device="cpu", working_size=256)
    a, b = small.colorize(img), large.colorize(img)
    assert a.shape == b.shape == img.shape
    assert np.abs(a.astype(int) - b).mean() > 1
    # ...but only the colour: L is the input's either way
    inside = ~(_clipped(a) | _clipped(b))
    assert np.abs(_l_channel(a) - _l_channel(b))[inside].max() < 0.5


@pytest.mark.parametrize("size", [0, 8, 100, 250, -16])
def test_working_size_must_be_a_multiple_of_16(model_files, size):
    with pytest.raises(ValueError, match="multiple of 16"):
        Colorizer(model=str(model_files["teacher"]), device="cpu", working_size=size)


# ---------------------------------------------------------------- aspect: padding, not stretching


class _Recorder:
    """Stands in for the model: records its input, returns ab = (row, column) / size."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        n, _, s, _ = x.shape
        rows = torch.arange(s, dtype=torch.float32).view(1, 1, s, 1).expand(n, 1, s, s)
        cols = torch.arange(s, dtype=torch.float32).view(1, 1, 1, s).expand(n, 1, s, s)
        return torch.cat((rows, cols), dim=1) / s


@pytest.mark.parametrize("shape,content", [((150, 600), (64, 256)), ((600, 150), (256, 64))])
def test_aspect_is_kept_by_padding(colorizer, monkeypatch, shape, content):
    h_full, w_full = shape
    rgb = np.asarray(Image.fromarray(photo("coffee")).resize((w_full, h_full), Image.BILINEAR))
    l_full = torch.from_numpy(_l_channel(rgb) / 100).float()[None]
    recorder = _Recorder()
    monkeypatch.setattr(colorizer, "model", recorder)
    (ab,) = colorizer.predict_ab([l_full])

    (seen,) = recorder.inputs
    assert seen.shape == (1, 1, 256, 256)
    seen = seen[0, 0]
    h, w = content
    # the padding replicates the last row / column of the content
    assert torch.equal(seen[h:, :w], seen[h - 1 : h, :w].expand(256 - h, w))
    assert torch.equal(seen[:, w:], seen[:, w - 1 : w].expand(256, 256 - w))
    assert not torch.equal(seen[h - 1], seen[h - 2]) or not torch.equal(seen[:, w - 1],
                                                                         seen[:, w - 2])
    # the content is the photo shrunk with its aspect kept (not stretched to the square)
    reference = resize(l_full[0].numpy(), (h, w), anti_aliasing=True)
    stretched = resize(l_full[0].numpy(), (256, 256), anti_aliasing=True)
    assert np.abs(seen[:h, :w].numpy() - reference).mean() < 0.01
    assert np.abs(seen.numpy() - stretched).mean() > 0.03

    # the predicted colour is cropped to the content before going back to full resolution
    assert ab.shape == (2, h_full, w_full)
    assert ab[0].min() < 0.01 and ab[1].min() < 0.01
    assert (h - 2) / 256 < ab[0].max() <= (h - 1) / 256 + 1e-4
    assert (w - 2) / 256 < ab[1].max() <= (w - 1) / 256 + 1e-4


# ---------------------------------------------------------------- files


def test_colorize_file_writes_the_output(colorizer, tmp_path):
    src = tmp_path / "in" / "chelsea.jpg"
    write_image(src, photo("chelsea"))
    before = src.read_bytes()
    dst = tmp_path / "out" / "sub" / "chelsea.png"
    colorizer.colorize_file(src, dst)
    assert src.read_bytes() == before
    out = read_rgb(dst)
    assert out.shape == photo("chelsea").shape
    assert np.array_equal(out, colorizer.colorize(read_rgb(src)))
    assert sorted(p.name for p in dst.parent.iterdir()) == ["chelsea.png"]  # no temp files


def test_colorize_file_refuses_to_overwrite_its_input(colorizer, tmp_path):
    src = tmp_path / "photo.png"
    write_image(src, photo("coffee")[:60, :90])
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(src)
    for dst in (src, str(src), tmp_path / "sub" / ".." / "photo.png", link):
        with pytest.raises(ValueError, match="overwrite"):
            colorizer.colorize_file(src, dst)
        assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "photo.png", "sub"]


def test_colorize_file_is_atomic(colorizer, tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous output intact and no temp file behind."""
    src = tmp_path / "coffee.png"
    write_image(src, photo("coffee")[:70, :110])
    dst = tmp_path / "out" / "coffee.jpg"
    colorizer.colorize_file(src, dst)
    good = dst.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\xff\xd8\xff half a JPEG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        colorizer.colorize_file(src, dst)
    assert dst.read_bytes() == good
    assert sorted(p.name for p in dst.parent.iterdir()) == ["coffee.jpg"]


def test_twelve_megapixels(colorizer):
    img = np.asarray(Image.fromarray(photo("coffee")).resize((4000, 3000), Image.BILINEAR))
    t0 = time.perf_counter()
    out = colorizer.colorize(img)
    seconds = time.perf_counter() - t0
    print(f"12 MP colorized in {seconds:.1f} s")
    assert out.shape == (3000, 4000, 3) and out.dtype == np.uint8
    # L kept across a band boundary of the full-resolution colour maths (bands of 500 rows)
    rows = slice(440, 560)
    diff = np.abs(_l_channel(out[rows, :600]) - _l_channel(img[rows, :600]))
    assert diff[~_clipped(out[rows, :600])].max() < 0.4


# ---------------------------------------------------------------- bundled weights


@needs_bundled
def test_default_model_loads():
    c = Colorizer()
    assert c.model_path.exists()
    out = c.colorize(photo("chelsea")[:64, :96])
    assert out.shape == (64, 96, 3)


def test_colorizer_is_the_package_api(model_files):
    import retint
    from retint.inference import Colorizer

    assert retint.Colorizer is Colorizer
    out = retint.Colorizer(str(model_files["student"])).colorize(photo("coffee"))
    assert out.shape == photo("coffee").shape and out.dtype == np.uint8


# ---------------------------------------------------------------- saturation knob


def test_saturation_scales_color_and_stays_in_gamut(model_files, monkeypatch):
    from retint.metrics import colorfulness

    image = photo("coffee")
    gentle = Colorizer(model=str(model_files["teacher"]), device="cpu")
    monkeypatch.setattr(gentle.model, "forward", lambda l: 0.15 * torch.tanh(
        torch.cat((l - 0.5, 0.5 - l), 1) * 4))  # a timid model: small, smooth chroma
    cf = {}
    for s in (0.0, 1.0, 1.5, 3.0):
        gentle.saturation = s
        out = gentle.colorize(image)
        cf[s] = float(colorfulness(torch.from_numpy(out).permute(2, 0, 1)[None].double()))
        # lightness survives the boost: gamut limiting moves chroma only, not L
        assert np.abs(_l_channel(out) - _l_channel(image)).mean() < 1.0, s
    assert cf[0.0] < 1.0  # no colour at all
    assert cf[1.0] < cf[1.5] < cf[3.0]


def test_saturation_is_range_checked_and_named(model_files):
    with pytest.raises(ValueError, match="saturation"):
        Colorizer(model=str(model_files["student"]), device="cpu", saturation=-1)
    c = Colorizer(model=str(model_files["student"]), device="cpu", saturation=1.3)
    assert c.name.endswith("(saturation 1.3)")


def test_a_runs_final_weights_are_named_after_the_run(tmp_path):
    """Two runs' final.safetensors must not both print as "final" in bench/evaluate tables."""
    for run in ("run-a", "run-b"):
        save_weights(build_model("student", 0.25), tmp_path / run / "final")
    names = {Colorizer(model=str(tmp_path / r / "final"), device="cpu").name
             for r in ("run-a", "run-b")}
    assert names == {"run-a/final", "run-b/final"}
    save_weights(build_model("student", 0.25), tmp_path / "mine")
    assert Colorizer(model=str(tmp_path / "mine"), device="cpu").name == "mine"


def test_a_pil_image_comes_back_as_a_pil_image_with_the_array_paths_pixels(colorizer, tmp_path):
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.fromarray(photo("chelsea")[:90, :120]).convert("L").save(path)
    with Image.open(path) as im:
        out = colorizer.colorize(im)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (120, 90)
    from retint.io import read_rgb

    np.testing.assert_array_equal(np.asarray(out), colorizer.colorize(read_rgb(path)))
