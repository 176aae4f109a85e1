"""Load benchmark for ``retint serve``: requests/s and p50/p95 latency at 1, 4 and 16 clients.

Starts its own server on 127.0.0.1 (nothing else is contacted), bounded in count and time per
level, and reports the server's peak RSS. ``--batch 1 8`` runs the whole thing once per setting,
which is how batching was measured against no batching.

    .venv/bin/python scripts/load_bench.py --model teacher --batch 1 8
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import skimage.data
from PIL import Image

SERVE = "import sys; from retint.serve import main; sys.exit(main(sys.argv[1:]))"


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a server on an ephemeral loopback port; return it and its URL."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "--host", "127.0.0.1", "--port", "0",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "http://" in line:
            url = next(w for w in line.split() if w.startswith("http://")).rstrip("/")
            # keep draining so the server never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, url
    raise RuntimeError(f"server exited with {proc.wait()}")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def level(url: str, photo: bytes, clients: int, count: int, seconds: float,
          params: dict[str, str]) -> dict[str, float]:
    """``clients`` threads send back-to-back requests until ``count`` are done or time is up."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    sent = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal sent, failures
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if sent >= count or time.monotonic() > deadline:
                        return
                    sent += 1
                t0 = time.perf_counter()
                r = http.post("/api/colorize", params=params,
                              files={"file": ("photo.jpg", photo, "image/jpeg")})
                with lock:
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        failures += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"ok": len(latencies), "failed": failures, "rps": len(latencies) / wall,
            "p50": statistics.median(latencies) * 1000, "p95": q[18] * 1000}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model name or weights path")
    p.add_argument("--size", type=int, default=256, help="working size")
    p.add_argument("--photo-size", type=int, default=512, help="long side of the test photo")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48, help="most requests per level")
    p.add_argument("--seconds", type=float, default=30, help="most seconds per level")
    p.add_argument("--batch", type=int, nargs="+", default=[8], help="server --batch settings")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()

    rgb = skimage.data.astronaut()
    im = Image.fromarray(rgb).convert("L").convert("RGB")  # an old black-and-white photo
    im.thumbnail((args.photo_size, args.photo_size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    photo = buf.getvalue()
    print(f"photo {im.size[0]}x{im.size[1]} JPEG ({len(photo) / 1024:.0f} KB), model "
          f"{args.model}, working size {args.size}, workers {args.workers}")
    for batch in args.batch:
        proc, url = start(["--model", args.model, "--size", str(args.size), "--batch",
                           str(batch), "--workers", str(args.workers), "--queue", "256"])
        try:
            level(url, photo, 1, 3, args.seconds, {})  # warm-up
            print(f"\n--batch {batch}")
            print(f"{'clients':>7} {'ok':>4} {'fail':>4} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
            for clients in args.clients:
                r = level(url, photo, clients, args.requests, args.seconds, {})
                print(f"{clients:>7} {r['ok']:>4} {r['failed']:>4} {r['rps']:>7.2f} "
                      f"{r['p50']:>8.0f} {r['p95']:>8.0f}", flush=True)
            batches = httpx.get(url + "/healthz").json()["recent_batch_sizes"]
            print(f"server peak RSS {peak_rss_mb(proc.pid):.0f} MB; recent batch sizes "
                  f"{batches}")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
