"""``retint serve``: the API against a real server process on loopback, plus a few in-process
checks with FastAPI's TestClient. Models are the random-init ones from ``model_files``."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import photo
from PIL import Image

SERVE = "import sys; from retint.serve import main; sys.exit(main(sys.argv[1:]))"
STATIC = Path(__file__).resolve().parents[1] / "src" / "retint" / "serve" / "static"


class Server:
    """A ``retint serve`` subprocess on 127.0.0.1 and an ephemeral port."""

    def __init__(self, *args: str, timeout: float = 60) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        found = threading.Event()

        def drain() -> None:  # keeps the pipe from filling up and blocking the server
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "http://" in line:
                    found.set()
        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        self.url = next(w for w in self.lines[-1].split() if w.startswith("http://")).rstrip("/")
        assert self.url.startswith("http://127.0.0.1:")
        self.client = httpx.Client(base_url=self.url, timeout=120)
        assert self.client.get("/healthz").status_code == 200

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024

    def post(self, data: bytes, name: str = "photo.jpg", **params: object) -> httpx.Response:
        return self.client.post("/api/colorize", params=params, files={"file": (name, data)})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def encoded(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.fixture(scope="module")
def server(model_files) -> Iterator[Server]:
    s = Server("--model", str(model_files["student"]), "--model", str(model_files["teacher"]),
               "--size", "64", "--queue", "64", "--batch-size", "8", "--max-upload-mb", "2",
               "--max-pixels", "2000000")
    yield s
    s.stop()


# ---------------------------------------------------------------- good requests


@pytest.mark.parametrize("fmt, media", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_photo_round_trip_keeps_size_and_format(server, fmt, media):
    rgb = photo("coffee")
    r = server.post(encoded(rgb, fmt), name=f"coffee.{fmt.lower()}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    assert 'filename="coffee-retint.' in r.headers["content-disposition"]
    out = decoded(r.content)
    assert out.format == fmt and out.size == (rgb.shape[1], rgb.shape[0]) and out.mode == "RGB"


def test_format_and_model_options_query_or_form(server):
    data = encoded(photo("chelsea"))
    r = server.post(data, format="webp", model="teacher", size=128, quality=80)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp" and decoded(r.content).format == "WEBP"
    assert r.headers["x-retint-model"] == "teacher" and r.headers["x-retint-size"] == "128"
    r = server.client.post("/api/colorize", files={"file": ("c.jpg", data)},
                           data={"format": "png", "size": "96"})
    assert r.status_code == 200 and decoded(r.content).format == "PNG"
    assert r.headers["x-retint-size"] == "96"


def test_models_and_health(server):
    info = server.client.get("/api/models").json()
    ids = [m["id"] for m in info["models"]]
    assert ids[:2] == ["student", "teacher"]  # the --model ones first, then the bundled ones
    # told apart from the given ones; the bundled hint model too
    assert ids[2:] == ["default", "teacher-2", "student-2", "hints"]
    assert info["models"][0]["default"] and info["sizes"]["default"] == 64
    assert info["limits"] == {"max_upload_bytes": 2 * 2**20, "max_pixels": 2_000_000}
    health = server.client.get("/healthz").json()
    assert health["status"] == "ok" and health["queue_limit"] == 64


# ---------------------------------------------------------------- bad requests


def test_413_from_content_length_before_the_body(server):
    """Refused from the header alone: the server answers without reading 100 MB."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after the 413
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 413") and '"status":413' in reply


def test_413_from_counting_a_chunked_body(server):
    """No Content-Length: the bytes are counted as they arrive."""
    boundary = "xyz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\""
            f"\r\nContent-Type: image/jpeg\r\n\r\n").encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(3 * 16):  # 3 MB > 2 MB
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = server.client.post("/api/colorize", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_413_too_many_pixels(server):
    big = np.zeros((1500, 1500, 3), np.uint8)  # 2.25 MP > 2 MP, a tiny PNG
    r = server.post(encoded(big, "PNG"), name="big.png")
    assert r.status_code == 413 and "pixels" in r.json()["error"]


def test_415_text_and_truncated_and_empty(server):
    r = server.post(b"hello, I am not a photo\n" * 10, name="notes.txt")
    assert r.status_code == 415 and "notes.txt: not an image" in r.json()["error"]
    jpeg = encoded(photo("astronaut"))
    r = server.post(jpeg[: len(jpeg) // 2], name="cut.jpg")
    assert r.status_code == 415 and "cut.jpg" in r.json()["error"], r.text
    assert "truncated" in r.json()["error"]
    assert server.post(b"", name="empty.jpg").status_code == 415


@pytest.mark.parametrize("params, word", [
    ({"size": 100}, "size"), ({"size": 8}, "size"), ({"size": "abc"}, "size"),
    ({"model": "nope"}, "model"), ({"format": "gif"}, "format"), ({"quality": 0}, "quality"),
])
def test_422_bad_options(server, params, word):
    r = server.post(encoded(photo("coffee")[:64, :64]), **params)
    assert r.status_code == 422
    assert r.json()["status"] == 422 and r.json()["error"].startswith(word)


def test_503_when_the_queue_is_full(model_files):
    s = Server("--model", str(model_files["teacher"]), "--size", "256", "--queue", "1",
               "--threads", "1", "--batch-size", "1")
    try:
        data = encoded(photo("astronaut"))
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: s.post(data), range(12)))
        codes = sorted(r.status_code for r in replies)
        assert set(codes) == {200, 503}, codes
        busy = next(r for r in replies if r.status_code == 503)
        assert "busy" in busy.json()["error"] and busy.headers["retry-after"] == "1"
        assert s.client.get("/healthz").json()["status"] == "ok"  # and it recovers
        assert s.post(data).status_code == 200
    finally:
        s.stop()


# ---------------------------------------------------------------- concurrency and memory


def test_32_parallel_requests_all_answered_none_mixed_up(server):
    """Each request has its own size and crop; a reply must have that size and that photo's
    lightness (the colorizer keeps L), so a lost or swapped reply cannot pass."""
    base = photo("astronaut")
    crops = [np.ascontiguousarray(base[i * 7 : i * 7 + 200 + i, i * 5 : i * 5 + 180 + 2 * i])
             for i in range(32)]

    def send(i: int) -> tuple[int, httpx.Response]:
        return i, server.post(encoded(crops[i], "PNG"), name=f"crop{i}.png",
                              model=("student", "teacher")[i % 2])

    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(send, range(32)))
    assert len(replies) == 32
    for i, r in replies:
        assert r.status_code == 200, (i, r.text)
        out = np.asarray(decoded(r.content).convert("L"), np.float32)
        gray = np.asarray(Image.fromarray(crops[i]).convert("L"), np.float32)
        assert out.shape == gray.shape, i
        assert np.corrcoef(out.ravel(), gray.ravel())[0, 1] > 0.95, i
    batches = server.client.get("/healthz").json()["recent_batch_sizes"]
    assert batches and max(batches) > 1  # concurrent requests did share batches
    assert server.peak_rss_mb() < 1500, server.peak_rss_mb()


# ---------------------------------------------------------------- in process


def test_page_docs_and_assets_are_local():
    """No CDN: nothing the page or the docs load points off this server."""
    for f in STATIC.iterdir():
        text = f.read_text()
        assert "https://" not in text and "http://" not in text.replace(
            "http://127.0.0.1:8000", ""), f.name


@pytest.mark.filterwarnings("ignore:Using `httpx` with")  # starlette TestClient deprecation
def test_in_process_16_bit_png_stays_16_bit(model_files):
    from fastapi.testclient import TestClient

    from retint.serve import Limits, create_app

    app = create_app([str(model_files["student"])], device="cpu", size=64, limits=Limits())
    rgb16 = (photo("coffee")[:80, :96].astype(np.uint16) * 257)
    from retint.serve.app import encode

    with TestClient(app) as client:
        r = client.post("/api/colorize", files={"file": ("c16.png", encode(rgb16, "png", 90))})
        assert r.status_code == 200, r.text
        out = decoded(r.content)
        assert out.size == (96, 80)
        assert json.loads(client.get("/openapi.json").text)["paths"]["/api/colorize"]
        assert client.get("/docs").headers["content-type"].startswith("text/html")
        assert "Content-Security-Policy" in client.get("/").headers
    raw = r.content
    assert raw[24] == 16  # PNG IHDR bit depth: 16 bits per sample


def test_bad_model_path_fails_at_start(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SERVE, "--port", "0", "--model",
                           str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "no such model" in proc.stderr
    assert time.monotonic() - t0 < 60
