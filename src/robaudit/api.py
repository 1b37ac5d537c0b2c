"""The library's one entry point: ``robaudit.audit(config) -> AuditResult``.

A config enters here as a YAML path, a plain mapping (the same keys as the YAML; the CLI turns its flags into one)
or an ``EvaluateConfig``. A mapping is validated once (``EvaluateConfig.parse``, no torch); then, for either, the
gates are added (the config's ``gates:`` and the ``gates`` passed here, which are the CLI's ``--gate``); the run
applies the defaults where it resolves the config (``EvaluateConfig.with_defaults``: data, attacks, and the
convergence mode a gated run escalates), whatever the caller passed. The run writes its directory; the gates are
judged on its summary, and the result says whether they passed. The CLI's exit code is read from
``AuditResult.passed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from robaudit.config import load_yaml
from robaudit.reporting.gates import GateOptions, GateResult


@dataclass(frozen=True)
class AuditResult:
    """What an audit gives back: its run directory, its summary (read-only; ``summary.json``), the gates judged
    on it and whether every one passed (None when this process ran one shard of the run: the gates are judged once
    the shards are merged, by ``robaudit report``)."""

    run_dir: Path
    summary: Mapping[str, Any]
    gates: tuple[GateResult, ...]
    complete: bool

    @property
    def passed(self) -> bool | None:
        """True when every gate passed (or none was asked for), False when one failed, None for a shard."""
        return all(gate.passed for gate in self.gates) if self.complete else None

    @property
    def headline(self) -> Mapping[str, Any]:
        """The worst case over everything run, on the last defense audited (the undefended classifier when there
        is no purifier): ``{robust_accuracy: {value, ci_low, ci_high}, over, ...}``."""
        defenses = self.summary.get("defenses") or []
        return defenses[-1]["worst_case"] if defenses else self.summary["worst_case"]


def audit(
    config: str | Path | Mapping[str, Any] | Any,
    *,
    gates: Sequence[str] = (),
    gate_options: GateOptions | None = None,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    trust_code: bool = False,
    shard: Any = None,
) -> AuditResult:
    """Run the audit ``config`` describes (a YAML path, a mapping or an ``EvaluateConfig``) and judge its gates.

    ``gates`` adds gate expressions to the config's own; ``gate_options`` sets how they are judged (bound, a
    baseline run and a largest drop, strict sanity checks). ``shard`` (an ``engine.plan.Shard``) runs one shard of a
    job array. ``trust_checkpoint`` lets pickled checkpoints load in full; ``trust_code`` lets a purifier's network
    factory import the user's code. Bad input raises ``robaudit.errors.ConfigError`` before any work."""
    from robaudit.engine.config import EvaluateConfig, parse_gates

    if not isinstance(config, EvaluateConfig):
        config = EvaluateConfig.parse(as_config_mapping(config))  # bad input fails here, at once (no torch import)
    settings = replace(config, gates=[*config.gates, *parse_gates(list(gates))])  # defaults: where the run resolves it
    return audited(
        settings,
        gate_options or GateOptions(),
        shard=shard,
        overwrite=overwrite,
        trust_checkpoint=trust_checkpoint,
        trust_code=trust_code,
    )


def audited(settings: Any, options: GateOptions, *, shard: Any, **run_options: bool) -> AuditResult:
    """Run the checked config ``settings`` (an ``EvaluateConfig``) and judge its gates with ``options``;
    ``run_options``: overwrite and the trust flags."""
    from robaudit.engine.evaluate import run_evaluation
    from robaudit.engine.plan import Shard
    from robaudit.reporting.gates import gate_run
    from robaudit.reporting.report import load_summary

    run_dir = run_evaluation(settings, shard=shard, **run_options)
    if (shard is not None and shard.count > 1) or Shard.from_environment().index != 0:
        return AuditResult(run_dir, MappingProxyType({}), (), complete=False)
    judged = gate_run(run_dir, gates=settings.gates, options=options) if settings.gates or options.asked else []
    return AuditResult(run_dir, MappingProxyType(load_summary(run_dir)), tuple(judged), complete=True)


def as_config_mapping(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A config given as a YAML path or a mapping, as a new plain dict."""
    if isinstance(config, str | Path):
        return dict(load_yaml(config))
    return dict(config)
