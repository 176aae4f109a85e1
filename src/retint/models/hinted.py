"""The hint model: a frozen teacher and a small trainable branch that reads the user's colour.

The branch reads L (B,1,H,W) and the hint maps (B,3,H,W): the hinted a/128 and b/128 and a mask,
all zero where nobody said anything (the local hints of Zhang et al., SIGGRAPH 2017, given to a
side branch rather than to a network trained from scratch). It encodes them at strides 1, 2, 4,
8 and 16 and adds what it finds into the teacher's decoder at the same strides: after the
bottleneck (16), after ``dec4`` (8), ``dec3`` (4) and ``dec2`` (2), and onto the logits before
the final tanh (1). Each addition is a 1x1 conv without bias, initialised to zero, so training
starts from the teacher exactly.

**With no hint the result is exactly the teacher's**, for any trained branch: every addition is
gated per image by whether that image has a hint at all (its mask is non-zero somewhere). An
image without hints keeps the teacher's values untouched (``torch.where``, not a multiplication
by zero), and a batch without any hint runs the teacher alone. A bias-free 1x1 conv would not do
that by itself: the branch also reads L, so its features are not zero where no hint is given.

The teacher is held *outside* the module tree, as the frozen encoder is
(:class:`~retint.models.backbone.FrozenEncoder`): it is in no ``state_dict()``, parameter list,
optimiser or ``train()`` call. A hint model's file holds only the branch; its card names the
base weights (a bundled name, or a path relative to the card) and their SHA-256, checked when
it loads, because a branch is only valid on the exact teacher it was trained on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import scaled
from .teacher import Teacher

ARCH = "hinted"
#: strides at which the branch reads and adds (1 = onto the logits before the tanh)
STRIDES = (1, 2, 4, 8, 16)
BRANCH_WIDTHS = (16, 32, 64, 128, 128)
HINT_CHANNELS = 3  # a/128, b/128, mask


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                                   dilation=dilation), nn.LeakyReLU(0.2))


class HintBranch(nn.Module):
    """(L, hint a, hint b, mask) -> one additive map per stride of the teacher's decoder.

    Plain convolutions and LeakyReLU (no BatchNorm: hint maps are sparse, and statistics of a
    batch would tie one photo's result to the others'); dilated convolutions at stride 16 let a
    hint reach across most of the photo (a receptive field of about 230 px).
    """

    def __init__(self, targets: dict[int, int], widths: tuple[int, ...] = BRANCH_WIDTHS) -> None:
        super().__init__()
        w1, w2, w4, w8, w16 = widths
        self.s1 = nn.Sequential(_block(1 + HINT_CHANNELS, w1), _block(w1, w1))
        self.s2 = _block(w1, w2, stride=2)
        self.s4 = _block(w2, w4, stride=2)
        self.s8 = _block(w4, w8, stride=2)
        self.s16 = nn.Sequential(_block(w8, w16, stride=2), _block(w16, w16, dilation=2),
                                 _block(w16, w16, dilation=4))
        channels = dict(zip(STRIDES, widths, strict=True))
        self.project = nn.ModuleDict()
        for stride, cout in targets.items():
            layer = nn.Conv2d(channels[stride], cout, kernel_size=1, bias=False)
            nn.init.zeros_(layer.weight)
            self.project[str(stride)] = layer

    def forward(self, l: Tensor, hints: Tensor) -> dict[int, Tensor]:
        f1 = self.s1(torch.cat((l, hints.to(l.dtype)), 1))
        f2 = self.s2(f1)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        features = {1: f1, 2: f2, 4: f4, 8: f8, 16: f16}
        return {s: self.project[str(s)](features[s]) for s in STRIDES}


def has_hints(hints: Tensor) -> Tensor:
    """(B,) bool: which images of a (B,3,H,W) hint batch have any hint (mask above 0)."""
    return hints[:, 2].flatten(1).amax(1) > 0


class HintedTeacher(nn.Module):
    """``model(l)`` and ``model(l, hints)`` -> ab (B,2,H,W) in [-1,1]; H, W multiples of 16.

    ``hints`` (B,3,H,W): a/128, b/128 and a 0/1 mask at the model's input size
    (:func:`retint.hints.hint_maps` paints them from user points,
    :func:`retint.hints.simulate_hints` from the truth while training).
    """

    arch = ARCH
    backbone = None  # no encoder of its own: the base's is the base's (its card names it)

    def __init__(self, base: Teacher, base_ref: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(base, Teacher):
            raise ValueError(f"a hint model is built on a teacher, not on {type(base).__name__}")
        self._base = [base.requires_grad_(False).eval()]
        self.base_ref = dict(base_ref or {})
        self.width = base.width
        self.latent_channels = base.latent_channels
        c1, c2, c3, c4 = (scaled(c, base.width) for c in (32, 64, 128, 256))
        self.branch = HintBranch({1: 2, 2: c1, 4: c2, 8: c3, 16: c4})

    @property
    def base(self) -> Teacher:
        return self._base[0]

    def train(self, mode: bool = True) -> HintedTeacher:  # the teacher stays in eval mode
        super().train(mode)
        self.base.eval()
        return self

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half() reach the held teacher
        self._base[0] = self._base[0]._apply(fn)
        return super()._apply(fn, recurse)

    def latent(self, l: Tensor) -> Tensor:
        return self.base.latent(l)

    def forward(self, l: Tensor, hints: Tensor | None = None) -> Tensor:
        if hints is None:
            return self.base(l)
        present = has_hints(hints)
        if not bool(present.any()) and not (self.training and torch.is_grad_enabled()):
            return self.base(l)  # (while training, the branch runs: the loss needs its graph)
        add = self.branch(l, hints)
        gate = present.view(-1, 1, 1, 1)

        def join(x: Tensor, stride: int) -> Tensor:
            return torch.where(gate, x + add[stride].to(x.dtype), x)

        # Teacher.forward, step for step, with the branch joining at each stride
        t = self.base
        z, (e1, e2, e3, e4), pyramid = t._encode(l)
        x = t.bottleneck_out(z)
        if t.pyramid:
            x = t.skips.add(x, 32, pyramid)
        x = join(x, 16)
        x = t.dec4(torch.cat((x, e4), 1))
        if t.pyramid:
            x = t.skips.add(x, 8, pyramid)
        x = join(x, 8)
        x = t.dec3(torch.cat((x, e3), 1))
        if t.pyramid:
            x = t.skips.add(x, 4, pyramid)
        x = join(x, 4)
        x = t.dec2(torch.cat((x, e2), 1))
        x = join(x, 2)
        x = t.dec1(torch.cat((x, e1), 1))
        return torch.tanh(join(t.head(torch.cat((x, l), 1)), 1))


# ---------------------------------------------------------------- the base on disk


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hinted_from(base_path: str | Path, device: str | torch.device = "cpu") -> HintedTeacher:
    """A fresh hint model (branch at zero) on the teacher at ``base_path``; a hint model there
    is returned as it is, to train its branch further."""
    from . import _paths, load_weights

    model, card = load_weights(base_path, device)
    if isinstance(model, HintedTeacher):
        return model
    weights = _paths(base_path)[0].resolve()
    ref = {"path": str(weights), "sha256": file_sha256(weights), "arch": card.get("arch"),
           "name": card.get("name") or weights.stem}
    return HintedTeacher(model, ref).to(device)


def base_card(model: HintedTeacher, card_path: Path) -> dict[str, Any]:
    """What a hint model's card says of its base: a bundled name, else the path relative to the
    card's folder; and the SHA-256 of the base file."""
    from . import BUNDLED_DIR

    ref = {k: v for k, v in model.base_ref.items() if k != "path"}
    path = Path(model.base_ref["path"]).resolve()
    if path.parent == BUNDLED_DIR.resolve():
        ref["bundled"] = path.name.removesuffix(".safetensors")
    else:
        ref["path"] = os.path.relpath(path, card_path.resolve().parent)
    return ref


def base_path_of(card: dict[str, Any], card_path: Path) -> Path:
    from . import BUNDLED_DIR

    ref = card.get("base") or {}
    if ref.get("bundled"):
        return BUNDLED_DIR / f"{ref['bundled']}.safetensors"
    if not ref.get("path") or not ref.get("sha256"):
        raise ValueError(f"{card_path}: a hint model's card must name its base model "
                         "(base.bundled or base.path, and base.sha256)")
    path = Path(ref["path"])
    return path if path.is_absolute() else card_path.parent / path


def load_hinted(card: dict[str, Any], card_path: Path, state: dict[str, Tensor],
                device: str | torch.device) -> HintedTeacher:
    """The base named by the card (its SHA-256 checked), then the branch from ``state``."""
    from . import load_weights

    path = base_path_of(card, card_path)
    if not path.is_file():
        raise FileNotFoundError(f"{card_path}: its base model {path} is missing (a hint model "
                                "holds only its branch; it needs the teacher it was trained on)")
    found, expected = file_sha256(path), card["base"].get("sha256")
    if found != expected:
        raise ValueError(f"{card_path}: its base model {path} is not the one it was trained on "
                         f"(sha256 {found[:12]}…, expected {str(expected)[:12]}…): train the "
                         "hint branch again on this base")
    base, base_info = load_weights(path, "cpu")
    ref = {**card["base"], "path": str(path.resolve()), "name": base_info.get("name")
           or card["base"].get("name")}
    model = HintedTeacher(base, ref)
    model.load_state_dict(state)
    return model.to(device)
