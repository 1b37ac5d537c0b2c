"""The headline convergence check as a phase after the base attacks (``robaudit.headline.headline_check`` decides
what it re-attacks; this module runs it).

Which samples a stage re-attacks depends on the whole run's standing count, so a stage starts only when every record
below it exists. Its work is cut into parts of ``part_size`` of the samples it attacks (``part-check-x2-00000.jsonl``),
so they run in full batches wherever they sit in the data. One process runs the stages one after another. torchrun
ranks claim a stage's parts as they claim the base parts, and wait for each other between stages. A job-array task
runs the stage parts it owns (K, K + N, ...) once every base part exists, and stops when a stage still waits for
other tasks: re-run the array (or the same command once, without ``--shard``) after every task finished, and each
run goes one stage further; ``robaudit report`` says when the check is complete. Every draw is seeded per sample, so
the records are the same in every layout, batch size and process count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from robaudit.data import ImageSet
from robaudit.engine.execute import Batch, PartExecutor, PartOutput, condition_records
from robaudit.engine.plan import Part
from robaudit.headline.headline_check import CheckSettings, PairCheck, Stage, plan_check
from robaudit.progress import console, progress_bar
from robaudit.runs.records import Condition
from robaudit.runs.rundir import RunDir, add_passes, add_timing

Work = list[tuple[PairCheck, str]]


def check_asked(run_dir: RunDir) -> bool:
    """Whether the run's saved config asks for the headline check (read before any record is)."""
    return CheckSettings.from_config(run_dir.read_config()) is not None


def stage_done(run_dir: RunDir, stage: Stage, part_size: int) -> bool:
    """Whether every records part of ``stage`` exists."""
    return all(run_dir.has_part(name) for name, _ in stage.parts(part_size))


def check_state(run_dir: RunDir, part_size: int) -> tuple[list[Stage], list[Any], list[dict[str, Any]]]:
    """The check's stages so far and outcomes (``headline_check.plan_check``) read from ``run_dir``, and the
    records they were read from."""
    records = run_dir.read_records()
    stages, outcomes = plan_check(run_dir.read_config(), records, lambda stage: stage_done(run_dir, stage, part_size))
    return stages, outcomes, records


def missing_check_parts(run_dir: RunDir, part_size: int) -> list[str]:
    """Records parts the check still needs at its current stage (empty: complete, or no check asked for)."""
    if not check_asked(run_dir):
        return []
    stages, _, _ = check_state(run_dir, part_size)
    if not stages:
        return []
    return [name for name, _ in stages[-1].parts(part_size) if not run_dir.has_part(name)]


def run_check_phase(
    executor: PartExecutor,
    dataset: ImageSet,
    *,
    run_dir: RunDir,
    claim: Callable[[list[Part], str], Iterable[Part]],
    wait: Callable[[], None],
) -> bool:
    """Run the check's stages whose turn has come, this process's parts of each; True once the check is complete.

    ``claim(parts, key)`` yields the parts this process runs (claimed under torchrun, owned in a job array);
    ``wait()`` waits for the other ranks (a no-op in one process or a job array)."""
    size = executor.plan.part_size
    positions = {sample: i for i, sample in enumerate(dataset.ids)}
    while check_asked(run_dir):
        stages, _, records = check_state(run_dir, size)
        if not stages or stage_done(run_dir, stages[-1], size):
            return True
        stage = stages[-1]
        named = stage.parts(size)
        clean = clean_predictions(records)
        with progress_bar() as bar:
            task = bar.add_task(f"convergence check {stage.name}", total=len(stage.work()), status="")
            for part in claim([Part(k, 0, len(work)) for k, (_, work) in enumerate(named)], stage.name):
                name, work = named[part.number]
                if not run_dir.has_part(name):
                    output = check_work(executor, dataset, work, clean, positions)
                    run_dir.write_timings(name, output.timings)
                    run_dir.write_part(name, output.records)
                bar.update(task, advance=len(work), status=name)
        wait()
        if not stage_done(run_dir, stage, size):
            console.print(
                f"convergence check {stage.name}: waiting for other shards' parts; when every shard is done, run "
                "the same command again (each run goes one stage further)"
            )
            return False
    return True


def clean_predictions(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], int]:
    """``{(defense, sample id, repeat): clean prediction}`` from the clean conditions' records."""
    return {
        (r["purifier"], r["sample_id"], int(r["repeat"])): int(r["pred"])
        for r in records
        if Condition.parse(r["condition"]).is_clean
    }


def check_work(
    executor: PartExecutor,
    dataset: ImageSet,
    work: Work,
    clean: dict[tuple[str, str, int], int],
    positions: dict[str, int],
) -> PartOutput:
    """The records of one check part: each pair's samples of ``work`` (at their dataset ``positions``), attacked
    again by the rung and scored on the defense's scoring draws, in batches of the executor's batch size."""
    out = PartOutput()
    rungs = {a.label: a for a in executor.plan.attacks}
    pairs: dict[PairCheck, list[int]] = {}
    for pair, sample in work:
        pairs.setdefault(pair, []).append(positions[sample])
    for pair, chosen in pairs.items():
        for first in range(0, len(chosen), executor.batch_size):
            chunk = chosen[first : first + executor.batch_size]
            check_batch(executor, dataset, pair, rungs[pair.rung_label], chunk, clean, out)
    out.records.sort(key=executor.plan.record_order)
    return out


def check_batch(
    executor: PartExecutor,
    dataset: ImageSet,
    pair: PairCheck,
    rung: Any,
    chunk: list[int],
    clean: dict[tuple[str, str, int], int],
    out: PartOutput,
) -> None:
    """Attack the samples at dataset positions ``chunk`` with ``rung`` (a ResolvedAttack) under ``pair``'s defense
    and threat model, score them on the scoring draws their verdicts need (``PartExecutor.score_chosen``) and add their
    records to ``out``."""
    device = executor.device
    index = torch.tensor(chunk, dtype=torch.long)
    images = dataset.images[index].to(device=device, dtype=torch.float32)
    batch = Batch(images, dataset.labels[index].to(device), [dataset.ids[i] for i in chunk], chunk[0], list(chunk))
    condition = Condition(pair.rung_label, pair.defense, pair.threat)
    defense = next(d for d in executor.plan.defenses if d.label == pair.defense)
    everyone = torch.ones(len(chunk), dtype=torch.bool, device=device)
    made = executor.condition_examples(condition, rung, batch, everyone, out)
    adversarial, incomplete = made.adversarial, made.incomplete
    tic = time.perf_counter()
    preds = executor.score_chosen(defense, adversarial, batch, condition.key(), everyone)
    add_timing(out.timings, condition.key(), time.perf_counter() - tic, 0)
    for repeat, pred in enumerate(preds):
        known = [clean.get((pair.defense, s, repeat), -1) for s in batch.ids]
        clean_pred = torch.tensor(known, device=device)
        out.records += condition_records(
            batch, condition, rung, repeat, (clean_pred, pred), everyone, adversarial, incomplete
        )
    add_passes(out.timings, condition.key(), executor.passes.take(condition.key()).to_dict(), len(chunk))
