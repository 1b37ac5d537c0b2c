"""Running a plan's parts on one shard, and merging a run directory's shards.

One process is shard 0/1. Under ``torchrun`` each rank is shard RANK/WORLD_SIZE (``torch.distributed``: NCCL on GPUs,
gloo on CPU): the ranks take parts one at a time from a counter in the process group's own store, so a rank that
drew cheap parts takes more of them, and rank 0 merges once every rank is done. A job array runs ``--shard K/N`` per
task (task K owns parts K, K + N, ...) and ``robaudit report RUN_DIR`` merges what exists. Which process evaluates a
part never changes its records: every random draw is seeded per sample. Each shard writes only its own parts and its
own manifest (``shards/shard-K-of-N.json``: host, device, times, parts done, out-of-memory splits); a killed shard
(or rank) is resumed by running it again, which redoes only the missing parts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from robaudit.data import ImageSet
from robaudit.engine.check import check_asked, missing_check_parts, run_check_phase
from robaudit.engine.execute import PartExecutor, PartOutput
from robaudit.engine.part_sizing import FIRST_PART, settled_layout, timed_layout
from robaudit.engine.plan import Part, PartLayout, Shard, parts
from robaudit.errors import Interrupted, RobauditError
from robaudit.interrupt import stop_after_current_batch
from robaudit.progress import console, progress_bar
from robaudit.runs.manifest import device_info, now
from robaudit.runs.rundir import RunDir


def torchrun_active() -> bool:
    """True in a process started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 and "RANK" in os.environ


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Shard]:
    """Join torchrun's process group (NCCL when ranks use GPUs, gloo on CPU) for the block; yield this rank's shard.

    Outside torchrun: shard 0/1 and no process group.
    """
    import torch.distributed as dist

    if not torchrun_active() or dist.is_initialized():
        yield Shard.from_environment()
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(days=7))  # ranks wait for the slowest
    try:
        yield Shard.from_environment()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Under torchrun, rank 0 runs the block first while the other ranks wait (e.g. it trains a purifier they then
    load from the cache); outside torchrun, just the block."""
    leader = not torchrun_active() or Shard.from_environment().index == 0
    if not leader:
        barrier()
    yield
    if leader and torchrun_active():
        barrier()


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device becomes ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and torchrun_active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def owned_parts(parts: list[Part], shard: Shard) -> Iterator[Part]:
    """Shard K of N's parts: K, K + N, K + 2N, ... (job-array tasks, and one process)."""
    return (part for part in parts if shard.owns(part))


def claimed_parts(parts: list[Part], *, key: str) -> Iterator[Part]:
    """The parts this torchrun rank claims, one at a time, from a counter in the process group's store (the ranks'
    rendezvous): every part is claimed by exactly one rank, and a rank that finishes early claims more."""
    from torch.distributed.distributed_c10d import _get_default_store

    store = _get_default_store()
    while (index := store.add(key, 1) - 1) < len(parts):
        yield parts[index]


def parts_of(shard: Shard, parts: list[Part], *, run_dir: RunDir) -> Iterator[Part]:
    """The parts this process evaluates: claimed from the other ranks under torchrun, else the shard's own."""
    if torchrun_active() and shard == Shard.from_environment():
        return claimed_parts(parts, key=f"robaudit/next-part/{run_dir.path.name}")
    return owned_parts(parts, shard)


def shard_manifest(shard: Shard, device: torch.device) -> dict[str, Any]:
    """A shard's manifest as it starts."""
    return {
        "shard": str(shard),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device_info(device),
        "threads": torch.get_num_threads(),
        "status": "running",
        "started": now(),
        "finished": None,
        "parts_done": [],
        "batch_splits": [],
    }


def run_shard(
    executor: PartExecutor,
    dataset: ImageSet,
    *,
    run_dir: RunDir,
    shard: Shard,
    device: torch.device,
) -> None:
    """Evaluate this shard's parts that have no records yet, writing each part, its timings and this shard's manifest.
    A fresh run in one process first times a part of a few samples and sizes the others by it
    (``engine.part_sizing``).

    Ctrl-C stops after the current part (raising ``Interrupted``) with every finished part written.
    """
    plan = executor.plan
    layout = settled_layout(run_dir, plan, sharded=shard.count > 1 or torchrun_active())
    plan.part_layout = layout or PartLayout(plan.part_size, first=FIRST_PART)
    every = plan.parts()
    todo = [p for p in every if not run_dir.has_part(p.name)]
    if len(todo) < len(every):
        done = len(every) - len(todo)
        console.print(f"resuming {escape(str(run_dir.path))}: {done} of the run's {len(every)} part(s) done")
    manifest = shard_manifest(shard, device)
    run_dir.write_shard_manifest(shard.name, manifest)
    with progress_bar() as bar, stop_after_current_batch() as stop_requested:
        total = sum(executor.steps(p) for p in todo) // shard.count  # this shard's share (about, for claimed parts)
        task = bar.add_task(f"evaluate {shard}", total=total, status="")
        saved = PartSaver(run_dir, shard, manifest, stop_requested)

        def evaluate(part: Part) -> PartOutput:
            return executor(dataset, part, lambda status: bar.update(task, advance=1, status=status))

        if layout is None:  # time the first part; the run's layout is saved before it
            first, started = every[0], time.perf_counter()
            output = evaluate(first)
            plan.part_layout = timed_layout(plan, seconds=time.perf_counter() - started, samples=first.stop)
            run_dir.write_layout(plan.part_layout.to_dict())
            saved(first, output)
            every = plan.parts()
            done = next(t.completed for t in bar.tasks if t.id == task)
            bar.update(task, total=done + sum(executor.steps(p) for p in every if not run_dir.has_part(p.name)))
        # Claims index the run's full part list, the same on every rank; a part with records is skipped when claimed
        # (each rank lists the parts at its own moment, so lists of the parts still to do could differ).
        for part in parts_of(shard, every, run_dir=run_dir):
            if not run_dir.has_part(part.name):
                saved(part, evaluate(part))
    manifest.update(status="done", finished=now())
    run_dir.write_shard_manifest(shard.name, manifest)


@dataclass
class PartSaver:
    """Writes a finished part (timings, gallery, then its records) and this shard's manifest; raises
    ``Interrupted`` after it when Ctrl-C was pressed."""

    run_dir: RunDir
    shard: Shard
    manifest: dict[str, Any]
    stop_requested: Callable[[], bool]

    def __call__(self, part: Part, output: PartOutput) -> None:
        run_dir, manifest = self.run_dir, self.manifest
        if output.chunk is not None:
            manifest["batch_splits"].append({"start": part.start, "stop": part.stop, "chunk": output.chunk})
        run_dir.write_timings(part.name, output.timings)
        if output.gallery_ids:
            gallery = {key: torch.cat(rows) for key, rows in output.gallery.items()}
            run_dir.write_gallery(gallery, output.gallery_ids)
        run_dir.write_part(part.name, output.records)  # last: the part marks the samples as done
        manifest["parts_done"].append(part.name)
        run_dir.write_shard_manifest(self.shard.name, manifest)
        if self.stop_requested():
            manifest["status"] = "interrupted"
            run_dir.write_shard_manifest(self.shard.name, manifest)
            raise Interrupted(
                f"stopped after samples {part.start}-{part.stop}; finished parts are saved in {run_dir.path}. "
                "Re-run the same command to resume"
            )


def run_check(executor: PartExecutor, dataset: ImageSet, *, run_dir: RunDir, shard: Shard) -> bool:
    """The headline convergence check's stages (``engine.check``), once every base part of the run exists: claimed
    part by part under torchrun (ranks wait for each other between stages), the shard's own parts in a job array.
    True when the check is complete (or not asked for); False when it waits for other shards."""
    if not check_asked(run_dir):
        return True
    if any(not run_dir.has_part(p.name) for p in executor.plan.parts()):
        console.print("convergence check: waits until every shard's parts are done; then run the same command again")
        return False

    def claim(parts: list[Part], stage: str) -> Iterator[Part]:
        if torchrun_active() and shard == Shard.from_environment():
            return claimed_parts(parts, key=f"robaudit/next-part/{run_dir.path.name}/{stage}")
        return owned_parts(parts, shard)

    return run_check_phase(executor, dataset, run_dir=run_dir, claim=claim, wait=barrier)


def expected_parts(run_dir: RunDir, config: dict[str, Any], manifest: dict[str, Any]) -> list[Part] | None:
    """The parts a run must have, by its saved layout, else by its ``part_size`` (None for runs written before parts
    had a fixed size)."""
    num_samples = int(manifest["data"]["num_samples"])
    layout = run_dir.read_layout()
    if layout is not None:
        return PartLayout.from_dict(layout).parts(num_samples)
    return parts(num_samples, int(config["part_size"])) if "part_size" in config else None


def merge(path: str | Path) -> list[str]:
    """Merge a run directory's shards: the run manifest gains every shard's manifest and out-of-memory splits and
    the status ``complete`` or ``incomplete`` (naming the missing parts: the base parts, then the convergence check's
    parts at its current stage). Returns the names of the missing parts; the caller
    rebuilds the reports from the records that exist (``reporting.report.rebuild_reports``)."""
    run_dir = RunDir(path)
    manifest = run_dir.read_manifest()
    if manifest is None:
        raise RobauditError(f"{str(run_dir.path)!r} has no readable manifest.json; pass a robaudit run directory")
    config = run_dir.read_config()
    expected = expected_parts(run_dir, config, manifest)
    if expected is not None:
        shards = run_dir.read_shard_manifests()
        missing = [p.name for p in expected if not run_dir.has_part(p.name)]
        if not missing:  # the convergence check's stages run once every base part exists
            missing = missing_check_parts(run_dir, int(config["part_size"]))
        manifest["shards"] = shards
        splits = [s for shard in shards.values() for s in shard.get("batch_splits", [])]
        manifest["batch_splits"] = sorted(splits, key=lambda s: s["start"])
        manifest["missing_parts"] = missing
        interrupted = any(s.get("status") == "interrupted" for s in shards.values())
        manifest["status"] = ("interrupted" if interrupted else "incomplete") if missing else "complete"
        finished = [s["finished"] for s in shards.values() if s.get("finished")]
        manifest["finished"] = max(finished) if finished and not missing else None
        run_dir.write_manifest(manifest)
    else:
        missing = []
    return missing
