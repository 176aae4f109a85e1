"""``retint video`` on small clips made here with PyAV from real photos: a still scene with a
moving object and film grain, a hard cut, a slow pan, and a 440 Hz tone in AAC."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.transform
import torch
from conftest import photo

from retint.color import rgb_to_lab
from retint.inference import Colorizer
from retint.metrics import FlickerMeter, scene_cut
from retint.video import Stabilizer, add_command, colorize_video, pick_encoder

H, W, FPS, N = 80, 112, 12, 24  # 2 s: frames 0-11 still scene + object, 12-23 a pan
OBJ = 16  # the moving object's side, px; it moves 4 px a frame


def _gray(name: str, h: int, w: int) -> np.ndarray:
    img = skimage.transform.resize(photo(name), (h, w), anti_aliasing=True)
    return img @ np.array([0.299, 0.587, 0.114])  # float in [0, 1]


def scene_frames(grain: float = 3.0) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The clip's grey frames (uint8 HxWx3) and the moving object's top-left per frame."""
    rng = np.random.default_rng(0)
    still, pan = _gray("astronaut", H, W), _gray("chelsea", H, W + 2 * N)
    obj = _gray("camera", OBJ, OBJ)
    frames, boxes = [], []
    for i in range(N):
        if i < N // 2:
            img, (y, x) = still.copy(), (52, 8 + 4 * i)
            img[y : y + OBJ, x : x + OBJ] = obj
        else:
            img, (y, x) = pan[:, 2 * i : 2 * i + W].copy(), (-1, -1)
        img = img * 255 + rng.normal(0, grain, img.shape)  # film grain
        frames.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
        boxes.append((y, x))
    return frames, boxes


def make_clip(path: Path, frames: list[np.ndarray], *, pts: list[int] | None = None,
              time_base: Fraction = Fraction(1, FPS), rotation: int = 0,
              audio: bool = True) -> Path:
    """Write frames as H.264 (pts in ``time_base``), optionally rotated, with an AAC tone."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS, options={"crf": "10"})
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        v.codec_context.time_base = time_base
        if rotation:
            v.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=44100) if audio else None
        if a is not None:
            a.layout = "mono"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = (pts[i] if pts else i), time_base
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        seconds = float((pts[-1] + 1 if pts else len(frames)) * time_base)
        for n in range(0, int(44100 * seconds), 1024) if a is not None else ():
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n, n + 1024) / 44100)
            af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt",
                                            layout="mono")
            af.sample_rate, af.pts = 44100, n
            out.mux(a.encode(af))
        if a is not None:
            out.mux(a.encode(None))
    return path


def decode(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """Frames (displayed as stored), their times in seconds, and stream facts."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times, rotation = [], [], 0
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
            rotation = f.rotation
        info = {"rate": v.average_rate, "width": v.width, "height": v.height,
                "duration": c.duration / 1e6, "rotation": rotation,
                "audio": [(a.codec_context.name, float((a.duration or 0) * a.time_base))
                          for a in c.streams.audio]}
    return frames, times, info


def lab(frames: list[np.ndarray]) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    add_command(p.add_subparsers())
    args = p.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("video")
    frames, boxes = scene_frames()
    return {"root": root, "frames": frames, "boxes": boxes,
            "path": make_clip(root / "film.mp4", frames)}


@pytest.fixture(scope="module")
def colorizer(model_files) -> Colorizer:
    """The random-init teacher: its BatchNorm keeps activations alive, so its colour reacts to
    grain and to motion elsewhere, i.e. it flickers (~0.5 LAB units on still pixels). The
    random-init student's output is constant to ~1e-4 (activations die out): nothing to fix."""
    return Colorizer(model_files["teacher"], device="cpu", working_size=64, batch_size=5)


@pytest.fixture(scope="module")
def outputs(clip, colorizer) -> dict:
    """The clip colorized with stabilisation on, off, and as plain (motion-blind) smoothing."""
    out = {}
    for key, stab in (("on", True), ("off", False), ("plain", Stabilizer(motion=float("inf")))):
        dst = clip["root"] / f"out_{key}.mp4"
        out[key + "_report"] = colorize_video(clip["path"], dst, colorizer, crf=10,
                                              stabilize=stab, measure_flicker=key == "on")
        out[key] = decode(dst)
    return out


def test_output_keeps_frames_size_rate_duration_audio(clip, outputs):
    _, times_in, info_in = decode(clip["path"])
    frames, times, info = outputs["on"]
    assert len(frames) == N and frames[0].shape == (H, W, 3)
    assert info["rate"] == FPS and times == pytest.approx(times_in, abs=1e-4)
    assert info["duration"] == pytest.approx(info_in["duration"], abs=0.01)
    assert info["audio"] == info_in["audio"]  # same codec, same duration: copied
    assert info_in["audio"][0][0] == "aac" and info_in["audio"][0][1] == pytest.approx(2, abs=0.05)
    assert outputs["on_report"].codec == pick_encoder()[0]
    assert np.abs(frames[5].astype(int) - frames[5][..., ::-1]).mean() > 1  # it has colour


def test_variable_frame_rate_timestamps_preserved(clip, colorizer, tmp_path):
    pts = np.cumsum([0, 83, 83, 167, 42, 42, 250, 83, 125, 83, 41, 300]).tolist()
    src = make_clip(tmp_path / "vfr.mkv", clip["frames"][:12], pts=pts,
                    time_base=Fraction(1, 1000), audio=False)
    colorize_video(src, tmp_path / "vfr.mp4", colorizer, stabilize=True)
    _, times, _ = decode(tmp_path / "vfr.mp4")
    assert times == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_segment_report_and_other_container(clip, tmp_path, model_files, capsys):
    dst = tmp_path / "part.mkv"
    assert cli(["video", str(clip["path"]), "-o", str(dst), "--start", "0.5", "--end", "1.5",
                "--model", str(model_files["student"]), "--device", "cpu", "--size", "64",
                "--report", "-q"]) == 0
    frames, times, info = decode(dst)
    assert len(frames) == 12 and times[0] == pytest.approx(0, abs=1e-3)
    assert info["audio"][0][0] == "aac"
    with av.open(str(dst)) as c:  # mkv keeps no per-stream duration: add up the packets
        a = c.streams.audio[0]
        seconds = sum(p.duration for p in c.demux(a) if p.duration) * a.time_base
    assert float(seconds) == pytest.approx(1.0, abs=0.05)
    out = capsys.readouterr().out
    assert "flicker" in out and "fps" in out and "peak memory" in out


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_nothing(clip, colorizer, tmp_path, monkeypatch, error):
    src = tmp_path / "in.mp4"
    shutil.copy(clip["path"], src)
    calls = []
    real = Colorizer.predict_ab

    def crash(self, l_full, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise error("boom")
        return real(self, l_full, **kw)

    monkeypatch.setattr(Colorizer, "predict_ab", crash)
    with pytest.raises(error):
        colorize_video(src, tmp_path / "out.mp4", colorizer)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_bad_inputs_give_one_line_errors(clip, colorizer, tmp_path, capsys):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "cut.mp4").write_bytes(clip["path"].read_bytes()[:3000])
    with av.open(str(tmp_path / "tone.m4a"), "w") as out:  # audio only
        a = out.add_stream("aac", rate=44100)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                        layout="mono")
        af.sample_rate, af.pts = 44100, 0
        out.mux(a.encode(af))
        out.mux(a.encode(None))
    cases = {"noise.mp4": "not a readable video", "cut.mp4": "not a readable video",
             "tone.m4a": "no video stream", "missing.mp4": "no such file"}
    for name, why in cases.items():
        with pytest.raises(ValueError, match=why) as err:
            colorize_video(tmp_path / name, tmp_path / "out.mp4", colorizer)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="overwrite the input"):
        colorize_video(clip["path"], clip["path"], colorizer)
    assert cli(["video", str(tmp_path / "noise.mp4"), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["cut.mp4", "noise.mp4", "tone.m4a"]


def ab_flicker(lab: torch.Tensor) -> float:
    """:class:`FlickerMeter` over a whole (T, 3, H, W) LAB clip at once."""
    meter = FlickerMeter()
    meter.update(lab)
    return meter.value


def test_stabilisation_lowers_flicker_without_smearing_motion(clip, outputs):
    report = outputs["on_report"]  # the predicted colour, before 8-bit RGB and the codec
    assert report.cuts == 1 and report.flicker["on"] < 0.7 * report.flicker["off"], report
    on, off, plain = (lab(outputs[k][0]) for k in ("on", "off", "plain"))
    # the decoded files: still lower, but on 112x80 frames x264's chroma noise and gamut
    # clipping under grain add a floor (~0.6-1 LAB units) that no smoothing of ab can remove
    assert ab_flicker(on) < ab_flicker(off)

    def smear(x: torch.Tensor) -> float:  # colour departure from the raw prediction on the object
        gaps = []
        for i in range(1, N // 2):
            y, x0 = clip["boxes"][i]
            region = (slice(None), slice(y + 2, y + OBJ - 2), slice(x0 + 2, x0 + OBJ - 2))
            gaps.append((x[i][1:] - off[i][1:])[region].norm(dim=0).mean())
        return float(torch.stack(gaps).mean())

    assert smear(on) < 0.5 * smear(plain), (smear(on), smear(plain))
    # reset at the cut: the first frame of the new scene is its own raw colour
    cut = N // 2
    assert (on[cut, 1:] - off[cut, 1:]).norm(dim=0).mean() < 1.0


def test_rotation_carried_over_and_frames_colorized_upright(clip, colorizer, tmp_path):
    upright = clip["frames"][:6]
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # shown turned back
    rot = make_clip(tmp_path / "rot.mp4", stored, rotation=90, audio=False)
    up = make_clip(tmp_path / "up.mp4", upright, audio=False)
    colorize_video(rot, tmp_path / "rot_out.mp4", colorizer, stabilize=False, crf=10)
    colorize_video(up, tmp_path / "up_out.mp4", colorizer, stabilize=False, crf=10)
    rot_frames, _, info = decode(tmp_path / "rot_out.mp4")
    up_frames, _, _ = decode(tmp_path / "up_out.mp4")
    assert info["rotation"] == 90 and rot_frames[0].shape == (W, H, 3)
    shown = lab([np.rot90(f, 1) for f in rot_frames])
    ref = lab(up_frames)
    sideways = lab([np.rot90(f, 1) for f in colorize_sideways(colorizer, stored)])
    same = (shown[:, 1:] - ref[:, 1:]).norm(dim=1).mean()
    assert same < 0.5 * (sideways[:, 1:] - ref[:, 1:]).norm(dim=1).mean()


def colorize_sideways(colorizer: Colorizer, frames: list[np.ndarray]) -> list[np.ndarray]:
    """What ignoring the rotation would give: the model run on the stored (sideways) frames."""
    return colorizer.colorize_many(frames)


def test_flicker_meter_and_cuts():
    rng = np.random.default_rng(1)
    base = torch.zeros(4, 3, 32, 32)
    base[:, 0] = 50
    base[:, 1:] = torch.from_numpy(rng.normal(0, 2, (4, 2, 32, 32))).float()
    assert ab_flicker(base) > 2
    still = base.clone()
    still[:, 1:] = still[0, 1:]
    assert ab_flicker(still) == 0
    meter = FlickerMeter()
    cut = torch.cat([base[:2], base[2:] + torch.tensor([40.0, 0, 0]).view(3, 1, 1)])
    meter.update(cut)
    assert meter.cuts == 1 and meter.pairs == 2
    assert scene_cut(torch.full((8, 8), 20.0), torch.full((8, 8), 60.0))
    assert not scene_cut(base[0, 0], base[0, 0] * 1.05)  # exposure flicker is not a cut


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) not installed")
def test_ffprobe_reads_output(clip, outputs):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                          "-of", "csv=p=0", str(clip["root"] / "out_on.mp4")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["h264", "aac"] or sorted(out) == ["aac", "h264"]


def test_a_black_and_white_frame_is_read_from_its_y_plane(clip, colorizer):
    """A gray H.264 frame comes from Y alone, as the 8-bit gray each Y stands for (which the
    colour maths takes as a gray photo), and its L equals the RGB path's within rounding of the
    8-bit gray; a frame with colour (chroma away from 128) takes the RGB path exactly."""
    from retint.inference import as_l
    from retint.video import frame_lightness

    with av.open(str(clip["path"])) as c:
        frame = next(c.decode(video=0))
    assert frame.format.name == "yuv420p"
    from_y = frame_lightness(frame, colorizer, 0)
    y = np.frombuffer(frame.planes[0], np.uint8).reshape(-1, frame.planes[0].line_size)[:H, :W]
    gray = np.clip(np.round((y - 16.0) * 255 / 219), 0, 255).astype(np.uint8)
    assert from_y.dtype == np.uint8 and np.array_equal(from_y, gray)
    from_rgb = colorizer.lightness(frame.to_ndarray(format="rgb24"))
    assert as_l(from_y).shape == from_rgb.shape == (1, H, W)
    # the same 8-bit gray but for rounding: swscale's fixed point lands one level lower on
    # some pixels (one level is L/100 ~ 0.004); ours is (Y - 16) * 255 / 219, rounded
    assert float((as_l(from_y) - from_rgb).abs().max()) < 0.006
    turned = frame_lightness(frame, colorizer, 1)
    assert np.array_equal(turned, np.rot90(from_y, 1))

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # red: chroma far from neutral
    colour = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    assert torch.equal(frame_lightness(colour, colorizer, 0),
                       colorizer.lightness(colour.to_ndarray(format="rgb24")))


@pytest.mark.parametrize("stage", ["read", "compose", "write"])
def test_a_failing_stage_stops_the_film_and_leaves_nothing(clip, colorizer, tmp_path,
                                                          monkeypatch, stage):
    """An error in the reader, the composer or the writer thread reaches the caller as itself,
    the other threads stop, and no partial file is left."""
    import threading

    from retint import video

    src = tmp_path / "in.mp4"
    shutil.copy(clip["path"], src)
    calls = []

    def failing(real):
        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == 7:
                raise OSError(f"{stage} failed")
            return real(*args, **kwargs)
        return call

    if stage == "read":
        monkeypatch.setattr(video, "frame_lightness", failing(video.frame_lightness))
    elif stage == "compose":
        monkeypatch.setattr(Colorizer, "compose", failing(Colorizer.compose))
    else:
        class FailingStream:  # the output stream, its encoder failing at the 7th frame
            def __init__(self, stream):
                self._stream, self.encode = stream, failing(stream.encode)

            def __getattr__(self, name):
                return getattr(self._stream, name)

        add_video = video._add_video
        monkeypatch.setattr(video, "_add_video",
                            lambda *args, **kw: FailingStream(add_video(*args, **kw)))
    before = threading.active_count()
    with pytest.raises(OSError, match=f"{stage} failed"):
        colorize_video(src, tmp_path / "out.mp4", colorizer)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]
    assert threading.active_count() == before  # no stage left running


def test_a_film_on_the_onnx_runtime_gives_torchs_frames(clip, model_files, tmp_path,
                                                        monkeypatch):
    """`retint video --runtime onnx` (what `scripts/video_bench.py` times beside torch): the
    same frames as the torch runtime, coded losslessly (crf 0) so that a last-bit difference in
    ab cannot make x264 code a block another way: a level or two where a rounding flipped."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import threading

    monkeypatch.setenv("RETINT_CACHE", str(tmp_path / "cache"))
    frames = {}
    threads = torch.get_num_threads()
    for runtime in ("torch", "onnx"):
        dst = tmp_path / f"{runtime}.mp4"
        assert cli(["video", str(clip["path"]), "-o", str(dst), "--model",
                    str(model_files["teacher"]), "--size", "64", "--runtime", runtime,
                    "--crf", "0"]) == 0
        frames[runtime] = decode(dst)[0]
        # the colour stage ran its torch ops inline on onnx; this thread's count, and the one
        # a thread started afterwards gets, are what they were
        seen: list[int] = []
        later = threading.Thread(target=lambda s=seen: s.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert torch.get_num_threads() == threads and seen == [threads]
    assert len(frames["onnx"]) == len(frames["torch"]) == len(clip["frames"])
    diffs = [np.abs(a.astype(int) - b.astype(int))
             for a, b in zip(frames["onnx"], frames["torch"], strict=True)]
    means, peaks = [float(d.mean()) for d in diffs], [int(d.max()) for d in diffs]
    assert max(means) < 0.05 and max(peaks) <= 3, (means, peaks)
    first = frames["torch"][0].astype(int)
    assert np.abs(first - first.mean(2, keepdims=True)).max() > 20  # coloured: it means something
