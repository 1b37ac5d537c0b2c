"""`evaluate` as a library call: the run that writes a run directory, from an ``EvaluateConfig``
(``engine.config``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from robaudit.data import ImageSet
from robaudit.data.job import data_fingerprint
from robaudit.engine.certification import run_certification
from robaudit.engine.config import EvaluateConfig, ResolvedAudit
from robaudit.engine.execute import PartExecutor
from robaudit.engine.pipeline import Pipeline
from robaudit.engine.plan import AuditPlan, Defense, Shard
from robaudit.engine.preflight import detect_randomized, preflight
from robaudit.engine.run import (
    barrier,
    merge,
    process_group,
    rank_device,
    rank_zero_first,
    run_check,
    run_shard,
    torchrun_active,
)
from robaudit.errors import ConfigError, Interrupted
from robaudit.fileio import sha256_tree
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.model_data import data_for_model, model_transform
from robaudit.models.spec import obtain_classifier
from robaudit.progress import console
from robaudit.purifiers.resolve import PurifierContext, obtain_purifier
from robaudit.purifiers.surrogate import CALIBRATION_SAMPLES, calibrate_surrogate, surrogate_target
from robaudit.reporting.report import rebuild_reports
from robaudit.rng.draw_layout import DrawLayout
from robaudit.rng.row_draws import attributable
from robaudit.runs.manifest import device_info, now, resolve_device, versions
from robaudit.runs.rundir import RunDir
from robaudit.threats import NONE


def default_out(resolved: ResolvedAudit, model_path: Path) -> Path:
    """``runs/<model>-<data>-<hash of config>``: the same command reopens (resumes) the same directory."""
    key = hashlib.sha256(json.dumps(resolved.fingerprinted(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{model_path.stem}-{Path(resolved.config.data.source).stem}-{key}"


def build_defenses(
    resolved: ResolvedAudit,
    model: torch.nn.Module,
    *,
    model_sha: str,
    randomized_classifier: bool,
    device: torch.device,
    trust_checkpoint: bool,
    row_draws: bool = False,
    trust_code: bool = False,
    input_shape: tuple[int, ...] | None = None,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[list[Defense], dict[str, Any]]:
    """The undefended classifier and one defense per configured purifier (obtained or trained), with details.

    A randomized pipeline (randomized purifier or classifier) is scored ``config.repeats`` times. A
    purifier at another resolution than ``input_shape`` (the classifier's input, C, H, W) runs inside a bridge. A
    DDIM surrogate set to ``auto`` is measured on ``calibration`` (images (N, C, H, W), labels (N,)).
    """
    config = resolved.config
    randomness = {"randomized_classifier": randomized_classifier, "row_draws": row_draws}
    bare = Pipeline(model, **randomness)
    defenses = [Defense(NONE, None, config.repeats if bare.randomized else 1, [NONE], bare)]
    details = {}
    context = PurifierContext(
        data_source=config.data.source,
        seed=config.seed,
        device=str(device),
        image_size=config.data.image_size,
        channels=config.data.channels,
        classifier=model,
        classifier_sha256=model_sha,
        trust_checkpoint=trust_checkpoint,
        trust_code=trust_code,
        transform=model_transform(model),
        input_shape=input_shape,
    )
    for spec in resolved.purifiers:
        purifier, provenance = obtain_purifier(spec, context)
        surrogate = calibrate(purifier, model, calibration, seed=config.seed, device=device)
        scoring = Pipeline(model, purifier, **randomness)
        repeats = config.repeats if scoring.randomized else 1
        defenses.append(Defense(spec.label, purifier, repeats, list(config.threats), scoring, spec.eot, spec.graft))
        details[spec.label] = {
            **{k: provenance[k] for k in PROVENANCE_KEYS if k in provenance},
            "randomized": purifier.randomized,
            "randomized_pipeline": scoring.randomized,
            "differentiable": purifier.differentiable,
            "ensemble": purifier.ensemble,
            "gradient": gradient_statement(purifier, spec.graft),
            **({"surrogate": surrogate} if surrogate else {}),
            "repeats": repeats,
            "eot": (spec.eot or config.eot) if scoring.randomized else 1,
        }
    return defenses, details


# what the report states about each purifier's network (besides its behaviour)
PROVENANCE_KEYS = (
    "checkpoint",
    "sha256",
    "source",
    "ref",
    "resolution",
    "value_range",
    "parameters",
    "schedule",
    "factory",
    "process",
    "bridge",
)


def calibrate(
    purifier: Any,
    model: torch.nn.Module,
    calibration: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    seed: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """Resolve a ``backward_steps: auto`` surrogate by measurement (``purifiers.surrogate``); what was measured."""
    if calibration is None or surrogate_target(purifier) is None:
        return None
    images, labels = calibration
    model.to(device).eval()
    return calibrate_surrogate(purifier, model, images.to(device), labels.to(device), seed=seed)


def gradient_statement(purifier: Any, graft: int) -> str:
    """What an adaptive attack differentiates through, and how its EOT gradient is formed."""
    if not graft:
        return f"{purifier.gradient_description()}; EOT gradients averaged over full backward passes"
    return (
        f"{purifier.gradient_description()}; EOT gradients grafted (DiffHammer): the classifier's gradients averaged "
        f"over the EOT draws, sent back through {graft} purifier draw(s)"
    )


def run_manifest(
    config: EvaluateConfig,
    dataset: ImageSet,
    *,
    data_sha: str,
    fingerprint: str,
    device: torch.device,
    model_info: dict[str, Any],
) -> dict[str, Any]:
    """The run's manifest as it starts (status ``running``)."""
    source_path = Path(config.data.source)
    return {
        "kind": "robaudit.run",
        "command": "evaluate",
        "status": "running",
        "fingerprint": fingerprint,
        "started": now(),
        "finished": None,
        "seed": config.seed,
        "device": device_info(device),
        "versions": versions(),
        "model": model_info,
        "data": {
            "description": dataset.description,
            "source": config.data.source,
            "sha256_files": sha256_tree(source_path) if source_path.exists() else None,
            "sha256_tensors": data_sha,
            "num_samples": len(dataset),
            "class_names": dataset.class_names,
            "provenance": dataset.provenance,
        },
        "attack_details": {},
    }


def run_fingerprint(resolved: dict[str, Any], model_sha: str, data_sha: str, purifiers: dict[str, Any]) -> str:
    """What a run directory holds: the resolved config and the hashes of the model, data and purifier checkpoints.

    A resumed run must match it; a directory holding another run is refused rather than mixed.
    """
    hashes = [model_sha, data_sha, {label: details["sha256"] for label, details in purifiers.items()}]
    return hashlib.sha256(json.dumps([resolved, *hashes], sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class PreparedRun:
    """Everything a shard needs to run its parts: the plan, the classifier, the data, the run directory."""

    plan: AuditPlan
    model: torch.nn.Module
    dataset: ImageSet
    run_dir: RunDir
    manifest: dict[str, Any]
    device: torch.device


def merge_and_report(path: Path) -> None:
    """Merge the run's shards (``engine.run.merge``) and rebuild its reports from the records that exist."""
    merge(path)
    rebuild_reports(path)


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
        try:
            run_shard(executor, prepared.dataset, run_dir=prepared.run_dir, shard=shard, device=prepared.device)
        except Interrupted:
            if shard.count == 1:
                merge_and_report(prepared.run_dir.path)  # marked INCOMPLETE: says how many samples have records
            raise
        barrier()
        checked = run_check(executor, prepared.dataset, run_dir=prepared.run_dir, shard=shard)
        if config.certify is not None:
            certify_shard(prepared, config, shard)
        if shard.index == 0 and (shard.count == 1 or torchrun_active()):
            merge_and_report(prepared.run_dir.path)
        elif not torchrun_active():
            path = escape(str(prepared.run_dir.path))
            then = "" if checked else "run the same command without --shard (the convergence check), then "
            console.print(f"shard {shard} done; when every shard is done: {then}robaudit report {path}")
    return prepared.run_dir.path


def certify_shard(prepared: PreparedRun, config: EvaluateConfig, shard: Shard) -> None:
    """The certification phase of this shard's parts (``certify:``), then wait for the other ranks."""
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


def note_attack_details(prepared: PreparedRun, key: str, attack: Any) -> None:
    """Keep what a built attack reports about itself (AutoAttack's version and components) in the manifest."""
    if getattr(attack, "details", None):
        prepared.manifest["attack_details"][key] = attack.details


def prepare_run(
    config: EvaluateConfig, *, overwrite: bool, trust_checkpoint: bool, shard: Shard, trust_code: bool = False
) -> PreparedRun:
    """Load the classifier, data and purifiers (training missing ones), open the run directory, run the pre-flight
    checks and build the plan."""
    resolved = config.resolve()  # names and keys checked before any work; read by everything below
    device = rank_device(resolve_device(config.device))
    model_spec = replace(config.model, trust_checkpoint=trust_checkpoint)
    model, model_path = obtain_classifier(model_spec, device=str(device))
    dataset = data_for_model(model, config.data)
    data_sha = data_fingerprint(dataset)  # reads (and checks) every image before any work
    model_sha = model_fingerprint(model, model_path)
    detected = detect_randomized(model.cpu(), dataset)
    randomized = {"declared": bool(config.model.randomized), "detected": detected}
    randomized["randomized"] = randomized["declared"] or detected
    if randomized["randomized"]:
        randomized["row_draws"] = attributable(model.cpu(), dataset.images[:1].float())
    with rank_zero_first():  # rank 0 trains missing purifiers and prepares the directory; the others then join
        defenses, purifier_details = build_defenses(
            resolved,
            model,
            model_sha=model_sha,
            randomized_classifier=randomized["randomized"],
            row_draws=bool(randomized.get("row_draws")),
            device=device,
            trust_checkpoint=trust_checkpoint,
            trust_code=trust_code,
            input_shape=tuple(dataset.shape),
            calibration=(dataset.images[:CALIBRATION_SAMPLES], dataset.labels[:CALIBRATION_SAMPLES]),
        )
        out = Path(config.out) if config.out else default_out(resolved, model_path)
        fingerprint = run_fingerprint(resolved.fingerprinted(), model_sha, data_sha, purifier_details)
        run_dir = RunDir(out)
        run_dir.prepare(fingerprint=fingerprint, overwrite=overwrite and shard.index == 0, alone=shard.count == 1)
    model_info = {"path": config.model.path or str(model_path), "sha256": model_sha, "card": _card_dict(model)}
    model_info["randomized"] = randomized
    manifest = run_manifest(
        config, dataset, data_sha=data_sha, fingerprint=fingerprint, device=device, model_info=model_info
    )
    manifest["purifier_details"] = purifier_details
    purifier_modules = {d.label: d.purifier for d in defenses if d.purifier is not None}
    flags = preflight(model.cpu(), dataset, purifiers=purifier_modules, randomized=randomized)
    manifest["preflight"] = [f.to_dict() for f in flags]
    for defense in defenses:
        defense.scoring.to(device)
    run_dir.write_config(resolved.to_dict())
    model.to(device)
    plan = audit_plan(config, list(resolved.attacks), defenses, num_samples=len(dataset))
    return PreparedRun(plan, model, dataset, run_dir, manifest, device)


def audit_plan(config: EvaluateConfig, attacks: list[Any], defenses: list[Defense], *, num_samples: int) -> AuditPlan:
    """The plan of a run: its resolved ``attacks`` against ``defenses`` on ``num_samples`` samples, with the
    config's draw counts, part sizing and draw layout."""
    return AuditPlan(
        attacks=attacks,
        defenses=defenses,
        seed=config.seed,
        eot=config.eot,
        draws=config.selection_draws,
        num_samples=num_samples,
        part_size=config.part_size,
        part_seconds=config.part_seconds,
        convergence_fraction=config.convergence.fraction,
        layout=DrawLayout(batched=config.batch_draws, chunk=config.draw_chunk),
        rng=config.rng,
    )


def _card_dict(model: torch.nn.Module) -> dict[str, Any]:
    from dataclasses import asdict

    card = asdict(model.card)
    card.get("training", {}).pop("history", None)
    return card
