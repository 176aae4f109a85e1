"""Load benchmark for ``retint serve``: requests/s and p50/p95 latency at 1, 4 and 16 clients,
then peak memory for large photos.

Starts its own server on 127.0.0.1 (nothing else is contacted), bounded in count and time per
level, and reports the server's peak RSS. ``--batch-size 1 4`` runs the whole thing once per
setting, which is how batching was measured against no batching. The large-photo round sends
``--large`` photos of ``--large-size`` pixels on the long side from ``--large-clients`` clients
and reports the peak RSS, the pixels in flight at most, and the RSS once the burst is over.

    .venv/bin/python scripts/load_bench.py --model teacher --batch-size 1 4
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


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith(field)).split()[1]) / 1024


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
    if not latencies:
        return {"ok": 0, "failed": failures, "rps": 0.0, "p50": float("nan"),
                "p95": float("nan")}
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"ok": len(latencies), "failed": failures, "rps": len(latencies) / wall,
            "p50": statistics.median(latencies) * 1000, "p95": q[18] * 1000}


def jpeg(long_side: int) -> tuple[bytes, tuple[int, int]]:
    """The astronaut as an old black-and-white photo, resized to ``long_side``."""
    im = Image.fromarray(skimage.data.astronaut()).convert("L").convert("RGB")
    scale = long_side / max(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), im.size


def large_round(proc: subprocess.Popen, url: str, args: argparse.Namespace) -> None:
    """Peak and settled memory for a burst of large photos."""
    photo, (w, h) = jpeg(args.large_size)
    trims = httpx.get(url + "/healthz").json()["memory_trims"]
    before = rss_mb(proc.pid)
    r = level(url, photo, args.large_clients, args.large, args.seconds * 4, {})
    for _ in range(50):  # the server gives memory back once its queue has drained
        health = httpx.get(url + "/healthz").json()
        if health["memory_trims"] > trims:
            break
        time.sleep(0.1)
    print(f"large photos {w}x{h} ({w * h / 1e6:.1f} MP), {args.large_clients} clients: "
          f"{r['ok']} ok, {r['failed']} failed, p50 {r['p50']:.0f} ms; RSS {before:.0f} MB "
          f"before, peak {rss_mb(proc.pid, 'VmHWM'):.0f} MB, {rss_mb(proc.pid):.0f} MB after; "
          f"at most {health['peak_busy_pixels'] / 1e6:.1f} MP in flight (budget "
          f"{health['pixel_budget'] / 1e6:.1f} MP)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model name or weights path")
    p.add_argument("--size", type=int, default=256, help="working size")
    p.add_argument("--photo-size", type=int, default=512, help="long side of the test photo")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48, help="most requests per level")
    p.add_argument("--seconds", type=float, default=30, help="most seconds per level")
    p.add_argument("--batch-size", type=int, nargs="+", default=[4],
                   help="server --batch-size settings, one run each")
    p.add_argument("--threads", type=int, default=1, help="server --threads")
    p.add_argument("--pixel-budget", type=int, help="server --pixel-budget")
    p.add_argument("--large", type=int, default=8, help="large photos sent at the end (0: none)")
    p.add_argument("--large-size", type=int, default=4000, help="long side of the large photos")
    p.add_argument("--large-clients", type=int, default=4)
    args = p.parse_args()

    photo, (w, h) = jpeg(args.photo_size)
    print(f"photo {w}x{h} JPEG ({len(photo) / 1024:.0f} KB), model {args.model}, working size "
          f"{args.size}, threads {args.threads}")
    budget = ["--pixel-budget", str(args.pixel_budget)] if args.pixel_budget else []
    for batch in args.batch_size:
        proc, url = start(["--model", args.model, "--size", str(args.size), "--batch-size",
                           str(batch), "--threads", str(args.threads), "--queue", "256",
                           *budget])
        try:
            level(url, photo, 1, 3, args.seconds, {})  # warm-up
            print(f"\n--batch-size {batch}")
            print(f"{'clients':>7} {'ok':>4} {'fail':>4} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
            for clients in args.clients:
                r = level(url, photo, clients, args.requests, args.seconds, {})
                print(f"{clients:>7} {r['ok']:>4} {r['failed']:>4} {r['rps']:>7.2f} "
                      f"{r['p50']:>8.0f} {r['p95']:>8.0f}", flush=True)
            batches = httpx.get(url + "/healthz").json()["recent_batch_sizes"]
            print(f"server peak RSS {rss_mb(proc.pid, 'VmHWM'):.0f} MB; recent batch sizes "
                  f"{batches}")
            if args.large:
                large_round(proc, url, args)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
