"""Colorizing many photos: which output each input gets, and the batch that writes them.

The rules that keep a user's files safe live here, before any model is loaded: an output never
lands on an input or on another input's output, an existing output is replaced only with
``overwrite`` (or left alone with ``skip_existing``), the output folder must be writable, and a
bad file is reported while the batch goes on. ``retint colorize`` is a thin layer over
:func:`plan_outputs` and :class:`Job`, and so is each actor of its Ray path (``cluster.py``).

Inputs are photos, folders (walked), glob patterns, or list files (:data:`LIST_SUFFIXES`: a
text, CSV or Parquet list of paths, read without touching the paths it names, so that a list of
a million scans costs the driver no directory walk).
"""

from __future__ import annotations

import argparse
import csv
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


#: An input with one of these suffixes is a list of photo paths, not a photo.
LIST_SUFFIXES = (".txt", ".csv", ".parquet")


def is_path_list(item: str | Path) -> bool:
    return Path(item).suffix.lower() in LIST_SUFFIXES


def read_path_list(path: str | Path) -> list[Path]:
    """The photo paths a list file names, relative ones taken from the list's folder: a text
    file has one per line (blank lines and ``#`` comments skipped), a CSV or Parquet file a
    ``path`` column (else its first column). Parquet needs pyarrow (``retint[ray]``)."""
    path = Path(path)
    read = {".parquet": _parquet_names, ".csv": _csv_names}.get(path.suffix.lower(), _text_names)
    try:
        names = read(path)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:  # pyarrow's too
        raise UsageError(f"{path}: cannot read the list of photos ({err})") from None
    return [Path(os.path.normpath(path.parent / n)) for n in names]


def _text_names(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _csv_names(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    head = rows[0] if rows else []
    column = head.index("path") if "path" in head else 0
    return [r[column] for r in rows[1 if "path" in head else 0:]
            if len(r) > column and r[column].strip()]


def _parquet_names(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OSError("reading a Parquet list needs pyarrow: pip install 'retint[ray]' "
                      "(or pyarrow)") from None
    table = pq.read_table(path)
    column = "path" if "path" in table.column_names else table.column_names[0]
    return [str(v) for v in table.column(column).to_pylist() if v]


def _listed(item: str, rule: OutputRule) -> list[tuple[Path, Path, Path]]:
    """(input, output, key) of a list file's photos, each keeping its path relative to the
    list's folder (an absolute path elsewhere keeps its whole path under the output folder).
    Keys are absolute paths, not resolved ones: no file named in the list is touched."""
    base = Path(os.path.abspath(Path(item).parent))
    out = []
    for src in read_path_list(item):
        key = Path(os.path.abspath(src))
        try:
            rel = key.relative_to(base)
        except ValueError:
            rel = key.relative_to(key.anchor)
        out.append((src, rule.output(src, rel), key))
    return out


def plan_outputs(inputs: Sequence[str], out_dir: Path | OutputRule,
                 fmt: str | None = None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(input, output) pairs, and the inputs refused with why.

    Folders and globs keep their inner layout under the output folder, list files the layout
    relative to the list. An output that would land on any input, or on another input's
    output, is refused: a batch never loses a file.
    """
    rule = out_dir if isinstance(out_dir, OutputRule) else OutputRule(out_dir, fmt)
    out_resolved = rule.folder.resolve() if rule.folder else None
    sources: list[tuple[Path, Path, bool]] = []
    seen: set[Path] = set()
    for item in inputs:
        if is_path_list(item) and Path(item).is_file():
            for src, dst, key in _listed(item, rule):
                if key not in seen:
                    seen.add(key)
                    sources.append((src, dst, False))
            continue
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
            sources.append((src, rule.output(src, rel), True))
    return _refuse_collisions(sources, seen)


def _refuse_collisions(sources: list[tuple[Path, Path, bool]], inputs: set[Path]
                       ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """``sources`` are (input, output, resolve): listed photos compare absolute paths, the
    rest resolved ones (symlinks followed)."""
    pairs, refused = [], []
    claimed: dict[Path, Path] = {}
    for src, dst, resolve in sources:
        target = dst.resolve() if resolve else Path(os.path.abspath(dst))
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
        if dst.exists() and _same_file(src, dst):  # a symlink the plan could not see through
            report.failed.append((src, f"{dst} would overwrite an input"))
        elif dst.exists() and skip_existing:
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------- the colorize job


def photo_hints(options: argparse.Namespace, photos: Sequence[Path]) -> dict[Path, list]:
    """Each photo's colour hints: ``--hints FILE`` and ``--hint`` for every photo given, else
    the ``NAME.hints.json`` found beside it. Photos without hints are left out."""
    from .hints import read_hints, sidecar

    if options.hints or options.hint:
        given = (read_hints(options.hints) if options.hints else []) + list(options.hint or [])
        return {p: given for p in photos} if given else {}
    found = {p: read_hints(sidecar(p)) for p in photos if sidecar(p).is_file()}
    return {p: h for p, h in found.items() if h}


def build_colorizer(options: argparse.Namespace, hinted: bool):
    """The Colorizer of the options; with hints, the hint model (``default``: the bundled one),
    checked to take hints before any photo is read."""
    from .options import colorizer_from_args

    if not hinted:
        return colorizer_from_args(options)
    from .hints import check_hint_model, hint_model_for

    colorizer = colorizer_from_args(argparse.Namespace(
        **{**vars(options), "model": hint_model_for(options.model)}))
    check_hint_model(colorizer)
    return colorizer


class _WithHints:
    """One photo's hints on a Colorizer, in the shape ``colorize_files`` takes."""

    batch_size = 1

    def __init__(self, colorizer, hints: list) -> None:
        self.colorizer, self.hints = colorizer, hints

    def colorize_many(self, images):
        return [self.colorizer.colorize(img, self.hints) for img in images]


class Job:
    """What ``retint colorize`` does to (input, output) pairs, from its parsed options: the
    photos without hints in model batches, each hinted photo alone with its hints. Once any
    photo has hints, all of them run on the hint model (with none it is the automatic model,
    exactly). The same on one machine and in every Ray actor; each Colorizer is built once,
    when first needed."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self._colorizers: dict[bool, object] = {}

    def colorizer(self, hinted: bool = False):
        if hinted not in self._colorizers:
            self._colorizers[hinted] = build_colorizer(self.options, hinted)
        return self._colorizers[hinted]

    def run(self, pairs: Sequence[tuple[Path, Path]], hints: dict[Path, list],
            progress: bool = False) -> BatchReport:
        o = self.options
        rules = dict(skip_existing=o.skip_existing, overwrite=o.overwrite, quality=o.quality,
                     max_pixels=o.max_pixels)
        plain = [p for p in pairs if p[0] not in hints]
        report = (colorize_files(self.colorizer(bool(hints)), plain, progress=progress,
                                 **rules) if plain else BatchReport())
        for src, dst in (p for p in pairs if p[0] in hints):
            part = colorize_files(_WithHints(self.colorizer(True), hints[src]), [(src, dst)],
                                  progress=False, **rules)
            report.done += part.done
            report.skipped += part.skipped
            report.failed += part.failed
        return report


def summary_line(done: int, skipped: int, failed: int, seconds: float, where: str,
                 model: str, extra: str = "") -> str:
    """The one-line summary of a batch, the same for the local and the Ray path."""
    rate = done / seconds if seconds > 0 else 0.0
    return (f"colorized {done} photo(s){extra} into {where} with {model} in {seconds:.1f} s "
            f"({rate:.2f} photos/s); skipped {skipped} existing; failed {failed}")


def print_failures(failed: Sequence[tuple[Path | str, str]]) -> None:
    for src, why in failed:
        print(f"  failed: {src}: {why}" if not why.startswith(str(src)) else f"  failed: {why}")
