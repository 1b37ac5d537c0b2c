"""The convergence check: a robust accuracy is an upper bound that means something only if the attack converged
(Carlini et al. 2019: "increasing the number of iterations and restarts does not lower accuracy further").

After each attack, the samples it did not break (robust in every scoring draw) are attacked again at an escalated
budget: ``factor`` times the steps (queries for Square), ``factor`` times the EOT draws on a randomized pipeline, from
new random starts (the rung's own seeds: at least one more restart over the ladder). That is a *rung*: a condition of
its own (label ``pgd+x4``) whose records keep, for every sample not attacked again, the verdict of the rung below, so
that both verdicts stay in the records and the headline -- the per-sample worst case over everything run -- reads the
strongest. ``mode: check`` runs one rung; ``mode: escalate`` (the default of runs that gate a release) runs ``rungs``
rungs (factor, factor^2, ...), each on the samples the one below left standing: the ladder stops being paid for where no
sample stands. The report judges each rung: the check passes at the first rung that breaks at most ``tolerance`` samples
more (or keeps the robust accuracy within the lower edge of the interval below it). ``fraction`` < 1 re-attacks a seeded
subsample of the survivors (a sample's membership depends only on the run seed, the condition and its id).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from robaudit.config import coerce
from robaudit.errors import ConfigError
from robaudit.registry import check_keys
from robaudit.seeding import derive_seed

MODES = ("check", "escalate", "off")


@dataclass(frozen=True)
class ConvergenceSpec:
    """How the convergence check runs: ``mode`` (check, escalate or off), the budget ``factor`` per rung, the
    ``rungs`` of an escalation (its ceiling: factor^rungs), the ``fraction`` of survivors re-attacked and the
    ``tolerance`` (samples a rung may break for the check to pass)."""

    mode: str = "check"
    factor: int = 4
    rungs: int = 2
    fraction: float = 1.0
    tolerance: int = 1

    @classmethod
    def parse(cls, value: object, *, default_mode: str = "check") -> ConvergenceSpec:
        """``convergence:`` as a mode name, ``false`` (off) or a mapping of the fields."""
        if value is None:
            return cls(mode=default_mode)
        if value is False:
            return cls(mode="off")
        mapping = {"mode": value} if isinstance(value, str) else value
        if not isinstance(mapping, dict):
            raise ConfigError(f"convergence: expected check, escalate, off or a mapping, got {value!r}")
        check_keys(mapping, ["mode", "factor", "rungs", "fraction", "tolerance"], where="convergence")
        hints = {"mode": str, "factor": int, "rungs": int, "fraction": float, "tolerance": int}
        fields = {key: coerce(mapping[key], hints[key], where=f"convergence.{key}") for key in mapping}
        spec = cls(**{"mode": default_mode, **fields})
        spec.validate()
        return spec

    def validate(self) -> None:
        """One-line errors for values that make no check."""
        if self.mode not in MODES:
            raise ConfigError(f"convergence.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.factor < 2 or self.rungs < 1 or self.tolerance < 0 or not 0 < self.fraction <= 1:
            raise ConfigError(
                "convergence needs factor >= 2, rungs >= 1, tolerance >= 0 and 0 < fraction <= 1; got "
                f"factor {self.factor}, rungs {self.rungs}, tolerance {self.tolerance}, fraction {self.fraction}"
            )

    @property
    def rung_count(self) -> int:
        """Rungs each attack gets: none when off, one to check, ``rungs`` to escalate."""
        return {"off": 0, "check": 1, "escalate": self.rungs}[self.mode]

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the saved config."""
        return {
            "mode": self.mode,
            "factor": self.factor,
            "rungs": self.rungs,
            "fraction": self.fraction,
            "tolerance": self.tolerance,
        }


def rungs_for(attack: Any, spec: ConvergenceSpec) -> list[Any]:
    """The escalated rungs of ``attack`` (a ResolvedAttack): none for a sweep budget or an attack with nothing to
    escalate (FGSM)."""
    from robaudit.attacks.base import ATTACKS

    escalate = ATTACKS.get(attack.name).meta.get("escalate") if attack.name in ATTACKS else None
    if escalate is None or attack.sweep or attack.convergence_of is not None:
        return []
    rungs = []
    for rung in range(1, spec.rung_count + 1):
        scale = spec.factor**rung
        params = escalate(dict(attack.params), scale)
        label = f"{attack.label}+x{scale}"
        rungs.append(
            replace(attack, params=params, label=label, convergence_of=attack.label, rung=rung, eot_scale=scale)
        )
    return rungs


def reattacked(seed: int, condition_key: str, sample_id: str, fraction: float) -> bool:
    """Whether a surviving sample is re-attacked at a rung when only ``fraction`` of survivors are: a function of
    the run seed, the rung's condition and the sample's id alone (the same in every batch and shard)."""
    if fraction >= 1:
        return True
    return derive_seed(seed, "convergence", condition_key, sample_id) / 2**63 < fraction
