"""The FastAPI app behind ``retint serve``: page, API, limits and a batching inference engine.

Why it is shaped this way:

- Inference never runs on the event loop: worker threads take jobs from one bounded queue, so
  the page and ``/healthz`` stay responsive under load, and a full queue is a quick 503, never
  an ever-growing backlog.
- Uploads are bounded before decoding: Content-Length is checked, then the bytes actually
  received are counted (413); the pixel count is read from the image header (413) before any
  pixel is decoded. Queued jobs hold only their compressed upload (on disk); a worker decodes
  its batch, so decoded memory is bounded by ``workers x max(max_pixels, batch_pixels)``.
- A worker that takes a job also takes up to ``batch - 1`` other waiting jobs of the same model
  and working size (waiting ``batch_wait_s`` for more) and runs them through one
  ``Colorizer.colorize_many`` call; big photos are not batched (``batch_pixels``).
- One ``Colorizer`` per model and working size, cached; the sizes share the model's weights.
"""

from __future__ import annotations

import asyncio
import copy
import io
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inference import MULTIPLE, Colorizer
from ..io import ImageReadError, encode_image, image_header, read_rgb

STATIC = Path(__file__).resolve().parent / "static"
SIZES = (64, 2048)  # accepted working sizes (multiples of 16 in this range)
SUGGESTED_SIZES = (128, 256, 384, 512, 768)
# output format -> (Pillow format, media type, suffix)
FORMATS: dict[str, tuple[str, str, str]] = {
    "jpeg": ("JPEG", "image/jpeg", ".jpg"), "png": ("PNG", "image/png", ".png"),
    "webp": ("WEBP", "image/webp", ".webp"), "tiff": ("TIFF", "image/tiff", ".tif"),
    "bmp": ("BMP", "image/bmp", ".bmp"),
}
ALIASES = {"jpg": "jpeg", "tif": "tiff", "mpo": "jpeg"}  # MPO: phone JPEGs with a depth map
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    workers: int = 1
    queue: int = 32
    batch: int = 8
    batch_wait_s: float = 0.002
    batch_pixels: int = 4_000_000  # photos beyond this run alone: batches stay small in memory


class ApiError(ValueError):
    """An error answered as ``{"error": message, "status": code}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# ---------------------------------------------------------------- engine


@dataclass
class Job:
    key: tuple[str, int]
    path: Path
    name: str
    pixels: int
    fmt: str
    quality: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if not self.future.done():  # the client may have gone
                (self.future.set_exception(error) if error else self.future.set_result(result))
        with suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(settle)


class Engine:
    """Worker threads over one bounded queue; each turn runs a same-key batch."""

    def __init__(self, colorizers: dict[str, Colorizer], limits: Limits) -> None:
        self.models = colorizers
        self.limits = limits
        self._cache: dict[tuple[str, int], Colorizer] = {}
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.busy = 0
        self.batches: list[int] = []  # recent batch sizes (for /healthz)
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"retint-{i}")
                         for i in range(limits.workers)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            while self._pending:
                self._pending.popleft().finish(error=ApiError(503, "server is shutting down"))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def colorizer(self, model: str, size: int) -> Colorizer:
        """The cached Colorizer for a model and size; sizes share the model (a shallow copy)."""
        key = (model, size)
        if key not in self._cache:
            base = self.models[model]
            if base.working_size == size:
                self._cache[key] = base
            else:
                c = copy.copy(base)
                c.working_size = size
                self._cache[key] = c
        return self._cache[key]

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._pending) >= self.limits.queue and not self._idle_worker():
                raise ApiError(503, f"server busy: {len(self._pending)} photos are waiting; "
                                    "try again shortly", {"Retry-After": "1"})
            self._pending.append(job)
            self._cond.notify()

    def _idle_worker(self) -> bool:
        return self.busy + len(self._pending) < self.limits.workers

    def _take(self) -> list[Job] | None:
        """The oldest job plus waiting jobs of the same key, up to the batch and pixel limits."""
        lim = self.limits
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._pending.popleft()
            batch, pixels = [first], first.pixels
            deadline = time.monotonic() + lim.batch_wait_s
            while len(batch) < lim.batch and pixels < lim.batch_pixels:
                match = next((j for j in self._pending if j.key == first.key
                              and pixels + j.pixels <= lim.batch_pixels), None)
                if match is not None:
                    self._pending.remove(match)
                    batch.append(match)
                    pixels += match.pixels
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            self.busy += 1
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._process(batch)
            except BaseException as err:  # noqa: BLE001 - every job must get an answer
                for job in batch:
                    job.finish(error=err)
            finally:
                with self._cond:
                    self.busy -= 1
                    self.batches = [*self.batches[-99:], len(batch)]

    def _process(self, batch: list[Job]) -> None:
        images, ready = [], []
        for job in batch:
            try:
                images.append(read_rgb(job.path, max_pixels=self.limits.max_pixels))
                ready.append(job)
            except ImageReadError as err:
                job.finish(error=ApiError(415, str(err).replace(str(job.path), job.name)))
            except MemoryError:
                job.finish(error=ApiError(503, "not enough memory for this photo now"))
        if not ready:
            return
        try:
            results = self.colorizer(*batch[0].key).colorize_many(images)
        except (MemoryError, RuntimeError) as err:  # torch reports allocation failures so
            if not isinstance(err, MemoryError) and "memory" not in str(err).lower():
                raise
            for job in ready:
                job.finish(error=ApiError(503, "not enough memory for this batch now"))
            return
        del images
        for job, rgb in zip(ready, results, strict=True):
            job.finish(result=encode(rgb, job.fmt, job.quality))


def encode(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode in memory, exactly as ``write_image`` encodes on disk."""
    buf = io.BytesIO()
    encode_image(buf, rgb, FORMATS[fmt][0], quality)
    return buf.getvalue()


# ---------------------------------------------------------------- body limit


class BodyLimit:
    """413 for a request body over the limit: from Content-Length at once, else by counting."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"upload too large (limit {self.max_bytes / 2**20:g} MB)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"error": message, "status": 413}, 413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, message)  # FastAPI re-raises it from form parsing
            return msg

        await self.app(scope, counted, send)


# ---------------------------------------------------------------- app


def _model_ids(models: Sequence[str]) -> list[str]:
    """Short, unique ids: bundled names as given, paths by their file stem."""
    ids: list[str] = []
    for m in models:
        base = m if m in ("default", "teacher", "student") else Path(m).name.split(".safet")[0]
        base = base.removesuffix(".json")
        name, n = base, 2
        while name in ids:
            name, n = f"{base}-{n}", n + 1
        ids.append(name)
    return ids


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status, headers=headers)


def create_app(models: Sequence[str] = ("default",), device: str = "auto", size: int = 256,
               limits: Limits | None = None, saturation: float = 1.0) -> FastAPI:
    """Load every model now (a bad path fails at start, not at the first request)."""
    limits = limits or Limits()
    _check_size(size)
    colorizers = {mid: Colorizer(m, device=device, working_size=size, batch_size=limits.batch,
                                 saturation=saturation)
                  for mid, m in zip(_model_ids(models), models, strict=True)}
    engine = Engine(colorizers, limits)
    upload_dir = Path(tempfile.mkdtemp(prefix="retint-serve-"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()
        shutil.rmtree(upload_dir, ignore_errors=True)

    app = FastAPI(title="retint", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Colorize black-and-white photos. All assets are local; the "
                              "docs at /docs are a small page that reads /openapi.json.")
    app.state.engine = engine
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                 for e in err.errors()]
        return _error(422, "; ".join(parts))

    @app.exception_handler(Exception)
    async def crash(_: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "waiting": engine.waiting, "busy_workers": engine.busy,
                "queue_limit": limits.queue, "workers": limits.workers,
                "recent_batch_sizes": engine.batches[-10:]}

    @app.get("/api/models", summary="Models, working sizes, formats and limits")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [{"id": mid, "name": c.name, "arch": c.card.get("arch"),
                        "parameters": c.card.get("parameters"), "default": i == 0}
                       for i, (mid, c) in enumerate(colorizers.items())],
            "sizes": {"default": size, "min": SIZES[0], "max": SIZES[1], "multiple": MULTIPLE,
                      "suggested": sorted({*SUGGESTED_SIZES, size})},
            "formats": sorted(FORMATS),
            "limits": {"max_upload_bytes": limits.max_upload_bytes,
                       "max_pixels": limits.max_pixels},
        }

    @app.post(
        "/api/colorize", summary="Colorize one photo",
        response_class=Response,
        responses={200: {"content": {f[1]: {} for f in FORMATS.values()},
                         "description": "the colorized photo, same size as the input"},
                   413: {"description": "upload or pixel count over the limit"},
                   415: {"description": "not an image, or a corrupt one"},
                   422: {"description": "bad option"}, 503: {"description": "queue full"}})
    async def colorize(
        file: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, TIFF, BMP…)")],
        model: Annotated[str | None, Query(description="a model id from /api/models")] = None,
        size: Annotated[int | None, Query(description="working size, a multiple of 16")] = None,
        format: Annotated[str | None, Query(description="output format (default: input's)")] = None,
        quality: Annotated[int | None, Query(description="JPEG/WebP quality 1-100 (92)")] = None,
        form_model: Annotated[str | None, Form(alias="model")] = None,
        form_size: Annotated[int | None, Form(alias="size")] = None,
        form_format: Annotated[str | None, Form(alias="format")] = None,
        form_quality: Annotated[int | None, Form(alias="quality")] = None,
    ) -> Response:
        t0 = time.perf_counter()
        model = _pick(form_model, model, next(iter(colorizers)))
        size = _pick(form_size, size, engine.models[next(iter(colorizers))].working_size)
        fmt = _pick(form_format, format, "").lower()
        quality = _pick(form_quality, quality, 92)
        if model not in colorizers:
            raise ApiError(422, f"model: unknown model {model!r} "
                                f"(choose from {', '.join(colorizers)})")
        _check_size(size)
        fmt = ALIASES.get(fmt, fmt)
        if fmt and fmt not in FORMATS:
            raise ApiError(422, f"format: unknown format {fmt!r} "
                                f"(choose from {', '.join(sorted(FORMATS))})")
        if not 1 <= quality <= 100:
            raise ApiError(422, "quality: must be 1-100")
        name = Path(file.filename or "upload").name
        fd, tmp = tempfile.mkstemp(dir=upload_dir)
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                await asyncio.to_thread(shutil.copyfileobj, file.file, out, 1 << 20)
            await file.close()
            src_fmt, pixels = _sniff(path, name, limits.max_pixels)
            fmt = fmt or (src_fmt if src_fmt in FORMATS else "png")
            loop = asyncio.get_running_loop()
            job = Job((model, size), path, name, pixels, fmt, quality, loop, loop.create_future())
            engine.submit(job)
            body = await job.future
        finally:
            with suppress(OSError):
                path.unlink()
        stem = Path(name).stem or "photo"
        return Response(body, media_type=FORMATS[fmt][1], headers={
            "Content-Disposition": f'inline; filename="{_ascii(stem)}-retint{FORMATS[fmt][2]}"',
            "X-Retint-Model": model, "X-Retint-Size": str(size),
            "X-Retint-Seconds": f"{time.perf_counter() - t0:.3f}"})

    return app


def _pick(form: Any, query: Any, default: Any) -> Any:
    """A form field wins over the query string; either may be absent."""
    return form if form is not None else query if query is not None else default


def _check_size(size: int) -> None:
    if not SIZES[0] <= size <= SIZES[1] or size % MULTIPLE:
        raise ApiError(422, f"size: must be a multiple of {MULTIPLE} from {SIZES[0]} to "
                            f"{SIZES[1]}, got {size}")


def _sniff(path: Path, name: str, max_pixels: int) -> tuple[str, int]:
    """Format and pixel count from the header only: 415 for non-images, 413 for huge ones."""
    if path.stat().st_size == 0:
        raise ApiError(415, f"{name}: empty file")
    try:
        fmt, w, h = image_header(path)
        fmt = fmt.lower()
    except Exception as err:
        raise ApiError(415, f"{name}: not an image (expected JPEG, PNG, WebP, TIFF, BMP…)") from err
    if w * h > max_pixels:
        raise ApiError(413, f"{name}: image too large ({w}×{h} = {w * h:,} pixels, "
                            f"limit {max_pixels:,})")
    return ALIASES.get(fmt, fmt), w * h


def _ascii(text: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                   for c in text)
