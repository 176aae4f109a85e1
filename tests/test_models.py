"""Tests for retint.models: architectures, shapes, and the safetensors + JSON on-disk form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import photo
from safetensors import safe_open
from torch import nn

import retint
from retint.color import rgb_to_l
from retint.models import (
    ARCHITECTURES,
    build_model,
    count_parameters,
    load_weights,
    resolve_model_path,
    save_weights,
)
from retint.models.blocks import SEBlock

ARCHS = ("teacher", "student")



def real_l(h: int, w: int, n: int = 1) -> torch.Tensor:
    """Lightness L/100 of crops of a real photo, (n, 1, h, w)."""
    rgb = torch.from_numpy(photo("astronaut")).permute(2, 0, 1).float() / 255
    crops = [rgb[:, 40 * i : 40 * i + h, 60 * i : 60 * i + w] for i in range(n)]
    return rgb_to_l(torch.stack(crops))


def seeded(arch: str, width: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, width).eval()


@pytest.mark.parametrize(("arch", "expected"), [("teacher", 6_321_814), ("student", 5_573_570)])
def test_parameter_counts(arch, expected):
    model = build_model(arch)
    assert count_parameters(model) == expected
    assert model.arch == arch and model.width == 1.0 and model.latent_channels == 512


@pytest.mark.parametrize("arch", ARCHS)
def test_latent_shape_at_256(arch):
    with torch.no_grad():
        z = seeded(arch).latent(real_l(256, 256, n=2))
    assert z.shape == (2, 512, 16, 16)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_with_latent_agrees_with_forward_and_latent(arch):
    model = seeded(arch)
    l = real_l(64, 64, n=2)
    with torch.no_grad():
        ab = model(l)
        ab2, z = model(l, return_latent=True)
        z2 = model.latent(l)
    assert ab.shape == (2, 2, 64, 64) and z.shape == (2, 512, 4, 4)
    torch.testing.assert_close(ab2, ab, rtol=0, atol=0)
    torch.testing.assert_close(z2, z, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_is_tanh_of_last_layer(arch):
    model = seeded(arch)
    last = model.head if arch == "teacher" else model.decoder[-1]
    with torch.no_grad():  # make the pre-activation large so tanh has to saturate it
        last.bias.fill_(5.0)
        last.bias[1] = -5.0
    captured = {}
    last.register_forward_hook(lambda m, i, o: captured.update(pre=o))
    with torch.no_grad():
        ab = model(real_l(64, 64))
    assert ab.abs().max() <= 1.0
    assert ab[:, 0].min() > 0.9 and ab[:, 1].max() < -0.9
    torch.testing.assert_close(ab, torch.tanh(captured["pre"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(64, 96), (48, 160)])
def test_non_square_sizes(arch, size):
    model = seeded(arch)
    with torch.no_grad():
        ab, z = model(real_l(*size), return_latent=True)
    assert ab.shape == (1, 2, *size)
    assert z.shape == (1, 512, size[0] // 16, size[1] // 16)
    assert torch.isfinite(ab).all() and ab.abs().max() < 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_half_width(arch):
    full, half = build_model(arch), seeded(arch, width=0.5)
    assert half.width == 0.5 and half.latent_channels == 256
    assert count_parameters(half) < count_parameters(full) / 3  # channels halve: ~1/4 of weights
    with torch.no_grad():
        ab, z = half(real_l(64, 96), return_latent=True)
    assert ab.shape == (1, 2, 64, 96) and z.shape == (1, 256, 4, 6)
    assert torch.isfinite(ab).all()


def test_teacher_has_batchnorm_and_se_in_every_block_but_the_last_two():
    children = list(build_model("teacher").named_children())
    assert [name for name, _ in children[-2:]] == ["dec1", "head"]
    for name, block in children[:-2]:
        kinds = [type(m) for m in block.modules()]
        assert kinds.count(nn.BatchNorm2d) == 1, name
        assert kinds.count(SEBlock) == 1, name
    for name, layer in children[-2:]:
        assert not any(isinstance(m, (nn.BatchNorm2d, SEBlock)) for m in layer.modules()), name
    assert len(children) - 2 == 9  # enc1-4, bottleneck in/out, dec4-2


def test_student_has_no_batchnorm_and_no_se():
    student = build_model("student")
    assert not any(isinstance(m, (nn.BatchNorm2d, SEBlock)) for m in student.modules())
    assert any(isinstance(m, nn.Conv2d) for m in student.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_load_weights_float32_round_trip(arch, model_files):
    path = model_files[arch]
    weights, card_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    assert path == weights and weights.is_file() and card_path.is_file()
    card = json.loads(card_path.read_text())
    assert card["arch"] == arch and card["width"] == 1.0
    assert card["parameters"] == count_parameters(build_model(arch))
    assert card["dtype"] == "float32" and card["name"] == f"tiny-{arch}"

    loaded, loaded_card = load_weights(path)
    assert loaded_card == card
    assert isinstance(loaded, ARCHITECTURES[arch]) and not loaded.training
    original = seeded(arch)  # the fixture saved build_model(arch) after manual_seed(0)
    l = real_l(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(l), original(l), rtol=0, atol=0)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_fp16(arch, tmp_path):
    model = seeded(arch)
    path = save_weights(model, tmp_path / "half" / arch, {"note": "fp16"}, dtype=torch.float16)
    assert path == tmp_path / "half" / f"{arch}.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["dtype"] == "float16" and card["note"] == "fp16" and card["arch"] == arch
    with safe_open(str(path), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    full = save_weights(model, tmp_path / "full" / arch)
    assert path.stat().st_size < 0.6 * full.stat().st_size

    loaded, _ = load_weights(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    l = real_l(64, 64)
    with torch.no_grad():
        a, b = loaded(l), model(l)
    assert not torch.equal(a, b)  # really went through fp16
    torch.testing.assert_close(a, b, rtol=0, atol=1e-2)


def test_save_accepts_either_suffix_and_half_width_round_trips(tmp_path):
    model = seeded("student", width=0.5)
    path = save_weights(model, tmp_path / "small.json")
    assert path == tmp_path / "small.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.json", "small.safetensors"]
    loaded, card = load_weights(tmp_path / "small.json")
    assert card["width"] == 0.5 and loaded.width == 0.5 and loaded.latent_channels == 256
    assert card["parameters"] == count_parameters(model) == count_parameters(loaded)


def test_load_weights_missing_files(tmp_path, model_files):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nothing_here")
    # The weights alone (no card) are not enough either.
    shutil.copy(model_files["student"], tmp_path / "orphan.safetensors")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "orphan")


def test_build_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="nope"):
        build_model("nope")


def test_resolve_model_path():
    bundled = Path(retint.__file__).resolve().parent / "weights"
    for arch in ARCHS:
        assert resolve_model_path(arch) == bundled / f"{arch}.safetensors"
    assert resolve_model_path("runs/mine") == Path("runs/mine.safetensors")
    assert resolve_model_path("runs/mine.safetensors") == Path("runs/mine.safetensors")
    assert resolve_model_path("runs/mine.json") == Path("runs/mine.safetensors")
    assert resolve_model_path("./teacher") == Path("teacher.safetensors")
    assert resolve_model_path("/abs/student") == Path("/abs/student.safetensors")
