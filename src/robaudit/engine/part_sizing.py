"""Parts sized by time, so that a long run shows its records on disk early and often.

One process starting a fresh run evaluates a first part of ``FIRST_PART`` samples and times it; the rest of the run
is cut into parts that each take at most about ``part_seconds`` (default 240) on this machine: the largest power of
two of samples that fits at the first part's pace, at least ``FIRST_PART`` and at most ``part_size``. The pace of a
small part overstates a larger one's (an attack's per-batch costs, such as Square's query loop, are shared by more
samples), so parts err on the small side. The layout is saved in the run directory
(``records/layout.json``) before the first part is, so a resumed run, and shards added later, cut the samples alike.
Runs sharded from the start (a job array, torchrun), runs written before layouts and runs with ``part_seconds: 0``
are cut by count (parts of ``part_size``): processes that start together could not agree on a time. Which part a
sample falls in never changes its records (every draw is seeded per sample).
"""

from __future__ import annotations

import math

from robaudit.engine.plan import AuditPlan, PartLayout
from robaudit.runs.rundir import RunDir

FIRST_PART = 8  # samples in the part that times a run


def size_for(seconds_per_sample: float, *, target_seconds: float, smallest: int, largest: int) -> int:
    """The largest power of two of samples that takes at most ``target_seconds`` at ``seconds_per_sample``, kept
    within [``smallest``, ``largest``]."""
    fits = target_seconds / max(seconds_per_sample, 1e-9)
    size = 2 ** math.floor(math.log2(fits)) if fits >= 1 else 1
    return max(smallest, min(largest, size))


def times_first_part(plan: AuditPlan, *, sharded: bool) -> bool:
    """Whether this process sizes the run's parts by timing a first part: one process, a target time, and parts
    and a run large enough for a first part to be worth it."""
    return plan.part_seconds > 0 and not sharded and plan.part_size > FIRST_PART and plan.num_samples > 2 * FIRST_PART


def settled_layout(run_dir: RunDir, plan: AuditPlan, *, sharded: bool) -> PartLayout | None:
    """The run directory's layout; for a run this process does not time (see the module), parts of ``part_size``,
    saved; None when this process times a first part (the run is fresh)."""
    saved = run_dir.read_layout()
    if saved is not None:
        return PartLayout.from_dict(saved)
    if times_first_part(plan, sharded=sharded) and not run_dir.part_names():
        return None
    layout = PartLayout(plan.part_size)
    run_dir.write_layout(layout.to_dict())
    return layout


def timed_layout(plan: AuditPlan, *, seconds: float, samples: int) -> PartLayout:
    """The layout after a first part of ``samples`` samples took ``seconds``."""
    size = size_for(seconds / samples, target_seconds=plan.part_seconds, smallest=samples, largest=plan.part_size)
    return PartLayout(size, first=samples)
