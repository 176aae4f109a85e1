"""Colorizing many photos: which output each input gets, and the batch that writes them.

The rules that keep a user's files safe live here, before any model is loaded: an output never
lands on an input or on another input's output, an existing output is replaced only with
``overwrite`` (or left alone with ``skip_existing``), the output folder must be writable, and a
bad file is reported while the batch goes on. ``retint colorize`` is a thin layer over
:func:`plan_outputs` and :func:`colorize_files`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, SUFFIX_FOR_FORMAT, find_images


class UsageError(ValueError):
    """The command line asks for something impossible; found before any model loads."""


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OutputRule:
    """How an input's output path is made: under ``folder`` keeping the layout (or beside the
    input when ``folder`` is None), the stem followed by ``suffix``, then the extension of
    ``fmt`` (default: the input's), the input's own extension kept before it with
    ``keep_extension`` (``a.jpg`` -> ``a.jpg.png``)."""
    folder: Path | None
    fmt: str | None = None
    suffix: str = ""
    keep_extension: bool = False

    def output(self, src: Path, rel: Path) -> Path:
        ext = SUFFIX_FOR_FORMAT[self.fmt] if self.fmt else src.suffix.lower()
        stem = rel.name if self.keep_extension else rel.stem
        name = f"{stem}{self.suffix}{ext}"
        return (self.folder / rel).with_name(name) if self.folder else src.with_name(name)


def _base_of(item: str) -> Path:
    """The folder an input's layout is kept relative to: the folder itself, a file's parent,
    or a glob pattern's part before its first wildcard."""
    path = Path(item)
    if path.is_dir():
        return path
    if any(c in item for c in "*?["):
        prefix = []
        for part in path.parts:
            if any(c in part for c in "*?["):
                break
            prefix.append(part)
        return Path(*prefix) if prefix else Path(".")
    return path.parent


def plan_outputs(inputs: Sequence[str], out_dir: Path | OutputRule,
                 fmt: str | None = None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(input, output) pairs, and the inputs refused with why.

    Folders and globs keep their inner layout under the output folder. An output that would
    land on any input, or on another input's output, is refused: a batch never loses a file.
    """
    rule = out_dir if isinstance(out_dir, OutputRule) else OutputRule(out_dir, fmt)
    out_resolved = rule.folder.resolve() if rule.folder else None
    sources: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in inputs:
        base = _base_of(item)
        nested_out = out_resolved is not None and base.resolve() in out_resolved.parents
        for src in find_images([item]):
            real = src.resolve()
            if real in seen or (nested_out and out_resolved in real.parents):
                continue  # named twice, or an earlier run's output inside the input folder
            seen.add(real)
            try:  # the path as listed, so a symlink pointing elsewhere keeps its place
                rel = src.relative_to(base)
            except ValueError:
                rel = Path(src.name)
            sources.append((src, rule.output(src, rel)))
    return _refuse_collisions(sources, seen)


def _refuse_collisions(sources: list[tuple[Path, Path]], inputs: set[Path]
                       ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    pairs, refused = [], []
    claimed: dict[Path, Path] = {}
    for src, dst in sources:
        target = dst.resolve()
        if target in inputs:
            refused.append((src, f"{dst} would overwrite an input"))
        elif target in claimed:
            refused.append((src, f"{dst} is already the output of {claimed[target]} (use "
                                 "--keep-extension or --suffix to tell them apart)"))
        else:
            claimed[target] = src
            pairs.append((src, dst))
    return pairs, refused


def output_rule(inputs: Sequence[str], output: str | None, fmt: str | None, suffix: str,
                keep_extension: bool) -> tuple[OutputRule, Path | None]:
    """The rule for ``retint colorize``'s ``-o``/``--suffix``, and the one output file when
    a single photo is given an output path with an image extension (``-o new.jpg``)."""
    if output is None:
        if not suffix:
            raise UsageError("give an output folder (-o DIR) or --suffix TEXT to write each "
                             "result beside its photo")
        return OutputRule(None, fmt, suffix, keep_extension), None
    out = Path(output)
    single = (len(inputs) == 1 and Path(inputs[0]).is_file()
              and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir())
    if single:
        if fmt and SUFFIX_FOR_FORMAT[fmt] != SUFFIX_FOR_FORMAT.get(out.suffix.lower()[1:]):
            raise UsageError(f"--format {fmt} contradicts the output name {out}")
        return OutputRule(out.parent), out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder (for one photo, give an output "
                         "name with an image extension, such as new.jpg)")
    return OutputRule(out, fmt, suffix, keep_extension), None


def check_writable(folders: Sequence[Path]) -> None:
    """Each folder (or the nearest existing parent it would be made in) takes a new file:
    a read-only destination fails at once, not after every photo was computed."""
    for folder in dict.fromkeys(folders):
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"cannot write into {folder}: {probe} is not a folder")
        try:
            fd, name = tempfile.mkstemp(dir=probe, prefix=".retint-probe-")
        except OSError as err:
            raise UsageError(f"cannot write into {folder}: "
                             f"{err.strerror or err} ({probe})") from None
        os.close(fd)
        os.unlink(name)


def progress_wanted(quiet: bool) -> bool:
    """A bar only for a person at a terminal: in a log it is carriage-return junk."""
    return not quiet and sys.stderr.isatty()


def colorize_files(colorizer, pairs: Sequence[tuple[Path, Path]], *, skip_existing: bool = False,
                   overwrite: bool = True, quality: int = 95, progress: bool = True,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> BatchReport:
    """Colorize each pair in batches; a bad file is reported and the batch goes on. An output
    that exists is skipped with ``skip_existing``, else replaced only with ``overwrite``."""
    from .io import read_image, write_image

    report = BatchReport()
    todo = []
    for src, dst in pairs:
        if dst.exists() and skip_existing:
            report.skipped.append(src)
        elif dst.exists() and not overwrite:
            report.failed.append((src, f"{dst} exists (use --overwrite or --skip-existing)"))
        else:
            todo.append((src, dst))
    bar = tqdm(total=len(todo), unit="photo", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(todo), colorizer.batch_size):
        loaded = []
        for src, dst in todo[start : start + colorizer.batch_size]:
            try:
                loaded.append((src, dst, read_image(src, max_pixels=max_pixels)))
            except (OSError, ValueError) as err:
                report.failed.append((src, str(err)))
                bar.update(1)
        if not loaded:
            continue
        results = colorizer.colorize_many([img for _, _, img in loaded])
        for (src, dst, _), rgb in zip(loaded, results, strict=True):
            try:
                write_image(dst, rgb, quality=quality)
                report.done.append(dst)
            except (OSError, ValueError) as err:
                report.failed.append((src, f"{dst}: cannot write ({err})"))
            bar.update(1)
    bar.close()
    return report
