"""Colour hints: the format and its errors, the hint model (exactly its teacher without hints,
never a change of lightness with them), the same pixels from the CLI, the Python API and the
web API, simulated hints, a tiny hint training run, films and ``evaluate --hints``.

The hint model here is not trained: :func:`local_hints` sets its spread by hand so that a hint
copies its colour into its own patch and hardly anywhere else, which is what these tests need
to see the plumbing carry a hint to the right pixels. Its base is a random teacher whose colours
are muted (head scaled down), so that they sit inside sRGB and a result moves only where a
hint is.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo
from PIL import Image

from retint import cli
from retint.color import rgb_to_lab
from retint.hints import (
    DEFAULT_RADIUS,
    PATCH_HALVES,
    Hint,
    HintError,
    hex_to_ab,
    hint_counts,
    hint_maps,
    hint_model_for,
    hints_from_truth,
    parse_hint_arg,
    parse_hints,
    parse_video_hints,
    points_at,
    read_hints,
    sample_points,
    sidecar,
    simulate_hints,
)
from retint.inference import Colorizer
from retint.io import read_rgb, write_image
from retint.models import BUNDLED_DIR, build_model, load_weights, save_weights
from retint.models.hinted import HintedTeacher, hinted_from

SIZE = 64
RED = {"x": 0.3, "y": 0.4, "colour": "#d0302a", "radius": 0.04}
BLUE = {"x": 0.75, "y": 0.7, "colour": "#2a50d0", "radius": 0.03}


def local_hints(model: HintedTeacher) -> HintedTeacher:
    """Set a hint model's reaches by hand (no training): the spread reaches 1.5 % of the long
    side and ignores lightness and the teacher's colour, and its prior is small, so inside a
    hint's patch the colour is the hint's and a few patches away nothing moves. The refiner
    stays at zero."""
    spread = model.spread
    with torch.no_grad():
        spread.log_space.fill_(math.log(0.015))
        spread.log_lightness.fill_(math.log(10.0))
        spread.log_colour.fill_(math.log(10.0))
        spread.log_prior.fill_(math.log(0.02))
    return model


def save_hand_set(base: Path, out: Path, name: str = "tiny-hints") -> Path:
    return save_weights(local_hints(hinted_from(base)), out, {"name": name})


@pytest.fixture(scope="module")
def hint_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hint-models")
    torch.manual_seed(0)
    base = build_model("teacher").eval()
    with torch.no_grad():  # muted colours, inside sRGB: only hints move a result
        base.head.weight.mul_(0.05)
        base.head.bias.mul_(0.05)
    base_path = save_weights(base, root / "base", {"name": "tiny-base"})
    return {"base": base_path, "hint": save_hand_set(base_path, root / "hint")}


def gray(name: str = "chelsea") -> np.ndarray:
    rgb = photo(name).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(rgb.round().astype(np.uint8)[..., None], 3, axis=2)


def lab(rgb: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255.0)


def patch(img_lab: torch.Tensor, h: dict, half: int = 3) -> torch.Tensor:
    """Mean LAB in a small square around a hint's point."""
    y, x = int(h["y"] * img_lab.shape[1]), int(h["x"] * img_lab.shape[2])
    return img_lab[:, y - half : y + half + 1, x - half : x + half + 1].mean((1, 2))


# ---------------------------------------------------------------- the format


def test_hint_json_valid_and_the_color_is_its_chroma():
    hints = parse_hints('[{"x": 0.42, "y": 0.31, "colour": "#a33b2c"}, '
                        '{"x": 0, "y": 1, "color": "#ABC", "radius": 0.02}]')
    assert [(h.x, h.y, h.radius, h.colour) for h in hints] == [
        (0.42, 0.31, DEFAULT_RADIUS, "#a33b2c"), (0.0, 1.0, 0.02, "#abc")]
    for h, rgb in zip(hints, [(0xA3, 0x3B, 0x2C), (0xAA, 0xBB, 0xCC)], strict=True):
        ref = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1) / 255).flatten()
        assert (h.a, h.b) == pytest.approx((float(ref[1]), float(ref[2])), abs=1e-6)
    assert hex_to_ab("#808080") == pytest.approx((0.0, 0.0), abs=0.01)  # gray: no chroma
    assert parse_hints(None) == parse_hints("") == parse_hints("[]") == []
    assert parse_hints(hints) == hints  # Hint objects pass as they are
    again = parse_hints(json.dumps([h.to_json() for h in hints]))
    assert again == hints
    assert parse_hint_arg("0.42,0.31=#a33b2c") == hints[0]
    assert parse_hint_arg("0,1,0.02=#ABC") == hints[1]
    assert Hint.from_colour(0.42, 0.31, "#a33b2c") == hints[0]


def test_hints_file_and_sidecar(tmp_path):
    path = tmp_path / "photo.hints.json"
    path.write_text(json.dumps([RED, BLUE]))
    assert [h.colour for h in read_hints(path)] == ["#d0302a", "#2a50d0"]
    assert sidecar(tmp_path / "photo.jpg") == path
    with pytest.raises(HintError, match="no such hints file"):
        read_hints(tmp_path / "missing.json")


@pytest.mark.parametrize(("text", "expected"), [
    ('[{"x": 1.2, "y": 0.3, "colour": "#a33b2c"}]', r"point 1: x must be from 0 to 1, got 1\.2"),
    ('[{"x": 0.2, "y": -0.1, "colour": "#a33b2c"}]', r"point 1: y must be from 0 to 1"),
    ('[{"x": 0.2, "y": NaN, "colour": "#a33b2c"}]', r"point 1: y must be from 0 to 1"),
    ('[{"x": true, "y": 0.5, "colour": "#a33b2c"}]', r"point 1: x must be a number"),
    ('[{"x": "0.2", "y": 0.5, "colour": "#a33b2c"}]', r"point 1: x must be a number"),
    ('[{"x": 0.2, "y": 0.5, "colour": "red"}]', r"colour must be a hex sRGB colour"),
    ('[{"x": 0.2, "y": 0.5, "colour": "#12345"}]', r"colour must be a hex sRGB colour"),
    ('[{"x": 0.2, "y": 0.5, "colour": 255}]', r"colour must be a hex sRGB colour"),
    ('[{"x": 0.2, "y": 0.5}]', r"missing 'colour'"),
    ('[{"y": 0.5, "colour": "#a33b2c"}]', r"missing 'x'"),
    ('[{"x": 0.2, "y": 0.5, "colour": "#a33b2c", "size": 3}]', r"unknown field 'size'"),
    ('[{"x": 0.2, "y": 0.5, "colour": "#a33b2c", "radius": 0.5}]', r"radius must be from 0"),
    ('[{"x": 0.2, "y": 0.5, "colour": "#a33b2c"}, 7]', r"point 2: expected an object"),
    ('{"x": 0.2, "y": 0.5, "colour": "#a33b2c"}', r"expected a JSON list of points"),
    ('[{"x": 0.2, "y": 0.5, "colour": "#a33b2c"', r"malformed JSON \(.* at line 1 column"),
    ("not json", r"malformed JSON"),
])
def test_bad_hints_get_a_clear_one_line_error(text, expected):
    with pytest.raises(HintError, match=expected) as err:
        parse_hints(text, "photo.hints.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("photo.hints.json: ")


@pytest.mark.parametrize("text", ["0.4=#a33b2c", "0.4,0.3", "a,b=#a33b2c", "0.4,1.3=#a33b2c",
                                  "0.4,0.3=blue", "0.4,0.3,0.9=#a33b2c"])
def test_bad_hint_argument(text):
    with pytest.raises(HintError, match=r"^--hint "):
        parse_hint_arg(text)


def test_video_hint_ranges():
    ranges = parse_video_hints(json.dumps([{"start": 0, "end": 1.5, "points": [RED]},
                                           {"start": 1.0, "points": [BLUE]}]), "film.json")
    assert [len(points_at(ranges, t)) for t in (0.0, 1.2, 1.5, 99.0)] == [1, 2, 1, 1]
    assert points_at(ranges, 1.5)[0].colour == "#2a50d0"  # end is exclusive
    whole = parse_video_hints(json.dumps([RED]))
    assert len(whole) == 1 and points_at(whole, 1e6)[0].colour == "#d0302a"
    with pytest.raises(HintError, match=r"film\.json: range 1: end \(1\) must be after start"):
        parse_video_hints('[{"start": 2, "end": 1, "points": []}]', "film.json")
    with pytest.raises(HintError, match=r"range 1: point 1: x must be from 0 to 1"):
        parse_video_hints('[{"start": 0, "points": [{"x": 2, "y": 0, "colour": "#fff"}]}]')
    with pytest.raises(HintError, match="unknown field 'stop'"):
        parse_video_hints('[{"start": 0, "stop": 1, "points": []}]')


# ---------------------------------------------------------------- the hint model


def real_l(n: int = 2, size: int = SIZE) -> torch.Tensor:
    rgb = torch.from_numpy(photo("astronaut")).permute(2, 0, 1).float() / 255
    crops = [rgb[:, 50 * i : 50 * i + size, 70 * i : 70 * i + size] for i in range(n)]
    return rgb_to_lab(torch.stack(crops))[:, :1] / 100


def test_without_hints_the_model_is_its_teacher_exactly(hint_files):
    base, _ = load_weights(hint_files["base"])
    model = hinted_from(hint_files["base"])
    torch.manual_seed(1)  # a refiner that is not zero anywhere: what training leaves
    with torch.no_grad():
        for p in model.refine.parameters():
            p.normal_(0, 0.05)
    l = real_l()
    hints = torch.zeros(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = base(l)
        assert torch.equal(model(l), expected)
        assert torch.equal(model(l, hints), expected)
        hints[1, :, 20:25, 30:35] = torch.tensor([0.4, 0.3, 1.0]).view(3, 1, 1)
        mixed = model(l, hints)
    assert torch.equal(mixed[0], expected[0])  # the photo without hints, in a batch with one
    assert not torch.allclose(mixed[1], expected[1], atol=1e-3)
    # only the hint layers are ours: not the teacher's weights, nor its training mode
    assert set(model.state_dict()) == {k for k, _ in model.named_parameters()}
    assert all(k.startswith(("spread.", "refine.")) for k in model.state_dict())
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.refine.training and not model.base.training


@pytest.mark.parametrize("pyramid", [False, True])
def test_a_fresh_model_is_the_teacher_plus_the_spread(pyramid):
    """With hints and a refiner at zero (as training starts), the result is the teacher's plus
    the spread's shift: the hint's colour at the hint, the teacher's far away, and in between a
    pixel of the hint's lightness takes more of it than one of another lightness."""
    torch.manual_seed(0)
    base = build_model("teacher", backbone="efficientnet-lite0" if pyramid else None,
                       pyramid=pyramid).eval()
    model = HintedTeacher(base).eval()
    l = torch.full((1, 1, SIZE, SIZE), 0.3)
    l[..., :, SIZE // 2 :] = 0.8  # two regions: dark on the left, light on the right
    hints = torch.zeros(1, 3, SIZE, SIZE)
    hints[:, :, 28:33, 20:25] = torch.tensor([0.4, -0.3, 1.0]).view(3, 1, 1)  # in the dark
    with torch.no_grad():
        teacher = base(l)
        out = model(l, hints)
        shift, confidence = model.spread(l, teacher, hints)
    assert torch.allclose(out, (teacher + shift).clamp(-1, 1), atol=1e-6)
    moved = (out - teacher).norm(dim=1)[0]
    wanted = (hints[0, :2, 30, 22] - teacher[0, :, 30, 22]).norm()
    assert moved[30, 22] > 0.7 * wanted  # at the hint, most of the way to its colour
    assert moved[30, 26] > 4 * moved[30, 38]  # same distance, other lightness: far less
    assert moved[4, 4] < moved[30, 22] and 0 <= float(confidence.min()) <= float(
        confidence.max()) < 1


def test_a_hint_stays_on_what_the_teacher_sees_as_one_thing():
    """Two regions of the same lightness that the teacher coloured differently (a reddish and a
    bluish one): a hint on the first moves it and leaves the second, at the same distance."""
    spread = HintedTeacher(build_model("teacher")).spread
    l = torch.full((1, 1, SIZE, SIZE), 0.5)
    teacher = torch.zeros(1, 2, SIZE, SIZE)
    teacher[:, 0, :, : SIZE // 2], teacher[:, 0, :, SIZE // 2 :] = 0.2, -0.2
    hints = torch.zeros(1, 3, SIZE, SIZE)
    hints[:, :, 30:35, 24:29] = torch.tensor([0.5, 0.1, 1.0]).view(3, 1, 1)
    with torch.no_grad():
        shift, _ = spread(l, teacher, hints)
    moved = shift.norm(dim=1)[0]
    assert moved[32, 26] > 0.5 * 0.3  # most of the way from the teacher's 0.2 to the hint's 0.5
    assert moved[32, 30] > 20 * moved[32, 34]  # across the colour edge: next to nothing
    with torch.no_grad():  # a spread that ignores the teacher's colour crosses that edge
        spread.log_colour.fill_(math.log(10.0))
        blind, _ = spread(l, teacher, hints)
    assert blind.norm(dim=1)[0, 32, 34] > 0.5 * blind.norm(dim=1)[0, 32, 30]


def test_a_big_painted_hint_is_pooled_coarser_not_dropped():
    """The spread's cost is bounded by its number of cells: a hint covering the whole image is
    pooled into wider cells until there are at most MAX_CELLS, with all its mass kept, and the
    result is the hint's colour everywhere."""
    from retint.models.hinted import CELL, MAX_CELLS, hint_cells

    mask = torch.zeros(1, 256, 256)
    mask[:, 10:13, 20:23] = 1.0  # a small hint: 3x3 pixels across at most 4 cells
    small = hint_cells(mask)
    assert small.width == CELL and len(small.mass) <= 4 and float(small.mass.sum()) == 9.0
    assert all(0 <= float(v) < 256 for v in small.centres().flatten())
    full = hint_cells(torch.ones(1, 256, 256))
    assert full.width > CELL and len(full.mass) <= MAX_CELLS
    assert float(full.mass.sum()) == 256 * 256
    ragged = hint_cells(torch.ones(1, 10, 10))  # cells cut short at the edges keep their mass
    assert float(ragged.mass.sum()) == 100 and sorted(ragged.mass.tolist())[0] == 4.0
    spread = HintedTeacher(build_model("teacher")).spread
    hints = torch.cat((torch.full((1, 1, 64, 64), 0.3), torch.full((1, 1, 64, 64), -0.2),
                       torch.ones(1, 1, 64, 64)), 1)
    with torch.no_grad():
        l = torch.linspace(0.2, 0.8, 64).expand(1, 1, 64, 64)  # a smooth ramp of lightness
        shift, confidence = spread(l, torch.zeros(1, 2, 64, 64), hints)
    assert torch.allclose(shift[0, 0], torch.full((64, 64), 0.3), atol=0.02)
    assert float(confidence.min()) > 0.9


def test_touching_hint_cells_are_one_hint():
    """A point's patch and a painted stroke count once in the overall fit, however many cells
    they cover; hints apart are counted apart."""
    from retint.models.hinted import hint_cells, hint_groups

    mask = torch.zeros(1, 128, 128)
    mask[:, 10:15, 10:15] = 1.0  # a point: up to 4 cells
    mask[:, 60:64, 20:100] = 1.0  # a stroke across 20 cells
    mask[:, 100:105, 100:105] = 1.0
    cells = hint_cells(mask)
    groups = hint_groups(cells)
    assert len(cells.mass) > 20 and sorted(set(groups.tolist())) == [0, 1, 2]
    stroke = groups[cells.index[:, 0] == 15]
    assert len(stroke) == 20 and len(set(stroke.tolist())) == 1


def test_the_overall_fit_follows_hints_that_agree_and_only_those():
    """One chroma scale and one cast for the whole photo, fitted to the hints against the
    teacher: none from one hint, a cast from hints that all say "less yellow", a stronger
    colour from hints that all say "more of the same", and nothing from hints that disagree."""
    from retint.models.hinted import overall_fit

    def fit(teacher, hinted):
        t, h = torch.tensor(teacher).T.float(), torch.tensor(hinted).T.float()
        return overall_fit(t, h, torch.arange(t.shape[1]))

    scale, cast = fit([[0.1, 0.2]], [[0.5, -0.3]])  # one hint: the photo is left alone
    assert float(scale) == 1.0 and cast.tolist() == [0.0, 0.0]
    spots = [[0.02 * i, 0.15 + 0.01 * i] for i in range(-5, 6)]  # a warm teacher, 11 hints
    scale, cast = fit(spots, [[a, b - 0.15] for a, b in spots])  # each 0.15 less yellow
    refit = scale * torch.tensor(spots[5]) + cast
    assert float(refit[1]) < 0.15 - 0.05 and abs(float(refit[0])) < 0.01  # bluer, a* kept
    faint = [[0.1 * math.cos(k), 0.1 * math.sin(k)] for k in range(11)]  # colour too faint
    scale, cast = fit(faint, [[2 * a, 2 * b] for a, b in faint])
    assert float(scale) > 1.3 and float(cast.abs().max()) < 0.01
    # red, green, blue and yellow where the teacher saw one beige: their mean is off the
    # teacher's (a least-squares fit alone would take s = 1.24), but they share no scale or cast
    scale, cast = fit([[0.05, 0.1]] * 4, [[0.4, 0.1], [-0.1, 0.1], [0.05, -0.2], [0.05, 0.5]])
    assert abs(float(scale) - 1) < 0.05 and float(cast.abs().max()) < 0.01


def test_hints_that_agree_reach_a_part_of_the_photo_the_spread_does_not():
    """A warm teacher and ten hints that all say neutral: the refit carries them to a region
    of another lightness that their spread alone leaves as it was."""
    spread = HintedTeacher(build_model("teacher")).spread
    l = torch.full((1, 1, SIZE, SIZE), 0.3)
    l[..., SIZE // 2 :, :] = 0.9  # the bottom half: another lightness, no hint
    teacher = torch.zeros(1, 2, SIZE, SIZE)
    teacher[:, 0] = torch.linspace(-0.1, 0.1, SIZE)  # some a* to fit the scale on
    teacher[:, 1] = 0.2  # warm everywhere
    hints = torch.zeros(1, 3, SIZE, SIZE)
    for y in (8, 20):  # ten hints in two rows across the top half, each neutral in b*
        for x in range(2, SIZE - 4, 12):  # (a cell apart: hints whose cells touch are one)
            hints[0, :, y : y + 3, x : x + 3] = torch.stack((
                teacher[0, 0, y : y + 3, x : x + 3], torch.zeros(3, 3), torch.ones(3, 3)))
    with torch.no_grad():
        shift, _ = spread(l, teacher, hints)
        first = hints.clone()
        first[..., 16:, :], first[..., 8:] = 0.0, 0.0
        one, _ = spread(l, teacher, first)  # the first hint alone
    assert float(shift[0, 1, 8, 3]) < -0.15  # at a hint, most of the way
    assert float(shift[0, 1, -4:].mean()) < -0.05  # far off, part of the way
    assert float(one[0, 1, -4:].abs().max()) < 0.005  # one hint alone: not there


def test_card_names_the_base_and_a_changed_base_is_refused(hint_files, tmp_path):
    card = json.loads(hint_files["hint"].with_suffix(".json").read_text())
    assert card["arch"] == "hinted" and card["base"]["path"] == "base.safetensors"
    assert len(card["base"]["sha256"]) == 64 and card["base"]["name"] == "tiny-base"
    assert card["parameters"] == sum(p.numel() for p in hinted_from(hint_files["base"])
                                     .parameters())
    model, loaded = load_weights(hint_files["hint"])
    assert isinstance(model, HintedTeacher) and not model.training and loaded == card
    # the file holds only the hint layers: a fraction of the teacher's
    assert hint_files["hint"].stat().st_size < hint_files["base"].stat().st_size / 5
    # a bundled base is named as such
    bundled = hinted_from(BUNDLED_DIR / "teacher")
    saved = save_weights(bundled, tmp_path / "b" / "hints")
    assert json.loads(saved.with_suffix(".json").read_text())["base"]["bundled"] == "teacher"
    # another base at the named path is refused, with the way out
    other = tmp_path / "moved"
    other.mkdir()
    for suffix in (".safetensors", ".json"):
        (other / f"hint{suffix}").write_bytes(hint_files["hint"].with_suffix(suffix).read_bytes())
    torch.manual_seed(5)
    save_weights(build_model("teacher"), other / "base")
    with pytest.raises(ValueError, match="not the one it was trained on.*train the hint model"):
        load_weights(other / "hint")
    (other / "base.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="its base model .* is missing"):
        load_weights(other / "hint")


# ---------------------------------------------------------------- the Colorizer


def test_colorizer_without_hints_equals_the_base_exactly(hint_files):
    hinted = Colorizer(hint_files["hint"], device="cpu", working_size=SIZE)
    base = Colorizer(hint_files["base"], device="cpu", working_size=SIZE)
    for img in (gray(), photo("astronaut")):
        expected = base.colorize(img)
        assert np.array_equal(hinted.colorize(img), expected)
        assert np.array_equal(hinted.colorize(img, hints=[]), expected)
        assert np.array_equal(hinted.colorize(img, hints="[]"), expected)
    many = [gray(), photo("coffee")]
    assert all(np.array_equal(a, b) for a, b in zip(hinted.colorize_many(many),
                                                    base.colorize_many(many), strict=True))


@pytest.mark.parametrize("name", ["chelsea", "astronaut"])
def test_a_hint_moves_the_color_where_it_is_and_never_changes_lightness(hint_files, name):
    c = Colorizer(hint_files["hint"], device="cpu", working_size=SIZE)
    src = gray(name) if name == "chelsea" else photo(name)  # gray, and a colour photo's L
    before = lab(c.colorize(src))
    vivid = [RED, BLUE, {"x": 0.02, "y": 0.02, "colour": "#00ff00", "radius": 0.05},
             {"x": 0.98, "y": 0.98, "colour": "#ff00ff", "radius": 0.05}]
    out = c.colorize(src, hints=vivid)
    assert out.shape == src.shape and out.dtype == np.uint8
    after, truth = lab(out), lab(src)
    # output L equals the input's within one 8-bit level, everywhere
    assert float((after[0] - truth[0]).abs().max()) * 255 / 100 <= 1.0
    red, blue = patch(after, RED), patch(after, BLUE)
    assert red[1] > patch(before, RED)[1] + 10 and red[1] > 10  # redder (a* up)
    assert blue[2] < patch(before, BLUE)[2] - 10 and blue[2] < -10  # bluer (b* down)
    far = {"x": 0.55, "y": 0.15}  # no hint near: the muted automatic colour stays
    assert float((patch(after, far, 10) - patch(before, far, 10)).abs().max()) < 1.0


def test_pil_in_pil_out_with_hints(hint_files):
    c = Colorizer(hint_files["hint"], device="cpu", working_size=SIZE)
    result = c.colorize(Image.fromarray(gray()), hints=[RED])
    assert isinstance(result, Image.Image) and result.size == (451, 300)
    assert np.array_equal(np.asarray(result), c.colorize(gray(), hints=[RED]))


def test_hints_need_a_hint_model(hint_files):
    base = Colorizer(hint_files["base"], device="cpu", working_size=SIZE)
    with pytest.raises(HintError, match="does not take colour hints"):
        base.colorize(gray(), hints=[RED])
    assert base.colorize(gray(), hints=[]).shape == (300, 451, 3)
    assert hint_model_for(str(hint_files["hint"])) == str(hint_files["hint"])
    if not (BUNDLED_DIR / "hints.safetensors").exists():
        with pytest.raises(HintError, match="none is installed.*--only hint-colour"):
            hint_model_for("default")


# ---------------------------------------------------------------- every surface, same pixels


def test_cli_api_and_web_give_the_same_pixels(hint_files, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from retint.serve.app import create_app

    src = tmp_path / "in" / "cat.png"
    write_image(src, gray())
    hints_file = tmp_path / "cat-hints.json"
    hints_file.write_text(json.dumps([RED, BLUE]))
    model = ["--model", str(hint_files["hint"]), "--size", str(SIZE), "--device", "cpu", "-q"]

    expected = Colorizer(hint_files["hint"], device="cpu",
                         working_size=SIZE).colorize(read_rgb(src), hints=[RED, BLUE])
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "a.png"), "--hints",
                     str(hints_file), *model]) == 0
    assert "(1 with colour hints)" in capsys.readouterr().out
    assert np.array_equal(read_rgb(tmp_path / "a.png"), expected)
    flags = [f"--hint={h['x']},{h['y']},{h['radius']}={h['colour']}" for h in (RED, BLUE)]
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "b.png"), *flags, *model]) == 0
    assert np.array_equal(read_rgb(tmp_path / "b.png"), expected)

    # a folder run picks up NAME.hints.json beside each photo; the others are automatic
    sidecar(src).write_text(json.dumps([RED, BLUE]))
    write_image(tmp_path / "in" / "dog.png", gray("coffee"))
    assert cli.main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     *model]) == 0
    assert np.array_equal(read_rgb(tmp_path / "out" / "cat.png"), expected)
    base = Colorizer(hint_files["base"], device="cpu", working_size=SIZE)
    assert np.array_equal(read_rgb(tmp_path / "out" / "dog.png"),
                          base.colorize(read_rgb(tmp_path / "in" / "dog.png")))

    app = create_app([str(hint_files["base"]), str(hint_files["hint"])], device="cpu",
                     size=SIZE)
    with TestClient(app) as client:
        models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
        assert models["hint"]["hints"] and not models["base"]["hints"]
        res = client.post("/api/colorize", files={"file": ("cat.png", src.read_bytes())},
                          data={"hints": hints_file.read_text(), "format": "png"})
        assert res.status_code == 200, res.text
        assert res.headers["X-Retint-Model"] == "hint"  # the served hint model, chosen
        assert res.headers["X-Retint-Hints"] == "2"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(res.content))), expected)
        plain = client.post("/api/colorize", files={"file": ("cat.png", src.read_bytes())},
                            data={"hints": "[]", "format": "png", "model": "hint"})
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(plain.content))),
                              base.colorize(read_rgb(src)))

        bad = client.post("/api/colorize", files={"file": ("cat.png", src.read_bytes())},
                          data={"hints": '[{"x": 3, "y": 0, "colour": "#fff"}]'})
        assert bad.status_code == 422
        assert bad.json()["error"] == "hints: point 1: x must be from 0 to 1, got 3"
        wrong = client.post("/api/colorize", files={"file": ("cat.png", src.read_bytes())},
                            data={"hints": json.dumps([RED]), "model": "base"})
        assert wrong.status_code == 422
        assert "does not take colour hints (hint models: hint, hints)" in wrong.json()["error"]


def test_cli_errors_for_hints(hint_files, tmp_path, capsys):
    src = tmp_path / "cat.png"
    write_image(src, gray())
    base = ["--model", str(hint_files["base"]), "--size", str(SIZE), "-q"]
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "o.png"), "--hint",
                     "0.5,0.5=#ff0000", *base]) == 2
    assert "does not take colour hints" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('[{"x": 0.5, "y": 2, "colour": "#ff0000"}]')
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "o.png"), "--hints", str(bad),
                     *base]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}: point 1: y must be from 0 to 1, got 2"
    with pytest.raises(SystemExit) as stop:
        cli.main(["colorize", str(src), "-o", str(tmp_path / "o.png"), "--hint", "0.5=#f00"])
    assert stop.value.code == 2
    assert "argument --hint: --hint '0.5=#f00': expected X,Y=COLOUR" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------- hints from the truth


def test_simulated_hints_are_patch_means_mostly_inside_flat_regions():
    torch.manual_seed(0)
    h = w = 64
    l = torch.full((1, 1, h, w), 0.5)
    l[..., :, w // 2 :] += 0.2 * torch.rand(1, 1, h, w // 2)  # right half: texture, edges
    ab = torch.rand(1, 2, h, w) - 0.5
    points = sample_points(l, ab, [200], torch.Generator().manual_seed(0))[0]
    assert len({(y, x) for y, x, *_ in points}) == 200  # drawn without replacement
    flat = sum(x < w // 2 - 3 for _, x, *_ in points)
    assert flat > 0.8 * len(points)
    for y, x, half, a, b in points[:20]:  # each the mean truth of its (clipped) patch
        assert half in PATCH_HALVES
        region = ab[0, :, max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1]
        assert (a, b) == pytest.approx(region.mean((1, 2)).tolist(), abs=1e-5)

    counts = hint_counts(4000, 4.0, torch.Generator().manual_seed(1))
    assert 0.17 < counts.count(0) / 4000 < 0.23  # P(none) = 1 / (1 + mean)
    assert 3.7 < sum(counts) / 4000 < 4.3
    maps = simulate_hints(l.expand(8, 1, h, w), ab.expand(8, 2, h, w), 4.0,
                          torch.Generator().manual_seed(2))
    assert maps.shape == (8, 3, h, w) and set(maps[:, 2].unique().tolist()) <= {0.0, 1.0}
    outside = (maps[:, 2] == 0)[:, None].expand(-1, 2, -1, -1)
    assert maps[:, 2].any() and not maps[:, :2][outside].any()  # colour only under the mask


def test_hints_from_the_truth_are_painted_back_on_their_pixels():
    rgb = photo("coffee")
    hints = hints_from_truth(rgb, 128, 12, torch.Generator().manual_seed(3))
    assert len(hints) == 12 and all(0 <= h.x <= 1 and 0 <= h.y <= 1 for h in hints)
    maps = hint_maps(hints, rgb.shape[:2], 128)
    h, w = 85, 128  # coffee is 400x600 -> 85x128 at 128
    assert not maps[2, h:].any() and not maps[2, :, w:].any()  # the padding has no hint
    for hint in hints:
        y, x = int(hint.y * h), int(hint.x * w)
        half = round(hint.radius * w)
        assert half in PATCH_HALVES and maps[2, y, x] == 1
    last = hints[-1]  # painted last: its colour is where it is
    y, x = int(last.y * h), int(last.x * w)
    assert maps[:2, y, x].tolist() == pytest.approx([last.a / 128, last.b / 128], abs=1e-6)


# ---------------------------------------------------------------- training


def test_a_tiny_hint_training_run(hint_files, photos_dir, tmp_path):
    from retint.train import TrainConfig, fit

    run = tmp_path / "run"
    base_bytes = hint_files["base"].read_bytes()
    fit(TrainConfig(data=[str(photos_dir)], out=str(run), steps=3, batch_size=2, crop=32,
                    val_size=32, val_fraction=0.3, workers=0, warmup=1, log_every=1,
                    val_every=3, ckpt_every=3, progress=False, hint_points=4.0,
                    init=str(hint_files["base"])))
    model, card = load_weights(run / "final")
    assert isinstance(model, HintedTeacher) and card["arch"] == "hinted"
    assert card["recipe"]["hint_points"] == 4.0 and card["steps"] == 3
    assert Path(run / card["base"]["path"]).resolve() == hint_files["base"].resolve()
    assert any(p.abs().sum() > 0 for p in model.refine.out.parameters())  # it learnt
    assert hint_files["base"].read_bytes() == base_bytes  # the teacher stays frozen
    base, _ = load_weights(hint_files["base"])
    assert all(torch.equal(a, b) for a, b in zip(model.base.state_dict().values(),
                                                 base.state_dict().values(), strict=True))
    l = real_l()
    with torch.no_grad():
        assert torch.equal(model(l), base(l))
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[-1].split(",")[0] == "3"


# ---------------------------------------------------------------- film and evaluation


def test_video_hints_apply_to_their_time_range(hint_files, tmp_path):
    from test_video import FPS, make_clip

    from retint.video import colorize_video

    frames = [gray("chelsea")[:96, :128]] * 24  # 2 s of a still gray picture
    src = make_clip(tmp_path / "film.mp4", frames, audio=False)
    ranges = parse_video_hints(json.dumps([{"start": 0, "end": 1.0, "points": [RED]}]))
    c = Colorizer(hint_files["hint"], device="cpu", working_size=SIZE)
    dst = tmp_path / "out.mp4"
    report = colorize_video(src, dst, c, hints=ranges)
    assert report.frames == 24
    import av

    with av.open(str(dst)) as f:
        out = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    reds = [float(patch(lab(img), RED)[1]) for img in out]
    assert min(reds[:FPS]) > 10 and np.std(reds[:FPS]) < 1.5  # in the range: red, steady
    # after it, the stabiliser fades back to the muted automatic colour over a few frames
    assert reds[FPS] > reds[FPS + 3] > reds[-1] and reds[-1] < 0.3 * reds[FPS - 1]
    with pytest.raises(HintError, match="does not take colour hints"):
        colorize_video(src, tmp_path / "x.mp4",
                       Colorizer(hint_files["base"], device="cpu", working_size=SIZE),
                       hints=ranges)


def test_evaluate_against_the_number_of_hints(hint_files, photos_dir, tmp_path, capsys):
    from retint.evaluate import evaluate_hints, format_hint_report

    c = Colorizer(hint_files["hint"], device="cpu", working_size=SIZE)
    photos = [(p.name, p) for p in sorted(photos_dir.rglob("*.jpg"))][:2]
    result = evaluate_hints(photos, c, (0, 2, 5), seed=0)
    assert list(result["rows"]) == ["0", "2", "5"] and result["counts"]["evaluated"] == 2
    again = evaluate_hints(photos, c, (0, 2, 5), seed=0)
    assert again["rows"] == result["rows"]  # the fixed seed: the same points
    base = Colorizer(hint_files["base"], device="cpu", working_size=SIZE)
    from retint.evaluate import _prepare, score

    key, path = photos[0]
    truth = read_rgb(path)
    zero = score(_prepare(truth, torch.device("cpu")), base.colorize(truth), torch.device("cpu"))
    assert result["images"][0]["scores"]["0"] == zero  # no hints: the automatic result
    table = format_hint_report(result)
    assert "| hints | PSNR_ab | ΔE00 | CF | CF/truth |" in table and "\n| 5 | " in table

    plot, out_json = tmp_path / "hints.png", tmp_path / "hints.json"
    assert cli.main(["evaluate", str(photos_dir), "--limit", "2", "--hints", "0,1,2",
                     "--model", str(hint_files["hint"]), "--size", str(SIZE), "--device",
                     "cpu", "--hint-plot", str(plot), "--json", str(out_json), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "against the number of colour hints" in printed and f"plot: {plot}" in printed
    with Image.open(plot) as png:
        assert png.format == "PNG" and png.width > 600
    saved = json.loads(out_json.read_text())
    assert list(saved["rows"]) == ["0", "1", "2"]
    assert all(math.isfinite(saved["rows"][n]["delta_e00"]["mean"]) for n in saved["rows"])
