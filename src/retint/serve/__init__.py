"""``retint serve``: a local web page and HTTP API on the same ``Colorizer`` as the CLI.

``retint.cli`` calls :func:`add_command`; :func:`main` runs the command on its own (tests and
the load benchmark start the server with it as a subprocess).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from ..options import add_colorizer_options, model_names, positive_int

__all__ = ["Limits", "add_command", "cmd_serve", "create_app", "main"]


def __getattr__(name: str) -> Any:
    """``create_app`` and ``Limits`` load lazily: ``retint --help`` must not import torch."""
    if name in ("Limits", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the local web app and HTTP API",
                       description="Serve the page at / and the API at /api (docs at /docs). "
                                   "Every bundled model is on offer besides the --model ones.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one; printed)")
    add_colorizer_options(p, many_models=True)
    p.add_argument("--max-models", type=positive_int, default=3,
                   help="most models held in memory at once, the least recently used dropped "
                        "(default %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload (413 above)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest image in pixels, checked from the header (413 above)")
    p.add_argument("--pixel-budget", type=positive_int, default=None,
                   help="most pixels decoded and colorized at once across threads, which bounds "
                        "peak memory (default: --max-pixels; a photo alone always runs)")
    p.add_argument("--threads", type=positive_int, default=1, help="inference threads")
    p.add_argument("--queue", type=int, default=32,
                   help="requests that may wait for a thread; more get 503")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a thread waits for more requests to fill a batch of "
                        "--batch-size (waiting requests of one model and size run together)")
    p.add_argument("--read-timeout", type=_seconds, default=30.0,
                   help="seconds a client may take to send a request's headers, or pause in "
                        "its upload (408 and closed after; default %(default)s)")
    p.add_argument("--max-client-connections", type=positive_int, default=64,
                   help="open connections one client address may hold (429 above; /healthz is "
                        "always answered; default %(default)s)")
    p.set_defaults(func=cmd_serve)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or a one-line ValueError (taken, invalid, unknown host)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = err.strerror or str(err)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def _more_files() -> None:
    """Raise the open-files limit towards its hard cap: every connection is a file, and stalled
    ones must run out of deadline before the server runs out of files."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):  # not Unix, or not allowed: keep the limit
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind first (a taken port fails before any model loads), load, print the real URL (so
    ``--port 0`` is usable), then serve."""
    sock = bind(args.host, args.port)
    try:
        _more_files()
        app = _build_app(args)
        sock.listen(2048)  # clients that connect before uvicorn is up wait instead of failing
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        print(f"retint serve: http://{shown}:{port}/ (API docs at /docs; Ctrl-C stops)",
              flush=True)
        _run(app, sock)
    finally:
        sock.close()
    return 0


def _build_app(args: argparse.Namespace) -> Any:
    import torch

    from ..device import pick_device
    from .app import Limits, create_app

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                    max_pixels=args.max_pixels, pixel_budget=args.pixel_budget or 0,
                    threads=args.threads, queue=max(0, args.queue), batch=args.batch_size,
                    batch_wait_s=max(0.0, args.batch_wait_ms) / 1000,
                    max_models=args.max_models, read_timeout=args.read_timeout,
                    max_client_connections=args.max_client_connections)
    if pick_device(args.device).type == "cpu":  # threads x torch's intra-op threads must not
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // limits.threads))  # oversubscribe
    return create_app(model_names(args), device=args.device, size=args.size, limits=limits,
                      saturation=args.saturation, runtime=args.runtime,
                      upsample=args.upsample)


def _run(app: Any, sock: socket.socket) -> None:
    import uvicorn

    # the guard's protocol does the deadlines and connection caps (uvicorn's own concurrency
    # limit would answer plain text, and /healthz too)
    config = uvicorn.Config(app, log_level="warning", http=app.state.guard.protocol(), ws="none",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -c 'from retint.serve import main; main()' --port 0``: serve without the CLI."""
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
