"""The evaluate config: its schema (``EvaluateConfig``, whose fields are the keys a config may set), its one parse
(``EvaluateConfig.parse``: every check, no torch), its defaults (``with_defaults``) and the audit it resolves to once
(``ResolvedAudit``)."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from robaudit.certify.spec import CertifySpec
from robaudit.components.catalog import catalog
from robaudit.components.hyperparameters import check_component
from robaudit.config import ComponentSpec, check_keys, checked_field, did_you_mean, labelled, parse_eps, rules
from robaudit.data.spec import DataSpec
from robaudit.engine.convergence import ConvergenceSpec, with_rungs
from robaudit.engine.defaults import default_attacks, default_data
from robaudit.errors import ConfigError
from robaudit.models.spec import ModelSpec
from robaudit.reporting.gates import Gate
from robaudit.threats import THREATS

if TYPE_CHECKING:  # reading and checking a config imports no torch; resolving its components does
    from robaudit.attacks import ResolvedAttack
    from robaudit.purifiers.resolve import ResolvedPurifier

NOT_FINGERPRINTED = (  # speed, judging or the records' files
    "batch_size",
    "device",
    "compile",
    "gates",
    "batch_draws",
    "draw_chunk",
    "part_seconds",
)


def setting(
    default: Any,
    coerce_to: type,
    *,
    positive: bool = False,
    at_least: float | None = None,
    choices: tuple[str, ...] = (),
    saved: str = "always",
    flag: str | None = None,
) -> Any:
    """A scalar config key, declared where its field is: the ``default``, the type a YAML or flag value is coerced
    to, whether it must be positive, its least value (``at_least``), the values it may take (``choices``; empty:
    any), when the saved config writes
    it (``always``; ``when_set``: when it is not the default; ``never``) and, when ``robaudit evaluate`` sets it from
    a flag ``--KEY``, that flag's help (``flag``). A new scalar key is this one field."""
    declared = rules(default, positive=positive, at_least=at_least, choices=choices).metadata
    return field(default=default, metadata={**declared, "coerce": coerce_to, "saved": saved, "flag": flag})


def flagged(default: Any, flag: str, *, given_as: type = str) -> Any:
    """A config key that is not a scalar setting (a budget, the convergence mode) but that ``robaudit evaluate``
    sets from a flag ``--KEY`` (typed ``given_as``; ``flag``: its help)."""
    factory = default if callable(default) else None
    return field(
        **({"default_factory": factory} if factory else {"default": default}),
        metadata={"flag": flag, "flag_type": given_as},
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything an evaluation needs, read-only (its lists are tuples). ``eps`` is the Linf budget, ``eps_l2`` the
    L2 budget."""

    model: ModelSpec
    data: DataSpec | None = None  # None (or no source): the model's training data (``with_defaults``)
    attacks: list[ComponentSpec] | None = None  # None: the default attacks (``with_defaults``)
    purifiers: list[ComponentSpec] = field(default_factory=list)
    threats: list[str] = field(default_factory=lambda: list(THREATS))
    eot: int = setting(4, int, positive=True, flag="EOT draws per gradient on a randomized pipeline (default 4).")
    repeats: int = setting(
        10, int, positive=True, flag="Scoring draws of a randomized pipeline's prediction (default 10; worst of N)."
    )
    selection_draws: int = setting(
        10, int, positive=True, flag="Draws that judge an attack's candidates on a randomized pipeline (default 10)."
    )
    eps: float = flagged(
        8 / 255, "Linf budget, e.g. 8/255 (default 8/255); a comma list also sweeps the smaller budgets."
    )
    eps_l2: float = flagged(0.5, "L2 budget for L2 attacks (default 0.5).")
    eps_sweep: list[float] = field(default_factory=list)  # extra Linf budgets (robust accuracy vs eps)
    eps_l2_sweep: list[float] = field(default_factory=list)
    seed: int = setting(0, int, flag="Seed of every random choice (default 0).")
    out: str | None = setting(  # the run directory (its name is not part of the run)
        None, str, saved="never", flag="Run directory (default runs/<model>-<data>-<config hash>)."
    )
    part_size: int = setting(
        128, int, positive=True, flag="Samples per records part, the unit of resuming and sharding (default 128)."
    )
    part_seconds: float = setting(  # one process sizes its parts by time (engine.part_sizing); changes no record
        240.0,
        float,
        at_least=0,
        saved="when_set",
        flag="Target seconds per records part in a one-process run, at most part_size samples; 0: by count "
        "(default 240).",
    )
    batch_size: int | None = setting(  # None: engine.batching decides
        None,
        int,
        positive=True,
        saved="when_set",
        flag="Samples per batch (default: 128 on CPU, fit to free memory on CUDA; changes no result).",
    )
    device: str = setting("auto", str, flag="cpu, cuda or auto (default auto).")
    precision: str = setting(
        "fp32",
        str,
        choices=("fp32", "bf16"),
        saved="when_set",
        flag="fp32 or bf16: attack iterations under bf16 autocast; verdicts stay fp32 (default fp32).",
    )
    compile: bool = setting(
        False,
        bool,
        saved="when_set",
        flag="torch.compile the networks and philox draws (speed; last bits may round differently).",
    )
    batch_draws: bool = setting(True, bool, saved="when_set")  # a sample's draws as rows of one batch
    draw_chunk: int | None = setting(None, int, positive=True, saved="when_set")  # rows per call; None: all
    rng: str = setting(
        "generator",
        str,
        choices=("generator", "philox"),
        saved="when_set",
        flag="Random streams: generator (a torch.Generator per sample, the default) or philox (counter-based: every "
        "row of a draw at once, the same draws on CPU and GPU). Changes the draws, so the records.",
    )
    gates: list[str] = field(
        default_factory=list
    )  # checked after the run (robaudit.reporting.gates); CLI --gate adds more
    convergence: ConvergenceSpec = flagged(
        ConvergenceSpec,
        "Convergence check: check (one escalated rung, the default), escalate (rungs up to the ceiling; the default "
        "with --gate) or off.",
    )

    certify: CertifySpec | None = flagged(
        None,
        "Certify every sample by randomized smoothing (sigma 0.25 and 0.5, n0 100, n 10000, alpha 0.001): through a "
        "ddpm purifier's one-shot denoiser, or noise alone without one; config certify: {sigma, n0, n, alpha}.",
        given_as=bool,
    )

    def __post_init__(self) -> None:
        for name in ("attacks", "purifiers", "threats", "eps_sweep", "eps_l2_sweep", "gates"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def parse(cls, mapping: Mapping[str, Any]) -> EvaluateConfig:
        """A config mapping (YAML + overrides) validated once, every check in this one call: keys, component names
        with their hyperparameters' keys and plain types (from the catalog), budgets, scalar settings, gates,
        convergence, certify, the model spec (``train:`` recipes included), the data spec, and a missing model file
        or an unknown dataset. Imports no torch; what the config leaves out stays unset for ``with_defaults``."""
        settings = checked_settings(mapping)
        if mapping.get("model") is None:
            raise ConfigError("no model given; pass --model PATH or set 'model:' in the config")
        model = ModelSpec.parse(mapping["model"])
        model.check_file()
        data = None if mapping.get("data") is None else DataSpec.parse(mapping["data"])
        if data is not None:
            data.check_source()
        return cls(**settings, model=model, data=data)

    def with_defaults(self) -> EvaluateConfig:
        """The config with what it leaves out filled in, decided here and nowhere else (``engine.defaults``): the
        data (the model's training data), the attacks (the default ones, unless the data is a stored adversarial
        set) and the convergence mode (escalate when the run has gates, else check). A settled config comes back
        equal; reading a checkpoint's training data may import torch."""
        data = self.data if self.data is not None and self.data.source else default_data(self.model, self.data)
        attacks = self.attacks if self.attacks is not None else default_attacks(data)
        convergence = self.convergence.settled(gated=bool(self.gates))
        return replace(self, data=data, attacks=attacks, convergence=convergence)

    def resolved_attacks(self) -> list[ResolvedAttack]:
        """Each attack with all parameters fixed and a unique label: its ``label:``, else its name (a repeated name
        gets ``#2``, ``#3``...); defaults applied first."""
        from robaudit.attacks import resolve_attack

        config = self.with_defaults()
        resolved = []
        for label, spec in labelled(config.attacks, where="attacks"):
            attack = replace(resolve_attack(spec.name, spec.params, eps=self.eps, eps_l2=self.eps_l2), label=label)
            resolved.append(attack)
            if "eps" in spec.params:
                continue  # an explicit budget: no sweep
            for budget in self.eps_sweep if attack.norm == "Linf" else self.eps_l2_sweep:
                extra = resolve_attack(spec.name, {**spec.params, "eps": budget}, eps=self.eps, eps_l2=self.eps_l2)
                resolved.append(replace(extra, label=f"{attack.label}@{budget:.4g}", sweep=True))
        return with_rungs(resolved, config.convergence)

    def resolved_purifiers(self) -> list[ResolvedPurifier]:
        """Each purifier with its hyperparameters fixed and a unique label (its ``label:``, or as for attacks)."""
        from robaudit.purifiers.resolve import resolve_purifier

        return [resolve_purifier(spec, label=label) for label, spec in labelled(self.purifiers, where="purifiers")]

    def resolve(self) -> ResolvedAudit:
        """The audit with its defaults applied and every component resolved once: what the fingerprint, the saved
        config, the defenses, the plan and the manifest all read (the config itself has no saved form: only its
        resolution does)."""
        config = self.with_defaults()
        return ResolvedAudit(config, tuple(config.resolved_attacks()), tuple(config.resolved_purifiers()))


@dataclass(frozen=True)
class ResolvedAudit:
    """An ``EvaluateConfig`` with its attacks (convergence rungs and sweep budgets included) and purifiers resolved,
    immutable."""

    config: EvaluateConfig
    attacks: tuple[ResolvedAttack, ...]
    purifiers: tuple[ResolvedPurifier, ...]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as saved in the run directory."""
        config = self.config
        purifiers = {}
        if config.purifiers:
            purifiers = {"purifiers": [p.to_dict() for p in self.purifiers], "threats": list(config.threats)}
        randomized = saved_settings(config, until="selection_draws")
        return {
            "model": config.model.to_dict(),
            "data": config.data.to_dict(),
            "attacks": [a.to_dict() for a in self.attacks],
            **purifiers,
            **randomized,
            "eps": config.eps,
            "eps_l2": config.eps_l2,
            **({"eps_sweep": list(config.eps_sweep)} if config.eps_sweep else {}),
            **({"eps_l2_sweep": list(config.eps_l2_sweep)} if config.eps_l2_sweep else {}),
            **saved_settings(config, after="selection_draws"),
            **({"gates": list(config.gates)} if config.gates else {}),
            "convergence": config.convergence.to_dict(),
            **({"certify": config.certify.to_dict()} if config.certify else {}),
        }

    def fingerprinted(self) -> dict[str, Any]:
        """The part of the config that decides the records: not the batch size, device, compile or gates."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_FINGERPRINTED}


def checked_settings(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``EvaluateConfig`` a config mapping sets, besides its model and data, each coerced and checked:
    keys, components (names, hyperparameter keys and plain types, from the catalog), threat models, budgets, scalar
    settings (``config.checked_field``), gates, convergence and certify."""
    check_keys(mapping, evaluate_keys(), where="config")
    settings: dict[str, Any] = {
        "purifiers": component_specs(mapping.get("purifiers"), kind="purifier"),
        "threats": threat_models(mapping.get("threats")),
    }
    if "attacks" in mapping:  # absent: the default attacks; given empty: none
        settings["attacks"] = component_specs(mapping["attacks"], kind="attack")
    for key in ("eps", "eps_l2"):
        if key in mapping:
            budgets = parse_budgets(mapping[key], name=key)
            settings[key], settings[f"{key}_sweep"] = budgets[-1], budgets[:-1]
    hints = typing.get_type_hints(EvaluateConfig)
    for key in scalar_settings():
        if mapping.get(key.name) is not None:
            settings[key.name] = checked_field(key, mapping[key.name], hints[key.name], where=key.name)
    settings["gates"] = parse_gates(mapping.get("gates"))
    settings["convergence"] = ConvergenceSpec.parse(mapping.get("convergence"))  # its mode settled by the defaults
    settings["certify"] = CertifySpec.parse(mapping.get("certify"))
    if settings["certify"] is not None:
        check_certifiable(settings["purifiers"])
    return settings


def check_certifiable(purifiers: list[ComponentSpec]) -> None:
    """A ConfigError naming the first purifier randomized smoothing cannot certify through (its registration's
    ``certifies``, read from the catalog)."""
    for spec in purifiers:
        if not catalog("purifier").get(spec.name).meta.get("certifies"):
            raise ConfigError(
                f"certify: purifier {spec.name!r} cannot certify; certification needs a diffusion model's one-shot "
                "denoiser (ddpm, also from hf-hub: or local-dir:) or no purifier; drop --certify or the purifier"
            )


def component_specs(value: object, *, kind: str) -> list[ComponentSpec]:
    """``attacks:`` or ``purifiers:`` (a list, or a comma string) as specs whose names are registered."""
    items = [item for item in value.split(",") if item.strip()] if isinstance(value, str) else value or []
    if not isinstance(items, list):
        raise ConfigError(f"{kind}s: expected a list of names or {{name: ..., ...}} mappings")
    specs = [ComponentSpec.parse(item, where=f"{kind}s") for item in items]
    for spec in specs:
        check_component(spec, kind=kind)
    return specs


def threat_models(value: object) -> list[str]:
    """``threats:`` (a list, or a comma string; default all) checked against ``threats.THREATS``."""
    threats = value or list(THREATS)
    if isinstance(threats, str):
        threats = [t.strip() for t in threats.split(",") if t.strip()]
    for threat in threats:
        if threat not in THREATS:
            raise ConfigError(
                f"unknown threat model {threat!r}; valid: {', '.join(THREATS)}" + did_you_mean(threat, list(THREATS))
            )
    return list(threats)


def flag_table() -> dict[str, tuple[type, str]]:
    """``{key: (type, help)}`` of the config keys ``robaudit evaluate`` sets from a flag ``--KEY``, declared on
    their fields (``setting(..., flag=)``, ``flagged``): the CLI builds its flags from this."""
    return {
        f.name: (f.metadata.get("flag_type") or f.metadata["coerce"], f.metadata["flag"])
        for f in fields(EvaluateConfig)
        if f.metadata.get("flag")
    }


def scalar_settings() -> list[Any]:
    """The fields of ``EvaluateConfig`` declared with ``setting``, in order."""
    return [f for f in fields(EvaluateConfig) if "coerce" in f.metadata]


def saved_settings(config: EvaluateConfig, *, after: str | None = None, until: str | None = None) -> dict[str, Any]:
    """The scalar settings the saved config writes (each field's ``saved`` rule), in field order, from the one after
    ``after`` (default: the first) through ``until`` (default: the last)."""
    names = [f.name for f in scalar_settings()]
    start = names.index(after) + 1 if after else 0
    stop = names.index(until) + 1 if until else len(names)
    out = {}
    for key in scalar_settings()[start:stop]:
        value, rule = getattr(config, key.name), key.metadata["saved"]
        if rule == "always" or (rule == "when_set" and value != key.default):
            out[key.name] = value
    return out


def evaluate_keys() -> list[str]:
    """The keys a config may set: the fields of ``EvaluateConfig`` (an eps sweep is set through ``eps`` itself)."""
    return [f.name for f in fields(EvaluateConfig) if not f.name.endswith("_sweep")]


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
