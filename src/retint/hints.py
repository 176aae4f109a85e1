"""Colour hints: the user says what colour a thing was, and a hint model carries it.

One format for every surface (``retint colorize --hints FILE`` and ``--hint``, the folder pickup
of ``NAME.hints.json``, ``Colorizer.colorize(image, hints=...)``, the page and the ``hints``
field of ``POST /api/colorize``, ``retint video --hints``): a JSON list of points ::

    [{"x": 0.42, "y": 0.31, "colour": "#a33b2c"},
     {"x": 0.80, "y": 0.65, "colour": "#2c5fa3", "radius": 0.02}]

- ``x``, ``y``: where, relative to the photo as it is seen (after its EXIF rotation), from the
  top-left corner: ``x`` across (0 left, 1 right), ``y`` down (0 top, 1 bottom).
- ``colour`` (or ``color``): hex sRGB, ``#rrggbb`` or ``#rgb``. Only its chroma is used: the
  colour is converted to CIE LAB and its a*, b* kept; the lightness L always comes from the
  photo, so a hint never changes it.
- ``radius`` (optional): half the side of the square patch the colour fills, *relative to the
  photo's long side* (0-0.25), like ``x`` and ``y`` so that one file fits the photo at any size
  and working size. Default :data:`DEFAULT_RADIUS` (0.008: a 5-pixel patch at the working size
  256, the middle of the 3-7 px patches the hint model is trained with).

A bad hint (a point outside [0, 1], a colour that is not hex, malformed JSON, unknown fields)
is a :class:`HintError` with a one-line message that names the file and the point.

For a film (``retint video --hints``) the file is a list of time ranges, in seconds of the input
(the clock of ``--start``/``--end``; ``end`` exclusive, either may be left out) ::

    [{"start": 0.0, "end": 4.5, "points": [{"x": 0.5, "y": 0.4, "colour": "#a33b2c"}]}]

and a plain list of points there applies to the whole film.

Hints need a hint model (:mod:`retint.models.hinted`); with no hint it gives exactly the
automatic result of the teacher it is built on. With hints, the result is also kept inside the
sRGB gamut at full resolution (:func:`keep_in_gamut`), so that its lightness is the photo's to
within the 8-bit rounding even where a vivid hint meets a dark or bright L.

torch is imported inside the functions that need it: parsing stays light (``retint --help``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from .inference import Colorizer

DEFAULT_RADIUS = 0.008
MAX_RADIUS = 0.25
MAX_POINTS = 1000
SIDECAR_SUFFIX = ".hints.json"
EXAMPLE = '[{"x": 0.42, "y": 0.31, "colour": "#a33b2c"}]'
POINT_FIELDS = ("x", "y", "colour", "color", "radius")
RANGE_FIELDS = ("start", "end", "points")
_HEX = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
#: training: patch half-sides of the simulated hints (3, 5 and 7 px patches)
PATCH_HALVES = (1, 2, 3)
#: training: a point is drawn with weight (1 + g / GRADIENT_SCALE)^-2, g the local L gradient
#: (L/100 units, 5x5 mean): flat region interiors are ~10-100x likelier than edges
GRADIENT_SCALE = 0.01
MAX_SIMULATED = 64  # simulated points per crop at most
NO_HINT_MODEL = ("colour hints need a hint model, and none is installed (no bundled 'hints' "
                 "model): train one with `python scripts/recipes.py train --only hint-colour` "
                 "and pass --model runs/recipes/hint-colour/final")


class HintError(ValueError):
    """A bad hint or hints file: the message is one line, naming where."""


# ---------------------------------------------------------------- colour


def hex_to_ab(colour: str) -> tuple[float, float]:
    """The a*, b* of a hex sRGB colour (D65, 2 degree observer: the constants of
    :mod:`retint.color` and scikit-image), in plain Python."""
    text = colour[1:]
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    rgb = [int(text[i : i + 2], 16) / 255.0 for i in (0, 2, 4)]
    lin = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
    m = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169),
         (0.019334, 0.119193, 0.950227))
    white = (0.95047, 1.0, 1.08883)
    f = []
    for row, wn in zip(m, white, strict=True):
        t = sum(k * c for k, c in zip(row, lin, strict=True)) / wn
        f.append(t ** (1.0 / 3.0) if t > 0.008856 else 7.787 * t + 16.0 / 116.0)
    return 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])


# ---------------------------------------------------------------- the format


@dataclass(frozen=True)
class Hint:
    """One point: where (relative), the chroma to carry (LAB a*, b*), the patch's half side
    (relative to the long side), and the hex colour it came from (None if sampled)."""

    x: float
    y: float
    a: float
    b: float
    radius: float = DEFAULT_RADIUS
    colour: str | None = None

    @classmethod
    def from_colour(cls, x: float, y: float, colour: str,
                    radius: float = DEFAULT_RADIUS) -> Hint:
        return _point({"x": x, "y": y, "colour": colour, "radius": radius}, "hint")

    def to_json(self) -> dict[str, Any]:
        if self.colour is None:
            raise HintError("a hint sampled from the truth has no hex colour to write")
        out: dict[str, Any] = {"x": self.x, "y": self.y, "colour": self.colour}
        if self.radius != DEFAULT_RADIUS:
            out["radius"] = self.radius
        return out


@dataclass(frozen=True)
class HintRange:
    """The points that apply to a film's frames from ``start`` to before ``end`` (seconds)."""

    start: float
    end: float
    points: tuple[Hint, ...]


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HintError(f"{where} must be a number from {low:g} to {high:g}, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise HintError(f"{where} must be from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _point(item: Any, where: str) -> Hint:
    if isinstance(item, Hint):
        for name, value in (("x", item.x), ("y", item.y)):
            _number(value, f"{where}: {name}", 0.0, 1.0)
        _number(item.radius, f"{where}: radius", 0.0, MAX_RADIUS)
        if not (math.isfinite(item.a) and math.isfinite(item.b)):
            raise HintError(f"{where}: its a*, b* must be finite numbers")
        return item
    if not isinstance(item, dict):
        raise HintError(f"{where}: expected an object like {EXAMPLE[1:-1]}, got {item!r}")
    unknown = sorted(set(item) - set(POINT_FIELDS))
    if unknown:
        raise HintError(f"{where}: unknown field {unknown[0]!r} (a point has x, y, colour and "
                        "optionally radius)")
    for name in ("x", "y"):
        if name not in item:
            raise HintError(f"{where}: missing {name!r} (a point is {EXAMPLE[1:-1]})")
    x = _number(item["x"], f"{where}: x", 0.0, 1.0)
    y = _number(item["y"], f"{where}: y", 0.0, 1.0)
    if "colour" in item and "color" in item:
        raise HintError(f"{where}: give 'colour' or 'color', not both")
    colour = item.get("colour", item.get("color"))
    if colour is None:
        raise HintError(f"{where}: missing 'colour' (a hex sRGB colour such as #a33b2c)")
    if not isinstance(colour, str) or not _HEX.fullmatch(colour.strip()):
        raise HintError(f"{where}: colour must be a hex sRGB colour such as #a33b2c, "
                        f"got {colour!r}")
    colour = colour.strip().lower()
    radius = _number(item.get("radius", DEFAULT_RADIUS), f"{where}: radius", 0.0, MAX_RADIUS)
    a, b = hex_to_ab(colour)
    return Hint(x, y, a, b, radius, colour)


def _load_json(data: Any, where: str) -> Any:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise HintError(f"{where}: not UTF-8 text") from None
    if isinstance(data, str):
        if not data.strip():
            return []
        try:
            return json.loads(data)
        except json.JSONDecodeError as err:
            raise HintError(f"{where}: malformed JSON ({err.msg} at line {err.lineno} column "
                            f"{err.colno}); expected a list such as {EXAMPLE}") from None
    return data


def parse_hints(data: Any, where: str = "hints") -> list[Hint]:
    """Hints from JSON text (str or bytes), a list of point dicts or :class:`Hint` objects, or
    None (no hints); checked, with a one-line :class:`HintError` for anything wrong."""
    data = _load_json(data, where)
    if data is None:
        return []
    if isinstance(data, Hint):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise HintError(f"{where}: expected a JSON list of points such as {EXAMPLE}, "
                        f"got {type(data).__name__}")
    if len(data) > MAX_POINTS:
        raise HintError(f"{where}: {len(data)} points, at most {MAX_POINTS}")
    return [_point(item, f"{where}: point {i + 1}") for i, item in enumerate(data)]


def read_hints(path: str | Path) -> list[Hint]:
    """Hints from a JSON file; errors name the file."""
    return parse_hints(_read(path), str(path))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise HintError(f"{path}: no such hints file") from None
    except OSError as err:
        raise HintError(f"{path}: cannot read ({err.strerror or err})") from None


def parse_hint_arg(text: str) -> Hint:
    """``X,Y=COLOUR`` or ``X,Y,RADIUS=COLOUR`` (``--hint 0.42,0.31=#a33b2c``)."""
    where = f"--hint {text!r}"
    place, sep, colour = text.partition("=")
    parts = place.split(",")
    if not sep or len(parts) not in (2, 3):
        raise HintError(f"{where}: expected X,Y=COLOUR or X,Y,RADIUS=COLOUR, such as "
                        "0.42,0.31=#a33b2c")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise HintError(f"{where}: X, Y and RADIUS must be numbers, such as "
                        "0.42,0.31=#a33b2c") from None
    point: dict[str, Any] = {"x": values[0], "y": values[1], "colour": colour}
    if len(values) == 3:
        point["radius"] = values[2]
    return _point(point, where)


def hints_to_json(hints: Sequence[Hint]) -> str:
    return json.dumps([h.to_json() for h in hints], indent=1)


def sidecar(photo: str | Path) -> Path:
    """Where a folder run looks for a photo's hints: ``NAME.hints.json`` beside ``NAME.jpg``."""
    photo = Path(photo)
    return photo.with_name(photo.stem + SIDECAR_SUFFIX)


def parse_video_hints(data: Any, where: str = "hints") -> list[HintRange]:
    """Time ranges of points (see the module's docstring); a plain list of points is one range
    over the whole film."""
    data = _load_json(data, where)
    if not isinstance(data, list):
        raise HintError(f"{where}: expected a JSON list of ranges such as "
                        f'[{{"start": 0, "end": 4.5, "points": {EXAMPLE}}}]')
    if all(isinstance(e, dict) and "points" not in e for e in data):
        points = parse_hints(data, where)
        return [HintRange(0.0, math.inf, tuple(points))] if points else []
    ranges = []
    for i, entry in enumerate(data):
        here = f"{where}: range {i + 1}"
        if not isinstance(entry, dict) or "points" not in entry:
            raise HintError(f"{here}: expected an object with start, end and points")
        unknown = sorted(set(entry) - set(RANGE_FIELDS))
        if unknown:
            raise HintError(f"{here}: unknown field {unknown[0]!r} (a range has start, end "
                            "and points)")
        start = _number(entry.get("start", 0.0), f"{here}: start", 0.0, math.inf)
        end = entry.get("end")
        end = math.inf if end is None else _number(end, f"{here}: end", 0.0, math.inf)
        if end <= start:
            raise HintError(f"{here}: end ({end:g}) must be after start ({start:g})")
        ranges.append(HintRange(start, end, tuple(parse_hints(entry["points"], here))))
    return ranges


def read_video_hints(path: str | Path) -> list[HintRange]:
    return parse_video_hints(_read(path), str(path))


def points_at(ranges: Sequence[HintRange], t: float) -> list[Hint]:
    """Every point of the ranges that cover time ``t`` (seconds)."""
    return [p for r in ranges if r.start <= t < r.end for p in r.points]


# ---------------------------------------------------------------- which model


def hint_model_for(name: str | None) -> str:
    """The model to colorize with when hints are given: a named one as it is; ``default`` (or
    none) the bundled hint model, or a :class:`HintError` saying that none is installed."""
    if name not in (None, "", "default"):
        return str(name)
    from .models import HINTS_MODEL, resolve_model_path

    path = resolve_model_path(HINTS_MODEL)
    if path.is_file() and path.with_suffix(".json").is_file():
        return HINTS_MODEL
    raise HintError(NO_HINT_MODEL)


def takes_hints(colorizer: Colorizer) -> bool:
    from .models.hinted import HintedTeacher

    return isinstance(getattr(colorizer, "model", None), HintedTeacher)


def check_hint_model(colorizer: Colorizer) -> None:
    if takes_hints(colorizer):
        return
    if getattr(colorizer, "runtime", "torch") != "torch":
        raise HintError("colour hints run with the torch runtime, not onnx")
    raise HintError(f"model {colorizer.name} does not take colour hints: they need a hint "
                    f"model (arch 'hinted'); {NO_HINT_MODEL.split(': ', 1)[1]}")


# ---------------------------------------------------------------- hint maps


def _paint(maps: Tensor, cy: int, cx: int, half: int, a: float, b: float, h: int,
           w: int) -> None:
    """Fill the square of half side ``half`` around (cy, cx), clipped to the h x w photo, of a
    (3, H, W) map with a/128, b/128 and the mask 1."""
    y0, y1 = max(0, cy - half), min(h, cy + half + 1)
    x0, x1 = max(0, cx - half), min(w, cx + half + 1)
    maps[0, y0:y1, x0:x1] = a
    maps[1, y0:y1, x0:x1] = b
    maps[2, y0:y1, x0:x1] = 1.0


def hint_maps(hints: Sequence[Hint], full_shape: Sequence[int], size: int) -> Tensor:
    """(3, size, size) a/128, b/128 and mask for a photo of ``full_shape`` (H, W) shrunk to the
    working size ``size`` and padded at the right and bottom, as the Colorizer feeds the model
    (later points paint over earlier ones)."""
    import torch

    from .color import AB_SCALE
    from .inference import working_shape

    h, w = working_shape(int(full_shape[0]), int(full_shape[1]), size)
    maps = torch.zeros((3, size, size))
    long = max(h, w)
    for p in hints:
        cx, cy = min(w - 1, int(p.x * w)), min(h - 1, int(p.y * h))
        _paint(maps, cy, cx, round(p.radius * long), p.a / AB_SCALE, p.b / AB_SCALE, h, w)
    return maps


# ---------------------------------------------------------------- hints from the truth


def _interior_weights(l: Tensor) -> Tensor:
    """(B,1,H,W) L/100 -> (B, H*W) sampling weights, high inside flat regions, low on edges."""
    import torch.nn.functional as F

    gx = F.pad((l[..., :, 1:] - l[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((l[..., 1:, :] - l[..., :-1, :]).abs(), (0, 0, 0, 1))
    g = F.avg_pool2d(gx + gy, 5, stride=1, padding=2, count_include_pad=False)
    return (1.0 + g.float() / GRADIENT_SCALE).pow(-2).flatten(1)


def hint_counts(n: int, mean_points: float, generator: torch.Generator | None = None,
                device: Any = None) -> list[int]:
    """``n`` geometric numbers of points of mean ``mean_points`` (P(none) = 1/(1 + mean))."""
    import torch

    if mean_points <= 0:
        return [0] * n
    keep = mean_points / (1.0 + mean_points)  # the chance of one more point
    u = 1.0 - torch.rand(n, generator=generator, device=device)  # in (0, 1]
    counts = torch.floor(torch.log(u) / math.log(keep)).clamp(0, MAX_SIMULATED)
    return [int(c) for c in counts.tolist()]


def sample_points(l: Tensor, ab: Tensor, counts: Sequence[int],
                  generator: torch.Generator | None = None
                  ) -> list[list[tuple[int, int, int, float, float]]]:
    """Per image of (B,1,H,W) L/100 and (B,2,H,W) true ab/128: ``counts[i]`` points
    ``(y, x, half, a/128, b/128)``, drawn without replacement where L is flat, each the mean true
    ab over its (2 half + 1)-pixel square (3-7 px), as a user would give one colour for a
    region."""
    import torch
    import torch.nn.functional as F

    b_, _, h, w = l.shape
    if not any(counts):
        return [[] for _ in range(b_)]
    weights = _interior_weights(l)
    means = torch.stack([F.avg_pool2d(ab.float(), 2 * k + 1, stride=1, padding=k,
                                      count_include_pad=False) for k in PATCH_HALVES])
    out = []
    for n, count in enumerate(counts):
        count = min(int(count), h * w)
        if count == 0:
            out.append([])
            continue
        where = torch.multinomial(weights[n], count, replacement=False, generator=generator)
        kinds = torch.randint(0, len(PATCH_HALVES), (count,), generator=generator,
                              device=where.device)
        ys, xs = where // w, where % w
        colours = means[kinds, n, :, ys, xs].tolist()  # (count, 2): one transfer per photo
        out.append([(y, x, PATCH_HALVES[k], a, b) for y, x, k, (a, b)
                    in zip(ys.tolist(), xs.tolist(), kinds.tolist(), colours, strict=True)])
    return out


def simulate_hints(l: Tensor, ab: Tensor, mean_points: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """(B,3,H,W) hint maps for a training batch, from its truth: each crop a geometric number of
    points (mean ``mean_points``, many crops none), as :func:`sample_points` draws them."""
    import torch

    maps = torch.zeros((l.shape[0], 3, *l.shape[-2:]), device=l.device)
    counts = hint_counts(l.shape[0], mean_points, generator, l.device)
    h, w = l.shape[-2:]
    for n, points in enumerate(sample_points(l, ab, counts, generator)):
        for y, x, half, a, b in points:
            _paint(maps[n], y, x, half, a, b, h, w)
    return maps


def hints_from_truth(rgb: np.ndarray, size: int, count: int,
                     generator: torch.Generator | None = None) -> list[Hint]:
    """``count`` hints sampled from a colour photo as in training, at the working size ``size``
    (positions and radii relative, so the Colorizer paints them back on the same pixels)."""
    import torch
    import torch.nn.functional as F

    from .color import AB_SCALE, L_SCALE, rgb_to_lab
    from .inference import working_shape
    from .io import to_float

    h, w = working_shape(*rgb.shape[:2], size)
    lab = rgb_to_lab(torch.from_numpy(to_float(rgb[..., :3])).permute(2, 0, 1)[None])
    small = F.interpolate(lab, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    points = sample_points(small[:, :1] / L_SCALE, small[:, 1:] / AB_SCALE, [count],
                           generator)[0]
    long = max(h, w)
    return [Hint((x + 0.5) / w, (y + 0.5) / h, a * AB_SCALE, b * AB_SCALE, half / long)
            for y, x, half, a, b in points]


# ---------------------------------------------------------------- colorizing with hints


class _WithHints:
    """Stands in for the hint model inside ``Colorizer.predict_ab``: each call (one chunk of
    photos) gets the next photos' hint maps."""

    def __init__(self, model: Any, maps: list[Tensor]) -> None:
        self.model, self.maps, self.used = model, maps, 0

    def __call__(self, batch: Tensor) -> Tensor:
        import torch

        n = batch.shape[0]
        maps = torch.stack(self.maps[self.used : self.used + n]).to(batch.device, batch.dtype)
        self.used += n
        return self.model(batch, maps)


def predict_ab_hinted(colorizer: Colorizer, ls: Sequence[Tensor],
                      hints: Sequence[Sequence[Hint]], full_size: bool = True) -> list[Tensor]:
    """``colorizer.predict_ab(ls, full_size)`` with each photo's hints given to the model; a
    photo without hints gets exactly the automatic values."""
    check_hint_model(colorizer)
    size = colorizer.working_size
    view = copy.copy(colorizer)
    view.model = _WithHints(colorizer.model, [hint_maps(h, l.shape[-2:], size)
                                              for l, h in zip(ls, hints, strict=True)])
    return view.predict_ab(ls, full_size=full_size)


def keep_in_gamut(l: Tensor, ab: Tensor, band_pixels: int = 1_000_000) -> Tensor:
    """ab (2,H,W) with every colour that sRGB cannot show at its L (1,H,W, L/100) pulled
    towards gray just enough (:func:`retint.color.gamut_limit` on those pixels alone), so the
    composed RGB is not clipped and keeps the photo's lightness. ``ab`` itself is not changed."""
    import torch

    from .color import AB_SCALE, L_SCALE, gamut_limit, in_srgb_gamut

    h, w = l.shape[-2:]
    rows = max(1, band_pixels // max(1, w))
    out = None
    for r0 in range(0, h, rows):
        lb = l[:, r0 : r0 + rows].to(ab.device).float().clamp(0.0, 1.0)
        band = (out if out is not None else ab)[:, r0 : r0 + rows].float()
        inside = in_srgb_gamut(torch.cat((lb * L_SCALE, band * AB_SCALE)))
        if bool(inside.all()):
            continue
        if out is None:
            out = ab.float().clone()
            band = out[:, r0 : r0 + rows]
        ys, xs = (~inside).nonzero(as_tuple=True)
        limited = gamut_limit(lb[:, ys, xs][:, None], band[:, ys, xs][:, None])
        band[:, ys, xs] = limited[:, 0]
    return ab if out is None else out


def colorize_hinted(colorizer: Colorizer, images: Sequence[np.ndarray],
                    hints: Sequence[Any]) -> list[np.ndarray]:
    """Colorize arrays, each with its hints (anything :func:`parse_hints` takes). Photos without
    hints go through ``colorize_many`` untouched (the automatic result exactly); the others
    need a hint model, and are kept in gamut (:func:`keep_in_gamut`)."""
    parsed = [parse_hints(h) for h in hints]
    if len(parsed) != len(images):
        raise ValueError(f"{len(images)} images but {len(parsed)} lists of hints")
    out: list[Any] = [None] * len(images)
    plain = [i for i, p in enumerate(parsed) if not p]
    hinted = [i for i, p in enumerate(parsed) if p]
    if hinted:
        check_hint_model(colorizer)
    if plain:
        for i, rgb in zip(plain, colorizer.colorize_many([images[i] for i in plain]),
                          strict=True):
            out[i] = rgb
    for start in range(0, len(hinted), colorizer.batch_size):
        chunk = hinted[start : start + colorizer.batch_size]
        ls = [colorizer.lightness(images[i]) for i in chunk]
        abs_ = predict_ab_hinted(colorizer, ls, [parsed[i] for i in chunk])
        for i, l, ab in zip(chunk, ls, abs_, strict=True):
            out[i] = colorizer.compose(l, keep_in_gamut(l, ab), images[i].dtype)
    return out
