"""The preparation of a run, beside its story (``engine.evaluate``): the classifier, data and defenses obtained
(missing purifiers trained, surrogates calibrated), the run directory opened under the run's fingerprint, the
manifest started, the pre-flight checks run and the plan built (``prepare_run``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from robaudit.data import ImageSet
from robaudit.data.job import data_fingerprint
from robaudit.engine.config import EvaluateConfig, ResolvedAudit
from robaudit.engine.pipeline import Pipeline
from robaudit.engine.plan import AuditPlan, Defense, Shard
from robaudit.engine.preflight import detect_randomized, preflight
from robaudit.engine.run import (
    rank_device,
    rank_zero_first,
)
from robaudit.fileio import sha256_tree
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.model_data import data_for_model, model_transform
from robaudit.models.spec import obtain_classifier
from robaudit.purifiers.resolve import PurifierContext, obtain_purifier
from robaudit.purifiers.surrogate import CALIBRATION_SAMPLES, calibrate_surrogate, surrogate_target
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
    """Everything a shard needs to run its parts: the config with its defaults applied, the plan, the classifier,
    the data, the run directory, the manifest and the device."""

    config: EvaluateConfig
    plan: AuditPlan
    model: torch.nn.Module
    dataset: ImageSet
    run_dir: RunDir
    manifest: dict[str, Any]
    device: torch.device


def prepare_run(
    config: EvaluateConfig, *, overwrite: bool, trust_checkpoint: bool, shard: Shard, trust_code: bool = False
) -> PreparedRun:
    """Resolve ``config`` (its defaults applied: ``EvaluateConfig.with_defaults``), load the classifier, data and
    purifiers (training missing ones), open the run directory, run the pre-flight checks and build the plan."""
    resolved = config.resolve()  # every component resolved once; read by everything below
    config = resolved.config
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
    return PreparedRun(config, plan, model, dataset, run_dir, manifest, device)


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
