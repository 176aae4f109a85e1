"""Validation metrics for ab-channel colourisation, matching scikit-image exactly.

The colouriser predicts the LAB ``a``/``b`` channels scaled to ``[-1, 1]`` (``ab / 128``), so
every tensor here is ``(B, 2, H, W)`` and the dynamic range is ``2``. The two metrics are the
original project's: PSNR over both ab channels, and SSIM of the per-pixel mean ``(a + b) / 2``.
They are re-implemented in batched torch (any device) so validation does not round-trip through
NumPy, but they are defined as, and tested against, ``skimage.metrics``; arithmetic is done in
float64 so the figures agree with scikit-image to ~1e-12, not just to float32 precision.
The evaluation metrics below (``retint evaluate``) work on whole RGB results instead:
PSNR/SSIM on the 0-255 scale (as ``skimage.metrics`` with ``data_range=255``), CIEDE2000 colour
differences (Sharma, Wu & Dalal 2005), Hasler & Suesstrunk's colourfulness, the mean-ab colour
cast, and two set-level figures on a classifier's view of the images: the Fréchet distance
between feature sets and the top-1 class agreement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "psnr_ab", "ssim_ab", "ab_metrics", "baseline_metrics", "cast_metrics", "MetricMeans",
    "psnr_rgb", "ssim_rgb", "ciede2000", "colorfulness", "frechet_distance", "top1_agreement",
]

#: Dynamic range of ab scaled to [-1, 1].
DATA_RANGE = 2.0
#: skimage's default SSIM window (uniform, 7x7) and constants.
WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
#: Cap applied to PSNR values by :class:`MetricMeans` (an exact match gives +inf dB).
PSNR_CAP_DB = 100.0


def _check_pair(pred: Tensor, target: Tensor, channels: int = 2, what: str = "ab") -> None:
    """Reject inputs that are not matching ``(B, channels, H, W)`` batches, before any maths."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise ValueError(f"expected (B, {channels}, H, W) {what} tensors, "
                         f"got shape {tuple(pred.shape)}")


def _to_f64(x: Tensor) -> Tensor:
    """Float64 copy for accurate maths; MPS has no float64, so that case computes on the CPU."""
    if x.device.type == "mps":
        x = x.cpu()
    return x.detach().to(torch.float64)


@torch.no_grad()
def psnr_ab(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR (dB) over both ab channels with ``data_range=2``.

    Equals ``skimage.metrics.peak_signal_noise_ratio(target[i], pred[i], data_range=2)``:
    ``10 * log10(2**2 / mse)``, mse over C, H, W of each image, in float64. A perfect
    prediction (mse 0) gives ``+inf``, as skimage does. Returns a float64 ``(B,)`` tensor.
    """
    _check_pair(pred, target)
    diff = _to_f64(pred) - _to_f64(target)
    mse = diff.square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


@torch.no_grad()
def ssim_ab(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM of the mean ab channel ``(a + b) / 2``, exactly as scikit-image does it.

    Equals ``skimage.metrics.structural_similarity(t, p, win_size=7, data_range=2.0)`` for the
    2-D float64 images ``t``/``p`` = mean ab of target/pred: uniform 7x7 window, K1=0.01,
    K2=0.03, sample covariance (49/48), C1=(K1*2)**2, C2=(K2*2)**2, and the mean of the SSIM
    map with a 3-pixel border dropped. skimage filters with reflect padding and then crops that
    border, so only windows lying fully inside the image survive; that is exactly a stride-1
    'valid' 7x7 average pool, which is what is used here. Returns a float64 ``(B,)`` tensor.

    Raises ``ValueError`` for images smaller than 7 px on a side (skimage raises too).
    """
    _check_pair(pred, target)
    h, w = pred.shape[-2:]
    if h < WIN_SIZE or w < WIN_SIZE:
        raise ValueError(
            f"SSIM needs images at least {WIN_SIZE}x{WIN_SIZE} (the window size); got {h}x{w}"
        )
    p = _to_f64(pred)
    t = _to_f64(target)
    x = (t[:, 0:1] + t[:, 1:2]) * 0.5  # (B, 1, H, W); skimage's im1 is the reference
    y = (p[:, 0:1] + p[:, 1:2]) * 0.5
    return _ssim(x, y, DATA_RANGE)


def _ssim(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """Mean SSIM map of single-channel float64 ``(B, 1, H, W)`` images -> ``(B,)``."""
    # One pooling pass for all five local moments: E[x], E[y], E[x^2], E[y^2], E[xy].
    moments = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), WIN_SIZE, stride=1)
    ux, uy, uxx, uyy, uxy = moments.unbind(dim=1)
    np_ = WIN_SIZE**2
    cov_norm = np_ / (np_ - 1)  # sample covariance, skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return s.mean(dim=(1, 2))


def ab_metrics(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Both validation metrics for a batch: ``{"psnr_ab": (B,), "ssim_ab": (B,)}``."""
    return {"psnr_ab": psnr_ab(pred, target), "ssim_ab": ssim_ab(pred, target)}


def baseline_metrics(target: Tensor) -> dict[str, Tensor]:
    """Metrics of the 'predict no colour' baseline (ab = 0, i.e. grey), the floor to beat."""
    return ab_metrics(torch.zeros_like(target), target)


@torch.no_grad()
def cast_metrics(pred_ab: Tensor, true_ab: Tensor) -> dict[str, Tensor]:
    """Per-image colour cast, in LAB units (ab not scaled): ``cast`` is the distance between
    the mean ab of the result and of the truth; ``a_mean``/``b_mean`` and ``a_truth``/``b_truth``
    are the means themselves, so a model that warms everything shows as b_mean > b_truth."""
    _check_pair(pred_ab, true_ab)
    p, t = _to_f64(pred_ab).mean((2, 3)), _to_f64(true_ab).mean((2, 3))
    return {"cast": (p - t).norm(dim=1), "a_mean": p[:, 0], "b_mean": p[:, 1],
            "a_truth": t[:, 0], "b_truth": t[:, 1]}


class MetricMeans:
    """Running per-image mean of metrics over batches (each image weighs the same).

    ``update`` takes a dict of ``(B,)`` tensors (e.g. from :func:`ab_metrics`); ``means``
    returns plain floats. PSNR values (keys containing ``"psnr"``) are clamped to at most
    100 dB before averaging, so a perfect match (``+inf`` dB) cannot make the mean infinite.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, metrics: Mapping[str, Tensor]) -> None:
        """Add one batch of per-image values."""
        for key, values in metrics.items():
            v = values.detach().reshape(-1).to(torch.float64)
            if "psnr" in key:
                v = v.clamp(max=PSNR_CAP_DB)
            self._sums[key] = self._sums.get(key, 0.0) + float(v.sum())
            self._counts[key] = self._counts.get(key, 0) + v.numel()

    def means(self) -> dict[str, float]:
        """Mean per key over every image seen so far (NaN for a key that got no values)."""
        return {
            k: (s / self._counts[k] if self._counts[k] else math.nan) for k, s in self._sums.items()
        }


# ---------------------------------------------------------------- evaluation on RGB results


def _check_rgb(pred: Tensor, target: Tensor) -> None:
    _check_pair(pred, target, channels=3, what="RGB")


@torch.no_grad()
def psnr_rgb(pred: Tensor, target: Tensor, data_range: float = 255.0) -> Tensor:
    """Per-image PSNR (dB) of ``(B, 3, H, W)`` RGB on the 0-255 scale, as
    ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=255)``; float64 ``(B,)``."""
    _check_rgb(pred, target)
    mse = (_to_f64(pred) - _to_f64(target)).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


@torch.no_grad()
def ssim_rgb(pred: Tensor, target: Tensor, data_range: float = 255.0) -> Tensor:
    """Per-image SSIM of ``(B, 3, H, W)`` RGB, averaged over the channels, as
    ``structural_similarity(target, pred, channel_axis=-1, data_range=255)`` (window 7).

    One channel at a time, so a large photo needs a third of the memory.
    """
    _check_rgb(pred, target)
    if min(pred.shape[-2:]) < WIN_SIZE:
        raise ValueError(f"SSIM needs images at least {WIN_SIZE}x{WIN_SIZE}; "
                         f"got {pred.shape[-2]}x{pred.shape[-1]}")
    p, t = _to_f64(pred), _to_f64(target)
    return torch.stack([_ssim(t[:, c : c + 1], p[:, c : c + 1], data_range)
                        for c in range(3)]).mean(dim=0)


@torch.no_grad()
def ciede2000(lab1: Tensor, lab2: Tensor, dim: int = -3) -> Tensor:
    """CIEDE2000 colour difference (kL = kC = kH = 1) per pixel of two LAB tensors, in float64.

    The channel axis ``dim`` (L, a, b) is reduced away. Written from Sharma, Wu & Dalal (2005),
    "The CIEDE2000 color-difference formula: implementation notes, supplementary test data and
    mathematical observations", including their conventions for the hue of neutral colours
    (C' = 0) and for mean hues across the 0/360 degree seam; tested on their 34 pairs.
    """
    l1, a1, b1 = _to_f64(lab1).unbind(dim)
    l2, a2, b2 = _to_f64(lab2).unbind(dim)
    c_bar7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    h1 = torch.remainder(torch.atan2(b1, a1), 2 * math.pi)  # atan2(0, 0) = 0, as specified
    h2 = torch.remainder(torch.atan2(b2, a2), 2 * math.pi)
    neutral = c1 * c2 == 0
    dh = h2 - h1
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, dh)  # the shorter way round the circle
    dh = torch.where(dh < -math.pi, dh + 2 * math.pi, dh)
    dh = torch.where(neutral, torch.zeros_like(dh), dh)
    dl, dc = l2 - l1, c2 - c1
    dhh = 2 * torch.sqrt(c1 * c2) * torch.sin(dh / 2)
    l_bar, c_bar = (l1 + l2) / 2, (c1 + c2) / 2
    h_sum = h1 + h2
    h_bar = torch.where((h1 - h2).abs() <= math.pi, h_sum / 2,
                        torch.where(h_sum < 2 * math.pi, h_sum / 2 + math.pi, h_sum / 2 - math.pi))
    h_bar = torch.where(neutral, h_sum, h_bar)
    deg = math.pi / 180
    t = (1 - 0.17 * torch.cos(h_bar - 30 * deg) + 0.24 * torch.cos(2 * h_bar)
         + 0.32 * torch.cos(3 * h_bar + 6 * deg) - 0.20 * torch.cos(4 * h_bar - 63 * deg))
    d_theta = 30 * deg * torch.exp(-(((h_bar / deg - 275) / 25) ** 2))
    c_bar7 = c_bar**7
    r_t = -2 * torch.sqrt(c_bar7 / (c_bar7 + 25.0**7)) * torch.sin(2 * d_theta)
    sl = 1 + 0.015 * (l_bar - 50) ** 2 / torch.sqrt(20 + (l_bar - 50) ** 2)
    sc = 1 + 0.045 * c_bar
    sh = 1 + 0.015 * c_bar * t
    dl, dc, dhh = dl / sl, dc / sc, dhh / sh
    return torch.sqrt((dl**2 + dc**2 + dhh**2 + r_t * dc * dhh).clamp_min(0.0))


@torch.no_grad()
def colorfulness(rgb: Tensor) -> Tensor:
    """Hasler & Suesstrunk (2003) colourfulness of ``(B, 3, H, W)`` RGB on the 0-255 scale.

    The 'abs variant' used by the benchmark README: ``rg = |R - G|``, ``yb = |(R + G) / 2 - B|``,
    ``CF = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`` with population
    standard deviations over the pixels. 0 for a gray image. Returns float64 ``(B,)``.
    """
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) RGB, got shape {tuple(rgb.shape)}")
    r, g, b = _to_f64(rgb).flatten(2).unbind(1)
    rg, yb = (r - g).abs(), (0.5 * (r + g) - b).abs()
    std = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0))
    return std + 0.3 * torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)


# ---------------------------------------------------------------- sets of images


@torch.no_grad()
def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors ``(N, D)`` and
    ``(M, D)`` (sample means and covariances, ``N - 1`` normalised), in float64:
    ``|mu_x - mu_y|^2 + tr(Sx) + tr(Sy) - 2 tr((Sx^1/2 Sy Sx^1/2)^1/2)``.

    The last trace is the sum of the square roots of the eigenvalues of ``Sx Sy``. These are
    also the squared singular values of ``Xc Yc^T / sqrt((N-1)(M-1))`` (``Xc``, ``Yc`` the
    centred samples), so when a set is smaller than ``D`` (a few hundred photos against 1280
    features: both covariances singular, where a general ``sqrtm`` of their product is ill
    conditioned and goes complex) the trace is that matrix's nuclear norm: an SVD, real and
    non-negative by construction. Larger sets use ``Sx^1/2`` from a symmetric eigen-
    decomposition and the eigenvalues of the symmetric ``Sx^1/2 Sy Sx^1/2``. Needs two vectors
    per set; rounding can leave about -1e-12, which is returned as 0.
    """
    x, y = _to_f64(torch.as_tensor(x)), _to_f64(torch.as_tensor(y)).to(x.device)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n, m, d = len(x), len(y), x.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"a covariance needs at least 2 vectors per set, got {n} and {m}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    xc, yc = x - mu_x, y - mu_y
    traces = xc.square().sum() / (n - 1) + yc.square().sum() / (m - 1)
    if min(n, m) <= d:
        cross = torch.linalg.matrix_norm(xc @ yc.T, ord="nuc") / math.sqrt((n - 1) * (m - 1))
    else:
        evals, evecs = torch.linalg.eigh(xc.T @ xc / (n - 1))
        root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
        inner = root @ (yc.T @ yc / (m - 1)) @ root
        cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return max(float((mu_x - mu_y).square().sum() + traces - 2 * cross), 0.0)


def top1_agreement(classes: Tensor, reference: Tensor) -> float:
    """Share of images whose top-1 class (e.g. an ImageNet classifier's on a colorized photo)
    equals the reference's (the same classifier on the original): Zhang, Isola & Efros (2016)'s
    semantic interpretability test. NaN for no images."""
    classes, reference = torch.as_tensor(classes), torch.as_tensor(reference)
    if classes.shape != reference.shape or classes.dim() != 1:
        raise ValueError(f"expected two (N,) class vectors, got {tuple(classes.shape)} and "
                         f"{tuple(reference.shape)}")
    if not len(classes):
        return math.nan
    return float((classes.cpu() == reference.cpu()).double().mean())


# ---------------------------------------------------------------- video: cuts and flicker

#: Scene-cut test between consecutive frames (L in LAB units, 0-100). A cut changes both the
#: pixels (mean |dL|) and the tonal distribution (L histogram); a pan or a moving object changes
#: the pixels but hardly the histogram, and exposure flicker shifts the histogram but hardly the
#: pixels, so requiring both rejects the two. A very large mean |dL| is a cut whatever the
#: histogram says (two scenes with the same tones).
CUT_MEAN_DL = 8.0
CUT_HIST = 0.2
CUT_MEAN_DL_ALONE = 30.0
_HIST_BINS = 32


def l_histogram_distance(l_prev: Tensor, l_next: Tensor) -> float:
    """Half the L1 distance between the normalised 32-bin L histograms, in [0, 1]."""
    h1 = torch.histc(l_prev.float(), _HIST_BINS, 0.0, 100.0)
    h2 = torch.histc(l_next.float(), _HIST_BINS, 0.0, 100.0)
    return float(0.5 * (h1 / h1.sum().clamp_min(1) - h2 / h2.sum().clamp_min(1)).abs().sum())


def scene_cut(l_prev: Tensor, l_next: Tensor) -> bool:
    """Whether two consecutive frames' lightness (LAB units, same shape) straddle a hard cut."""
    mean_dl = float((l_next.float() - l_prev.float()).abs().mean())
    return mean_dl > CUT_MEAN_DL_ALONE or (
        mean_dl > CUT_MEAN_DL and l_histogram_distance(l_prev, l_next) > CUT_HIST)


class FlickerMeter:
    """Temporal flicker of colour: mean ``|delta ab|`` (Euclidean, LAB units) between consecutive
    frames over the pixels whose lightness did not change, skipping pairs across a scene cut.

    Where L is unchanged the scene is static there, so any change of colour is flicker, not
    motion; L is compared after a 3x3 box blur so that film grain or codec noise does not hide
    static pixels. Feed frames in order with :meth:`update`, LAB ``(3, H, W)`` or ``(T, 3, H, W)``
    (e.g. :func:`retint.color.rgb_to_lab` of the output); :attr:`value` is the mean over all
    static pixels of all pairs (NaN before two frames).
    """

    def __init__(self, l_tol: float = 2.0) -> None:
        self.l_tol = l_tol
        self.total = 0.0
        self.count = 0
        self.pairs = 0
        self.cuts = 0
        self._prev: Tensor | None = None

    @torch.no_grad()
    def update(self, lab: Tensor) -> None:
        frames = lab[None] if lab.dim() == 3 else lab
        for frame in _to_f64(frames):
            if self._prev is not None:
                self._pair(self._prev, frame)
            self._prev = frame

    def _pair(self, a: Tensor, b: Tensor) -> None:
        if scene_cut(a[0], b[0]):
            self.cuts += 1
            return
        dl = F.avg_pool2d((b[:1] - a[:1])[None], 3, stride=1, padding=1,
                          count_include_pad=False)[0, 0].abs()
        static = dl < self.l_tol
        dab = torch.linalg.vector_norm(b[1:] - a[1:], dim=0)
        self.total += float(dab[static].sum())
        self.count += int(static.sum())
        self.pairs += 1

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else math.nan

