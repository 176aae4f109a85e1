"""Tests for the ``retint`` command line, run through its real entry points on real photos."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import photo

import retint
import retint.models
from retint.batch import plan_outputs
from retint.cli import DEMO_PHOTOS, main
from retint.io import read_rgb, write_image

HAS_BUNDLED = (Path(retint.models.BUNDLED_DIR) / "default.json").exists()
needs_bundled = pytest.mark.skipif(not HAS_BUNDLED, reason="bundled weights not built yet")

# small crops of real photos, odd sizes, nested two levels deep, four formats
SMALL = {
    "astronaut.jpg": ("astronaut", (120, 161)),
    "coffee.png": ("coffee", (93, 140)),
    "sub/chelsea.jpg": ("chelsea", (101, 77)),
    "sub/deeper/rocket.tif": ("rocket", (64, 95)),
}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for rel, (name, (h, w)) in SMALL.items():
        write_image(root / rel, photo(name)[:h, :w])
    return root


@pytest.fixture
def colorize(model_files, capsys):
    """Run ``retint colorize ... --model TEACHER -q`` in-process: (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = main(["colorize", *map(str, args), "--model", str(model_files["teacher"]), "-q"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _outputs(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in _outputs(root).items()}


def _failed_lines(stdout: str, path: Path) -> list[str]:
    """The summary lines reporting ``path`` as a failed input."""
    return [line for line in stdout.splitlines() if line.strip().startswith(f"failed: {path}")]


# ---------------------------------------------------------------- files, folders, globs


def test_colorize_one_file(colorize, small_dir, tmp_path):
    src = small_dir / "sub" / "chelsea.jpg"
    code, out, err = colorize(src, "-o", tmp_path / "out")
    assert code == 0, out + err
    assert list(_outputs(tmp_path / "out")) == ["chelsea.jpg"]
    result = read_rgb(tmp_path / "out" / "chelsea.jpg")
    assert result.shape == read_rgb(src).shape == (101, 77, 3)
    assert "colorized 1 photo(s)" in out and "failed 0" in out


def test_colorize_folder_keeps_the_layout(colorize, photos_dir, tmp_path):
    before = _snapshot(photos_dir)
    code, out, err = colorize(photos_dir, "-o", tmp_path / "out", "--size", "64")
    assert code == 0, out + err
    made = _outputs(tmp_path / "out")
    assert sorted(made) == sorted(before)  # same relative paths, nested ones included
    assert any("/" in rel for rel in made)
    for rel, path in made.items():
        assert read_rgb(path).shape == read_rgb(photos_dir / rel).shape
    assert f"colorized {len(before)} photo(s)" in out
    assert _snapshot(photos_dir) == before


def test_colorize_globs(colorize, small_dir, tmp_path):
    code, out, err = colorize(small_dir / "*.jpg", "-o", tmp_path / "top")
    assert code == 0, out + err
    assert list(_outputs(tmp_path / "top")) == ["astronaut.jpg"]

    code, out, err = colorize(f"{small_dir}/sub/**/*", "-o", tmp_path / "deep")
    assert code == 0, out + err
    made = _outputs(tmp_path / "deep")
    assert sorted(made) == ["chelsea.jpg", "deeper/rocket.tif"]  # layout below the pattern kept
    assert read_rgb(made["deeper/rocket.tif"]).shape == (64, 95, 3)


def test_format_changes_the_suffix(colorize, small_dir, tmp_path):
    code, out, err = colorize(small_dir, "-o", tmp_path, "--format", "png", "--size", "64")
    assert code == 0, out + err
    made = _outputs(tmp_path)
    assert sorted(made) == sorted(str(Path(rel).with_suffix(".png")) for rel in SMALL)
    for rel, (_, shape) in SMALL.items():
        path = made[str(Path(rel).with_suffix(".png"))]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert read_rgb(path).shape == (*shape, 3)


def test_python_dash_m_retint(model_files, small_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "retint", "colorize", str(small_dir / "coffee.png"), "-o",
         str(tmp_path), "--model", str(model_files["student"]), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tiny-student" in proc.stdout
    assert read_rgb(tmp_path / "coffee.png").shape == (93, 140, 3)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"retint {retint.__version__}"


# ---------------------------------------------------------------- failures


def test_bad_files_are_reported_and_the_rest_is_done(colorize, small_dir, tmp_path):
    photos = tmp_path / "photos"
    for rel, (name, (h, w)) in SMALL.items():
        write_image(photos / rel, photo(name)[:h, :w])
    text = photos / "notes.jpg"
    text.write_text("this is not a photo\n")
    truncated = photos / "sub" / "truncated.jpg"
    write_image(truncated, photo("coffee"))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    code, out, err = colorize(photos, "-o", tmp_path / "out")
    assert code == 1
    made = _outputs(tmp_path / "out")
    assert sorted(made) == sorted(SMALL)  # every good photo, nothing for the bad ones
    for rel, (_, shape) in SMALL.items():
        assert read_rgb(made[rel]).shape == (*shape, 3)
    assert "failed 2" in out
    for bad in (text, truncated):
        lines = _failed_lines(out + err, bad)
        assert len(lines) == 1, out + err
        assert "failed" in lines[0] and "image" in lines[0].split(str(bad), 1)[1]  # the reason


def test_missing_input_is_a_one_line_error(colorize, tmp_path):
    missing = tmp_path / "nope.jpg"
    code, out, err = colorize(missing, "-o", tmp_path / "out")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_model_is_a_one_line_error(small_dir, tmp_path, capsys):
    code = main(["colorize", str(small_dir / "coffee.png"), "-o", str(tmp_path / "out"),
                 "--model", str(tmp_path / "no-such-model"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-model" in lines[0]


def test_output_folder_equal_to_the_input_folder(colorize, tmp_path):
    photos = tmp_path / "photos"
    for rel, (name, (h, w)) in SMALL.items():
        write_image(photos / rel, photo(name)[:h, :w])
    before = _snapshot(photos)

    code, out, err = colorize(photos, "-o", photos)
    assert code == 1
    assert _snapshot(photos) == before  # no input touched, no file added
    assert "failed 4" in out
    for rel in SMALL:
        lines = _failed_lines(out, photos / rel)
        assert len(lines) == 1 and "failed" in lines[0] and "overwrite" in lines[0], out


def test_output_folder_equal_to_the_input_folder_with_another_format(colorize, tmp_path):
    """``--format jpg`` maps ``x.png`` onto ``x.jpg``: when ``x.jpg`` is itself an input, it must
    not be overwritten by the colorized ``x.png``."""
    photos = tmp_path / "photos"
    write_image(photos / "cat.jpg", photo("chelsea")[:80, :90])
    write_image(photos / "cat.png", photo("coffee")[:70, :60])
    before = _snapshot(photos)

    code, out, err = colorize(photos, "-o", photos, "--format", "jpg")
    assert code == 1
    assert _snapshot(photos) == before, "an input photo was overwritten"
    for name in ("cat.jpg", "cat.png"):
        lines = _failed_lines(out, photos / name)
        assert len(lines) == 1 and "would overwrite an input" in lines[0], out


def test_skip_existing_leaves_outputs_alone(colorize, small_dir, tmp_path):
    out_dir = tmp_path / "out"
    existing = out_dir / "sub" / "chelsea.jpg"
    write_image(existing, photo("rocket")[:10, :10])
    old = existing.read_bytes()

    code, out, err = colorize(small_dir, "-o", out_dir, "--skip-existing", "--size", "64")
    assert code == 0, out + err
    assert existing.read_bytes() == old
    assert sorted(_outputs(out_dir)) == sorted(SMALL)
    assert "colorized 3 photo(s)" in out and "skipped 1" in out

    # without a flag, an existing output is a failure and is left alone
    code, out, err = colorize(small_dir / "sub" / "chelsea.jpg", "-o", out_dir / "sub")
    assert code == 1 and "exists (use --overwrite or --skip-existing)" in out
    assert existing.read_bytes() == old
    # with --overwrite it is replaced
    code, out, err = colorize(small_dir / "sub" / "chelsea.jpg", "-o", out_dir / "sub",
                              "--overwrite")
    assert code == 0
    assert read_rgb(existing).shape == (101, 77, 3)


@pytest.mark.parametrize("file_first", [True, False])
def test_the_same_photo_twice_is_colorized_once(colorize, small_dir, tmp_path, file_first):
    file = small_dir / "sub" / "chelsea.jpg"
    folder = small_dir / "sub"
    args = [file, folder] if file_first else [folder, file]
    code, out, err = colorize(*args, "-o", tmp_path, "--size", "64")
    assert code == 0, out + err
    made = _outputs(tmp_path)
    assert len(made) == 2  # chelsea once, plus deeper/rocket
    assert "colorized 2 photo(s)" in out


def test_two_inputs_never_share_an_output(colorize, tmp_path):
    """Two different photos with the same name (two folders, or a ``**`` glob) must not be
    written to the same output, the second silently replacing the first."""
    photos = tmp_path / "photos"
    write_image(photos / "a" / "x.jpg", photo("chelsea")[:80, :90])
    write_image(photos / "b" / "x.jpg", photo("coffee")[:70, :60])

    pairs, refused = plan_outputs([str(photos / "a" / "x.jpg"), str(photos / "b" / "x.jpg")],
                                  tmp_path / "out", None)
    assert [dst for _, dst in pairs] == [tmp_path / "out" / "x.jpg"]
    assert [src for src, _ in refused] == [photos / "b" / "x.jpg"]
    assert "already the output of" in refused[0][1]

    # a glob keeps the layout below its fixed prefix, so both photos are written
    code, out, err = colorize(f"{photos}/**/*.jpg", "-o", tmp_path / "out2", "--size", "64")
    assert code == 0, out + err
    assert sorted(_outputs(tmp_path / "out2")) == ["a/x.jpg", "b/x.jpg"]


# ---------------------------------------------------------------- demo and models


def _check_demo(out_dir: Path) -> None:
    import skimage.data

    assert (out_dir / "sheet.jpg").is_file()
    sheet = read_rgb(out_dir / "sheet.jpg")
    assert sheet.shape[0] > 4 * 256 and sheet.shape[1] > 3 * 256
    for name in DEMO_PHOTOS:
        original = getattr(skimage.data, name)()
        result = read_rgb(out_dir / f"{name}.png")
        assert result.shape == original.shape[:2] + (3,)
        gray = read_rgb(out_dir / "gray" / f"{name}.png")
        assert np.array_equal(gray[..., 0], gray[..., 2])  # the input really was gray
        assert not np.array_equal(result[..., 0], result[..., 2])  # the output is not


def test_demo_with_a_given_model(model_files, tmp_path, capsys):
    code = main(["demo", "-o", str(tmp_path / "demo"), "--model", str(model_files["student"]),
                 "--size", "64", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "colorized 4 demo photo(s)" in out
    _check_demo(tmp_path / "demo")


@needs_bundled
def test_demo_with_the_bundled_model(tmp_path, capsys):
    code = main(["demo", "-o", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr()
    _check_demo(tmp_path / "out")


@needs_bundled
def test_models_lists_the_bundled_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "(default)" in out
    assert "teacher" in out or "student" in out
    if (Path(retint.models.BUNDLED_DIR) / "hints.json").exists():  # scored by its hints
        line = next(x for x in out.splitlines() if x.startswith("hints:"))
        assert "colour hints on the bundled teacher" in line and "with 10 hints" in line


# ---------------------------------------------------------------- found in review


def test_symlink_to_a_photo_elsewhere_is_colorized_in_place(model_files, tmp_path, capsys):
    outside = tmp_path / "elsewhere" / "x.jpg"
    write_image(outside, photo("chelsea")[:60, :80])
    folder = tmp_path / "in"
    write_image(folder / "a.jpg", photo("coffee")[:50, :70])
    (folder / "link.jpg").symlink_to(outside)
    code = main(["colorize", str(folder), "-o", str(tmp_path / "out"), "--model",
                 str(model_files["student"]), "--size", "64", "-q"])
    assert code == 0, capsys.readouterr()
    assert sorted(_outputs(tmp_path / "out")) == ["a.jpg", "link.jpg"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "bogus"], "unknown device"),
    (["--quality", "500"], "1-100"),
])
def test_bad_device_and_quality_are_one_line_errors(model_files, tmp_path, capsys, argv,
                                                    message):
    src = tmp_path / "a.jpg"
    write_image(src, photo("coffee")[:40, :40])
    with contextlib.suppress(SystemExit):  # argparse exits 2 on a bad --quality
        code = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--model",
                     str(model_files["student"]), "-q", *argv])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_saturation_option_reaches_the_output(colorize, small_dir, tmp_path):
    src = small_dir / "sub" / "chelsea.jpg"
    assert colorize(src, "-o", tmp_path / "plain")[0] == 0
    assert colorize(src, "-o", tmp_path / "gray", "--saturation", "0")[0] == 0
    plain = read_rgb(tmp_path / "plain" / "chelsea.jpg").astype(int)
    gray = read_rgb(tmp_path / "gray" / "chelsea.jpg").astype(int)
    spread = lambda rgb: np.abs(rgb - rgb.mean(2, keepdims=True)).mean()  # noqa: E731
    assert spread(gray) < 1.5 < spread(plain)


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_a_list_of_paths_is_an_input(colorize, small_dir, tmp_path, kind):
    """A text, CSV or Parquet list names the photos (relative to the list's folder, or
    absolute); the outputs keep the layout relative to the list, a missing path fails alone."""
    rels = sorted(SMALL)
    listed = [str(small_dir / rels[0])] + [str(Path("photos") / r) for r in rels[1:]]
    listed.append("photos/missing.jpg")
    (tmp_path / "photos").symlink_to(small_dir, target_is_directory=True)
    listing = tmp_path / f"list.{kind}"
    if kind == "txt":
        listing.write_text("# scans of box 1\n\n" + "\n".join(listed) + "\n")
    elif kind == "csv":
        listing.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in enumerate(listed)))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"path": listed}), listing)
    code, out, err = colorize(listing, "-o", tmp_path / "out")
    assert code == 1 and "colorized 4 photo(s)" in out and "failed 1" in out
    assert "missing.jpg" in out
    made = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*"))
    absolute = str(Path(str(small_dir / rels[0])).relative_to("/"))
    assert made == sorted([absolute] + [f"photos/{r}" for r in rels[1:]])


def test_an_unreadable_list_is_a_one_line_error(colorize, tmp_path):
    listing = tmp_path / "list.parquet"
    listing.write_bytes(b"not parquet at all")
    code, out, err = colorize(listing, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "cannot read the list of photos" in err
