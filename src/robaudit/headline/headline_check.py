"""The convergence check of the headline (``convergence: {scope: headline}``, the default): which samples it
re-attacks, stage by stage, and what it certified -- a function of the run's saved config and records alone, so the
engine that runs it, every torchrun rank and job-array task, and the reports that judge it agree on every sample.

For each defense and threat model, the *population* is the samples standing in its worst case: robust, in every
scoring draw, under every attack that ran there (eps-sweep budgets aside). The *rung* is the strongest attack that
ran there (highest tier) at the references' escalation (``attacks`` registry: ``escalate``; PGD: 2x the steps from
new random starts; AutoAttack: the ``plus`` restarts at the same iterations; 2x the EOT draws on a randomized
pipeline). A rung runs in up to two stages:

1. ``draw``: every standing sample whose loss trace under the strongest attack shows incomplete optimization
   (``attacks.loss_trace``), and a seeded random subset of the rest sized by ``check_bound.subset_size`` so that,
   if none falls, at ``confidence`` the headline falls by at most ``delta`` (``allowed_fallers`` samples);
2. ``all``: if any sample of the draw fell, the rung runs on every other standing sample too, so the headline reads
   it; ``mode: escalate`` then climbs one more rung (``rungs`` at most) on the samples still standing.

A stage's records are written in parts of ``part_size`` of the samples it attacks (``part-check-x2-00000.jsonl``,
``part-check-x2-all-00000.jsonl``), so its samples run in full batches wherever they sit in the data; they hold only
the samples it attacked, and every other sample keeps the verdict of the rung below (``reporting.results``). The
chosen samples depend on the global standing count, so a stage starts only when every record below it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from robaudit.headline.check_bound import allowed_fallers, certified_fallers, subset_size
from robaudit.rng.seeding import derive_seed
from robaudit.runs.records import Condition

DRAW, ALL = "draw", "all"


@dataclass(frozen=True)
class PairCheck:
    """One (defense, threat) at one stage: the samples it attacks (ids, dataset order) and how they were chosen."""

    defense: str
    threat: str
    rung_label: str
    chosen: tuple[str, ...]
    standing: int  # samples standing below this rung
    flagged: int = 0  # of them, flagged by their loss trace (always re-attacked)
    drawn: int = 0  # of the rest, the seeded draw

    @property
    def condition(self) -> str:
        return Condition(self.rung_label, self.defense, self.threat).key()


@dataclass(frozen=True)
class Stage:
    """One stage of the check: the rung ``label``, ``kind`` draw or all, over the pairs it re-attacks."""

    label: str  # the rung attack's label, e.g. "autoattack+x2"
    kind: str
    pairs: tuple[PairCheck, ...]

    @property
    def name(self) -> str:
        """Its records parts' suffix: ``check-x2`` or ``check-x2-all``."""
        scale = self.label.rsplit("+", 1)[-1]
        return f"check-{scale}" + ("-all" if self.kind == ALL else "")

    def work(self) -> list[tuple[PairCheck, str]]:
        """(pair, sample id) for every sample the stage attacks, pair by pair in dataset order."""
        return [(pair, sample) for pair in self.pairs for sample in pair.chosen]

    def parts(self, size: int) -> list[tuple[str, list[tuple[PairCheck, str]]]]:
        """The stage's records parts: (file name, its work), ``size`` samples each."""
        work = self.work()
        return [
            (f"part-{self.name}-{k:05d}.jsonl", work[k * size : (k + 1) * size]) for k in range(-(-len(work) // size))
        ]


@dataclass
class Outcome:
    """Everything the check did for one (defense, threat): its stages, the samples each broke, and the verdict."""

    defense: str
    threat: str
    stages: list[tuple[Stage, PairCheck, list[str]]] = field(default_factory=list)  # (stage, pair, fallen ids)
    certified: bool = False
    bound: int | None = None  # at confidence, at most this many standing samples would fall (certified only)
    pending: bool = False  # a stage's records are not all written yet


@dataclass(frozen=True)
class CheckSettings:
    """What the check reads from a run's saved config."""

    seed: int
    rungs: tuple[dict[str, Any], ...]  # the headline rung attacks, lowest first
    base: tuple[str, ...]  # labels of the attacks whose worst case the check certifies
    defenses: tuple[tuple[str, tuple[str, ...]], ...]  # (label, threats)
    delta: float
    confidence: float
    mode: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CheckSettings | None:
        """The settings of a run whose config asks for the headline check; None otherwise."""
        spec = config.get("convergence") or {}
        if spec.get("mode", "off") == "off" or spec.get("scope", "attack") != "headline":
            return None
        attacks = config.get("attacks", [])
        rungs = sorted((a for a in attacks if a.get("convergence_of") is not None), key=lambda a: a["rung"])
        if not rungs:
            return None
        base = tuple(a["label"] for a in attacks if a.get("convergence_of") is None and not a.get("sweep"))
        defenses = [("none", ("none",))] + [
            (p["label"], tuple(config.get("threats", []))) for p in config.get("purifiers", [])
        ]
        return cls(
            seed=int(config.get("seed", 0)),
            rungs=tuple(rungs),
            base=base,
            defenses=tuple(defenses),
            delta=float(spec.get("delta", 0.02)),
            confidence=float(spec.get("confidence", 0.95)),
            mode=spec["mode"],
        )


class Verdicts:
    """Per (condition, sample): robust in every scoring draw, and the loss-trace flag; read from records."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.robust: dict[str, dict[str, bool]] = {}
        self.flagged: dict[str, set[str]] = {}
        self.position: dict[str, int] = {}
        for r in records:
            per = self.robust.setdefault(r["condition"], {})
            per[r["sample_id"]] = per.get(r["sample_id"], True) and bool(r["correct"])
            if r.get("incomplete"):
                self.flagged.setdefault(r["condition"], set()).add(r["sample_id"])
            self.position[r["sample_id"]] = int(r["index"])

    def standing(self, conditions: list[str], samples: list[str]) -> list[str]:
        """Samples of ``samples`` robust under every condition of ``conditions`` (all must hold a record)."""
        return [s for s in samples if all(self.robust.get(c, {}).get(s, False) for c in conditions)]

    def fallen(self, condition: str, samples: Iterable[str]) -> list[str]:
        """Samples of ``samples`` whose records under ``condition`` are not robust in every draw."""
        per = self.robust.get(condition, {})
        return [s for s in samples if s in per and not per[s]]


def seeded_draw(seed: int, condition: str, samples: list[str], count: int) -> list[str]:
    """``count`` of ``samples`` chosen by a hash of (seed, condition, sample id): the same in every process."""
    return sorted(samples, key=lambda s: derive_seed(seed, "check", condition, s))[:count]


def plan_check(
    config: dict[str, Any], records: Iterable[dict[str, Any]], has_part: Callable[[Stage], bool]
) -> tuple[list[Stage], list[Outcome]]:
    """The check's stages so far (the last one may still be to run: ``has_part(stage)`` says whether all of its
    records parts exist) and each (defense, threat)'s outcome. Empty when the run asks for no headline check."""
    settings = CheckSettings.from_config(config)
    if settings is None:
        return [], []
    verdicts = Verdicts(records)
    samples = sorted(verdicts.position, key=verdicts.position.get)
    outcomes = {(d, t): Outcome(d, t) for d, threats in settings.defenses for t in threats}
    base = {(d, t): [Condition(a, d, t).key() for a in settings.base] for d, t in outcomes}
    standing = {key: verdicts.standing(base[key], samples) for key in outcomes}
    totals = {key: len(verdicts.robust.get(Condition.clean(key[0]).key(), {})) for key in outcomes}
    stages: list[Stage] = []
    for rung in settings.rungs:
        live = [key for key, outcome in outcomes.items() if not outcome.certified]
        draws = [_draw(settings, verdicts, rung, key, standing[key], totals[key], outcomes[key]) for key in live]
        fallen: dict[tuple[str, str], list[str]] = {}
        for kind, pairs in ((DRAW, [p for p in draws if p is not None]), (ALL, None)):
            if kind == ALL:
                pairs = [_rest(rung, key, standing[key], outcomes[key]) for key in live if fallen.get(key)]
                pairs = [p for p in pairs if p is not None]
            if not pairs:
                continue
            stage = Stage(rung["label"], kind, tuple(pairs))
            stages.append(stage)
            if not has_part(stage):
                for pair in pairs:
                    outcomes[(pair.defense, pair.threat)].pending = True
                return stages, list(outcomes.values())
            for pair in pairs:
                key = (pair.defense, pair.threat)
                broken = verdicts.fallen(pair.condition, pair.chosen)
                outcomes[key].stages.append((stage, pair, broken))
                fallen.setdefault(key, []).extend(broken)
                if kind == DRAW and not broken:
                    population = pair.standing - pair.flagged
                    outcomes[key].certified = True
                    outcomes[key].bound = certified_fallers(population, pair.drawn, confidence=settings.confidence)
        for key in live:
            standing[key] = [s for s in standing[key] if s not in set(fallen.get(key, []))]
        if settings.mode != "escalate":
            break
    return stages, list(outcomes.values())


def _draw(
    settings: CheckSettings,
    verdicts: Verdicts,
    rung: dict[str, Any],
    key: tuple[str, str],
    standing: list[str],
    total: int,
    outcome: Outcome,
) -> PairCheck | None:
    """The draw stage of ``rung`` for ``key``: the flagged standing samples and a seeded subset of the rest sized
    to certify ``settings.delta``. None (and certified) when nothing needs re-attacking."""
    defense, threat = key
    strongest = Condition(rung["convergence_of"], defense, threat).key()
    flagged = [s for s in standing if s in verdicts.flagged.get(strongest, set())]
    rest = [s for s in standing if s not in set(flagged)]
    allowed = allowed_fallers(settings.delta, total)
    count = subset_size(len(rest), allowed, confidence=settings.confidence)
    condition = Condition(rung["label"], defense, threat).key()
    chosen = set(flagged) | set(seeded_draw(settings.seed, condition, rest, count))
    if not chosen:  # nothing stands, or too few stand to move the headline by delta: certified as it is
        outcome.certified, outcome.bound = True, len(rest)
        return None
    ordered = tuple(s for s in standing if s in chosen)
    return PairCheck(defense, threat, rung["label"], ordered, len(standing), len(flagged), count)


def _rest(rung: dict[str, Any], key: tuple[str, str], standing: list[str], outcome: Outcome) -> PairCheck | None:
    """The ``all`` stage of ``rung`` for ``key``: the standing samples its draw left out (None: none)."""
    drew = {s for stage, pair, _ in outcome.stages if stage.label == rung["label"] for s in pair.chosen}
    rest = tuple(s for s in standing if s not in drew)
    return PairCheck(key[0], key[1], rung["label"], rest, len(standing)) if rest else None
