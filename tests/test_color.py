"""Tests for retint.color against scikit-image's rgb2lab / lab2rgb on real photos."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import skimage.data
import torch
from conftest import photo
from skimage.color import lab2rgb, rgb2lab

from retint.color import (
    AB_SCALE,
    L_SCALE,
    lab_to_rgb,
    model_to_rgb,
    rgb_to_l,
    rgb_to_lab,
    rgb_to_model,
)

PHOTOS = ("astronaut", "coffee", "chelsea")

# Pure sRGB primaries and secondaries, black and white: the corners of the gamut.
CORNERS = np.array(
    [[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1]]],
    dtype=np.float64,
)



def to_chw(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype).permute(2, 0, 1)


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(1, 2, 0).double().cpu().numpy()


@functools.cache
def reference(name: str) -> dict[str, np.ndarray]:
    """A photo in [0, 1] (float64), skimage's LAB of it, and skimage's RGB back from that LAB."""
    rgb = photo(name).astype(np.float64) / 255
    lab = rgb2lab(rgb)
    return {"rgb": rgb, "lab": lab, "rgb_back": lab2rgb(lab)}


@functools.cache
def ours(name: str) -> dict[str, np.ndarray]:
    ref = reference(name)
    lab = rgb_to_lab(to_chw(ref["rgb"]))
    return {
        "lab": to_hwc(lab),
        "rgb_from_ref_lab": to_hwc(lab_to_rgb(to_chw(ref["lab"]))),
        "round_trip": to_hwc(lab_to_rgb(lab)),
    }


@pytest.mark.parametrize("name", PHOTOS)
def test_rgb_to_lab_matches_skimage(name):
    err = np.abs(ours(name)["lab"] - reference(name)["lab"]).reshape(-1, 3)
    assert err.max(axis=0).tolist() == pytest.approx([0, 0, 0], abs=1e-3)  # L, a, b each
    assert err.mean() < 1e-4


@pytest.mark.parametrize("name", PHOTOS)
def test_lab_to_rgb_matches_skimage(name):
    err = np.abs(ours(name)["rgb_from_ref_lab"] - reference(name)["rgb_back"])
    assert err.max() < 0.01 / 255
    assert err.mean() < 1e-5


@pytest.mark.parametrize("name", PHOTOS)
def test_round_trip_rgb_lab_rgb(name):
    err = np.abs(ours(name)["round_trip"] - reference(name)["rgb"])
    assert err.max() < 1e-3
    assert err.mean() < 1e-5


def test_float64_input_matches_skimage_to_double_precision():
    ref = reference("coffee")
    lab = rgb_to_lab(to_chw(ref["rgb"], torch.float64))
    assert lab.dtype == torch.float64
    assert np.abs(to_hwc(lab) - ref["lab"]).max() < 1e-8
    back = lab_to_rgb(to_chw(ref["lab"], torch.float64))
    assert back.dtype == torch.float64
    assert np.abs(to_hwc(back) - ref["rgb_back"]).max() < 1e-8


def test_batched_equals_per_image():
    crops = [reference(n)["rgb"][:96, :128] for n in PHOTOS]
    batch = torch.stack([to_chw(c) for c in crops])  # (3, 3, 96, 128)
    lab = rgb_to_lab(batch)
    rgb = lab_to_rgb(lab)
    l_norm, ab_norm = rgb_to_model(batch)
    assert lab.shape == batch.shape and l_norm.shape == (3, 1, 96, 128)
    assert ab_norm.shape == (3, 2, 96, 128)
    for i, c in enumerate(crops):
        single = to_chw(c)
        torch.testing.assert_close(lab[i], rgb_to_lab(single), rtol=0, atol=1e-5)
        torch.testing.assert_close(rgb[i], lab_to_rgb(rgb_to_lab(single)), rtol=0, atol=1e-6)
        torch.testing.assert_close(l_norm[i], rgb_to_model(single)[0], rtol=0, atol=1e-7)
        torch.testing.assert_close(ab_norm[i], rgb_to_model(single)[1], rtol=0, atol=1e-7)
    # Any number of leading dimensions.
    torch.testing.assert_close(rgb_to_lab(batch[None])[0], lab, rtol=0, atol=1e-5)


def test_model_scaling_on_a_saturated_image():
    wheel = skimage.data.colorwheel()[..., :3].astype(np.float64) / 255
    l_norm, ab_norm = rgb_to_model(to_chw(wheel))
    assert 0.0 <= l_norm.min() and l_norm.max() <= 1.0
    assert l_norm.max() > 0.99 and l_norm.min() < 0.01  # white and black are both in the wheel
    assert ab_norm.abs().max() <= 1.0
    assert ab_norm.abs().max() > 0.6  # saturated: uses most of the [-1, 1] range
    ref = rgb2lab(wheel)
    torch.testing.assert_close(l_norm[0].double(), torch.from_numpy(ref[..., 0] / L_SCALE),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(ab_norm.double(), to_chw(ref[..., 1:] / AB_SCALE, torch.float64),
                               rtol=0, atol=1e-5)


def test_model_scaling_of_pure_primaries_matches_skimage():
    l_norm, ab_norm = rgb_to_model(to_chw(CORNERS))
    ref = rgb2lab(CORNERS)
    np.testing.assert_allclose(to_hwc(l_norm)[..., 0], ref[..., 0] / 100, atol=1e-5)
    np.testing.assert_allclose(to_hwc(ab_norm), ref[..., 1:] / 128, atol=1e-5)
    assert np.abs(to_hwc(ab_norm)).max() <= 1.0
    # And back: model_to_rgb inverts rgb_to_model on the gamut corners.
    np.testing.assert_allclose(to_hwc(model_to_rgb(l_norm, ab_norm)), CORNERS, atol=1e-4)


@pytest.mark.parametrize("name", PHOTOS)
def test_model_to_rgb_inverts_rgb_to_model(name):
    rgb = to_chw(reference(name)["rgb"])
    back = model_to_rgb(*rgb_to_model(rgb))
    assert (back - rgb).abs().max() < 1e-3


def test_rgb_to_l_equals_model_lightness():
    for name in PHOTOS:
        rgb = to_chw(reference(name)["rgb"])
        l_only = rgb_to_l(rgb)
        assert l_only.shape == (1, *rgb.shape[1:])
        torch.testing.assert_close(l_only, rgb_to_model(rgb)[0], rtol=0, atol=1e-6)
    corners = to_chw(CORNERS)
    torch.testing.assert_close(rgb_to_l(corners), rgb_to_model(corners)[0], rtol=0, atol=1e-6)


def _joins_image() -> torch.Tensor:
    """Black, white, primaries, and values on both sides of the sRGB and CIE piecewise joins."""
    y_join = 0.008856  # Y where the cube root meets the linear segment of f
    gray_at_y_join = 1.055 * y_join ** (1 / 2.4) - 0.055
    values = [0.0, 1e-6, 0.04045, 0.04045 + 1e-6, gray_at_y_join, 0.5, 1.0 - 1e-6, 1.0]
    grays = np.repeat(np.array(values)[None, :, None], 3, axis=2)
    return to_chw(np.concatenate([CORNERS, grays], axis=1))


def test_gradients_finite_at_piecewise_joins():
    rgb = _joins_image().requires_grad_(True)
    lab = rgb_to_lab(rgb)
    for c in range(3):
        (g,) = torch.autograd.grad(lab[c].sum(), rgb, retain_graph=True)
        assert torch.isfinite(g).all(), f"LAB channel {c}"
    (g,) = torch.autograd.grad(rgb_to_l(rgb).sum(), rgb)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    lab_in = rgb_to_lab(_joins_image()).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(lab_to_rgb(lab_in).sum(), lab_in)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    l_norm, ab_norm = (t.detach().requires_grad_(True) for t in rgb_to_model(_joins_image()))
    gl, gab = torch.autograd.grad(model_to_rgb(l_norm, ab_norm).sum(), (l_norm, ab_norm))
    assert torch.isfinite(gl).all() and torch.isfinite(gab).all()


def test_gradients_are_correct_away_from_joins():
    torch.manual_seed(0)
    rgb = (0.1 + 0.8 * torch.rand(3, 3, 4, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(rgb_to_lab, (rgb,))
    assert torch.autograd.gradcheck(rgb_to_l, (rgb,))
    lab = rgb_to_lab(rgb.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(lab_to_rgb, (lab,))


def test_out_of_gamut_lab_is_clipped_like_skimage():
    l, a, b = np.meshgrid(np.linspace(0, 100, 11), np.linspace(-128, 127, 18),
                          np.linspace(-128, 127, 18), indexing="ij")
    lab = np.stack([l, a, b], axis=-1).reshape(11, 18 * 18, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about negative Z values it clips
        ref = lab2rgb(lab)
    out = to_hwc(lab_to_rgb(to_chw(lab)))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out == 0).mean() > 0.1 and (out == 1).mean() > 0.1  # really out of gamut
    assert np.abs(out - ref).max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rgb = to_chw(reference("astronaut")["rgb"])[None]
    lab_cpu = rgb_to_lab(rgb)
    lab_gpu = rgb_to_lab(rgb.cuda())
    assert lab_gpu.is_cuda
    torch.testing.assert_close(lab_gpu.cpu(), lab_cpu, rtol=0, atol=1e-3)
    torch.testing.assert_close(lab_to_rgb(lab_cpu.cuda()).cpu(), lab_to_rgb(lab_cpu),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(rgb_to_l(rgb.cuda()).cpu(), rgb_to_l(rgb), rtol=0, atol=1e-5)
    l_norm, ab_norm = rgb_to_model(rgb.cuda())
    torch.testing.assert_close(model_to_rgb(l_norm, ab_norm).cpu(), lab_to_rgb(lab_cpu),
                               rtol=0, atol=1e-5)


# ---------------------------------------------------------------- 8-bit fast paths


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_8bit_lightness_table_matches_the_exact_formula(name):
    from retint.color import lightness_from_srgb8

    rgb = photo(name)
    exact = rgb_to_l(torch.from_numpy(rgb / 255.0).permute(2, 0, 1).double())[0].numpy()
    fast = lightness_from_srgb8(rgb)
    assert fast.shape == rgb.shape[:2] and fast.dtype == np.float32
    assert np.abs(fast - exact).max() < 2e-6  # L/100 units: 2e-4 L
    assert np.abs(fast * 100 - rgb2lab(rgb)[..., 0]).max() < 1e-3


def test_8bit_encoding_table_matches_exact_rounding():
    from retint.color import lab_to_linear_rgb, linear_to_srgb8

    lab = torch.from_numpy(rgb2lab(photo("astronaut"))).permute(2, 0, 1).float()
    lab[1:] *= 1.8  # push some colours out of gamut too
    exact = (lab_to_rgb(lab.double()) * 255).round().to(torch.uint8)
    fast = linear_to_srgb8(lab_to_linear_rgb(lab))
    diff = (fast.int() - exact.int()).abs()
    assert fast.dtype == torch.uint8 and fast.shape == exact.shape
    # float32 vs float64 at rounding boundaries: measured 99.8 % identical, the rest one level
    assert int(diff.max()) <= 1 and float((diff == 0).float().mean()) > 0.995


# ---------------------------------------------------------------- gamut-safe saturation


def test_gamut_limit_keeps_in_gamut_colors_and_pulls_the_rest_in():
    from retint.color import AB_SCALE, L_SCALE, gamut_limit, in_srgb_gamut

    torch.manual_seed(0)
    l = torch.rand(1, 1, 32, 32) * 0.9 + 0.05
    ab = (torch.rand(1, 2, 32, 32) * 2 - 1) * 0.9
    lab = lambda a: torch.cat((l * L_SCALE, a * AB_SCALE), 1)  # noqa: E731
    was_inside = in_srgb_gamut(lab(ab))
    assert 0.05 < float(was_inside.float().mean()) < 0.95  # a mix of both kinds

    out = gamut_limit(l, ab)
    assert bool(in_srgb_gamut(lab(out)).all())
    # colours already in gamut are untouched
    assert torch.equal(out[:, :, was_inside[0]], ab[:, :, was_inside[0]])
    # the others keep their hue (same direction) and lose only chroma
    moved = ~was_inside[0]
    factor = out.norm(dim=1)[0][moved] / ab.norm(dim=1)[0][moved]
    cos = torch.nn.functional.cosine_similarity(out, ab, dim=1)[0][moved]
    assert bool((factor < 1).all()) and bool((cos > 0.9999).all())
    # ... and only as much as needed: 1 % more chroma would leave the gamut again
    assert float(in_srgb_gamut(lab(out * 1.01))[0][moved].float().mean()) < 0.05


def test_gamut_limit_on_a_real_photo_is_a_no_op():
    from retint.color import gamut_limit, rgb_to_model

    rgb = torch.from_numpy(skimage.data.astronaut()[::4, ::4]).permute(2, 0, 1)[None].float() / 255
    l, ab = rgb_to_model(rgb)
    assert torch.allclose(gamut_limit(l, ab), ab, atol=1e-6)
