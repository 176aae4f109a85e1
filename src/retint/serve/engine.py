"""The inference engine behind ``retint serve``: threads, one bounded queue, batches, models.

- Inference never runs on the event loop: threads take jobs from one bounded queue, so the page
  and ``/healthz`` stay responsive under load, and a full queue is a quick 503, never an
  ever-growing backlog.
- Queued jobs hold only their compressed upload (on disk). A thread decodes and colorizes a batch
  only while the pixels being worked on, across threads, stay within ``pixel_budget`` (a photo
  alone always runs), so peak memory follows the pixels in flight, not the number of requests.
- A thread that takes a job also takes up to ``batch - 1`` other waiting jobs of the same weights
  and working size (waiting ``batch_wait_s`` for more) and runs them through one
  ``Colorizer.colorize_many`` call; big photos are not batched (``batch_pixels``).
- Models load on first use and at most ``max_models`` stay held, the least recently used dropped;
  the working sizes of a model share its weights (``Colorizer.resized``).
- When the queue drains after a burst, memory goes back to the system (``gc`` + ``malloc_trim``).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import io
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference import Colorizer
from ..io import FORMATS, SUFFIX_FOR_FORMAT, ImageReadError, encode_image, read_image


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    threads: int = 1
    queue: int = 32
    batch: int = 4
    batch_wait_s: float = 0.002
    batch_pixels: int = 4_000_000  # photos beyond this run alone: batches stay small in memory
    pixel_budget: int = 0  # most pixels decoded and colorized at once (0: max_pixels)
    max_models: int = 3
    read_timeout: float = 30.0
    max_client_connections: int = 64
    max_connections: int = 0  # 0: derived from the queue, threads and batch

    @property
    def budget(self) -> int:
        return self.pixel_budget or self.max_pixels

    @property
    def connections(self) -> int:
        return self.max_connections or 4 * (self.queue + self.threads * self.batch) + 16


class ApiError(ValueError):
    """An error answered as ``{"error": message, "status": code}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Job:
    key: tuple[Path, int]  # (weights, working size): jobs with one key can share a batch
    path: Path
    name: str
    pixels: int
    fmt: str  # Pillow format name
    quality: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if not self.future.done():  # the client may have gone
                (self.future.set_exception(error) if error else self.future.set_result(result))
        with suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(settle)


class Models:
    """Colorizers loaded on first use; at most ``limit`` weights held, least recently used out."""

    def __init__(self, load: Callable[[Path], Colorizer], limit: int) -> None:
        self._load, self.limit = load, max(1, limit)
        self._held: OrderedDict[Path, dict[int, Colorizer]] = OrderedDict()
        self._lock = threading.Lock()  # the table
        self._loading = threading.Lock()  # one load at a time; the next asker finds it loaded

    def get(self, path: Path, size: int) -> Colorizer:
        """The Colorizer for these weights at this working size (sizes share the weights)."""
        sizes = self._lookup(path)
        if sizes is None:
            with self._loading:
                sizes = self._lookup(path)
                if sizes is None:
                    base = self._load(path)
                    sizes = {base.working_size: base}
                    with self._lock:
                        self._held[path] = sizes
                        while len(self._held) > self.limit:
                            self._held.popitem(last=False)
        with self._lock:
            if size not in sizes:
                sizes[size] = next(iter(sizes.values())).resized(size)
            return sizes[size]

    def _lookup(self, path: Path) -> dict[int, Colorizer] | None:
        with self._lock:
            sizes = self._held.get(path)
            if sizes is not None:
                self._held.move_to_end(path)
            return sizes

    def held(self) -> list[Path]:
        """Weights in memory, least recently used first."""
        with self._lock:
            return list(self._held)


class Engine:
    """Threads over one bounded queue; each turn runs a same-key batch within the pixel budget."""

    def __init__(self, models: Models, limits: Limits) -> None:
        self.models = models
        self.limits = limits
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.busy = 0
        self.busy_pixels = 0
        self.peak_busy_pixels = 0
        self.trims = 0
        self._worked = 0  # pixels colorized since memory was last given back
        self.batches: list[int] = []  # recent batch sizes (for /healthz)
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"retint-{i}")
                         for i in range(limits.threads)]

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

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._pending) >= self.limits.queue and not self._idle_thread():
                raise ApiError(503, f"server busy: {len(self._pending)} photos are waiting; "
                                    "try again shortly", {"Retry-After": "1"})
            self._pending.append(job)
            self._cond.notify_all()

    def _idle_thread(self) -> bool:
        return self.busy + len(self._pending) < self.limits.threads

    def _fits(self, pixels: int) -> bool:
        return self.busy_pixels == 0 or self.busy_pixels + pixels <= self.limits.budget

    def _take(self) -> list[Job] | None:
        """The oldest job plus waiting jobs of the same key, up to the batch and pixel limits."""
        lim = self.limits
        with self._cond:
            while not self._stop and not (self._pending and self._fits(self._pending[0].pixels)):
                self._cond.wait()
            if self._stop:
                return None
            first = self._pending.popleft()
            batch, pixels = [first], first.pixels
            self.busy += 1
            self._hold(first.pixels)  # at once: other threads see it while this one waits
            deadline = time.monotonic() + lim.batch_wait_s
            while len(batch) < lim.batch and pixels < lim.batch_pixels:
                match = next((j for j in self._pending if j.key == first.key
                              and pixels + j.pixels <= lim.batch_pixels
                              and self.busy_pixels + j.pixels <= lim.budget), None)
                if match is not None:
                    self._pending.remove(match)
                    batch.append(match)
                    pixels += match.pixels
                    self._hold(match.pixels)
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            return batch

    def _hold(self, pixels: int) -> None:
        self.busy_pixels += pixels
        self.peak_busy_pixels = max(self.peak_busy_pixels, self.busy_pixels)

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
                    self.busy_pixels -= sum(j.pixels for j in batch)
                    self.batches = [*self.batches[-99:], len(batch)]
                    self._cond.notify_all()
                    self._worked += sum(j.pixels for j in batch)
                    drained = self.busy == 0 and not self._pending
                del batch
                if drained:
                    self._give_back()

    def _give_back(self) -> None:
        """Return freed memory to the system once the queue has drained after a burst (a few
        megapixels of work: a collection holds the GIL for tens of milliseconds)."""
        with self._cond:
            if self._worked < self.limits.batch_pixels or self.busy or self._pending:
                return
            self._worked = 0
        release_memory()
        self.trims += 1

    def _process(self, batch: list[Job]) -> None:
        images, ready = [], []
        for job in batch:
            try:
                images.append(read_image(job.path, max_pixels=self.limits.max_pixels))
                ready.append(job)
            except ImageReadError as err:
                job.finish(error=ApiError(415, str(err).replace(str(job.path), job.name)))
            except MemoryError:
                job.finish(error=ApiError(503, "not enough memory for this photo now"))
        if not ready:
            return
        try:
            colorizer = self.models.get(*batch[0].key)
        except MemoryError:
            raise ApiError(503, "not enough memory to load this model now") from None
        except Exception as err:
            raise ApiError(500, f"the model could not be loaded: {err}") from err
        try:
            results = colorizer.colorize_many(images)
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
    """Encode in memory, exactly as ``write_image`` on disk; ``fmt`` as users name it (png,
    jpg...) or as Pillow does (PNG, JPEG...)."""
    buf = io.BytesIO()
    encode_image(buf, rgb, FORMATS[SUFFIX_FOR_FORMAT[fmt.lower()]], quality)
    return buf.getvalue()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Collect cycles, hand freed heap pages back to the OS, and empty torch's GPU cache."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
