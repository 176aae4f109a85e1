"""Tests for retint.data: scanning and splitting photo folders, crops, and the resumable sampler."""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLOR_PHOTOS, photo, sepia

from retint.data import (
    MIN_COLOR_SPREAD,
    MIN_TINT_MINOR_AXIS,
    EpochSampler,
    Photo,
    RandomCrops,
    center_crops,
    color_spread,
    is_monotone,
    scan_photos,
    tint_minor_axis,
)
from retint.io import write_image


@pytest.fixture(scope="module")
def photos_scan(photos_dir):
    return scan_photos([photos_dir], val_fraction=0.3, seed=0)


def names(photos) -> set[str]:
    return {p.path.name for p in photos}


def write_tiles(folder: Path, count: int, start: int = 0) -> None:
    """Small, distinct, clearly colourful photos: 4x4 patches of random colours, 16x16 pixels."""
    for n in range(start, start + count):
        patches = np.random.default_rng(n).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        write_image(folder / f"tile_{n:03d}.png", np.kron(patches, np.ones((4, 4, 1), np.uint8)))


@pytest.fixture(scope="module")
def tiles_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiles")
    write_tiles(root, 40)
    return root


# ---------------------------------------------------------------- scan_photos


def test_scan_finds_nested_color_photos(photos_scan, photos_dir):
    found = photos_scan.train + photos_scan.val
    assert names(found) == {f"{n}.jpg" for n in COLOR_PHOTOS}
    nested = {p for p in found if p.path.parent.name == "nested"}
    assert len(nested) == len(COLOR_PHOTOS) // 2
    for p in found:
        assert p.key == f"{photos_dir.name}/{p.path.relative_to(photos_dir).as_posix()}"
    assert not names(photos_scan.train) & names(photos_scan.val)
    assert photos_scan.val and photos_scan.train
    assert photos_scan.unreadable == []


def test_scan_skips_gray_and_sepia(photos_scan):
    assert names(photos_scan.skipped_gray) == {"gray_camera.png", "sepia_coffee.jpg"}
    assert len(photos_scan.skipped_gray) == 2


def test_unreadable_file_is_reported_and_scan_goes_on(photos_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(photos_dir, folder)
    (folder / "nested" / "broken.jpg").write_bytes(b"this is not a JPEG at all\n" * 20)
    scan = scan_photos([folder], val_fraction=0.3, seed=0)
    assert [p.path.name for p, _ in scan.unreadable] == ["broken.jpg"]
    message = scan.unreadable[0][1]
    assert "broken.jpg" in message and "\n" not in message
    assert names(scan.train + scan.val) == {f"{n}.jpg" for n in COLOR_PHOTOS}


def test_split_is_deterministic_and_seeded(tiles_dir):
    a = scan_photos([tiles_dir], val_fraction=0.5, seed=0)
    b = scan_photos([tiles_dir], val_fraction=0.5, seed=0)
    assert len(a.train) + len(a.val) == 40 and not a.skipped_gray and not a.unreadable
    assert names(a.val) == names(b.val) and names(a.train) == names(b.train)
    assert 5 <= len(a.val) <= 35  # about half
    c = scan_photos([tiles_dir], val_fraction=0.5, seed=1)
    assert names(c.val) != names(a.val)
    assert names(c.train + c.val) == names(a.train + a.val)


def test_adding_photos_moves_no_others(tiles_dir, tmp_path):
    folder = tmp_path / tiles_dir.name  # same folder name: keys are "<folder>/<file>"
    shutil.copytree(tiles_dir, folder)
    before = scan_photos([folder], val_fraction=0.3, seed=3)
    write_tiles(folder, 5, start=40)
    after = scan_photos([folder], val_fraction=0.3, seed=3)
    assert len(after.train) + len(after.val) == 45
    old = names(before.train + before.val)
    assert names(after.val) & old == names(before.val)
    assert names(after.train) & old == names(before.train)


def test_tiny_folder_still_gets_a_validation_photo(tmp_path):
    write_tiles(tmp_path, 2)
    scan = scan_photos([tmp_path], val_fraction=1e-9, seed=0)
    assert len(scan.val) == 1 and len(scan.train) == 1
    assert scan_photos([tmp_path], val_fraction=1e-9, seed=0).val == scan.val


# ---------------------------------------------------------------- color_spread


def tinted(rgb: np.ndarray, tint) -> np.ndarray:
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(gray[..., None] * np.array(tint, np.float32), 0, 255).astype(np.uint8)


def test_gray_has_no_color_spread():
    gray = photo("camera")
    assert gray.shape == (512, 512, 3)
    assert color_spread(gray) < 0.1
    assert is_monotone(gray)


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea"])
def test_sepia_and_cyanotype_are_monotone(name):
    for toned in (sepia(photo(name)), tinted(photo(name), (0.4, 0.68, 1.0))):
        assert tint_minor_axis(toned) < MIN_TINT_MINOR_AXIS
        assert is_monotone(toned)


@pytest.mark.parametrize("name", COLOR_PHOTOS)
def test_color_photos_are_not_monotone(name):
    rgb = photo(name)
    assert color_spread(rgb) > MIN_COLOR_SPREAD
    assert tint_minor_axis(rgb) > MIN_TINT_MINOR_AXIS
    assert not is_monotone(rgb)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_color_spread_high_for_color_photos(name):
    assert color_spread(photo(name)) > 3 * color_spread(photo("camera")) + 2 * MIN_COLOR_SPREAD


def test_color_spread_reads_uint16():
    rgb = photo("coffee")
    assert color_spread(rgb.astype(np.uint16) * 257) == pytest.approx(color_spread(rgb))


# ---------------------------------------------------------------- crops


@pytest.fixture(scope="module")
def crop_photos(photos_dir) -> list[Photo]:
    return [Photo(photos_dir / "astronaut.jpg", "a"), Photo(photos_dir / "nested" / "coffee.jpg",
                                                            "c")]


def test_random_crops_shape_and_determinism(crop_photos):
    crops = RandomCrops(crop_photos, size=64, seed=0)
    assert len(crops) == 2
    a = crops[0, 1]
    assert a.dtype == torch.uint8 and a.shape == (3, 64, 64)
    assert torch.equal(a, crops[0, 1])
    assert torch.equal(a, RandomCrops(crop_photos, size=64, seed=0)[0, 1])
    others = [crops[epoch, 1] for epoch in (1, 2, 3)]
    assert all(not torch.equal(a, o) for o in others)
    assert not torch.equal(a, RandomCrops(crop_photos, size=64, seed=1)[0, 1])
    # Crops come from the photo: colourful, not padding.
    assert color_spread(a.permute(1, 2, 0).numpy()) > MIN_COLOR_SPREAD


def test_random_crops_of_a_photo_smaller_than_the_crop(tmp_path):
    small = photo("chelsea")[100:140, 150:210]  # 40x60
    write_image(tmp_path / "small.png", small)
    crops = RandomCrops([Photo(tmp_path / "small.png", "s")], size=64)
    for epoch in range(3):
        c = crops[epoch, 0]
        assert c.shape == (3, 64, 64) and c.dtype == torch.uint8
        # Upscaled, so it keeps the photo's colours rather than black borders.
        mean = c.double().mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(mean, small.reshape(-1, 3).mean(0), atol=25)


def test_center_crops(crop_photos, tmp_path):
    out = center_crops(crop_photos, 48)
    assert out.shape == (2, 3, 48, 48) and out.dtype == torch.uint8
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out, center_crops(crop_photos, 48))
    write_image(tmp_path / "tall.png", photo("rocket"))  # 427 wide, 640 high
    tall = center_crops([Photo(tmp_path / "tall.png", "t")], 32)
    assert tall.shape == (1, 3, 32, 32)


# ---------------------------------------------------------------- EpochSampler


def test_sampler_covers_every_index_once_per_epoch():
    stream = list(islice(iter(EpochSampler(10, seed=5)), 30))
    for epoch in range(3):
        chunk = stream[10 * epoch : 10 * epoch + 10]
        assert {e for e, _ in chunk} == {epoch}
        assert sorted(i for _, i in chunk) == list(range(10))
    assert [i for _, i in stream[:10]] != [i for _, i in stream[10:20]]  # reshuffled
    assert stream[:10] == list(islice(iter(EpochSampler(10, seed=5)), 10))
    assert stream[:10] != list(islice(iter(EpochSampler(10, seed=6)), 10))


@pytest.mark.parametrize("n", [10, 11])
def test_sampler_shards_are_disjoint_and_equal(n):
    for epoch in range(2):
        shards = []
        for rank in range(2):
            s = EpochSampler(n, seed=1, rank=rank, world=2)
            items = list(islice(iter(s), 2 * s.per_epoch))
            shard = items[epoch * s.per_epoch : (epoch + 1) * s.per_epoch]
            assert {e for e, _ in shard} == {epoch}
            shards.append([i for _, i in shard])
        assert len(shards[0]) == len(shards[1]) == n // 2
        assert not set(shards[0]) & set(shards[1])
        assert len(set(shards[0])) == n // 2
        assert len(set(shards[0]) | set(shards[1])) == 2 * (n // 2)


def test_sampler_rejects_more_ranks_than_photos():
    with pytest.raises(ValueError):
        EpochSampler(1, seed=0, world=2)


@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 3)])
@pytest.mark.parametrize("start", [0, 3, 7, 8, 13, 30])
def test_sampler_resume_replays_the_stream(rank, world, start):
    n = 8 * world
    full = list(islice(iter(EpochSampler(n, seed=2, rank=rank, world=world)), start + 20))
    resumed = list(islice(iter(EpochSampler(n, seed=2, rank=rank, world=world, start=start)), 20))
    assert resumed == full[start:]
