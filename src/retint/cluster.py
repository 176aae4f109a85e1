"""``retint colorize --ray``: the same job on a Ray cluster, for archives of millions of scans.

The driver plans the outputs exactly as the local path does (:func:`batch.plan_outputs`: the
same inputs, rules and refusals), drops what the job's manifest already has as done, and hands
the rest to Ray Data as a table of (input, output) paths. ``map_batches`` runs a pool of
:class:`ColorizeActor` s, each of which builds the Colorizer once from the command's own options
and runs :class:`batch.Job` on its batches: it reads, colorizes and writes atomically, so
photos never travel through the object store, only their paths and the result rows. The driver
appends each finished block's rows to the manifest (:mod:`retint.manifest`) as it arrives.

Safety: every output has one input (the plan refuses collisions), and each input is one row of
the table, so two actors never write the same output. A killed job loses the blocks in flight;
their outputs, if already renamed into place, are newer than the job's start and have no row,
and a rerun counts them as done instead of refusing them as existing files.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from .batch import Job, OutputRule, UsageError, photo_hints, print_failures, summary_line
from .manifest import DEFAULT_NAME, FIELDS, Manifest

#: Rows per Ray block: the unit an actor takes at once and a killed job can lose, per actor.
BATCHES_PER_BLOCK = 8
#: The options an actor needs to build the same Job (everything else stays on the driver).
JOB_OPTIONS = ("model", "device", "size", "batch_size", "saturation", "runtime", "upsample",
               "hints", "hint", "skip_existing", "overwrite", "quality", "max_pixels")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'retint[ray]'") from None
    return ray


class ColorizeActor:
    """One Ray actor: a Job built once from the command's options, then batches of paths in,
    manifest rows out. A photo that fails is a ``failed`` row; the actor goes on."""

    def __init__(self, options: dict, threads: int, started: float) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.job = Job(argparse.Namespace(**options))
        self.started = started

    def __call__(self, batch: dict) -> dict:
        rows: list[dict] = []
        pairs: list[tuple[Path, Path]] = []
        for src, dst in zip(batch["input"], batch["output"], strict=True):
            src, dst = Path(str(src)), Path(str(dst))
            if _written_by_this_job(dst, self.started):
                rows.append(_row(src, dst, "done", ""))
            else:
                pairs.append((src, dst))
        try:
            rows += self._run(pairs)
        except Exception:  # noqa: BLE001 - one photo's surprise must not end the whole job
            for src, dst in pairs:  # again one at a time, so that only the guilty photo fails
                if _written_by_this_job(dst, self.started):
                    rows.append(_row(src, dst, "done", ""))
                    continue
                try:
                    rows += self._run([(src, dst)])
                except Exception as err:  # noqa: BLE001
                    rows.append(_row(src, dst, "failed", f"{type(err).__name__}: {err}"))
        return {k: np.asarray([r[k] for r in rows]) for k in FIELDS}

    def _run(self, pairs: list[tuple[Path, Path]]) -> list[dict]:
        from .hints import HintError

        rows, hints, pairs = [], {}, list(pairs)
        for src, dst in list(pairs):
            try:
                hints.update(photo_hints(self.job.options, [src]))
            except HintError as err:  # a bad NAME.hints.json fails that photo only
                rows.append(_row(src, dst, "failed", str(err)))
                pairs.remove((src, dst))
        report = self.job.run(pairs, hints)
        source_of = {dst: src for src, dst in pairs}
        rows += [_row(source_of[dst], dst, "done", "") for dst in report.done]
        output_of = dict(pairs)
        rows += [_row(src, output_of[src], "skipped", "") for src in report.skipped]
        rows += [_row(src, output_of[src], "failed", why) for src, why in report.failed]
        return rows


def _written_by_this_job(dst: Path, started: float) -> bool:
    """An output that exists and is newer than the job's first start, though the manifest has
    no row for it: renamed into place by a run that was killed before its row was written."""
    try:
        return dst.stat().st_mtime >= started
    except OSError:
        return False


def _row(src: Path, dst: Path, status: str, error: str) -> dict:
    size = 0
    if status != "failed":
        try:
            size = dst.stat().st_size
        except OSError:
            pass
    return {"input": str(src), "output": str(dst), "status": status, "error": error,
            "bytes": size}


def manifest_path(args: argparse.Namespace, rule_folder: Path | None) -> Path:
    if args.manifest:
        return Path(args.manifest)
    if rule_folder is None:
        raise UsageError("--ray writes a manifest: give -o DIR (it goes there) or --manifest "
                         "PATH")
    return rule_folder / DEFAULT_NAME


def colorize_on_ray(args: argparse.Namespace, pairs: list[tuple[Path, Path]],
                    refused: list[tuple[Path, str]], rule: OutputRule) -> int:
    """Run the planned pairs on Ray; the summary and exit code are the local path's."""
    ray = import_ray()
    manifest = Manifest(manifest_path(args, rule.folder))
    if refused:
        manifest.append({"input": str(src), "output": "", "status": "failed", "error": why,
                         "bytes": 0} for src, why in refused)
    done_before = manifest.done()
    todo = [(s, d) for s, d in pairs if str(s) not in done_before]
    t0 = time.perf_counter()
    failed: list[tuple[str, str]] = [(str(s), why) for s, why in refused]
    counts = {"done": 0, "skipped": 0}
    model = args.model
    if todo:
        _start(ray, args)
        for block in _pipeline(ray, args, todo, manifest.started).iter_batches(
                batch_size=None, batch_format="pandas"):
            rows = block.to_dict("records")
            manifest.append(rows)
            for row in rows:
                if row["status"] == "failed":
                    failed.append((row["input"], row["error"]))
                else:
                    counts[row["status"]] += 1
    manifest.compact()
    seconds = time.perf_counter() - t0
    earlier = len(pairs) - len(todo)
    extra = f" ({earlier} done by an earlier run, left alone)" if earlier else ""
    where = args.output or f"place (suffix {args.suffix!r})"
    print(summary_line(counts["done"], counts["skipped"], len(failed), seconds, where,
                       f"{model} on Ray", extra))
    print(f"manifest: {manifest.path}")
    print_failures(failed)
    return 1 if failed else 0


def _start(ray, args: argparse.Namespace) -> None:
    """Join the cluster at ``--ray ADDRESS`` (``auto``, ``ray://host:10001``, ``host:6379``),
    or start a local Ray on this machine's CPUs."""
    if args.ray != "local":
        _check_reachable(args.ray)
    if ray.is_initialized():  # embedded: the caller's Ray
        return
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    if args.ray == "local":
        ray.init(include_dashboard=False, **quiet)
    else:
        try:
            ray.init(address=args.ray, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UsageError(f"cannot join the Ray cluster at {args.ray}: {err}") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not args.quiet and sys.stderr.isatty()
    ctx.print_on_execution_start = False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` nobody answers at is a one-line error at once
    (Ray itself would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"cannot reach the Ray cluster at {address}: "
                         f"{err.strerror or err}") from None


def _pipeline(ray, args: argparse.Namespace, todo: list[tuple[Path, Path]], started: float):
    """List (the table of paths), colorize and write (the actors), as a Ray Data dataset."""
    import pyarrow as pa

    per_actor = {"CPU": args.actor_cpus, "GPU": args.actor_gpus}
    actors = args.actors or _fitting_actors(ray, per_actor)
    rows = args.batch_size * BATCHES_PER_BLOCK
    actors = max(1, min(actors, -(-len(todo) // rows)))
    table = pa.table({"input": [str(s) for s, _ in todo], "output": [str(d) for _, d in todo]})
    blocks = [table.slice(i, rows) for i in range(0, len(todo), rows)]
    options = {k: getattr(args, k) for k in JOB_OPTIONS}
    return ray.data.from_arrow(blocks).map_batches(
        ColorizeActor, batch_size=args.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs=dict(options=options, threads=int(args.actor_cpus),
                                   started=started),
        num_cpus=args.actor_cpus, num_gpus=args.actor_gpus or None)


def _fitting_actors(ray, per_actor: dict[str, float]) -> int:
    """As many actors as the cluster's CPUs (and GPUs, when actors ask for them) hold."""
    have = ray.cluster_resources()
    fits = [int(have.get(k, 0) // v) for k, v in per_actor.items() if v]
    return max(1, min(fits)) if fits else max(1, os.cpu_count() or 1)
