"""Findings: what robaudit's sanity checks say about an audit (before the run, on the model and pipelines; after it,
on the records), and the catalogue of those checks. The ground floor: the audit engine makes findings, the reports
show them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("info", "warning", "error")


@dataclass
class Finding:
    """One finding of a sanity check: ``severity`` info | warning | error."""

    check: str
    severity: str
    title: str
    explanation: str
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain form for summaries."""
        return asdict(self)


CHECKS_BEFORE = (
    "randomness of the classifier (detected or declared) and of each purifier (as declared)",
    "outputs are logits, not probabilities",
    "images are not nearly black",
    "clean accuracy above chance",
    "no class makes up 90% or more of the audited samples",
    "finite, non-zero, non-exploding input gradients of the classifier and through each purifier (adaptive)",
)

CHECKS_AFTER = (
    "stronger attacks at least as strong per sample (PGD over FGSM, AutoAttack over both)",
    "no black-box attack fooling samples the white-box attacks did not",
    "robust accuracy not rising with eps or with more steps",
    "accuracy near chance at a Linf eps >= 0.3",
    "adaptive and BPDA attacks not weaker than non-adaptive ones",
    "worst of N not far below the mean (randomized pipelines)",
)
