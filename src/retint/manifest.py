"""The job manifest of ``retint colorize --ray``: what became of every input, so that a rerun
of the same command does only what is not done.

A JSON Lines file. Its first line is a header, ``{"retint_manifest": 1, "started": T}`` (T:
Unix time the job first started), then one row per input::

    {"input": "scans/a.tif", "output": "out/a.tif", "status": "done", "error": "", "bytes": 81234}

``status`` is ``done``, ``failed`` or ``skipped`` (an existing output left alone by
``--skip-existing``). While a job runs, the driver appends each finished batch's rows and
flushes them to disk, so a killed job loses at most the batches in flight; a torn last line is
ignored. At the end the file is rewritten (atomically) with one row per input, its latest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from .io import atomic_path

FIELDS = ("input", "output", "status", "error", "bytes")
STATUSES = ("done", "failed", "skipped")
DEFAULT_NAME = "retint-manifest.jsonl"


class ManifestError(ValueError):
    """The manifest path holds something that is not a retint manifest."""


class Manifest:
    """Rows by input (the latest wins), the job's start time, and an append handle."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self.started = time.time()
        if self.path.exists():
            self._read()
        self._file = None

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if not isinstance(header, dict) or "retint_manifest" not in header:
            raise ManifestError(f"{self.path} exists and is not a retint manifest (give "
                                "another --manifest path)")
        self.started = float(header["started"])
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # torn by a killed job: that batch is redone
                continue
            if isinstance(row, dict) and row.get("status") in STATUSES and "input" in row:
                self.rows[row["input"]] = row

    def done(self) -> set[str]:
        return {k for k, r in self.rows.items() if r["status"] == "done"}

    def append(self, rows: Iterable[dict]) -> None:
        """Add rows and put them on disk before returning."""
        rows = list(rows)
        if self._file is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            if new:
                self._file.write(json.dumps({"retint_manifest": 1, "started": self.started})
                                 + "\n")
        for row in rows:
            self.rows[row["input"]] = row
            self._file.write(json.dumps({k: row[k] for k in FIELDS}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def compact(self) -> None:
        """Rewrite the file with one row per input (atomically: a reader sees the old file or
        the new one)."""
        self.close()
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"retint_manifest": 1, "started": self.started}) + "\n")
            for row in self.rows.values():
                f.write(json.dumps({k: row[k] for k in FIELDS}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for row in self.rows.values():
            out[row["status"]] += 1
        return out
