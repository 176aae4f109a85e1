"""Training with the photos held on the device (quality lever 7), tested on the CPU: batched
ageing with the codec's own JPEG maths, crops cut on the device, a run scheduled by its time
budget, and the device script end to end on tiny data."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo
from PIL import Image

from retint.augment import age_lightness, jpeg_blocks
from retint.data import DeviceCrops, Photo, RandomCrops, list_photos
from retint.io import write_image
from retint.models import load_weights
from retint.train import TrainConfig, fit, lr_factor

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import gpu_train  # noqa: E402
from recipes import make_pool  # noqa: E402


@pytest.mark.parametrize("quality", [10, 30, 75])
def test_jpeg_blocking_in_tensors_decodes_as_pillows_jpeg_does(quality):
    gray = photo("camera")[:203, :301, 0]  # sides that are not multiples of 8
    buf = io.BytesIO()
    Image.fromarray(gray, "L").save(buf, format="JPEG", quality=quality)
    codec = np.asarray(Image.open(buf), dtype=np.float32)
    l = torch.from_numpy(gray).float()[None, None] / 255
    ours = jpeg_blocks(l, torch.tensor([quality]))[0, 0].numpy() * 255
    own_error = np.abs(codec - gray).mean()  # what the codec itself changes
    assert own_error > 1.0
    assert np.abs(ours - codec).mean() < 0.1 * own_error
    assert np.abs(ours - codec).max() <= 12


def test_ageing_a_batch_keeps_the_clean_images_and_ages_the_rest():
    l = torch.from_numpy(photo("camera")[:128, :128, 0]).float()[None, None] / 255
    l = l.repeat(32, 1, 1, 1)
    aged = age_lightness(l, 0.5, torch.Generator().manual_seed(0))
    changed = (aged != l).flatten(1).any(1)
    assert 6 <= int(changed.sum()) <= 26  # about half
    assert torch.equal(aged[~changed], l[~changed])
    assert aged.min() >= 0 and aged.max() <= 1


def _one_colour(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> Photo:
    write_image(path, np.full((size[1], size[0], 3), rgb, np.uint8))
    return Photo(path, path.name)


def test_device_crops_never_see_the_padding_around_a_smaller_photo(tmp_path):
    big = _one_colour(tmp_path / "big.png", (96, 64), (20, 200, 40))
    small = _one_colour(tmp_path / "small.png", (40, 30), (200, 30, 30))  # under the crop size
    crops = DeviceCrops([big, small], 32, max_scale=2.0, seed=0)
    assert crops.photos.shape == (2, 3, 64, 96)
    for step in range(20):
        batch = crops.crops([0, 1], step)
        assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 32, 32)
        assert torch.equal(batch[0], torch.tensor([20, 200, 40]).view(3, 1, 1).expand(3, 32, 32))
        assert torch.equal(batch[1], torch.tensor([200, 30, 30]).view(3, 1, 1).expand(3, 32, 32))


def test_device_crops_show_the_photo_mirrored_at_even_odds_and_replay_by_step(tmp_path):
    rgb = photo("astronaut")[::16, ::16]  # 32 x 32: the crop is the whole photo
    write_image(tmp_path / "a.png", rgb)
    crops = DeviceCrops([Photo(tmp_path / "a.png", "a.png")], 32, max_scale=1.0, seed=3)
    same = torch.from_numpy(rgb).permute(2, 0, 1)
    seen = {"as is": 0, "mirrored": 0}
    for step in range(40):
        crop = crops.crops([0], step)[0]
        kind = "as is" if torch.equal(crop, same) else "mirrored"
        assert torch.equal(crop, same if kind == "as is" else same.flip(-1))
        seen[kind] += 1
        assert torch.equal(crop, crops.crops([0], step)[0])
    assert min(seen.values()) >= 10


def test_device_crops_match_the_loaders_crops_in_what_they_show(photos_dir, tmp_path):
    make_pool([str(photos_dir)], tmp_path, side=128, quality=95)  # as a device pool: small
    photos = list_photos([tmp_path / photos_dir.name])[:4]
    device, loader = DeviceCrops(photos, 64, 2.0, 0), RandomCrops(photos, 64, 2.0, 0)
    ours = torch.cat([device.crops(range(4), s) for s in range(48)]).float()
    theirs = torch.stack([loader[(e, i)] for e in range(48) for i in range(4)]).float()
    for i in range(4):  # per photo: the same colours in the same amounts, and as sharp
        mean_ours, mean_theirs = ours[i::4].mean((0, 2, 3)), theirs[i::4].mean((0, 2, 3))
        assert torch.allclose(mean_ours, mean_theirs, atol=6), (mean_ours, mean_theirs)
        detail_ours = ours[i::4].diff(dim=-1).abs().mean()
        detail_theirs = theirs[i::4].diff(dim=-1).abs().mean()
        assert 0.8 < float(detail_ours / detail_theirs) < 1.25


def test_a_run_of_zero_steps_trains_for_its_budget_and_its_rate_follows_the_clock(photos_dir,
                                                                                 tmp_path):
    cfg = TrainConfig(data=[str(photos_dir)], out=str(tmp_path / "run"), steps=0,
                      time_budget=4.0, batch_size=2, crop=32, val_size=32, val_fraction=0.3,
                      warmup=1, log_every=1, val_every=1000, progress=False, width=0.25,
                      data_on_device=True, old_photo=0.5)
    assert lr_factor(5, cfg, elapsed=0.0) == pytest.approx(1.0)
    assert lr_factor(5, cfg, elapsed=2.0) == pytest.approx(0.525)
    assert lr_factor(5, cfg, elapsed=9.0) == pytest.approx(0.05)
    fit(cfg)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["lr"]) for r in rows]
    assert len(rows) >= 3 and rates[-1] < rates[1]
    assert float(rows[-1]["seconds"]) >= 4.0 and rows[-1]["val_psnr_ab"]
    _, card = load_weights(tmp_path / "run" / "final")
    assert card["steps"] == int(rows[-1]["step"]) and card["recipe"]["data_on_device"]
    with pytest.raises(SystemExit, match="time budget"):
        fit(TrainConfig(data=[str(photos_dir)], out=str(tmp_path / "bad"), steps=0))


def test_the_device_script_trains_both_models_returns_fp16_weights_and_fetches_them(
        photos_dir, tmp_path):
    make_pool([str(photos_dir)], tmp_path / "pool", side=96, quality=80)
    (tmp_path / "pool" / "photos").symlink_to(tmp_path / "pool" / photos_dir.name)
    out, runs = tmp_path / "out", tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_train.py"), "--runs", str(runs), "train", "--pool",
         str(tmp_path / "pool"), "--budget", "3", "3", "--out", str(out), "--device", "cpu",
         "--batch-size", "2", "2", "--crop", "32", "32", "--val-size", "32",
         "--val-fraction", "0.3"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("crops/s") == 2
    teacher, student = (out / name for name in gpu_train.RECIPES_RUN)
    for back in (teacher, student):
        assert sorted(p.name for p in back.iterdir()) == sorted(gpu_train.RETURNED)
        _, card = load_weights(back / "final")
        assert card["dtype"] == "float16" and card["steps"] > 0
        assert card["recipe"]["batch_size"] == 2 and card["recipe"]["data_on_device"]
    _, card = load_weights(student / "final")
    assert card["arch"] == "student" and card["recipe"]["teacher"].endswith("pool-gpu/final")
    for start in ("pool-aged", "student-small"):  # restored from the bundled weights
        assert (runs / start / "final.safetensors").exists()
    fetched = tmp_path / "scored"
    subprocess.run([sys.executable, str(SCRIPTS / "gpu_train.py"), "--runs", str(fetched),
                    "fetch", str(out)], check=True, capture_output=True)
    for name in gpu_train.RECIPES_RUN:
        assert (fetched / name / "final.safetensors").read_bytes() == \
            (out / name / "final.safetensors").read_bytes()
        assert (fetched / name / "curves.png").stat().st_size > 0
    late = subprocess.run(  # past its deadline a run is skipped, not started to be killed
        [sys.executable, str(SCRIPTS / "gpu_train.py"), "--runs", str(runs), "train", "--pool",
         str(tmp_path / "pool"), "--budget", "3", "3", "--out", str(tmp_path / "late"),
         "--device", "cpu", "--deadline", "1"], capture_output=True, text=True, timeout=600)
    assert late.returncode == 0 and late.stdout.count("skipped") == 2
    assert not (tmp_path / "late").exists()
    (student / "log.csv").unlink()
    failed = subprocess.run([sys.executable, str(SCRIPTS / "gpu_train.py"), "--runs",
                             str(fetched), "fetch", str(out)], capture_output=True, text=True)
    assert failed.returncode != 0 and "lacks log.csv" in failed.stderr


def test_what_a_device_call_sends_counts_tracked_untracked_and_carried_files(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    Path(".gitignore").write_text("/data/\n/ignored.bin\n")
    Path("tracked.txt").write_bytes(b"x" * 1000)
    subprocess.run(["git", "add", "."], check=True)
    Path("untracked.txt").write_bytes(b"y" * 300)
    Path("ignored.bin").write_bytes(b"z" * 5000)
    Path("data/pool").mkdir(parents=True)
    Path("data/pool/a.jpg").write_bytes(b"p" * 700)
    base = len(Path(".gitignore").read_bytes()) + 1000 + 300
    assert gpu_train.travel_bytes([]) == base
    assert gpu_train.travel_bytes([Path("data/pool")]) == base + 700
    pyproject = (SCRIPTS.parent / "pyproject.toml").read_text()
    assert all(f'"{pin}"' in pyproject for pin in gpu_train.ENCODER_WHEELS)
