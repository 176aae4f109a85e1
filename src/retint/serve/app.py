"""The FastAPI app behind ``retint serve``: page, API, errors and upload limits.

- Uploads are bounded before decoding: Content-Length is checked, then the bytes actually
  received are counted (413); the pixel count is read from the image header (413) before any
  pixel is decoded. Inference runs in the :mod:`.engine`, never on the event loop.
- Every served model has one short id (``models.model_id``): the ``--model`` ones first (the
  first is the default), then every bundled model not among them; all but the first load on
  first use.
- Every error, ours, FastAPI's or the server's, is ``{"error": message, "status": code}``.
- Colour hints (the ``hints`` form field, :mod:`retint.hints`) need a hint model: without
  ``model``, the first served one is used. Hinted requests run beside the engine (its batches
  carry no hints), as many at once as it has threads and up to its queue waiting (503 beyond).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hints import HintError, parse_hints
from ..inference import Colorizer
from ..io import FORMATS, SUFFIX_FOR_FORMAT, ImageReadError, image_header, read_rgb
from ..models import BUNDLED, SIZE_MULTIPLE, check_size, model_id, resolve_model_path, unique_ids
from .engine import ApiError, Engine, Job, Limits, Models, encode
from .guard import Guard

__all__ = ["ApiError", "Limits", "create_app", "encode"]

STATIC = Path(__file__).resolve().parent / "static"
SIZES = (64, 2048)  # accepted working sizes (multiples of 16 in this range)
SUGGESTED_SIZES = (128, 256, 384, 512, 768)
OUTPUT_FORMATS = sorted({f.lower() for f in FORMATS.values()})  # jpeg, png, webp, tiff, bmp
SOURCE_ALIASES = {"MPO": "JPEG"}  # phone JPEGs with a depth map come back as JPEG
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HOW_TO_SEND = ("send the photo as multipart/form-data with a `file` field "
               "(curl -F file=@photo.jpg http://HOST/api/colorize)")


@dataclass(frozen=True)
class ServedModel:
    id: str
    path: Path  # resolved weights; ids that share it share the loaded model and its batches
    card: dict[str, Any]
    bundled: bool

    @property
    def hints(self) -> bool:
        """Whether this model takes colour hints (a hint model)."""
        return self.card.get("arch") == "hinted"


class HintRuns:
    """Requests with colour hints, on threads beside the engine: ``threads`` at once, up to
    ``queue`` waiting for one (503 beyond)."""

    def __init__(self, threads: int, queue: int) -> None:
        self.slots, self.queue, self.waiting = asyncio.Semaphore(threads), queue, 0

    async def run(self, fn: Any, *args: Any) -> Any:
        if self.waiting >= self.queue and self.slots.locked():
            raise ApiError(503, f"server busy: {self.waiting} photos with hints are waiting; "
                                "try again shortly", {"Retry-After": "1"})
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self.slots.release()


@dataclass
class Service:
    """What the routes share: the models on offer, the engine, limits and the upload folder."""

    models: dict[str, ServedModel]
    engine: Engine
    guard: Guard
    limits: Limits
    size: int
    saturation: float
    upload_dir: Path
    hint_runs: HintRuns | None = None

    @property
    def default(self) -> ServedModel:
        return next(iter(self.models.values()))


def served_models(names: Sequence[str]) -> list[ServedModel]:
    """The ``--model`` ones in order, then the bundled ones not already among them (same id and
    weights); a bad path fails here, at start. Bundled files missing from an install are left
    out unless asked for by name."""
    given = [(name, resolve_model_path(name)) for name in names]
    taken = {(model_id(name), path) for name, path in given}
    bundled = []
    for name in BUNDLED:
        with suppress(OSError, ValueError, KeyError):  # default.json absent or unreadable
            bundled.append((name, resolve_model_path(name)))
    offered = [*given, *((b, p) for b, p in bundled if (b, p) not in taken and _exists(p))]
    out = []
    for mid, (name, path) in zip(unique_ids([model_id(n) for n, _ in offered]), offered,
                                 strict=True):
        if not _exists(path):
            raise FileNotFoundError(f"{path}: no such model (need it and its .json card)")
        card = json.loads(path.with_suffix(".json").read_text())
        out.append(ServedModel(mid, path, card, name in BUNDLED))
    return out


def _exists(weights: Path) -> bool:
    return weights.is_file() and weights.with_suffix(".json").is_file()


def create_app(models: Sequence[str] = ("default",), device: str = "auto", size: int = 256,
               limits: Limits | None = None, saturation: float = 1.0,
               runtime: str = "torch", upsample: str = "bilinear") -> FastAPI:
    """The app, with its default (first) model loaded now: bad weights fail at start, not at
    the first request. The other models load on first use."""
    limits = limits or Limits()
    size = _check_size(size)
    offered = served_models(models)

    def load(path: Path) -> Colorizer:
        return Colorizer(path, device=device, working_size=size, batch_size=limits.batch,
                         saturation=saturation, runtime=runtime, upsample=upsample)

    engine = Engine(Models(load, limits.max_models), limits)
    engine.models.get(offered[0].path, size)
    service = Service({m.id: m for m in offered}, engine,
                      Guard(limits.read_timeout, limits.max_client_connections,
                            limits.connections),
                      limits, size, saturation, Path(tempfile.mkdtemp(prefix="retint-serve-")),
                      HintRuns(limits.threads, limits.queue))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()
        shutil.rmtree(service.upload_dir, ignore_errors=True)

    app = FastAPI(title="retint", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Colorize black-and-white photos. All assets are local; the "
                              "docs at /docs are a small page that reads /openapi.json.")
    app.state.service = service
    app.state.engine = engine
    app.state.guard = service.guard
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    _add_page_routes(app, service)
    _add_api_routes(app, service)
    return app


# ---------------------------------------------------------------- middleware


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
            response = _error(413, message, {"Connection": "close"})
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


class SecurityHeaders:
    """A strict Content-Security-Policy and ``nosniff`` on every response."""

    HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


# ---------------------------------------------------------------- errors


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(HTTPException)  # Starlette's: routing (404, 405) and FastAPI's own
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, _http_message(request, err), err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(request, err.errors()))

    @app.exception_handler(Exception)
    async def crash(_: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(err).__name__}: {err}")


def _http_message(request: Request, err: HTTPException) -> str:
    where = f"{request.method} {request.url.path}"
    if err.status_code == 404:
        return f"not found: {where}"
    if err.status_code == 405:
        allowed = (err.headers or {}).get("Allow")
        return f"method not allowed: {where}" + (f" (allowed: {allowed})" if allowed else "")
    if err.status_code == 400 and request.url.path == "/api/colorize":
        return f"could not read the upload ({str(err.detail).rstrip('.')}): {HOW_TO_SEND}"
    return str(err.detail)


def _validation_message(request: Request, errors: Sequence[Any]) -> tuple[int, str]:
    """422 naming each bad field; a missing ``file`` says how to send one, as a 415 when the
    body is not multipart at all (a raw ``image/jpeg`` body, say)."""
    content_type = request.headers.get("content-type", "")
    missing_file = any(tuple(e["loc"][-1:]) == ("file",) and e["type"] == "missing"
                       for e in errors)
    if missing_file and not content_type.startswith("multipart/form-data"):
        got = content_type.split(";")[0] or "no Content-Type"
        return 415, f"expected multipart/form-data, got {got}: {HOW_TO_SEND}"
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e["loc"][1:]) or str(e["loc"][0])
        hint = f": {HOW_TO_SEND}" if where == "file" and e["type"] == "missing" else ""
        parts.append(f"{where}: {e['msg']}{hint}")
    return 422, "; ".join(parts)


# ---------------------------------------------------------------- routes


def _add_page_routes(app: FastAPI, service: Service) -> None:
    engine, limits = service.engine, service.limits

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        held = engine.models.held()
        return {"status": "ok", "waiting": engine.waiting, "busy_threads": engine.busy,
                "queue_limit": limits.queue, "threads": limits.threads,
                "recent_batch_sizes": engine.batches[-10:],
                "busy_pixels": engine.busy_pixels, "peak_busy_pixels": engine.peak_busy_pixels,
                "pixel_budget": limits.budget, "memory_trims": engine.trims,
                "models_loaded": [m.id for path in held for m in service.models.values()
                                  if m.path == path],
                "max_models": engine.models.limit, "connections": service.guard.open}


def _add_api_routes(app: FastAPI, service: Service) -> None:
    @app.get("/api/models", summary="Models, working sizes, formats and limits")
    async def list_models() -> dict[str, Any]:
        held = set(service.engine.models.held())
        return {
            "models": [{"id": m.id, "name": _display_name(m, service.saturation),
                        "arch": m.card.get("arch"), "parameters": m.card.get("parameters"),
                        "default": m is service.default, "bundled": m.bundled,
                        "loaded": m.path in held, "hints": m.hints}
                       for m in service.models.values()],
            "sizes": {"default": service.size, "min": SIZES[0], "max": SIZES[1],
                      "multiple": SIZE_MULTIPLE,
                      "suggested": sorted({*SUGGESTED_SIZES, service.size})},
            "formats": OUTPUT_FORMATS,
            "limits": {"max_upload_bytes": service.limits.max_upload_bytes,
                       "max_pixels": service.limits.max_pixels},
        }

    @app.post(
        "/api/colorize", summary="Colorize one photo",
        response_class=Response,
        responses={200: {"content": {_media_type(f.upper()): {} for f in OUTPUT_FORMATS},
                         "description": "the colorized photo, same size as the input"},
                   408: {"description": "the upload stalled past the read deadline"},
                   413: {"description": "upload or pixel count over the limit"},
                   415: {"description": "not an image, a corrupt one, or not multipart"},
                   422: {"description": "bad option"},
                   429: {"description": "too many connections from this address"},
                   503: {"description": "queue or connections full"}})
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
        form_hints: Annotated[str | None, Form(
            alias="hints", description='colour hints, a JSON list of points [{"x": 0.42, '
            '"y": 0.31, "colour": "#a33b2c"}] (x, y relative 0-1, colour hex sRGB, optional '
            "radius relative to the long side); they need a hint model (\"hints\": true in "
            "/api/models), the first served one if no model is given")] = None,
    ) -> Response:
        return await _colorize(service, file, _pick(form_model, model), _pick(form_size, size),
                               _pick(form_format, format), _pick(form_quality, quality),
                               form_hints)


def _model_for(service: Service, model: str | None, hinted: bool) -> ServedModel:
    """The asked model, or the default; with hints and no model asked, the first hint model."""
    if model is None and hinted:
        chosen = next((m for m in service.models.values() if m.hints), None)
        if chosen is None:
            raise ApiError(422, "hints: colour hints need a hint model, and none is served "
                                "(start retint serve with --model naming a hint model)")
        return chosen
    chosen = service.models.get(model or service.default.id)
    if chosen is None:
        raise ApiError(422, f"model: unknown model {model!r} "
                            f"(choose from {', '.join(service.models)})")
    if hinted and not chosen.hints:
        takers = [m.id for m in service.models.values() if m.hints]
        raise ApiError(422, f"hints: model {chosen.id!r} does not take colour hints ("
                            + (f"hint models: {', '.join(takers)})" if takers
                               else "no hint model is served)"))
    return chosen


def _hinted_result(service: Service, chosen: ServedModel, size: int, path: Path, name: str,
                   hints: list, fmt: str, quality: int) -> bytes:
    """Decode, colorize with hints, encode: one request, on a thread."""
    try:
        rgb = read_rgb(path, max_pixels=service.limits.max_pixels)
        colorizer = service.engine.models.get(chosen.path, size)
        return encode(colorizer.colorize(rgb, hints), fmt, quality)
    except ImageReadError as err:
        raise ApiError(415, str(err).replace(str(path), name)) from None
    except MemoryError:
        raise ApiError(503, "not enough memory for this photo now") from None


async def _colorize(service: Service, file: UploadFile, model: str | None, size: int | None,
                    fmt: str | None, quality: int | None, hints_text: str | None = None
                    ) -> Response:
    """Check the options, spool the upload to disk, queue it, answer with the encoded result."""
    t0 = time.perf_counter()
    try:
        hints = parse_hints(hints_text, "hints")
    except HintError as err:
        raise ApiError(422, str(err)) from None
    chosen = _model_for(service, model, bool(hints))
    size = _check_size(service.size if size is None else size)
    out_fmt = _output_format(fmt) if fmt else None
    quality = 92 if quality is None else quality
    if not 1 <= quality <= 100:
        raise ApiError(422, "quality: must be 1-100")
    name = Path(file.filename or "upload").name
    fd, tmp = tempfile.mkstemp(dir=service.upload_dir)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, file.file, out, 1 << 20)
        await file.close()
        src_fmt, pixels = _sniff(path, name, service.limits.max_pixels)
        out_fmt = out_fmt or src_fmt
        if hints:
            body = await service.hint_runs.run(_hinted_result, service, chosen, size, path, name,
                                               hints, out_fmt, quality)
        else:
            loop = asyncio.get_running_loop()
            job = Job((chosen.path, size), path, name, pixels, out_fmt, quality, loop,
                      loop.create_future())
            service.engine.submit(job)
            body = await job.future
    finally:
        with suppress(OSError):
            path.unlink()
    stem = Path(name).stem or "photo"
    suffix = SUFFIX_FOR_FORMAT[out_fmt.lower()]
    return Response(body, media_type=_media_type(out_fmt), headers={
        "Content-Disposition": f'inline; filename="{_ascii(stem)}-retint{suffix}"',
        "X-Retint-Model": chosen.id, "X-Retint-Size": str(size),
        "X-Retint-Hints": str(len(hints)),
        "X-Retint-Seconds": f"{time.perf_counter() - t0:.3f}"})


# ---------------------------------------------------------------- helpers


def _pick(form: Any, query: Any) -> Any:
    """A form field wins over the query string; either may be absent."""
    return form if form is not None else query


def _display_name(m: ServedModel, saturation: float) -> str:
    base = m.card.get("name") or model_id(m.path)
    return base if saturation == 1.0 else f"{base} (saturation {saturation:g})"


def _check_size(size: int) -> int:
    try:
        check_size("size", size)
    except ValueError as err:
        raise ApiError(422, str(err)) from None
    if not SIZES[0] <= size <= SIZES[1]:
        raise ApiError(422, f"size: must be from {SIZES[0]} to {SIZES[1]}, got {size}")
    return size


def _output_format(name: str) -> str:
    """A format as users name it (jpeg, jpg, png, webp, tiff, tif, bmp) -> Pillow's name."""
    suffix = SUFFIX_FOR_FORMAT.get(name.lower())
    if suffix is None:
        raise ApiError(422, f"format: unknown format {name!r} "
                            f"(choose from {', '.join(OUTPUT_FORMATS)})")
    return FORMATS[suffix]


def _media_type(fmt: str) -> str:
    Image.init()
    return Image.MIME.get(fmt, f"image/{fmt.lower()}")


def _sniff(path: Path, name: str, max_pixels: int) -> tuple[str, int]:
    """Output format (the input's, else PNG) and pixel count from the header only: 415 for
    non-images, 413 for huge ones."""
    if path.stat().st_size == 0:
        raise ApiError(415, f"{name}: empty file")
    try:
        fmt, w, h = image_header(path)
    except Exception as err:
        raise ApiError(415, f"{name}: not an image (expected JPEG, PNG, WebP, TIFF, BMP…)") from err
    if w * h > max_pixels:
        raise ApiError(413, f"{name}: image too large ({w}×{h} = {w * h:,} pixels, "
                            f"limit {max_pixels:,})")
    fmt = SOURCE_ALIASES.get(fmt, fmt)
    return (fmt if fmt in FORMATS.values() else "PNG"), w * h


def _ascii(text: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                   for c in text)
