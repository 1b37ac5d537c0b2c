"""Sanity checks of an audit (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; AutoAttack's flags).

Each check yields a ``Flag`` (severity, title, explanation, evidence) shown in every report; ``--strict`` turns
warnings and errors into failed gates. Pre-run checks look at the model, the data and the purifiers; post-run
checks read the per-sample records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robaudit.data import ImageSet

SEVERITIES = ("info", "warning", "error")


@dataclass
class Flag:
    """One finding: ``severity`` info | warning | error."""

    check: str
    severity: str
    title: str
    explanation: str
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain form for summaries."""
        return asdict(self)


def preflight(
    model: nn.Module, dataset: ImageSet, *, purifiers: dict[str, Any] | None = None, batch: int = 64
) -> list[Flag]:
    """Checks before a run, on the first ``batch`` samples: determinism, logits, input range, accuracy above chance,
    input gradients, and each purifier's declared randomness."""
    flags: list[Flag] = []
    images = dataset.images[:batch].float()
    labels = dataset.labels[:batch]
    model.eval()
    with torch.no_grad():
        first, second = model(images), model(images)
    if not torch.equal(first, second):
        flags.append(
            Flag(
                "deterministic",
                "error",
                "model is not deterministic in eval mode",
                "Two forward passes on the same images differ: randomness in the model changes every "
                "number and needs EOT-aware attacks.",
                f"max difference {float((first - second).abs().max()):.3g}",
            )
        )
    rows = first.float()
    if bool(((rows >= 0) & (rows <= 1)).all()) and torch.allclose(rows.sum(1), torch.ones(len(rows)), atol=1e-3):
        flags.append(
            Flag(
                "logits",
                "error",
                "model outputs look like probabilities, not logits",
                "Every output row lies in [0, 1] and sums to 1. Cross-entropy attacks on probabilities "
                "suffer vanishing gradients; return logits.",
            )
        )
    num_classes = model.card.num_classes
    accuracy = float((first.argmax(1) == labels).float().mean())
    if len(labels) >= 20 and accuracy <= 1.5 / num_classes:
        flags.append(
            Flag(
                "normalization",
                "error",
                "clean accuracy is near chance",
                "The model barely beats guessing on clean data: normalization may be applied twice or not "
                "at all, or the data does not match the model.",
                f"clean accuracy {accuracy:.3f} on {len(labels)} samples, chance {1 / num_classes:.3f}",
            )
        )
    if float(images.max()) <= 1 / 255 + 1e-6:
        flags.append(
            Flag(
                "input-range",
                "warning",
                "images are nearly black",
                "Every pixel is at most 1/255: the data may have been scaled to [0, 1] twice.",
            )
        )
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    per_sample = grad.flatten(1).abs().sum(1)
    if not torch.isfinite(grad).all():
        flags.append(
            Flag(
                "gradients",
                "error",
                "input gradients are NaN or infinite",
                "Gradient-based attacks cannot work; robust accuracy would be overstated.",
            )
        )
    elif float((per_sample == 0).float().mean()) > 0.5:
        flags.append(
            Flag(
                "gradients",
                "error",
                "input gradients are zero (gradient masking)",
                "The loss has zero gradient with respect to the input for most samples (e.g. a "
                "non-differentiable quantization layer). White-box attacks fail for the wrong reason; "
                "use BPDA or black-box attacks, and do not trust white-box robust accuracy.",
                f"{int((per_sample == 0).sum())} of {len(per_sample)} samples have a zero gradient",
            )
        )
    for label, purifier in (purifiers or {}).items():
        with torch.no_grad():
            a = purifier(images[:8], generator=torch.Generator().manual_seed(0))
            b = purifier(images[:8], generator=torch.Generator().manual_seed(1))
        varies = not torch.equal(a, b)
        if varies != purifier.stochastic:
            flags.append(
                Flag(
                    "purifier-randomness",
                    "error",
                    f"purifier {label} misdeclares its randomness",
                    f"It declares stochastic={purifier.stochastic} but its output "
                    f"{'changes' if varies else 'does not change'} with the generator's seed.",
                )
            )
        elif varies:
            flags.append(
                Flag(
                    "purifier-randomness",
                    "info",
                    f"purifier {label} is stochastic",
                    "Its output depends on its random draws: robust accuracy is reported as mean and worst "
                    "of N repeats, and adaptive gradients average EOT draws.",
                )
            )
    return flags


def _correct(frame: pd.DataFrame, condition: str) -> pd.Series:
    rows = frame[frame["condition"] == condition]
    return rows.groupby("sample_id")["correct"].all()


def postrun(frame: pd.DataFrame, summary: dict[str, Any]) -> list[Flag]:
    """Checks on the records: attack strength ordering, eps monotonicity, black-box beating white-box, adaptive
    weaker than non-adaptive."""
    flags: list[Flag] = []
    attacks = summary["attacks"]
    single_step = [a for a in attacks if a["name"] == "fgsm"]
    iterative = [a for a in attacks if a["name"] in ("pgd", "autoattack")]
    for weak in single_step:
        for strong in iterative:
            if strong["norm"] != weak["norm"] or abs(strong["eps"] - weak["eps"]) > 1e-9:
                continue
            weak_ok, strong_ok = (
                _correct(frame, f"{weak['label']}|none|none"),
                _correct(frame, f"{strong['label']}|none|none"),
            )
            beaten = int((strong_ok & ~weak_ok.reindex(strong_ok.index, fill_value=True)).sum())
            if beaten > max(1, 0.02 * len(strong_ok)):
                flags.append(
                    Flag(
                        "iterative-vs-single-step",
                        "warning",
                        f"{strong['label']} is weaker than {weak['label']} on {beaten} samples",
                        "An iterative attack should fool every sample a single step fools at the same "
                        "budget. Check its step size and iterations; gradients may be masked.",
                        f"{beaten} of {len(strong_ok)} samples",
                    )
                )
    white = [a for a in attacks if a.get("access", "white-box") == "white-box"]
    for black in (a for a in attacks if a.get("access") == "black-box"):
        same = [w for w in white if w["norm"] == black["norm"] and abs(w["eps"] - black["eps"]) < 1e-9]
        if not same:
            continue
        white_ok = pd.concat([_correct(frame, f"{w['label']}|none|none") for w in same], axis=1).all(axis=1)
        black_ok = _correct(frame, f"{black['label']}|none|none").reindex(white_ok.index, fill_value=True)
        beaten = int((white_ok & ~black_ok).sum())
        if beaten > max(1, 0.02 * len(white_ok)):
            flags.append(
                Flag(
                    "black-box-beats-white-box",
                    "error",
                    f"black-box {black['label']} fools {beaten} samples the white-box attacks did not",
                    "A query-only attack succeeding where gradient attacks failed is the signature of "
                    "gradient masking: the white-box robust accuracy is overstated.",
                    f"{beaten} of {len(white_ok)} samples",
                )
            )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in attacks:
        groups.setdefault((a["name"], a["norm"]), []).append(a)
    for (name, norm), members in groups.items():
        members = sorted(members, key=lambda a: a["eps"])
        for small, large in zip(members, members[1:], strict=False):
            if large["eps"] > small["eps"] and large["robust_accuracy"]["ci_low"] > small["robust_accuracy"]["ci_high"]:
                flags.append(
                    Flag(
                        "eps-monotonic",
                        "error",
                        f"{name} robust accuracy rises with eps ({small['label']} -> {large['label']})",
                        "A larger budget can only help the attacker: the attack is failing to optimise.",
                    )
                )
        by_budget: dict[float, list[dict[str, Any]]] = {}
        for a in members:
            by_budget.setdefault(round(a["eps"], 9), []).append(a)
        for same_eps in by_budget.values():
            same_eps = sorted(
                (a for a in same_eps if "steps" in a.get("params", {})), key=lambda a: a["params"]["steps"]
            )
            for few, many in zip(same_eps, same_eps[1:], strict=False):
                if many["params"]["steps"] > few["params"]["steps"] and (
                    many["robust_accuracy"]["ci_low"] > few["robust_accuracy"]["ci_high"]
                ):
                    flags.append(
                        Flag(
                            "more-steps",
                            "error",
                            f"more {name} steps raise robust accuracy ({few['label']} -> {many['label']})",
                            "More iterations can only help the attacker; this points to a broken step size "
                            "or masked gradients.",
                        )
                    )
        largest = members[-1]
        chance = 1 / max(1, summary.get("model", {}).get("num_classes") or 1)
        if norm == "Linf" and largest["eps"] >= 0.3 and largest["robust_accuracy"]["ci_low"] > chance + 0.1:
            flags.append(
                Flag(
                    "large-eps",
                    "error",
                    f"{name} at eps {largest['eps']:.3g} leaves accuracy above chance",
                    "At a budget this large every image can be turned into another class; accuracy well "
                    "above chance means the attack is broken or gradients are masked.",
                )
            )
    for defense in summary.get("defenses", [])[1:]:
        results = {(r["label"], r["threat"]): r["robust_accuracy"] for r in defense["results"]}
        for (label, threat), value in results.items():
            base = results.get((label, "non-adaptive"))
            if threat in ("bpda", "adaptive") and base and value["ci_low"] > base["ci_high"]:
                flags.append(
                    Flag(
                        "weak-adaptive",
                        "warning",
                        f"{label} {threat} is weaker than non-adaptive against {defense['label']}",
                        "An adaptive attack that does worse than attacking the classifier alone is too weak: "
                        "more steps, EOT draws or a better surrogate are needed.",
                    )
                )
    return flags
