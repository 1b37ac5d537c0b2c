"""`evaluate` as a library call, told as the run's story: prepare (``engine.prepare``), run every part of this
shard, the convergence check, certification, then merge and report. Its one input is an ``EvaluateConfig``
(``engine.config``), its defaults applied where it is resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from robaudit.engine.certification import run_certification
from robaudit.engine.config import EvaluateConfig
from robaudit.engine.execute import PartExecutor
from robaudit.engine.plan import Shard
from robaudit.engine.prepare import PreparedRun, prepare_run
from robaudit.engine.run import (
    barrier,
    merge,
    process_group,
    run_check,
    run_shard,
    torchrun_active,
)
from robaudit.errors import ConfigError, Interrupted
from robaudit.progress import console
from robaudit.reporting.report import rebuild_reports


def run_evaluation(
    config: EvaluateConfig,
    *,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    trust_code: bool = False,
    shard: Shard | None = None,
) -> Path:
    """Run an evaluation (or one shard of it) and write its run directory; returns the directory.

    One process runs every part and writes the reports. Under ``torchrun`` each rank runs its share of the parts
    (rank 0 first prepares the directory and trains missing purifiers) and rank 0 merges once all are done. With
    ``shard`` (``--shard K/N`` of a job array) this process writes only its parts; ``robaudit report`` merges.
    Re-running the same config on the same directory resumes: only missing parts are computed.
    ``trust_checkpoint`` lets pickled checkpoints load in full, which runs code from them; ``trust_code`` lets a
    purifier's ``network: {factory: module:function}`` import the user's code.
    """
    if shard is not None and shard.count > 1 and overwrite:
        raise ConfigError("--overwrite with --shard would delete other shards' parts; remove the directory first")
    with process_group(config.device) as rank:
        shard = shard or rank
        prepared = prepare_run(
            config, overwrite=overwrite, trust_checkpoint=trust_checkpoint, trust_code=trust_code, shard=shard
        )
        executor = part_executor(prepared)
        run_parts(executor, prepared, shard)
        checked = run_check(executor, prepared.dataset, run_dir=prepared.run_dir, shard=shard)
        if prepared.config.certify is not None:
            certify_shard(prepared, shard)
        finish(prepared, shard, checked=checked)
    return prepared.run_dir.path


def part_executor(prepared: PreparedRun) -> PartExecutor:
    """The executor of the run's parts (every attack built once), its batch size fit to the device when the config
    leaves it unset (recorded in the manifest, which is written here, as the parts start)."""
    config = prepared.config
    executor = PartExecutor(
        prepared.plan,
        prepared.model,
        device=prepared.device,
        batch_size=config.batch_size,
        precision=config.precision,
        compile=config.compile,
        on_built=lambda key, attack: note_attack_details(prepared, key, attack),
    )
    if config.batch_size is None:
        prepared.manifest["batch_size"] = executor.fit_batch_size(prepared.dataset.images[:2])
    prepared.run_dir.write_manifest(prepared.manifest)
    return executor


def run_parts(executor: PartExecutor, prepared: PreparedRun, shard: Shard) -> None:
    """This shard's parts, then wait for the other ranks. Interrupted, a one-process run still merges and reports
    what it has (marked INCOMPLETE: it says how many samples have records)."""
    try:
        run_shard(executor, prepared.dataset, run_dir=prepared.run_dir, shard=shard, device=prepared.device)
    except Interrupted:
        if shard.count == 1:
            merge_and_report(prepared.run_dir.path)
        raise
    barrier()


def certify_shard(prepared: PreparedRun, shard: Shard) -> None:
    """The certification phase of this shard's parts (``certify:``), then wait for the other ranks."""
    config = prepared.config
    run_certification(
        prepared.model,
        prepared.plan.defenses,
        prepared.dataset,
        prepared.plan.parts(),
        spec=config.certify,
        seed=config.seed,
        eps=config.eps_l2,
        run_dir=prepared.run_dir,
        shard=shard,
        device=prepared.device,
    )
    barrier()


def finish(prepared: PreparedRun, shard: Shard, *, checked: bool) -> None:
    """Merge and report (one process, or rank 0 under torchrun); a job array's shard says what to run next."""
    if shard.index == 0 and (shard.count == 1 or torchrun_active()):
        merge_and_report(prepared.run_dir.path)
    elif not torchrun_active():
        path = escape(str(prepared.run_dir.path))
        then = "" if checked else "run the same command without --shard (the convergence check), then "
        console.print(f"shard {shard} done; when every shard is done: {then}robaudit report {path}")


def note_attack_details(prepared: PreparedRun, key: str, attack: Any) -> None:
    """Keep what a built attack reports about itself (AutoAttack's version and components) in the manifest."""
    if getattr(attack, "details", None):
        prepared.manifest["attack_details"][key] = attack.details


def merge_and_report(path: Path) -> None:
    """Merge the run's shards (``engine.run.merge``) and rebuild its reports from the records that exist."""
    merge(path)
    rebuild_reports(path)
