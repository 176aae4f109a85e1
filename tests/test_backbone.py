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
from retint.models.backbone import BACKBONES, BackboneError, FrozenEncoder, Fusion
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
    features, pooled = encoder(l)
    assert features.shape == (1, 112, 14, 14) and pooled.shape == (1, 1280)
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


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_fused_teacher_learns_on_tiny_images(fusion):
    torch.manual_seed(0)
    model = build_model("teacher", backbone=NAME, fusion=fusion)
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


def test_film_fusion_starts_as_the_identity():
    fusion = Fusion(512, "film")
    z = torch.randn(2, 512, 4, 4)
    out = fusion(z, torch.randn(2, 112, 4, 4), torch.randn(2, 1280))
    assert torch.equal(out, z)


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


def test_fine_tuned_blocks_train_and_are_saved_while_the_originals_stay(tmp_path):
    torch.manual_seed(0)
    model = build_model("teacher", backbone=NAME, tune=2)
    original = {k: v.clone() for k, v in model.pretrained.net.state_dict().items()}
    tuned_keys = [k for k in model.state_dict() if k.startswith("pretrained.tuned.")]
    assert tuned_keys and all(k.split(".")[2] in ("0", "1") for k in tuned_keys)
    model.train()
    assert not model.pretrained.tuned.training  # BatchNorm statistics stay pretrained
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    l = torch.rand(2, 1, 64, 64)
    before = {k: v.clone() for k, v in model.pretrained.tuned.state_dict().items()}
    loss = model(l).square().mean()
    loss.backward()
    opt.step()
    after = model.pretrained.tuned.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in model.pretrained.net.state_dict().items():
        assert torch.equal(v, original[k]), k
    save_weights(model, tmp_path / "tuned")
    loaded, card = load_weights(tmp_path / "tuned")
    assert card["backbone"]["tuned_blocks"] == 2
    assert torch.allclose(loaded(l), model.eval()(l), atol=1e-5)


def test_encoder_input_size_shrinks_what_it_sees_and_is_recorded(tmp_path):
    model = build_model("student", 0.25, backbone=NAME, input_size=64)
    seen = []
    model.pretrained.net._conv_stem.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    l = torch.rand(1, 1, 128, 96)
    assert model(l).shape == (1, 2, 128, 96)
    assert seen[-1][-2:] == (64, 48)
    save_weights(model, tmp_path / "small")
    loaded, card = load_weights(tmp_path / "small")
    assert card["backbone"]["input_size"] == 64 and loaded.pretrained.input_size == 64
    assert torch.allclose(loaded(l), model.eval()(l), atol=1e-5)


def test_several_encoder_blocks_are_fused_on_the_shallowest_grid(encoder, tmp_path):
    """Block 10 (112 ch, stride 16) with block 15 (320 ch, stride 32, upsampled): 432 channels
    on the stride-16 grid, the same block-10 maps as alone, and the choice survives saving."""
    both = FrozenEncoder(NAME, blocks=(15, 10))
    assert both.blocks == (10, 15) and both.channels == 432
    l = torch.rand(1, 1, 128, 96)
    features, pooled = both(l)
    alone, pooled_alone = encoder(l)
    assert features.shape == (1, 432, 8, 6)
    assert torch.equal(features[:, :112], alone) and torch.equal(pooled, pooled_alone)
    assert features[:, 112:].abs().sum() > 0
    model = build_model("teacher", 0.25, backbone=NAME, blocks=(10, 15))
    assert model.fusion.mix[0].in_channels == model.latent_channels + 432 + 256
    assert model(l).shape == (1, 2, 128, 96)
    save_weights(model, tmp_path / "blocks")
    loaded, card = load_weights(tmp_path / "blocks")
    assert card["backbone"]["blocks"] == [10, 15] and loaded.pretrained.blocks == (10, 15)
    assert torch.allclose(loaded(l), model.eval()(l), atol=1e-5)
    with pytest.raises(ValueError, match="blocks must be in 0..15"):
        FrozenEncoder(NAME, blocks=(16,))


def test_backbone_blocks_flag_reaches_the_model_and_rejects_nonsense(photos_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(photos_dir), "-o", str(run), "--backbone", NAME,
                 "--backbone-blocks", "7,10", "--width", "0.25", "--steps", "1",
                 "--batch-size", "2", "--crop", "32", "--val-size", "32", "--workers", "0",
                 "--quiet"]) == 0
    card = json.loads((run / "final.json").read_text())
    assert card["backbone"]["blocks"] == [7, 10]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(photos_dir), "-o", str(tmp_path / "bad"), "--backbone-blocks", "ten"])
    assert exit_info.value.code == 2
    assert "block numbers like 10,15" in capsys.readouterr().err
