"""``retint serve`` under abuse and failure, against real server processes and real sockets on
127.0.0.1: stalled uploads, connection caps, one JSON error shape, lazily loaded models held
within a bound, a pixel budget and memory given back, and a port that cannot be had."""

from __future__ import annotations

import json
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import photo
from test_serve import SERVE, Server, decoded, encoded

STALL = (b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nCo")  # 7 body bytes


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith(field)).split()[1]) / 1024


def stalled(url: str, source: str, count: int, payload: bytes = STALL) -> list[socket.socket]:
    """``count`` connections from ``source`` (any 127/8 address is this machine) that send
    ``payload`` and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def read_until_closed(socks: list[socket.socket], limit_s: float) -> dict[socket.socket, tuple]:
    """What each socket received before the server closed it, and when (None: still open)."""
    got: dict[socket.socket, bytearray] = {s: bytearray() for s in socks}
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + limit_s
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[s] += chunk
                else:
                    closed[s] = time.monotonic()
                    sel.unregister(s)
    for s in socks:
        s.close()
    return {s: (bytes(got[s]), closed.get(s)) for s in socks}


def status_and_error(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), reply
    return int(head.split()[1]), json.loads(body)


# ---------------------------------------------------------------- stalled uploads


def test_stalled_uploads_time_out_and_never_lock_others_out(model_files):
    """200 sockets that send headers and 7 bytes of a 100 kB body, then nothing: /healthz
    stays answered, the address over its cap gets 429s at once, other addresses are not
    refused for it, the connection cap in all is a JSON 503, and every stalled socket is
    answered 408 and closed after the read deadline. Then the server works as before."""
    deadline = 3.0
    s = Server("--model", str(model_files["student"]), "--size", "64", "--queue", "8",
               "--batch-size", "4", "--read-timeout", str(deadline),
               "--max-client-connections", "24")  # 4 x (8 + 4) + 16 = 64 connections in all
    try:
        t0 = time.monotonic()
        flood = stalled(s.url, "127.0.0.1", 200)
        other = stalled(s.url, "127.0.0.2", 24)
        third = stalled(s.url, "127.0.0.3", 24)
        heads = stalled(s.url, "127.0.0.4", 2, STALL[:30])  # stops inside the headers
        silent = stalled(s.url, "127.0.0.4", 2, b"")  # connects and says nothing
        opened = time.monotonic() - t0
        with httpx.Client(base_url=s.url, timeout=10) as fresh:
            t1 = time.monotonic()
            health = fresh.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert time.monotonic() - t1 < 2
        replies = read_until_closed(flood + other + third + heads + silent, deadline + 20)
        assert opened < deadline, f"opening the sockets took {opened:.1f} s; the test needs less"
        assert all(closed is not None for _, closed in replies.values()), "a socket stayed open"
        codes: dict[str, list[int]] = {}
        for group, socks in (("flood", flood), ("other", other), ("third", third),
                             ("heads", heads)):
            for sock in socks:
                status, error = status_and_error(replies[sock][0])
                assert error["status"] == status and error["error"], error
                codes.setdefault(group, []).append(status)
        assert codes["flood"] == [408] * 24 + [429] * 176  # 24 admitted, the rest refused
        assert codes["other"] == [408] * 24  # one address's flood is its own
        assert codes["third"] == [408] * 16 + [503] * 8  # 64 in all; JSON, not plain text
        assert codes["heads"] == [408, 408]
        assert all(replies[sock][0] == b"" for sock in silent)  # nothing to answer: closed
        timed_out = [closed for sock, (reply, closed) in replies.items()
                     if reply.startswith(b"HTTP/1.1 408")]
        assert min(timed_out) - t0 > deadline - 0.5  # after the deadline, not before
        assert max(timed_out) - t0 < deadline + opened + 10
        assert b"stalled" in replies[flood[0]][0] and b"headers" in replies[heads[0]][0]
        r = s.post(encoded(photo("coffee")))  # and nobody is locked out
        assert r.status_code == 200, r.text
        assert s.client.get("/healthz").json()["connections"] <= 2
    finally:
        s.stop()


# ---------------------------------------------------------------- one server for the rest


@pytest.fixture(scope="module")
def tiny_models(model_files, tmp_path_factory) -> Path:
    """The random-init student as ``tiny``: an id apart from the bundled ``student``."""
    root = tmp_path_factory.mktemp("tiny")
    for suffix in (".safetensors", ".json"):
        shutil.copy(model_files["student"].with_suffix(suffix), root / f"tiny{suffix}")
    return root / "tiny.safetensors"


@pytest.fixture(scope="module")
def server(tiny_models) -> Iterator[Server]:
    s = Server("--model", str(tiny_models), "--size", "64", "--max-models", "2",
               "--threads", "2", "--pixel-budget", "3000000", "--batch-size", "2",
               "--max-pixels", "8000000")
    yield s
    s.stop()


def raw_request(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_every_error_is_json_error_and_status(server):
    jpeg = encoded(photo("coffee")[:64, :64])
    cases = [
        (server.client.get("/nope"), 404, "not found"),
        (server.client.get("/api/colorize"), 405, "method not allowed"),
        (server.client.post("/api/colorize", content=b"x" * 10,  # multipart without boundary
                            headers={"Content-Type": "multipart/form-data"}), 400, "multipart"),
        (server.client.post("/api/colorize", content=jpeg,  # a raw JPEG body
                            headers={"Content-Type": "image/jpeg"}), 415, "`file` field"),
        (server.client.post("/api/colorize", files={"photo": ("a.jpg", jpeg)}), 422,
         "`file` field"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"error", "status"} and body["status"] == status
        assert words in body["error"], body
    assert server.client.get("/api/colorize").headers["allow"] == "POST"
    status, error = status_and_error(raw_request(server.url, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and error["status"] == 400 and "bad request" in error["error"]


def test_every_bundled_model_loads_on_first_use_within_max_models(server):
    info = server.client.get("/api/models").json()
    models = {m["id"]: m for m in info["models"]}
    assert list(models) == ["tiny", "default", "teacher", "student", "hints"]
    assert models["tiny"]["default"] and models["tiny"]["loaded"]
    assert all(models[b]["bundled"] and not models[b]["loaded"]
               for b in ("default", "teacher", "student"))
    data = encoded(photo("chelsea")[:96, :128])

    def use(model: str) -> set[str]:
        r = server.post(data, model=model)
        assert r.status_code == 200, r.text
        assert r.headers["x-retint-model"] == model and decoded(r.content).size == (128, 96)
        return set(server.client.get("/healthz").json()["models_loaded"])

    assert use("student") == {"tiny", "student"}
    assert use("teacher") == {"student", "default", "teacher"}  # tiny dropped; default = teacher
    assert use("default") == {"student", "default", "teacher"}  # the same weights, no load
    assert use("tiny") == {"tiny", "default", "teacher"}  # student was the least recently used
    loaded = {m["id"] for m in server.client.get("/api/models").json()["models"] if m["loaded"]}
    assert loaded == {"tiny", "default", "teacher"}
    assert server.client.get("/healthz").json()["max_models"] == 2


def test_pixel_budget_bounds_work_in_flight_and_memory_is_given_back(server):
    """Two threads, a 3 MP budget: 2.4 MP photos never run two at once, all are answered, and
    once the burst is over memory goes back to the system."""
    big = np.ascontiguousarray(np.tile(photo("astronaut"), (3, 4, 1))[:1200, :2000])
    data = encoded(big, "PNG")
    before = server.client.get("/healthz").json()
    before_rss = rss_mb(server.proc.pid)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: server.post(data, name="big.png"), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert decoded(replies[0].content).size == (2000, 1200)
    health = server.client.get("/healthz").json()
    assert health["pixel_budget"] == 3_000_000
    assert 2_400_000 <= health["peak_busy_pixels"] <= 3_000_000
    assert health["busy_pixels"] == 0
    for _ in range(50):  # the thread gives memory back just after its last reply
        if server.client.get("/healthz").json()["memory_trims"] > before["memory_trims"]:
            break
        time.sleep(0.1)
    assert server.client.get("/healthz").json()["memory_trims"] > before["memory_trims"]
    peak, now = rss_mb(server.proc.pid, "VmHWM"), rss_mb(server.proc.pid)
    took = peak - before_rss
    assert took > 30, (before_rss, peak)  # the burst took memory...
    assert now - before_rss < 0.5 * took + 20, (before_rss, peak, now)  # ...and gave it back


# ---------------------------------------------------------------- start-up failures


def serve_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SERVE, *args], capture_output=True, text=True,
                          timeout=60)


def test_a_taken_port_is_one_line_and_exit_2_before_any_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a missing model too: the port must be the error reported, so it was checked first
        proc = serve_fails("--port", str(port), "--model", str(tmp_path / "missing"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_an_invalid_port_is_one_line_and_exit_2(port):
    proc = subprocess.run([sys.executable, "-m", "retint", "serve", "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: --port must be 0-65535, got {port}\n"


def test_serving_does_not_load_the_training_stack():
    code = ("import sys, retint.serve.app, retint.serve.engine, retint.serve.guard; "
            "sys.exit('retint.train' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
