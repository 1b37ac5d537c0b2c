"""The convergence check: a robust accuracy is an upper bound that means something only if the attack converged
(Carlini et al. 2019: "increasing the number of iterations and restarts does not lower accuracy further").

``scope: headline`` (the default) certifies the headline: after every attack ran, the samples standing in each
defense's and threat model's worst case are attacked again by the strongest attack that ran there, at the
references' escalation (``factor`` 2: twice the iterations from new random starts, twice the EOT draws on a
randomized pipeline; AutoAttack: the ``plus`` restarts), on the samples its loss trace flags and a seeded subset of
the rest sized so that, if none falls, the headline falls by at most ``delta`` at ``confidence``
(``robaudit.headline.headline_check``, ``robaudit.headline.check_bound``). If any falls, the rung runs on every
standing sample and ``mode: escalate`` may climb one more (``rungs`` at most).

``scope: attack`` keeps the research ladders: every attack's own survivors attacked again at ``factor`` times the effort
(steps, restarts, queries), rung after rung, each judged on ``tolerance`` (samples a rung may break) or the lower edge
of the interval below; ``fraction`` < 1 re-attacks a seeded subsample (a sample's membership depends only on the run
seed, the condition and its id). A rung is a condition of its own (label ``pgd+x2``) whose records keep, for every
sample not attacked again, the verdict of the rung below, so that the headline -- the per-sample worst case over
everything run -- reads the strongest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from robaudit.config import build_dataclass, rules
from robaudit.errors import ConfigError
from robaudit.frozen import thawed
from robaudit.rng.seeding import derive_seed

MODES = ("check", "escalate", "off")
SCOPES = ("headline", "attack")


@dataclass(frozen=True)
class ConvergenceSpec:
    """How the convergence check runs: ``mode`` (check, escalate or off), ``scope`` (headline: certify the worst
    case; attack: a ladder per attack), the effort ``factor`` per rung, the ``rungs`` of an escalation (its ceiling:
    factor^rungs); for the headline, ``delta`` (the fall of the headline certified, a fraction) at ``confidence``;
    for attack ladders, the ``fraction`` of survivors re-attacked and the ``tolerance``."""

    mode: str | None = rules(None, choices=MODES)  # None: not given; ``settled`` decides (escalate when gated)
    scope: str = rules("headline", choices=SCOPES)
    factor: int = rules(2, at_least=2)
    rungs: int = rules(2, at_least=1)
    delta: float = 0.02
    confidence: float = 0.95
    fraction: float = 1.0
    tolerance: int = rules(1, at_least=0)

    @classmethod
    def parse(cls, value: object) -> ConvergenceSpec:
        """``convergence:`` as a mode name, ``false`` (off) or a mapping of the fields; absent: the mode is left to
        ``settled``."""
        if value is None:
            return cls()
        if value is False:
            return cls(mode="off")
        mapping = {"mode": value} if isinstance(value, str) else value
        if not isinstance(mapping, dict):
            raise ConfigError(f"convergence: expected check, escalate, off or a mapping, got {value!r}")
        spec = build_dataclass(cls, mapping, where="convergence")
        spec.validate()
        return spec

    def settled(self, *, gated: bool) -> ConvergenceSpec:
        """The spec with its mode decided: as given, else ``escalate`` for a run that gates a release (``gated``)
        and ``check`` otherwise."""
        return self if self.mode is not None else replace(self, mode="escalate" if gated else "check")

    def validate(self) -> None:
        """One-line errors for values that make no check, besides each field's own rules (``config.rules``)."""
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"convergence needs 0 < fraction <= 1 (e.g. 0.5); got fraction {self.fraction}")
        if not 0 <= self.delta < 1 or not 0.5 <= self.confidence < 1:
            raise ConfigError(
                "convergence needs 0 <= delta < 1 (e.g. 0.02: two points) and 0.5 <= confidence < 1 (e.g. 0.95); "
                f"got delta {self.delta}, confidence {self.confidence}"
            )

    @property
    def rung_count(self) -> int:
        """Rungs each attack gets: none when off, one to check, ``rungs`` to escalate."""
        return {"off": 0, "check": 1, "escalate": self.rungs}[self.mode]

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the saved config: the scope's own settings."""
        own = ("delta", "confidence") if self.scope == "headline" else ("fraction", "tolerance")
        return {name: getattr(self, name) for name in ("mode", "scope", "factor", "rungs", *own)}


def escalation(attack: Any) -> Any:
    """The registered ``escalate`` of ``attack`` (a ResolvedAttack), or None: nothing to escalate (FGSM), a sweep
    budget or a rung."""
    from robaudit.attacks.base import ATTACKS

    escalate = ATTACKS.get(attack.name).meta.get("escalate") if attack.name in ATTACKS else None
    return None if attack.sweep or attack.convergence_of is not None else escalate


def strongest(attacks: list[Any]) -> Any:
    """The attack the headline check escalates: the highest tier among those that can escalate (the first of
    equals); None when none can."""
    candidates = [a for a in attacks if escalation(a) is not None]
    return max(candidates, key=lambda a: a.tier or 0, default=None)


def with_rungs(attacks: list[Any], spec: ConvergenceSpec) -> list[Any]:
    """``attacks`` with their convergence rungs: after every attack (``scope: attack``), or after the strongest
    (``scope: headline``)."""
    top = strongest(attacks) if spec.scope == "headline" else None
    out = []
    for attack in attacks:
        if attack is top and spec.rung_count:
            out += [checked(attack), *rungs_for(checked(attack), spec)]
        else:
            out += [attack, *(rungs_for(attack, spec) if spec.scope == "attack" else [])]
    return out


def checked(attack: Any) -> Any:
    """``attack`` (a ResolvedAttack) as it runs when the headline check follows it: its registry's ``checked``
    (fast AutoAttack defers its Square to the check's sized draw); unchanged when it registers none."""
    from robaudit.attacks.base import ATTACKS

    hook = ATTACKS.get(attack.name).meta.get("checked") if attack.name in ATTACKS else None
    return attack if hook is None else replace(attack, params=hook(thawed(attack.params)))


def rungs_for(attack: Any, spec: ConvergenceSpec) -> list[Any]:
    """The escalated rungs of ``attack`` (a ResolvedAttack): none for a sweep budget or an attack with nothing to
    escalate (FGSM)."""
    from robaudit.attacks.base import ATTACKS

    escalate = escalation(attack)
    if escalate is None:
        return []
    describe = ATTACKS.get(attack.name).meta.get("describe_rung")
    rungs = []
    for rung in range(1, spec.rung_count + 1):
        scale = spec.factor**rung
        params = escalate(thawed(attack.params), scale)
        label = f"{attack.label}+x{scale}"
        grows = int(params.get("eot_growth") or 1) > 1  # the rung grows its own EOT where it needs more draws
        rungs.append(
            replace(
                attack,
                params=params,
                label=label,
                convergence_of=attack.label,
                rung=rung,
                eot_scale=1 if grows else scale,
                check_scope=spec.scope,
                rung_text=(describe(params) if describe else None) or "",
            )
        )
    return rungs


def reattacked(seed: int, condition_key: str, sample_id: str, fraction: float) -> bool:
    """Whether a surviving sample is re-attacked at a rung when only ``fraction`` of survivors are: a function of
    the run seed, the rung's condition and the sample's id alone (the same in every batch and shard)."""
    if fraction >= 1:
        return True
    return derive_seed(seed, "convergence", condition_key, sample_id) / 2**63 < fraction
