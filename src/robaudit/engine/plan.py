"""The audit as objects: the plan of a run, its parts and shards (conditions and records: ``robaudit.runs.records``).

A run is a plan of conditions evaluated on parts: fixed sample ranges [start, stop) of ``part_size`` samples
(independent of the batch size and of the shard layout). Shard K of N owns parts K, K + N, K + 2N, ...; one process
is shard 0/1.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from robaudit.errors import ConfigError
from robaudit.runs.records import Condition


@dataclass(frozen=True)
class Part:
    """Samples [start, stop): the unit a run is written, resumed and sharded in."""

    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """File name of its records part."""
        return f"part-{self.start:06d}-{self.stop:06d}.jsonl"


def parts(num_samples: int, part_size: int, *, first: int = 0) -> list[Part]:
    """The parts of ``num_samples`` samples: ``[0, first)`` when ``first`` (the part that times a run,
    ``engine.part_sizing``), then ``part_size`` each (the last one shorter)."""
    starts = ([0] if first and num_samples else []) + list(range(first, num_samples, part_size))
    stops = [*starts[1:], num_samples][: len(starts)]
    return [Part(i, start, stop) for i, (start, stop) in enumerate(zip(starts, stops, strict=True))]


@dataclass(frozen=True)
class PartLayout:
    """Where a run's parts begin and end: a first part of ``first`` samples (0: none), then parts of ``size``.
    Saved in the run directory (``records/layout.json``) so that resuming and shards cut the samples alike."""

    size: int
    first: int = 0

    def parts(self, num_samples: int) -> list[Part]:
        """The parts of ``num_samples`` samples."""
        return parts(num_samples, self.size, first=self.first)

    def to_dict(self) -> dict[str, int]:
        return {"size": self.size, "first": self.first}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartLayout:
        return cls(size=int(data["size"]), first=int(data.get("first", 0)))


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: owns every part whose number is ``index`` modulo ``count``."""

    index: int = 0
    count: int = 1

    def owns(self, part: Part) -> bool:
        return part.number % self.count == self.index

    @property
    def name(self) -> str:
        return f"shard-{self.index:03d}-of-{self.count:03d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` (0 <= K < N) -> Shard(K, N)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match or not int(match[1]) < int(match[2]):
            raise ConfigError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_environment(cls) -> Shard:
        """The shard of this process under torchrun (RANK / WORLD_SIZE), else 0/1."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


@dataclass
class Defense:
    """The undefended classifier (``purifier is None``) or one purifier in front of it, and how it is scored.

    ``scoring`` is the pipeline whose draws predictions take (``repeats`` scoring draws per condition); ``eot`` the
    EOT draws per gradient against it (None: the run's).
    """

    label: str
    purifier: Any
    repeats: int
    threats: list[str]
    scoring: Any
    eot: int | None = None
    graft: int = 0  # > 0: adaptive EOT gradients grafted through this many purifier draws


@dataclass
class AuditPlan:
    """Every condition of a run: each defense's clean prediction, then each attack under each defense's threat models.

    ``attacks`` are ``ResolvedAttack`` s; ``defenses[0]`` is the undefended classifier. Randomness of a condition is
    seeded from (``seed``, condition, sample id); ``eot`` and ``draws`` (selection draws) apply to randomized
    pipelines.
    """

    attacks: list[Any]
    defenses: list[Defense]
    seed: int
    eot: int
    draws: int
    num_samples: int
    part_size: int
    part_seconds: float = 0.0  # target seconds per part for one process (``engine.part_sizing``); 0: by count
    part_layout: PartLayout | None = None  # settled by the run (None: parts of part_size)
    convergence_fraction: float = 1.0  # the share of survivors a convergence rung attacks again
    layout: Any = None  # how pipelines run a sample's many draws (``draw_layout.DrawLayout``; None: batched, all rows)
    rng: str = "generator"  # the engine of the samples' random streams (``sample_rng.ENGINES``)

    def base_attacks(self) -> list[Any]:
        """The configured attacks (and eps-sweep budgets), without convergence rungs."""
        return [a for a in self.attacks if getattr(a, "convergence_of", None) is None]

    def rungs_of(self, label: str) -> list[Any]:
        """The convergence rungs of attack ``label``, lowest first."""
        return sorted((a for a in self.attacks if getattr(a, "convergence_of", None) == label), key=lambda a: a.rung)

    def conditions(self) -> list[tuple[Condition, Any, Defense]]:
        """(condition, attack or None, defense) in record order."""
        out = [(Condition.clean(d.label), None, d) for d in self.defenses]
        for attack in self.attacks:
            for defense in self.defenses:
                out += [(Condition(attack.label, defense.label, t), attack, defense) for t in defense.threats]
        return out

    def parts(self) -> list[Part]:
        """The parts of the run."""
        return (self.part_layout or PartLayout(self.part_size)).parts(self.num_samples)

    def record_order(self, record: dict[str, Any]) -> tuple[int, int, int]:
        """Sort key of a record within a part: condition (plan order), repeat, sample index."""
        if not hasattr(self, "_positions"):
            self._positions = {c.key(): i for i, (c, _, _) in enumerate(self.conditions())}
        return self._positions[record["condition"]], record["repeat"], record["index"]
