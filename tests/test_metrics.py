"""retint.metrics must reproduce scikit-image's PSNR / SSIM figures on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from retint.metrics import MetricMeans, ab_metrics, baseline_metrics, psnr_ab, ssim_ab

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
