"""Threat models: what gradient access an attack has to a defended pipeline (a small registry).

Words used throughout robaudit: the *threat model* is gradient access (below); the *budget* is the norm and eps of
an attack; the *defense* is the undefended classifier (``none``) or a purifier in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreatModel:
    """How an attack sees a defense.

    ``attacks_classifier_only``: the adversarial examples are made against the classifier alone (and shared by every
    defense under this threat model); otherwise against the whole pipeline, whose purifier backward pass is
    ``purifier_backward`` ("identity" for BPDA, "full" for the adaptive attack).
    """

    name: str
    description: str
    attacks_classifier_only: bool
    purifier_backward: str | None = None
    defended: bool = True  # applies to a purifier (False: the undefended classifier's own threat model)


NONE = "none"

THREAT_MODELS: dict[str, ThreatModel] = {
    t.name: t
    for t in (
        ThreatModel(NONE, "undefended classifier, white-box", attacks_classifier_only=True, defended=False),
        ThreatModel(
            "non-adaptive",
            "adversarial examples made against the classifier alone, then purified (gray-box)",
            attacks_classifier_only=True,
        ),
        ThreatModel(
            "bpda",
            "purifier forward, identity backward (BPDA), EOT over the pipeline's randomness",
            attacks_classifier_only=False,
            purifier_backward="identity",
        ),
        ThreatModel(
            "adaptive",
            "gradients through the whole purifier, EOT over the pipeline's randomness",
            attacks_classifier_only=False,
            purifier_backward="full",
        ),
    )
}

THREATS = tuple(name for name, t in THREAT_MODELS.items() if t.defended)  # what a purifier can be audited under
THREAT_DESCRIPTIONS = {name: t.description for name, t in THREAT_MODELS.items()}
PIPELINE_THREATS = tuple(name for name, t in THREAT_MODELS.items() if not t.attacks_classifier_only)


def threat_model(name: str) -> ThreatModel:
    """The threat model called ``name`` (KeyError names the valid ones)."""
    try:
        return THREAT_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown threat model {name!r}; valid: {', '.join(THREAT_MODELS)}") from None
