"""Objectives against sepia: losses, rarity weights, output distillation and the PatchGAN."""

from __future__ import annotations

import csv

import pytest
import torch

from retint.losses import (
    AB_BINS,
    ELEMENTWISE,
    Adversary,
    PatchDiscriminator,
    ab_bin_index,
    ab_histogram,
    pixel_loss,
    rarity_weights,
)
from retint.models import build_model, load_weights, save_weights
from retint.train import Net, Objective, TrainConfig, fit


def tiny(photos_dir, out, **overrides) -> TrainConfig:
    values = dict(data=[str(photos_dir)], out=str(out), steps=4, batch_size=2, crop=32,
                  val_size=32, val_fraction=0.3, workers=0, warmup=1, log_every=1,
                  val_every=2, ckpt_every=2, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_each_loss_is_zero_at_target_and_has_gradients(name):
    torch.manual_seed(0)
    target = torch.rand(2, 2, 8, 8) * 2 - 1
    assert float(pixel_loss(name, target, target)) == 0.0
    pred = torch.zeros(2, 2, 8, 8, requires_grad=True)
    loss = pixel_loss(name, pred, target)
    loss.backward()
    assert loss.shape == () and loss > 0
    assert pred.grad.shape == pred.shape and pred.grad.abs().sum() > 0
    # the gradient pulls the prediction towards the target
    assert torch.all(pred.grad * target <= 0)


def test_robust_losses_weigh_big_errors_less_than_mse():
    target = torch.zeros(1, 2, 1, 2)
    pred = torch.tensor([0.05, 0.8]).reshape(1, 1, 1, 2).expand(1, 2, 1, 2)
    mse = ELEMENTWISE["mse"](pred, target)
    huber = ELEMENTWISE["huber"](pred, target)
    l1 = ELEMENTWISE["l1"](pred, target)
    # share of the loss owed to the outlier: MSE lets it dominate most
    share = {k: float(v[..., 1].sum() / v.sum()) for k, v in
             {"mse": mse, "huber": huber, "l1": l1}.items()}
    assert share["mse"] > share["huber"] > 0.5 and share["mse"] > share["l1"]


def test_histogram_counts_bins():
    ab = torch.zeros(1, 2, 2, 2)
    ab[0, :, 0, 0] = torch.tensor([0.99, -0.99])  # one saturated pixel
    hist = ab_histogram(ab)
    assert hist.shape == (AB_BINS, AB_BINS) and hist.sum() == 4
    assert hist[AB_BINS // 2, AB_BINS // 2] == 3 and hist[AB_BINS - 1, 0] == 1
    assert ab_bin_index(ab)[0, 0, 0] == (AB_BINS - 1) * AB_BINS


def test_rarity_weights_from_a_known_histogram():
    hist = torch.zeros(AB_BINS, AB_BINS, dtype=torch.float64)
    hist[16, 16] = 900  # mostly gray
    hist[28, 20] = 100  # some saturated red
    for strength in (0.25, 0.5, 1.0):
        w = rarity_weights(hist, strength, sigma=0)
        p = hist / hist.sum()
        assert float((p * w).sum()) == pytest.approx(1.0, rel=1e-5)  # E_p[w] = 1
        assert w[28, 20] > w[16, 16]  # the rare colour weighs more
    # pure inverse frequency: weight ratio is the inverse of the frequency ratio
    w = rarity_weights(hist, 1.0, sigma=0)
    assert float(w[28, 20] / w[16, 16]) == pytest.approx(9.0, rel=1e-4)
    # strength 0 is the plain loss
    assert torch.allclose(rarity_weights(hist, 0.0, sigma=0), torch.ones(AB_BINS, AB_BINS))
    with pytest.raises(ValueError):
        rarity_weights(hist, 1.5)


def test_weighted_loss_counts_rare_target_pixels_more():
    hist = torch.zeros(AB_BINS, AB_BINS, dtype=torch.float64)
    hist[16, 16], hist[28, 20] = 900, 100
    w = rarity_weights(hist, 0.5, sigma=0)
    target = torch.zeros(1, 2, 1, 2)
    target[0, :, 0, 1] = torch.tensor([(28.5 / 16) - 1, (20.5 / 16) - 1])
    err_on_gray = target.clone()
    err_on_gray[0, :, 0, 0] += 0.1
    err_on_red = target.clone()
    err_on_red[0, :, 0, 1] += 0.1
    assert pixel_loss("mse", err_on_gray, target) == pytest.approx(
        float(pixel_loss("mse", err_on_red, target)))
    assert pixel_loss("mse", err_on_red, target, w) > pixel_loss("mse", err_on_gray, target, w)


def test_rebalanced_training_saves_its_histogram_and_learns(photos_dir, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    fit(tiny(photos_dir, run, rebalance=0.5, loss="huber"))
    saved = load_file(str(run / "ab_rarity.safetensors"))
    assert saved["histogram"].sum() > 0 and saved["weights"].shape == (AB_BINS, AB_BINS)
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["train_loss"]) > 0 for r in rows)
    assert 0 < float(rows[-1]["val_cf_ratio"]) < 5
    _, card = load_weights(run / "final")
    assert card["recipe"]["rebalance"] == 0.5 and card["recipe"]["loss"] == "huber"


def test_output_distillation_matches_sharpened_teacher_colors(model_files, tmp_path):
    cfg = TrainConfig(data=[], out=str(tmp_path), arch="student", teacher=str(
        model_files["teacher"]), kd_output=1.0, kd_sharpen=1.5, alpha=0.0, beta=0.0)
    objective = Objective(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    l = torch.rand(2, 1, 32, 32)
    ab = torch.rand(2, 2, 32, 32) * 2 - 1
    net = Net(build_model("student"))
    loss, parts, pred = objective(net, l, ab)
    target = (objective.teacher(l) * 1.5).clamp(-1, 1)
    expected = float(((pred - target) ** 2).mean().detach())
    assert float(parts["output"].detach()) == pytest.approx(expected, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)  # alpha = beta = 0
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_patch_discriminator_scores_patches():
    disc = PatchDiscriminator()
    out = disc(torch.rand(2, 1, 64, 64), torch.rand(2, 2, 64, 64))
    assert out.shape == (2, 1, 6, 6)  # one score per overlapping ~70 px patch


def test_adversary_step_moves_the_discriminator_the_right_way():
    torch.manual_seed(0)
    adv = Adversary(weight=1.0, start=0, lr=1e-3, device=torch.device("cpu"))
    l = torch.rand(4, 1, 32, 32)
    real = torch.rand(4, 2, 32, 32) * 2 - 1
    fake = torch.zeros(4, 2, 32, 32)  # gray: what a sepia model predicts
    first = float(adv.step(l, real, fake))
    for _ in range(20):
        last = float(adv.step(l, real, fake))
    assert last < first
    before = [p.detach().clone() for p in adv.disc.parameters()]
    fake.requires_grad_(True)
    adv.generator_loss(l, fake).backward()
    assert fake.grad.abs().sum() > 0  # the generator gets a signal...
    for p, q in zip(before, adv.disc.parameters(), strict=True):
        assert torch.equal(p, q) and p.grad is None  # ...and the discriminator no update


def test_short_gan_run_updates_both_networks_and_resumes(photos_dir, tmp_path):
    pre = tmp_path / "pre"
    fit(tiny(photos_dir, pre, steps=2))
    start, _ = load_weights(pre / "final")

    run = tmp_path / "gan"
    fit(tiny(photos_dir, run, steps=4, init=str(pre / "final"), gan_weight=0.1, gan_start=2))
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [bool(r["train_adv"]) for r in rows] == [False, False, True, True]
    assert all(float(r["train_disc"]) > 0 for r in rows[2:])
    tuned, _ = load_weights(run / "final")
    changed = [not torch.equal(a, b) for a, b in
               zip(start.state_dict().values(), tuned.state_dict().values(), strict=True)]
    assert any(changed)  # the generator moved from its starting weights
    state = torch.load(run / "last.pt", weights_only=True)
    disc = PatchDiscriminator()
    fresh = {k: v.clone() for k, v in disc.state_dict().items()}
    disc.load_state_dict(state["adversary"]["disc"])
    assert any(not torch.equal(fresh[k], v) for k, v in disc.state_dict().items())
    # resuming a GAN run picks up the discriminator too
    fit(tiny(photos_dir, run, steps=6, init=str(pre / "final"), gan_weight=0.1, gan_start=2,
             resume=True))
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6


def test_init_must_match_the_architecture(photos_dir, tmp_path, model_files):
    with pytest.raises(SystemExit, match="do not fit this model"):
        fit(tiny(photos_dir, tmp_path / "x", arch="student", init=str(model_files["teacher"])))
    with pytest.raises(SystemExit, match="do not fit this model"):
        fit(tiny(photos_dir, tmp_path / "y", arch="student", width=0.5,
                 init=str(model_files["student"])))


def test_save_and_load_keep_training_options_out_of_the_weights(tmp_path):
    model = build_model("student")
    save_weights(model, tmp_path / "s", {"recipe": {"rebalance": 0.5}})
    loaded, card = load_weights(tmp_path / "s")
    assert card["recipe"]["rebalance"] == 0.5 and "backbone" not in card
