"""The small things users trip on, through the real command line and real processes: output
names, existing outputs, read-only folders, pipes, limits, signals and logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from test_video import make_clip, scene_frames

from retint.cli import main
from retint.io import read_rgb, write_image


@pytest.fixture
def run(model_files, capsys):
    def go(*args: str | Path, model: str = "teacher") -> tuple[int, str, str]:
        code = main([*map(str, args), "--model", str(model_files[model]), "-q"])
        out, err = capsys.readouterr()
        return code, out, err

    return go


@pytest.fixture
def one(tmp_path) -> Path:
    path = tmp_path / "in" / "one.jpg"
    write_image(path, photo("chelsea")[:90, :120])
    return path


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_one_photo_with_an_image_name_as_output_writes_that_file(run, one, tmp_path):
    code, out, err = run("colorize", one, "-o", tmp_path / "out.png", "--size", "64")
    assert code == 0, out + err
    assert (tmp_path / "out.png").is_file() and read_rgb(tmp_path / "out.png").shape == (90, 120, 3)


def test_an_output_that_is_an_existing_file_is_a_usage_error(run, one, tmp_path):
    other = tmp_path / "in" / "two.jpg"
    write_image(other, photo("coffee")[:50, :50])
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, out, err = run("colorize", one, other, "-o", target)
    assert code == 2 and "is not a folder" in err and err.count("\n") == 1
    assert target.read_text() == "mine"


def test_a_read_only_destination_fails_before_any_photo_is_computed(run, one, tmp_path):
    if os.geteuid() == 0:  # root writes through chmod: use a place no one can write
        dest = Path("/proc/retint-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        dest = locked / "out"
    t0 = time.perf_counter()
    code, out, err = run("colorize", one, "-o", dest)
    assert code == 2 and err.startswith("error: cannot write into") and err.count("\n") == 1
    assert out == "" and time.perf_counter() - t0 < 5


def test_suffix_writes_beside_each_photo_and_keep_extension_avoids_collisions(run, tmp_path):
    folder = tmp_path / "scans"
    write_image(folder / "a.jpg", photo("chelsea")[:40, :60])
    write_image(folder / "a.png", photo("coffee")[:40, :60])
    code, out, err = run("colorize", folder, "--suffix=-colour", "--size", "64")
    assert code == 0, out + err
    assert sorted(p.name for p in folder.iterdir()) == ["a-colour.jpg", "a-colour.png",
                                                       "a.jpg", "a.png"]
    code, out, err = run("colorize", folder / "a.jpg", folder / "a.png", "-o", tmp_path / "o",
                         "--format", "png")
    assert code == 1 and "--keep-extension" in out
    code, out, err = run("colorize", folder / "a.jpg", folder / "a.png", "-o", tmp_path / "k",
                         "--format", "png", "--keep-extension", "--size", "64")
    assert code == 0 and sorted(os.listdir(tmp_path / "k")) == ["a.jpg.png", "a.png.png"]


def test_colorize_without_output_or_suffix_is_a_usage_error(run, one):
    code, out, err = run("colorize", one)
    assert code == 2 and "-o" in err and "--suffix" in err


@pytest.mark.parametrize("argv,why", [
    (["--batch-size", "0"], "at least 1"),
    (["--size", "0"], "positive multiple of 16"),
    (["--size", "100"], "positive multiple of 16"),
])
def test_nonsense_options_are_refused_by_the_parser(one, tmp_path, capsys, argv, why):
    with pytest.raises(SystemExit) as stop:
        main(["colorize", str(one), "-o", str(tmp_path / "o"), *argv])
    assert stop.value.code == 2 and why in capsys.readouterr().err


def test_an_unknown_model_lists_the_bundled_names(one, tmp_path, capsys):
    assert main(["colorize", str(one), "-o", str(tmp_path / "o"), "--model", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "default, teacher, student" in err and err.count("\n") == 1


def test_max_pixels_limits_and_can_be_raised(run, one, tmp_path):
    code, out, err = run("colorize", one, "-o", tmp_path / "a", "--max-pixels", "1000")
    assert code == 1 and "too large" in out
    code, out, err = run("colorize", one, "-o", tmp_path / "b", "--max-pixels", "20000",
                         "--size", "64")
    assert code == 0


def _retint(model: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "retint", *args, "--model", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_stdin_to_stdout(model_files, one):
    proc = _retint(model_files["teacher"], "colorize", "-", "-o", "-", "--format", "png",
                   "--size", "64", stdin=subprocess.PIPE)
    out, err = proc.communicate(one.read_bytes(), timeout=120)
    assert proc.returncode == 0, err
    assert out[:8] == b"\x89PNG\r\n\x1a\n"
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(out)).size == (120, 90)


def test_no_progress_bar_junk_in_a_log(model_files, one, tmp_path):
    proc = _retint(model_files["teacher"], "colorize", str(one), "-o", str(tmp_path / "o"),
                   "--size", "64")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"\r" not in err and b"photo/s" not in err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_leave_no_temporary_file(model_files, tmp_path, sig, code):
    frames, _ = scene_frames()
    clip = make_clip(tmp_path / "film.mp4", frames * 40, audio=False)  # 960 frames
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _retint(model_files["teacher"], "video", str(clip), "-o", str(out_dir / "f.mp4"),
                   "--size", "64")
    deadline = time.time() + 60
    while not _hidden(out_dir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _hidden(out_dir), "the temporary output never appeared"
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert os.listdir(out_dir) == [] and b"Traceback" not in err


def test_video_refuses_to_overwrite_writes_into_a_folder_and_refuses_a_still(run, tmp_path):
    frames, _ = scene_frames()
    clip = make_clip(tmp_path / "in.mp4", frames[:4], audio=False)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"precious")
    code, out, err = run("video", clip, "-o", existing)
    assert code == 2 and "--overwrite" in err and existing.read_bytes() == b"precious"
    code, out, err = run("video", clip, "-o", existing, "--skip-existing")
    assert code == 0 and existing.read_bytes() == b"precious"
    folder = tmp_path / "films"
    folder.mkdir()
    code, out, err = run("video", clip, "-o", folder, "--size", "64")
    assert code == 0, err
    assert os.listdir(folder) == ["in.mp4"]
    code, out, err = run("video", clip, "-o", existing, "--overwrite", "--size", "64")
    assert code == 0 and existing.read_bytes() != b"precious"
    still = tmp_path / "still.jpg"
    write_image(still, np.asarray(frames[0]))
    code, out, err = run("video", still, "-o", tmp_path / "s.mp4")
    assert code == 2 and "still image" in err and not (tmp_path / "s.mp4").exists()


def test_the_video_progress_bar_ends_at_the_frame_count(model_files, tmp_path, capsys):
    from retint.inference import Colorizer
    from retint.video import colorize_video

    frames, _ = scene_frames()
    clip = make_clip(tmp_path / "bar.mp4", frames[:13], audio=False)
    report = colorize_video(clip, tmp_path / "out.mp4", Colorizer(model_files["teacher"],
                            working_size=64), progress=True)
    err = capsys.readouterr().err
    counts = [tuple(map(int, m)) for m in __import__("re").findall(r"(\d+)/(\d+)", err)]
    assert report.frames == 13 and counts and counts[-1] == (13, 13), counts[-3:]
