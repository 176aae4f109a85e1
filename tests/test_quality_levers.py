"""The training levers against colour that does not hold up: encoder features at every scale,
a perceptual loss, old-photo ageing of L, sequence-aware splits and the cast measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo

from retint.augment import age_lightness
from retint.color import AB_SCALE, rgb_to_model
from retint.data import PhotoScan, list_photos, scan_photos, split_group
from retint.io import write_image
from retint.losses import FeatureLoss
from retint.metrics import cast_metrics
from retint.models import build_model, load_weights, save_weights
from retint.train import TrainConfig, fit

ENC = "efficientnet-lite0"


def _batch(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.stack([torch.from_numpy(photo(p)[:size, :size]).permute(2, 0, 1)
                       for p in ("astronaut", "coffee", "chelsea", "rocket")[:n]]).float() / 255
    return rgb_to_model(rgb)


def test_a_pyramid_teacher_starts_as_the_teacher_it_is_loaded_from_and_learns(tmp_path):
    torch.manual_seed(0)
    plain = build_model("teacher", 0.25, ENC).eval()
    save_weights(plain, tmp_path / "plain")
    pyramid = build_model("teacher", 0.25, ENC, pyramid=True)
    from retint.train import start_from

    start_from(pyramid, str(tmp_path / "plain"))
    l, ab = _batch()
    with torch.no_grad():
        torch.testing.assert_close(pyramid.eval()(l), plain(l), rtol=0, atol=0)
    pyramid.train()
    (pyramid(l) - ab).abs().mean().backward()
    grads = [p.grad for p in pyramid.skips.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    save_weights(pyramid, tmp_path / "pyr")
    loaded, card = load_weights(tmp_path / "pyr")
    assert card["backbone"]["pyramid"] is True and loaded.pyramid


def test_pyramid_is_a_teacher_option_only():
    with pytest.raises(ValueError, match="teacher option"):
        build_model("student", 0.25, ENC, pyramid=True)


def test_a_plain_model_does_not_load_into_a_mismatched_one(tmp_path):
    save_weights(build_model("student", 0.25), tmp_path / "s")
    from retint.train import start_from

    with pytest.raises(SystemExit, match="do not fit"):
        start_from(build_model("teacher", 0.25), str(tmp_path / "s"))


def test_feature_loss_is_zero_for_the_truth_grows_with_the_error_and_has_gradients():
    loss = FeatureLoss(torch.device("cpu"))
    l, ab = _batch()
    assert float(loss(l, ab, ab)) == pytest.approx(0.0, abs=1e-9)
    half, gray = float(loss(l, ab * 0.5, ab)), float(loss(l, ab * 0, ab))
    assert 0 < half < gray
    warm = torch.zeros_like(ab) + torch.tensor([0.05, 0.15]).view(1, 2, 1, 1)
    assert float(loss(l, warm, ab)) > gray  # a confident wrong cast costs more than no colour
    pred = torch.zeros_like(ab, requires_grad=True)
    loss(l, pred, ab).backward()
    assert pred.grad.abs().sum() > 0


def test_ageing_changes_only_the_share_asked_for_and_replays_with_its_seed():
    l, _ = _batch(4)
    assert torch.equal(age_lightness(l, 0.0, torch.Generator().manual_seed(0)), l)
    every = age_lightness(l, 1.0, torch.Generator().manual_seed(0))
    assert every.shape == l.shape and every.min() >= 0 and every.max() <= 1
    assert all(not torch.equal(a, b) for a, b in zip(every, l, strict=True))
    again = age_lightness(l, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(every, again)
    assert not torch.equal(every, age_lightness(l, 1.0, torch.Generator().manual_seed(1)))


def test_training_with_the_feature_loss_and_ageing_runs_and_logs_both(photos_dir, tmp_path):
    cfg = TrainConfig(data=[str(photos_dir)], out=str(tmp_path / "run"), steps=2, batch_size=2,
                      crop=32, val_size=32, val_fraction=0.3, workers=0, warmup=1, log_every=1,
                      val_every=2, ckpt_every=2, progress=False, backbone=ENC, pyramid=True,
                      width=0.25, feature_weight=0.25, old_photo=1.0)
    figures = fit(cfg)
    assert figures["val_cast"] >= 0 and "val_b_mean" in figures
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header, first = log[0].split(","), log[1].split(",")
    assert float(first[header.index("train_feature")]) > 0


def test_video_frames_are_split_by_sequence_and_one_sequence_is_held_out(tmp_path):
    assert split_group("streets/camvid__0001TP_006690.jpg") == "streets/camvid__0001TP"
    assert split_group("imagenet-sample/imagenet__n01440764_tench.jpg") == \
        "imagenet-sample/imagenet__n01440764_tench.jpg"
    root = tmp_path / "streets"
    base = photo("astronaut")[:64, :64]
    for seq in ("0001TP", "0006R0", "Seq05VD"):
        for frame in range(3):
            write_image(root / f"camvid__{seq}_{frame:06d}.jpg", np.roll(base, frame * 7, 1))
    scan: PhotoScan = scan_photos([root], val_fraction=0.1, seed=0)
    held = {split_group(p.key) for p in scan.val}
    trained = {split_group(p.key) for p in scan.train}
    assert len(held) == 1 and not held & trained and len(scan.val) == 3
    assert len(list_photos([root])) == 9


def test_cast_of_a_constant_shift_is_that_shift():
    _, ab = _batch()
    shift = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    out = cast_metrics(ab * AB_SCALE + shift, ab * AB_SCALE)
    torch.testing.assert_close(out["cast"], torch.full((2,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(out["b_mean"] - out["b_truth"],
                               torch.full((2,), 4.0, dtype=torch.float64))
