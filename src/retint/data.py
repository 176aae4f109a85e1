"""Training data: colour photos from folders, a seeded split, and random crops.

Randomness is keyed by ``(seed, epoch, index)`` rather than drawn from a global generator, so a
crop is the same whichever worker process makes it, and ``--resume`` replays the data stream
exactly from any step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .color import rgb_to_lab
from .io import ImageReadError, find_images, read_rgb, to_uint8

# A photo whose colours spread less than this (LAB units, std of a and b together) is gray or
# nearly so; one whose ab values lie along a single ray from the origin (minor axis of their
# second moments below MIN_TINT_MINOR_AXIS) is sepia or single-tint. Neither teaches colour.
MIN_COLOR_SPREAD = 3.0
MIN_TINT_MINOR_AXIS = 0.7  # synthetic sepia measures 0.3-0.65, colour photos mostly > 1


@dataclass(frozen=True)
class Photo:
    path: Path
    key: str  # "<folder name>/<path inside it>": stable across machines, used for the split


@dataclass
class PhotoScan:
    train: list[Photo]
    val: list[Photo]
    skipped_gray: list[Photo]
    unreadable: list[tuple[Photo, str]]


def _thumbnail_ab(rgb: np.ndarray) -> torch.Tensor:
    img = Image.fromarray(to_uint8(rgb))
    img.thumbnail((96, 96))
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return rgb_to_lab(t)[1:].flatten(1).double()


def color_spread(rgb: np.ndarray) -> float:
    """How much colour a photo holds: std of (a, b) over a thumbnail, in LAB units."""
    return float(_thumbnail_ab(rgb).var(dim=1).sum().sqrt())


def tint_minor_axis(rgb: np.ndarray) -> float:
    """Spread of ab across the photo's main hue direction: ~0 for one tint (sepia, cyanotype)."""
    ab = _thumbnail_ab(rgb)
    return float(torch.linalg.eigvalsh(ab @ ab.T / ab.shape[1])[0].clamp_min(0).sqrt())


def is_monotone(rgb: np.ndarray) -> bool:
    """Gray, sepia or single-tint: a photo that teaches no colour."""
    return color_spread(rgb) < MIN_COLOR_SPREAD or tint_minor_axis(rgb) < MIN_TINT_MINOR_AXIS


def split_score(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from a hash of (seed, key): stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


#: Sources whose photos are frames of video sequences, named ``SOURCE__SEQUENCE_FRAME.jpg``:
#: neighbouring frames are near-duplicates, so these are split by sequence, not by frame.
SEQUENCE_SOURCES = ("camvid",)


def split_group(key: str) -> str:
    """What the split keeps together: the file, or a video sequence's frames."""
    folder, _, name = key.rpartition("/")
    source, sep, rest = name.partition("__")
    if sep and source in SEQUENCE_SOURCES and "_" in rest:
        return f"{folder}/{source}__{rest.rsplit('_', 1)[0]}"
    return key


def is_val(key: str, val_fraction: float, seed: int) -> bool:
    """Deterministic split by file (or by sequence), so adding photos moves no others
    between the sets."""
    return split_score(split_group(key), seed) < val_fraction


def list_photos(roots: Sequence[str | Path]) -> list[Photo]:
    """Image files under ``roots`` (recursive, each once), keyed ``<folder name>/<path inside>``
    (a lone file by its name): the keys that splits and model cards list."""
    photos, seen = [], set()
    for root in map(Path, roots):
        name = root.resolve().name  # "." keys as the folder's real name
        for path in find_images([root]):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            key = f"{name}/{path.relative_to(root).as_posix()}" if root.is_dir() else path.name
            photos.append(Photo(path, key))
    return photos


def scan_photos(
    roots: Sequence[str | Path], val_fraction: float = 0.1, seed: int = 0
) -> PhotoScan:
    """Find photos under ``roots`` (recursive), drop gray/monotone ones, split train/val."""
    scan = PhotoScan([], [], [], [])
    for photo in list_photos(roots):
        path, key = photo.path, photo.key
        try:
            rgb = read_rgb(path)
        except ImageReadError as err:
            scan.unreadable.append((photo, str(err)))
            continue
        if is_monotone(rgb):
            scan.skipped_gray.append(photo)
        elif is_val(key, val_fraction, seed):
            scan.val.append(photo)
        else:
            scan.train.append(photo)
    if not scan.val and len(scan.train) >= 2 and val_fraction > 0:  # tiny folders
        first = min(scan.train, key=lambda p: split_score(p.key, seed))
        scan.train.remove(first)
        scan.val.append(first)
    _hold_out_one_sequence(scan, val_fraction, seed)
    return scan


def _hold_out_one_sequence(scan: PhotoScan, val_fraction: float, seed: int) -> None:
    """A folder of a few video sequences may have none in validation by the hash alone: then
    its lowest-scoring sequence is held out, so every such folder can be validated."""
    groups: dict[str, dict[str, list[Photo]]] = {}
    for photo in scan.train + scan.val:
        group = split_group(photo.key)
        if group != photo.key:
            groups.setdefault(photo.key.rpartition("/")[0], {}).setdefault(group, []).append(photo)
    for sequences in groups.values():
        held = [g for g in sequences if split_score(g, seed) < val_fraction]
        if held or len(sequences) < 2 or val_fraction <= 0:
            continue
        chosen = min(sequences, key=lambda g: split_score(g, seed))
        for photo in sequences[chosen]:
            scan.train.remove(photo)
            scan.val.append(photo)


def _resize_short_side(img: Image.Image, short: int) -> Image.Image:
    w, h = img.size
    scale = short / min(w, h)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return img.resize(size, Image.BILINEAR, reducing_gap=2.0)


class RandomCrops(Dataset):
    """Square crops of ``size`` at a random scale, randomly mirrored; uint8 (3, size, size).

    Each photo is first resized so its short side is ``size * U(1, max_scale)`` (capped at the
    photo's own short side): crops then see whole objects, as the model does at inference when a
    photo is shrunk to the working size, and also closer details.
    Indexed by ``(epoch, i)`` pairs from :class:`EpochSampler`.
    """

    def __init__(self, photos: Sequence[Photo], size: int, max_scale: float = 2.0, seed: int = 0):
        self.photos = list(photos)
        self.size = size
        self.max_scale = max_scale
        self.seed = seed

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        epoch, i = item
        rng = np.random.default_rng([self.seed, epoch, i])
        img = Image.fromarray(to_uint8(read_rgb(self.photos[i].path)))
        short = min(img.size)
        target = self.size * rng.uniform(1.0, self.max_scale)
        img = _resize_short_side(img, round(min(max(target, self.size), max(short, self.size))))
        w, h = img.size
        x, y = int(rng.integers(0, w - self.size + 1)), int(rng.integers(0, h - self.size + 1))
        arr = np.asarray(img)[y : y + self.size, x : x + self.size]
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def center_crops(photos: Sequence[Photo], size: int) -> torch.Tensor:
    """Validation images: short side resized to ``size``, centre square; uint8 (N,3,size,size)."""
    out = torch.empty((len(photos), 3, size, size), dtype=torch.uint8)
    for n, photo in enumerate(photos):
        img = _resize_short_side(Image.fromarray(to_uint8(read_rgb(photo.path))), size)
        w, h = img.size
        x, y = (w - size) // 2, (h - size) // 2
        crop = np.asarray(img)[y : y + size, x : x + size].copy()
        out[n] = torch.from_numpy(crop).permute(2, 0, 1)
    return out


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` forever: a seeded permutation per epoch, sharded by rank.

    ``start`` skips that many samples of this rank's stream, which is how ``--resume`` continues
    mid-epoch. Each rank sees ``len // world`` samples per epoch (the tail is dropped) so that
    all ranks take the same number of steps.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n < world:
            raise ValueError(f"{n} training photos cannot be shared by {world} processes")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start
        self.per_epoch = n // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g)[self.rank :: self.world][: self.per_epoch]
            for i in order[offset:].tolist():
                yield epoch, i
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader needs no length
        return 2**62


class DeviceCrops:
    """The training photos held on one device (a GPU) as uint8, and the crops of
    :class:`RandomCrops` made there in one batched pass, so no loader process decodes or
    resizes anything while the device trains.

    Each crop is drawn as in :class:`RandomCrops`: the photo's short side shown at
    ``size * U(1, max_scale)`` (capped at its own short side, and never under ``size``), a
    random window, mirrored at even odds; here the window is sampled bilinearly
    (``F.grid_sample``) straight from the stored photo. Keep the stored photos small (a pool
    copy with a long side near twice the crop) so that the window is shrunk by little: the
    sampling does not pre-filter. Photos that small also cap how far a crop can zoom in (at
    their own short side). A step's draws are keyed by ``(seed, step, rank)``, apart from the
    sampler's, so a resumed run replays them.
    """

    def __init__(self, photos: Sequence[Photo], size: int, max_scale: float = 2.0,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        arrays = [to_uint8(read_rgb(p.path)) for p in photos]
        height, width = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
        self.photos = torch.zeros((len(arrays), 3, height, width), dtype=torch.uint8,
                                  device=device)
        for n, a in enumerate(arrays):  # top-left corner of a canvas the size of the largest
            self.photos[n, :, : a.shape[0], : a.shape[1]] = torch.from_numpy(a).permute(2, 0, 1)
        self.sizes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.float32)  # h, w
        self.size, self.max_scale, self.seed = size, max_scale, seed

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def nbytes(self) -> int:
        return self.photos.numel()

    def crops(self, indices: Sequence[int], step: int, rank: int = 0) -> torch.Tensor:
        """uint8 (B, 3, size, size) crops of the photos at ``indices``, on their device."""
        from .device import send

        n, size = len(indices), self.size
        g = torch.Generator().manual_seed(2**40 + (self.seed * 1_000_003 + step) * 1024 + rank)
        scale, x, y, mirror = torch.rand(4, n, generator=g)
        h, w = self.sizes[list(indices)].unbind(1)
        short = torch.minimum(h, w)
        shown = (size * (1 + (self.max_scale - 1) * scale)).clamp(min=size)
        shown = torch.minimum(shown, short.clamp(min=size))  # short side as displayed
        side = short * size / shown  # the window, in the stored photo's pixels
        cx, cy = x * (w - side) + side / 2, y * (h - side) + side / 2
        canvas_h, canvas_w = self.photos.shape[2:]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(mirror < 0.5, -1.0, 1.0) * side / canvas_w
        theta[:, 0, 2] = 2 * cx / canvas_w - 1
        theta[:, 1, 1] = side / canvas_h
        theta[:, 1, 2] = 2 * cy / canvas_h - 1
        device = self.photos.device
        grid = torch.nn.functional.affine_grid(send(theta, device), [n, 3, size, size],
                                               align_corners=False)
        # keep to each photo's own pixel centres: its edge is repeated, the canvas never shows
        edge = torch.stack([(2 * w - 1) / canvas_w - 1, (2 * h - 1) / canvas_h - 1], 1)
        first = torch.tensor([1 / canvas_w - 1, 1 / canvas_h - 1])
        grid = torch.minimum(torch.maximum(grid, send(first, device)),
                             send(edge, device).view(n, 1, 1, 2))
        chosen = self.photos[send(torch.as_tensor(list(indices)), device)].float()
        out = torch.nn.functional.grid_sample(chosen, grid, mode="bilinear",
                                              padding_mode="border", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def stream(self, sampler: EpochSampler, batch: int, step: int = 0
               ) -> Iterator[torch.Tensor]:
        """Batches of crops forever, in ``sampler``'s order (which starts where ``step`` is)."""
        items = iter(sampler)
        while True:
            chosen = [next(items)[1] for _ in range(batch)]
            yield self.crops(chosen, step, sampler.rank)
            step += 1
