"""The hint model: a frozen teacher, an L-guided spread of the user's colour, and a small net.

The hint maps (B,3,H,W) hold the hinted a/128 and b/128 and a mask, all zero where nobody said
anything (the local hints of Zhang et al., SIGGRAPH 2017). Three steps turn them into colour:

1. **The teacher** colours the photo as it would without hints (``base_ab``).
2. **The spread** (:class:`HintSpread`) first refits the teacher's overall colour to the hints
   where there are several (:func:`overall_fit`: one chroma scale and one cast for the whole
   photo). Then it carries each hint's remaining difference from that colour to the pixels
   near it in place, in lightness *and* in the teacher's own colour, a joint-bilateral filter
   guided by L and by the teacher, so a click colours the object it belongs to and stops where
   the lightness or the kind of thing changes. Its reaches (in place near and far, in
   lightness, in colour, and how far one hint outweighs the teacher) are learnt scalars; the
   overall fit has none.
3. **The refiner** (:class:`HintRefiner`) reads L, the hints, the teacher's and the spread's
   colour and the spread's confidence, and adds a correction. Its last conv starts at zero, so
   training starts from the spread exactly.

**With no hint the result is exactly the teacher's**, for any trained weights: the hinted path
is gated per image by whether that image has a hint at all (``torch.where``, not a
multiplication by zero), and a batch without any hint runs the teacher alone.

The teacher is held *outside* the module tree, as the frozen encoder is
(:class:`~retint.models.backbone.FrozenEncoder`): it is in no ``state_dict()``, parameter list,
optimiser or ``train()`` call. A hint model's file holds only the spread and the refiner; its
card names the base weights (a bundled name, or a path relative to the card) and their
SHA-256, checked when it loads, because the refiner learnt the errors of that exact teacher.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .teacher import Teacher

ARCH = "hinted"
HINT_CHANNELS = 3  # a/128, b/128, mask
CELL = 4  # hint pixels are pooled into cells this many working pixels wide...
#: ...doubling the width while an image has more cells than this, which bounds memory: each of
#: the spread's few (cells, H, W) maps is at most 32 MB at the 256² working size
MAX_CELLS = 128
PATCH_MASS = 25.0  # mask pixels of a typical hint (a 5x5 patch): the unit of the prior
REFINE_WIDTHS = (16, 32, 64)
#: How firmly the overall fit (:func:`overall_fit`) holds to the teacher's own colour (scale 1,
#: no cast). The cast's stiffness is in hints: 10 hints beyond the first weigh as much as it
#: (before the fit is cut to the share it explains). The scale's is in hints of chroma 0.1
#: (ab/128). Both were chosen on Urban100, a set no hint goal is measured on (the sweep is in
#: docs/results.md)
SCALE_STIFFNESS = 2.0
CAST_STIFFNESS = 10.0
MAX_SCALE = 3.0  # the most the fit may strengthen the teacher's colour


class Cells(NamedTuple):
    """One image's hinted cells: hint pixels pooled into squares ``width`` working pixels wide."""

    width: int
    index: Tensor  # (C,2) long: each cell's row and column at the pooled size
    mass: Tensor  # (C,) its mask pixels

    def centres(self) -> Tensor:
        """(C,2) float: each cell's centre (y, x) in working pixels."""
        return (self.index.float() + 0.5) * self.width - 0.5


def hint_groups(cells: Cells) -> Tensor:
    """(C,) long: which hint each cell belongs to, the cells that touch (a point's patch, a
    painted stroke) being one hint, so a hint counts once however big it is."""
    index = cells.index.cpu()  # a few numbers, and the loop's tests would each sync a GPU
    touch = (index[:, None] - index[None]).abs().amax(-1) <= 1  # (C,C), the 8 neighbours
    group = torch.arange(len(index))
    while True:  # each cell takes the least group among those it touches, until none changes
        new = torch.where(touch, group[None], len(index)).amin(1)
        if torch.equal(new, group):
            return torch.unique(group, return_inverse=True)[1]  # numbered 0, 1, 2, ...
        group = new


def overall_fit(teacher: Tensor, hinted: Tensor, groups: Tensor,
                scale_stiffness: float = SCALE_STIFFNESS,
                cast_stiffness: float = CAST_STIFFNESS) -> tuple[Tensor, Tensor]:
    """The chroma scale s () and the cast o (2,) that best carry the teacher's colour at the
    hints to the hints' colour, ``hint ~ s * teacher + o``, from (2,C) cell means of each and
    the cells' hints (:func:`hint_groups`). Each hint beyond the first weighs one, against
    the two stiffnesses (:data:`SCALE_STIFFNESS`) holding s at 1 and o at 0: one hint
    says nothing of the whole photo and leaves it alone. The fit is then kept only in the
    share of the hints' differences from the teacher that it explains, so hints that disagree
    (a red coat, a blue door, a green lawn) leave the rest of the photo alone too.

    Why: on photos it never saw, the teacher's errors are largely global (a warm cast, colour
    too faint or too strong for the whole photo), and several hints reveal them everywhere,
    not only near themselves."""
    count = int(groups.max()) + 1
    members = F.one_hot(groups.cpu(), count).double()  # (C,G); a few numbers: on the CPU, in
    t = teacher.detach().cpu().double() @ members / members.sum(0)  # float64 (not on MPS)
    h = hinted.detach().cpu().double() @ members / members.sum(0)  # each hint's mean
    weight = (count - 1) / count  # n hints weigh n - 1 in all
    scale_ridge, cast_ridge = scale_stiffness * 0.1**2, cast_stiffness
    tt, th = weight * (t * t).sum(), weight * (t * h).sum()
    st, sh = weight * t.sum(1), weight * h.sum(1)
    cast_weight = weight * count + cast_ridge
    scale = ((th + scale_ridge - (st * sh).sum() / cast_weight)
             / (tt + scale_ridge - (st * st).sum() / cast_weight)).clamp(0.0, MAX_SCALE)
    cast = (sh - scale * st) / cast_weight
    # kept as far as it explains the hints: a cast they share explains most of their
    # differences, and hints that disagree share none
    before = ((h - t) ** 2).sum()
    after = ((h - scale * t - cast[:, None]) ** 2).sum()
    explained = (1.0 - after / before.clamp_min(1e-12)).clamp(0.0, 1.0)
    scale, cast = 1.0 + explained * (scale - 1.0), explained * cast
    return scale.to(teacher), cast.to(teacher)


def _sum_pool(x: Tensor, width: int) -> Tensor:
    """Sums over width x width squares, the last row and column of squares cut short."""
    return F.avg_pool2d(x, width, ceil_mode=True, divisor_override=1)


def hint_cells(mask: Tensor) -> Cells:
    """The hinted cells of one image's (1,H,W) hint mask. The spread weighs every cell against
    every pixel, so their number bounds its cost: a big painted hint is pooled coarser (the
    width doubles while there are more than MAX_CELLS), never dropped."""
    width = CELL
    while True:
        mass = _sum_pool(mask[None].float(), width)[0, 0]
        index = (mass > 0).nonzero()
        if len(index) <= MAX_CELLS:
            return Cells(width, index, mass[index[:, 0], index[:, 1]])
        width *= 2


class HintSpread(nn.Module):
    """(L, teacher ab, hint maps) -> (the spread's shift of ab (B,2,H,W), its confidence (B,1,H,W)).

    The teacher's colour is first refit overall to the hints (:func:`overall_fit`). On top of
    that, at pixel p the shift is ``sum_i w_i(p) r_i / (sum_i w_i(p) + prior)``, over the hint
    cells i (:func:`hint_cells`): ``r_i`` the cell's mean difference from the refit colour, and
    ``w_i(p)`` its mass times three factors:

    - of the distance: a broad Gaussian (``space`` x the long side) plus a narrow one
      (``near``) weighing ``near_weight`` times more, so that next to a hint its colour wins
      and further off it still carries;
    - of the lightness difference (``lightness``, in L/100);
    - of the difference between the teacher's own colours at p and at the hint (``colour``, in
      ab/128). This keeps a hint on its object: the teacher already tells sky from skin and
      grass from a coat, even where it got their colours wrong, so a hint on a jug leaves a
      shell of the same lightness alone.

    The prior is in units of a 5x5 hint, so far from every hint the teacher keeps its colour.
    The overall fit's two stiffnesses are plain attributes, set in code rather than learnt.
    """

    #: Starting reaches: the best of a sweep on 60 held-out photos with 10 hints each.
    def __init__(self, space: float = 0.20, lightness: float = 0.15, colour: float = 0.04,
                 prior: float = 0.15, near: float = 0.05, near_weight: float = 10.0) -> None:
        super().__init__()
        self.log_space = nn.Parameter(torch.tensor(math.log(space)))
        self.log_lightness = nn.Parameter(torch.tensor(math.log(lightness)))
        self.log_colour = nn.Parameter(torch.tensor(math.log(colour)))
        self.log_prior = nn.Parameter(torch.tensor(math.log(prior)))
        self.log_near = nn.Parameter(torch.tensor(math.log(near)))
        self.log_near_weight = nn.Parameter(torch.tensor(math.log(near_weight)))
        self.scale_stiffness, self.cast_stiffness = SCALE_STIFFNESS, CAST_STIFFNESS

    def _place(self, centres: Tensor, h: int, w: int) -> Tensor:
        """(C,H,W): the broad plus the near Gaussian of each pixel's distance to each cell
        (separable; the squared offsets are computed once for both)."""
        long = max(h, w)
        dy2 = (torch.arange(h, device=centres.device, dtype=torch.float32)[None]
               - centres[:, :1]) ** 2
        dx2 = (torch.arange(w, device=centres.device, dtype=torch.float32)[None]
               - centres[:, 1:]) ** 2
        place = 0.0
        for reach, weight in ((self.log_space.exp() * long, 1.0),
                              (self.log_near.exp() * long, self.log_near_weight.exp())):
            gy, gx = torch.exp(-dy2 / (2 * reach**2)), torch.exp(-dx2 / (2 * reach**2))
            place = place + weight * gy[:, :, None] * gx[:, None, :]
        return place

    def forward(self, l: Tensor, base_ab: Tensor, hints: Tensor) -> tuple[Tensor, Tensor]:
        l, base_ab, hints = l.float(), base_ab.float(), hints.float()
        h, w = l.shape[-2:]
        mask = hints[:, 2:3]
        lightness, colour = self.log_lightness.exp(), self.log_colour.exp()
        prior = self.log_prior.exp() * PATCH_MASS
        shifts, confidences = [], []
        for n in range(len(l)):
            cells = hint_cells(mask[n])
            if len(cells.mass) == 0:
                shifts.append(torch.zeros_like(base_ab[n]))
                confidences.append(torch.zeros_like(l[n]))
                continue
            # each cell's mass-weighted means of L, of the teacher's ab and of the hints' ab
            stats = torch.cat((mask[n] * l[n], mask[n] * base_ab[n], mask[n] * hints[n, :2]))
            pooled = _sum_pool(stats[None], cells.width)[0]
            means = pooled[:, cells.index[:, 0], cells.index[:, 1]] / cells.mass  # (5, C)
            scale, cast = overall_fit(means[1:3], means[3:5], hint_groups(cells),
                                      self.scale_stiffness, self.cast_stiffness)
            refit = (scale * base_ab[n] + cast[:, None, None]).clamp(-1.0, 1.0)
            refit_at = (scale * means[1:3] + cast[:, None]).clamp(-1.0, 1.0)  # (2, C)
            place = self._place(cells.centres(), h, w)
            like = (-(l[n] - means[0, :, None, None]) ** 2 / (2 * lightness**2)
                    - ((refit[:, None] - refit_at[:, :, None, None]) ** 2).sum(0)
                    / (2 * colour**2))
            weight = cells.mass[:, None, None] * place * torch.exp(like)
            mass_at = weight.sum(0, keepdim=True)
            shift = torch.einsum("chw,dc->dhw", weight, means[3:5] - refit_at)
            total = mass_at + prior
            shifts.append(refit - base_ab[n] + shift / total)
            confidences.append(mass_at / total)
        return torch.stack(shifts), torch.stack(confidences)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                                   dilation=dilation), nn.LeakyReLU(0.2))


class HintRefiner(nn.Module):
    """(L, hints, teacher ab, spread ab, confidence) -> a correction of ab, zero at the start.

    A small U-Net of plain convolutions and LeakyReLU (no BatchNorm: hint maps are sparse, and
    statistics of a batch would tie one photo's result to the others'), to stride 4 with
    dilations, so that it can sharpen the spread along edges and temper it where it is wrong.
    """

    def __init__(self, widths: tuple[int, int, int] = REFINE_WIDTHS) -> None:
        super().__init__()
        w1, w2, w4 = widths
        cin = 1 + HINT_CHANNELS + 2 + 2 + 1
        self.e1 = nn.Sequential(_conv(cin, w1), _conv(w1, w1))
        self.e2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.e4 = nn.Sequential(_conv(w2, w4, stride=2), _conv(w4, w4, dilation=2),
                                _conv(w4, w4, dilation=4))
        self.d2 = nn.Sequential(nn.Conv2d(w4 + w2, w2, 1), nn.LeakyReLU(0.2))
        self.d1 = nn.Sequential(nn.Conv2d(w2 + w1, w1, 1), nn.LeakyReLU(0.2), _conv(w1, w1))
        self.out = nn.Conv2d(w1, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f4 = self.e4(f2)
        up = F.interpolate(f4, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        f2 = self.d2(torch.cat((up, f2), 1))
        up = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.d1(torch.cat((up, f1), 1)))


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
        self.spread = HintSpread()
        self.refine = HintRefiner()

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
        with torch.no_grad():  # the teacher is frozen: no graph through it
            base_ab = self.base(l)
        if hints is None:
            return base_ab
        present = has_hints(hints)
        if not bool(present.any()) and not (self.training and torch.is_grad_enabled()):
            return base_ab  # (while training, the rest runs: the loss needs its graph)
        hints = hints.to(l.dtype)
        shift, confidence = self.spread(l, base_ab, hints)
        spread = base_ab.float() + shift
        features = torch.cat((l.float(), hints.float(), base_ab.float(), spread, confidence), 1)
        out = (spread + self.refine(features).float()).clamp(-1.0, 1.0).to(base_ab.dtype)
        return torch.where(present.view(-1, 1, 1, 1), out, base_ab)


# ---------------------------------------------------------------- the base on disk


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hinted_from(base_path: str | Path, device: str | torch.device = "cpu") -> HintedTeacher:
    """A fresh hint model (the spread at its starting reaches, the refiner at zero) on the
    teacher at ``base_path``; a hint model there is returned as it is, to train it further."""
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
    """The base named by the card (its SHA-256 checked), then the hint weights from ``state``."""
    from . import load_weights

    path = base_path_of(card, card_path)
    if not path.is_file():
        raise FileNotFoundError(f"{card_path}: its base model {path} is missing (a hint model "
                                "holds only its hint layers; it needs the teacher it was "
                                "trained on)")
    found, expected = file_sha256(path), card["base"].get("sha256")
    if found != expected:
        raise ValueError(f"{card_path}: its base model {path} is not the one it was trained on "
                         f"(sha256 {found[:12]}…, expected {str(expected)[:12]}…): train the "
                         "hint model again on this base")
    base, base_info = load_weights(path, "cpu")
    ref = {**card["base"], "path": str(path.resolve()), "name": base_info.get("name")
           or card["base"].get("name")}
    model = HintedTeacher(base, ref)
    model.load_state_dict(state)
    return model.to(device)
