"""What a run's records are made of, read by the audit engine that writes them and by the reports that read them:
a *condition* (attack, defense, threat model; ``Condition.key()`` is the one place its text form is made) and a
*record* (one sample under one condition and one scoring draw). The ground floor: no torch, no engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from robaudit.threats import NONE, threat_model


@dataclass(frozen=True)
class Condition:
    """One (attack, defense, threat model); the clean prediction of a defense is attack ``none``, threat ``none``."""

    attack: str
    defense: str
    threat: str

    def key(self) -> str:
        """The ``condition`` column: ``attack|defense|threat``."""
        return f"{self.attack}|{self.defense}|{self.threat}"

    @classmethod
    def parse(cls, key: str) -> Condition:
        """The condition of a key ``attack|defense|threat``."""
        attack, defense, threat = key.split("|")
        return cls(attack, defense, threat)

    @classmethod
    def clean(cls, defense: str) -> Condition:
        """The clean prediction of ``defense``."""
        return cls(NONE, defense, NONE)

    @property
    def is_clean(self) -> bool:
        return self.attack == NONE

    @property
    def shares_classifier_examples(self) -> bool:
        """Made against the classifier alone (undefended or non-adaptive): the examples are shared."""
        return threat_model(self.threat).attacks_classifier_only


@dataclass
class Record:
    """One row of the records: one sample under one condition and one repeat (scoring draw).

    ``purifier`` is the defense label (``none`` for the undefended classifier); ``attacked`` is true when an attack
    was run on the sample (a sample the defense misclassifies in every clean draw is not attacked: non-robust);
    ``linf`` / ``l2`` are the norms of the perturbation scored; ``incomplete`` is true when the attack's loss trace
    on the sample was still progressing when it stopped (``attacks.loss_trace``; the convergence check re-attacks
    such samples first). Runs written before it existed read as false.
    """

    sample_id: str
    index: int
    label: int
    condition: str
    attack: str
    norm: str
    eps: float
    purifier: str
    threat: str
    repeat: int
    clean_pred: int
    pred: int
    correct: bool
    attacked: bool
    linf: float
    l2: float
    incomplete: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to a records part."""
        return asdict(self)


RECORD_FIELDS = [f.name for f in fields(Record)]
