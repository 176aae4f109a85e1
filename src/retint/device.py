"""Where models run: device choice and a human description of the hardware.

At the bottom of the layers (beside colour maths and I/O): inference, training, serving and the
benchmark all pick and describe their device here, so colorizing a photo never imports the
training stack.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from collections.abc import Iterator
from typing import Any

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device must exist here."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") \
                from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} is not available: this torch sees no CUDA GPU")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {name!r} is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools() -> None:  # a forked child has the pools but not their threads
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def thread_pool(purpose: str, workers: int, initializer: Any = None) -> Any:
    """The process's pool of ``workers`` threads for ``purpose`` (made once, kept: starting
    threads per photo or per frame would cost more than some of the work they do)."""
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        pool = _POOLS.get((purpose, workers))
        if pool is None:
            pool = _POOLS[purpose, workers] = ThreadPoolExecutor(
                workers, thread_name_prefix=f"retint-{purpose}", initializer=initializer)
        return pool


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def send(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``; to a GPU through pinned memory without waiting, so
    that handing a step's small tensors over does not stall the queue of work already there."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 units (AVX-512 BF16 or AMX), where bf16 autocast pays."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_device(device: torch.device) -> str:
    """A human name for where a model ran, for model cards and benchmark reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------- threads of small torch ops


@functools.cache
def _openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


_PIN = threading.Lock()


def inline_ops() -> None:
    """Run this thread's torch ops inline from now on, not through torch's intra-op pool.

    Why: the full-resolution colour maths is many small ops on bands of rows. Handed to the
    shared pool from several threads at once, they oversubscribe the cores (measured in
    docs/results.md, the fast full-resolution path: ``scripts/compose_threads.py``).

    With ATen's OpenMP backend a thread count is each thread's own, but ``set_num_threads``
    also sets the default that threads get at their first torch op; a short-lived thread sets
    that default back, so only this thread changes. With a process-wide pool, nothing is done.
    """
    if not _openmp():
        return
    with _PIN:
        before = torch.get_num_threads()
        if before == 1:
            return
        torch.set_num_threads(1)
        restore = threading.Thread(target=torch.set_num_threads, args=(before,))
        restore.start()
        restore.join()


@contextlib.contextmanager
def torch_ops_inline() -> Iterator[None]:
    """:func:`inline_ops` for the calling thread, for the duration (its count restored after)."""
    before = torch.get_num_threads()
    inline_ops()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
