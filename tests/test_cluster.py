"""``retint colorize --ray`` on a real local Ray (2 CPUs), and the list-file inputs it scales
with. No mocks: real photos, real actors, a real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from PIL import Image

from retint import cli
from retint.io import read_rgb
from retint.manifest import Manifest

ray = pytest.importorskip("ray", reason="the Ray path needs retint[ray] (in the dev extra)")

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def _archive(root: Path, count: int, broken: bool) -> Path:
    """``count`` black-and-white JPEGs of mixed sizes in two sub-folders, plus (``broken``) a
    file that is not an image and a JPEG cut in half."""
    rng = np.random.default_rng(0)
    for i in range(count):
        rgb = photo(NAMES[i % len(NAMES)])
        h, w = rgb.shape[:2]
        ch, cw = int(rng.integers(48, min(h, 200))), int(rng.integers(48, min(w, 260)))
        y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        sub = root / ("box-a" if i % 2 else "box-b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[y:y + ch, x:x + cw]).convert("L").save(sub / f"scan-{i:03}.jpg",
                                                                     quality=90)
    if broken:
        (root / "box-a" / "notes.jpg").write_text("not a photo")
        whole = (root / "box-b" / "scan-000.jpg").read_bytes()
        (root / "box-b" / "torn.jpg").write_bytes(whole[: len(whole) // 3])
    return root


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray for this module: the tests' drivers join it by address."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _colorize(*argv) -> int:
    return cli.main(["colorize", *map(str, argv), "--device", "cpu", "-q"])


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()[1:]]


def test_ray_outputs_match_the_local_path_and_bad_files_fail(
        ray_address, model_files, tmp_path, capsys):
    photos = _archive(tmp_path / "scans", 20, broken=True)
    model = model_files["student"]
    local_rc = _colorize(photos, "-o", tmp_path / "local", "--model", model)
    ray_rc = _colorize(photos, "-o", tmp_path / "ray", "--model", model, "--ray", ray_address,
                       "--actors", "2")
    out = capsys.readouterr().out
    assert local_rc == ray_rc == 1  # the broken files fail both ways; the rest is done
    assert "colorized 20 photo(s)" in out and "on Ray" in out and "failed 2" in out

    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.jpg"))
    remote = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.jpg"))
    assert local == remote and len(local) == 20
    worst = 0
    for rel in local:
        a, b = tmp_path / "local" / rel, tmp_path / "ray" / rel
        assert a.stat().st_size == b.stat().st_size
        worst = max(worst, int(np.abs(read_rgb(a).astype(int) - read_rgb(b).astype(int)).max()))
    assert worst <= 1

    rows = {Path(r["input"]).name: r for r in _rows(tmp_path / "ray" / "retint-manifest.jsonl")}
    assert len(rows) == 22
    assert rows["notes.jpg"]["status"] == rows["torn.jpg"]["status"] == "failed"
    assert "not an image" in rows["notes.jpg"]["error"] and rows["torn.jpg"]["error"]
    done = [r for r in rows.values() if r["status"] == "done"]
    assert len(done) == 20
    assert all(Path(r["output"]).stat().st_size == r["bytes"] for r in done)


def test_a_killed_job_reruns_to_every_photo_done_once(ray_address, model_files, tmp_path,
                                                       capsys):
    photos = _archive(tmp_path / "scans", 40, broken=False)
    listing = tmp_path / "scans" / "all.txt"  # the driver reads a list: no directory walk
    listing.write_text("\n".join(str(p.relative_to(listing.parent))
                                 for p in sorted(photos.rglob("*.jpg"))) + "\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "retint", "colorize", str(listing), "-o", str(out), "--model",
            str(model_files["student"]), "--device", "cpu", "-q", "--ray", ray_address,
            "--actors", "1", "--batch-size", "1"]
    driver = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    manifest = out / "retint-manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if manifest.exists() and any(r["status"] == "done" for r in _rows(manifest)):
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, mid-job, without a chance to clean up
    driver.wait()
    before = {r["input"] for r in Manifest(manifest).rows.values() if r["status"] == "done"}
    assert 0 < len(before) < 40, "the job was to be killed mid-way"

    assert _colorize(listing, "-o", out, "--model", model_files["student"],
                     "--ray", ray_address, "--actors", "2") == 0
    text = capsys.readouterr().out
    redone = int(text.split("colorized ")[1].split(" ")[0])
    assert redone + len(before) == 40  # nothing twice, nothing left out
    final = Manifest(manifest)
    assert len(final.rows) == 40 and final.counts()["done"] == 40
    assert len(manifest.read_text().splitlines()) == 41  # compacted: a header, one row each
    for row in final.rows.values():
        assert Image.open(row["output"]).size == Image.open(row["input"]).size

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    assert _colorize(listing, "-o", out, "--model", model_files["student"],
                     "--ray", ray_address) == 0  # a finished job: nothing to do
    assert "colorized 0 photo(s) (40 done by an earlier run" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}


def test_missing_ray_is_a_one_line_error(model_files, tmp_path):
    small_dir = _archive(tmp_path / "scans", 2, broken=False)
    code = ("import sys; sys.modules['ray'] = None; from retint.cli import main; "
            f"sys.exit(main(['colorize', {str(small_dir)!r}, '-o', {str(tmp_path / 'o')!r}, "
            f"'--model', {str(model_files['student'])!r}, '--ray']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --ray needs Ray: pip install 'retint[ray]'"
    assert not (tmp_path / "o").exists()


def test_a_foreign_manifest_path_is_refused(model_files, tmp_path, capsys):
    small_dir = _archive(tmp_path / "scans", 2, broken=False)
    other = tmp_path / "notes.jsonl"
    other.write_text('{"something": "else"}\n')
    assert _colorize(small_dir, "-o", tmp_path / "o", "--model", model_files["student"],
                     "--ray", "--manifest", other) == 2
    assert "is not a retint manifest" in capsys.readouterr().err
    assert other.read_text() == '{"something": "else"}\n'


def test_a_killed_actor_is_replaced_and_the_job_finishes(ray_address, model_files, tmp_path):
    """kill -9 of the Colorizer actor mid-job: Ray starts another, the batch in flight is
    redone, and every photo ends up done once with nothing half-written left."""
    photos = _archive(tmp_path / "scans", 40, broken=False)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "retint", "colorize", str(photos), "-o", str(out), "--model",
            str(model_files["student"]), "--device", "cpu", "-q", "--ray", ray_address,
            "--actors", "1", "--batch-size", "1"]
    job = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest, killed = out / "retint-manifest.jsonl", None
    deadline = time.monotonic() + 300
    while killed is None and job.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and _rows(manifest):
            found = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True,
                                   text=True).stdout.split()
            if found:
                killed = int(found[0])
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    text = job.communicate(timeout=300)[0]
    assert killed is not None, "the actor was to be killed mid-job"
    assert job.returncode == 0, text
    final = Manifest(manifest)
    assert len(final.rows) == 40 and final.counts()["done"] == 40
    assert len(list(out.rglob("*.jpg"))) == 40 and not list(out.rglob(".*.tmp"))


def test_an_unreachable_cluster_is_a_one_line_error(model_files, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    photos = _archive(tmp_path / "scans", 2, broken=False)
    assert _colorize(photos, "-o", tmp_path / "o", "--model", model_files["student"],
                     "--ray", f"127.0.0.1:{port}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err
    assert not (tmp_path / "o").exists()
