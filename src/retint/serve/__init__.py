"""``retint serve``: a local web page and HTTP API on the same ``Colorizer`` as the CLI.

The owner's ``cli.py`` calls :func:`add_command`; :func:`main` runs the command on its own
(tests and the load benchmark start the server with it as a subprocess).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Limits", "add_command", "cmd_serve", "create_app", "main"]


def __getattr__(name: str) -> Any:
    """``create_app`` and ``Limits`` load lazily: ``retint --help`` must not import torch."""
    if name in ("Limits", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the local web app and HTTP API",
                       description="Serve the page at / and the API at /api (docs at /docs).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one; printed)")
    p.add_argument("--model", action="append",
                   help="default, teacher, student or a path to weights; repeatable, the page "
                        "lists them in this order (default: --model default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--size", type=int, default=256, help="default working size")
    p.add_argument("--saturation", type=float, default=1.0,
                   help="scale the predicted colour for every request (kept inside sRGB)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload (413 above)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels, checked from the header (413 above)")
    p.add_argument("--workers", type=int, default=1, help="inference threads")
    p.add_argument("--queue", type=int, default=32,
                   help="requests that may wait for a worker; more get 503")
    p.add_argument("--batch", type=int, default=0,
                   help="most waiting requests of one model and size run as one batch "
                        "(default: 8 on a GPU, 4 on the CPU, where it gave +23 %% requests/s "
                        "at 4 and 16 clients)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a worker waits for more requests to fill a batch")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind first, then print the real URL (so ``--port 0`` is usable), then serve."""
    import torch
    import uvicorn

    from ..train import pick_device
    from .app import Limits, create_app

    on_cpu = pick_device(args.device).type == "cpu"
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                    max_pixels=args.max_pixels, workers=max(1, args.workers),
                    queue=max(0, args.queue),
                    batch=args.batch if args.batch > 0 else 4 if on_cpu else 8,
                    batch_wait_s=max(0.0, args.batch_wait_ms) / 1000)
    if on_cpu:  # worker threads x torch's intra-op threads must not oversubscribe the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // limits.workers))
    app = create_app(args.model or ["default"], device=args.device, size=args.size,
                     limits=limits, saturation=args.saturation)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # clients that connect before uvicorn is up wait instead of failing
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"retint serve: http://{shown}:{port}/ (API docs at /docs; Ctrl-C stops)", flush=True)
    # connections beyond this get uvicorn's 503: uploads in flight are bounded too
    concurrency = 4 * (limits.queue + limits.workers * limits.batch) + 16
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=concurrency,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -c 'from retint.serve import main; main()' --port 0``: serve without cli.py."""
    parser = argparse.ArgumentParser(prog="retint")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
