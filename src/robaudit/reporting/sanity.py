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

from robaudit.audit.pipeline import Pipeline
from robaudit.audit.plan import Condition
from robaudit.data import ImageSet
from robaudit.seeding import isolated_global_rng

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


def detect_randomized(model: nn.Module, dataset: ImageSet, *, batch: int = 16) -> bool:
    """True when two eval-mode forward passes of ``model`` on the same images differ (noise inside the model)."""
    images = dataset.images[:batch].float()
    model.eval()
    with torch.no_grad(), isolated_global_rng(0):
        first, second = model(images), model(images)
    return not torch.equal(first, second)


def randomness_flags(randomized: dict[str, bool] | None) -> list[Flag]:
    """An info flag saying how a randomized classifier was found and how it is evaluated."""
    if not randomized or not randomized.get("stochastic"):
        return []
    how = "declared (--stochastic)" if randomized.get("declared") else ""
    if randomized.get("detected"):
        how = (how + " and " if how else "") + "detected: two forward passes on the same images differ"
    return [
        Flag(
            "randomized-model",
            "info",
            "the classifier is randomized",
            "Its outputs vary between identical calls, so it is audited like a stochastic defense: attack gradients "
            "average EOT draws, candidates are chosen on selection draws, and every prediction is repeated (mean "
            "and worst of N).",
            how,
        )
    ]


CHECKS_BEFORE = (
    "randomness of the classifier (detected or declared) and of each purifier (as declared)",
    "outputs are logits, not probabilities",
    "images are not nearly black",
    "clean accuracy above chance",
    "no class makes up 90% or more of the audited samples",
    "finite, non-zero, non-exploding input gradients of the classifier and through each purifier (adaptive)",
)


def preflight(
    model: nn.Module,
    dataset: ImageSet,
    *,
    purifiers: dict[str, Any] | None = None,
    randomized: dict[str, bool] | None = None,
    batch: int = 64,
) -> list[Flag]:
    """Checks before a run, on the first ``batch`` samples: randomness, logits, input range, accuracy above chance,
    input gradients (of the classifier, and through each purifier under the adaptive threat), and each purifier's
    declared randomness."""
    images = dataset.images[:batch].float()
    labels = dataset.labels[:batch]
    model.eval()
    with torch.no_grad(), isolated_global_rng(0):
        logits = model(images)
    flags = randomness_flags(randomized) + output_flags(logits, images, labels, num_classes=model.card.num_classes)
    flags += class_balance_flags(dataset.labels, num_classes=model.card.num_classes)
    flags += gradient_flags(model, images, labels, where="the classifier")
    for label, purifier in (purifiers or {}).items():
        flags += purifier_randomness_flags(label, purifier, images[:8])
        pipeline = Pipeline(model, purifier, threat="adaptive")
        flags += gradient_flags(pipeline, images[:16], labels[:16], where=f"the {label} pipeline (adaptive)")
    return flags


def class_balance_flags(labels: torch.Tensor, *, num_classes: int, share: float = 0.9) -> list[Flag]:
    """A warning when one class makes up ``share`` or more of the audited samples (e.g. the first N of a split
    sorted by label): accuracy then says little about the model on the other classes."""
    if len(labels) < 20 or num_classes < 2:
        return []
    counts = torch.bincount(labels, minlength=num_classes)
    top = int(counts.argmax())
    if float(counts[top]) / len(labels) < share:
        return []
    return [
        Flag(
            "class-balance",
            "warning",
            "the audited samples are nearly all one class",
            "Accuracy and robustness measured on one class say little about the others (a model or purifier that "
            "predicts that class for everything scores 100%). A split sorted by label gives this with `limit`; "
            "audit a seeded random subset instead (`subset_seed`), or more samples.",
            f"class {top}: {int(counts[top])} of {len(labels)} samples",
        )
    ]


def output_flags(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int) -> list[Flag]:
    """Logits that look like probabilities, clean accuracy near chance, nearly black images."""
    flags = []
    rows = logits.float()
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
    accuracy = float((logits.argmax(1) == labels).float().mean())
    chance = 1 / num_classes
    if len(labels) >= 20 and accuracy <= chance + 0.1 * (1 - chance):
        flags.append(
            Flag(
                "normalization",
                "error",
                "clean accuracy is near chance",
                "The model barely beats guessing on clean data: normalization may be applied twice or not "
                "at all, or the data does not match the model.",
                f"clean accuracy {accuracy:.3f} on {len(labels)} samples, chance {chance:.3f}",
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
    return flags


def gradient_flags(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, where: str) -> list[Flag]:
    """NaN, infinite, zero or exploding input gradients of the cross-entropy of ``model`` (obfuscated gradients)."""
    x = images.clone().requires_grad_(True)
    with isolated_global_rng(0):
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    per_sample = grad.flatten(1).abs().sum(1)
    explanation = (
        "White-box attacks fail for the wrong reason (obfuscated gradients, Athalye et al. 2018); robust accuracy "
        "from gradient attacks would be overstated. Use BPDA or black-box attacks and do not trust white-box numbers."
    )
    if not torch.isfinite(grad).all():
        return [Flag("gradients", "error", f"input gradients through {where} are NaN or infinite", explanation)]
    zero = int((per_sample == 0).sum())
    if zero > 0.5 * len(per_sample):
        evidence = f"{zero} of {len(per_sample)} samples have a zero gradient"
        return [
            Flag(
                "gradients",
                "error",
                f"input gradients through {where} are zero (gradient masking)",
                explanation,
                evidence,
            )
        ]
    if float(per_sample.max()) > 1e6 * max(float(per_sample.median()), 1e-12):
        evidence = f"largest per-sample gradient {float(per_sample.max()):.3g}, median {float(per_sample.median()):.3g}"
        return [Flag("gradients", "warning", f"input gradients through {where} explode", explanation, evidence)]
    return []


def purifier_randomness_flags(label: str, purifier: Any, images: torch.Tensor) -> list[Flag]:
    """An error when a purifier's output and its declared randomness disagree; an info flag when stochastic."""
    with torch.no_grad():
        a = purifier(images, generator=torch.Generator().manual_seed(0))
        b = purifier(images, generator=torch.Generator().manual_seed(1))
    varies = not torch.equal(a, b)
    if varies != purifier.stochastic:
        return [
            Flag(
                "purifier-randomness",
                "error",
                f"purifier {label} misdeclares its randomness",
                f"It declares stochastic={purifier.stochastic} but its output "
                f"{'changes' if varies else 'does not change'} with the generator's seed.",
            )
        ]
    if varies:
        return [
            Flag(
                "purifier-randomness",
                "info",
                f"purifier {label} is stochastic",
                "Its output depends on its random draws: robust accuracy is reported as the worst of N repeats "
                "(with the mean beside it), attack gradients average EOT draws and candidates are chosen on "
                "selection draws independent of scoring.",
            )
        ]
    return []


def _correct(frame: pd.DataFrame, condition: str) -> pd.Series:
    """Per sample: correct in every repeat of ``condition`` (worst of N)."""
    rows = frame[frame["condition"] == condition]
    return rows.groupby("sample_id")["correct"].all()


CHECKS_AFTER = (
    "stronger attacks at least as strong per sample (PGD over FGSM, AutoAttack over both)",
    "no black-box attack fooling samples the white-box attacks did not",
    "robust accuracy not rising with eps or with more steps",
    "accuracy near chance at a Linf eps >= 0.3",
    "adaptive and BPDA attacks not weaker than non-adaptive ones",
    "worst of N not far below the mean (randomized pipelines)",
)


def postrun(frame: pd.DataFrame, summary: dict[str, Any]) -> list[Flag]:
    """Checks on the records, for every defense and threat model that ran: attack strength ordering, black-box
    beating white-box, eps and step monotonicity, large-eps accuracy, adaptive weaker than non-adaptive, worst of N
    far below the mean, and AutoAttack's standard version forced on a randomized pipeline."""
    flags: list[Flag] = []
    num_classes = summary.get("model", {}).get("num_classes") or 1
    for defense in summary.get("defenses", []):
        for threat in defense.get("threats") or ["none"]:
            results = [r for r in defense["results"] if r["threat"] == threat]
            where = "" if defense["label"] == "none" else f" ({defense['label']}, {threat})"
            flags += strength_order_flags(frame, results, defense["label"], where)
            flags += black_box_flags(frame, results, defense["label"], where)
            flags += budget_flags(results, where, num_classes=num_classes)
        flags += luck_flags(defense)
    return flags + weak_adaptive_flags(summary) + forced_standard_flags(summary)


def _key(result: dict[str, Any], defense: str) -> str:
    return Condition(result["label"], defense, result["threat"]).key()


def strength_order_flags(frame: pd.DataFrame, results: list[dict[str, Any]], defense: str, where: str) -> list[Flag]:
    """A stronger attack (a higher ``tier``: iterative over single-step, an ensemble over both, e.g. PGD over FGSM,
    AutoAttack over both) leaving robust, in its worst of N, samples the weaker one fooled at the same budget."""
    flags = []
    ordered = [r for r in results if r.get("tier") is not None and r.get("access", "white-box") == "white-box"]
    pairs = [(w, s) for w in ordered for s in ordered if w["tier"] < s["tier"]]
    for weak, strong in pairs:
        if strong["norm"] != weak["norm"] or abs(strong["eps"] - weak["eps"]) > 1e-9:
            continue
        weak_ok, strong_ok = _correct(frame, _key(weak, defense)), _correct(frame, _key(strong, defense))
        beaten = int((strong_ok & ~weak_ok.reindex(strong_ok.index, fill_value=True)).sum())
        if beaten > max(1, 0.02 * len(strong_ok)):
            flags.append(
                Flag(
                    "attack-strength",
                    "warning",
                    f"{strong['label']} is weaker than {weak['label']} on {beaten} samples{where}",
                    "A stronger attack should fool every sample a weaker one fools at the same budget. "
                    "Check its step size, iterations and EOT draws; gradients may be masked.",
                    f"{beaten} of {len(strong_ok)} samples",
                )
            )
    return flags


def black_box_flags(frame: pd.DataFrame, results: list[dict[str, Any]], defense: str, where: str) -> list[Flag]:
    """A black-box attack fooling samples every white-box attack at the same budget left robust."""
    flags = []
    white = [a for a in results if a.get("access", "white-box") == "white-box"]
    for black in (a for a in results if a.get("access") == "black-box"):
        same = [w for w in white if w["norm"] == black["norm"] and abs(w["eps"] - black["eps"]) < 1e-9]
        if not same:
            continue
        white_ok = pd.concat([_correct(frame, _key(w, defense)) for w in same], axis=1).all(axis=1)
        black_ok = _correct(frame, _key(black, defense)).reindex(white_ok.index, fill_value=True)
        beaten = int((white_ok & ~black_ok).sum())
        if beaten > max(1, 0.02 * len(white_ok)):
            flags.append(
                Flag(
                    "black-box-beats-white-box",
                    "error",
                    f"black-box {black['label']} fools {beaten} samples the white-box attacks did not{where}",
                    "A query-only attack succeeding where gradient attacks failed is the signature of "
                    "gradient masking: the white-box robust accuracy is overstated.",
                    f"{beaten} of {len(white_ok)} samples",
                )
            )
    return flags


def _worst(result: dict[str, Any]) -> dict[str, Any]:
    return result.get("robust_accuracy_worst_of_n", result["robust_accuracy"])


def budget_flags(results: list[dict[str, Any]], where: str, *, num_classes: int) -> list[Flag]:
    """Robust accuracy rising with eps or with steps, and accuracy above chance at a Linf eps >= 0.3."""
    flags = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in results:
        groups.setdefault((a["name"], a["norm"]), []).append(a)
    for (name, norm), members in groups.items():
        members = sorted(members, key=lambda a: a["eps"])
        for small, large in zip(members, members[1:], strict=False):
            if large["eps"] > small["eps"] and _worst(large)["ci_low"] > _worst(small)["ci_high"]:
                flags.append(
                    Flag(
                        "eps-monotonic",
                        "error",
                        f"{name} robust accuracy rises with eps ({small['label']} -> {large['label']}){where}",
                        "A larger budget can only help the attacker: the attack is failing to optimise.",
                    )
                )
        flags += more_steps_flags(name, members, where)
        largest = members[-1]
        if norm == "Linf" and largest["eps"] >= 0.3 and _worst(largest)["ci_low"] > 1 / num_classes + 0.1:
            flags.append(
                Flag(
                    "large-eps",
                    "error",
                    f"{name} at eps {largest['eps']:.3g} leaves accuracy above chance{where}",
                    "At a budget this large every image can be turned into another class; accuracy well "
                    "above chance means the attack is broken or gradients are masked.",
                )
            )
    return flags


def more_steps_flags(name: str, members: list[dict[str, Any]], where: str) -> list[Flag]:
    """At one budget, more iterations of the same attack raising robust accuracy beyond the intervals."""
    flags = []
    by_budget: dict[float, list[dict[str, Any]]] = {}
    for a in members:
        if "steps" in a.get("params", {}):
            by_budget.setdefault(round(a["eps"], 9), []).append(a)
    for same_eps in by_budget.values():
        same_eps.sort(key=lambda a: a["params"]["steps"])
        for few, many in zip(same_eps, same_eps[1:], strict=False):
            if many["params"]["steps"] > few["params"]["steps"] and _worst(many)["ci_low"] > _worst(few)["ci_high"]:
                flags.append(
                    Flag(
                        "more-steps",
                        "error",
                        f"more {name} steps raise robust accuracy ({few['label']} -> {many['label']}){where}",
                        "More iterations can only help the attacker; this points to a broken step size "
                        "or masked gradients.",
                    )
                )
    return flags


def luck_flags(defense: dict[str, Any], *, gap: float = 0.1) -> list[Flag]:
    """Worst of N far below the mean: the defense's robustness rides on the luck of its random draws."""
    flags = []
    for r in defense["results"]:
        mean, worst = r["robust_accuracy"]["value"], r["robust_accuracy_worst_of_n"]["value"]
        if r.get("repeats", 1) > 1 and mean is not None and mean - worst > gap:
            flags.append(
                Flag(
                    "worst-of-n",
                    "warning",
                    f"{r['label']} against {defense['label']} ({r['threat']}): worst of {r['repeats']} is "
                    f"{100 * (mean - worst):.0f} points below the mean",
                    "Many samples are fooled by some draws of the defense's randomness and not others: the mean "
                    "rides on luck, and an attacker who retries wins. Read the worst of N.",
                    f"mean {100 * mean:.1f}%, worst of {r['repeats']} {100 * worst:.1f}%",
                )
            )
    return flags


def weak_adaptive_flags(summary: dict[str, Any]) -> list[Flag]:
    """An adaptive or BPDA attack weaker than the non-adaptive one beyond the intervals."""
    flags = []
    for defense in summary.get("defenses", [])[1:]:
        results = {(r["label"], r["threat"]): _worst(r) for r in defense["results"]}
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


def forced_standard_flags(summary: dict[str, Any]) -> list[Flag]:
    """AutoAttack's standard version forced on a randomized pipeline (it is meant for deterministic models)."""
    flags = []
    for defense in summary.get("defenses", []):
        for r in defense["results"]:
            if r.get("forced_standard_on_randomized"):
                flags.append(
                    Flag(
                        "autoattack-version",
                        "warning",
                        f"{r['label']} ran AutoAttack's standard version on a randomized pipeline "
                        f"({defense['label']}, {r['threat']})",
                        "The standard version (no EOT; FAB and Square judge single draws) underestimates attacks on "
                        "randomized defenses; use version: rand (the default picks it).",
                    )
                )
    return flags
