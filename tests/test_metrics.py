"""retint.metrics must reproduce scikit-image's PSNR / SSIM figures on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import color, data
from skimage.color import deltaE_ciede2000
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from retint.metrics import (
    MetricMeans,
    ab_metrics,
    baseline_metrics,
    cast_metrics,
    ciede2000,
    colorfulness,
    frechet_distance,
    psnr_ab,
    psnr_rgb,
    ssim_ab,
    ssim_rgb,
    top1_agreement,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def photos_ab() -> list[np.ndarray]:
    """True ab of real photos, (2, H, W) float32 scaled to [-1, 1]."""
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        lab = color.rgb2lab(getattr(data, name)())
        out.append((np.moveaxis(lab[..., 1:], -1, 0) / 128.0).astype(np.float32))
    return out


def _fake_prediction(ab: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible colouriser output: blurred, desaturated and/or noisy true ab."""
    p = ab.astype(np.float64)
    if kind % 3 == 0:
        p = gaussian_filter(p, sigma=(0, 2.0, 2.0))
    if kind % 3 == 1:
        p = 0.6 * p
    if kind % 3 == 2:
        p = 0.8 * gaussian_filter(p, sigma=(0, 1.0, 1.0)) + rng.normal(0, 0.03, p.shape)
    return np.clip(p, -1.0, 1.0).astype(np.float32)


def _batch(photos: list[np.ndarray], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-size crops of every photo at two positions, with their fake predictions."""
    rng = np.random.default_rng(0)
    targets, preds = [], []
    for i, ab in enumerate(photos):
        for j, (top, left) in enumerate([(0, 0), (ab.shape[1] - h - 5, ab.shape[2] - w - 11)]):
            crop = np.ascontiguousarray(ab[:, top : top + h, left : left + w])
            targets.append(crop)
            preds.append(_fake_prediction(crop, 2 * i + j, rng))
    return torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(targets))


def _sk_psnr(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    return [
        peak_signal_noise_ratio(
            t.numpy().astype(np.float64), p.numpy().astype(np.float64), data_range=2
        )
        for p, t in zip(pred, target, strict=True)
    ]


def _sk_ssim(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    out = []
    for p, t in zip(
        pred.numpy().astype(np.float64), target.numpy().astype(np.float64), strict=True
    ):
        t_mean = (t[0] + t[1]) / 2
        p_mean = (p[0] + p[1]) / 2
        out.append(structural_similarity(t_mean, p_mean, win_size=7, data_range=2.0))
    return out


@pytest.mark.parametrize("size", [(64, 96), (37, 53), (7, 7), (8, 13)])
def test_matches_skimage_per_image(photos_ab, size):
    pred, target = _batch(photos_ab, *size)
    assert pred.shape == (6, 2, *size) and pred.dtype == torch.float32
    psnr = psnr_ab(pred, target)
    ssim = ssim_ab(pred, target)
    assert psnr.shape == ssim.shape == (6,)
    np.testing.assert_allclose(psnr.numpy(), _sk_psnr(pred, target), rtol=0, atol=TOL)
    np.testing.assert_allclose(ssim.numpy(), _sk_ssim(pred, target), rtol=0, atol=TOL)
    # the fake predictions are imperfect but not absurd, so the comparison is meaningful
    assert torch.isfinite(psnr).all() and (psnr > 15).all()
    assert ((ssim > 0) & (ssim < 1)).all()


def test_ab_metrics_dict(photos_ab):
    pred, target = _batch(photos_ab, 40, 40)
    m = ab_metrics(pred, target)
    assert set(m) == {"psnr_ab", "ssim_ab"}
    torch.testing.assert_close(m["psnr_ab"], psnr_ab(pred, target))
    torch.testing.assert_close(m["ssim_ab"], ssim_ab(pred, target))


def test_baseline_is_metric_of_zeros(photos_ab):
    _, target = _batch(photos_ab, 37, 53)
    zeros = torch.zeros_like(target)
    base = baseline_metrics(target)
    np.testing.assert_allclose(base["psnr_ab"].numpy(), _sk_psnr(zeros, target), rtol=0, atol=TOL)
    np.testing.assert_allclose(base["ssim_ab"].numpy(), _sk_ssim(zeros, target), rtol=0, atol=TOL)


def test_identical_images_give_inf_psnr_and_unit_ssim(photos_ab):
    _, target = _batch(photos_ab, 37, 53)
    m = ab_metrics(target.clone(), target)
    assert torch.isposinf(m["psnr_ab"]).all()
    np.testing.assert_allclose(m["ssim_ab"].numpy(), 1.0, rtol=0, atol=1e-12)


def test_metric_means_over_batches(photos_ab):
    pred, target = _batch(photos_ab, 37, 53)
    pred[2] = target[2]  # one perfect image: +inf PSNR, averaged as 100 dB
    all_m = ab_metrics(pred, target)
    meter = MetricMeans()
    meter.update(ab_metrics(pred[:4], target[:4]))
    meter.update(ab_metrics(pred[4:], target[4:]))
    means = meter.means()
    assert set(means) == {"psnr_ab", "ssim_ab"}
    assert all(isinstance(v, float) for v in means.values())
    psnr = all_m["psnr_ab"].clone()
    assert math.isinf(psnr[2].item())
    psnr[2] = 100.0
    assert means["psnr_ab"] == pytest.approx(psnr.mean().item(), abs=1e-9)
    assert means["ssim_ab"] == pytest.approx(all_m["ssim_ab"].mean().item(), abs=1e-12)


@pytest.mark.parametrize("size", [(6, 20), (20, 6), (3, 3)])
def test_too_small_image_raises(size):
    x = torch.zeros(2, 2, *size)
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_ab(x, x)
    with pytest.raises(ValueError, match="at least 7x7"):
        ab_metrics(x, x)
    with pytest.raises(ValueError):  # skimage agrees
        structural_similarity(x[0, 0].numpy(), x[0, 0].numpy(), win_size=7, data_range=2.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="differ"):
        psnr_ab(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match="B, 2, H, W"):
        ssim_ab(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_no_grad_and_device(photos_ab):
    pred, target = _batch(photos_ab, 16, 16)
    pred.requires_grad_(True)
    m = ab_metrics(pred, target)
    assert not any(v.requires_grad for v in m.values())
    if torch.cuda.is_available():
        gpu = ab_metrics(pred.cuda(), target.cuda())
        for k in m:
            assert gpu[k].device.type == "cuda"
            np.testing.assert_allclose(gpu[k].cpu().numpy(), m[k].numpy(), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- evaluation metrics (RGB)

# Sharma, Wu & Dalal (2005), Color Res. Appl. 30(1):21-30, Table 1: the 34 test pairs
# (L1, a1, b1, L2, a2, b2, ΔE00), typed from the publication.
SHARMA_2005 = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_ciede2000_sharma_test_data():
    table = np.array(SHARMA_2005, dtype=np.float64)
    assert table.shape == (34, 7)
    lab1, lab2, expected = table[:, 0:3], table[:, 3:6], table[:, 6]
    # an independent implementation agrees with every typed value: guards against typos
    np.testing.assert_allclose(deltaE_ciede2000(lab1, lab2), expected, rtol=0, atol=1e-4)
    ours = ciede2000(torch.from_numpy(lab1), torch.from_numpy(lab2), dim=-1)
    assert ours.dtype == torch.float64 and ours.shape == (34,)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-4)
    swapped = ciede2000(torch.from_numpy(lab2), torch.from_numpy(lab1), dim=-1)  # symmetric
    np.testing.assert_allclose(swapped.numpy(), expected, rtol=0, atol=1e-4)
    # the default layout (..., 3, H, W), float32 input
    img1 = torch.from_numpy(lab1.T.reshape(3, 2, 17)).float()
    img2 = torch.from_numpy(lab2.T.reshape(3, 2, 17)).float()
    assert ciede2000(img1, img2).shape == (2, 17)


def test_ciede2000_matches_skimage_on_photos():
    rgb = data.astronaut()[::2, ::2] / 255.0
    other = np.clip(gaussian_filter(rgb, sigma=(3, 3, 0)) * [1.1, 0.9, 1.0], 0, 1)
    lab1, lab2 = color.rgb2lab(rgb), color.rgb2lab(other)
    lab2[:10] = lab1[:10]  # identical pixels: 0
    lab2[10:20, :, 1:] = 0  # neutral colours: hue undefined
    ours = ciede2000(torch.from_numpy(np.moveaxis(lab1, -1, 0)),
                     torch.from_numpy(np.moveaxis(lab2, -1, 0)))
    np.testing.assert_allclose(ours.numpy(), deltaE_ciede2000(lab1, lab2), rtol=0, atol=1e-9)
    assert (ours[:10] == 0).all()


def _degraded(rgb: np.ndarray) -> np.ndarray:
    """A plausible colorizer output: colour blurred and desaturated, rounded to uint8."""
    lab = color.rgb2lab(rgb)
    lab[..., 1:] = 0.7 * gaussian_filter(lab[..., 1:], sigma=(4, 4, 0))
    return np.round(color.lab2rgb(lab) * 255).astype(np.uint8)


@pytest.mark.parametrize("name,crop", [("astronaut", (512, 512)), ("coffee", (400, 600)),
                                       ("chelsea", (37, 53)), ("rocket", (7, 9))])
def test_rgb_psnr_ssim_match_skimage(name, crop):
    truth = getattr(data, name)()[: crop[0], : crop[1], :3]
    truth = np.ascontiguousarray(truth)
    pred = _degraded(truth)
    t = torch.from_numpy(truth).permute(2, 0, 1)[None]
    p = torch.from_numpy(pred).permute(2, 0, 1)[None]
    psnr = psnr_rgb(p.double(), t.double())
    ssim = ssim_rgb(p.float(), t.float())
    assert psnr.dtype == ssim.dtype == torch.float64 and psnr.shape == ssim.shape == (1,)
    expected_psnr = peak_signal_noise_ratio(truth, pred, data_range=255)
    expected_ssim = structural_similarity(truth, pred, channel_axis=-1, data_range=255)
    assert abs(psnr.item() - expected_psnr) < TOL
    assert abs(ssim.item() - expected_ssim) < TOL
    assert 0 < ssim.item() < 1 and 15 < psnr.item() < 60


def test_rgb_metrics_batch_and_errors():
    a = torch.from_numpy(np.stack([data.astronaut()[:64, :80], data.coffee()[:64, :80]]))
    a = a.permute(0, 3, 1, 2).double()
    b = a.flip(-1)
    batch = ssim_rgb(b, a)
    single = torch.cat([ssim_rgb(b[i : i + 1], a[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-12)
    assert torch.isposinf(psnr_rgb(a, a)).all()
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_rgb(a[..., :6], a[..., :6])
    with pytest.raises(ValueError, match="B, 3, H, W"):
        psnr_rgb(a[:, :2], a[:, :2])
    with pytest.raises(ValueError, match="differ"):
        ssim_rgb(a, a[..., :70])


def _two_valued(p: tuple[int, int, int], q: tuple[int, int, int], n_p: int, n_q: int):
    """An image with n_p pixels of colour p and n_q of colour q (shuffled), (1, 3, 1, n)."""
    px = np.array([p] * n_p + [q] * n_q, dtype=np.float64)
    np.random.default_rng(0).shuffle(px)
    return torch.from_numpy(px.T[None, :, None, :].copy())


@pytest.mark.parametrize("p,q,n_p,n_q", [
    ((200, 100, 50), (10, 50, 130), 50, 50),
    ((50, 150, 100), (200, 40, 255), 25, 75),  # R < G: the abs variant takes |R - G|
    ((0, 255, 0), (255, 0, 255), 10, 30),
])
def test_colorfulness_two_valued_images(p, q, n_p, n_q):
    # rg = |R - G| and yb = |(R + G) / 2 - B| each take two values: with weights w and 1 - w,
    # the mean is w*x + (1-w)*y and the (population) std is sqrt(w*(1-w)) * |x - y|.
    def rg(c):
        return abs(c[0] - c[1])

    def yb(c):
        return abs((c[0] + c[1]) / 2 - c[2])

    w = n_p / (n_p + n_q)
    mean = [w * f(p) + (1 - w) * f(q) for f in (rg, yb)]
    std = [math.sqrt(w * (1 - w)) * abs(f(p) - f(q)) for f in (rg, yb)]
    expected = math.hypot(*std) + 0.3 * math.hypot(*mean)
    cf = colorfulness(_two_valued(p, q, n_p, n_q))
    assert cf.dtype == torch.float64 and cf.shape == (1,)
    assert abs(cf.item() - expected) < 1e-9


def test_colorfulness_worked_example_and_gray():
    # (200,100,50) & (10,50,130) half each: rg 100/40 -> mean 70, std 30; yb 100/100 -> 100, 0
    cf = colorfulness(_two_valued((200, 100, 50), (10, 50, 130), 8, 8)).item()
    assert abs(cf - (30 + 0.3 * math.sqrt(70**2 + 100**2))) < 1e-9
    uniform = torch.tensor([30.0, 90.0, 20.0]).view(1, 3, 1, 1).expand(2, 3, 5, 7)
    assert abs(colorfulness(uniform)[1].item() - 0.3 * math.hypot(60, 40)) < 1e-9
    gray = torch.full((1, 3, 9, 9), 77.0)
    assert colorfulness(gray).item() == 0.0
    with pytest.raises(ValueError):
        colorfulness(torch.zeros(1, 2, 4, 4))


# ---------------------------------------------------------------- colour cast and sets


def test_cast_of_a_constant_shift_is_the_shift():
    """ab of a real photo (LAB units) shifted by (+3, -4): the cast is exactly 5, the means
    move by the shift, and the truth's means are the photo's own."""
    lab = torch.from_numpy(color.rgb2lab(data.astronaut())).permute(2, 0, 1)[None]
    true_ab = lab[:, 1:]
    shifted = true_ab + torch.tensor([3.0, -4.0], dtype=torch.float64).view(1, 2, 1, 1)
    out = cast_metrics(torch.cat([shifted, true_ab]), torch.cat([true_ab, true_ab]))
    assert out["cast"].tolist() == pytest.approx([5.0, 0.0], abs=1e-9)
    a, b = float(true_ab[0, 0].mean()), float(true_ab[0, 1].mean())
    assert out["a_truth"][0].item() == pytest.approx(a) and out["b_truth"][0].item() == \
        pytest.approx(b)
    assert out["a_mean"][0].item() == pytest.approx(a + 3) and out["b_mean"][0].item() == \
        pytest.approx(b - 4)
    with pytest.raises(ValueError):
        cast_metrics(true_ab, true_ab[..., :5])


def test_frechet_distance_by_hand_in_one_and_two_dimensions():
    # 1-d: N(mu1, s1^2) vs N(mu2, s2^2) is (mu1 - mu2)^2 + (s1 - s2)^2. [0, 2]: mean 1, sample
    # variance 2; [1, 5]: mean 3, variance 8 -> 4 + (sqrt 2 - sqrt 8)^2 = 4 + 2 = 6.
    x, y = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]])
    assert frechet_distance(x, y) == pytest.approx(6.0, abs=1e-12)
    # 2-d, axis-aligned: the sum of the 1-d distances; variances 2 vs 8 and 8 vs 2
    x2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    y2 = torch.tensor([[1.0, 1.0], [5.0, 3.0]])
    assert frechet_distance(x2, y2) == pytest.approx(4 + 2 + 0 + 2, abs=1e-12)
    assert frechet_distance(y, x) == pytest.approx(6.0, abs=1e-12)  # symmetric
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], y)
    with pytest.raises(ValueError, match="features"):
        frechet_distance(x, y2)


@pytest.mark.parametrize("n, m, d", [(300, 200, 8), (5, 7, 8), (40, 60, 96)])
def test_frechet_distance_matches_scipy_sqrtm(n, m, d):
    """Both branches (SVD of the cross product for sets smaller than D, eigen-decomposition
    else) against the textbook formula with scipy.linalg.sqrtm."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d))
    y = rng.normal(0.5, 1.0, size=(m, d)) @ rng.normal(size=(d, d)) / math.sqrt(d)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy)
                - 2 * np.trace(sqrtm(cx @ cy)).real)
    got = frechet_distance(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(200, 1280)))  # fewer vectors than dimensions
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-8)
    near, far = x + 0.1, x + 1.0  # the mean moves by 0.1 or 1 along every axis
    assert frechet_distance(x, near) == pytest.approx(1280 * 0.01, rel=1e-6)
    assert frechet_distance(x, far) == pytest.approx(1280 * 1.0, rel=1e-6)
    # doubled: the mean moves by itself, and each unit of variance adds (1 - 2)^2
    expected = float(x.mean(0).square().sum() + x.var(0).sum())
    assert frechet_distance(x, x * 2) == pytest.approx(expected, rel=1e-6)


def test_top1_agreement():
    assert top1_agreement(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    assert top1_agreement([7, 7], [7, 7]) == 1.0
    assert math.isnan(top1_agreement([], []))
    with pytest.raises(ValueError):
        top1_agreement([1, 2], [1])
