"""Training and distillation: run files, exact resume, the distillation objective, DDP."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from retint.color import rgb_to_model
from retint.models import build_model, load_weights
from retint.train import Net, Objective, TrainConfig, fit, lr_factor


def tiny(photos_dir: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(data=[str(photos_dir)], out=str(out), steps=4, batch_size=2, crop=32,
                  val_size=32, val_fraction=0.3, workers=0, warmup=1, log_every=1,
                  val_every=2, ckpt_every=2, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def read_log(run: Path) -> list[dict]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_training_writes_logs_curves_checkpoints_and_weights(photos_dir, tmp_path):
    run = tmp_path / "run"
    figures = fit(tiny(photos_dir, run))

    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    validated = [r for r in rows if r["val_psnr_ab"]]
    assert [int(r["step"]) for r in validated] == [2, 4]
    for r in validated:  # the model and the no-colour baseline, both measured
        assert float(r["base_psnr_ab"]) > 10 and -1 <= float(r["val_ssim_ab"]) <= 1
    assert figures["val_psnr_ab"] == pytest.approx(float(validated[-1]["val_psnr_ab"]), rel=1e-5)

    with Image.open(run / "curves.png") as png:
        assert png.format == "PNG" and png.width > 500

    split = json.loads((run / "split.json").read_text())
    assert sorted(split["skipped_gray"]) == [f"{photos_dir.name}/gray_camera.png",
                                             f"{photos_dir.name}/sepia_coffee.jpg"]
    assert len(split["train"]) + len(split["val"]) == 6 and split["val"]

    for name in ("best", "final"):
        model, card = load_weights(run / name)
        assert card["arch"] == "teacher" and card["steps"] in (2, 4)
        assert "base_psnr_ab" in card["validation"]
    state = torch.load(run / "last.pt", weights_only=True)  # no code is unpickled
    assert state["step"] == 4 and "optimizer" in state and "rng" in state


@pytest.mark.parametrize("extra", [{}, {"old_photo": 1.0, "data_on_device": True}],
                         ids=["loader", "aged-crops-on-the-device"])
def test_resume_continues_exactly(photos_dir, tmp_path, extra):
    straight = tmp_path / "straight"
    fit(tiny(photos_dir, straight, steps=6, workers=1, **extra))

    split = tmp_path / "split"
    fit(tiny(photos_dir, split, steps=6, workers=1, time_budget=1e-9, **extra))  # 1 step
    assert [int(r["step"]) for r in read_log(split)] == [1]
    fit(tiny(photos_dir, split, steps=6, workers=1, resume=True, **extra))

    a, _ = load_weights(straight / "final")
    b, _ = load_weights(split / "final")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert [int(r["step"]) for r in read_log(split)] == [1, 2, 3, 4, 5, 6]


def test_resume_without_checkpoint_is_a_clear_error(photos_dir, tmp_path):
    with pytest.raises(SystemExit, match="--resume"):
        fit(tiny(photos_dir, tmp_path / "none", resume=True))


def test_training_reduces_the_loss(photos_dir, tmp_path):
    run = tmp_path / "run"
    fit(tiny(photos_dir, run, steps=40, lr=2e-3, batch_size=4, val_every=40))
    losses = [float(r["train_loss"]) for r in read_log(run)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(data=[], out="", steps=1000, warmup=100)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(550, cfg) == pytest.approx(0.525, abs=1e-3)
    assert lr_factor(1000, cfg) == pytest.approx(0.05)


def test_distillation_objective(model_files, photos_dir, tmp_path):
    """alpha weighs reconstruction, beta the latent match; one student pass; teacher frozen."""
    cfg = tiny(photos_dir, tmp_path, arch="student", teacher=str(model_files["teacher"]),
               alpha=0.3, beta=0.7)
    objective = Objective(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    student = build_model("student")
    net = Net(student).train()
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))

    l, ab = rgb_to_model(torch.rand(2, 3, 32, 32))
    loss, parts, pred = objective(net, l, ab)
    assert len(calls) == 1  # latent and output from one pass
    assert pred.shape == ab.shape
    assert not objective.teacher.training

    with torch.no_grad():
        recon = F.mse_loss(student(l), ab)
        distill = F.mse_loss(student.latent(l), objective.teacher.latent(l))
    assert float(parts["recon"].detach()) == pytest.approx(float(recon), rel=1e-5)
    assert float(parts["distill"].detach()) == pytest.approx(float(distill), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.3 * float(recon) + 0.7 * float(distill),
                                                 rel=1e-5)

    loss.backward()
    assert all(p.grad is None for p in objective.teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_distill_run_keeps_teacher_untouched_and_adapts_a_narrow_student(
        model_files, photos_dir, tmp_path):
    before = model_files["teacher"].read_bytes()
    run = tmp_path / "narrow"
    fit(tiny(photos_dir, run, arch="student", width=0.5, teacher=str(model_files["teacher"])))
    assert model_files["teacher"].read_bytes() == before
    student, card = load_weights(run / "final")
    assert card["width"] == 0.5 and student.latent_channels == 256
    assert any(float(r["train_distill"] or 0) > 0 for r in read_log(run))


def test_torchrun_two_processes_stay_in_sync(photos_dir, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "retint", "train", str(photos_dir), "-o", str(run), "--steps", "4",
         "--batch-size", "4", "--crop", "32", "--val-size", "32", "--val-fraction", "0.3",
         "--workers", "0", "--warmup", "1", "--val-every", "2", "--log-every", "1",
         "--device", "cpu", "-q"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"ranks in sync: True \(parameter checksums \[([^\]]+)\]\)",
                      proc.stdout + proc.stderr)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    sums = [float(x) for x in match.group(1).split(",")]
    assert len(sums) == 2 and sums[0] == sums[1]
    rows = read_log(run)  # rank 0 alone logs: one row per step
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    model, card = load_weights(run / "final")
    assert card["processes"] == 2


def test_cli_train_reports_a_folder_without_photos(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "retint", "train", str(tmp_path / "empty"),
                           "-o", str(tmp_path / "run"), "-q"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_crop_that_is_not_a_multiple_of_16_is_refused_up_front(photos_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        fit(tiny(photos_dir, tmp_path / "run", crop=100))
    assert not (tmp_path / "run").exists()  # refused before scanning or writing anything


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    from retint.device import pick_device

    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("cpu").type == "cpu" and pick_device("auto").type in ("cpu", "mps")
