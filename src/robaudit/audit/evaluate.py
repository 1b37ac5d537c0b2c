"""`evaluate` as a library call: the config schema, CLI overrides, and the run that writes a run directory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from robaudit.attacks import ResolvedAttack, resolve_attack
from robaudit.attacks.precision import check_precision
from robaudit.audit.convergence import ConvergenceSpec, rungs_for
from robaudit.audit.execute import PartExecutor
from robaudit.audit.pipeline import Pipeline
from robaudit.audit.plan import AuditPlan, Defense, Shard
from robaudit.audit.preflight import detect_randomized, preflight
from robaudit.audit.run import (
    barrier,
    merge,
    process_group,
    rank_device,
    rank_zero_first,
    run_shard,
    torchrun_active,
)
from robaudit.config import ComponentSpec, coerce, labelled, parse_eps
from robaudit.data import ImageSet
from robaudit.data.job import data_fingerprint
from robaudit.data.spec import DataSpec
from robaudit.errors import ConfigError, Interrupted
from robaudit.fileio import sha256_tree
from robaudit.manifest import device_info, now, resolve_device, versions
from robaudit.models.compat import data_for_model, model_transform
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.spec import ModelSpec, obtain_classifier
from robaudit.progress import console
from robaudit.purifiers.resolve import ResolvedPurifier, obtain_purifier, resolve_purifier
from robaudit.purifiers.surrogate import CALIBRATION_SAMPLES, calibrate_surrogate, surrogate_target
from robaudit.registry import check_keys, did_you_mean
from robaudit.reporting.gates import Gate
from robaudit.reporting.report import rebuild_reports
from robaudit.rundir import RunDir
from robaudit.threats import NONE, THREATS

EVALUATE_KEYS = [
    "model",
    "data",
    "attacks",
    "purifiers",
    "threats",
    "eot",
    "repeats",
    "selection_draws",
    "eps",
    "eps_l2",
    "seed",
    "out",
    "batch_size",
    "part_size",
    "device",
    "precision",
    "compile",
    "gates",
    "convergence",
]


@dataclass
class EvaluateConfig:
    """Everything an evaluation needs. ``eps`` is the Linf budget, ``eps_l2`` the L2 budget."""

    model: ModelSpec
    data: DataSpec
    attacks: list[ComponentSpec] = field(default_factory=list)
    purifiers: list[ComponentSpec] = field(default_factory=list)
    threats: list[str] = field(default_factory=lambda: list(THREATS))
    eot: int = 4
    repeats: int = 10
    selection_draws: int = 10
    eps: float = 8 / 255
    eps_l2: float = 0.5
    eps_sweep: list[float] = field(default_factory=list)  # extra Linf budgets (robust accuracy vs eps)
    eps_l2_sweep: list[float] = field(default_factory=list)
    seed: int = 0
    out: str | None = None
    batch_size: int | None = None  # None: 128 on a CPU, what free memory holds on CUDA (audit.batching)
    part_size: int = 128  # samples per records part: the unit of resuming and sharding (not of batching)
    device: str = "auto"
    precision: str = "fp32"  # attack iterations under autocast ("bf16"); verdicts always float32
    compile: bool = False  # torch.compile the classifier's network (changes speed, not records)
    gates: list[str] = field(
        default_factory=list
    )  # checked after the run (robaudit.reporting.gates); CLI --gate adds more
    convergence: ConvergenceSpec = field(default_factory=ConvergenceSpec)  # audit.convergence

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> EvaluateConfig:
        """Validate a config mapping (YAML + overrides); unknown keys are errors naming the key."""
        check_keys(mapping, EVALUATE_KEYS, where="config")
        if "model" not in mapping or mapping["model"] is None:
            raise ConfigError("no model given; pass --model PATH or set 'model:' in the config")
        if "data" not in mapping or mapping["data"] is None:
            raise ConfigError("no data given; pass --data NAME|PATH or set 'data:' in the config")
        attacks = mapping.get("attacks") or []
        if isinstance(attacks, str):
            attacks = [a for a in attacks.split(",") if a.strip()]
        if not isinstance(attacks, list):
            raise ConfigError("attacks: expected a list of names or {name: ..., ...} mappings")
        purifiers = mapping.get("purifiers") or []
        if isinstance(purifiers, str):
            purifiers = [p for p in purifiers.split(",") if p.strip()]
        threats = mapping.get("threats") or list(THREATS)
        if isinstance(threats, str):
            threats = [t.strip() for t in threats.split(",") if t.strip()]
        for threat in threats:
            if threat not in THREATS:
                raise ConfigError(
                    f"unknown threat model {threat!r}; valid: {', '.join(THREATS)}"
                    + did_you_mean(threat, list(THREATS))
                )
        config = cls(
            model=ModelSpec.parse(mapping["model"]),
            data=DataSpec.parse(mapping["data"]),
            attacks=[ComponentSpec.parse(a, where="attacks") for a in attacks],
            purifiers=[ComponentSpec.parse(p, where="purifiers") for p in purifiers],
            threats=list(threats),
        )
        for key in ("eps", "eps_l2"):
            if key in mapping:
                budgets = parse_budgets(mapping[key], name=key)
                setattr(config, key, budgets[-1])
                setattr(config, f"{key}_sweep", budgets[:-1])
        for key, hint in (
            ("seed", int),
            ("batch_size", int),
            ("part_size", int),
            ("out", str),
            ("device", str),
            ("precision", str),
            ("compile", bool),
            ("eot", int),
            ("repeats", int),
            ("selection_draws", int),
        ):
            if mapping.get(key) is not None:
                setattr(config, key, coerce(mapping[key], hint, where=key))
        config.gates = parse_gates(mapping.get("gates"))
        default_mode = "escalate" if config.gates else "check"  # a run that gates a release escalates
        config.convergence = ConvergenceSpec.parse(mapping.get("convergence"), default_mode=default_mode)
        check_precision(config.precision)
        for key in ("batch_size", "part_size", "eot", "repeats", "selection_draws"):
            if getattr(config, key) is not None and getattr(config, key) <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(config, key)}")
        return config

    def resolved_attacks(self) -> list[ResolvedAttack]:
        """Each attack with all parameters fixed and a unique label: its ``label:``, else its name (a repeated name
        gets ``#2``, ``#3``...)."""
        resolved = []
        for label, spec in labelled(self.attacks, where="attacks"):
            attack = resolve_attack(spec.name, spec.params, eps=self.eps, eps_l2=self.eps_l2)
            attack.label = label
            resolved.append(attack)
            if "eps" in spec.params:
                continue  # an explicit budget: no sweep
            for budget in self.eps_sweep if attack.norm == "Linf" else self.eps_l2_sweep:
                extra = resolve_attack(spec.name, {**spec.params, "eps": budget}, eps=self.eps, eps_l2=self.eps_l2)
                extra.label, extra.sweep = f"{attack.label}@{budget:.4g}", True
                resolved.append(extra)
        with_rungs = []
        for attack in resolved:
            with_rungs += [attack, *rungs_for(attack, self.convergence)]
        return with_rungs

    def resolved_purifiers(self) -> list[ResolvedPurifier]:
        """Each purifier with its hyperparameters fixed and a unique label (its ``label:``, or as for attacks)."""
        return [resolve_purifier(spec, label=label) for label, spec in labelled(self.purifiers, where="purifiers")]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as saved in the run directory."""
        purifiers = {}
        if self.purifiers:
            purifiers = {"purifiers": [p.to_dict() for p in self.resolved_purifiers()], "threats": self.threats}
        randomized = {"eot": self.eot, "repeats": self.repeats, "selection_draws": self.selection_draws}
        return {
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "attacks": [a.to_dict() for a in self.resolved_attacks()],
            **purifiers,
            **randomized,
            "eps": self.eps,
            "eps_l2": self.eps_l2,
            **({"eps_sweep": self.eps_sweep} if self.eps_sweep else {}),
            **({"eps_l2_sweep": self.eps_l2_sweep} if self.eps_l2_sweep else {}),
            "seed": self.seed,
            "part_size": self.part_size,
            **({"batch_size": self.batch_size} if self.batch_size is not None else {}),
            "device": self.device,
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            **({"compile": True} if self.compile else {}),
            **({"gates": self.gates} if self.gates else {}),
            "convergence": self.convergence.to_dict(),
        }

    def fingerprinted(self) -> dict[str, Any]:
        """The part of the config that decides the records: not the batch size, device, compile or gates."""
        return {k: v for k, v in self.to_dict().items() if k not in ("batch_size", "device", "compile", "gates")}


def parse_gates(value: object) -> list[str]:
    """``gates:`` (or ``--gate``) as a list of gate expressions (``robust_accuracy>=0.3``), each checked before any
    work: the one place gates are parsed before a run (``reporting.gates`` judges them after it)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(g, str) for g in items):
        raise ConfigError("gates: expected a list of expressions, e.g. ['robust_accuracy>=0.3']")
    for text in items:
        Gate.parse(text)
    return list(items)


def parse_budgets(value: object, *, name: str) -> list[float]:
    """One budget or several (a list, or ``"2/255,4/255,8/255"``), sorted; the largest is the headline budget."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else [value]
    budgets = sorted({parse_eps(item, name=name) for item in items})
    if not budgets:
        raise ConfigError(f"{name}: give at least one budget, e.g. {name}=8/255")
    return budgets


def default_out(config: EvaluateConfig, model_path: Path) -> Path:
    """``runs/<model>-<data>-<hash of config>``: the same command reopens (resumes) the same directory."""
    key = hashlib.sha256(json.dumps(config.fingerprinted(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{model_path.stem}-{Path(config.data.source).stem}-{key}"


def build_defenses(
    config: EvaluateConfig,
    model: torch.nn.Module,
    *,
    model_sha: str,
    stochastic_classifier: bool,
    device: torch.device,
    trust_checkpoint: bool,
    trust_code: bool = False,
    input_shape: tuple[int, ...] | None = None,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[list[Defense], dict[str, Any]]:
    """The undefended classifier and one defense per configured purifier (obtained or trained), with details.

    A randomized pipeline (stochastic purifier or randomized classifier) is scored ``config.repeats`` times. A
    purifier at another resolution than ``input_shape`` (the classifier's input, C, H, W) runs inside a bridge. A
    DDIM surrogate set to ``auto`` is measured on ``calibration`` (images (N, C, H, W), labels (N,)).
    """
    bare = Pipeline(model, stochastic_classifier=stochastic_classifier)
    defenses = [Defense(NONE, None, config.repeats if bare.stochastic else 1, [NONE], bare)]
    details = {}
    for spec in config.resolved_purifiers():
        purifier, provenance = obtain_purifier(
            spec,
            data_source=config.data.source,
            image_size=config.data.image_size,
            channels=config.data.channels,
            transform=model_transform(model),
            seed=config.seed,
            device=str(device),
            classifier=model,
            classifier_sha256=model_sha,
            trust_checkpoint=trust_checkpoint,
            trust_code=trust_code,
            input_shape=input_shape,
        )
        surrogate = calibrate(purifier, model, calibration, seed=config.seed, device=device)
        scoring = Pipeline(model, purifier, stochastic_classifier=stochastic_classifier)
        repeats = config.repeats if scoring.stochastic else 1
        defenses.append(Defense(spec.label, purifier, repeats, list(config.threats), scoring, spec.eot, spec.graft))
        details[spec.label] = {
            **{k: provenance[k] for k in PROVENANCE_KEYS if k in provenance},
            "stochastic": purifier.stochastic,
            "randomized_pipeline": scoring.stochastic,
            "differentiable": purifier.differentiable,
            "ensemble": purifier.ensemble,
            "gradient": gradient_statement(purifier, spec.graft),
            **({"surrogate": surrogate} if surrogate else {}),
            "repeats": repeats,
            "eot": (spec.eot or config.eot) if scoring.stochastic else 1,
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
    """Merge the run's shards (``audit.run.merge``) and rebuild its reports from the records that exist."""
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
        if shard.index == 0 and (shard.count == 1 or torchrun_active()):
            merge_and_report(prepared.run_dir.path)
        elif not torchrun_active():
            path = escape(str(prepared.run_dir.path))
            console.print(f"shard {shard} done; when every shard is done: robaudit report {path}")
    return prepared.run_dir.path


def note_attack_details(prepared: PreparedRun, key: str, attack: Any) -> None:
    """Keep what a built attack reports about itself (AutoAttack's version and components) in the manifest."""
    if getattr(attack, "details", None):
        prepared.manifest["attack_details"][key] = attack.details


def prepare_run(
    config: EvaluateConfig, *, overwrite: bool, trust_checkpoint: bool, shard: Shard, trust_code: bool = False
) -> PreparedRun:
    """Load the classifier, data and purifiers (training missing ones), open the run directory, run the pre-flight
    checks and build the plan."""
    config.model.trust_checkpoint = trust_checkpoint
    device = rank_device(resolve_device(config.device))
    attacks = config.resolved_attacks()  # validate names and keys before any work
    config.resolved_purifiers()
    model, model_path = obtain_classifier(config.model, device=str(device))
    dataset = data_for_model(model, config.data)
    data_sha = data_fingerprint(dataset)  # reads (and checks) every image before any work
    model_sha = model_fingerprint(model, model_path)
    detected = detect_randomized(model.cpu(), dataset)
    randomized = {"declared": bool(config.model.stochastic), "detected": detected}
    randomized["stochastic"] = randomized["declared"] or detected
    with rank_zero_first():  # rank 0 trains missing purifiers and prepares the directory; the others then join
        defenses, purifier_details = build_defenses(
            config,
            model,
            model_sha=model_sha,
            stochastic_classifier=randomized["stochastic"],
            device=device,
            trust_checkpoint=trust_checkpoint,
            trust_code=trust_code,
            input_shape=tuple(dataset.shape),
            calibration=(dataset.images[:CALIBRATION_SAMPLES], dataset.labels[:CALIBRATION_SAMPLES]),
        )
        out = Path(config.out) if config.out else default_out(config, model_path)
        fingerprint = run_fingerprint(config.fingerprinted(), model_sha, data_sha, purifier_details)
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
    run_dir.write_config(config.to_dict())
    model.to(device)
    plan = AuditPlan(
        attacks=attacks,
        defenses=defenses,
        seed=config.seed,
        eot=config.eot,
        draws=config.selection_draws,
        num_samples=len(dataset),
        part_size=config.part_size,
        convergence_fraction=config.convergence.fraction,
    )
    return PreparedRun(plan, model, dataset, run_dir, manifest, device)


def _card_dict(model: torch.nn.Module) -> dict[str, Any]:
    from dataclasses import asdict

    card = asdict(model.card)
    card.get("training", {}).pop("history", None)
    return card
