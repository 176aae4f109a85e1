"""Models and their on-disk form: ``NAME.safetensors`` (tensors) beside ``NAME.json`` (card).

Nothing here unpickles: weights are safetensors, the card is JSON, and the card's ``arch``,
``width`` and ``backbone`` are enough to rebuild the module. A frozen pretrained encoder is never
in our files: the card names it and the SHA-256 of its weights, checked when it loads. A hint
model (``arch: hinted``, :mod:`.hinted`) holds only its branch; its card's ``base`` names the
frozen teacher it is built on and that file's SHA-256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_write
from .student import Student
from .teacher import Teacher

ARCHITECTURES: dict[str, type[nn.Module]] = {"teacher": Teacher, "student": Student}
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
HINTS_MODEL = "hints"  # the bundled hint model, once one is installed (colour hints)
BUNDLED = ("default", *ARCHITECTURES, HINTS_MODEL)  # names of models that ship in the package
SIZE_MULTIPLE = 16  # every model halves its input four times


def check_size(what: str, size: int) -> int:
    """``size`` if the models can take it (a positive multiple of 16), else a clear error."""
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise ValueError(f"{what} must be a positive multiple of {SIZE_MULTIPLE} "
                         f"(16, 32, ... 256 ...), got {size}")
    return size


def build_model(arch: str, width: float = 1.0, backbone: str | None = None,
                pyramid: bool = False, sha256: str | None = None) -> nn.Module:
    """A fresh model; ``backbone`` adds a frozen pretrained encoder fused into its latent, and
    ``pyramid`` (teacher only) its features at every scale into the decoder."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    if backbone in (None, "", "none"):
        return ARCHITECTURES[arch](width=width)
    if pyramid and arch != "teacher":
        raise ValueError("encoder features at every scale (pyramid) are a teacher option")
    options = {"pyramid": True} if pyramid else {}
    return ARCHITECTURES[arch](width=width, backbone=backbone, sha256=sha256, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``run/best``, ``run/best.safetensors`` or ``run/best.json`` -> both files (dots in a
    name such as ``teacher-v1.5`` are kept)."""
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_weights(
    model: nn.Module, path: str | Path, card: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``path.safetensors`` + ``path.json``; floats stored as ``dtype`` (fp16 halves size)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {
        **(card or {}),
        "arch": model.arch,
        "width": model.width,
        "parameters": count_parameters(model),
        "dtype": str(dtype).removeprefix("torch."),
    }
    if getattr(model, "backbone", None):
        from .backbone import backbone_info

        meta["backbone"] = {**backbone_info(model.backbone),
                            "pyramid": bool(getattr(model, "pyramid", False))}
    weights_path, card_path = _paths(path)
    if model.arch == "hinted":
        from .hinted import base_card

        meta["base"] = base_card(model, card_path)
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp))
    atomic_write(card_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return weights_path


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from its card and weights, in float32 and eval mode."""
    weights_path, card_path = _paths(path)
    if not weights_path.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"{weights_path}: no such model (the bundled ones are "
                                f"{', '.join(BUNDLED)}; a path needs NAME.safetensors beside "
                                "its NAME.json card)")
    card = json.loads(card_path.read_text())
    if card.get("arch") == "hinted":
        from .hinted import load_hinted

        return load_hinted(card, card_path, _float32(load_file(str(weights_path))),
                           device).eval(), card
    backbone = card.get("backbone") or {}
    if (backbone.get("tuned_blocks") or backbone.get("input_size")
            or backbone.get("blocks", [10]) != [10] or card.get("fusion", "concat") != "concat"):
        raise ValueError(f"{card_path}: trained with encoder options this version no longer has "
                         "(fine-tuned blocks, a smaller encoder input, other blocks or FiLM)")
    model = build_model(card["arch"], card.get("width", 1.0), backbone.get("name"),
                        backbone.get("pyramid", False), sha256=backbone.get("sha256"))
    model.load_state_dict(_float32(load_file(str(weights_path))))
    return model.to(device).eval(), card


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def resolve_model_path(name: str) -> Path:
    """``teacher``/``student``/``hints``/``default`` name a bundled model; anything else is a
    path."""
    if name == "default":
        name = json.loads((BUNDLED_DIR / "default.json").read_text())["model"]
    if name in BUNDLED[1:]:
        return BUNDLED_DIR / f"{name}.safetensors"
    return _paths(name)[0]


def model_id(name: str | Path) -> str:
    """The one short name of a model: a bundled name as given, a run's ``best``/``final`` by
    its run folder (``run/final``), any other file by its stem."""
    if str(name) in BUNDLED:
        return str(name)
    weights = _paths(name)[0]
    stem = weights.name.removesuffix(".safetensors")
    return f"{weights.parent.name}/{stem}" if stem in ("best", "final") else stem


def unique_ids(ids: list[str]) -> list[str]:
    """``ids`` with repeats told apart as ``id-2``, ``id-3``...: labels for tables and menus."""
    out: list[str] = []
    for base in ids:
        name, n = base, 2
        while name in out:
            name, n = f"{base}-{n}", n + 1
        out.append(name)
    return out


__all__ = [
    "ARCHITECTURES", "BUNDLED", "HINTS_MODEL", "SIZE_MULTIPLE", "Student", "Teacher",
    "build_model", "check_size", "count_parameters", "load_weights", "model_id",
    "resolve_model_path", "save_weights", "unique_ids",
]
