"""Training objectives beyond the seed's MSE: robust losses, rarity weighting and a PatchGAN.

Plain MSE on ab is minimised by the *mean* of the plausible colours of an object, and the mean
of red, green and blue apples is brown: hence the sepia cast of regression colorizers. Three
counters, each an option of ``retint train``/``distill``:

- ``l1``/``huber`` losses: minimised by the median, which averages less across modes;
- rarity weighting (Zhang, Isola & Efros 2016, class rebalancing, here on a regression loss):
  each pixel's error is weighted by the inverse frequency of its true ab in the training set,
  so saturated colours are not drowned by the many near-gray pixels;
- a conditional PatchGAN (pix2pix): a discriminator that sees (L, ab) patches penalises
  colour that does not look real, including the washed-out kind.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

#: Element-wise losses (no reduction), so that pixels can be weighted before the mean.
ELEMENTWISE = {
    "mse": lambda pred, target: (pred - target).square(),
    "l1": lambda pred, target: (pred - target).abs(),
    "huber": lambda pred, target: F.huber_loss(pred, target, reduction="none", delta=0.1),
}
AB_BINS = 32  # histogram bins per axis over [-1, 1]: 8 ab units a bin


def ab_bin_index(ab: Tensor, bins: int = AB_BINS) -> Tensor:
    """(B,2,H,W) ab in [-1,1] -> (B,H,W) flat index of its histogram bin."""
    q = ((ab.detach().float().clamp(-1.0, 1.0) + 1.0) * (bins / 2)).long().clamp_(0, bins - 1)
    return q[:, 0] * bins + q[:, 1]


def ab_histogram(ab: Tensor, bins: int = AB_BINS) -> Tensor:
    """Pixel counts of ab over a bins x bins grid, float64 (bins, bins)."""
    counts = torch.bincount(ab_bin_index(ab, bins).flatten().cpu(), minlength=bins * bins)
    return counts.double().reshape(bins, bins)


def _blur(p: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=p.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.conv2d(p[None, None], kernel[None, None, :, None], padding=(radius, 0))
    return F.conv2d(out, kernel[None, None, None, :], padding=(0, radius))[0, 0]


def rarity_weights(histogram: Tensor, strength: float, sigma: float = 0.625) -> Tensor:
    """Per-bin loss weights ``w ∝ 1 / (strength * p + (1 - strength) / Q)``, with ``E_p[w] = 1``.

    ``p`` is the histogram smoothed by a Gaussian of ``sigma`` bins (5 ab units, as Zhang et al.)
    and ``Q`` the number of bins where colour occurs. ``strength`` 0 gives all ones (plain loss),
    1 pure inverse frequency (which over-weights rare, often wrong colours: an orange cast);
    Zhang et al. use 0.5. Bins with no colour at all get the rarest bin's weight (they are
    never hit in training).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"rebalance strength must be in [0, 1], got {strength}")
    p = histogram.double() / histogram.sum().clamp_min(1.0)
    p = _blur(p, sigma) if sigma > 0 else p
    p = p / p.sum()
    occupied = p > 1e-6
    rarest = p[occupied].min() if occupied.any() else 1.0
    w = 1.0 / (strength * p.clamp_min(rarest) + (1.0 - strength) / max(1, int(occupied.sum())))
    w = w / (p * w).sum()
    return w.float()


def pixel_loss(name: str, pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of the element-wise loss ``name``; with ``weights`` (bins x bins), each pixel's loss is
    weighted by the rarity of its TARGET colour."""
    err = ELEMENTWISE[name](pred.float(), target.float())
    if weights is None:
        return err.mean()
    w = weights.to(err.device).flatten()[ab_bin_index(target, weights.shape[0])]
    return (err.mean(1) * w).mean()


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (pix2pix's 70x70 design): (L, ab) -> a map of real/fake scores.

    Spectral normalisation instead of BatchNorm keeps it stable at the small batches a CPU can
    afford and makes its output independent of the other images in the batch.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [spectral_norm(nn.Conv2d(3, channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(1, layers):
            seq += [spectral_norm(nn.Conv2d(c, c * 2, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c *= 2
        seq += [spectral_norm(nn.Conv2d(c, c * 2, 4, 1, 1)), nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(c * 2, 1, 4, 1, 1))]
        self.net = nn.Sequential(*seq)

    def forward(self, l: Tensor, ab: Tensor) -> Tensor:
        return self.net(torch.cat((l, ab), 1).float())


class Adversary:
    """The discriminator, its optimiser and the least-squares GAN losses (LSGAN: stable, no
    saturating logs). The generator is pre-trained on its pixel loss alone; the adversarial term
    joins at ``start`` steps, when its colours are already plausible."""

    def __init__(self, weight: float, start: int, lr: float, device: torch.device) -> None:
        self.weight, self.start = weight, start
        self.disc = PatchDiscriminator().to(device)
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999))

    def active(self, step: int) -> bool:
        return self.weight > 0 and step >= self.start

    def generator_loss(self, l: Tensor, fake_ab: Tensor) -> Tensor:
        """How far the generator's colours are from being judged real (D is not updated)."""
        self.disc.requires_grad_(False)
        score = self.disc(l, fake_ab)
        self.disc.requires_grad_(True)
        return (score - 1.0).square().mean()

    def step(self, l: Tensor, real_ab: Tensor, fake_ab: Tensor) -> Tensor:
        """One discriminator update: real patches towards 1, generated ones towards 0."""
        real = self.disc(l, real_ab)
        fake = self.disc(l, fake_ab.detach())
        loss = 0.5 * ((real - 1.0).square().mean() + fake.square().mean())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.optimizer.load_state_dict(state["optimizer"])


class FeatureLoss:
    """Perceptual loss: the distance between a frozen ImageNet network's features of the
    predicted RGB and of the true RGB (DeOldify pre-trains its generator this way).

    EfficientNet-Lite0 (the teacher's frozen encoder, already installed) at strides 4, 8 and
    16; each stride's mean squared difference is divided by the true features' mean square, so
    the three weigh alike. Gradients reach the prediction through the network, whose weights
    stay frozen (held outside any module tree, like the encoder's).
    """

    STRIDES = (4, 8, 16)

    def __init__(self, device: torch.device, name: str = "efficientnet-lite0") -> None:
        from .models.backbone import load_imagenet_net, pyramid_taps

        self.net = load_imagenet_net(name, needed_by="the feature loss").to(device)
        taps = pyramid_taps(self.net)
        self.taps = {taps[s]: s for s in self.STRIDES}
        self.last = max(self.taps)

    def _features(self, rgb: Tensor) -> dict[int, Tensor]:
        net, out = self.net, {}
        x = net._swish(net._bn0(net._conv_stem((rgb - 0.5) / 0.5)))
        for i, block in enumerate(net._blocks[: self.last + 1]):
            x = block(x)
            if i in self.taps:
                out[self.taps[i]] = x.float()
        return out

    def __call__(self, l: Tensor, pred_ab: Tensor, true_ab: Tensor) -> Tensor:
        from .color import model_to_rgb

        with torch.no_grad():
            target = self._features(model_to_rgb(l.float(), true_ab.float()))
        pred = self._features(model_to_rgb(l.float(), pred_ab.float()))
        return sum(F.mse_loss(pred[s], target[s]) / target[s].square().mean().clamp_min(1e-6)
                   for s in self.STRIDES) / len(self.STRIDES)
